//! Library-level tests of the hooks: what each hook point sees and where its writes land,
//! `deny`, the failure modes, the sandbox limits (runaway loops, recursion, huge values, the
//! wall-clock deadline) and the bundled examples' fixtures. No HTTP server involved.

use provisio::config::HookSettings;
use provisio::document::assemble::assemble_spaces as assemble;
use provisio::error::AppError;
use provisio::hooks::tools;
use provisio::hooks::{HookContext, Hooks};
use provisio::lpconfig::{Config, xml};
use provisio::model::{Account, Algorithm, HookFailure, Password, Space};
use provisio::request::{RequestInfo, RouteKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOMAIN: &str = "sip.example.org";

fn settings(dir: &Path) -> HookSettings {
    HookSettings {
        dir: dir.to_path_buf(),
        watch: false,
        ..HookSettings::default()
    }
}

/// A hooks directory holding the given scripts.
fn hooks_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Hooks) {
    let dir = hooks_dir(files);
    let hooks = Hooks::load(&settings(dir.path())).unwrap();
    (dir, hooks)
}

fn space(domain: &str) -> Space {
    let mut s = Space::new(domain, domain);
    s.realm = format!("realm.{domain}");
    s
}

fn anna() -> Account {
    let mut dictionary = BTreeMap::new();
    dictionary.insert("team".to_string(), "sales & support".to_string());
    Account {
        id: 42,
        username: "anna".into(),
        domain: DOMAIN.into(),
        email: Some("anna@example.org".into()),
        display_name: Some("Anna <O'Reily>".into()),
        phone: None,
        activated: true,
        blocked: false,
        admin: false,
        dtmf_protocol: None,
        ip_address: None,
        user_agent: None,
        created_at: 0,
        updated_at: 0,
        dictionary,
    }
}

fn passwords() -> Vec<Password> {
    vec![
        Password {
            id: 1,
            account_id: 42,
            algorithm: Algorithm::Md5,
            ha1: "md5hash".into(),
        },
        Password {
            id: 2,
            account_id: 42,
            algorithm: Algorithm::Sha256,
            ha1: "sha256hash".into(),
        },
    ]
}

fn request(route: RouteKind) -> RequestInfo {
    let mut r = RequestInfo::synthetic(DOMAIN, "/provisioning/me", route);
    r.headers
        .insert("user-agent".into(), "LinphoneAndroid/5.2.5".into());
    r.headers.insert("x-custom".into(), "custom value".into());
    r.query.insert("lang".into(), "fr".into());
    r.client_ip = Some("192.0.2.7".parse().unwrap());
    r
}

/// Assembles the document for `space` and runs the hooks on it, as the pipeline does.
fn run(hooks: &Hooks, space: &Space, account: Option<Account>) -> Result<Config, AppError> {
    let pw = if account.is_some() {
        passwords()
    } else {
        Vec::new()
    };
    let route = if account.is_some() {
        RouteKind::Me
    } else {
        RouteKind::Anonymous
    };
    let assembled = assemble(space, Some(space), account.as_ref(), &pw).unwrap();
    let ctx = HookContext {
        space: space.clone(),
        account_space: account.as_ref().map(|_| space.clone()),
        request: request(route),
        account,
        proxy_section: assembled.proxy_section,
        auth_info_sections: assembled.auth_info_sections,
    };
    let mut config = assembled.config;
    hooks.run(&ctx, &mut config)?;
    Ok(config)
}

/// Renders and parses back, so assertions see exactly what a client would read.
fn round_trip(config: &Config) -> Config {
    xml::parse(&xml::render(config)).unwrap()
}

fn get<'a>(config: &'a Config, section: &str, name: &str) -> Option<&'a str> {
    config.section(section).and_then(|s| s.get(name))
}

const SEE_EVERYTHING: &str = r#"
fn on_proxy(section, request, account) {
    section.set("seen_section", section.name);
    section.set("seen_id", account.id);
    section.set("seen_user", account.username);
    section.set("seen_domain", account.domain);
    section.set("seen_display", account.display_name);
    section.set("seen_email", account.email);
    section.set("seen_phone", account.phone ?? "none");
    section.set("seen_activated", account.activated);
    section.set("seen_admin", account.admin);
    section.set("seen_realm", account.realm);
    section.set("seen_sip_uri", account.sip_uri);
    section.set("seen_team", account.dictionary["team"]);
    section.set("seen_space", account.space.domain);
    section.set("seen_method", request.method);
    section.set("seen_path", request.path);
    section.set("seen_route", request.route);
    section.set("seen_lang", request.query["lang"]);
    section.set("seen_header", request.headers["x-custom"]);
    section.set("seen_ua", request.user_agent);
    section.set("seen_host", request.host);
    section.set("seen_ip", request.client_ip);
    section.set("seen_request_space", request.space.domain);
    section.set("has_identity", section.has("reg_identity"));
}

fn on_auth_info(section, request, password) {
    section.set("seen_algorithm", password.algorithm);
    section.set("seen_pw_realm", password.realm);
    section.set("seen_owner", password.account.username);
}

fn on_config(config, request, account) {
    let s = config.section("provisio_test");
    s.set("anonymous", account == ());
    s.set("route", request.route);
    s.set("escaped", "a<b & \"c\" > 'd'");
    s.set("sections", config.names().len());
    s.set("forced", "yes", true);
}
"#;

#[test]
fn each_hook_point_sees_its_data_and_writes_land_in_place() {
    let (_dir, hooks) = load(&[("default.rhai", SEE_EVERYTHING)]);
    let config = round_trip(&run(&hooks, &space(DOMAIN), Some(anna())).unwrap());

    let p = |k: &str| get(&config, "proxy_0", k);
    assert_eq!(p("seen_section"), Some("proxy_0"));
    assert_eq!(p("seen_id"), Some("42"));
    assert_eq!(p("seen_user"), Some("anna"));
    assert_eq!(p("seen_domain"), Some(DOMAIN));
    assert_eq!(p("seen_display"), Some("Anna <O'Reily>"));
    assert_eq!(p("seen_email"), Some("anna@example.org"));
    assert_eq!(p("seen_phone"), Some("none"));
    assert_eq!(p("seen_activated"), Some("1"));
    assert_eq!(p("seen_admin"), Some("0"));
    assert_eq!(p("seen_realm"), Some("realm.sip.example.org"));
    assert_eq!(p("seen_sip_uri"), Some("sip:anna@sip.example.org"));
    assert_eq!(p("seen_team"), Some("sales & support"));
    assert_eq!(p("seen_space"), Some(DOMAIN));
    assert_eq!(p("seen_method"), Some("GET"));
    assert_eq!(p("seen_path"), Some("/provisioning/me"));
    assert_eq!(p("seen_route"), Some("me"));
    assert_eq!(p("seen_lang"), Some("fr"));
    assert_eq!(p("seen_header"), Some("custom value"));
    assert_eq!(p("seen_ua"), Some("LinphoneAndroid/5.2.5"));
    assert_eq!(p("seen_host"), Some(DOMAIN));
    assert_eq!(p("seen_ip"), Some("192.0.2.7"));
    assert_eq!(p("seen_request_space"), Some(DOMAIN));
    assert_eq!(
        p("has_identity"),
        Some("1"),
        "on_proxy runs after reg_identity"
    );

    // One on_auth_info per password, each on its own section.
    assert_eq!(get(&config, "auth_info_0", "seen_algorithm"), Some("MD5"));
    assert_eq!(
        get(&config, "auth_info_1", "seen_algorithm"),
        Some("SHA-256")
    );
    assert_eq!(
        get(&config, "auth_info_1", "seen_pw_realm"),
        Some("realm.sip.example.org")
    );
    assert_eq!(get(&config, "auth_info_1", "seen_owner"), Some("anna"));
    assert_eq!(get(&config, "auth_info_0", "ha1"), Some("md5hash"));

    // on_config: escaping survives the XML round trip; overwrite flag lands.
    assert_eq!(get(&config, "provisio_test", "anonymous"), Some("0"));
    assert_eq!(
        get(&config, "provisio_test", "escaped"),
        Some("a<b & \"c\" > 'd'")
    );
    let forced = config
        .section("provisio_test")
        .unwrap()
        .entry("forced")
        .unwrap();
    assert!(forced.overwrite);
    assert!(
        !config
            .section("provisio_test")
            .unwrap()
            .entry("escaped")
            .unwrap()
            .overwrite
    );
    assert!(xml::render(&config).contains("a&lt;b &amp; \"c\" &gt; 'd'"));
}

#[test]
fn anonymous_requests_reach_on_config_only_with_unit_account() {
    let (_dir, hooks) = load(&[("default.rhai", SEE_EVERYTHING)]);
    let config = round_trip(&run(&hooks, &space(DOMAIN), None).unwrap());
    assert_eq!(get(&config, "provisio_test", "anonymous"), Some("1"));
    assert_eq!(get(&config, "provisio_test", "route"), Some("anonymous"));
    assert!(
        config.section("proxy_0").is_none(),
        "no on_proxy without an account"
    );
    assert!(config.section("auth_info_0").is_none());
}

#[test]
fn scripts_run_default_first_then_the_space_and_hooks_in_flexiapi_order() {
    let trace = |who: &str| {
        format!(
            r#"
fn note(config, what) {{
    let t = config.section("trace");
    t.set("calls", (t.get("calls") ?? "") + what + ";");
}}
fn on_proxy(section, request, account) {{ section.set("by", "{who}"); }}
fn on_auth_info(section, request, password) {{ section.set("by", "{who}"); }}
fn on_config(config, request, account) {{
    note(config, "{who}:" + config.get("proxy_0", "by") + "/" + config.get("auth_info_1", "by"));
}}
"#
        )
    };
    let (_dir, hooks) = load(&[
        ("default.rhai", &trace("default")),
        ("sip.example.org.rhai", &trace("space")),
        ("other.example.org.rhai", &trace("other")),
    ]);
    let config = run(&hooks, &space(DOMAIN), Some(anna())).unwrap();
    assert_eq!(
        get(&config, "trace", "calls"),
        Some("default:default/default;space:space/space;")
    );
    // The domain matches case-insensitively; other spaces only get default.rhai.
    let config = run(&hooks, &space("SIP.Example.ORG"), Some(anna())).unwrap();
    assert!(get(&config, "trace", "calls").unwrap().contains("space:"));
    let config = run(&hooks, &space("third.example.org"), Some(anna())).unwrap();
    assert_eq!(
        get(&config, "trace", "calls"),
        Some("default:default/default;")
    );
}

/// `request`, `account` and `password` are built once per request and shared by every hook
/// call: a script that tries to change them gets an error, and the next hook and the next
/// script see them exactly as they were.
#[test]
fn no_script_sees_another_scripts_changes_to_request_account_or_password() {
    let (_dir, hooks) = load(&[
        (
            "default.rhai",
            r#"
fn on_proxy(section, request, account) {
    let refused = 0;
    let allowed = [];
    try { request.method = "POST"; allowed.push("request.method = \"POST\""); } catch { refused += 1; }
    try { request.query.lang = "xx"; allowed.push("request.query.lang = \"xx\""); } catch { refused += 1; }
    try { request.headers.clear(); allowed.push("request.headers.clear()"); } catch { refused += 1; }
    try { request.space.domain = "evil.example"; allowed.push("request.space.domain = \"evil.example\""); } catch { refused += 1; }
    try { account.username = "mallory"; allowed.push("account.username = \"mallory\""); } catch { refused += 1; }
    try { account.dictionary.team = "evil"; allowed.push("account.dictionary.team = \"evil\""); } catch { refused += 1; }
    try { account.dictionary.remove("team"); allowed.push("account.dictionary.remove(\"team\")"); } catch { refused += 1; }
    try { account.space.realm = "evil"; allowed.push("account.space.realm = \"evil\""); } catch { refused += 1; }
    try { account += #{ extra: 1 }; allowed.push("account += #{ extra: 1 }"); } catch { refused += 1; }
    // Adding a key through an index is a change too.
    try { request.query["new"] = "1"; allowed.push("request.query[\"new\"] = \"1\""); } catch { refused += 1; }
    try { account.dictionary["added"] = "1"; allowed.push("account.dictionary[\"added\"] = \"1\""); } catch { refused += 1; }
    try { request["added"] = 1; allowed.push("request[\"added\"] = 1"); } catch { refused += 1; }
    // A copy of a part is the script's own.
    let q = request.query;
    q.lang = "mine";
    section.set("refused", refused);
    section.set("allowed", allowed.reduce(|sum, x| sum + x + ";", ""));
    section.set("copy", q.lang);
}
fn on_auth_info(section, request, password) {
    let refused = 0;
    let allowed = [];
    try { password.realm = "evil"; allowed.push("password.realm = \"evil\""); } catch { refused += 1; }
    try { password.account.username = "mallory"; allowed.push("password.account.username = \"mallory\""); } catch { refused += 1; }
    section.set("refused", refused);
    section.set("allowed", allowed.reduce(|sum, x| sum + x + ";", ""));
}
"#,
        ),
        (
            "sip.example.org.rhai",
            r#"
fn on_auth_info(section, request, password) {
    section.set("seen_realm", password.realm);
    section.set("seen_user", password.account.username);
}
fn on_config(config, request, account) {
    let s = config.section("seen");
    s.set("method", request.method);
    s.set("lang", request.query.lang);
    s.set("new", type_of(request.query["new"]));
    s.set("headers", request.headers.len());
    s.set("space", request.space.domain);
    s.set("username", account.username);
    s.set("team", account.dictionary.team);
    s.set("realm", account.space.realm);
    s.set("extra", type_of(account.extra));
    s.set("added", type_of(account.dictionary["added"]) + type_of(request["added"]));
}
"#,
        ),
    ]);
    let config = run(&hooks, &space(DOMAIN), Some(anna())).unwrap();
    assert_eq!(get(&config, "proxy_0", "allowed"), Some(""));
    assert_eq!(get(&config, "proxy_0", "refused"), Some("12"));
    assert_eq!(get(&config, "proxy_0", "copy"), Some("mine"));
    for auth in ["auth_info_0", "auth_info_1"] {
        assert_eq!(get(&config, auth, "allowed"), Some(""), "{auth}");
        assert_eq!(get(&config, auth, "refused"), Some("2"), "{auth}");
        assert_eq!(
            get(&config, auth, "seen_realm"),
            Some("realm.sip.example.org")
        );
        assert_eq!(get(&config, auth, "seen_user"), Some("anna"));
    }
    for (name, want) in [
        ("method", "GET"),
        ("lang", "fr"),
        ("new", "()"),
        ("space", DOMAIN),
        ("username", "anna"),
        ("team", "sales & support"),
        ("realm", "realm.sip.example.org"),
        ("extra", "()"),
        ("added", "()()"),
    ] {
        assert_eq!(get(&config, "seen", name), Some(want), "{name}");
    }
    assert_ne!(get(&config, "seen", "headers"), Some("0"));
}

#[test]
fn config_and_section_api() {
    let script = r#"
fn on_config(config, request, account) {
    let a = config.add_section("extra");
    let b = config.add_section("extra");          // a second one, appended
    a.set("n", 1);
    b["n"] = 2;                                    // indexer
    if b["n"] != "2" { throw "indexer get"; }
    config.set("misc", "k", "v");                  // shorthand, get-or-create
    config.set("misc", "k2", 2.5, true);
    if config.get("misc", "k") != "v" { throw "get"; }
    if config.get("nope", "k") != () { throw "missing is ()"; }
    if config.find("nope") != () { throw "find"; }
    if !("misc" in config) { throw "contains"; }
    let s = config.section("sip");
    if !s.remove("transport") { throw "remove"; }
    if s.remove("transport") { throw "removed twice"; }
    s.set("a", "1");
    s.set("b", true);
    let listed = "";
    for e in s {
        if listed != "" { listed += ","; }
        listed += e.name + "=" + e.value;
    }
    s.set("listed", listed);
    let count = 0;
    for sec in config { count += 1; }
    config.section("misc").set("count", count);
    config.section("misc").set("type", type_of(s));
    config.remove_section("ui");
    s.set("entries", s.entries().len());
    s.set("names", s.names().len());
}
"#;
    let (_dir, hooks) = load(&[("default.rhai", script)]);
    let mut sp = space(DOMAIN);
    sp.custom_entries = Some("[sip]\ntransport=tls\nkeep=1\n".into());
    let config = round_trip(&run(&hooks, &sp, Some(anna())).unwrap());
    let extras: Vec<_> = config
        .sections
        .iter()
        .filter(|s| s.name == "extra")
        .collect();
    assert_eq!(extras.len(), 2);
    assert_eq!(extras[0].get("n"), Some("1"));
    assert_eq!(extras[1].get("n"), Some("2"));
    assert_eq!(get(&config, "misc", "k2"), Some("2.5"));
    assert!(
        config
            .section("misc")
            .unwrap()
            .entry("k2")
            .unwrap()
            .overwrite
    );
    assert_eq!(get(&config, "sip", "transport"), None);
    assert_eq!(get(&config, "sip", "listed"), Some("keep=1,a=1,b=1"));
    assert_eq!(get(&config, "misc", "type"), Some("Section"));
    assert!(config.section("ui").is_none());
    assert_eq!(get(&config, "sip", "entries"), Some("4"));
    // proxy_0, auth_info_0/1, sip, extra×2, misc (ui removed after counting).
    assert_eq!(get(&config, "misc", "count"), Some("8"));
}

#[test]
fn a_section_handle_follows_its_section_and_fails_once_removed() {
    let script = r#"
fn on_proxy(section, request, account) {
    section.set("before", "1");
}
fn on_config(config, request, account) {
    let proxy = config.find("proxy_0");
    config.remove_section("sip");
    config.remove_section("ui");
    proxy.set("after", "1");
    config.remove_section("proxy_0");
    proxy.set("gone", "1");      // error: the section was removed
}
"#;
    let (_dir, hooks) = load(&[("default.rhai", script)]);
    let mut sp = space(DOMAIN);
    sp.custom_entries = Some("[sip]\ntransport=tls\n".into());
    let err = run(&hooks, &sp, Some(anna())).unwrap_err();
    let AppError::Hook(detail) = &err else {
        panic!("{err:?}")
    };
    assert!(detail.contains("default.rhai:11"), "{detail}");
    assert!(detail.contains("removed"), "{detail}");

    // The same without the last line: `after` landed in proxy_0 despite the removals.
    let fixed = script
        .replace(
            "    proxy.set(\"gone\", \"1\");      // error: the section was removed\n",
            "",
        )
        .replace("    config.remove_section(\"proxy_0\");\n", "");
    let (_dir2, hooks) = load(&[("default.rhai", &fixed)]);
    let config = run(&hooks, &sp, Some(anna())).unwrap();
    assert_eq!(get(&config, "proxy_0", "before"), Some("1"));
    assert_eq!(get(&config, "proxy_0", "after"), Some("1"));
    assert!(config.section("sip").is_none());
}

#[test]
fn deny_refuses_with_the_status_asked() {
    let (_dir, hooks) = load(&[
        (
            "default.rhai",
            r#"
import "rules" as rules;
fn on_config(config, request, account) {
    if account == () { deny(401, "Log in first."); }
    try {
        rules::check(account);      // deny from a module function, inside try/catch
    } catch (e) {
        config.section("x").set("caught", "1");
    }
}
"#,
        ),
        (
            "rules.rhai",
            r#"
fn check(account) {
    if account.dictionary["team"] != () { deny(451, "Unavailable for legal reasons."); }
}
"#,
        ),
    ]);
    match run(&hooks, &space(DOMAIN), Some(anna())) {
        Err(AppError::Denied {
            status,
            message,
            script,
        }) => {
            assert_eq!(status, 451);
            assert_eq!(message, "Unavailable for legal reasons.");
            assert_eq!(script, "default.rhai");
        }
        other => panic!("{other:?}"),
    }
    let err = run(&hooks, &space(DOMAIN), None).unwrap_err();
    assert_eq!(err.status(), 401);
    assert_eq!(err.public_message(), "Log in first.");
}

#[test]
fn deny_is_never_skipped_and_bad_statuses_are_script_errors() {
    let (_dir, hooks) = load(&[(
        "default.rhai",
        r#"fn on_config(config, request, account) {
    if account == () { deny(200, "ok?"); }
    deny(403, "No.");
}"#,
    )]);
    let mut sp = space(DOMAIN);
    sp.hook_failure = HookFailure::Skip;
    let err = run(&hooks, &sp, Some(anna())).unwrap_err();
    assert!(
        matches!(err, AppError::Denied { status: 403, .. }),
        "{err:?}"
    );
    // deny(200) is a script error: skipped under `skip`, a 500 under `fail`.
    assert!(run(&hooks, &sp, None).is_ok());
    let err = run(&hooks, &space(DOMAIN), None).unwrap_err();
    let AppError::Hook(detail) = &err else {
        panic!("{err:?}")
    };
    assert!(
        detail.contains("default.rhai:2") && detail.contains("400 and 599"),
        "{detail}"
    );
    assert_eq!(err.status(), 500);
    assert_eq!(err.public_message(), "Internal server error");
}

#[test]
fn bad_values_fail_at_the_call_with_file_and_line() {
    let (_dir, hooks) = load(&[(
        "default.rhai",
        "fn on_config(config, request, account) {\n    let s = config.section(\"sip\");\n    s.set(\"x\", \"line\\nbreak\");\n}\n",
    )]);
    let err = run(&hooks, &space(DOMAIN), None).unwrap_err();
    let AppError::Hook(detail) = &err else {
        panic!("{err:?}")
    };
    assert!(detail.starts_with("default.rhai:3:"), "{detail}");
    assert!(detail.contains("control character"), "{detail}");

    for bad in [
        r#"config.section("a]b")"#,
        r#"config.section("s").set("", "v")"#,
        r#"config.section("s").set("k", ())"#,
        r#"config.section("s").set("k", [1])"#,
        r#"config.section("s").set("k", request.query["missing"])"#,
    ] {
        let (_dir, hooks) = load(&[(
            "default.rhai",
            &format!("fn on_config(config, request, account) {{ {bad}; }}"),
        )]);
        let err = run(&hooks, &space(DOMAIN), None).unwrap_err();
        assert!(matches!(err, AppError::Hook(_)), "{bad}: {err:?}");
    }
}

#[test]
fn skip_serves_the_document_without_the_failing_scripts_changes() {
    let (_dir, hooks) = load(&[
        (
            "default.rhai",
            r#"fn on_config(config, request, account) { config.section("sip").set("by_default", "1"); }"#,
        ),
        (
            "sip.example.org.rhai",
            r#"
fn on_proxy(section, request, account) { section.set("half_done", "1"); }
fn on_config(config, request, account) {
    config.section("sip").set("by_space", "1");
    let x = 1 / 0;
}"#,
        ),
    ]);
    let mut sp = space(DOMAIN);
    sp.hook_failure = HookFailure::Skip;
    let config = run(&hooks, &sp, Some(anna())).unwrap();
    assert_eq!(get(&config, "sip", "by_default"), Some("1"));
    assert_eq!(get(&config, "sip", "by_space"), None);
    assert_eq!(
        get(&config, "proxy_0", "half_done"),
        None,
        "all of the script's changes go"
    );
    assert!(get(&config, "proxy_0", "reg_identity").is_some());

    let err = run(&hooks, &space(DOMAIN), Some(anna())).unwrap_err();
    let AppError::Hook(detail) = &err else {
        panic!("{err:?}")
    };
    assert!(detail.contains("sip.example.org.rhai:5"), "{detail}");
}

#[test]
fn top_level_imports_and_constants_reach_hook_functions() {
    let (_dir, hooks) = load(&[
        (
            "default.rhai",
            r#"
import "util" as util;
const GREETING = "hello";
fn on_config(config, request, account) {
    config.section("t").set("v", util::shout(global::GREETING) + util::SUFFIX);
}"#,
        ),
        (
            "util.rhai",
            "export const SUFFIX = \"!\";\nfn shout(s) { s.to_upper() }\n",
        ),
    ]);
    let config = run(&hooks, &space(DOMAIN), None).unwrap();
    assert_eq!(get(&config, "t", "v"), Some("HELLO!"));
}

fn load_error(files: &[(&str, &str)]) -> String {
    let dir = hooks_dir(files);
    format!("{:#}", Hooks::load(&settings(dir.path())).unwrap_err())
}

#[test]
fn compile_errors_at_start_name_file_and_line() {
    let e = load_error(&[(
        "default.rhai",
        "fn on_config(config, request, account) {\n  let x = ;\n}\n",
    )]);
    assert!(e.contains("default.rhai:2:"), "{e}");
    let e = load_error(&[(
        "default.rhai",
        "fn on_config(c, r, a) {\n  eval(\"1\")\n}\n",
    )]);
    assert!(e.contains("default.rhai:2:") && e.contains("eval"), "{e}");
    let e = load_error(&[("default.rhai", "fn on_config(c, r) { }\n")]);
    assert!(e.contains("on_config takes 3 parameters"), "{e}");
    let e = load_error(&[("default.rhai", "fn f() {\n  undefined_variable\n}\n")]);
    assert!(
        e.contains("default.rhai:2:") && e.contains("undefined_variable"),
        "{e}"
    );
    let e = load_error(&[
        (
            "default.rhai",
            "import \"broken\" as b;\nfn on_config(c, r, a) { }\n",
        ),
        ("broken.rhai", "fn f( {\n"),
    ]);
    assert!(e.contains("broken.rhai:1:"), "{e}");
}

#[test]
fn imports_cannot_leave_the_hooks_directory() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("evil.rhai"), "fn f() { 1 }").unwrap();
    let absolute = outside.path().join("evil").display().to_string();
    for path in [
        "../evil",
        absolute.as_str(),
        "sub/evil",
        "default",
        "x.example.com",
    ] {
        let e = load_error(&[(
            "default.rhai",
            &format!("import \"{path}\" as m;\nfn on_config(c, r, a) {{ }}\n"),
        )]);
        assert!(e.contains("default.rhai:1"), "{path}: {e}");
    }
    // A symlink pointing outside is refused too.
    #[cfg(unix)]
    {
        let dir = hooks_dir(&[(
            "default.rhai",
            "import \"link\" as m;\nfn on_config(c, r, a) { }\n",
        )]);
        std::os::unix::fs::symlink(
            outside.path().join("evil.rhai"),
            dir.path().join("link.rhai"),
        )
        .unwrap();
        let e = format!("{:#}", Hooks::load(&settings(dir.path())).unwrap_err());
        assert!(e.contains("leaves the hooks directory"), "{e}");
    }
    // Dynamic import paths are refused at run time rather than read from disk.
    let (_dir, hooks) = load(&[
        (
            "default.rhai",
            "fn on_config(c, r, a) { let p = \"util\"; import p as m; }\n",
        ),
        ("util.rhai", "fn f() { 1 }\n"),
    ]);
    assert!(matches!(
        run(&hooks, &space(DOMAIN), None),
        Err(AppError::Hook(_))
    ));
}

#[test]
fn a_missing_directory_is_an_empty_set() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = Hooks::load(&settings(&dir.path().join("nope"))).unwrap();
    let config = run(&hooks, &space(DOMAIN), Some(anna())).unwrap();
    assert!(config.section("proxy_0").is_some());
    assert!(hooks.status().scripts.is_empty());
}

#[test]
fn credentials_in_the_request_are_not_shown_to_scripts() {
    let (_dir, hooks) = load(&[(
        "default.rhai",
        r#"fn on_config(config, request, account) {
    let s = config.section("seen");
    s.set("path", request.path);
    s.set("headers", request.headers.keys().len());
    s.set("auth", type_of(request.headers["authorization"]));
    s.set("key", type_of(request.headers["x-api-key"]));
    s.set("cookie", type_of(request.headers["cookie"]));
}"#,
    )]);
    let sp = space(DOMAIN);
    let mut req = RequestInfo::synthetic(DOMAIN, "/provisioning/SECRET-TOKEN", RouteKind::Token);
    for (k, v) in [
        ("authorization", "Digest username=\"anna\""),
        ("x-api-key", "SECRET-KEY"),
        ("cookie", "session=SECRET"),
        ("user-agent", "Linphone"),
    ] {
        req.headers.insert(k.into(), v.into());
    }
    let assembled = assemble(&sp, Some(&sp), Some(&anna()), &[]).unwrap();
    let ctx = HookContext {
        space: sp.clone(),
        account_space: Some(sp.clone()),
        request: req,
        account: Some(anna()),
        proxy_section: assembled.proxy_section,
        auth_info_sections: assembled.auth_info_sections,
    };
    let mut config = assembled.config;
    hooks.run(&ctx, &mut config).unwrap();
    assert_eq!(get(&config, "seen", "path"), Some("/provisioning/{token}"));
    assert_eq!(get(&config, "seen", "headers"), Some("1"));
    for k in ["auth", "key", "cookie"] {
        assert_eq!(get(&config, "seen", k), Some("()"), "{k}");
    }
    assert!(!xml::render(&config).contains("SECRET"));
}

/// A `MakeWriter` collecting log output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn script_logging_goes_to_tracing_with_the_file_name() {
    let (_dir, hooks) = load(&[
        (
            "default.rhai",
            "fn on_config(config, request, account) {\n    log_info(\"info from script\");\n    log_warn(`warn ${1 + 1}`);\n    log_error(#{a: 1});\n    print(\"printed\");\n    debug(\"debugged\");\n}\n",
        ),
        (
            "sip.example.org.rhai",
            "fn on_config(config, request, account) { print(\"from the space\"); }\n",
        ),
    ]);
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        run(&hooks, &space(DOMAIN), None).unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for want in [
        "info from script",
        "warn 2",
        "printed",
        "debugged",
        "script=default.rhai",
        "line=2",
        "from the space",
        "script=sip.example.org.rhai",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    assert!(text.contains("WARN") && text.contains("ERROR"), "{text}");
}

// ---- sandbox -------------------------------------------------------------------------

/// Generous bound: limits must stop a runaway script, not let it run for long.
const RETURNS_WITHIN: Duration = Duration::from_secs(20);

fn assert_cut_off(body: &str, settings_for: impl Fn(&Path) -> HookSettings, expect: &[&str]) {
    let dir = hooks_dir(&[(
        "default.rhai",
        &format!(
            "fn on_config(config, request, account) {{\n{body}\n}}\nfn deep(n) {{ deep(n + 1) }}\n"
        ),
    )]);
    let hooks = Hooks::load(&settings_for(dir.path())).unwrap();
    let started = Instant::now();
    let err = run(&hooks, &space(DOMAIN), None).unwrap_err();
    assert!(
        started.elapsed() < RETURNS_WITHIN,
        "{body}: took {:?}",
        started.elapsed()
    );
    let AppError::Hook(detail) = &err else {
        panic!("{body}: {err:?}")
    };
    eprintln!("{body}\n  -> {detail}");
    let lower = detail.to_lowercase();
    assert!(expect.iter().any(|e| lower.contains(e)), "{body}: {detail}");
    // File and line: the exact position, or (for errors Rhai reports without one) the hook.
    let line = detail.strip_prefix("default.rhai:").unwrap_or("");
    assert!(line.starts_with(|c: char| c.is_ascii_digit()), "{detail}");
}

/// A size limit, or — in a slow (debug) build, where checking a big map's size on every
/// insert is slow — the deadline, whichever comes first.
const TOO_LARGE: &[&str] = &["too large", "deadline"];

#[test]
fn runaway_scripts_are_cut_off() {
    // With the default limits, max_operations stops a tight loop.
    assert_cut_off("loop {}", settings, &["too many operations"]);
    assert_cut_off("deep(0);", settings, &["stack overflow"]);
    assert_cut_off("let s = \"x\"; loop { s += s; }", settings, TOO_LARGE);
    // A growing map. Rhai 1.27 re-checks a map's size when it is merged (`+=`, `mixin`) or
    // returned, not on `m[key] = value`: there max_operations (or the deadline) stops it.
    let grow_map = "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }";
    assert_cut_off(
        grow_map,
        settings,
        &["too large", "too many operations", "deadline"],
    );
    let merge_map =
        "let m = #{}; let i = 0; loop { let one = #{}; one[`k${i}`] = i; m += one; i += 1; }";
    let small_maps = |dir: &Path| HookSettings {
        max_map_size: 200,
        ..settings(dir)
    };
    assert_cut_off(merge_map, small_maps, &["object map too large"]);
    assert_cut_off("let a = []; loop { a.push(a.len()); }", settings, TOO_LARGE);
    assert_cut_off(
        "let s = config.section(\"big\"); let v = \"x\"; v.pad(60000, 'x'); let i = 0; loop { s.set(`k${i}`, v); i += 1; }",
        settings,
        TOO_LARGE,
    );
}

#[test]
fn the_wall_clock_deadline_stops_what_operations_do_not() {
    let generous = |dir: &Path| HookSettings {
        max_operations: u64::MAX / 2,
        deadline_ms: 100,
        ..settings(dir)
    };
    assert_cut_off("loop {}", generous, &["deadline"]);
}

/// The deadline holds within 10 %: a script whose time goes into native calls (string
/// building, array work, the document) is cut near `deadline_ms`, not hundreds of operations
/// later. Wall clock on a shared machine: the median of five runs is compared with the
/// budget plus its 10 %, and each run must have reached the budget (so it was the deadline,
/// not another limit, that stopped it).
#[test]
fn the_deadline_holds_within_ten_percent_even_in_native_calls() {
    const DEADLINE: Duration = Duration::from_millis(200);
    let bodies = [
        // String building: every operation copies tens of kilobytes.
        "let s = \"x\"; s.pad(50000, 'y'); loop { let t = s + \"z\"; t.replace(\"y\", \"w\"); t.to_upper(); }",
        // Array work: each search compares thousands of items in one native call.
        "let a = []; a.pad(5000, \"item\"); loop { a.index_of(\"none\"); a.contains(\"none\"); }",
        // The document: big values set again and again, the whole document listed.
        "let s = config.section(\"big\"); let v = \"x\"; v.pad(50000, 'x'); let i = 0; loop { s.set(`k${i % 16}`, v); config.names(); s.get(`k${i % 7}`).len(); i += 1; }",
    ];
    for body in bodies {
        let dir = hooks_dir(&[(
            "default.rhai",
            &format!("fn on_config(config, request, account) {{\n{body}\n}}\n"),
        )]);
        let hooks = Hooks::load(&HookSettings {
            max_operations: u64::MAX / 2,
            deadline_ms: DEADLINE.as_millis() as u64,
            ..settings(dir.path())
        })
        .unwrap();
        let mut took = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let result = run(&hooks, &space(DOMAIN), None);
            took.push(started.elapsed());
            assert!(
                matches!(result, Err(AppError::Hook(ref d)) if d.contains("deadline")),
                "{body}: {result:?}"
            );
        }
        took.sort();
        eprintln!("{body}\n  -> {took:?}");
        assert!(took[0] >= DEADLINE, "{body}: stopped early: {took:?}");
        let median = took[took.len() / 2];
        assert!(
            median <= DEADLINE + DEADLINE / 10,
            "{body}: the deadline of {DEADLINE:?} overran by more than 10 %: {took:?}"
        );
    }
}

#[test]
fn well_behaved_requests_keep_succeeding_while_a_script_runs_away() {
    let dir = hooks_dir(&[
        (
            "default.rhai",
            "fn on_config(config, request, account) { config.section(\"ok\").set(\"v\", 1); }\n",
        ),
        (
            "runaway.example.org.rhai",
            "fn on_config(config, request, account) { loop {} }\n",
        ),
    ]);
    let hooks = Arc::new(
        Hooks::load(&HookSettings {
            max_operations: u64::MAX / 2,
            deadline_ms: 1500,
            ..settings(dir.path())
        })
        .unwrap(),
    );
    let runaway = {
        let hooks = hooks.clone();
        std::thread::spawn(move || run(&hooks, &space("runaway.example.org"), None))
    };
    let started = Instant::now();
    let mut served = 0;
    while !runaway.is_finished() && started.elapsed() < RETURNS_WITHIN {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let hooks = hooks.clone();
                std::thread::spawn(move || run(&hooks, &space(DOMAIN), Some(anna())))
            })
            .collect();
        for w in workers {
            let config = w.join().unwrap().unwrap();
            assert_eq!(get(&config, "ok", "v"), Some("1"));
            served += 1;
        }
    }
    let result = runaway.join().unwrap();
    assert!(
        matches!(result, Err(AppError::Hook(ref d)) if d.contains("deadline")),
        "{result:?}"
    );
    assert!(served >= 2, "served {served} while the runaway script ran");
}

#[test]
fn eval_and_file_access_are_not_available() {
    let e = load_error(&[(
        "default.rhai",
        "fn on_config(c, r, a) { eval(\"1 + 1\") }\n",
    )]);
    assert!(e.contains("eval"), "{e}");
    // `sleep` would block past the deadline: it is shadowed by an error.
    let started = Instant::now();
    for call in ["sleep(30)", "sleep(30.0)"] {
        let (_dir, hooks) = load(&[(
            "default.rhai",
            &format!("fn on_config(c, r, a) {{ {call}; }}\n"),
        )]);
        let err = run(&hooks, &space(DOMAIN), None).unwrap_err();
        assert!(
            format!("{err}").contains("sleep() is not available"),
            "{call}: {err}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // The raw engine has no file, clock or process functions: calling one is a script error.
    for call in [
        "open_file(\"/etc/passwd\")",
        "timestamp()",
        "read_string(\"/etc/passwd\")",
    ] {
        let (_dir, hooks) = load(&[(
            "default.rhai",
            &format!("fn on_config(c, r, a) {{ {call}; }}\n"),
        )]);
        let err = run(&hooks, &space(DOMAIN), None).unwrap_err();
        assert!(format!("{err}").contains("not found"), "{call}: {err}");
    }
}

// ---- the bundled examples ---------------------------------------------------------------

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks")
}

#[test]
fn bundled_examples_compile_and_define_hooks() {
    let mut out = Vec::new();
    let ok = tools::check_dir(&bundled(), &HookSettings::default(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(ok, "{text}");
    assert!(
        text.contains("default.rhai") && text.contains("on_config"),
        "{text}"
    );
    assert!(
        text.contains("tls.example.com.rhai") && text.contains("on_proxy"),
        "{text}"
    );
    assert!(
        text.contains("policy.rhai") && text.contains("module"),
        "{text}"
    );
}

#[test]
fn bundled_fixtures_pass() {
    let mut out = Vec::new();
    let ok = tools::test_dir(&bundled(), &HookSettings::default(), false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(ok, "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    assert!(!text.contains("no fixtures"), "{text}");
}

#[test]
fn bundled_default_does_not_change_other_spaces_documents() {
    let hooks = Hooks::load(&settings(&bundled())).unwrap();
    let sp = space("demo.provisio.test");
    let mut acct = anna();
    acct.domain = sp.domain.clone();
    let assembled = assemble(&sp, Some(&sp), Some(&acct), &passwords()).unwrap();
    let with_hooks = run(&hooks, &sp, Some(acct)).unwrap();
    assert_eq!(with_hooks, assembled.config);
    let anonymous = run(&hooks, &sp, None).unwrap();
    assert_eq!(
        anonymous,
        assemble(&sp, Some(&sp), None, &[]).unwrap().config
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn an_edited_expectation_fails_with_a_line_per_entry_diff_and_bless_fixes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hooks");
    copy_dir(&bundled(), &dir);
    let expected = dir.join("fixtures/tls-account/expected.xml");
    let text = std::fs::read_to_string(&expected).unwrap();
    let edited = text.replace("edge.tls.example.com:5061", "edge.tls.example.com:5062");
    assert_ne!(text, edited);
    std::fs::write(&expected, &edited).unwrap();

    let mut out = Vec::new();
    assert!(!tools::test_dir(&dir, &HookSettings::default(), false, &mut out).unwrap());
    let report = String::from_utf8(out).unwrap();
    assert!(report.contains("FAILED   tls-account"), "{report}");
    assert!(
        report.contains("- [proxy_0] reg_proxy = <sip:edge.tls.example.com:5062;transport=tls>"),
        "{report}"
    );
    assert!(
        report.contains("+ [proxy_0] reg_proxy = <sip:edge.tls.example.com:5061;transport=tls>"),
        "{report}"
    );
    assert!(report.contains("1 failed"), "{report}");

    let mut out = Vec::new();
    assert!(tools::test_dir(&dir, &HookSettings::default(), true, &mut out).unwrap());
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("blessed  tls-account")
    );
    let mut out = Vec::new();
    assert!(tools::test_dir(&dir, &HookSettings::default(), false, &mut out).unwrap());
}

#[test]
fn render_fixture_goes_through_assemble_hooks_and_finish() {
    let case = bundled().join("fixtures/query-allow-list");
    let fixture = tools::Fixture::load(&case).unwrap();
    let hooks = Hooks::load(&settings(&bundled())).unwrap();
    let xml_text = tools::render_fixture(&fixture, &hooks).unwrap();
    assert!(!xml_text.contains('\n'), "one line, as served");
    let config = xml::parse(&xml_text).unwrap();
    let proxy = config.section("proxy_0").unwrap();
    assert_eq!(proxy.get("reg_expires"), Some("600"));
    assert!(proxy.entry("reg_expires").unwrap().overwrite);
    assert_eq!(proxy.get("publish"), None, "malformed value ignored");
    assert_eq!(proxy.get("reg_proxy"), None, "not on the allow-list");
}

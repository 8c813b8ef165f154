//! Hostile input over HTTP, on both stores: characters XML 1.0 or Linphone's rc file cannot
//! carry are refused where they enter (422 naming the field, or the INI line) and never reach a
//! document; every document served here parses in libxml2 (`xmllint`, the parser liblinphone
//! uses) and in roxmltree; `reg_identity` quotes the display name per RFC 3261; numbers outside
//! their documented range are 422 (no overflow); an admin cannot block or delete itself (409);
//! `min_password_length` decides the shortest password. The command line and the
//! configuration file refuse the same values, naming the flag, key or line.

mod api_support;
mod common;

use api_support::*;
use common::server::{Backend, TestApp};
use provisio::api::validate::limits;
use provisio::secret::hash_secret;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

const HOST: &str = "sip.example.com";

/// The characters the value rule refuses that the issue names, with their code points.
const FORBIDDEN: &[(char, &str)] = &[
    ('\u{fffe}', "U+FFFE"),
    ('\u{ffff}', "U+FFFF"),
    ('\u{85}', "U+0085"),
    ('\u{2028}', "U+2028"),
    ('\u{2029}', "U+2029"),
    ('\t', "U+0009"),
    ('\u{80}', "U+0080"),
    ('\u{9f}', "U+009F"),
    ('\u{7f}', "U+007F"),
    ('\u{1}', "U+0001"),
];

/// A display name that holds every awkward character the rule allows: XML specials, quotes and
/// backslashes, non-ASCII, a no-break space, a BOM, a non-character XML allows, U+FFFD and the
/// last code point.
const NASTY_NAME: &str =
    "Ann \"the \\ Admin\" <x> & 'y' ]]> é ☃ 😀 \u{a0}\u{feff}\u{fdd0}\u{fffd}\u{10ffff}";

/// Whether `xmllint` (libxml2, liblinphone's XML parser) can run: SKIPPED (printed once)
/// outside CI, a failure under CI.
fn xmllint_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        tool_available(
            "xmllint --version",
            "xmllint",
            "Debian package libxml2-utils",
        )
    })
}

/// Asserts that libxml2 accepts the document (when xmllint is installed).
fn assert_libxml2_accepts(xml: &str) {
    if !xmllint_available() {
        return;
    }
    let mut child = Command::new("xmllint")
        .args(["--noout", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xmllint");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "libxml2 refused the document: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(section, entry, value)` of a served document, read by a strict parser after libxml2 has
/// accepted it; no value holds a character the rule refuses.
fn read_document(xml: &str) -> Vec<(String, String, String)> {
    assert_libxml2_accepts(xml);
    let doc = roxmltree::Document::parse(xml).expect("roxmltree parses the document");
    let mut out = Vec::new();
    for section in doc.root_element().children().filter(|n| n.is_element()) {
        for entry in section.children().filter(|n| n.is_element()) {
            let value: String = entry.children().filter_map(|t| t.text()).collect();
            out.push((
                section.attribute("name").unwrap().to_string(),
                entry.attribute("name").unwrap().to_string(),
                value,
            ));
        }
    }
    for (s, e, v) in &out {
        for text in [s, e, v] {
            assert!(
                !text.chars().any(provisio::lpconfig::is_forbidden_char),
                "{s}/{e} = {v:?}"
            );
        }
    }
    out
}

/// The value of `section/entry` in a read document.
fn value<'a>(doc: &'a [(String, String, String)], section: &str, entry: &str) -> Option<&'a str> {
    doc.iter()
        .find(|(s, e, _)| s == section && e == entry)
        .map(|(_, _, v)| v.as_str())
}

/// Reads a SIP name-addr `"display" <uri>` by RFC 3261 §25.1 (quoted-string with quoted-pairs),
/// written here independently of provisio's code.
fn parse_name_addr(text: &str) -> Option<(String, String)> {
    let mut chars = text.chars();
    if chars.next()? != '"' {
        return None;
    }
    let mut name = String::new();
    loop {
        match chars.next()? {
            '\\' => match chars.next()? {
                '\r' | '\n' => return None,
                c => name.push(c),
            },
            '"' => break,
            c if c.is_control() => return None,
            c => name.push(c),
        }
    }
    let rest: String = chars.collect();
    let uri = rest.strip_prefix(" <")?.strip_suffix('>')?;
    (!uri.contains(['<', '>', '"'])).then(|| (name, uri.to_string()))
}

/// A super space and its admin's key.
async fn super_admin(app: &TestApp) -> String {
    let space = app.space(HOST, |s| s.super_space = true).await;
    admin(app, &space, "root").await.1
}

/// The first message of a 422 field.
fn field_message(body: &Value, field: &str) -> String {
    body["errors"][field][0]
        .as_str()
        .unwrap_or_else(|| panic!("no error for {field} in {body}"))
        .to_string()
}

both_backends!(
    forbidden_characters_are_refused_where_they_enter,
    |app: TestApp| async move {
        let key = super_admin(&app).await;
        let post =
            |body: Value| call(&app, Method::POST, HOST, "/api/accounts", Some(&key)).json(&body);
        let put_space = |body: Value| {
            call(
                &app,
                Method::PUT,
                HOST,
                &format!("/api/spaces/{HOST}"),
                Some(&key),
            )
            .json(&body)
        };

        for (i, (c, code)) in FORBIDDEN.iter().enumerate() {
            let user = format!("user{i}");
            // Account fields: display name, e-mail, phone, dictionary value.
            for (field, body) in [
                ("display_name", json!({"display_name": format!("A{c}B")})),
                ("email", json!({"email": format!("a{c}b@example.com")})),
                ("phone", json!({"phone": format!("+33{c}1")})),
                (
                    "dictionary",
                    json!({"dictionary": {"tier": format!("gold{c}")}}),
                ),
            ] {
                let mut body = body;
                body["username"] = json!(user);
                body["password"] = json!("long-enough");
                let (status, answer) = status_json(post(body.clone())).await;
                assert_eq!(status, 422, "{field} {code}: {answer}");
                let message = field_message(&answer, field);
                assert!(message.contains(code), "{field}: {message}");
            }
            // The same through an HTML form.
            let (status, answer) = status_json(
                call(&app, Method::POST, HOST, "/api/accounts", Some(&key)).form(&[
                    ("username", user.as_str()),
                    ("password", "long-enough"),
                    ("display_name", &format!("A{c}B")),
                ]),
            )
            .await;
            assert_eq!(status, 422, "form {code}: {answer}");
            assert!(field_message(&answer, "display_name").contains(code));

            // Space INI texts: a value, a key and a section name, each naming its line.
            for field in ["custom_provisioning_entries", "base_rc"] {
                for ini in [
                    format!("[sip]\nk=a{c}b\n"),
                    format!("[sip]\nk{c}x=1\n"),
                    format!("# comment\n[s{c}x]\n"),
                    format!("[sip]\nk=\"quoted {c} value\"\n"),
                ] {
                    let (status, answer) = status_json(put_space(json!({ field: ini }))).await;
                    assert_eq!(status, 422, "{field} {ini:?}: {answer}");
                    let message = field_message(&answer, field);
                    assert!(
                        message.contains(code) && message.contains("line 2"),
                        "{field}: {message}"
                    );
                }
            }
            // Space URLs and name.
            for (field, text) in [
                (
                    "vcard_list_url",
                    format!("https://contacts.example.com/{c}list"),
                ),
                ("public_url", format!("https://prov.example.com/{c}p")),
                ("name", format!("Example{c}Space")),
            ] {
                let (status, answer) = status_json(put_space(json!({ field: text }))).await;
                assert_eq!(status, 422, "{field} {code}: {answer}");
                assert!(field_message(&answer, field).contains(code), "{answer}");
            }
        }

        // A realm is sent in WWW-Authenticate: printable ASCII only.
        for realm in ["r\u{fffe}", "ré", "r\"q", "r\\q"] {
            let (status, answer) = status_json(put_space(
                json!({"digest_authentication_configuration": {"realm": realm}}),
            ))
            .await;
            assert_eq!(status, 422, "{realm:?}: {answer}");
            assert!(answer["errors"].get("realm").is_some(), "{answer}");
        }

        // A lone surrogate cannot be text at all: the body is not valid JSON (400), nothing is
        // stored. A surrogate pair is one ordinary character.
        for escaped in [r"\ud800", r"\udfff", r"a\ud800b", r"\ud800\u0041"] {
            let r = call(&app, Method::POST, HOST, "/api/accounts", Some(&key))
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"username": "surrogate", "password": "long-enough", "display_name": "{escaped}"}}"#
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{escaped}");
            let body: Value = r.json().await.unwrap();
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Invalid JSON"),
                "{body}"
            );
        }
        let (status, answer) = status_json(
            call(&app, Method::POST, HOST, "/api/accounts", Some(&key))
                .header("content-type", "application/json")
                .body(r#"{"username": "pair", "password": "long-enough", "display_name": "\ud83d\ude00"}"#),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["display_name"], "😀");

        // Nothing refused was stored: the space is untouched and only root and pair exist.
        let (_, space) = status_json(call(
            &app,
            Method::GET,
            HOST,
            &format!("/api/spaces/{HOST}"),
            Some(&key),
        ))
        .await;
        for field in [
            "custom_provisioning_entries",
            "base_rc",
            "vcard_list_url",
            "public_url",
        ] {
            assert_eq!(space[field], Value::Null, "{field}");
        }
        assert_eq!(space["name"], HOST);
        let (_, list) =
            status_json(call(&app, Method::GET, HOST, "/api/accounts", Some(&key))).await;
        assert_eq!(list["total"], 2, "{list}");

        // The one account made here provisions a document libxml2 reads.
        let token = answer["provisioning_token"].as_str().unwrap();
        let r = app
            .provision(HOST, &format!("/provisioning/{token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let doc = read_document(&r.text().await.unwrap());
        assert_eq!(
            value(&doc, "proxy_0", "reg_identity"),
            Some("\"😀\" <sip:pair@sip.example.com>")
        );
        app.stop().await;
    }
);

both_backends!(
    every_allowed_character_reaches_a_document_libxml2_reads,
    |app: TestApp| async move {
        let key = super_admin(&app).await;
        let custom = "[sip]\n\
                      transport = tls\n\
                      nasty = \"  a&b <c> \\\"q\\\" \\\\ é ☃ 😀 \u{a0}\u{feff}\u{fdd0}\u{fffd}\u{10ffff} ]]> \"\n\
                      [net]\n\
                      stun = <sip:stun.example.com;transport=tls>\n";
        let (status, answer) = status_json(
            call(
                &app,
                Method::PUT,
                HOST,
                &format!("/api/spaces/{HOST}"),
                Some(&key),
            )
            .json(&json!({
                "custom_provisioning_entries": custom,
                "vcard_list_url": "https://contacts.example.com/list?a=1&b=<2>&c=\"3\"",
            })),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let (status, account) = status_json(
            call(&app, Method::POST, HOST, "/api/accounts", Some(&key)).json(&json!({
                "username": "nasty",
                "password": "long-enough",
                "display_name": NASTY_NAME,
                "email": "a&b@example.com",
                "dictionary": {"note": "x<y>&\"z\" 😀"},
            })),
        )
        .await;
        assert_eq!(status, 200, "{account}");
        let token = account["provisioning_token"].as_str().unwrap();
        let r = app
            .provision(HOST, &format!("/provisioning/{token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let doc = read_document(&r.text().await.unwrap());
        assert_eq!(
            value(&doc, "sip", "nasty"),
            Some("  a&b <c> \"q\" \\ é ☃ 😀 \u{a0}\u{feff}\u{fdd0}\u{fffd}\u{10ffff} ]]> ")
        );
        assert_eq!(
            value(&doc, "net", "stun"),
            Some("<sip:stun.example.com;transport=tls>")
        );
        assert_eq!(
            value(&doc, "misc", "contacts-vcard-list"),
            Some("https://contacts.example.com/list?a=1&b=<2>&c=\"3\"")
        );
        let identity = value(&doc, "proxy_0", "reg_identity").unwrap();
        let (name, uri) = parse_name_addr(identity).unwrap_or_else(|| panic!("{identity}"));
        assert_eq!(name, NASTY_NAME);
        assert_eq!(uri, "sip:nasty@sip.example.com");

        // The anonymous document of the space parses too.
        let r = app.provision(HOST, "/provisioning").send().await.unwrap();
        assert_eq!(r.status(), 200);
        read_document(&r.text().await.unwrap());
        app.stop().await;
    }
);

both_backends!(
    reg_identity_is_an_rfc3261_quoted_string,
    |app: TestApp| async move {
        let space = app.space(HOST, |_| {}).await;
        for (i, display) in [r#"a"b\c"#, r#"\"#, r#"""#, r#"O\"Reily"#, "plain"]
            .into_iter()
            .enumerate()
        {
            let user = format!("q{i}");
            let account = app
                .account_with(&space, &user, "long-enough", |a| {
                    a.display_name = Some(display.to_string())
                })
                .await;
            let token = app.token(&account).await;
            let r = app
                .provision(HOST, &format!("/provisioning/{token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let doc = read_document(&r.text().await.unwrap());
            let identity = value(&doc, "proxy_0", "reg_identity").unwrap();
            let escaped = display.replace('\\', "\\\\").replace('"', "\\\"");
            assert_eq!(identity, format!("\"{escaped}\" <sip:{user}@{HOST}>"));
            let (name, uri) = parse_name_addr(identity).unwrap_or_else(|| panic!("{identity}"));
            assert_eq!(name, display);
            assert_eq!(uri, format!("sip:{user}@{HOST}"));
        }
        app.stop().await;
    }
);

/// A hook that writes U+FFFE: the request fails (500) and burns nothing; with
/// `hook_failure = skip` the document is served without the change and parses in libxml2.
async fn hook_cannot_slip_a_forbidden_character_through(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |s| {
        std::fs::write(
            s.hooks.dir.join("default.rhai"),
            r#"fn on_proxy(section, request, account) {
                   if "bad" in request.query { section.set("x_note", "a\uFFFEb"); }
                   if "bad2" in request.query { section.set("x\u2028note", "v"); }
               }"#,
        )
        .unwrap();
    })
    .await
    else {
        return;
    };
    let space = app.space(HOST, |_| {}).await;
    let account = app.account(&space, "hooked", "long-enough").await;
    let token = app.token(&account).await;
    for query in ["bad", "bad2"] {
        let r = app
            .provision(HOST, &format!("/provisioning/{token}?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500, "{query}");
        let state = app
            .state
            .store
            .provisioning_token(&hash_secret(&token))
            .await
            .unwrap()
            .unwrap();
        assert!(!state.used, "a refused document burns nothing");
    }
    let r = app
        .provision(HOST, &format!("/provisioning/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc = read_document(&r.text().await.unwrap());
    assert_eq!(value(&doc, "proxy_0", "x_note"), None);

    let skipping = app
        .space("skip.example.com", |s| {
            s.hook_failure = provisio::model::HookFailure::Skip
        })
        .await;
    let account = app.account(&skipping, "skipper", "long-enough").await;
    let token = app.token(&account).await;
    let r = app
        .provision("skip.example.com", &format!("/provisioning/{token}?bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc = read_document(&r.text().await.unwrap());
    assert_eq!(value(&doc, "proxy_0", "x_note"), None);
    assert!(value(&doc, "proxy_0", "reg_identity").is_some());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hook_forbidden_character_sqlite() {
    hook_cannot_slip_a_forbidden_character_through(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hook_forbidden_character_postgres() {
    hook_cannot_slip_a_forbidden_character_through(Backend::Postgres).await;
}

both_backends!(
    numbers_outside_their_range_are_422,
    |app: TestApp| async move {
        let key = super_admin(&app).await;
        let put_space = |body: Value| {
            call(
                &app,
                Method::PUT,
                HOST,
                &format!("/api/spaces/{HOST}"),
                Some(&key),
            )
            .json(&body)
        };

        // The reported overflow, and its neighbours.
        for (field, bad) in [
            (
                "provisioning_token_expiration_minutes",
                json!(9223372036854775807_i64),
            ),
            (
                "provisioning_token_expiration_minutes",
                json!("9223372036854775808"),
            ),
            (
                "provisioning_token_expiration_minutes",
                json!(18446744073709551615_u64),
            ),
            ("provisioning_token_expiration_minutes", json!(-1)),
            (
                "provisioning_token_expiration_minutes",
                json!(limits::TOKEN_LIFETIME_MINUTES.end() + 1),
            ),
            ("provisioning_token_expiration_minutes", json!(1.5)),
            ("provisioning_token_expiration_minutes", json!(1e30)),
            ("max_accounts", json!(-1)),
            ("max_accounts", json!(limits::MAX_ACCOUNTS.end() + 1)),
            ("max_account", json!(limits::UI_MAX_ACCOUNT.end() + 1)),
            ("max_account", json!(i64::MIN)),
        ] {
            let (status, answer) = status_json(put_space(json!({ field: bad }))).await;
            assert_eq!(status, 422, "{field}={bad}: {answer}");
            assert!(
                answer["errors"].get(field).is_some(),
                "{field}={bad}: {answer}"
            );
        }
        // Creating a space checks the same ranges.
        let (status, answer) = status_json(
            call(&app, Method::POST, HOST, "/api/spaces", Some(&key)).json(&json!({
                "domain": "new.example.com",
                "provisioning_token_expiration_minutes": 9223372036854775807_i64,
            })),
        )
        .await;
        assert_eq!(status, 422, "{answer}");
        assert!(
            field_message(&answer, "provisioning_token_expiration_minutes")
                .contains("between 0 and 525600")
        );

        // The largest lifetime works: a token minted now expires in a year and provisions.
        let (status, answer) = status_json(put_space(json!({
            "provisioning_token_expiration_minutes": limits::TOKEN_LIFETIME_MINUTES.end(),
            "max_accounts": limits::MAX_ACCOUNTS.end(),
            "max_account": limits::UI_MAX_ACCOUNT.end(),
        })))
        .await;
        assert_eq!(status, 200, "{answer}");
        let (status, account) = status_json(
            call(&app, Method::POST, HOST, "/api/accounts", Some(&key))
                .json(&json!({"username": "yearly", "password": "long-enough"})),
        )
        .await;
        assert_eq!(status, 200, "{account}");
        let expire = account["provisioning_token_expire_at"].as_str().unwrap();
        let expire =
            time::OffsetDateTime::parse(expire, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{expire}: {e}"));
        let ahead = (expire - time::OffsetDateTime::now_utc()).whole_minutes();
        assert!(
            (525_590..=525_600).contains(&ahead),
            "expires in {ahead} minutes"
        );
        let token = account["provisioning_token"].as_str().unwrap();
        let r = app
            .provision(HOST, &format!("/provisioning/{token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let doc = read_document(&r.text().await.unwrap());
        assert_eq!(value(&doc, "ui", "max_account"), Some("1000"));

        // A value stored before the ranges existed (or edited by hand) cannot wrap: the token is
        // not born expired.
        let mut space = app
            .state
            .store
            .space_by_domain(HOST)
            .await
            .unwrap()
            .unwrap();
        space.token_lifetime_minutes = i64::MAX;
        app.state.store.update_space(&space).await.unwrap();
        app.spaces_written().await;
        let id = account["id"].as_i64().unwrap();
        let (status, minted) = status_json(call(
            &app,
            Method::GET,
            HOST,
            &format!("/api/accounts/{id}/provision"),
            Some(&key),
        ))
        .await;
        assert_eq!(status, 200, "{minted}");
        let token = minted["provisioning_token"].as_str().unwrap();
        let r = app
            .provision(HOST, &format!("/provisioning/{token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "no 410 for a lifetime that overflows");

        // Pagination: out of range or not a number is 422 naming the parameter.
        for (query, field) in [
            ("page=0", "page"),
            ("page=-3", "page"),
            ("page=abc", "page"),
            ("page=9223372036854775807", "page"),
            ("page=99999999999999999999", "page"),
            ("per_page=0", "per_page"),
            ("per_page=101", "per_page"),
            ("per_page=1e3", "per_page"),
        ] {
            let (status, answer) = status_json(call(
                &app,
                Method::GET,
                HOST,
                &format!("/api/accounts?{query}"),
                Some(&key),
            ))
            .await;
            assert_eq!(status, 422, "{query}: {answer}");
            assert!(answer["errors"].get(field).is_some(), "{query}: {answer}");
        }
        let (status, page) = status_json(call(
            &app,
            Method::GET,
            HOST,
            &format!("/api/accounts?page={}&per_page=100", limits::PAGE.end()),
            Some(&key),
        ))
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["data"], json!([]));
        assert_eq!(page["total"], 2);
        app.stop().await;
    }
);

both_backends!(
    an_admin_cannot_block_or_delete_itself,
    |app: TestApp| async move {
        let space = app.space(HOST, |_| {}).await;
        let (root, key) = admin(&app, &space, "root").await;
        let (other, other_key) = admin(&app, &space, "other").await;
        for (method, path) in [
            (Method::POST, format!("/api/accounts/{}/block", root.id)),
            (Method::DELETE, format!("/api/accounts/{}", root.id)),
            (Method::DELETE, "/api/accounts/me".to_string()),
        ] {
            let (status, answer) =
                status_json(call(&app, method.clone(), HOST, &path, Some(&key))).await;
            assert_eq!(status, 409, "{method} {path}: {answer}");
            assert!(
                answer["message"].as_str().unwrap().contains("cannot"),
                "{answer}"
            );
        }
        let root_now = app.state.store.account(root.id).await.unwrap().unwrap();
        assert!(!root_now.blocked, "still unblocked");
        // Still an admin with a working key; other admin-only actions on itself are fine.
        let (status, _) = status_json(call(
            &app,
            Method::POST,
            HOST,
            &format!("/api/accounts/{}/unblock", root.id),
            Some(&key),
        ))
        .await;
        assert_eq!(status, 200);
        // Another admin may block it and then delete it.
        let (status, answer) = status_json(call(
            &app,
            Method::POST,
            HOST,
            &format!("/api/accounts/{}/block", root.id),
            Some(&other_key),
        ))
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["blocked"], true);
        let (status, _) = status_json(call(
            &app,
            Method::DELETE,
            HOST,
            &format!("/api/accounts/{}", root.id),
            Some(&other_key),
        ))
        .await;
        assert_eq!(status, 200);
        assert!(app.state.store.account(root.id).await.unwrap().is_none());
        // A plain user still deletes itself, as in FlexiAPI.
        let user = app.account(&space, "plain", "long-enough").await;
        let user_key = user_key(&app, &user, None).await;
        let (status, _) = status_json(call(
            &app,
            Method::DELETE,
            HOST,
            "/api/accounts/me",
            Some(&user_key),
        ))
        .await;
        assert_eq!(status, 200);
        assert!(app.state.store.account(other.id).await.unwrap().is_some());
        app.stop().await;
    }
);

/// Creates an account through the API with a password of `len` characters.
async fn create_with_password(app: &TestApp, key: &str, user: &str, len: usize) -> (u16, Value) {
    status_json(
        call(app, Method::POST, HOST, "/api/accounts", Some(key))
            .json(&json!({"username": user, "password": "p".repeat(len)})),
    )
    .await
}

both_backends!(
    min_password_length_defaults_to_8,
    |app: TestApp| async move {
        assert_eq!(app.state.settings.min_password_length, 8);
        let space = app.space(HOST, |_| {}).await;
        let (_, key) = admin(&app, &space, "root").await;
        let (status, answer) = create_with_password(&app, &key, "short", 7).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(
            field_message(&answer, "password"),
            "The password must be at least 8 characters."
        );
        let (status, answer) = create_with_password(&app, &key, "exact", 8).await;
        assert_eq!(status, 200, "{answer}");

        // The user's own password change follows the same rule.
        let user = app.account(&space, "self", "old-password").await;
        let user_key = user_key(&app, &user, None).await;
        let change = |password: &str| {
            call(
                &app,
                Method::POST,
                HOST,
                "/api/accounts/me/password",
                Some(&user_key),
            )
            .json(&json!({"password": password, "old_password": "old-password"}))
        };
        let (status, answer) = status_json(change("seven77")).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["errors"].get("password").is_some());
        let (status, answer) = status_json(change("eight888")).await;
        assert_eq!(status, 200, "{answer}");
        app.stop().await;
    }
);

/// The setting changes the rule, both ways.
async fn min_password_length_is_a_setting(backend: Backend) {
    for (min, short_ok) in [(12, false), (3, true)] {
        let Some(app) = TestApp::start_with(backend, |s| s.min_password_length = min).await else {
            return;
        };
        let space = app.space(HOST, |_| {}).await;
        let (_, key) = admin(&app, &space, "root").await;
        let (status, answer) = create_with_password(&app, &key, "below", min - 1).await;
        assert_eq!(status, 422, "{min}: {answer}");
        assert_eq!(
            field_message(&answer, "password"),
            format!("The password must be at least {min} characters.")
        );
        let (status, answer) = create_with_password(&app, &key, "atmin", min).await;
        assert_eq!(status, 200, "{min}: {answer}");
        let (status, _) = create_with_password(&app, &key, "seven", 7).await;
        assert_eq!(status == 200, short_ok, "7 characters with minimum {min}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_password_length_setting_sqlite() {
    min_password_length_is_a_setting(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_password_length_setting_postgres() {
    min_password_length_is_a_setting(Backend::Postgres).await;
}

/// The real binary on a fresh embedded store.
fn provisio(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_provisio"))
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .args(["--data-dir", "data", "--hooks-dir", "hooks"])
        .args(args)
        .output()
        .expect("run provisio");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn command_line_and_configuration_refuse_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::create_dir_all(path.join("hooks")).unwrap();
    let (ok, out) = provisio(path, &["space", "add", HOST]);
    assert!(ok, "{out}");

    // Flags: a number outside its range names the flag.
    let (ok, out) = provisio(
        path,
        &[
            "space",
            "add",
            "b.example.com",
            "--token-lifetime",
            "9223372036854775807",
        ],
    );
    assert!(!ok && out.contains("--token-lifetime"), "{out}");

    // Account fields through the CLI: the field and the code point are named.
    for (c, code) in FORBIDDEN {
        let name = format!("A{c}B");
        let (ok, out) = provisio(
            path,
            &[
                "account",
                "add",
                &format!("u@{HOST}"),
                "--password",
                "long-enough",
                "--display-name",
                &name,
            ],
        );
        assert!(
            !ok && out.contains("display_name") && out.contains(code),
            "{code}: {out}"
        );
        let set = format!("tier=gold{c}");
        let (ok, out) = provisio(
            path,
            &[
                "account",
                "add",
                &format!("u@{HOST}"),
                "--password",
                "long-enough",
                "--set",
                &set,
            ],
        );
        assert!(
            !ok && out.contains("dictionary") && out.contains(code),
            "{code}: {out}"
        );
    }
    // The password rule and its setting.
    let (ok, out) = provisio(
        path,
        &[
            "account",
            "add",
            &format!("v@{HOST}"),
            "--password",
            "short",
        ],
    );
    assert!(!ok && out.contains("at least 8"), "{out}");
    let (ok, out) = provisio(
        path,
        &["admin", "add", &format!("w@{HOST}"), "--password", "short"],
    );
    assert!(!ok && out.contains("at least 8"), "{out}");
    std::fs::write(path.join("short.toml"), "min_password_length = 5\n").unwrap();
    let (ok, out) = provisio(
        path,
        &[
            "--config",
            "short.toml",
            "account",
            "add",
            &format!("v@{HOST}"),
            "--password",
            "short",
        ],
    );
    assert!(ok, "{out}");

    // INI files name the line.
    std::fs::write(path.join("bad.ini"), "[sip]\nok=1\nbad=a\u{2028}b\n").unwrap();
    let (ok, out) = provisio(
        path,
        &[
            "space",
            "add",
            "c.example.com",
            "--custom-entries",
            "bad.ini",
        ],
    );
    assert!(
        !ok && out.contains("line 3") && out.contains("U+2028"),
        "{out}"
    );

    // Configuration keys outside their range name the key.
    for (line, key) in [
        ("min_password_length = 0", "min_password_length"),
        (
            "auth_token_ttl_minutes = 9223372036854775807",
            "auth_token_ttl_minutes",
        ),
        ("digest_nonce_ttl_seconds = -5", "digest_nonce_ttl_seconds"),
        (
            "public_url = \"https://p.example.com/\u{fffe}\"",
            "public_url",
        ),
    ] {
        std::fs::write(path.join("bad.toml"), format!("{line}\n")).unwrap();
        let (ok, out) = provisio(path, &["--config", "bad.toml", "space", "list"]);
        assert!(!ok && out.contains(key), "{line}: {out}");
    }
}

/// The documented ranges (docs/openapi.yaml) are the ones the server checks.
#[test]
fn openapi_states_the_checked_ranges() {
    let spec = include_str!("../docs/openapi.yaml");
    let bounds = |field: &str| -> (i64, i64) {
        let start = spec
            .find(&format!("\n        {field}:\n"))
            .unwrap_or_else(|| panic!("{field} in openapi.yaml"));
        let block: Vec<&str> = spec[start + 1..].lines().skip(1).take(4).collect();
        let get = |k: &str| {
            block
                .iter()
                .find_map(|l| l.trim().strip_prefix(k))
                .unwrap_or_else(|| panic!("{field} has no {k}"))
                .trim()
                .parse::<i64>()
                .unwrap()
        };
        (get("minimum:"), get("maximum:"))
    };
    for (field, range) in [
        (
            "provisioning_token_expiration_minutes",
            limits::TOKEN_LIFETIME_MINUTES,
        ),
        ("max_accounts", limits::MAX_ACCOUNTS),
        ("max_account", limits::UI_MAX_ACCOUNT),
    ] {
        assert_eq!(bounds(field), (*range.start(), *range.end()), "{field}");
    }
    for (name, range) in [("page", limits::PAGE), ("per_page", limits::PER_PAGE)] {
        let start = spec.find(&format!("name: {name}\n")).unwrap();
        let block: String = spec[start..].lines().take(9).collect::<Vec<_>>().join("\n");
        assert!(
            block.contains(&format!("minimum: {}", range.start()))
                && block.contains(&format!("maximum: {}", range.end())),
            "{name}: {block}"
        );
    }
}

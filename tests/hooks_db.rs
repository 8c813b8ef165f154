//! Hook scripts stored in the database (`/api/hooks`, `provisio hooks push|pull`):
//!
//! * two instances on one PostgreSQL schema: a space admin previews and saves its space's
//!   script through instance A and instance B serves the new document within the bound
//!   (`cache_max_staleness_seconds`, 2 s); a broken script and fixture-breaking scripts are
//!   refused (422, with line and column) while both instances keep serving the previous
//!   version; a rollback restores the old document on both; a runaway script saved through the
//!   API is cut off by the sandbox's deadline on both while the other spaces are served; the
//!   status shows both instances serving the database's versions;
//! * on one instance, on both stores: the whole API (versions, deletion as a tombstone,
//!   rollback, dry runs with an account), the roles (a space admin reads `default` but cannot
//!   write it nor touch another space's script), the audit trail;
//! * `hooks.source`: with `both` the database's script wins over the file of the same name
//!   (and the status says so), `files` ignores the database and refuses to store, `database`
//!   ignores the directory;
//! * `provisio hooks push DIR` (another process, on SQLite: the server's version check picks
//!   it up) and `hooks pull DIR` round trip; a directory that does not validate stores nothing.

mod api_support;
mod common;

use api_support::{admin, call, status_json, user_key};
use common::server::{Backend, TestApp};
use provisio::app;
use provisio::config::HookSource;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// The staleness bound under test: `cache_max_staleness_seconds`' default.
const BOUND: Duration = Duration::from_secs(2);

/// A script whose only effect is `[hook] <key> = <value>`.
fn marker(key: &str, value: &str) -> String {
    format!(
        "fn on_config(config, request, account) {{\n    config.section(\"hook\").set(\"{key}\", \"{value}\");\n}}\n"
    )
}

/// The entry a [`marker`] script adds, as it appears in a document.
fn entry(key: &str, value: &str) -> String {
    format!(r#"<entry name="{key}">{value}</entry>"#)
}

/// The anonymous document of `host` at `base`: status and body.
async fn document(client: &reqwest::Client, base: &str, host: &str) -> (u16, String) {
    let r = client
        .get(format!("{base}/provisioning"))
        .header("host", host)
        .header("x-linphone-provisioning", "1")
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

/// Polls the anonymous document of `host` at `base` until `done` accepts it; returns how long
/// that took, or fails after twice the bound with the last answer.
async fn served_within(
    client: &reqwest::Client,
    base: &str,
    host: &str,
    done: impl Fn(u16, &str) -> bool,
) -> Duration {
    let started = Instant::now();
    let mut last = (0, String::new());
    while started.elapsed() < 2 * BOUND {
        let (status, body) = document(client, base, host).await;
        if done(status, &body) {
            return started.elapsed();
        }
        last = (status, body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{host} not served as expected within {:?}; last answer {} {}",
        2 * BOUND,
        last.0,
        last.1
    );
}

/// Whether `text` holds `file:LINE:COL` (a compiler's or a script's position).
fn has_position(text: &str, file: &str) -> bool {
    text.match_indices(&format!("{file}:")).any(|(i, m)| {
        let rest = &text[i + m.len()..];
        let line: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = &rest[line.len()..];
        !line.is_empty()
            && after.starts_with(':')
            && after[1..].starts_with(|c: char| c.is_ascii_digit())
    })
}

/// A JSON call to `base` (any instance) with Host and admin key.
fn api(
    client: &reqwest::Client,
    method: Method,
    base: &str,
    host: &str,
    path: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    client
        .request(method, format!("{base}{path}"))
        .header("host", host)
        .header("accept", "application/json")
        .header("x-api-key", key)
}

/// The messages of a 422's field.
fn field_errors(body: &Value, field: &str) -> String {
    body["errors"][field].to_string()
}

/// Two instances on one PostgreSQL schema, as behind a load balancer: the tenant's admin edits
/// through A, B serves what A stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripts_saved_through_one_instance_are_served_by_another_within_the_bound() {
    let Some(a) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    let root_space = a.space("root.example", |s| s.super_space = true).await;
    let alpha = a.space("a.example", |_| {}).await;
    let beta = a.space("b.example", |_| {}).await;
    let (_, root) = admin(&a, &root_space, "root").await;
    let (_, alice) = admin(&a, &alpha, "alice").await;
    let (_, bob) = admin(&a, &beta, "bob").await;

    let mut settings = (*a.state.settings).clone();
    settings.listen = "127.0.0.1:0".parse().expect("addr");
    let b_state = app::build_state(settings, false).await.expect("instance B");
    let b = app::spawn(b_state, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("spawn instance B");
    let b_base = format!("http://{}", b.addr);
    let client = reqwest::Client::new();
    let bases = [a.base.clone(), b_base.clone()];

    // The operator's default, then bob's own script.
    let (status, body) = status_json(
        api(
            &client,
            Method::PUT,
            &a.base,
            "root.example",
            "/api/hooks/default",
            &root,
        )
        .json(&json!({"source": marker("d", "1"), "comment": "fleet default"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);
    let (status, body) = status_json(
        api(
            &client,
            Method::PUT,
            &a.base,
            "b.example",
            "/api/hooks/b.example",
            &bob,
        )
        .json(&json!({"source": marker("b", "1")})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    for base in &bases {
        served_within(&client, base, "a.example", |s, body| {
            s == 200 && body.contains(&entry("d", "1"))
        })
        .await;
    }

    // Alice previews her script: nothing is stored, the preview is the document.
    let put_alpha = |body: Value, query: &str| {
        api(
            &client,
            Method::PUT,
            &a.base,
            "a.example",
            &format!("/api/hooks/a.example{query}"),
            &alice,
        )
        .json(&body)
    };
    let (status, preview) =
        status_json(put_alpha(json!({"source": marker("a", "1")}), "?dry_run=1")).await;
    assert_eq!(status, 200, "{preview}");
    let preview_v1 = preview["preview"]["document"]
        .as_str()
        .expect("a preview document")
        .to_string();
    assert!(
        preview_v1.contains(&entry("a", "1")) && preview_v1.contains(&entry("d", "1")),
        "{preview_v1}"
    );
    let (status, _) = status_json(api(
        &client,
        Method::GET,
        &a.base,
        "a.example",
        "/api/hooks/a.example",
        &alice,
    ))
    .await;
    assert_eq!(status, 404, "a dry run stores nothing");

    // She saves it with a fixture whose expected document is the preview: B serves it.
    let anonymous_fixture = |expected: &str| {
        json!([{
            "name": "anonymous",
            "fixture": "[space]\ndomain = \"a.example\"\n",
            "expected": expected,
        }])
    };
    let (status, body) = status_json(put_alpha(
        json!({"source": marker("a", "1"), "comment": "first", "fixtures": anonymous_fixture(&preview_v1)}),
        "",
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["serving"]["version"], 1, "A serves it as it answers");
    let took = served_within(&client, &b_base, "a.example", |s, body| {
        s == 200 && body.contains(&entry("a", "1"))
    })
    .await;
    eprintln!("saved through A, served by B after {took:?}");
    assert!(took <= BOUND, "{took:?}");

    // Refused: a change its stored fixture catches, a syntax error, a fixture that fails
    // at run time. Nothing is stored; both instances keep serving version 1.
    let (status, body) = status_json(put_alpha(json!({"source": marker("a", "2")}), "")).await;
    assert_eq!(status, 422, "{body}");
    let why = field_errors(&body, "fixtures");
    assert!(
        why.contains("fixture anonymous") && why.contains("[hook] a = 2"),
        "{why}"
    );
    let broken = "fn on_config(config, request, account) {\n    config.section(\"hook\").set(\"a\", \"x\"\n}\n";
    let (status, body) = status_json(put_alpha(json!({"source": broken}), "")).await;
    assert_eq!(status, 422, "{body}");
    let why = field_errors(&body, "source");
    assert!(has_position(&why, "a.example.rhai"), "{why}");
    let throws = "fn on_config(config, request, account) {\n    if request.route == \"anonymous\" { throw \"anonymous documents are off\"; }\n}\n";
    let (status, body) = status_json(put_alpha(json!({"source": throws}), "")).await;
    assert_eq!(status, 422, "{body}");
    let why = field_errors(&body, "fixtures");
    assert!(
        has_position(&why, "a.example.rhai") && why.contains("anonymous documents are off"),
        "{why}"
    );
    for base in &bases {
        let (status, body) = document(&client, base, "a.example").await;
        assert!(
            status == 200 && body.contains(&entry("a", "1")),
            "{base}: {body}"
        );
    }
    let (_, live) = status_json(api(
        &client,
        Method::GET,
        &b_base,
        "a.example",
        "/api/hooks/a.example",
        &alice,
    ))
    .await;
    assert_eq!(live["version"], 1, "{live}");

    // Version 2, with its preview as the new expectation (a dry run validates too: with the
    // stored fixture it is refused; with none, it renders).
    let (status, refused) = status_json(put_alpha(
        json!({"source": marker("a", "2")}),
        "?dry_run=true",
    ))
    .await;
    assert_eq!(status, 422, "{refused}");
    let (status, preview) = status_json(put_alpha(
        json!({"source": marker("a", "2"), "fixtures": []}),
        "?dry_run=1",
    ))
    .await;
    assert_eq!(status, 200, "{preview}");
    let preview_v2 = preview["preview"]["document"].as_str().expect("document");
    let (status, body) = status_json(put_alpha(
        json!({"source": marker("a", "2"), "fixtures": anonymous_fixture(preview_v2)}),
        "",
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    let took = served_within(&client, &b_base, "a.example", |s, body| {
        s == 200 && body.contains(&entry("a", "2"))
    })
    .await;
    assert!(took <= BOUND, "{took:?}");
    let (_, versions) = status_json(api(
        &client,
        Method::GET,
        &b_base,
        "a.example",
        "/api/hooks/a.example/versions",
        &alice,
    ))
    .await;
    let numbers: Vec<i64> = versions
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_i64().expect("number"))
        .collect();
    assert_eq!(numbers, [2, 1], "newest first, refusals not stored");

    // Rollback to version 1: version 3, served again by both.
    let (status, body) = status_json(
        api(
            &client,
            Method::POST,
            &a.base,
            "a.example",
            "/api/hooks/a.example/rollback/1",
            &alice,
        )
        .json(&json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 3);
    assert_eq!(body["comment"], "rollback to version 1");
    for base in &bases {
        let took = served_within(&client, base, "a.example", |s, body| {
            s == 200 && body.contains(&entry("a", "1")) && !body.contains(&entry("a", "2"))
        })
        .await;
        assert!(took <= BOUND, "{base}: {took:?}");
    }

    // Alice's reach: her script, and reading the default; not bob's script, not writing the
    // default.
    let alice_call =
        |method: Method, path: &str| api(&client, method, &b_base, "a.example", path, &alice);
    let (status, _) = status_json(
        alice_call(Method::PUT, "/api/hooks/b.example").json(&json!({"source": marker("b", "x")})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = status_json(
        alice_call(Method::PUT, "/api/hooks/default").json(&json!({"source": marker("d", "x")})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = status_json(alice_call(Method::GET, "/api/hooks/b.example")).await;
    assert_eq!(status, 403);
    let (status, default) = status_json(alice_call(Method::GET, "/api/hooks/default")).await;
    assert_eq!(status, 200);
    assert_eq!(default["source"], marker("d", "1"));

    // A runaway script saved through the API: cut off by the deadline on both instances, the
    // other spaces served meanwhile.
    let runaway = "fn on_config(config, request, account) {\n    loop { }\n}\n";
    let (status, body) =
        status_json(put_alpha(json!({"source": runaway, "fixtures": []}), "")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 4);
    for base in &bases {
        served_within(&client, base, "a.example", |s, _| s == 500).await;
        let started = Instant::now();
        let (status, _) = document(&client, base, "a.example").await;
        assert_eq!(status, 500);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cut off by the deadline"
        );
        let (status, body) = document(&client, base, "b.example").await;
        assert!(
            status == 200 && body.contains(&entry("b", "1")) && body.contains(&entry("d", "1")),
            "{base}: {status} {body}"
        );
    }

    // The fleet agrees: both instances report the database's versions.
    let started = Instant::now();
    let status = loop {
        let (code, status) = status_json(api(
            &client,
            Method::GET,
            &a.base,
            "root.example",
            "/api/hooks/status",
            &root,
        ))
        .await;
        assert_eq!(code, 200, "{status}");
        let fresh = status["instances"]
            .as_array()
            .map_or(0, |i| i.iter().filter(|i| i["stale"] == false).count());
        if fresh == 2 && status["fleet_agrees"] == true {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the instances never agreed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["database"]["a.example"], 4, "{status}");
    assert_eq!(status["database"]["default"], 1, "{status}");
    let instances = status["instances"].as_array().expect("instances");
    assert!(instances.iter().any(|i| i["this"] == true));
    for i in instances {
        let scripts = i["scripts"].to_string();
        assert!(scripts.contains("\"a.example\""), "{scripts}");
    }

    b.stop().await.expect("stop instance B");
    a.stop().await;
}

both_backends!(the_api_on_one_instance, |app: TestApp| async move {
    let root_space = app.space("root.example", |s| s.super_space = true).await;
    let alpha = app.space("a.example", |_| {}).await;
    let beta = app.space("b.example", |_| {}).await;
    let (_, root) = admin(&app, &root_space, "root").await;
    let (_, alice) = admin(&app, &alpha, "alice").await;
    let (_, bob) = admin(&app, &beta, "bob").await;
    let carol = app
        .account_with(&alpha, "carol", "carol-password", |a| {
            a.dictionary = [("tier".to_string(), "gold".to_string())].into();
        })
        .await;
    let carol_key = user_key(&app, &carol, None).await;
    let c = |method: Method, host: &str, path: &str, key: Option<&str>| {
        call(&app, method, host, path, key)
    };

    // Who may do what.
    let (status, _) = status_json(c(Method::GET, "a.example", "/api/hooks", None)).await;
    assert_eq!(status, 401);
    let (status, _) =
        status_json(c(Method::GET, "a.example", "/api/hooks", Some(&carol_key))).await;
    assert_eq!(status, 403, "a user is no admin");
    let (status, _) = status_json(
        c(
            Method::PUT,
            "b.example",
            "/api/hooks/b.example",
            Some(&alice),
        )
        .json(&json!({"source": marker("b", "1")})),
    )
    .await;
    assert_eq!(status, 403, "an admin calls on its own space's host");

    // The super admin stores a shared module and the default that imports it.
    let module = "fn tier(account) { if account == () { \"none\" } else { account.dictionary[\"tier\"] } }\n";
    let (status, body) = status_json(
        c(
            Method::PUT,
            "root.example",
            "/api/hooks/policy",
            Some(&root),
        )
        .json(&json!({"source": module})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["kind"], "module");
    let default = "import \"policy\" as policy;\nfn on_config(config, request, account) {\n    config.section(\"hook\").set(\"tier\", policy::tier(account));\n}\n";
    let (status, body) = status_json(
        c(
            Method::PUT,
            "root.example",
            "/api/hooks/default",
            Some(&root),
        )
        .json(&json!({"source": default})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = document(&app.client, &app.base, "a.example").await;
    assert!(
        status == 200 && body.contains(&entry("tier", "none")),
        "{body}"
    );

    // Deleting a module still imported is refused; a space admin cannot touch the default.
    let (status, body) = status_json(c(
        Method::DELETE,
        "root.example",
        "/api/hooks/policy",
        Some(&root),
    ))
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(field_errors(&body, "source").contains("policy"), "{body}");
    for (method, path) in [
        (Method::PUT, "/api/hooks/default"),
        (Method::DELETE, "/api/hooks/default"),
        (Method::POST, "/api/hooks/default/rollback/1"),
        (Method::PUT, "/api/hooks/policy"),
        (Method::GET, "/api/hooks/b.example"),
        (Method::GET, "/api/hooks/b.example/versions"),
        (Method::GET, "/api/hooks/status"),
    ] {
        let (status, body) = status_json(
            c(method.clone(), "a.example", path, Some(&alice))
                .json(&json!({"source": marker("x", "1")})),
        )
        .await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    for path in [
        "/api/hooks/default",
        "/api/hooks/default/versions",
        "/api/hooks/default/versions/1",
        "/api/hooks/policy",
    ] {
        let (status, body) = status_json(c(Method::GET, "a.example", path, Some(&alice))).await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // A dry run for an account renders that account's document; another space's account is
    // not the space admin's to render.
    let space_script = "fn on_proxy(section, request, account) {\n    section.set(\"x_who\", account.username);\n}\n";
    let (status, body) = status_json(
        c(
            Method::PUT,
            "a.example",
            &format!("/api/hooks/a.example?dry_run=1&account_id={}", carol.id),
            Some(&alice),
        )
        .json(&json!({"source": space_script})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let doc = body["preview"]["document"].as_str().expect("document");
    assert!(
        doc.contains(&entry("x_who", "carol")) && doc.contains(&entry("tier", "gold")),
        "{doc}"
    );
    let dave = app.account(&beta, "dave", "dave-password").await;
    let (status, _) = status_json(
        c(
            Method::PUT,
            "a.example",
            &format!("/api/hooks/a.example?dry_run=1&account_id={}", dave.id),
            Some(&alice),
        )
        .json(&json!({"source": space_script})),
    )
    .await;
    assert_eq!(status, 404);
    // A dry run whose script fails shows the failure and where.
    let (status, body) = status_json(
        c(
            Method::PUT,
            "a.example",
            "/api/hooks/a.example?dry_run=1",
            Some(&alice),
        )
        .json(
            &json!({"source": "fn on_config(config, request, account) {\n  throw \"nope\";\n}\n"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["preview"]["status"], 500);
    assert!(
        has_position(
            body["preview"]["detail"].as_str().unwrap_or(""),
            "a.example.rhai"
        ),
        "{body}"
    );

    // Save, list, show, delete (a tombstone), history kept, rollback.
    let (status, body) = status_json(
        c(
            Method::PUT,
            "a.example",
            "/api/hooks/a.example",
            Some(&alice),
        )
        .json(&json!({"source": space_script, "comment": "who am I"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["author"], "alice@a.example");
    let (status, list) = status_json(c(Method::GET, "a.example", "/api/hooks", Some(&alice))).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["a.example", "default", "policy"], "{list}");
    let (status, body) = status_json(
        c(Method::PUT, "b.example", "/api/hooks/b.example", Some(&bob))
            .json(&json!({"source": marker("b", "1")})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, list) = status_json(c(Method::GET, "root.example", "/api/hooks", Some(&root))).await;
    assert_eq!(list.as_array().map(Vec::len), Some(4), "{list}");
    let (status, shown) = status_json(c(
        Method::GET,
        "a.example",
        "/api/hooks/a.example",
        Some(&alice),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(shown["source"], space_script);
    assert_eq!(shown["comment"], "who am I");
    assert_eq!(shown["serving"]["origin"], "database");
    let (status, body) = status_json(c(
        Method::DELETE,
        "a.example",
        "/api/hooks/a.example",
        Some(&alice),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], true);
    assert_eq!(body["version"], 2);
    let (status, _) = status_json(c(
        Method::GET,
        "a.example",
        "/api/hooks/a.example",
        Some(&alice),
    ))
    .await;
    assert_eq!(status, 404);
    let (status, _) = status_json(c(
        Method::DELETE,
        "a.example",
        "/api/hooks/a.example",
        Some(&alice),
    ))
    .await;
    assert_eq!(status, 404, "already deleted");
    let (status, body) = status_json(c(
        Method::POST,
        "a.example",
        "/api/hooks/a.example/rollback/2",
        Some(&alice),
    ))
    .await;
    assert_eq!(status, 422, "a deletion is not rolled back to: {body}");
    let (status, body) = status_json(c(
        Method::POST,
        "a.example",
        "/api/hooks/a.example/rollback/1",
        Some(&alice),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 3);
    let (_, versions) = status_json(c(
        Method::GET,
        "a.example",
        "/api/hooks/a.example/versions",
        Some(&alice),
    ))
    .await;
    assert_eq!(
        versions
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| (v["version"].as_i64().unwrap_or(0), v["deleted"] == true))
            .collect::<Vec<_>>(),
        [(3, false), (2, true), (1, false)]
    );
    let (status, one) = status_json(c(
        Method::GET,
        "a.example",
        "/api/hooks/a.example/versions/1",
        Some(&alice),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["source"], space_script);
    for path in [
        "/api/hooks/a.example/versions/9",
        "/api/hooks/a.example/versions/x",
        "/api/hooks/nothing",
        "/api/hooks/no..name",
    ] {
        let (status, _) = status_json(c(Method::GET, "a.example", path, Some(&alice))).await;
        assert_eq!(status, 404, "{path}");
    }
    for (path, body) in [
        ("/api/hooks/a.example", json!({})),
        (
            "/api/hooks/a.example",
            json!({"source": marker("a", "1"), "fixtures": [{"name": "x"}]}),
        ),
        (
            "/api/hooks/a.example",
            json!({"source": marker("a", "1"), "fixtures": [{"name": "x", "fixture": "[space\n", "expected": "<config/>"}]}),
        ),
    ] {
        let (status, answer) =
            status_json(c(Method::PUT, "a.example", path, Some(&alice)).json(&body)).await;
        assert_eq!(status, 422, "{body}: {answer}");
    }
    let (status, _) = status_json(
        c(
            Method::PUT,
            "root.example",
            "/api/hooks/status",
            Some(&root),
        )
        .json(&json!({"source": marker("s", "1")})),
    )
    .await;
    assert_eq!(status, 422, "`status` is no script name");
    let (status, body) = document(&app.client, &app.base, "a.example").await;
    assert_eq!(status, 200);
    assert!(body.contains(&entry("tier", "none")), "{body}");

    // The status: this one instance serves the database's versions.
    let started = Instant::now();
    loop {
        let (code, status) = status_json(c(
            Method::GET,
            "root.example",
            "/api/hooks/status",
            Some(&root),
        ))
        .await;
        assert_eq!(code, 200, "{status}");
        if status["fleet_agrees"] == true && status["instances"].as_array().map(Vec::len) == Some(1)
        {
            assert_eq!(status["database"]["a.example"], 3, "{status}");
            assert_eq!(status["source"], "both");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The audit trail names who stored which version.
    let started = Instant::now();
    loop {
        let (_, events) = status_json(c(
            Method::GET,
            "root.example",
            "/api/audit?action=hook.rolled_back",
            Some(&root),
        ))
        .await;
        let text = events.to_string();
        if text.contains("alice@a.example") {
            assert!(text.contains("version 3 (version 1 again)"), "{text}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
});

/// `hooks.source = "both"` (the default): the database's script replaces the file of the
/// same name, and the status says so; the other files keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_both_the_database_wins_over_the_file() {
    let app = TestApp::start(Backend::Sqlite).await.expect("sqlite");
    let root_space = app.space("root.example", |s| s.super_space = true).await;
    app.space("a.example", |_| {}).await;
    let (_, root) = admin(&app, &root_space, "root").await;
    std::fs::write(app.hooks_dir.join("default.rhai"), marker("d", "file")).expect("write");
    std::fs::write(app.hooks_dir.join("a.example.rhai"), marker("a", "file")).expect("write");
    app.state.hooks.reload_now().expect("reload");
    let (_, body) = document(&app.client, &app.base, "a.example").await;
    assert!(body.contains(&entry("d", "file")) && body.contains(&entry("a", "file")));

    let (status, body) = status_json(
        call(
            &app,
            Method::PUT,
            "root.example",
            "/api/hooks/default",
            Some(&root),
        )
        .json(&json!({"source": marker("d", "database")})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, body) = document(&app.client, &app.base, "a.example").await;
    assert!(
        body.contains(&entry("d", "database")) && body.contains(&entry("a", "file")),
        "{body}"
    );
    let (_, status) = status_json(call(
        &app,
        Method::GET,
        "root.example",
        "/api/hooks/status",
        Some(&root),
    ))
    .await;
    let scripts = status["scripts"].as_array().expect("scripts");
    let default = scripts
        .iter()
        .find(|s| s["file"] == "default.rhai")
        .expect("default");
    assert_eq!(default["origin"], "database");
    assert_eq!(default["version"], 1);
    assert_eq!(default["overrides_file"], true);
    let space = scripts
        .iter()
        .find(|s| s["file"] == "a.example.rhai")
        .expect("space");
    assert_eq!(space["origin"], "files");
    // A change to the overridden file changes nothing served.
    std::fs::write(app.hooks_dir.join("default.rhai"), marker("d", "file 2")).expect("write");
    app.state.hooks.reload_now().expect("reload");
    let (_, body) = document(&app.client, &app.base, "a.example").await;
    assert!(body.contains(&entry("d", "database")), "{body}");
    // Deleted from the database: the file serves again.
    let (status, _) = status_json(call(
        &app,
        Method::DELETE,
        "root.example",
        "/api/hooks/default",
        Some(&root),
    ))
    .await;
    assert_eq!(status, 200);
    let (_, body) = document(&app.client, &app.base, "a.example").await;
    assert!(body.contains(&entry("d", "file 2")), "{body}");

    // A broken file of another space blocks every change (it would block the reload too);
    // a space admin learns that, not the other tenant's error.
    app.space("b.example", |_| {}).await;
    let (_, alice) = admin(
        &app,
        &app.state
            .store
            .space_by_domain("a.example")
            .await
            .expect("read")
            .expect("a.example"),
        "alice",
    )
    .await;
    std::fs::write(
        app.hooks_dir.join("b.example.rhai"),
        "fn on_config(config, request, account) { secret_of_b( }\n",
    )
    .expect("write");
    assert!(app.state.hooks.reload_now().is_err());
    let (status, body) = status_json(
        call(
            &app,
            Method::PUT,
            "a.example",
            "/api/hooks/a.example",
            Some(&alice),
        )
        .json(&json!({"source": marker("a", "database")})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let why = field_errors(&body, "source");
    assert!(
        why.contains("other spaces do not compile") && !why.contains("b.example"),
        "{why}"
    );
    let (status, body) = status_json(
        call(
            &app,
            Method::PUT,
            "root.example",
            "/api/hooks/a.example",
            Some(&root),
        )
        .json(&json!({"source": marker("a", "database")})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        has_position(&field_errors(&body, "source"), "b.example.rhai"),
        "{body}"
    );
    app.stop().await;
}

/// `hooks.source = "files"` ignores the database and refuses to store; `"database"` ignores
/// the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_and_database_modes() {
    let files = TestApp::start_with(Backend::Sqlite, |s| s.hooks.source = HookSource::Files)
        .await
        .expect("sqlite");
    let root_space = files.space("root.example", |s| s.super_space = true).await;
    files.space("a.example", |_| {}).await;
    let (_, root) = admin(&files, &root_space, "root").await;
    let (status, body) = status_json(
        call(
            &files,
            Method::PUT,
            "root.example",
            "/api/hooks/default",
            Some(&root),
        )
        .json(&json!({"source": marker("d", "database")})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    // A script another process stored is not served either.
    files
        .state
        .store
        .save_hook_scripts(
            &[provisio::store::NewHookScript {
                name: "default".into(),
                source: Some(marker("d", "database")),
                author: "cli".into(),
                ..Default::default()
            }],
            provisio::model::now_ms(),
        )
        .await
        .expect("store");
    std::fs::write(files.hooks_dir.join("default.rhai"), marker("d", "file")).expect("write");
    files.state.hooks.reload_now().expect("reload");
    let changed = files
        .state
        .hooks
        .refresh_database(files.state.store.as_ref(), true)
        .await
        .expect("refresh");
    assert!(!changed, "the database is not read");
    let (_, body) = document(&files.client, &files.base, "a.example").await;
    assert!(body.contains(&entry("d", "file")), "{body}");

    // The same database, read by a server whose scripts come from the database alone.
    let database = files.state.settings.database.clone();
    let only = TestApp::start_with(Backend::Sqlite, |s| {
        s.hooks.source = HookSource::Database;
        s.database = database;
    })
    .await
    .expect("sqlite");
    std::fs::write(only.hooks_dir.join("a.example.rhai"), marker("a", "file")).expect("write");
    only.state.hooks.reload_now().expect("reload");
    let (_, body) = document(&only.client, &only.base, "a.example").await;
    assert!(
        body.contains(&entry("d", "database")) && !body.contains(&entry("a", "file")),
        "{body}"
    );
    only.stop().await;
    files.stop().await;
}

/// Runs the real binary on `database` (another process, as a CI pipeline would).
fn provisio_cli(database: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_provisio"))
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .args(["--database", database, "--hooks-dir", "hooks"])
        .args(args)
        .output()
        .expect("run provisio")
}

fn stdout(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `hooks push` from another process while a SQLite server runs (served within the bound,
/// by the version check), `hooks pull` writes the same files back; a directory that does
/// not validate stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_and_pull_round_trip() {
    let app = TestApp::start(Backend::Sqlite).await.expect("sqlite");
    app.space("a.example", |_| {}).await;
    let database = app.state.settings.database.clone();
    let work = tempfile::tempdir().expect("temp dir");
    let repo = work.path().join("repo");
    std::fs::create_dir_all(repo.join("fixtures/anonymous")).expect("dirs");
    std::fs::write(repo.join("default.rhai"), marker("d", "pushed")).expect("write");
    std::fs::write(repo.join("a.example.rhai"), marker("a", "pushed")).expect("write");
    std::fs::write(repo.join("policy.rhai"), "fn answer() { 42 }\n").expect("write");
    std::fs::write(
        repo.join("fixtures/anonymous/fixture.toml"),
        "description = \"the anonymous document\"\n[space]\ndomain = \"a.example\"\n",
    )
    .expect("write");
    // The expected document, rendered by `hooks test --bless` on the directory.
    let out = provisio_cli(
        &database,
        work.path(),
        &["hooks", "test", "repo", "--bless"],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let expected =
        std::fs::read_to_string(repo.join("fixtures/anonymous/expected.xml")).expect("blessed");
    assert!(expected.contains(&entry("a", "pushed")), "{expected}");

    let out = provisio_cli(
        &database,
        work.path(),
        &["hooks", "push", "repo", "--comment", "from CI"],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("stored a.example version 1") && text.contains("stored default version 1"),
        "{text}"
    );
    let took = served_within(&app.client, &app.base, "a.example", |s, body| {
        s == 200 && body.contains(&entry("a", "pushed")) && body.contains(&entry("d", "pushed"))
    })
    .await;
    eprintln!("pushed by another process, served after {took:?}");
    assert!(took <= BOUND, "{took:?}");
    // Pushing the same directory again stores nothing.
    let out = provisio_cli(&database, work.path(), &["hooks", "push", "repo"]);
    let text = stdout(&out);
    assert!(out.status.success() && !text.contains("stored "), "{text}");

    // Pull: the same files.
    let out = provisio_cli(&database, work.path(), &["hooks", "pull", "pulled"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let pulled = work.path().join("pulled");
    for file in [
        "default.rhai",
        "a.example.rhai",
        "policy.rhai",
        "fixtures/anonymous/fixture.toml",
        "fixtures/anonymous/expected.xml",
    ] {
        assert_eq!(
            std::fs::read_to_string(pulled.join(file)).expect(file),
            std::fs::read_to_string(repo.join(file)).expect(file),
            "{file}"
        );
    }
    let records = app.state.store.live_hook_scripts().await.expect("live");
    let space = records
        .iter()
        .find(|r| r.name == "a.example")
        .expect("a.example");
    assert_eq!(space.author, "cli");
    assert_eq!(space.comment.as_deref(), Some("from CI"));
    assert!(
        space
            .fixtures
            .as_deref()
            .is_some_and(|f| f.contains("anonymous")),
        "the case goes with its space's script"
    );

    // A change that breaks the fixture, and one that does not compile: refused, nothing
    // stored, still served as pushed.
    std::fs::write(repo.join("a.example.rhai"), marker("a", "changed")).expect("write");
    let out = provisio_cli(&database, work.path(), &["hooks", "push", "repo"]);
    let text = stdout(&out);
    assert!(
        !out.status.success() && text.contains("fixture anonymous"),
        "{text}"
    );
    std::fs::write(
        repo.join("a.example.rhai"),
        "fn on_config(config, request, account) {\n  let x = ;\n}\n",
    )
    .expect("write");
    let out = provisio_cli(
        &database,
        work.path(),
        &["hooks", "push", "repo", "--dry-run"],
    );
    let text = stdout(&out);
    assert!(
        !out.status.success() && has_position(&text, "a.example.rhai"),
        "{text}"
    );
    let versions = app
        .state
        .store
        .hook_script_versions("a.example")
        .await
        .expect("versions");
    assert_eq!(versions.len(), 1, "nothing stored");
    let (_, body) = document(&app.client, &app.base, "a.example").await;
    assert!(body.contains(&entry("a", "pushed")), "{body}");
    app.stop().await;
}

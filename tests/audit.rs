//! The audit trail, on both stores, through the real server and the real binary: after a
//! provisioning fetch (a token through a trusted proxy, `/provisioning/me` with an API key) the
//! audit API, `provisio audit --json` and the account JSON tell when, from which address and
//! with which User-Agent the account was provisioned; management events name the acting
//! admin (or `cli`); a space admin sees only its own space; a non-admin gets 403, bad
//! parameters 422; housekeeping deletes events past `audit_retention_days`; no event holds a
//! secret.

mod api_support;
mod common;

use api_support::{admin, call, client_from, status_json, user_key};
use common::server::TestApp;
use provisio::model::now_ms;
use provisio::store::AuditEvent;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// The space most tests provision in.
const HOST: &str = "audit.example";
/// The trusted reverse proxy's address (a loopback alias).
const PROXY: [u8; 4] = [127, 0, 0, 12];
/// The phone's address, as the proxy forwards it.
const PHONE_IP: &str = "203.0.113.7";
/// One day in milliseconds.
const DAY: i64 = 86_400_000;

/// `GET /api/audit?{query}` on `host` with `key`: status and body.
async fn audit(app: &TestApp, host: &str, key: Option<&str>, query: &str) -> (u16, Value) {
    status_json(call(
        app,
        Method::GET,
        host,
        &format!("/api/audit?{query}"),
        key,
    ))
    .await
}

/// Polls the audit API until it answers at least `n` events (events are written in batches,
/// within about a second); fails after 15 s.
async fn wait_events(app: &TestApp, host: &str, key: &str, query: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = audit(app, host, Some(key), query).await;
        assert_eq!(status, 200, "{body}");
        let events = body.as_array().expect("an array").clone();
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} events for {query}, got {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the real binary on the test's database.
fn provisio(app: &TestApp, args: &[&str]) -> Output {
    let dir = app.dir.path().join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    cli_in(&dir, &app.state.settings.database, args)
}

/// Runs the real binary in `dir` on `database`.
fn cli_in(dir: &Path, database: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provisio"))
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .env("PROVISIO_LOG", "warn")
        .args(["--database", database, "--hooks-dir", "hooks"])
        .args(args)
        .output()
        .expect("run provisio")
}

/// Standard output of a successful run.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

both_backends!(
    provisioning_and_management_are_audited,
    settings =
        |s: &mut provisio::config::Settings| s.trusted_proxies = vec!["127.0.0.12/32".into()],
    |app: TestApp| async move {
        let space = app.space(HOST, |_| {}).await;
        let (boss, boss_key) = admin(&app, &space, "boss").await;

        // The admin creates alice: account.created and token.minted, by the admin.
        let (status, created) = status_json(
            call(&app, Method::POST, HOST, "/api/accounts", Some(&boss_key))
                .header("user-agent", "admin-console/1.0")
                .json(&json!({"username": "alice", "password": "alice-password"})),
        )
        .await;
        assert_eq!(status, 200, "{created}");
        let alice_id = created["id"].as_i64().unwrap();
        let token = created["provisioning_token"].as_str().unwrap().to_string();
        for field in [
            "last_provisioned_at",
            "last_provisioned_ip",
            "last_provisioned_user_agent",
        ] {
            assert_eq!(created[field], Value::Null, "never provisioned: {field}");
        }

        // The anonymous document names no account: served, never recorded (an unauthenticated
        // client must not be able to grow the table).
        let r = app.provision(HOST, "/provisioning").send().await.unwrap();
        assert_eq!(r.status(), 200);
        // A phone behind the trusted proxy fetches the token's document.
        let r = client_from(PROXY)
            .get(format!("{}/provisioning/{token}", app.base))
            .header("host", HOST)
            .header("x-linphone-provisioning", "1")
            .header("x-forwarded-for", PHONE_IP)
            .header("user-agent", "LinphoneiOS/5.2 (iPhone) LinphoneCore/5.3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Then the same account's document again, with an API key from 127.0.0.1.
        let alice = app
            .state
            .store
            .account(alice_id)
            .await
            .unwrap()
            .expect("alice");
        let alice_key = user_key(&app, &alice, None).await;
        let r = app
            .provision(HOST, "/provisioning/me")
            .header("x-api-key", &alice_key)
            .header("user-agent", "LinphoneAndroid/5.1 (Pixel) LinphoneCore/5.3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The QR code is not a document: no event.
        let qr_token = app.token(&alice).await;
        let r = app
            .get(HOST, &format!("/provisioning/qrcode/{qr_token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);

        let query = format!("account_id={alice_id}&action=document.delivered");
        let delivered = wait_events(&app, HOST, &boss_key, &query, 2).await;
        assert_eq!(delivered.len(), 2, "{delivered:?}");
        let (me, by_token) = (&delivered[0], &delivered[1]);
        let (_, every) = audit(&app, HOST, Some(&boss_key), "action=document.delivered").await;
        let every = every.as_array().expect("events");
        assert_eq!(every.len(), 2, "only the account's documents: {every:?}");
        assert!(
            every.iter().all(|e| e["account_id"] == alice_id),
            "{every:?}"
        );
        assert_eq!(
            me["detail"], "/provisioning/me",
            "newest first: {delivered:?}"
        );
        assert_eq!(me["actor"], "alice@audit.example");
        assert_eq!(me["actor_kind"], "account");
        assert_eq!(me["actor_account_id"], alice_id);
        assert_eq!(me["client_ip"], "127.0.0.1");
        assert_eq!(
            me["user_agent"],
            "LinphoneAndroid/5.1 (Pixel) LinphoneCore/5.3"
        );
        assert_eq!(by_token["detail"], "/provisioning/{token}");
        assert_eq!(by_token["actor"], "anonymous");
        assert_eq!(by_token["actor_kind"], "anonymous");
        assert_eq!(
            by_token["client_ip"], PHONE_IP,
            "the address behind the proxy"
        );
        assert_eq!(
            by_token["user_agent"],
            "LinphoneiOS/5.2 (iPhone) LinphoneCore/5.3"
        );
        for e in &delivered {
            assert_eq!(e["account_id"], alice_id);
            assert_eq!(e["target"], alice_id.to_string());
            assert_eq!(e["space"], HOST);
            assert_eq!(e["outcome"], "ok");
            let at = e["at"].as_str().unwrap();
            let ms = provisio::api::audit::parse_instant(at).expect("an RFC 3339 time");
            assert!((now_ms() - ms).abs() < 10 * 60_000, "{at} is about now");
        }

        // The account JSON is the device inventory: the latest delivery.
        let (status, account) = status_json(call(
            &app,
            Method::GET,
            HOST,
            &format!("/api/accounts/{alice_id}"),
            Some(&boss_key),
        ))
        .await;
        assert_eq!(status, 200);
        assert_eq!(account["last_provisioned_at"], me["at"]);
        assert_eq!(account["last_provisioned_ip"], "127.0.0.1");
        assert_eq!(
            account["last_provisioned_user_agent"],
            "LinphoneAndroid/5.1 (Pixel) LinphoneCore/5.3"
        );
        let (_, list) = status_json(call(
            &app,
            Method::GET,
            HOST,
            "/api/accounts",
            Some(&boss_key),
        ))
        .await;
        let boss_json = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == boss.id)
            .expect("the admin is listed")
            .clone();
        assert_eq!(boss_json["last_provisioned_at"], Value::Null);

        // A document with ?reset_password also records the reset (never the password).
        let r = app
            .provision(HOST, &format!("/provisioning/{qr_token}?reset_password"))
            .header("user-agent", "LinphoneAndroid/5.1 (Pixel) LinphoneCore/5.3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let reset = wait_events(&app, HOST, &boss_key, "action=password.reset", 1).await;
        assert_eq!(reset[0]["account_id"], alice_id);
        assert_eq!(reset[0]["detail"], "/provisioning/{token}");
        assert_eq!(reset[0]["actor"], "anonymous");
        let delivered = wait_events(&app, HOST, &boss_key, &query, 3).await;
        assert_eq!(delivered.len(), 3, "{delivered:?}");

        // Management events name the acting admin.
        let r = call(
            &app,
            Method::POST,
            HOST,
            &format!("/api/accounts/{alice_id}/block"),
            Some(&boss_key),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let blocked = wait_events(&app, HOST, &boss_key, "action=account.blocked", 1).await;
        let created = wait_events(&app, HOST, &boss_key, "action=account.created", 1).await;
        let minted = wait_events(&app, HOST, &boss_key, "action=token.minted", 1).await;
        for (event, action) in [
            (&blocked[0], "account.blocked"),
            (&created[0], "account.created"),
            (&minted[minted.len() - 1], "token.minted"),
        ] {
            assert_eq!(event["action"], action);
            assert_eq!(event["actor"], "boss@audit.example", "{event}");
            assert_eq!(event["actor_kind"], "account");
            assert_eq!(event["actor_account_id"], boss.id);
            assert_eq!(event["target"], alice_id.to_string());
            assert_eq!(event["client_ip"], "127.0.0.1");
        }
        assert_eq!(created[0]["user_agent"], "admin-console/1.0");
        // account_id also matches what an account did (alice's key, minted by alice).
        let by_alice =
            wait_events(&app, HOST, &boss_key, &format!("account_id={alice_id}"), 4).await;
        assert!(
            by_alice
                .iter()
                .all(|e| e["account_id"] == alice_id || e["actor_account_id"] == alice_id)
        );

        // The command line: the same events, and its own (actor `cli`).
        let identity = "alice@audit.example";
        let out = ok(&provisio(
            &app,
            &["audit", "--account", identity, "--limit", "50", "--json"],
        ));
        let cli_events: Vec<Value> = serde_json::from_str(&out).expect("JSON");
        let cli_delivered: Vec<&Value> = cli_events
            .iter()
            .filter(|e| e["action"] == "document.delivered")
            .collect();
        assert_eq!(cli_delivered.len(), 3, "{out}");
        for (cli, api) in cli_delivered.iter().zip(&delivered) {
            assert_eq!(*cli, api, "the CLI shows what the API shows");
        }
        ok(&provisio(&app, &["token", identity, "--json"]));
        let out = ok(&provisio(
            &app,
            &[
                "audit",
                "--account",
                identity,
                "--action",
                "token.minted",
                "--json",
            ],
        ));
        let cli_minted: Vec<Value> = serde_json::from_str(&out).expect("JSON");
        assert_eq!(cli_minted[0]["actor"], "cli", "{out}");
        assert_eq!(cli_minted[0]["actor_kind"], "cli");
        assert_eq!(cli_minted[0]["actor_account_id"], Value::Null);
        let table = ok(&provisio(&app, &["audit", "--account", identity]));
        assert!(table.starts_with("at\tactor\taction\t"), "{table}");
        assert!(
            table.contains(&format!(
                "anonymous\tdocument.delivered\t{alice_id}\t{HOST}\t{PHONE_IP}\tLinphoneiOS/5.2"
            )),
            "{table}"
        );
        let out = provisio(&app, &["audit", "--account", "nobody@audit.example"]);
        assert!(!out.status.success(), "an unknown account is an error");

        // No secret anywhere in the trail.
        let (_, everything) = audit(&app, HOST, Some(&boss_key), "limit=1000").await;
        let text = everything.to_string();
        for secret in [&token, &qr_token, &alice_key, &boss_key] {
            assert!(
                !text.contains(secret.as_str()),
                "a secret in the audit trail"
            );
        }
        assert!(!text.contains("alice-password"));
        app.stop().await;
    }
);

both_backends!(scopes_and_parameters, |app: TestApp| async move {
    let root = app.space("root.example", |s| s.super_space = true).await;
    let a = app.space("a.example", |_| {}).await;
    let b = app.space("b.example", |_| {}).await;
    let (_, root_key) = admin(&app, &root, "root").await;
    let (_, a_key) = admin(&app, &a, "ada").await;
    let (_, b_key) = admin(&app, &b, "bob").await;
    for (host, key, user) in [("a.example", &a_key, "anna"), ("b.example", &b_key, "bert")] {
        let (status, body) = status_json(
            call(&app, Method::POST, host, "/api/accounts", Some(key))
                .json(&json!({"username": user, "password": "long-password"})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // A super admin creates a space: its event belongs to that space.
    let (status, _) = status_json(
        call(
            &app,
            Method::POST,
            "root.example",
            "/api/spaces",
            Some(&root_key),
        )
        .json(&json!({"domain": "c.example"})),
    )
    .await;
    assert_eq!(status, 201);

    // The super admin sees every space's events.
    let all = wait_events(&app, "root.example", &root_key, "action=account.created", 2).await;
    let spaces: std::collections::BTreeSet<&str> =
        all.iter().map(|e| e["space"].as_str().unwrap()).collect();
    assert_eq!(spaces, ["a.example", "b.example"].into());
    let created = wait_events(&app, "root.example", &root_key, "action=space.created", 1).await;
    assert_eq!(created[0]["target"], "c.example");
    assert_eq!(created[0]["actor"], "root@root.example");
    // A space admin only its own.
    let own = wait_events(&app, "a.example", &a_key, "", 1).await;
    assert!(!own.is_empty());
    assert!(own.iter().all(|e| e["space"] == "a.example"), "{own:?}");
    let own_b = wait_events(&app, "b.example", &b_key, "limit=1000", 1).await;
    assert!(own_b.iter().all(|e| e["space"] == "b.example"), "{own_b:?}");
    // limit and since.
    let one = wait_events(&app, "root.example", &root_key, "limit=1", 1).await;
    assert_eq!(one.len(), 1);
    let (status, future) = audit(
        &app,
        "root.example",
        Some(&root_key),
        "since=2999-01-01T00:00:00%2B01:00",
    )
    .await;
    assert_eq!((status, future), (200, json!([])));
    let (status, past) = audit(
        &app,
        "root.example",
        Some(&root_key),
        "since=2000-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(status, 200);
    assert!(past.as_array().unwrap().len() >= 3);

    // Others: 401 without a key, 403 for a non-admin.
    let user = app.account(&a, "user", "user-password").await;
    let user_key = user_key(&app, &user, None).await;
    assert_eq!(audit(&app, "a.example", None, "").await.0, 401);
    assert_eq!(audit(&app, "a.example", Some(&user_key), "").await.0, 403);
    // Bad parameters: 422 naming the field.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=many", "limit"),
        ("since=yesterday", "since"),
        ("since=2026-02-30T00:00:00Z", "since"),
        ("account_id=abc", "account_id"),
        ("account_id=-1", "account_id"),
        ("action=DROP%20TABLE", "action"),
    ] {
        let (status, body) = audit(&app, "a.example", Some(&a_key), query).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(body["errors"][field].is_array(), "{query}: {body}");
    }
    app.stop().await;
});

both_backends!(retention_purges_old_events, |app: TestApp| async move {
    let space = app.space(HOST, |_| {}).await;
    let (_, key) = admin(&app, &space, "boss").await;
    let now = now_ms();
    let event = |at: i64, detail: &str| AuditEvent {
        at,
        actor_kind: "cli".into(),
        actor_label: "cli".into(),
        action: "space.updated".into(),
        target: Some(HOST.into()),
        space: Some(HOST.into()),
        outcome: "ok".into(),
        detail: Some(detail.into()),
        ..Default::default()
    };
    app.state
        .store
        .record_audit_events(&[
            event(now - 91 * DAY, "old"),
            event(now - 89 * DAY, "recent"),
        ])
        .await
        .unwrap();
    let (status, before) = audit(&app, HOST, Some(&key), "action=space.updated").await;
    assert_eq!(status, 200);
    assert_eq!(before.as_array().unwrap().len(), 2);

    // 0 keeps everything.
    let mut forever = (*app.state.settings).clone();
    forever.audit_retention_days = 0;
    let counts = provisio::housekeeping::run_once(&app.state.store, &forever)
        .await
        .unwrap();
    assert_eq!(counts.audit_events, 0);
    // The default, 90 days, deletes the old one only.
    assert_eq!(app.state.settings.audit_retention_days, 90);
    let counts = provisio::housekeeping::run_once(&app.state.store, &app.state.settings)
        .await
        .unwrap();
    assert_eq!(counts.audit_events, 1);
    let (_, after) = audit(&app, HOST, Some(&key), "action=space.updated").await;
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["detail"], "recent");
    app.stop().await;
});

/// A queue of two events under a thousand concurrent producers: none is dropped (producers wait
/// for room), and stopping the writer writes everything still queued, on both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_waits_and_shutdown_writes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}",
        dir.path().join("q.sqlite3").display()
    )];
    urls.extend(common::pg::fresh_postgres_url().await);
    for url in urls {
        let store = provisio::store::open(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        let sink = provisio::audit::Sink::new(2);
        let writer = provisio::audit::Writer::start(&sink, store.clone()).expect("the queue");
        assert!(
            provisio::audit::Writer::start(&sink, store.clone()).is_none(),
            "one writer per queue"
        );
        let producers: Vec<_> = (0..1000)
            .map(|i| {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let event = provisio::audit::event(
                        &provisio::audit::Actor::Cli,
                        provisio::audit::action::SPACE_UPDATED,
                    )
                    .target(format!("s{i}.example"));
                    sink.record(event).await;
                })
            })
            .collect();
        for p in producers {
            p.await.unwrap();
        }
        writer.stop().await;
        let events = store
            .audit_events(&provisio::store::AuditQuery {
                limit: 5000,
                ..Default::default()
            })
            .await
            .unwrap();
        let targets: std::collections::BTreeSet<String> =
            events.iter().filter_map(|e| e.target.clone()).collect();
        assert_eq!(events.len(), 1000, "{url}");
        assert_eq!(targets.len(), 1000, "each event once");
    }
}

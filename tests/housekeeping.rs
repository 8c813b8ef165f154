//! Housekeeping end to end: a pass over a real server's store deletes every expired auth token,
//! expired or answered Digest challenge, idle user API key and long-retired provisioning token
//! (checked with SQL), and every answer the server gives over HTTP is the same afterwards; the
//! background task purges on its own and counts what it deleted in `/metrics`; `provisio
//! purge` does one pass from the command line.

mod common;

use common::server::{Backend, TestApp};
use provisio::config::Settings;
use provisio::housekeeping;
use provisio::model::now_ms;
use provisio::secret::{hash_secret, new_token};
use provisio::store::{ConsumeId, DynStore, NewApiKey, PurgeCounts};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One minute, one day, in milliseconds.
const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

/// Runs `SELECT count(*) …` on the server's own database, whichever backend it is.
async fn count(app: &TestApp, sql: &str) -> i64 {
    let url = app.state.settings.database.clone();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let conn = deadpool_sqlite::rusqlite::Connection::open(path).expect("open SQLite");
        conn.query_row(sql, [], |row| row.get(0)).expect(sql)
    } else {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client.query_one(sql, &[]).await.expect(sql).get(0)
    }
}

/// Status of a non-consuming look at a provisioning token (the QR route checks it as the
/// provisioning route does: 404 unknown/used/superseded, 410 expired, 200 live).
async fn look(app: &TestApp, host: &str, token: &str) -> u16 {
    app.get(host, &format!("/provisioning/qrcode/{token}"))
        .send()
        .await
        .expect("qrcode")
        .status()
        .as_u16()
}

/// Fetches the document of a token (consuming it).
async fn fetch(app: &TestApp, host: &str, path: &str) -> u16 {
    app.provision(host, path)
        .send()
        .await
        .expect("provisioning")
        .status()
        .as_u16()
}

/// Stores a token minted at `at` (expiring at `expires`) and returns its clear value.
async fn mint_at(store: &DynStore, account: i64, at: i64, expires: Option<i64>) -> String {
    let token = new_token();
    store
        .create_provisioning_token(account, &hash_secret(&token), at, expires)
        .await
        .expect("mint");
    token
}

/// Marks a token used at `at`, as a request then would have.
async fn burn_at(store: &DynStore, token: &str, at: i64) {
    let won = store
        .consume_provisioning_token(&hash_secret(token), at, None, &ConsumeId::random())
        .await
        .expect("consume");
    assert!(won.is_some(), "consumable at set-up");
}

both_backends!(purge_pass_changes_no_answer, |app: TestApp| async move {
    let host = "hk.example";
    let space = app.space(host, |_| {}).await;
    let store = app.state.store.clone();
    let now = now_ms();
    let old = now - 40 * DAY;
    let mut ids = Vec::new();
    for name in ["a", "b", "c", "d", "e", "f"] {
        ids.push(app.account(&space, name, "secret").await.id);
    }
    let [a, b, c, d, e, f] = ids[..] else {
        unreachable!()
    };
    // A: superseded long ago by a token used long ago; both go.
    let a1 = mint_at(&store, a, old, None).await;
    let a2 = mint_at(&store, a, old + DAY, None).await;
    burn_at(&store, &a2, old + 2 * DAY).await;
    // B: superseded yesterday: kept (retention 30 days).
    let b1 = mint_at(&store, b, old, None).await;
    let b2 = mint_at(&store, b, now - DAY, None).await;
    // C: used long ago, then re-minted now.
    let c1 = mint_at(&store, c, old, None).await;
    burn_at(&store, &c1, old + DAY).await;
    let c2 = mint_at(&store, c, now, None).await;
    // D: expired long ago, never used (410): kept.
    let d1 = mint_at(&store, d, old, Some(old + 60 * MINUTE)).await;
    // E: used just now over HTTP: kept.
    let e1 = app
        .token(&app.state.store.account(e).await.unwrap().unwrap())
        .await;
    assert_eq!(fetch(&app, host, &format!("/provisioning/{e1}")).await, 200);
    // F: minted long ago, never expires, never used: live.
    let f1 = mint_at(&store, f, old, None).await;
    let tokens = [&a1, &a2, &b1, &b2, &c1, &c2, &d1, &e1, &f1];
    let mut before = Vec::new();
    for t in tokens {
        before.push(look(&app, host, t).await);
    }
    assert_eq!(before, [404, 404, 404, 200, 404, 200, 410, 404, 200]);

    // Auth tokens: two minted over HTTP (fresh), two expired, one fresh and attached.
    for _ in 0..2 {
        let r = app
            .client
            .post(format!("{}/api/accounts/auth_token", app.base))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    // (Expired rows go one minute after their expiry: housekeeping::EXPIRY_GRACE_MS.)
    for minutes in [7, 60] {
        store
            .create_auth_token(
                &hash_secret(&new_token()),
                None,
                None,
                now - minutes * MINUTE,
            )
            .await
            .unwrap();
    }
    let qr = new_token();
    store
        .create_auth_token(&hash_secret(&qr), None, None, now)
        .await
        .unwrap();
    assert!(
        store
            .attach_auth_token(&hash_secret(&qr), f, now - MINUTE)
            .await
            .unwrap()
    );

    // Digest challenges: one sent over HTTP now, three long expired.
    let r = app
        .get(host, "/provisioning/me")
        .header("x-linphone-provisioning", "1")
        .header("from", format!("sip:a@{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for n in 0..3 {
        store
            .create_digest_nonce(a, "n", &format!("old-{n}"), "127.0.0.1", now - 10 * MINUTE)
            .await
            .unwrap();
    }

    // A user API key idle for two hours (lifetime 60 minutes): refused before and after.
    let idle = new_token();
    store
        .create_api_key(
            &NewApiKey {
                account_id: b,
                key_hash: hash_secret(&idle),
                name: None,
                ip: None,
                expires_after_minutes: None,
            },
            now - 120 * MINUTE,
        )
        .await
        .unwrap();
    let me_with_key = |key: String| {
        app.get(host, "/provisioning/me")
            .header("x-linphone-provisioning", "1")
            .header("x-api-key", key)
    };
    assert_eq!(
        me_with_key(idle.clone()).send().await.unwrap().status(),
        401
    );

    let counts = housekeeping::run_once(&store, &app.state.settings)
        .await
        .expect("purge pass");
    assert_eq!(
        counts,
        PurgeCounts {
            auth_tokens: 2,
            digest_nonces: 3,
            api_keys: 1,
            provisioning_tokens: 3,
            audit_events: 0,
        }
    );

    // Nothing expired or long retired is left.
    let grace = housekeeping::EXPIRY_GRACE_MS;
    let auth_cutoff = now - 5 * MINUTE - grace;
    let nonce_cutoff = now - 300_000 - grace;
    let retired = now - 30 * DAY;
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM auth_tokens WHERE created_at <= {auth_cutoff}")
        )
        .await,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM auth_tokens").await,
        3,
        "the fresh ones stay"
    );
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) FROM digest_nonces WHERE created_at <= {nonce_cutoff} \
                 OR nc = {}",
                i64::MAX
            )
        )
        .await,
        0
    );
    assert_eq!(count(&app, "SELECT count(*) FROM digest_nonces").await, 1);
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM provisioning_tokens WHERE used_at <= {retired}")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM api_keys WHERE expires_after_minutes IS NULL"
        )
        .await,
        0
    );

    // Every token answers as before, over HTTP.
    let mut after = Vec::new();
    for t in tokens {
        after.push(look(&app, host, t).await);
    }
    assert_eq!(after, before, "answers unchanged by the purge");
    assert_eq!(me_with_key(idle).send().await.unwrap().status(), 401);
    // And the live ones still provision, once; the superseded one stays dead.
    for (t, status) in [
        (&a1, 404),
        (&a2, 404),
        (&b1, 404),
        (&c1, 404),
        (&d1, 410),
        (&e1, 404),
        (&b2, 200),
        (&c2, 200),
        (&f1, 200),
    ] {
        assert_eq!(
            fetch(&app, host, &format!("/provisioning/{t}")).await,
            status
        );
    }
    assert_eq!(
        fetch(&app, host, &format!("/provisioning/auth_token/{qr}")).await,
        200,
        "a live auth token still redeems"
    );
    assert_eq!(
        fetch(&app, host, &format!("/provisioning/auth_token/{qr}")).await,
        404,
        "once"
    );

    let again = housekeeping::run_once(&store, &app.state.settings)
        .await
        .expect("second pass");
    assert_eq!(again, PurgeCounts::default(), "a second pass finds nothing");
});

/// The background task purges on its own every `housekeeping_interval_seconds`, and what it
/// deletes shows in `provisio_purged_rows_total{table}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_task_purges_and_counts() {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let app = TestApp::start_with(Backend::Sqlite, |s| s.housekeeping_interval_seconds = 1)
        .await
        .expect("sqlite");
    let store = app.state.store.clone();
    let now = now_ms();
    for _ in 0..4 {
        store
            .create_auth_token(&hash_secret(&new_token()), None, None, now - 60 * MINUTE)
            .await
            .unwrap();
    }
    let off = Settings {
        housekeeping_interval_seconds: 0,
        ..(*app.state.settings).clone()
    };
    assert!(
        housekeeping::spawn(
            store.clone(),
            std::sync::Arc::new(off),
            app.state.key_uses.clone()
        )
        .is_none(),
        "0 turns it off"
    );
    let task = housekeeping::spawn(
        store.clone(),
        app.state.settings.clone(),
        app.state.key_uses.clone(),
    )
    .expect("started");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&app, "SELECT count(*) FROM auth_tokens").await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "expired auth tokens still there after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = metrics.render();
    let purged: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("provisio_purged_rows_total{table=\"auth_tokens\"} "))
        .expect("the counter is exported")
        .trim()
        .parse()
        .expect("a number");
    assert!(purged >= 4, "{page}");
    drop(task);
    app.stop().await;
}

/// Runs the real binary in `dir` with an embedded store under `dir/data`.
fn provisio(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_provisio"))
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .envs(env.iter().copied())
        .args(["--data-dir", "data", "--hooks-dir", "hooks"])
        .args(args)
        .output()
        .expect("run provisio")
}

/// `provisio purge --json` deletes what a pass deletes and prints the counts per table; a
/// second run prints zeros (plain text); a bad retention is refused naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_command_prints_counts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("data/provisio.sqlite3").display()
    );
    {
        let store = provisio::store::open(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        store
            .create_space(&provisio::model::Space::new("cli.example", "cli.example"))
            .await
            .unwrap();
        let account = store
            .create_account(
                &provisio::store::NewAccount {
                    username: "alice".into(),
                    domain: "cli.example".into(),
                    ..Default::default()
                },
                now_ms(),
            )
            .await
            .unwrap()
            .id;
        let now = now_ms();
        let old = now - 40 * DAY;
        for minutes in [10, 20] {
            store
                .create_auth_token(
                    &hash_secret(&new_token()),
                    None,
                    None,
                    now - minutes * MINUTE,
                )
                .await
                .unwrap();
        }
        store
            .create_digest_nonce(account, "n", "o", "127.0.0.1", now - 10 * MINUTE)
            .await
            .unwrap();
        // Audit events: one past the default retention (90 days), one within it.
        let audit_at = |at: i64| provisio::store::AuditEvent {
            at,
            actor_kind: "cli".into(),
            actor_label: "cli".into(),
            action: "account.created".into(),
            account_id: Some(account),
            outcome: "ok".into(),
            ..Default::default()
        };
        store
            .record_audit_events(&[audit_at(now - 91 * DAY), audit_at(now - 89 * DAY)])
            .await
            .unwrap();
        let first = mint_at(&store, account, old, None).await;
        let second = mint_at(&store, account, old + 1, None).await;
        burn_at(&store, &second, old + 2).await;
        let live = mint_at(&store, account, now, None).await;
        store
            .create_api_key(
                &NewApiKey {
                    account_id: account,
                    key_hash: hash_secret("idle"),
                    name: None,
                    ip: None,
                    expires_after_minutes: None,
                },
                now - 2 * 60 * MINUTE,
            )
            .await
            .unwrap();
        assert!(
            store
                .provisioning_token(&hash_secret(&first))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .provisioning_token(&hash_secret(&live))
                .await
                .unwrap()
                .unwrap()
                .current
        );
    }

    let out = provisio(dir.path(), &["purge", "--json"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        counts,
        serde_json::json!({
            "auth_tokens": 2,
            "digest_nonces": 1,
            "api_keys": 1,
            "provisioning_tokens": 2,
            "audit_events": 1
        })
    );

    let out = provisio(dir.path(), &["purge"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "auth_tokens\t0\ndigest_nonces\t0\napi_keys\t0\nprovisioning_tokens\t0\naudit_events\t0\n"
    );

    for (key, value) in [
        ("PROVISIO_TOKEN_RETENTION_DAYS", "0"),
        ("PROVISIO_HOUSEKEEPING_INTERVAL_SECONDS", "86401"),
        ("PROVISIO_AUDIT_RETENTION_DAYS", "36501"),
    ] {
        let out = provisio(dir.path(), &["purge"], &[(key, value)]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = key.trim_start_matches("PROVISIO_").to_lowercase();
        assert!(stderr.contains(&format!("`{name}`")), "{stderr}");
    }
}

//! Spaces are served from memory (src/spaces.rs), so what must hold is coherence: a space
//! changed anywhere is served everywhere within `cache_max_staleness_seconds` (default 2 s).
//!
//! * two instances on one PostgreSQL schema: edits, creation and deletion through instance A's
//!   API are served by instance B within the bound, also after B's `LISTEN` connection was
//!   killed (`pg_terminate_backend`: B reconnects and reloads, or its version check catches
//!   the change);
//! * SQLite: `provisio space add` (another process) writing while a server runs is served
//!   within the bound, by the version check alone (SQLite has no notices);
//! * the anonymous document needs no database at all: it is served with PostgreSQL stopped.

mod api_support;
mod common;

use api_support::admin;
use common::pg_cluster::{PgCluster, StopMode};
use common::server::{Backend, TestApp};
use provisio::app;
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// The staleness bound under test: `cache_max_staleness_seconds`' default.
const BOUND: Duration = Duration::from_secs(2);

/// Polls an anonymous document of `host` at `base` until `done` accepts its (status, body);
/// returns how long that took, or fails after twice the bound with the last answer.
async fn served_within(
    client: &reqwest::Client,
    base: &str,
    host: &str,
    done: impl Fn(u16, &str) -> bool,
) -> Duration {
    let started = Instant::now();
    let mut last = (0, String::new());
    while started.elapsed() < 2 * BOUND {
        let r = client
            .get(format!("{base}/provisioning"))
            .header("host", host)
            .header("x-linphone-provisioning", "1")
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let body = r.text().await.expect("body");
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

/// Backend pid of the `LISTEN` session of the instance whose connections carry
/// `application_name` (the listener keeps the URL's name), other than `not`.
async fn listener_pid(url: &str, application_name: &str, not: Option<i32>) -> i32 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    for _ in 0..100 {
        let row = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND query LIKE 'LISTEN %'",
                &[&application_name],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(pid) = row.map(|r| r.get::<_, i32>(0)).filter(|p| Some(*p) != not) {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no LISTEN session named {application_name}");
}

/// Instance A edits, creates and deletes spaces through its API; instance B, on the same
/// schema, serves each change within the bound — also once its listening connection was
/// killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_space_changed_through_one_instance_is_served_by_another_within_the_bound() {
    let Some(a) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    let root = a.space("root.example", |s| s.super_space = true).await;
    a.space("coh.example", |_| {}).await;
    a.space("other.example", |_| {}).await;
    let (_, key) = admin(&a, &root, "root").await;

    // B: its own pool, listener and snapshot over the same schema, named for pg_stat_activity.
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).expect("random");
    let b_name = format!("coherence_b_{}", hex::encode(random));
    let mut settings = (*a.state.settings).clone();
    settings.listen = "127.0.0.1:0".parse().expect("addr");
    settings.database = format!("{}&application_name={b_name}", settings.database);
    let b_state = app::build_state(settings, false).await.expect("instance B");
    let b = app::spawn(b_state, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("spawn instance B");
    let b_base = format!("http://{}", b.addr);
    let client = reqwest::Client::new();

    let put = |round: u32| {
        a.client
            .request(Method::PUT, format!("{}/api/spaces/coh.example", a.base))
            .header("host", "root.example")
            .header("x-api-key", key.as_str())
            .json(&json!({"custom_provisioning_entries": format!("[coh]\nround={round}\n")}))
            .send()
    };
    let marker = |round: u32| format!(r#"<entry name="round">{round}</entry>"#);

    // 1. An edit, with B listening.
    assert_eq!(put(1).await.expect("PUT").status(), 200);
    let took = served_within(&client, &b_base, "coh.example", |s, body| {
        s == 200 && body.contains(&marker(1))
    })
    .await;
    eprintln!("edit served by B after {took:?} (notice)");
    assert!(took <= BOUND, "{took:?}");

    // 2. B's LISTEN connection is killed, then the space is edited at once.
    let pid = listener_pid(&a.state.settings.database, &b_name, None).await;
    let (admin_db, connection) =
        tokio_postgres::connect(&a.state.settings.database, tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    let killed: bool = admin_db
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate")
        .get(0);
    assert!(killed, "the listener's backend was terminated");
    assert_eq!(put(2).await.expect("PUT").status(), 200);
    let took = served_within(&client, &b_base, "coh.example", |s, body| {
        s == 200 && body.contains(&marker(2))
    })
    .await;
    eprintln!("edit made while B's listener was down served after {took:?}");
    assert!(took <= BOUND, "{took:?}");
    // B listens again, on a new connection (or this fails after five seconds).
    listener_pid(&a.state.settings.database, &b_name, Some(pid)).await;

    // 3. A new space: B serves its host at once (an unknown host checks the version).
    let r = a
        .client
        .post(format!("{}/api/spaces", a.base))
        .header("host", "root.example")
        .header("x-api-key", key.as_str())
        .json(&json!({"domain": "new.example", "base_rc": "[fresh]\nk=v\n"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    let took = served_within(&client, &b_base, "new.example", |s, body| {
        s == 200 && body.contains(r#"<section name="fresh">"#)
    })
    .await;
    assert!(took <= BOUND, "{took:?}");

    // 4. A deleted space: B stops serving it within the bound (three spaces remain, so an
    //    unknown host is a 404, not the only space).
    let r = a
        .client
        .delete(format!("{}/api/spaces/coh.example", a.base))
        .header("host", "root.example")
        .header("x-api-key", key.as_str())
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 200);
    let took = served_within(&client, &b_base, "coh.example", |s, _| s == 404).await;
    eprintln!("deletion seen by B after {took:?}");
    assert!(took <= BOUND, "{took:?}");

    b.stop().await.expect("stop instance B");
    a.stop().await;
}

/// Runs the real binary on the server's database (another process, as an operator would).
fn provisio_cli(database: &str, dir: &Path, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_provisio"))
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .args(["--database", database, "--hooks-dir", "hooks"])
        .args(args)
        .output()
        .expect("run provisio");
    assert!(
        out.status.success(),
        "provisio {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SQLite: the CLI adds a space while the server runs. Before, the server's only space
/// answers every host; within the bound the new space's host gets its own document — no
/// notice involved (SQLite has none), the version check alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_writing_sqlite_while_a_server_runs_is_served_within_the_bound() {
    let app = TestApp::start(Backend::Sqlite).await.expect("sqlite");
    app.space("one.example", |s| {
        s.custom_entries = Some("[one]\nk=1\n".into());
    })
    .await;
    let r = app
        .provision("two.example", "/provisioning")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains(r#"<section name="one">"#),
        "a single space answers every host"
    );

    std::fs::write(app.dir.path().join("two.ini"), "[two]\nk=2\n").expect("write ini");
    let database = app.state.settings.database.clone();
    let dir = app.dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        provisio_cli(
            &database,
            &dir,
            &["space", "add", "two.example", "--custom-entries", "two.ini"],
        )
    })
    .await
    .expect("CLI task");
    let took = served_within(&app.client, &app.base, "two.example", |s, body| {
        s == 200 && body.contains(r#"<section name="two">"#)
    })
    .await;
    eprintln!("space added by the CLI served after {took:?}");
    assert!(took <= BOUND, "{took:?}");
    // And the first space still answers its own host.
    let body = app
        .provision("one.example", "/provisioning")
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(body.contains(r#"<section name="one">"#), "{body}");
    app.stop().await;
}

/// The anonymous document is served from memory: with PostgreSQL stopped it is still
/// served, byte for byte, while `/readyz` reports the database down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anonymous_documents_need_no_database() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.url();
    // The SQLite start-up with the database swapped for the private cluster's: the shared
    // PostgreSQL is not involved.
    let app = TestApp::start_with(Backend::Sqlite, move |s| s.database = url)
        .await
        .expect("server on the private cluster");
    app.space("anon.example", |s| {
        s.base_rc = Some("[sip]\nguess_hostname=1\n".into());
        s.vcard_list_url = Some("https://anon.example/vcards".into());
    })
    .await;
    let fetch = || async {
        let r = app
            .provision("anon.example", "/provisioning")
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.expect("body"))
    };
    let (status, before) = fetch().await;
    assert_eq!(status, 200);
    assert!(before.contains("contacts-vcard-list"), "{before}");

    cluster.stop_server(StopMode::Fast);
    let ready = app
        .get("anon.example", "/readyz")
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503, "the database is down");
    for _ in 0..20 {
        assert_eq!(fetch().await, (200, before.clone()));
    }
    app.stop().await;
}

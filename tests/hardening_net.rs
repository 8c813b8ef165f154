//! Hostile clients against the real server: silent and HTTP/2-preface-only sockets, slowloris,
//! idle keep-alive, the connection cap, a stalled store, brute force from one address, forged
//! and trusted forwarding headers, and the start-up checks of the real binary.
//!
//! The clients bind other loopback addresses (127.0.0.0/8 is all local) so that each test's
//! rate-limited address is its own.

mod api_support;
mod common;

use api_support::*;
use common::server::{Backend, TestApp};
use futures_util::StreamExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use provisio::model::Algorithm;
use provisio::secret::new_token;
use reqwest::Method;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const HOST: &str = "sip.example.com";

/// Runs a body on both stores with adjusted settings (`both_backends!` with an `adjust`).
macro_rules! both_stores {
    ($name:ident, $adjust:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app = TestApp::start_with(Backend::Sqlite, $adjust)
                    .await
                    .expect("sqlite always runs");
                ($body)(app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(app) = TestApp::start_with(Backend::Postgres, $adjust).await {
                    ($body)(app).await;
                }
            }
        }
    };
}

/// The process-wide metrics recorder (the server's counters land here).
fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("metrics recorder")
    })
}

/// One sample of the rendered metrics (`name` or `name{labels}`), 0 when absent.
fn metric(sample: &str) -> f64 {
    metrics()
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == sample).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

fn addr(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// Raises this process's soft descriptor limit: the test holds both ends of every socket.
fn raise_nofile(needed: u64) {
    let soft = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    assert!(
        soft >= needed,
        "this test needs {needed} file descriptors; the hard limit allows {soft}"
    );
}

/// Reads until the peer closes (EOF or reset) and returns what it sent, or `None` when the
/// socket is still open at `deadline`.
async fn closed_by<R: AsyncRead + Unpin>(stream: &mut R, deadline: Instant) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One HTTP/1.1 request on a raw connection; returns the status (0 when the server closed
/// the connection instead of answering).
async fn exchange(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if data.len() >= end + 4 + length {
                return head[9..12].parse().unwrap();
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return 0,
            Ok(Ok(n)) => data.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no answer within 10 s"),
        }
    }
}

/// The HTTP/2 connection preface a client with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_preface_only_sockets_are_closed_on_time() {
    raise_nofile(4096);
    // Long enough that the /healthz checks surely run while every socket is still open, even on
    // a loaded machine.
    let timeout = Duration::from_secs(5);
    let app = TestApp::start_with(Backend::Sqlite, |s| s.header_read_timeout_seconds = 5)
        .await
        .unwrap();
    let addr = addr(&app);
    let first = Instant::now();
    let mut sockets: Vec<(TcpStream, Instant, bool)> = Vec::new();
    for batch in 0..13 {
        let connected =
            futures_util::future::join_all((0..100).map(|_| TcpStream::connect(addr))).await;
        for stream in connected {
            let mut stream = stream.expect("connect");
            let preface = batch >= 11;
            let at = Instant::now();
            if preface {
                stream.write_all(H2_PREFACE).await.unwrap();
            }
            sockets.push((stream, at, preface));
        }
    }
    assert_eq!(sockets.len(), 1300);

    // While all 1,300 are open, a fresh connection still gets /healthz within 1 s.
    for _ in 0..3 {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let asked = Instant::now();
        let r = client
            .get(format!("{}/healthz", app.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .expect("/healthz answers within 1 s while 1,300 hostile sockets are open");
        assert_eq!(r.status(), 200);
        assert!(asked.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        first.elapsed() < timeout,
        "the checks ran while the sockets were still open"
    );

    // Every one of them is closed by the server within the timeout + 2 s of its connection.
    let waits = sockets.into_iter().map(|(mut stream, at, preface)| {
        tokio::spawn(async move {
            let seen = closed_by(&mut stream, at + timeout + Duration::from_secs(2)).await;
            (preface, seen)
        })
    });
    let mut settings_frames = 0;
    for wait in futures_util::future::join_all(waits).await {
        let (preface, seen) = wait.unwrap();
        let seen = seen.expect("closed within header_read_timeout_seconds + 2 s");
        if preface {
            // HTTP/2 was spoken: the server's SETTINGS frame (type 4) came first.
            assert!(seen.len() >= 9 && seen[3] == 4, "{seen:?}");
            settings_frames += 1;
        } else {
            assert!(seen.is_empty(), "nothing is sent to a silent socket");
        }
    }
    assert_eq!(settings_frames, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_at_the_header_timeout() {
    let timeout = Duration::from_secs(2);
    let app = TestApp::start_with(Backend::Sqlite, |s| s.header_read_timeout_seconds = 2)
        .await
        .unwrap();
    let stream = TcpStream::connect(addr(&app)).await.unwrap();
    let at = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let drip = tokio::spawn(async move {
        if writer
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .is_err()
        {
            return;
        }
        for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    });
    let seen = closed_by(&mut reader, at + timeout + Duration::from_secs(2))
        .await
        .expect("a slowloris is closed within header_read_timeout_seconds + 2 s");
    assert!(
        at.elapsed() >= timeout - Duration::from_millis(100),
        "not before the timeout"
    );
    assert!(!seen.starts_with(b"HTTP/1.1 200"), "it was never served");
    drip.abort();

    // The same over HTTP/2: a preface, then nothing that completes a request head.
    let mut h2 = TcpStream::connect(addr(&app)).await.unwrap();
    let at = Instant::now();
    h2.write_all(H2_PREFACE).await.unwrap();
    closed_by(&mut h2, at + timeout + Duration::from_secs(2))
        .await
        .expect("an HTTP/2 connection without a request is closed on time");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let keep_alive = Duration::from_secs(2);
    let app = TestApp::start_with(Backend::Sqlite, |s| {
        s.keep_alive_seconds = 2;
        s.header_read_timeout_seconds = 30;
    })
    .await
    .unwrap();
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    assert_eq!(exchange(&mut stream, "/healthz").await, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        exchange(&mut stream, "/healthz").await,
        200,
        "a connection in use stays open"
    );
    let idle_from = Instant::now();
    closed_by(&mut stream, idle_from + keep_alive + Duration::from_secs(2))
        .await
        .expect("an idle keep-alive connection is closed after keep_alive_seconds");
    // The server's idle clock starts when it has sent the answer, a little before we read it.
    assert!(idle_from.elapsed() >= keep_alive / 2, "not closed at once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_closes_new_sockets_and_serves_open_ones() {
    metrics();
    let app = TestApp::start_with(Backend::Sqlite, |s| {
        s.max_connections = 20;
        s.header_read_timeout_seconds = 60;
        s.keep_alive_seconds = 60;
    })
    .await
    .unwrap();
    let refused_before = metric("provisio_connections_refused_total");
    let mut open = TcpStream::connect(addr(&app)).await.unwrap();
    assert_eq!(exchange(&mut open, "/healthz").await, 200);
    let mut silent = Vec::new();
    for _ in 0..19 {
        silent.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Past the cap: closed at once (the head deadline is a minute away, so only the cap can
    // close them this soon).
    for _ in 0..10 {
        let mut extra = TcpStream::connect(addr(&app)).await.unwrap();
        let seen = closed_by(&mut extra, Instant::now() + Duration::from_secs(5))
            .await
            .expect("a socket past max_connections is closed at once");
        assert!(seen.is_empty());
    }
    for s in &mut silent {
        assert!(
            closed_by(s, Instant::now() + Duration::from_millis(50))
                .await
                .is_none(),
            "connections under the cap stay open"
        );
    }
    assert_eq!(
        exchange(&mut open, "/healthz").await,
        200,
        "open connections keep being served"
    );
    assert!(metric("provisio_connections_refused_total") - refused_before >= 10.0);

    // Room again once some close.
    drop(silent);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fresh = TcpStream::connect(addr(&app)).await.unwrap();
    assert_eq!(exchange(&mut fresh, "/healthz").await, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_served() {
    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);

    // The host travels as `:authority`: it selects the space and builds links as Host does.
    let space = app.space("h2.example.com", |_| {}).await;
    app.space("other.example.com", |_| {}).await;
    let account = app.account(&space, "h2user", "h2-password").await;
    let token = app.token(&account).await;
    let port = addr(&app).port();
    let base = format!("http://h2.example.com:{port}");
    let by_name = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("h2.example.com", addr(&app))
        .build()
        .unwrap();
    let r = by_name
        .get(format!("{base}/provisioning/qrcode/{token}"))
        .header("x-linphone-provisioning", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-qrcode-url"].to_str().unwrap(),
        format!("{base}/provisioning/{token}")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_not_allowed_carries_allow() {
    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    for (method, path, allow) in [
        (Method::POST, "/provisioning/abc", "GET"),
        (Method::PATCH, "/api/accounts/12", "GET, PUT, DELETE"),
        (Method::PATCH, "/api/spaces/x.example", "GET, PUT, DELETE"),
        (Method::DELETE, "/healthz", "GET"),
        (Method::GET, "/api/accounts/7/block", "POST"),
    ] {
        let r = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(
            r.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["message"], "Method Not Allowed");
    }
    app.stop().await;
}

both_stores!(
    stalled_store_answers_503,
    |s: &mut provisio::config::Settings| s.request_timeout_seconds = 1,
    |app: TestApp| async move {
        app.space(HOST, |_| {}).await;
        let create = || call(&app, Method::POST, HOST, "/api/accounts/auth_token", None);
        assert_eq!(status_json(create()).await.0, 201);

        // Another connection takes the write lock the insert needs, and keeps it.
        let url = app.state.settings.database.clone();
        enum Lock {
            Sqlite(deadpool_sqlite::rusqlite::Connection),
            Postgres(tokio_postgres::Client),
        }
        let lock = if app.state.store.backend() == "sqlite" {
            let path = url.trim_start_matches("sqlite://");
            let conn = deadpool_sqlite::rusqlite::Connection::open(path).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            Lock::Sqlite(conn)
        } else {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
                .batch_execute("BEGIN; LOCK TABLE auth_tokens IN ACCESS EXCLUSIVE MODE")
                .await
                .unwrap();
            Lock::Postgres(client)
        };
        let asked = Instant::now();
        let (status, body) = status_json(create()).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["message"], provisio::http::edge::TIMEOUT_MESSAGE);
        assert!(asked.elapsed() >= Duration::from_secs(1));
        assert_eq!(
            app.get(HOST, "/healthz").send().await.unwrap().status(),
            200,
            "the server itself is not stalled"
        );

        match lock {
            Lock::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
            Lock::Postgres(client) => client.batch_execute("ROLLBACK").await.unwrap(),
        }
        assert_eq!(
            status_json(create()).await.0,
            201,
            "served again once unlocked"
        );
        app.stop().await;
    }
);

/// A token route from `ip`, with the provisioning header.
fn fetch(app: &TestApp, ip: [u8; 4], path: &str) -> reqwest::RequestBuilder {
    client_from(ip)
        .get(format!("{}{path}", app.base))
        .header("host", HOST)
        .header("x-linphone-provisioning", "1")
}

/// The `Retry-After` of a 429, checked to be a sensible number of seconds.
fn retry_after(r: &reqwest::Response) -> u64 {
    let secs: u64 = r
        .headers()
        .get("retry-after")
        .expect("a 429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    secs
}

both_stores!(
    brute_force_of_tokens_gets_429,
    |_: &mut provisio::config::Settings| {},
    |app: TestApp| async move {
        metrics();
        let limited_before = metric("provisio_rate_limited_total{limit=\"failures\"}");
        let space = app.space(HOST, |_| {}).await;
        let anna = app.account(&space, "anna", "pw-anna-123").await;
        let bob = app.account(&space, "bob", "pw-bob-1234").await;
        let anna_token = app.token(&anna).await;
        let bob_token = app.token(&bob).await;
        let attacker = [127, 0, 0, 2];
        let started = Instant::now();
        let guesses = futures_util::stream::iter(0..2000)
            .map(|_| {
                let r = fetch(&app, attacker, &format!("/provisioning/{}", new_token()));
                async move {
                    let r = r.send().await.unwrap();
                    let status = r.status().as_u16();
                    if status == 429 {
                        retry_after(&r);
                        let body: serde_json::Value = r.json().await.unwrap();
                        assert!(body["message"].as_str().unwrap().contains("retry in"));
                    }
                    status
                }
            })
            .buffer_unordered(8);
        let (statuses, anna_status) = tokio::join!(guesses.collect::<Vec<u16>>(), async {
            // Meanwhile a real client on another address is served.
            tokio::time::sleep(Duration::from_millis(300)).await;
            fetch(&app, [127, 0, 0, 3], &format!("/provisioning/{anna_token}"))
                .send()
                .await
                .unwrap()
                .status()
        });
        let elapsed = started.elapsed().as_secs();
        let not_found = statuses.iter().filter(|s| **s == 404).count() as u64;
        let limited = statuses.iter().filter(|s| **s == 429).count() as u64;
        assert_eq!(not_found + limited, 2000, "only 404 and 429");
        // 30 per minute: a burst of 30, then one every 2 s; plus what was in flight (8).
        assert!(not_found >= 30, "{not_found}");
        assert!(
            not_found <= 30 + 8 + elapsed / 2 + 1,
            "{not_found} guesses answered in {elapsed} s"
        );
        assert_eq!(anna_status, 200, "another address is not slowed");

        // The blocked address gets 429 even for a real token, which stays unused.
        let r = fetch(&app, attacker, &format!("/provisioning/{bob_token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        retry_after(&r);
        let r = fetch(&app, [127, 0, 0, 3], &format!("/provisioning/{bob_token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the 429 touched nothing");
        assert!(
            metric("provisio_rate_limited_total{limit=\"failures\"}") - limited_before
                >= (limited + 1) as f64
        );
        app.stop().await;
    }
);

both_stores!(
    wrong_keys_and_digest_passwords_are_limited,
    // Anonymous rows off, so that only failed guesses can trip a limit here.
    |s: &mut provisio::config::Settings| s.rate_limit.anonymous_per_minute = 0,
    |app: TestApp| async move {
        let space = app.space(HOST, |_| {}).await;
        let kim = app.account(&space, "kim", "right-password").await;
        let key = user_key(&app, &kim, None).await;

        // Wrong API keys from one address.
        let from_keys = client_from([127, 0, 0, 4]);
        let mut statuses = Vec::new();
        for _ in 0..40 {
            let r = from_keys
                .get(format!("{}/api/accounts/me", app.base))
                .header("host", HOST)
                .header("x-api-key", new_token())
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        let first_429 = statuses.iter().position(|s| *s == 429).expect("a 429");
        assert!((30..=31).contains(&first_429), "{statuses:?}");
        assert!(statuses[..first_429].iter().all(|s| *s == 401));
        assert!(statuses[first_429..].iter().all(|s| *s == 429));
        // Blocked even with the right key; the key works from elsewhere.
        let right = |client: &reqwest::Client| {
            client
                .get(format!("{}/api/accounts/me", app.base))
                .header("host", HOST)
                .header("x-api-key", &key)
        };
        assert_eq!(right(&from_keys).send().await.unwrap().status(), 429);
        assert_eq!(
            right(&client_from([127, 0, 0, 5]))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        // Wrong Digest passwords from another address: each wrong answer is a counted 401.
        let from_digest = client_from([127, 0, 0, 6]);
        let me = "/provisioning/me";
        let ask = |auth: Option<String>| {
            let mut r = from_digest
                .get(format!("{}{me}", app.base))
                .header("host", HOST)
                .header("x-linphone-provisioning", "1")
                .header("from", "sip:kim@sip.example.com");
            if let Some(auth) = auth {
                r = r.header("authorization", auth);
            }
            r
        };
        let wrong = ha1(Algorithm::Sha256, "kim", HOST, "wrong-password");
        let mut r = ask(None).send().await.unwrap();
        let mut rounds = 0;
        while r.status() == 401 {
            rounds += 1;
            assert!(rounds <= 32, "no limit after {rounds} wrong passwords");
            let cs = challenges(&r);
            let auth = Answer {
                challenge: &cs[0],
                user: "kim",
                ha1: &wrong,
                alg: Algorithm::Sha256,
                method: "GET",
                uri: me,
                nc: Some(1),
            }
            .header();
            r = ask(Some(auth)).send().await.unwrap();
        }
        assert_eq!(r.status(), 429);
        retry_after(&r);
        assert!(
            rounds >= 30,
            "30 wrong passwords are answered, then 429: {rounds}"
        );

        // The right password from a third address is not slowed.
        let good = ha1(Algorithm::Sha256, "kim", HOST, "right-password");
        let other = client_from([127, 0, 0, 7]);
        let ask_other = |auth: Option<String>| {
            let mut r = other
                .get(format!("{}{me}", app.base))
                .header("host", HOST)
                .header("x-linphone-provisioning", "1")
                .header("from", "sip:kim@sip.example.com");
            if let Some(auth) = auth {
                r = r.header("authorization", auth);
            }
            r
        };
        let r = ask_other(None).send().await.unwrap();
        let cs = challenges(&r);
        let auth = Answer {
            challenge: &cs[0],
            user: "kim",
            ha1: &good,
            alg: Algorithm::Sha256,
            method: "GET",
            uri: me,
            nc: Some(1),
        }
        .header();
        assert_eq!(ask_other(Some(auth)).send().await.unwrap().status(), 200);
        app.stop().await;
    }
);

both_stores!(
    anonymous_rows_are_limited_before_they_are_written,
    |_: &mut provisio::config::Settings| {},
    |app: TestApp| async move {
        metrics();
        let before = metric("provisio_rate_limited_total{limit=\"anonymous\"}");
        let space = app.space(HOST, |_| {}).await;
        app.account(&space, "lee", "lee-password").await;

        // Auth tokens from one address: 30 created, then 429.
        let mut statuses = Vec::new();
        let from = client_from([127, 0, 0, 8]);
        for _ in 0..40 {
            let r = from
                .post(format!("{}/api/accounts/auth_token", app.base))
                .header("host", HOST)
                .send()
                .await
                .unwrap();
            if r.status() == 429 {
                retry_after(&r);
            }
            statuses.push(r.status().as_u16());
        }
        assert_eq!(statuses[..30], [201; 30]);
        assert_eq!(statuses[30..], [429; 10]);
        let r = client_from([127, 0, 0, 9])
            .post(format!("{}/api/accounts/auth_token", app.base))
            .header("host", HOST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "another address is not limited");

        // Digest challenges (each one stores a nonce), for a real and an unknown account
        // alike, so the 429 reveals nothing about who exists.
        for (ip, from) in [
            ([127, 0, 0, 10], "sip:lee@sip.example.com"),
            ([127, 0, 0, 11], "sip:nobody@sip.example.com"),
        ] {
            let client = client_from(ip);
            let mut statuses = Vec::new();
            for _ in 0..35 {
                let r = client
                    .get(format!("{}/provisioning/me", app.base))
                    .header("host", HOST)
                    .header("x-linphone-provisioning", "1")
                    .header("from", from)
                    .send()
                    .await
                    .unwrap();
                let challenged = r.headers().contains_key("www-authenticate");
                statuses.push((r.status().as_u16(), challenged));
            }
            assert_eq!(statuses[..30], [(401, true); 30], "{from}");
            assert_eq!(statuses[30..], [(429, false); 5], "{from}");
        }
        assert!(metric("provisio_rate_limited_total{limit=\"anonymous\"}") - before >= 20.0);
        app.stop().await;
    }
);

both_stores!(
    trusted_proxy_forwards_the_client_address,
    |s: &mut provisio::config::Settings| s.trusted_proxies = vec!["127.0.0.12/32".into()],
    |app: TestApp| async move {
        let proxy = client_from([127, 0, 0, 12]);
        let stranger = client_from([127, 0, 0, 13]);
        let space = app.space(HOST, |_| {}).await;
        let ada = app.account(&space, "ada", "ada-password").await;
        let key = user_key(&app, &ada, Some("203.0.113.7")).await;
        let me = |client: &reqwest::Client| {
            client
                .get(format!("{}/api/accounts/me", app.base))
                .header("host", HOST)
                .header("x-api-key", &key)
        };
        // Through the trusted proxy, for 203.0.113.7 (the left entry is the client's forgery).
        let r = me(&proxy)
            .header("x-forwarded-for", "198.51.100.1, 203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = me(&proxy)
            .header("forwarded", "for=\"203.0.113.7:5060\";proto=https")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "Forwarded works too");
        // The same header from an untrusted peer is ignored; another client of the proxy too.
        let r = me(&stranger)
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = me(&proxy)
            .header("x-forwarded-for", "203.0.113.8")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // Rows record the forwarded address.
        let r = proxy
            .post(format!("{}/api/accounts/auth_token", app.base))
            .header("host", HOST)
            .header("x-forwarded-for", "203.0.113.50")
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["ip"], "203.0.113.50");

        // Links follow X-Forwarded-Proto/-Host from the proxy only.
        let token = app.token(&ada).await;
        let qr = |client: &reqwest::Client| {
            client
                .get(format!("{}/provisioning/qrcode/{token}", app.base))
                .header("host", HOST)
                .header("x-linphone-provisioning", "1")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "prov.example.org")
        };
        let url = |r: &reqwest::Response| r.headers()["x-qrcode-url"].to_str().unwrap().to_string();
        let r = qr(&proxy).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            url(&r),
            format!("https://prov.example.org/provisioning/{token}")
        );
        let r = qr(&stranger).send().await.unwrap();
        assert_eq!(url(&r), format!("http://{HOST}/provisioning/{token}"));

        // Limits count the forwarded client, not the proxy: one client behind the proxy is
        // blocked, another is not.
        let guess = |ip: &'static str| {
            proxy
                .get(format!("{}/provisioning/{}", app.base, new_token()))
                .header("host", HOST)
                .header("x-linphone-provisioning", "1")
                .header("x-forwarded-for", ip)
        };
        for _ in 0..31 {
            assert_eq!(guess("203.0.113.66").send().await.unwrap().status(), 404);
        }
        assert_eq!(guess("203.0.113.66").send().await.unwrap().status(), 429);
        assert_eq!(guess("203.0.113.67").send().await.unwrap().status(), 404);
        app.stop().await;
    }
);

/// Runs the real binary with `args` in `dir`.
fn provisio(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_provisio"));
    cmd.current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .env("PROVISIO_LOG", "warn")
        .args(["--data-dir", "data", "--hooks-dir", "hooks"]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reads_the_env_proxy_list_and_checks_the_fd_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    let out = provisio(dir.path())
        .args(["space", "add", HOST])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // PROVISIO_TRUSTED_PROXIES as a comma-separated list.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = provisio(dir.path())
        .env("PROVISIO_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1/32")
        .env("PROVISIO_MAX_CONNECTIONS", "500")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = if up {
        let r = client
            .post(format!("{base}/api/accounts/auth_token"))
            .header("host", HOST)
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .unwrap();
        Some(r.json::<serde_json::Value>().await.unwrap())
    } else {
        None
    };
    server.kill().unwrap();
    server.wait().unwrap();
    let body = answer.expect("the server started");
    assert_eq!(body["ip"], "203.0.113.9", "127.0.0.1 was trusted: {body}");

    // A bad entry stops the start, naming the key and the entry.
    let out = provisio(dir.path())
        .env("PROVISIO_TRUSTED_PROXIES", "10.0.0.0/8,not-an-address")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("trusted_proxies") && stderr.contains("not-an-address"),
        "{stderr}"
    );

    // max_connections that cannot fit the descriptor limit refuses to start.
    let out = std::process::Command::new("sh")
        .current_dir(dir.path())
        .env_remove("PROVISIO_CONFIG")
        .env("PROVISIO_MAX_CONNECTIONS", "1000")
        .arg("-c")
        .arg("ulimit -n 200 && exec \"$0\" --data-dir data --hooks-dir hooks serve --listen 127.0.0.1:0")
        .arg(env!("CARGO_BIN_EXE_provisio"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("`max_connections`") && stderr.contains("file descriptors"),
        "{stderr}"
    );
}

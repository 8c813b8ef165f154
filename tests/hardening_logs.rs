//! No spelling of a URL that reaches a token route writes the token into the log, even at
//! TRACE: trailing slash, doubled slashes, percent-escapes, a query, HTTP/1.1 or HTTP/2. The
//! log names the route template that matched instead.

mod api_support;
mod common;

use api_support::*;
use common::server::{Backend, TestApp};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::Method;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// A `MakeWriter` that appends every log line to a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// One process-wide TRACE subscriber (with the server's own redacting caps).
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing_subscriber::fmt()
            .with_env_filter(provisio::app::log_filter("trace"))
            .with_ansi(false)
            .with_writer(capture.clone())
            .init();
        capture
    })
}

const HOST: &str = "sip.example.com";

/// Every character as a `%XX` escape.
fn encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The spellings of `{prefix}{token}{suffix}` a client might send.
fn spellings(prefix: &str, token: &str, suffix: &str) -> Vec<String> {
    let first = &token[..1];
    let rest = &token[1..];
    vec![
        format!("{prefix}{token}{suffix}/"),
        format!("{prefix}{token}{suffix}"),
        format!("/{prefix}{token}{suffix}"),
        format!("{prefix}/{token}{suffix}"),
        format!("{prefix}{token}{suffix}//"),
        format!("{prefix}{token}{suffix}?reset_password"),
        format!("{prefix}{token}{suffix}/?x={token}"),
        format!(
            "{prefix}{}{rest}{suffix}/",
            encode_all(first).to_lowercase()
        ),
        format!("{prefix}{}{suffix}", encode_all(token)),
        format!("{prefix}{token}%2F{suffix}"),
    ]
}

/// Fails with the offending lines when `secret` appears in the log.
fn assert_not_logged(logs: &str, what: &str, secret: &str) {
    let leak: Vec<&str> = logs.lines().filter(|l| l.contains(secret)).collect();
    assert!(leak.is_empty(), "the {what} reached the log: {leak:#?}");
}

/// Runs a body on both stores, with rate limits off (this test makes many failing requests
/// from one address on purpose).
macro_rules! both_stores_unlimited {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn unlimited(s: &mut provisio::config::Settings) {
                s.rate_limit.failures_per_minute = 0;
                s.rate_limit.anonymous_per_minute = 0;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app = TestApp::start_with(Backend::Sqlite, unlimited)
                    .await
                    .expect("sqlite always runs");
                ($body)(app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(app) = TestApp::start_with(Backend::Postgres, unlimited).await {
                    ($body)(app).await;
                }
            }
        }
    };
}

both_stores_unlimited!(
    token_routes_never_log_the_token,
    |app: TestApp| async move {
        let logs = capture();
        let space = app.space(HOST, |_| {}).await;
        let anna = app.account(&space, "anna", "anna-password").await;
        // A named key: redeeming an auth token for a user key replaces the account's user key.
        let key = admin_key(&app, &anna).await;
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let mut secrets = Vec::new();
        let mut served_with_slash = 0;

        // Provisioning tokens on the document, QR and wizard routes: a live token per spelling.
        for prefix in ["/provisioning/", "/provisioning/qrcode/", "/wizard/"] {
            for spelling in 0..10 {
                let token = app.token(&anna).await;
                let path = spellings(prefix, &token, "").swap_remove(spelling);
                for client in [&app.client, &h2] {
                    let r = client
                        .get(format!("{}{path}", app.base))
                        .header("host", HOST)
                        .header("x-linphone-provisioning", "1")
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().as_u16() < 500, "{} for {path}", r.status());
                    if spelling == 0 && r.status() == 200 {
                        served_with_slash += 1;
                    }
                }
                secrets.push((encode_all(&token), "percent-encoded token"));
                secrets.push((token, "provisioning token"));
            }
        }
        assert!(
            served_with_slash >= 3,
            "a trailing slash reaches each token route"
        );

        // Auth tokens: attached, then redeemed as a document or a key; or attached in every
        // spelling.
        for (prefix, suffix, attaching) in [
            ("/api/accounts/auth_token/", "/attach", true),
            ("/provisioning/auth_token/", "", false),
            ("/api/accounts/me/api_key/", "", false),
        ] {
            for spelling in 0..10 {
                let (status, body) = status_json(call(
                    &app,
                    Method::POST,
                    HOST,
                    "/api/accounts/auth_token",
                    None,
                ))
                .await;
                assert_eq!(status, 201);
                let token = body["token"].as_str().unwrap().to_string();
                if !attaching {
                    let attach = format!("/api/accounts/auth_token/{token}/attach");
                    let r = app
                        .get(HOST, &attach)
                        .header("x-api-key", &key)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
                let path = spellings(prefix, &token, suffix).swap_remove(spelling);
                let mut r = app.get(HOST, &path).header("x-linphone-provisioning", "1");
                if attaching {
                    r = r.header("x-api-key", &key);
                }
                let status = r.send().await.unwrap().status();
                assert!(status.as_u16() < 500, "{status} for {path}");
                secrets.push((encode_all(&token), "percent-encoded auth token"));
                secrets.push((token, "auth token"));
            }
        }

        let text = logs.text();
        for (secret, what) in &secrets {
            assert_not_logged(&text, what, secret);
        }
        for route in [
            "route=/provisioning/{token}",
            "route=/provisioning/qrcode/{token}",
            "route=/wizard/{token}",
            "route=/provisioning/auth_token/{token}",
            "route=/api/accounts/auth_token/{auth_token}/attach",
            "route=/api/accounts/me/api_key/{auth_token}",
        ] {
            assert!(
                text.contains(route),
                "requests are logged by route: {route}\n{}",
                text.lines()
                    .filter(|l| l.contains("request"))
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        app.stop().await;
    }
);

/// Token-shaped strings on every token route, in random spellings, over HTTP/1.1 and HTTP/2:
/// the server answers (never a 5xx) and the string never reaches the log.
#[test]
fn token_paths_property() {
    let logs = capture();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt
        .block_on(TestApp::start_with(Backend::Sqlite, |s| {
            s.rate_limit.failures_per_minute = 0;
        }))
        .unwrap();
    rt.block_on(app.space(HOST, |_| {}));
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let routes = [
        ("/provisioning/", ""),
        ("/provisioning/qrcode/", ""),
        ("/provisioning/auth_token/", ""),
        ("/wizard/", ""),
        ("/api/accounts/auth_token/", "/attach"),
        ("/api/accounts/me/api_key/", ""),
    ];
    let strategy = (
        "[A-Za-z0-9_-]{24,48}",
        0..routes.len(),
        0..10usize,
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(token, route, spelling, http2)| {
            let (prefix, suffix) = routes[route];
            let path = spellings(prefix, &token, suffix).swap_remove(spelling);
            let client = if http2 { &h2 } else { &app.client };
            let status = rt.block_on(async {
                client
                    .get(format!("{}{path}", app.base))
                    .header("host", HOST)
                    .header("x-linphone-provisioning", "1")
                    .send()
                    .await
                    .unwrap()
                    .status()
            });
            prop_assert!(status.as_u16() < 500, "{} for {}", status, path);
            let text = logs.text();
            for secret in [token.clone(), encode_all(&token)] {
                prop_assert!(
                    !text.contains(&secret),
                    "{} reached the log: {:?}",
                    path,
                    text.lines()
                        .filter(|l| l.contains(&secret))
                        .collect::<Vec<_>>()
                );
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(app.stop());
}

//! The account API and Digest never log a secret, even at TRACE level: no nonce, opaque,
//! Digest response, HA1, password, API key or token — only their fingerprints.

mod api_support;
mod common;

use api_support::*;
use common::server::TestApp;
use provisio::model::Algorithm;
use provisio::secret::fingerprint;
use reqwest::Method;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// A `MakeWriter` that appends every log line to a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

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

/// One process-wide TRACE subscriber writing into a buffer (both backends' tests share it;
/// each checks its own secrets).
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

both_backends!(api_secrets_never_logged, |app: TestApp| async move {
    let logs = capture();
    let space = app.space(HOST, |_| {}).await;
    let (_, admin_key) = admin(&app, &space, "root").await;

    // An account created over the API: its password and first token.
    let (status, body) = status_json(
        call(&app, Method::POST, HOST, "/api/accounts", Some(&admin_key))
            .json(&json!({"username": "kim", "password": "very-secret-pw"})),
    )
    .await;
    assert_eq!(status, 200);
    let token = body["provisioning_token"].as_str().unwrap().to_string();
    let ha1_value = ha1(Algorithm::Sha256, "kim", HOST, "very-secret-pw");

    // A Digest exchange: challenge, success, replay.
    let me = "/api/accounts/me/api_key";
    let from = "sip:kim@sip.example.com";
    let r = app.get(HOST, me).header("from", from).send().await.unwrap();
    let cs = challenges(&r);
    let auth = Answer {
        challenge: &cs[0],
        user: "kim",
        ha1: &ha1_value,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: me,
        nc: Some(1),
    }
    .header();
    let response = auth
        .split("response=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = app
        .get(HOST, me)
        .header("from", from)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let user_key = r.text().await.unwrap();
    let r = app
        .get(HOST, me)
        .header("from", from)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // An auth token minted, attached and redeemed for a key.
    let (_, body) = status_json(call(
        &app,
        Method::POST,
        HOST,
        "/api/accounts/auth_token",
        None,
    ))
    .await;
    let auth_token = body["token"].as_str().unwrap().to_string();
    let path = format!("/api/accounts/auth_token/{auth_token}/attach");
    assert_eq!(
        app.get(HOST, &path)
            .header("x-api-key", &user_key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, body) =
        status_json(app.get(HOST, &format!("/api/accounts/me/api_key/{auth_token}"))).await;
    assert_eq!(status, 200);
    let redeemed_key = body["api_key"].as_str().unwrap().to_string();
    // A refused key.
    let r = app
        .get(HOST, "/api/accounts/me")
        .header("x-api-key", "not-a-real-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for (what, secret) in [
        ("nonce", cs[0].get("nonce")),
        ("opaque", cs[0].get("opaque")),
        ("Digest response", response.as_str()),
        ("HA1", ha1_value.as_str()),
        ("password", "very-secret-pw"),
        ("admin key", admin_key.as_str()),
        ("user key", user_key.as_str()),
        ("redeemed key", redeemed_key.as_str()),
        ("refused key", "not-a-real-key-0123456789"),
        ("auth token", auth_token.as_str()),
        ("provisioning token", token.as_str()),
    ] {
        let leak: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leak.is_empty(),
            "the {what} reached the logs: {leak:#?}\n(tokio_postgres logs statement parameters at \
             DEBUG: provisio::app::REDACTING_TARGETS must cap it, e.g. `tokio_postgres=info`)"
        );
    }
    assert!(
        text.contains(&fingerprint(cs[0].get("opaque"))),
        "challenges are logged by fingerprint"
    );
    assert!(
        text.contains(&fingerprint(&user_key)),
        "keys are logged by fingerprint"
    );
    assert!(
        text.contains(&fingerprint(&auth_token)),
        "auth tokens are logged by fingerprint"
    );
});

//! Tokens, keys, passwords and HA1 values never reach the logs, even at TRACE level; their
//! fingerprints do, so an operator can still correlate a 404 with a token.

mod common;

use common::server::{Backend, TestApp};
use provisio::secret::{fingerprint, hash_secret, new_token};
use std::io::Write;
use std::sync::{Arc, Mutex};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_logged() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_env_filter(provisio::app::log_filter("trace"))
        .with_ansi(false)
        .with_writer(capture.clone())
        .init();

    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    let space = app.space("sip.example.com", |_| {}).await;
    let account = app.account(&space, "anna", "very-secret-pw").await;
    let ha1 = app.state.store.passwords(account.id).await.unwrap()[0]
        .ha1
        .clone();
    let token = app.token(&account).await;
    let wrong = new_token();

    for path in [
        format!("/provisioning/qrcode/{token}"),
        format!("/wizard/{token}"),
        format!("/provisioning/{token}"),
        format!("/provisioning/{token}?reset_password"),
        format!("/provisioning/{wrong}"),
        format!("/provisioning/auth_token/{wrong}"),
    ] {
        app.provision("sip.example.com", &path)
            .send()
            .await
            .unwrap();
    }
    app.provision("sip.example.com", "/provisioning/me")
        .header("x-api-key", wrong.as_str())
        .send()
        .await
        .unwrap();
    let new_ha1 = app.state.store.passwords(account.id).await.unwrap()[0]
        .ha1
        .clone();
    app.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("/provisioning/{token}"),
        "requests are logged, redacted:\n{logs}"
    );
    assert!(
        logs.contains(&fingerprint(&wrong)),
        "refusals name the token's fingerprint"
    );
    for (what, secret) in [
        ("token", token.as_str()),
        ("unknown token", wrong.as_str()),
        ("password", "very-secret-pw"),
        ("ha1", ha1.as_str()),
        ("reset ha1", new_ha1.as_str()),
    ] {
        if let Some(at) = logs.find(secret) {
            let line = logs[..at].rsplit('\n').next().unwrap_or("");
            panic!("the {what} reached the logs, in a line starting: {line:?}");
        }
    }
    assert!(
        !logs.contains(&hex::encode(hash_secret(&token))),
        "not even the stored hash"
    );
}

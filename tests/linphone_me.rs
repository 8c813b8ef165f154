//! A real Linphone client (Debian's linphonec, liblinphone 5.1) on `/provisioning/me`: it is
//! provisioned once through `/provisioning/{token}`, then started again with `config-uri`
//! pointing at `/provisioning/me`, where it must answer the server's Digest challenge with the
//! HA1 it was given (liblinphone answers with the `[auth_info_N]` whose username, realm and
//! algorithm match the challenge) and apply the new document — for a SHA-256 and an MD5
//! space. Skipped with a message when linphonec is missing, unless CI is set.

mod common;

use common::server::TestApp;
use provisio::model::{Algorithm, HeaderMode};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The repository's real-client harness.
fn script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/linphone-check.sh"
    ))
}

/// True when the real-client test can run; panics in CI when it cannot.
fn tools_available() -> bool {
    let linphonec = Command::new("sh")
        .args(["-c", "command -v linphonec"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut missing = Vec::new();
    if !linphonec {
        missing.push("linphonec (apt-get install linphone-cli)");
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the real-client test cannot run: missing {missing:?}");
    }
    eprintln!("SKIPPED real Linphone client test on /provisioning/me: missing {missing:?}");
    false
}

/// Runs the harness on `url` with an optional pre-loaded rc; returns (exit code, rc, stderr).
async fn provision_check(url: String, pre_rc: Option<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let pre = pre_rc.map(|rc| {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(rc.as_bytes()).unwrap();
            f
        });
        let mut cmd = Command::new("bash");
        cmd.arg(script()).args(["--timeout", "20"]);
        if let Some(f) = &pre {
            cmd.arg("--pre-rc").arg(f.path());
        }
        let out = cmd.arg(&url).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The space's custom entries: a default proxy so the client sends `From:` (liblinphone adds it
/// only when a default proxy with a `reg_proxy` exists), no REGISTER, and a marker key that differs between
/// fetches (a new key: entries without `overwrite="true"` do not replace local values).
fn entries(marker: &str) -> String {
    format!(
        "[sip]\ndefault_proxy=0\n\n[proxy_0]\nreg_proxy=<sip:127.0.0.1:5999;transport=udp>\nreg_sendregister=0\n\n\
         [custom_app]\n{marker}=1\n"
    )
}

both_backends!(
    real_client_reprovisions_with_digest,
    |app: TestApp| async move {
        if !tools_available() {
            return;
        }
        // Two spaces, told apart by the loopback name the client uses.
        for (host, domain, algorithm) in [
            ("127.0.0.1", "sha.example.test", Algorithm::Sha256),
            ("localhost", "md5.example.test", Algorithm::Md5),
        ] {
            let mut space = app
                .space(domain, |s| {
                    s.host = host.to_string();
                    s.password_algorithm = algorithm;
                    s.header_mode = HeaderMode::LinphoneUserAgent;
                    s.custom_entries = Some(entries("first"));
                })
                .await;
            let account = app.account(&space, "alice", "secret").await;
            let token = app.token(&account).await;
            let port = app.base.rsplit(':').next().unwrap().to_string();

            // 1. First provisioning, by token.
            let (code, rc, err) =
                provision_check(format!("http://{host}:{port}/provisioning/{token}"), None).await;
            assert_eq!(
                code, 0,
                "{algorithm}: first provisioning failed:\n{err}\n{rc}"
            );
            let ha1 = app.state.store.passwords(account.id).await.unwrap()[0]
                .ha1
                .clone();
            assert!(rc.lines().any(|l| l == format!("ha1={ha1}")), "{rc}");
            assert!(rc.lines().any(|l| l == "first=1"), "{rc}");

            // 2. The operator changes the space; the client fetches /provisioning/me with the rc it
            //    now has (config-uri stripped: the harness sets its own).
            space.custom_entries = Some(entries("second"));
            app.state.store.update_space(&space).await.unwrap();
            app.spaces_written().await;
            let pre: String = rc
                .lines()
                .filter(|l| !l.starts_with("config-uri="))
                .map(|l| format!("{l}\n"))
                .collect();
            let (code, rc2, err) =
                provision_check(format!("http://{host}:{port}/provisioning/me"), Some(pre)).await;
            assert_eq!(
                code, 0,
                "{algorithm}: /provisioning/me failed:\n{err}\n{rc2}"
            );
            assert!(
                err.contains("PROVISIONING=Successful http_status=200"),
                "{err}"
            );
            assert!(
                err.contains(&format!("From: sip:alice@{domain}")),
                "the client named itself:\n{err}"
            );
            assert!(
                rc2.lines().any(|l| l == "second=1"),
                "the new document was applied:\n{rc2}"
            );

            // 3. A client holding a wrong HA1 is refused and keeps its configuration.
            let wrong = rc
                .lines()
                .filter(|l| !l.starts_with("config-uri="))
                .map(|l| {
                    if l.starts_with("ha1=") {
                        "ha1=00000000000000000000000000000000".to_string()
                    } else {
                        l.to_string()
                    }
                })
                .map(|l| format!("{l}\n"))
                .collect();
            let (code, rc3, err) =
                provision_check(format!("http://{host}:{port}/provisioning/me"), Some(wrong)).await;
            assert_eq!(
                code, 1,
                "{algorithm}: a wrong HA1 must not be served:\n{err}"
            );
            assert!(
                !rc3.contains("second=1") && rc3.contains("first=1"),
                "{rc3}"
            );
        }
    }
);

//! A real Linphone client (Debian's linphonec, liblinphone 5.1) provisions itself from the
//! running server, then REGISTERs with the provisioned credentials on a real registrar
//! (Kamailio on loopback) — once for an MD5 space, once for a SHA-256 space — and a wrong
//! password fails; and, over native TLS, the client provisions from `https://localhost` with
//! the test CA as its `root_ca`. Skipped with a message when the tools are missing, unless CI
//! is set.

mod common;

use common::server::{Backend, TestApp, independent_ha1};
use provisio::model::{Algorithm, HeaderMode};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The repository's real-client harness.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/linphone-check.sh")
}

/// Whether a program is on PATH (or at an absolute path).
fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when the real-client tests can run; panics in CI when they cannot.
fn tools_available(needs_kamailio: bool) -> bool {
    let mut missing = Vec::new();
    if !have("linphonec") {
        missing.push("linphonec (apt-get install linphone-cli)");
    }
    if needs_kamailio && !have("kamailio") {
        missing.push("kamailio (apt-get install kamailio)");
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the real-client test cannot run: missing {missing:?}");
    }
    eprintln!("SKIPPED real Linphone client test: missing {missing:?}");
    false
}

/// Runs the harness (tools/linphone-check.sh); returns (exit code, applied rc, stderr).
fn provision_check(url: &str, register: bool) -> (i32, String, String) {
    provision_check_with(url, register, &[])
}

/// [`provision_check`] with more options for the harness (`--root-ca FILE`).
fn provision_check_with(url: &str, register: bool, options: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(["--timeout", "20"]).args(options);
    if register {
        cmd.arg("--register");
    }
    let out = cmd.arg(url).output().expect("run tools/linphone-check.sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

both_backends!(real_client_applies_document, |app: TestApp| async move {
    if !tools_available(false) {
        return;
    }
    let space = app
        .space("client.example.test", |s| {
            s.header_mode = HeaderMode::LinphoneUserAgent;
            s.custom_entries = Some("[custom_app]\ngreeting=hello from provisio\n".into());
        })
        .await;
    let account = app.account(&space, "alice", "secret").await;
    let token = app.token(&account).await;
    // Host 127.0.0.1 is not a space host: with one space, it is the one that answers.
    let url = format!("{}/provisioning/{token}", app.base);
    let (code, rc, err) = tokio::task::spawn_blocking(move || provision_check(&url, false))
        .await
        .unwrap();
    assert_eq!(code, 0, "provisioning failed:\n{err}\n{rc}");
    let ha1 = independent_ha1(Algorithm::Sha256, "alice", "client.example.test", "secret");
    for line in [
        "[proxy_0]".to_string(),
        "reg_identity=<sip:alice@client.example.test>".to_string(),
        "[auth_info_0]".to_string(),
        "username=alice".to_string(),
        format!("ha1={ha1}"),
        "algorithm=SHA-256".to_string(),
        "greeting=hello from provisio".to_string(),
    ] {
        assert!(
            rc.lines().any(|l| l == line),
            "missing {line:?} in applied rc:\n{rc}"
        );
    }
    // The token was consumed: a second client gets an http error and applies nothing.
    let url = format!("{}/provisioning/{token}", app.base);
    let (code, _, _) = tokio::task::spawn_blocking(move || provision_check(&url, false))
        .await
        .unwrap();
    assert_eq!(code, 1);
});

/// Over native TLS: liblinphone (mbedTLS) verifies the server against `[sip] root_ca` and
/// checks the host name against DNS names only (it ignores IP SANs), hence
/// `https://localhost`. Without the CA it refuses the server and applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_provisions_over_https() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    if !tools_available(false) {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "provisio test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let mut server =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_key = KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let server_pem = server.signed_by(&server_key, &issuer).unwrap().pem();
    let ca_file = pki.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    std::fs::write(pki.path().join("server.pem"), &server_pem).unwrap();
    std::fs::write(pki.path().join("server.key"), server_key.serialize_pem()).unwrap();
    let dir = pki.path().to_path_buf();
    let app = TestApp::start_with(Backend::Sqlite, move |s| {
        s.tls.cert_file = dir.join("server.pem");
        s.tls.key_file = dir.join("server.key");
    })
    .await
    .unwrap();
    let space = app
        .space("tls.example.test", |s| {
            s.header_mode = HeaderMode::LinphoneUserAgent;
        })
        .await;
    let account = app.account(&space, "alice", "secret").await;
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let ca = ca_file.to_str().unwrap().to_string();

    // Not trusted: the handshake fails, the token stays unused.
    let token = app.token(&account).await;
    let url = format!("https://localhost:{port}/provisioning/{token}");
    let (code, _, err) =
        tokio::task::spawn_blocking(move || provision_check_with(&url, false, &[]))
            .await
            .unwrap();
    assert_eq!(code, 1, "an untrusted server must not provision:\n{err}");

    let url = format!("https://localhost:{port}/provisioning/{token}");
    let (code, rc, err) =
        tokio::task::spawn_blocking(move || provision_check_with(&url, false, &["--root-ca", &ca]))
            .await
            .unwrap();
    assert_eq!(code, 0, "provisioning over https failed:\n{err}\n{rc}");
    let ha1 = independent_ha1(Algorithm::Sha256, "alice", "tls.example.test", "secret");
    for line in [
        "reg_identity=<sip:alice@tls.example.test>".to_string(),
        "username=alice".to_string(),
        format!("ha1={ha1}"),
    ] {
        assert!(
            rc.lines().any(|l| l == line),
            "missing {line:?} in applied rc:\n{rc}"
        );
    }
    app.stop().await;
}

/// A Kamailio registrar on a loopback UDP port that accepts one HA1 (`pv_www_authenticate`
/// with flag 1: the password argument is an HA1).
struct Kamailio {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    fn start(realm: &str, ha1: &str, algorithm: Algorithm) -> Kamailio {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let modules = [
            "/usr/lib/x86_64-linux-gnu/kamailio/modules/",
            "/usr/lib/kamailio/modules/",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("kamailio modules directory");
        let cfg = format!(
            r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
disable_tcp=yes
listen=udp:127.0.0.1:{port}
mpath="{modules}"
loadmodule "kex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "auth.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("auth", "algorithm", "{algorithm}")
modparam("usrloc", "db_mode", 0)
request_route {{
  if (is_method("REGISTER")) {{
    if (!pv_www_authenticate("{realm}", "{ha1}", "1")) {{
      xlog("L_NOTICE", "REGTEST AUTH-FAIL user=$au\n");
      www_challenge("{realm}", "0");
      exit;
    }}
    xlog("L_NOTICE", "REGTEST AUTH-OK user=$au\n");
    consume_credentials();
    if (!save("location")) {{ sl_reply_error(); }}
    exit;
  }}
  sl_send_reply("405", "Method Not Allowed");
}}
"#,
            algorithm = algorithm.as_str()
        );
        let cfg_path = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let check = Command::new("kamailio")
            .arg("-c")
            .arg("-f")
            .arg(&cfg_path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "kamailio config check: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
        let child = Command::new("kamailio")
            .args([
                "-f",
                cfg_path.to_str().unwrap(),
                "-DD",
                "-E",
                "-m",
                "64",
                "-M",
                "8",
                "-Y",
            ])
            .arg(&run)
            .arg("-P")
            .arg(run.join("kamailio.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kamailio");
        // Wait until it listens: a UDP port already bound by it refuses our bind.
        for _ in 0..100 {
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Kamailio {
            child,
            port,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Provisions a client whose credentials Kamailio knows (or not) and checks REGISTER.
async fn register_case(algorithm: Algorithm, domain: &str) {
    if !tools_available(true) {
        return;
    }
    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    let registrar_ha1 = independent_ha1(algorithm, "alice", domain, "secret");
    let kamailio = Kamailio::start(domain, &registrar_ha1, algorithm);
    let port = kamailio.port;
    let space = app
        .space(domain, |s| {
            s.password_algorithm = algorithm;
            s.header_mode = HeaderMode::LinphoneUserAgent;
            s.custom_entries = Some(format!(
                "[proxy_0]\nreg_proxy=<sip:127.0.0.1:{port};transport=udp>\n\
                 reg_route=<sip:127.0.0.1:{port};transport=udp;lr>\nreg_expires=600\nreg_sendregister=1\n"
            ));
        })
        .await;
    let alice = app.account(&space, "alice", "secret").await;
    let token = app.token(&alice).await;
    let url = format!("{}/provisioning/{token}", app.base);
    let (code, rc, err) = tokio::task::spawn_blocking(move || provision_check(&url, true))
        .await
        .unwrap();
    assert_eq!(
        code,
        0,
        "{algorithm}: REGISTER with provisioned credentials failed:\n{err}\n{rc}\nkamailio:\n{}",
        kamailio.log()
    );
    assert!(rc.contains(&format!("ha1={registrar_ha1}")), "{rc}");
    assert!(err.contains("REGISTRATION=Ok"), "{err}");

    // The same registrar refuses another password.
    let mallory = app.account(&space, "mallory", "wrong-password").await;
    let token = app.token(&mallory).await;
    let url = format!("{}/provisioning/{token}", app.base);
    let (code, rc, err) = tokio::task::spawn_blocking(move || provision_check(&url, true))
        .await
        .unwrap();
    assert_eq!(
        code, 4,
        "{algorithm}: a wrong password must not register:\n{err}\n{rc}"
    );
    assert!(kamailio.log().contains("REGTEST AUTH-OK"));
    assert!(kamailio.log().contains("REGTEST AUTH-FAIL"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_register_md5() {
    register_case(Algorithm::Md5, "md5.example.test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_register_sha256() {
    register_case(Algorithm::Sha256, "sha.example.test").await;
}

//! Native TLS against the real server: certificates made here by test CAs (`rcgen`), curl and a
//! rustls client on 127.0.0.1. HTTPS with ALPN h2; client certificates verified against
//! `tls.client_ca_file` and seen by hooks (`request.client_certificate_subject`), one from
//! another CA refused at the handshake; links built as `https://`; a certificate reloaded when
//! its files change and, in the real binary, on SIGHUP, with an open keep-alive connection
//! still served; a bad reload keeping the old certificate (reported once); a bad file refused
//! at start-up; `provisio healthcheck` over TLS; the forwarded subject header believed only
//! from a trusted proxy. (A real Linphone client over HTTPS is in tests/linphone.rs.)

mod common;

use common::server::{Backend, TestApp};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_provisio");

/// Upper bound on every wait for something the server does in the background (a reload, a
/// start); reached only when the thing never happens.
const PATIENCE: Duration = Duration::from_secs(20);

/// A test CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    params: CertificateParams,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { pem, params, key }
}

/// A certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Leaf {
    /// The certificate's DER, to compare with what a connection presented.
    fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert.as_bytes())
            .unwrap()
            .to_vec()
    }
}

/// A server certificate for `localhost` and 127.0.0.1, signed by `ca`, named `cn`.
fn server_cert(ca: &Ca, cn: &str) -> Leaf {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    sign(ca, params)
}

/// A client certificate with subject `CN=cn` and, optionally, a SAN URI.
fn client_cert(ca: &Ca, cn: &str, uri: Option<&str>) -> Leaf {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(uri) = uri {
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    }
    sign(ca, params)
}

fn sign(ca: &Ca, params: CertificateParams) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Writes `text` to `dir/name`; returns the path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes a file by renaming a finished temporary file over it, as certificate tools do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A rustls client trusting `roots`, presenting `identity`, offering `alpn`.
fn client_config(
    roots: &[&str],
    identity: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut store = RootCertStore::empty();
    for pem in roots {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(store);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One HTTP/1.1 keep-alive connection over TLS: what the server presented, and a sender.
struct Conn {
    presented: Vec<u8>,
    sender: hyper::client::conn::http1::SendRequest<String>,
    _driver: tokio::task::JoinHandle<()>,
}

/// Connects to `addr` (TLS name `localhost`).
async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn {
        presented,
        sender,
        _driver: driver,
    })
}

impl Conn {
    /// A GET on this connection: status and body.
    async fn get(&mut self, path: &str) -> Result<(u16, String), hyper::Error> {
        self.sender.ready().await?;
        let request = http::Request::get(path)
            .header("host", "localhost")
            .header("x-linphone-provisioning", "1")
            .body(String::new())
            .unwrap();
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| {
            http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
        })
        .await
        {
            if let Ok(data) = frame?.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }
}

/// Connects again and again until the server presents `wanted` (a reload in the background),
/// within [`PATIENCE`]; returns whether it did.
async fn until_presented(addr: SocketAddr, roots: &[&str], wanted: &Leaf) -> bool {
    let wanted = wanted.der();
    let started = Instant::now();
    while started.elapsed() < PATIENCE {
        let config = client_config(roots, None, rustls::DEFAULT_VERSIONS);
        if let Ok(conn) = connect(addr, config).await
            && conn.presented == wanted
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs curl with `args`; returns its output.
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl (apt-get install curl)")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reveals what the server believed about the client certificate in the document: subject,
/// number of SAN URIs, and whether the forwarded header reached the script.
const REVEAL_HOOK: &str = r#"
fn on_config(config, request, account) {
    config.set("tls_test", "subject", request.client_certificate_subject ?? "none");
    config.set("tls_test", "uris", request.client_certificate_uris.len());
    let uris = request.client_certificate_uris;
    config.set("tls_test", "first_uri", if uris.is_empty() { "none" } else { uris[0] });
    config.set("tls_test", "header", request.headers["x-ssl-client-s-dn"] ?? "absent");
}
"#;

/// The value of `<entry name="NAME">` in a document.
fn entry(document: &str, name: &str) -> String {
    let doc = roxmltree::Document::parse(document).unwrap_or_else(|e| panic!("{e}: {document}"));
    doc.descendants()
        .find(|n| n.has_tag_name("entry") && n.attribute("name") == Some(name))
        .and_then(|n| n.text())
        .unwrap_or_default()
        .to_string()
}

/// The files of one server: CA, server certificate, client CA.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    server: Leaf,
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_file: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("provisio test CA");
    let server = server_cert(&ca, "first");
    let cert_file = write(dir.path(), "server.pem", &server.cert);
    let key_file = write(dir.path(), "server.key", &server.key);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    Pki {
        dir,
        ca,
        server,
        cert_file,
        key_file,
        ca_file,
    }
}

/// A server over TLS with client certificates verified against the test CA and the reveal
/// hook; `adjust` changes the settings further.
async fn tls_app(
    pki: &Pki,
    adjust: impl FnOnce(&mut provisio::config::Settings),
) -> (TestApp, provisio::model::Space) {
    let (cert, key, ca) = (
        pki.cert_file.clone(),
        pki.key_file.clone(),
        pki.ca_file.clone(),
    );
    let app = TestApp::start_with(Backend::Sqlite, move |s| {
        s.tls.cert_file = cert;
        s.tls.key_file = key;
        s.tls.client_ca_file = ca;
        s.keep_alive_seconds = 600;
        std::fs::write(s.hooks.dir.join("default.rhai"), REVEAL_HOOK).unwrap();
        adjust(s);
    })
    .await
    .unwrap();
    let space = app.space("tls.example.test", |_| {}).await;
    (app, space)
}

fn port(app: &TestApp) -> u16 {
    app.base.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_client_certificates() {
    let pki = pki();
    let (app, space) = tls_app(&pki, |s| s.header_read_timeout_seconds = 1).await;
    let port = port(&app);
    let https = format!("https://127.0.0.1:{port}");
    let ca = pki.ca_file.to_str().unwrap();

    // curl trusts the test CA, negotiates HTTP/2 by ALPN.
    let out = curl(&[
        "--cacert",
        ca,
        "--http2",
        "--write-out",
        " %{http_code} %{http_version}",
        &format!("{https}/healthz"),
    ]);
    let text = stdout(&out);
    assert!(text.ends_with(" 200 2"), "{text}");
    // Without the CA, curl refuses the server.
    assert!(!curl(&[&format!("{https}/healthz")]).status.success());
    // Plain HTTP on the TLS port gets nothing.
    assert!(
        !curl(&[&format!("http://127.0.0.1:{port}/healthz")])
            .status
            .success()
    );

    // A client that never finishes its handshake holds up no one, and is closed at the head
    // deadline (header_read_timeout_seconds, from accept).
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x16, 0x03, 0x01])
        .await
        .unwrap();
    let text = stdout(&curl(&["--cacert", ca, &format!("{https}/healthz")]));
    assert!(text.contains("ok"), "{text}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut stalled, &mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the stalled handshake was never closed");

    // No client certificate: served, and nothing is believed.
    let anonymous = format!("{https}/provisioning");
    let header = "X-Linphone-Provisioning: 1";
    let doc = stdout(&curl(&["--cacert", ca, "-H", header, &anonymous]));
    assert_eq!(entry(&doc, "subject"), "none", "{doc}");

    // A certificate from the configured CA: its subject and SAN URI reach the hooks.
    let alice = client_cert(
        &pki.ca,
        "sip:alice@tls.example.test",
        Some("sip:alice@tls.example.test"),
    );
    let alice_cert = write(pki.dir.path(), "alice.pem", &alice.cert);
    let alice_key = write(pki.dir.path(), "alice.key", &alice.key);
    let with_alice = |url: &str| {
        curl(&[
            "--cacert",
            ca,
            "--cert",
            alice_cert.to_str().unwrap(),
            "--key",
            alice_key.to_str().unwrap(),
            "-H",
            header,
            url,
        ])
    };
    let doc = stdout(&with_alice(&anonymous));
    assert_eq!(entry(&doc, "subject"), "CN=sip:alice@tls.example.test");
    assert_eq!(entry(&doc, "uris"), "1");
    assert_eq!(entry(&doc, "first_uri"), "sip:alice@tls.example.test");
    // HTTP/2 carries it too (one connection, one certificate, every stream).
    let doc = stdout(&curl(&[
        "--cacert",
        ca,
        "--http2",
        "--cert",
        alice_cert.to_str().unwrap(),
        "--key",
        alice_key.to_str().unwrap(),
        "-H",
        header,
        &anonymous,
    ]));
    assert_eq!(entry(&doc, "subject"), "CN=sip:alice@tls.example.test");

    // A certificate from another CA is refused by the handshake: curl gets no answer, and a
    // TLS 1.2 client (whose handshake ends with the server's Finished) fails to connect.
    let rogue_ca = self::ca("rogue CA");
    let mallory = client_cert(&rogue_ca, "sip:alice@tls.example.test", None);
    let mallory_cert = write(pki.dir.path(), "mallory.pem", &mallory.cert);
    let mallory_key = write(pki.dir.path(), "mallory.key", &mallory.key);
    let out = curl(&[
        "--cacert",
        ca,
        "--cert",
        mallory_cert.to_str().unwrap(),
        "--key",
        mallory_key.to_str().unwrap(),
        "-H",
        header,
        &anonymous,
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tls12 = client_config(&[&pki.ca.pem], Some(&mallory), &[&rustls::version::TLS12]);
    assert!(connect(addr, tls12).await.is_err());
    let tls12 = client_config(&[&pki.ca.pem], Some(&alice), &[&rustls::version::TLS12]);
    let mut conn = connect(addr, tls12)
        .await
        .expect("the CA's own certificate");
    let (status, doc) = conn.get("/provisioning").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(entry(&doc, "subject"), "CN=sip:alice@tls.example.test");

    // Links the server builds say https.
    let bob = app.account(&space, "bob", "secret").await;
    let token = app.token(&bob).await;
    let page = stdout(&curl(&["--cacert", ca, &format!("{https}/wizard/{token}")]));
    assert!(
        page.contains(&format!("https://127.0.0.1:{port}/provisioning/{token}")),
        "{page}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_reloaded_without_dropping_connections() {
    let pki = pki();
    let (app, _) = tls_app(&pki, |_| {}).await;
    let addr: SocketAddr = format!("127.0.0.1:{}", port(&app)).parse().unwrap();
    let roots = [pki.ca.pem.as_str()];

    let mut open = connect(addr, client_config(&roots, None, rustls::DEFAULT_VERSIONS))
        .await
        .unwrap();
    assert_eq!(open.presented, pki.server.der());
    assert_eq!(open.get("/healthz").await.unwrap().0, 200);

    // New files, written the way certificate tools do: the key first, then the chain.
    let second = server_cert(&pki.ca, "second");
    replace(&pki.key_file, &second.key);
    replace(&pki.cert_file, &second.cert);
    assert!(
        until_presented(addr, &roots, &second).await,
        "new connections never got the new certificate"
    );
    // The connection opened before the reload is still served, on its own session.
    let (status, body) = open.get("/healthz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let mut fresh = connect(addr, client_config(&roots, None, rustls::DEFAULT_VERSIONS))
        .await
        .unwrap();
    assert_eq!(fresh.presented, second.der());
    assert_eq!(fresh.get("/healthz").await.unwrap().0, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subject_header_is_believed_only_from_a_trusted_proxy() {
    const DN: &str = "CN=sip:alice@tls.example.test";
    for (trusted, expected_subject, expected_header) in
        [("127.0.0.1/32", DN, DN), ("192.0.2.1", "none", "absent")]
    {
        let app = TestApp::start_with(Backend::Sqlite, |s| {
            s.trusted_proxies = vec![trusted.to_string()];
            s.tls.client_subject_header = "x-ssl-client-s-dn".to_string();
            std::fs::write(s.hooks.dir.join("default.rhai"), REVEAL_HOOK).unwrap();
        })
        .await
        .unwrap();
        app.space("tls.example.test", |_| {}).await;
        let response = app
            .provision("tls.example.test", "/provisioning")
            .header("X-SSL-Client-S-DN", DN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let doc = response.text().await.unwrap();
        assert_eq!(entry(&doc, "subject"), expected_subject, "{trusted}: {doc}");
        assert_eq!(entry(&doc, "header"), expected_header, "{trusted}: {doc}");
        assert_eq!(entry(&doc, "uris"), "0");
        // A trusted proxy that forwards no subject: no certificate.
        let doc = app
            .provision("tls.example.test", "/provisioning")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(entry(&doc, "subject"), "none", "{doc}");
        app.stop().await;
    }
}

/// The real binary, in `dir`, with the TLS files set by environment variables.
fn provisio(dir: &Path, cert: &Path, key: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .env("PROVISIO_LOG", "info")
        .env("PROVISIO_TLS__CERT_FILE", cert)
        .env("PROVISIO_TLS__KEY_FILE", key)
        .env("PROVISIO_KEEP_ALIVE_SECONDS", "600")
        .args(["--data-dir", "data", "--hooks-dir", "hooks"]);
    cmd
}

/// A running `provisio serve`, killed on drop; its log goes to a file.
struct Served {
    child: std::process::Child,
    log: PathBuf,
}

impl Served {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the log holds `needle` at least `count` times.
    async fn logged(&self, needle: &str, count: usize) -> bool {
        let started = Instant::now();
        while started.elapsed() < PATIENCE {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_and_keeps_a_good_certificate() {
    let pki = pki();
    let dir = pki.dir.path();
    std::fs::create_dir_all(dir.join("hooks")).unwrap();
    // The files sit in a directory reached through a symbolic link, which a deployment swaps
    // to a new directory (no file in the watched directory changes: only SIGHUP sees it).
    let first_dir = dir.join("gen1");
    std::fs::create_dir_all(&first_dir).unwrap();
    write(&first_dir, "server.pem", &pki.server.cert);
    write(&first_dir, "server.key", &pki.server.key);
    std::os::unix::fs::symlink(&first_dir, dir.join("current")).unwrap();
    let cert = dir.join("current/server.pem");
    let key = dir.join("current/server.key");

    // A file that is not a certificate stops the start, naming the key and the file.
    let bad = write(dir, "bad.pem", "not a certificate\n");
    let out = provisio(dir, &bad, &key)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("tls.cert_file") && stderr.contains("bad.pem"),
        "{stderr}"
    );
    // So does a key that is not the certificate's.
    let other = server_cert(&pki.ca, "other");
    let other_key = write(dir, "other.key", &other.key);
    let out = provisio(dir, &cert, &other_key)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("other.key"), "{stderr}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = dir.join("serve.log");
    let served = Served {
        child: provisio(dir, &cert, &key)
            .env("PROVISIO_TLS__WATCH", "false")
            .args(["serve", "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    };
    let roots = [pki.ca.pem.as_str()];
    assert!(
        until_presented(addr, &roots, &pki.server).await,
        "the server did not start:\n{}",
        served.log()
    );
    let mut open = connect(addr, client_config(&roots, None, rustls::DEFAULT_VERSIONS))
        .await
        .unwrap();
    assert_eq!(open.get("/healthz").await.unwrap().0, 200);

    // The healthcheck speaks TLS to it, pinning the configured certificate.
    let out = provisio(dir, &cert, &key)
        .args([
            "healthcheck",
            "--url",
            &format!("https://127.0.0.1:{port}/readyz"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Swap the directory, then SIGHUP: new connections get the new certificate, the open one
    // goes on.
    let second = server_cert(&pki.ca, "second");
    let second_dir = dir.join("gen2");
    std::fs::create_dir_all(&second_dir).unwrap();
    write(&second_dir, "server.pem", &second.cert);
    write(&second_dir, "server.key", &second.key);
    std::os::unix::fs::symlink(&second_dir, dir.join("next")).unwrap();
    std::fs::rename(dir.join("next"), dir.join("current")).unwrap();
    served.hangup();
    assert!(
        served.logged("SIGHUP: TLS files read", 1).await,
        "{}",
        served.log()
    );
    let mut fresh = connect(addr, client_config(&roots, None, rustls::DEFAULT_VERSIONS))
        .await
        .unwrap();
    assert_eq!(fresh.presented, second.der(), "{}", served.log());
    assert_eq!(open.get("/healthz").await.unwrap().0, 200);
    assert_eq!(fresh.get("/healthz").await.unwrap().0, 200);

    // A bad file: the reload fails, is reported once, and the good certificate stays.
    std::fs::write(
        second_dir.join("server.pem"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    served.hangup();
    assert!(served.logged("SIGHUP: TLS files read", 2).await);
    served.hangup();
    assert!(served.logged("SIGHUP: TLS files read", 3).await);
    let log = served.log();
    assert_eq!(log.matches("TLS reload failed").count(), 1, "{log}");
    assert!(log.contains("tls.cert_file"), "{log}");
    let mut after = connect(addr, client_config(&roots, None, rustls::DEFAULT_VERSIONS))
        .await
        .unwrap();
    assert_eq!(after.presented, second.der());
    assert_eq!(after.get("/healthz").await.unwrap().0, 200);
    assert_eq!(open.get("/healthz").await.unwrap().0, 200);
    assert!(!log.contains("BEGIN"), "no PEM in the log: {log}");
}

/// The whole path of FlexiAPI's certificate login over native TLS: a certificate
/// `CN=sip:alice@example.com` verified by the server provisions Alice on `/provisioning/me`
/// (her HA1 in the document); a certificate for an account of another space, or for no
/// account, is a 403 with FlexiAPI's message; a space that does not allow certificates
/// refuses one (FlexiAPI-440, 403), and a request without one is left to the other methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_provisions_its_own_account() {
    let pki = pki();
    let (app, _) = tls_app(&pki, |_| {}).await;
    let https = format!("https://127.0.0.1:{}", port(&app));
    let ca = pki.ca_file.to_str().unwrap();
    let example = app
        .space("example.com", |s| {
            s.client_certificate_authentication = true
        })
        .await;
    let other = app
        .space("other.example", |s| {
            s.client_certificate_authentication = true
        })
        .await;
    let closed = app.space("closed.example", |_| {}).await;
    let alice = app.account(&example, "alice", "alice-secret").await;
    app.account(&other, "olga", "olga-secret").await;
    app.account(&closed, "carl", "carl-secret").await;
    let stored_ha1 = app
        .state
        .store
        .passwords(alice.id)
        .await
        .unwrap()
        .remove(0)
        .ha1;

    let me = |host: &str, who: Option<&str>| {
        let mut args: Vec<String> = vec![
            "--cacert".into(),
            ca.into(),
            "--write-out".into(),
            "\n%{http_code}".into(),
            "-H".into(),
            format!("Host: {host}"),
            "-H".into(),
            "X-Linphone-Provisioning: 1".into(),
        ];
        if let Some(cn) = who {
            let leaf = client_cert(&pki.ca, cn, None);
            let name = cn.replace([':', '@'], "_");
            let cert = write(pki.dir.path(), &format!("{name}.pem"), &leaf.cert);
            let key = write(pki.dir.path(), &format!("{name}.key"), &leaf.key);
            args.extend([
                "--cert".into(),
                cert.to_string_lossy().into_owned(),
                "--key".into(),
                key.to_string_lossy().into_owned(),
            ]);
        }
        args.push(format!("{https}/provisioning/me"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = stdout(&curl(&refs));
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().to_string(), body.to_string())
    };

    let (code, doc) = me("example.com", Some("sip:alice@example.com"));
    assert_eq!(code, "200", "{doc}");
    assert_eq!(entry(&doc, "ha1"), stored_ha1, "{doc}");
    assert_eq!(entry(&doc, "username"), "alice", "{doc}");

    // Olga's certificate is valid, but her account is another space's.
    let (code, body) = me("example.com", Some("sip:olga@other.example"));
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("not linked to any account"), "{body}");
    // On her own space's host, the same certificate provisions her.
    let (code, doc) = me("other.example", Some("sip:olga@other.example"));
    assert_eq!(code, "200", "{doc}");
    assert_eq!(entry(&doc, "username"), "olga", "{doc}");
    // No such account.
    let (code, body) = me("example.com", Some("sip:nobody@example.com"));
    assert_eq!(code, "403", "{body}");
    // A space that does not take certificates refuses one.
    let (code, body) = me("closed.example", Some("sip:carl@closed.example"));
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("Not a valid authentication method"), "{body}");
    // Without a certificate the other methods decide: no credential at all is not a 200.
    let (code, _) = me("example.com", None);
    assert_ne!(code, "200");
    app.stop().await;
}

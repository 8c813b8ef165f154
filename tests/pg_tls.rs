//! PostgreSQL over TLS against a real server that accepts TLS only: a throwaway cluster
//! (`ssl = on`, pg_hba `hostssl` and nothing else for TCP) with a server certificate for
//! `localhost` made here by a test CA. The real `provisio` binary connects with
//! `sslmode=require` and `verify-full` (the pool, and in `serve` the change feed's listening
//! connection), and refuses, with a message saying why, a wrong CA, a host name the certificate
//! does not name, and `sslmode=disable`. The password in the URL never appears in the output.

mod common;

use common::pg_cluster::PgCluster;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_provisio");

/// Trust authentication ignores it; it must never be printed.
const PASSWORD: &str = "Pw-never-shown-42";

/// A CA: its certificate (PEM) and what signs with it.
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

/// A server certificate naming only `localhost` (no IP address), signed by `ca`: (cert, key).
fn server_cert(ca: &Ca) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The cluster: TLS on, and over TCP only `hostssl` connections are allowed.
fn tls_cluster(ca: &Ca) -> Option<PgCluster> {
    let cluster = PgCluster::init(&[
        "ssl = on",
        "ssl_cert_file = 'server.crt'",
        "ssl_key_file = 'server.key'",
    ])?;
    let (cert, key) = server_cert(ca);
    cluster.write_file("server.crt", cert.as_bytes(), 0o644);
    cluster.write_file("server.key", key.as_bytes(), 0o600);
    cluster.write_file(
        "pg_hba.conf",
        b"local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        0o600,
    );
    cluster.start_server();
    Some(cluster)
}

fn url(host: &str, port: u16, params: &str) -> String {
    format!("postgres://postgres:{PASSWORD}@{host}:{port}/postgres?{params}")
}

/// Runs `provisio --database URL ARGS` in `dir`.
fn provisio(dir: &Path, database: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .env_remove("PROVISIO_DATABASE")
        .args([
            "--data-dir",
            "data",
            "--hooks-dir",
            "hooks",
            "--database",
            database,
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run provisio")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the command succeeded; returns its stdout.
fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(PASSWORD),
        "password shown:\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the command failed and said every one of `words`; returns stderr.
fn fails(out: Output, words: &[&str]) -> String {
    let all = text(&out);
    assert!(!out.status.success(), "expected a failure:\n{all}");
    for word in words {
        assert!(all.contains(word), "{word:?} missing from:\n{all}");
    }
    assert!(!all.contains(PASSWORD), "password shown:\n{all}");
    eprintln!(
        "refused as expected:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tls_only_postgres() {
    let right = ca("provisio test CA");
    let wrong = ca("some other CA");
    let Some(cluster) = tls_cluster(&right) else {
        return;
    };
    let port = cluster.port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("hooks")).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &right.pem).unwrap();
    let wrong_file = dir.path().join("other-ca.pem");
    std::fs::write(&wrong_file, &wrong.pem).unwrap();
    let ca_path = ca_file.display().to_string();
    let wrong_path = wrong_file.display().to_string();

    // require: encrypted, nothing verified (the CA is not given at all).
    let require = url("127.0.0.1", port, "sslmode=require");
    ok(provisio(dir.path(), &require, &["migrate"]));
    ok(provisio(
        dir.path(),
        &require,
        &["space", "add", "tls.example.com"],
    ));

    // verify-full with the right CA and the name in the certificate.
    let full = url(
        "localhost",
        port,
        &format!("sslmode=verify-full&sslrootcert={ca_path}"),
    );
    let listed = ok(provisio(dir.path(), &full, &["space", "list"]));
    assert!(listed.contains("tls.example.com"), "{listed}");

    // verify-ca checks the chain but not the name: 127.0.0.1 is not in the certificate.
    let ca_only = url(
        "127.0.0.1",
        port,
        &format!("sslmode=verify-ca&sslrootcert={ca_path}"),
    );
    ok(provisio(dir.path(), &ca_only, &["space", "list"]));

    // A CA that did not sign the server's certificate.
    let bad_ca = url(
        "localhost",
        port,
        &format!("sslmode=verify-full&sslrootcert={wrong_path}"),
    );
    fails(
        provisio(dir.path(), &bad_ca, &["space", "list"]),
        &[
            "certificate verification failed",
            &format!("sslrootcert={wrong_path}"),
            "unknown issuer",
        ],
    );

    // The right CA, but a host name the certificate does not list.
    let bad_name = url(
        "127.0.0.1",
        port,
        &format!("sslmode=verify-full&sslrootcert={ca_path}"),
    );
    fails(
        provisio(dir.path(), &bad_name, &["space", "list"]),
        &[
            "not valid for host name \"127.0.0.1\"",
            "(it names localhost)",
            "verify-ca",
        ],
    );

    // No TLS at all: pg_hba.conf has only hostssl.
    let plain = url("127.0.0.1", port, "sslmode=disable");
    fails(
        provisio(dir.path(), &plain, &["space", "list"]),
        &["server requires TLS", "sslmode=disable"],
    );

    // The server itself: pool and change feed over verify-full, /readyz answers 200.
    serve_over_tls(dir.path(), &full);
}

/// Runs `provisio serve` on `database` until it is ready and its change feed listens (a
/// connection of its own, also through TLS since the server allows nothing else), then probes
/// `/readyz` with `provisio healthcheck`.
fn serve_over_tls(dir: &Path, database: &str) {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .env_remove("PROVISIO_DATABASE")
        .env("PROVISIO_LOG", "info")
        .args([
            "--data-dir",
            "data",
            "--hooks-dir",
            "hooks",
            "--database",
            database,
        ])
        .args(["--listen", "127.0.0.1:0", "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn provisio serve");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let seen = lines.lock().unwrap().clone();
        let addr = seen
            .iter()
            .find(|l| l.contains("provisio listening"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
        let listening = seen.iter().any(|l| l.contains("change feed listening"));
        if let (Some(addr), true) = (addr, listening) {
            break addr;
        }
        let exited = child.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "serve over TLS did not start ({exited:?}):\n{}",
                seen.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let probe = Command::new(BIN)
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .args(["healthcheck", "--url", &format!("http://{addr}/readyz")])
        .output()
        .expect("run provisio healthcheck");
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.lock().unwrap().join("\n");
    assert!(
        probe.status.success(),
        "{}\nserver log:\n{log}",
        text(&probe)
    );
    assert!(!log.contains(PASSWORD), "password in the log:\n{log}");
    assert!(!log.contains("change feed disconnected"), "{log}");
}

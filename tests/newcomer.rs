//! A newcomer's first steps, on the real binary and the real server:
//!
//! - `provisio demo` honours `--public-url` and `--listen`: its links and its terminal QR code
//!   (decoded here) use the public URL, the demo space answers on the public host even when
//!   other spaces exist, and a loopback link comes with a warning that a phone cannot reach it;
//!   a wildcard listen address is never printed as a link.
//! - `/wizard/{token}` shows a browser an HTML page for unknown, used (404) and expired (410)
//!   tokens, API clients keep their JSON, and `HEAD` answers like `GET` without a body.
//! - `rust-version` is what the locked dependencies need; every path the README names exists,
//!   and nothing in the repository points outside it.

mod common;

use common::server::TestApp;
use provisio::model::now_ms;
use provisio::secret::{hash_secret, new_token};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_provisio");

/// `provisio` in `dir` with its own data and hooks directories, no stray configuration.
fn provisio(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .args(["--data-dir", "data", "--hooks-dir", "hooks"])
        .args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROVISIO_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A running `provisio demo`: what it printed, and the address it listens on.
struct Demo {
    child: Child,
    stdout: String,
    addr: String,
}

impl Demo {
    /// Starts `demo` with `args` and waits for its announcement and its "listening" log line.
    fn start(dir: &Path, args: &[&str]) -> Demo {
        let mut all = args.to_vec();
        all.push("demo");
        let mut child = provisio(dir, &all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn provisio demo");
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stdout = out.lock().unwrap().join("\n");
            let addr = err
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("provisio listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string);
            if let Some(addr) = addr
                && stdout.contains("The token works once")
            {
                return Demo {
                    child,
                    stdout,
                    addr,
                };
            }
            assert!(
                child.try_wait().unwrap().is_none() && Instant::now() < deadline,
                "demo did not start:\n{stdout}\n{}",
                err.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value printed after `label`.
    fn printed(&self, label: &str) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in:\n{}", self.stdout))
            .trim()
            .to_string()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects the lines of a pipe in the background.
fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Decodes the terminal QR code (Unicode half blocks, two modules per character) in `text`:
/// the block of lines made of `█▀▄` and spaces, drawn either way round.
fn decode_terminal_qr(text: &str) -> String {
    let rows: Vec<Vec<char>> = text
        .lines()
        .filter(|l| l.chars().count() > 20 && l.chars().all(|c| " █▀▄".contains(c)))
        .map(|l| l.chars().collect())
        .collect();
    assert!(rows.len() > 10, "no QR code in:\n{text}");
    let width = rows.iter().map(Vec::len).max().unwrap();
    let scale = 4;
    let border = 8;
    for ink_is_dark in [true, false] {
        let (ink, paper) = if ink_is_dark { (0u8, 255u8) } else { (255, 0) };
        let w = (width * scale + 2 * border) as u32;
        let h = (rows.len() * 2 * scale + 2 * border) as u32;
        let mut img = image::GrayImage::from_pixel(w, h, image::Luma([paper]));
        for (y, row) in rows.iter().enumerate() {
            for x in 0..width {
                let c = row.get(x).copied().unwrap_or(' ');
                let (upper, lower) = match c {
                    '█' => (true, true),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    _ => (false, false),
                };
                for (half, filled) in [(0, upper), (1, lower)] {
                    let v = if filled { ink } else { paper };
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let px = (border + x * scale + dx) as u32;
                            let py = (border + (2 * y + half) * scale + dy) as u32;
                            img.put_pixel(px, py, image::Luma([v]));
                        }
                    }
                }
            }
        }
        let mut prepared = rqrr::PreparedImage::prepare(img);
        for grid in prepared.detect_grids() {
            if let Ok((_, content)) = grid.decode() {
                return content;
            }
        }
    }
    panic!("the terminal QR code does not decode:\n{text}");
}

/// A provisioning fetch as Debian's liblinphone makes it (User-Agent, no header), on `addr`
/// with `Host: host`.
async fn fetch(addr: &str, host: &str, path: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .header("host", host)
        .header("user-agent", "Linphonec/5.1.65")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_honours_public_url_and_listen() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("hooks")).unwrap();
    // A second space: from now on a Host that matches no space is refused, so the demo space
    // must really be served on the public host.
    let out = provisio(
        dir.path(),
        &[
            "space",
            "add",
            "other.example.com",
            "--host",
            "other.example.com",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");

    let public = "http://prov.example.test:8318";
    let demo = Demo::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--public-url", public],
    );
    let url = demo.printed("provisioning URL:");
    assert!(url.starts_with(&format!("{public}/provisioning/")), "{url}");
    assert!(
        demo.printed("wizard:")
            .starts_with(&format!("{public}/wizard/"))
    );
    assert!(
        demo.stdout
            .contains(&format!("provisio demo is running on {public}"))
    );
    assert_eq!(
        decode_terminal_qr(&demo.stdout),
        url,
        "the QR code encodes it"
    );
    assert!(!demo.stdout.contains("127.0.0.1") && !demo.stdout.contains("0.0.0.0"));
    assert!(!demo.stdout.contains("cannot reach"), "{}", demo.stdout);
    let path = url.strip_prefix(public).unwrap().to_string();
    assert_eq!(
        fetch(&demo.addr, "unknown.example.net", &path).await,
        404,
        "with two spaces an unknown host is refused"
    );
    assert_eq!(
        fetch(&demo.addr, "prov.example.test:8318", &path).await,
        200
    );
    drop(demo);

    // The same data directory, no public URL, loopback: the space follows, and a warning.
    let demo = Demo::start(dir.path(), &["--listen", "127.0.0.1:0"]);
    let base = format!("http://{}", demo.addr);
    let url = demo.printed("provisioning URL:");
    assert!(url.starts_with(&format!("{base}/provisioning/")), "{url}");
    assert_eq!(decode_terminal_qr(&demo.stdout), url);
    assert!(
        demo.stdout.contains("a phone cannot reach")
            && demo.stdout.contains("--listen 0.0.0.0:8318 --public-url"),
        "{}",
        demo.stdout
    );
    let path = url.strip_prefix(&base).unwrap().to_string();
    assert_eq!(fetch(&demo.addr, &demo.addr, &path).await, 200);
    drop(demo);

    // Every interface: the link names an address a phone can use, never 0.0.0.0.
    let demo = Demo::start(dir.path(), &["--listen", "0.0.0.0:0"]);
    let url = demo.printed("provisioning URL:");
    assert!(
        !url.contains("0.0.0.0") && !demo.stdout.contains("http://0.0.0.0"),
        "{url}"
    );
    assert_eq!(decode_terminal_qr(&demo.stdout), url);
}

both_backends!(wizard_pages_for_browsers, |app: TestApp| async move {
    let space = app
        .space("sip.example.com", |s| s.token_lifetime_minutes = 10)
        .await;
    let account = app.account(&space, "anna", "very-secret-pw").await;
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    // HEAD on a live token: the page's status and headers, no body, nothing consumed.
    let token = app.token(&account).await;
    let head = app
        .client
        .head(format!("{}/wizard/{token}", app.base))
        .header("host", "sip.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "text/html; charset=utf-8");
    let length: usize = head.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 1000, "the length of the page: {length}");
    assert!(head.bytes().await.unwrap().is_empty());
    let get = app
        .get("sip.example.com", &format!("/wizard/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200, "HEAD consumed nothing");
    assert_eq!(get.bytes().await.unwrap().len(), length);

    // Used (and unknown): 404, HTML for a browser, JSON for an API client.
    let r = app
        .provision("sip.example.com", &format!("/provisioning/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for t in [token.clone(), new_token()] {
        let path = format!("/wizard/{t}");
        let page = app
            .get("sip.example.com", &path)
            .header("accept", browser)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 404);
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(page.headers()["cache-control"], "no-store");
        let html = page.text().await.unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.contains("This link does not work"), "{html}");
        assert!(!html.contains(&t), "the page does not repeat the token");
        let api = app.get("sip.example.com", &path).send().await.unwrap();
        assert_eq!(api.status(), 404);
        assert_eq!(api.headers()["content-type"], "application/json");
        let body: serde_json::Value = api.json().await.unwrap();
        assert!(body["message"].is_string(), "{body}");
        let head = app
            .client
            .head(format!("{}{path}", app.base))
            .header("host", "sip.example.com")
            .header("accept", browser)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 404);
        assert!(head.bytes().await.unwrap().is_empty());
    }

    // Expired: 410, and the page says so.
    let expired = new_token();
    let created = now_ms() - 1000 * 60_000;
    app.state
        .store
        .create_provisioning_token(
            account.id,
            &hash_secret(&expired),
            created,
            Some(created + 10 * 60_000),
        )
        .await
        .unwrap();
    let page = app
        .get("sip.example.com", &format!("/wizard/{expired}"))
        .header("accept", browser)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("This link has expired"));
    let api = app
        .get("sip.example.com", &format!("/wizard/{expired}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 410);
    assert_eq!(api.headers()["content-type"], "application/json");

    // A method the wizard does not serve names HEAD among the allowed ones.
    let post = app
        .client
        .post(format!("{}/wizard/{expired}", app.base))
        .header("host", "sip.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    app.stop().await;
});

/// The repository's root.
fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `rust-version` is what the locked dependencies need: the highest `rust-version` among
/// them (cargo metadata, offline: the test build already fetched them; only this platform's,
/// since the build downloads no other platform's dependencies, such as rustls-native-certs'
/// macOS and Windows ones).
#[test]
fn rust_version_is_what_the_lock_file_needs() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = Command::new(rustc).arg("-vV").output().unwrap();
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--filter-platform", &host])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    let mut ours = None;
    let mut needed: Option<(Vec<u64>, String)> = None;
    for package in meta["packages"].as_array().unwrap() {
        let Some(version) = package["rust_version"].as_str() else {
            continue;
        };
        let name = package["name"].as_str().unwrap().to_string();
        if name == "provisio" {
            ours = Some(parse(version));
        } else if needed.as_ref().is_none_or(|(v, _)| parse(version) > *v) {
            needed = Some((parse(version), name));
        }
    }
    let (needed, by) = needed.unwrap();
    let pad = |mut v: Vec<u64>| {
        v.resize(3, 0);
        v
    };
    assert_eq!(
        pad(ours.expect("Cargo.toml has rust-version")),
        pad(needed),
        "rust-version must be what {by} needs"
    );
}

/// Everything the README points at is in the repository, and nothing in the repository
/// points outside it (the real-client harness used to live in a directory beside the clone).
#[test]
fn the_readme_and_the_repository_are_self_contained() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut paths: Vec<String> = readme
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|target| !target.contains("://") && !target.starts_with('#'))
        .map(|target| target.split('#').next().unwrap().to_string())
        .collect();
    for word in readme.split(|c: char| c.is_whitespace() || c == '`' || c == '(' || c == ')') {
        let prefixes = ["tools/", "docs/", "examples/", "schema/", ".ci/"];
        if prefixes.iter().any(|p| word.starts_with(p)) {
            paths.push(word.trim_end_matches([',', '.', ':', ';']).to_string());
        }
    }
    assert!(
        paths.iter().any(|p| p == "tools/linphone-check.sh"),
        "{paths:?}"
    );
    for path in &paths {
        assert!(
            repo().join(path).exists(),
            "README names {path}, which does not exist"
        );
    }

    let outside = concat!("..", "/shared");
    let mut offenders = Vec::new();
    let mut stack = vec![repo()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                if !matches!(name.as_str(), "target" | ".git") {
                    stack.push(path);
                }
            } else if let Ok(text) = std::fs::read_to_string(&path)
                && text.contains(outside)
            {
                offenders.push(path.strip_prefix(repo()).unwrap().display().to_string());
            }
        }
    }
    assert!(offenders.is_empty(), "{outside} is named in {offenders:?}");
}

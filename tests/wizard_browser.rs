//! The wizard in a real browser: headless Chromium loads `/wizard/{token}` from a running
//! server; the QR code in its screenshot decodes (rqrr) to the provisioning URL, and the
//! rendered DOM carries the `linphone-config:` link. For a used token, the browser gets the
//! HTML error page: its message is rendered and the screenshot holds no QR code. Loading the
//! page consumes nothing.
//!
//! Needs Debian's `chromium` (`CHROMIUM=/path` picks another binary). Skipped with a message
//! when it is missing, unless CI is set.

mod common;

use common::server::{Backend, TestApp};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a Chromium run may take before it is killed (it takes about a second).
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// The browser binary, or `None` (printed) when it is missing outside CI.
fn chromium() -> Option<PathBuf> {
    let candidates: Vec<String> = match std::env::var("CHROMIUM") {
        Ok(path) => vec![path],
        Err(_) => ["chromium", "chromium-browser"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    for name in &candidates {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        if let Some(path) = found {
            return Some(path);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but no browser was found ({candidates:?}; apt-get install chromium)");
    }
    eprintln!("SKIPPED wizard browser test: no {candidates:?} (apt-get install chromium)");
    None
}

/// Runs headless Chromium on `url` with `mode` (`--screenshot=FILE` or `--dump-dom`), in a
/// fresh profile, bounded by [`CHROMIUM_TIMEOUT`].
fn run_chromium(browser: &Path, url: &str, mode: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=600,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(mode)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?} on {url}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium {mode} {url}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the browser shows at `url`: the screenshot and the rendered DOM (run side by side).
async fn load(browser: &Path, url: &str) -> (image::GrayImage, String) {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("page.png");
    let screenshot = {
        let (browser, url) = (browser.to_path_buf(), url.to_string());
        let mode = format!("--screenshot={}", shot.display());
        tokio::task::spawn_blocking(move || run_chromium(&browser, &url, &mode))
    };
    let dom = {
        let (browser, url) = (browser.to_path_buf(), url.to_string());
        tokio::task::spawn_blocking(move || run_chromium(&browser, &url, "--dump-dom"))
    };
    let (screenshot, dom) = (screenshot.await.unwrap(), dom.await.unwrap());
    drop(screenshot);
    let image = image::open(&shot)
        .unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()))
        .to_luma8();
    (image, String::from_utf8_lossy(&dom.stdout).into_owned())
}

/// Every QR code rqrr finds and decodes in `image`.
fn decode_all(image: image::GrayImage) -> Vec<String> {
    let mut prepared = rqrr::PreparedImage::prepare(image);
    prepared
        .detect_grids()
        .into_iter()
        .filter_map(|g| g.decode().ok().map(|(_, content)| content))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wizard_page_in_headless_chromium() {
    let Some(browser) = chromium() else { return };
    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    let space = app.space("sip.example.com", |_| {}).await;
    let account = app.account(&space, "anna", "very-secret-pw").await;
    let token = app.token(&account).await;
    // One space: the browser's Host (127.0.0.1:PORT) reaches it, and links are built on it.
    let provisioning_url = format!("{}/provisioning/{token}", app.base);
    let wizard = format!("{}/wizard/{token}", app.base);

    let (shot, dom) = load(&browser, &wizard).await;
    assert_eq!(
        decode_all(shot),
        std::slice::from_ref(&provisioning_url),
        "the screenshot shows one QR code, of the provisioning URL"
    );
    let link = format!("href=\"linphone-config:{provisioning_url}\"");
    assert!(
        dom.contains(&link),
        "no {link} in the rendered page:\n{dom}"
    );
    assert!(dom.contains("id=\"open_app\""), "{dom}");

    // The browser consumed nothing: the phone still gets its document, once.
    let r = app
        .provision("sip.example.com", &format!("/provisioning/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Now used: the browser gets the error page, with its message rendered and no QR code.
    let (shot, dom) = load(&browser, &wizard).await;
    assert!(
        dom.contains("<h3 id=\"title\">This link does not work (any more)</h3>"),
        "the error page is rendered:\n{dom}"
    );
    assert!(!dom.contains("linphone-config:"), "{dom}");
    let dark = shot.pixels().filter(|p| p.0[0] < 128).count();
    assert!(dark > 500, "the message is drawn ({dark} dark pixels)");
    assert!(decode_all(shot).is_empty(), "no QR code on the error page");
    app.stop().await;
}

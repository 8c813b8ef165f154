//! What an operator sees of the real `provisio serve`, its standard error piped (not a
//! terminal) as under systemd or Docker:
//!
//! - `log_format = "json"`: every line is one JSON object, no ANSI escape; one access line per
//!   request with the route template (never the token), status, `duration_ms`, the client
//!   address after `trusted_proxies`, space, account and user agent; 4xx at INFO, 5xx at ERROR;
//!   unknown `PROVISIO_*` variables are warned about, not fatal.
//! - `/metrics`: a `# HELP` for every metric, the request-duration histogram, the QR route
//!   counted under its own template, hook duration and pool gauges, build info, no tenant
//!   name in any label; with `metrics_listen` it is served there only (404 on the main port).
//! - the default text format has no ANSI escape either when standard error is not a terminal.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_provisio");
const HOST: &str = "sip.example.com";
const FAILING_HOST: &str = "broken.example.com";
const UA: &str = "LinphoneAndroid/5.3.0 (Pixel 7) LinphoneSDK/5.3.0";
const FORWARDED_CLIENT: &str = "203.0.113.9";

/// `provisio` in `dir` with its own data and hooks directories, no stray configuration.
fn provisio(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .args(["--data-dir", "data", "--hooks-dir", "hooks"])
        .args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROVISIO_") {
            cmd.env_remove(name);
        }
    }
    cmd
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

/// A work directory with a space, an account and a fresh token (returned), and a second space
/// whose hook script always fails (its anonymous document answers 500).
fn prepare() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let hooks = dir.path().join("hooks");
    std::fs::create_dir(&hooks).unwrap();
    std::fs::write(
        hooks.join(format!("{FAILING_HOST}.rhai")),
        "fn on_config(config, request, account) {\n    throw \"boom\";\n}\n",
    )
    .unwrap();
    let run = |args: &[&str]| ok(&provisio(dir.path(), args).output().unwrap());
    run(&["space", "add", HOST, "--host", HOST]);
    run(&["space", "add", FAILING_HOST, "--host", FAILING_HOST]);
    run(&[
        "account",
        "add",
        &format!("alice@{HOST}"),
        "--password",
        "correct-horse-battery",
    ]);
    let out = run(&["token", &format!("alice@{HOST}"), "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let token = v["provisioning_token"].as_str().unwrap().to_string();
    (dir, token)
}

/// A free TCP port on 127.0.0.1 (released for the server to bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `provisio serve` whose standard error is collected line by line.
struct Server {
    child: Child,
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `serve` on 127.0.0.1:0 with `env`, and waits for the "provisio listening" line.
    fn start(dir: &Path, env: &[(&str, String)]) -> Server {
        let mut cmd = provisio(dir, &["--listen", "127.0.0.1:0", "serve"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn provisio serve");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("provisio listening"))
                .map(|l| listening_addr(l));
            if let Some(addr) = found {
                return Server { child, addr, lines };
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "provisio serve exited:\n{}",
                lines.lock().unwrap().join("\n")
            );
            assert!(Instant::now() < deadline, "provisio serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and returns every line it wrote.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends with the pipe; give it a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a "provisio listening" line, JSON (`"addr":"…"`) or text (`addr=…`).
fn listening_addr(line: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        return v["addr"].as_str().unwrap().to_string();
    }
    let at = line.find("addr=").expect("addr= in the listening line") + 5;
    line[at..].split_whitespace().next().unwrap().to_string()
}

/// The requests both formats are checked with: a provisioning fetch from behind the trusted
/// proxy, a wizard refusal in a browser, a favicon, a Digest challenge, the QR route (404 now
/// the token is used), a 500 from a failing hook script.
async fn traffic(base: &str, token: &str) {
    let client = reqwest::Client::new();
    let get = |host: &str, path: &str| {
        client
            .get(format!("{base}{path}"))
            .header("host", host)
            .header("user-agent", UA)
    };
    let r = get(HOST, &format!("/provisioning/{token}"))
        .header("x-linphone-provisioning", "1")
        .header("x-forwarded-for", FORWARDED_CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = get(HOST, &format!("/wizard/{token}"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = get(HOST, "/favicon.ico").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = get(HOST, "/provisioning/me")
        .header("x-linphone-provisioning", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = get(HOST, &format!("/provisioning/qrcode/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = get(FAILING_HOST, "/provisioning")
        .header("x-linphone-provisioning", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
}

/// Waits until `lines` holds an access line for `route` with `status` (the server logs it
/// after answering).
fn wait_for_access(server: &Server, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if server
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no log line with {needle}:\n{}",
        server.lines.lock().unwrap().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_metrics_on_their_own_listener() {
    let (dir, token) = prepare();
    let metrics_port = free_port();
    let server = Server::start(
        dir.path(),
        &[
            ("PROVISIO_LOG_FORMAT", "json".to_string()),
            ("PROVISIO_TRUSTED_PROXIES", "127.0.0.1".to_string()),
            (
                "PROVISIO_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            ),
            // A test harness's own variables: warned about, not fatal.
            (
                "PROVISIO_TEST_DATABASE_URL",
                "postgres://postgres@127.0.0.1/test".to_string(),
            ),
            ("PROVISIO_NO_SUCH_KEY", "1".to_string()),
        ],
    );
    traffic(&server.base(), &token).await;

    // Metrics: only on metrics_listen.
    let client = reqwest::Client::new();
    let main = client
        .get(format!("{}/metrics", server.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 404, "the main listener hides /metrics");
    let other = client
        .get(format!("http://127.0.0.1:{metrics_port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves /metrics only"
    );
    let page = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    check_metrics(&page, &token);

    wait_for_access(&server, "\"status\":500");
    let lines = server.stop();
    let text = lines.join("\n");
    assert!(!text.contains(&token), "the token reached the log");
    assert!(!text.contains('\x1b'), "ANSI escape in a piped log");
    let objects: Vec<Value> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l:?}"))
        })
        .collect();
    assert!(objects.iter().all(Value::is_object));

    let access = |route: &str, status: u64| -> &Value {
        objects
            .iter()
            .find(|o| {
                o["target"] == "provisio::access" && o["route"] == route && o["status"] == status
            })
            .unwrap_or_else(|| panic!("no access line for {route} {status}:\n{text}"))
    };
    let fetch = access("/provisioning/{token}", 200);
    assert_eq!(fetch["level"], "INFO");
    assert_eq!(fetch["method"], "GET");
    assert_eq!(fetch["client"], FORWARDED_CLIENT, "{fetch}");
    assert_eq!(fetch["space"], HOST, "{fetch}");
    assert!(
        fetch["account"].as_i64().is_some_and(|id| id > 0),
        "{fetch}"
    );
    assert_eq!(fetch["user_agent"], UA, "{fetch}");
    assert!(fetch["duration_ms"].is_u64(), "{fetch}");
    assert!(fetch["timestamp"].is_string(), "{fetch}");
    for (route, status) in [
        ("/wizard/{token}", 404),
        ("unmatched", 404),
        ("/provisioning/me", 401),
        ("/provisioning/qrcode/{token}", 404),
    ] {
        let line = access(route, status);
        assert_eq!(
            line["level"], "INFO",
            "a {status} is normal traffic: {line}"
        );
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
    assert_eq!(access("/wizard/{token}", 404)["space"], HOST);
    let failed = access("/provisioning", 500);
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert_eq!(failed["space"], FAILING_HOST, "{failed}");

    let warned: Vec<&Value> = objects
        .iter()
        .filter(|o| o["level"] == "WARN" && o["variable"].is_string())
        .collect();
    for name in ["PROVISIO_TEST_DATABASE_URL", "PROVISIO_NO_SUCH_KEY"] {
        assert!(
            warned.iter().any(|o| o["variable"] == name),
            "{name} is warned about:\n{text}"
        );
    }
    assert!(
        !warned
            .iter()
            .any(|o| o["variable"] == "PROVISIO_LOG_FORMAT"),
        "known keys are not warned about"
    );
}

/// The metrics page after [`traffic`].
fn check_metrics(page: &str, token: &str) {
    assert!(!page.contains(token));
    for tenant in [HOST, FAILING_HOST] {
        assert!(
            !page.contains(tenant),
            "a tenant name in a label: {}",
            page.lines()
                .filter(|l| l.contains(tenant))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // Every metric is described.
    let types: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(types.len() >= 8, "{page}");
    for name in &types {
        assert!(
            page.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "{name} has no HELP line:\n{page}"
        );
    }
    for line in [
        "# TYPE provisio_http_requests_total counter",
        "# TYPE provisio_http_request_duration_seconds histogram",
        "# TYPE provisio_hook_duration_seconds histogram",
        "provisio_http_requests_total{route=\"/provisioning/{token}\",status=\"200\"} 1",
        "provisio_http_requests_total{route=\"/provisioning/qrcode/{token}\",status=\"404\"} 1",
        "provisio_http_requests_total{route=\"/wizard/{token}\",status=\"404\"} 1",
        "provisio_http_requests_total{route=\"/provisioning\",status=\"500\"} 1",
        "provisio_http_request_duration_seconds_count{route=\"/provisioning/qrcode/{token}\"} 1",
        "provisio_hook_failures_total{scope=\"space\"} 1",
        "provisio_build_info{version=\"0.1.0\"} 1",
        "provisio_db_pool_max_connections 16",
    ] {
        assert!(
            page.lines().any(|l| l == line),
            "missing {line:?} in:\n{page}"
        );
    }
    assert!(
        page.contains(
            "provisio_http_request_duration_seconds_bucket{route=\"/provisioning/{token}\",le=\"0.005\"}"
        ),
        "buckets are rendered:\n{page}"
    );
    assert!(page.contains("provisio_hook_duration_seconds_bucket{le=\"0.001\"}"));
    for gauge in [
        "provisio_db_pool_connections ",
        "provisio_db_pool_idle_connections ",
        "provisio_db_pool_waiting_requests ",
    ] {
        assert!(
            page.lines().any(|l| l.starts_with(gauge)),
            "{gauge}in:\n{page}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_without_a_terminal_and_metrics_on_the_main_listener() {
    let (dir, token) = prepare();
    let server = Server::start(
        dir.path(),
        &[("PROVISIO_TRUSTED_PROXIES", "127.0.0.1".to_string())],
    );
    traffic(&server.base(), &token).await;
    let page = reqwest::get(format!("{}/metrics", server.base()))
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        200,
        "without metrics_listen, /metrics is here"
    );
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("# TYPE provisio_http_request_duration_seconds histogram")
    );
    wait_for_access(&server, "status=500");
    let text = server.stop().join("\n");
    assert!(
        !text.contains('\x1b'),
        "ANSI escape in a piped log:\n{text}"
    );
    assert!(!text.contains(&token), "the token reached the log");
    let line = text
        .lines()
        .find(|l| l.contains("provisio::access") && l.contains("route=/provisioning/{token}"))
        .unwrap_or_else(|| panic!("no access line:\n{text}"));
    for part in [
        " INFO ",
        "method=GET",
        "status=200",
        "duration_ms=",
        &format!("client={FORWARDED_CLIENT}"),
        &format!("space=\"{HOST}\""),
        "account=",
        &format!("user_agent=\"{UA}\""),
    ] {
        assert!(line.contains(part), "{part:?} missing in {line}");
    }
}

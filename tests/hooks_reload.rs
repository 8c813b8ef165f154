//! Hot reload through real filesystem events: a watched temporary hooks directory, scripts
//! written, broken, deleted and saved editor-style (write a temporary file, rename it over the
//! script), and `reload_now` for the synchronous path. Reading, touching or re-saving a
//! script unchanged is never a reload; a broken save is reported once.

use provisio::config::HookSettings;
use provisio::hooks::{HookContext, Hooks};
use provisio::lpconfig::Config;
use provisio::model::Space;
use provisio::request::{RequestInfo, RouteKind};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

const DOMAIN: &str = "reload.example.org";
/// Scripts must take effect within 2 s of being written; polling allows some slack on a
/// loaded machine.
const WITHIN: Duration = Duration::from_secs(5);

fn settings(dir: &Path) -> HookSettings {
    HookSettings {
        dir: dir.to_path_buf(),
        watch: true,
        debounce_ms: 50,
        ..HookSettings::default()
    }
}

/// A script whose only effect is `[marker] v = <value>`.
fn marker(value: &str) -> String {
    format!(
        "fn on_config(config, request, account) {{ config.section(\"marker\").set(\"v\", \"{value}\"); }}\n"
    )
}

/// The marker value the live set writes for an anonymous request (`None`: no marker).
fn current_marker(hooks: &Hooks) -> Option<String> {
    let space = Space::new(DOMAIN, DOMAIN);
    let ctx = HookContext {
        space: space.clone(),
        account_space: None,
        request: RequestInfo::synthetic(DOMAIN, "/provisioning", RouteKind::Anonymous),
        account: None,
        proxy_section: None,
        auth_info_sections: Vec::new(),
    };
    let mut config = Config::new();
    hooks.run(&ctx, &mut config).expect("hooks run");
    config
        .section("marker")
        .and_then(|s| s.get("v"))
        .map(str::to_string)
}

/// Polls until the live set writes `want`; returns how long it took.
fn wait_for(hooks: &Hooks, want: Option<&str>) -> Duration {
    let started = Instant::now();
    loop {
        if current_marker(hooks).as_deref() == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WITHIN,
            "still {:?} after {:?}, want {want:?}; status: {:?}",
            current_marker(hooks),
            started.elapsed(),
            hooks.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn watched(dir: &Path) -> (Arc<Hooks>, provisio::hooks::WatchGuard) {
    let hooks = Arc::new(Hooks::load(&settings(dir)).unwrap());
    let guard = hooks.watch().unwrap();
    assert!(hooks.status().watching);
    (hooks, guard)
}

#[test]
fn a_new_script_takes_effect_and_a_deleted_one_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (hooks, _guard) = watched(dir.path());
    assert_eq!(current_marker(&hooks), None);

    std::fs::write(dir.path().join("default.rhai"), marker("one")).unwrap();
    let took = wait_for(&hooks, Some("one"));
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // A space script, then its deletion: its effect disappears, the default's stays.
    std::fs::write(dir.path().join(format!("{DOMAIN}.rhai")), marker("space")).unwrap();
    wait_for(&hooks, Some("space"));
    std::fs::remove_file(dir.path().join(format!("{DOMAIN}.rhai"))).unwrap();
    wait_for(&hooks, Some("one"));
    std::fs::remove_file(dir.path().join("default.rhai")).unwrap();
    wait_for(&hooks, None);

    let status = hooks.status();
    assert!(status.reloads >= 4, "{status:?}");
    assert!(status.up_to_date);
    assert!(status.scripts.is_empty());
}

#[test]
fn a_broken_script_is_reported_and_the_previous_set_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.rhai"), marker("good")).unwrap();
    let (hooks, _guard) = watched(dir.path());
    assert_eq!(current_marker(&hooks).as_deref(), Some("good"));

    std::fs::write(
        dir.path().join("default.rhai"),
        "fn on_config(config, request, account) {\n    config.section(\"marker\").set(\"v\", \"bad\")\n    let = ;\n}\n",
    )
    .unwrap();
    let started = Instant::now();
    let status = loop {
        let s = hooks.status();
        if s.reload_failures > 0 {
            break s;
        }
        assert!(started.elapsed() < WITHIN, "no failure reported: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let error = status.last_error.clone().unwrap();
    assert!(error.contains("default.rhai:3:"), "{error}");
    assert!(status.last_error_at.is_some());
    assert!(!status.up_to_date);
    // The previous good set still serves, and the status still lists it.
    assert_eq!(current_marker(&hooks).as_deref(), Some("good"));
    assert_eq!(status.scripts.len(), 1);
    assert_eq!(status.scripts[0].hooks, vec!["on_config"]);

    // Fixing the file brings the new version in.
    std::fs::write(dir.path().join("default.rhai"), marker("fixed")).unwrap();
    wait_for(&hooks, Some("fixed"));
    let status = hooks.status();
    assert!(status.up_to_date);
    assert!(
        status.last_error.is_some(),
        "the last error stays visible as history"
    );
}

#[test]
fn a_rename_style_save_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.rhai"), marker("before")).unwrap();
    let (hooks, _guard) = watched(dir.path());
    assert_eq!(current_marker(&hooks).as_deref(), Some("before"));

    // What vim and many editors do: write a temporary file, rename it over the original.
    let tmp = dir.path().join("x.tmp");
    std::fs::write(&tmp, marker("after")).unwrap();
    std::fs::rename(&tmp, dir.path().join("default.rhai")).unwrap();
    let took = wait_for(&hooks, Some("after"));
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_module_change_reaches_the_scripts_that_import_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.rhai"),
        "import \"values\" as values;\nfn on_config(config, request, account) { config.section(\"marker\").set(\"v\", values::current()); }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("values.rhai"), "fn current() { \"v1\" }\n").unwrap();
    let (hooks, _guard) = watched(dir.path());
    assert_eq!(current_marker(&hooks).as_deref(), Some("v1"));
    std::fs::write(dir.path().join("values.rhai"), "fn current() { \"v2\" }\n").unwrap();
    wait_for(&hooks, Some("v2"));
}

#[test]
fn dropping_the_guard_stops_watching() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.rhai"), marker("kept")).unwrap();
    let (hooks, guard) = watched(dir.path());
    drop(guard);
    assert!(!hooks.status().watching);
    std::fs::write(dir.path().join("default.rhai"), marker("ignored")).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(current_marker(&hooks).as_deref(), Some("kept"));
    // reload_now still works without a watcher.
    hooks.reload_now().unwrap();
    assert_eq!(current_marker(&hooks).as_deref(), Some("ignored"));
}

#[test]
fn reload_now_swaps_or_keeps_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.rhai"), marker("a")).unwrap();
    let hooks = Hooks::load(&HookSettings {
        watch: false,
        ..settings(dir.path())
    })
    .unwrap();
    std::fs::write(dir.path().join("default.rhai"), marker("b")).unwrap();
    hooks.reload_now().unwrap();
    assert_eq!(current_marker(&hooks).as_deref(), Some("b"));

    std::fs::write(dir.path().join("helper.rhai"), "fn broken( {\n").unwrap();
    let err = hooks.reload_now().unwrap_err();
    assert!(err.contains("helper.rhai:1:"), "{err}");
    assert_eq!(current_marker(&hooks).as_deref(), Some("b"));
    let status = hooks.status();
    assert_eq!((status.reloads, status.reload_failures), (1, 1));
    assert!(!status.watching);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["scripts"][0]["file"], "default.rhai");
    assert_eq!(json["scripts"][0]["kind"], "default");
    assert_eq!(json["scripts"][0]["hooks"][0], "on_config");
}

#[test]
fn a_watcher_on_a_missing_directory_is_inert() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = Arc::new(Hooks::load(&settings(&dir.path().join("none"))).unwrap());
    let _guard = hooks.watch().unwrap();
    assert!(!hooks.status().watching);
    assert_eq!(current_marker(&hooks), None);
}

// ---- only changes reload -------------------------------------------------------------

/// Every log line of this test binary. Reloads log on the watcher's own thread, so the
/// subscriber is the global one (installed once); each test looks for text only it writes.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = Captured(logs.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        logs
    })
}

/// A `MakeWriter` collecting log output in memory.
#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// How many captured log lines contain `needle`.
fn log_lines_with(needle: &str) -> usize {
    let logs = captured_logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Long enough after the last event for a reload to have happened if one was coming: many
/// debounce periods (50 ms) plus the debouncer's own tick.
const SETTLE: Duration = Duration::from_millis(1_000);

/// The bundled scripts (no fixtures) copied into a fresh directory.
fn bundled_copy() -> (tempfile::TempDir, Vec<PathBuf>) {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks");
    let dir = tempfile::tempdir().unwrap();
    let mut scripts = Vec::new();
    for entry in std::fs::read_dir(&bundled).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rhai") {
            let target = dir.path().join(path.file_name().unwrap());
            std::fs::copy(&path, &target).unwrap();
            scripts.push(target);
        }
    }
    scripts.sort();
    assert!(scripts.len() >= 5, "{scripts:?}");
    (dir, scripts)
}

/// Waits until the reload counter reaches `want`, then a while longer, and checks it stayed.
fn reloads_settle_at(hooks: &Hooks, want: u64) {
    let started = Instant::now();
    while hooks.status().reloads < want {
        assert!(
            started.elapsed() < WITHIN,
            "reloads {:?}, want {want}",
            hooks.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(SETTLE);
    let status = hooks.status();
    assert_eq!(status.reloads, want, "{status:?}");
}

#[test]
fn reading_touching_or_resaving_scripts_never_reloads_and_an_edit_reloads_once() {
    captured_logs();
    let (dir, scripts) = bundled_copy();
    let (hooks, _guard) = watched(dir.path());
    let loaded_at = hooks.status().loaded_at;

    // What `cat`, `grep -r`, a backup job or `hooks check` do: open and read, 100 times.
    for _ in 0..100 {
        for script in &scripts {
            let mut text = String::new();
            let mut file = std::fs::File::open(script).unwrap();
            std::io::Read::read_to_string(&mut file, &mut text).unwrap();
            assert!(!text.is_empty());
        }
    }
    // `hooks check` reads (and compiles) them too.
    provisio::hooks::tools::check_dir(dir.path(), &HookSettings::default(), &mut Vec::new())
        .unwrap();
    std::thread::sleep(SETTLE);
    assert_eq!(hooks.status().reloads, 0, "{:?}", hooks.status());

    // Metadata only: `touch` (modification time) and `chmod`.
    for script in &scripts {
        let file = std::fs::File::options().write(true).open(script).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        // `chmod 600`: the mode only, the content unchanged.
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::thread::sleep(SETTLE);
    assert_eq!(hooks.status().reloads, 0, "{:?}", hooks.status());

    // Saving a script with the text it already has is a real write, but changes nothing.
    let default = dir.path().join("default.rhai");
    let same = std::fs::read_to_string(&default).unwrap();
    std::fs::write(&default, &same).unwrap();
    std::thread::sleep(SETTLE);
    assert_eq!(hooks.status().reloads, 0, "{:?}", hooks.status());
    assert_eq!(hooks.status().loaded_at, loaded_at);

    // One real edit: exactly one reload, and the reload's own reads do not start another.
    std::fs::write(&default, format!("{same}\n// edited\n")).unwrap();
    reloads_settle_at(&hooks, 1);
    // Reading the edited file again changes nothing.
    for _ in 0..100 {
        std::fs::read_to_string(&default).unwrap();
    }
    std::thread::sleep(SETTLE);
    let status = hooks.status();
    assert_eq!(
        (status.reloads, status.reload_failures),
        (1, 0),
        "{status:?}"
    );
    assert!(status.up_to_date);
}

#[test]
fn a_broken_save_is_logged_once_however_often_it_is_saved() {
    captured_logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.rhai"), marker("good")).unwrap();
    let (hooks, _guard) = watched(dir.path());
    // A module name no other test uses, so its error lines are this test's alone.
    let module = dir.path().join("brokenonce.rhai");
    let broken = "fn helper( {\n";
    let needle = "brokenonce.rhai:1:";

    std::fs::write(&module, broken).unwrap();
    let started = Instant::now();
    while hooks.status().reload_failures == 0 {
        assert!(started.elapsed() < WITHIN, "{:?}", hooks.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same broken text saved again, directly and editor-style, and read.
    for i in 0..3 {
        std::fs::write(&module, broken).unwrap();
        let tmp = dir.path().join(format!("save{i}.tmp"));
        std::fs::write(&tmp, broken).unwrap();
        std::fs::rename(&tmp, &module).unwrap();
        std::fs::read_to_string(&module).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(SETTLE);
    let status = hooks.status();
    assert_eq!(log_lines_with(needle), 1, "{status:?}");
    assert_eq!(
        (status.reloads, status.reload_failures),
        (0, 1),
        "{status:?}"
    );
    assert!(
        status.last_error.as_deref().unwrap().contains(needle),
        "{status:?}"
    );
    assert!(!status.up_to_date);
    // The live set is the one from before the broken save.
    assert_eq!(current_marker(&hooks).as_deref(), Some("good"));

    // A different broken text is a new error, reported (once) too.
    std::fs::write(&module, "fn helper( {\n// still broken\n").unwrap();
    let started = Instant::now();
    while hooks.status().reload_failures < 2 {
        assert!(started.elapsed() < WITHIN, "{:?}", hooks.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(SETTLE);
    assert_eq!(log_lines_with(needle), 2);
    assert_eq!(hooks.status().reload_failures, 2);

    // Removing the broken module brings the files back to the live set: nothing to swap,
    // and the status says the disk is served again.
    std::fs::remove_file(&module).unwrap();
    let started = Instant::now();
    while !hooks.status().up_to_date {
        assert!(started.elapsed() < WITHIN, "{:?}", hooks.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hooks.status().reloads, 0);
    assert_eq!(current_marker(&hooks).as_deref(), Some("good"));
}

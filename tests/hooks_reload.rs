//! Hot reload through real filesystem events: a watched temporary hooks directory, scripts
//! written, broken, deleted and saved editor-style (write a temporary file, rename it over the
//! script), and `reload_now` for the synchronous path.

use provisio::config::HookSettings;
use provisio::hooks::{HookContext, Hooks};
use provisio::lpconfig::Config;
use provisio::model::Space;
use provisio::request::{RequestInfo, RouteKind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

//! Hook scripts stored in the database (`hook_scripts`, migration V6), so a fleet of
//! instances on one PostgreSQL serves the same scripts without copying files, and each
//! tenant's admin can edit its own script through the API (`crate::api::hooks`).
//!
//! - **Versions.** Every save, rollback and deletion adds the next version of the script's
//!   name; nothing is overwritten. The live version is the newest, unless it is a deletion.
//! - **Validated before live.** [`Hooks::check_candidate`] compiles the set this instance
//!   would serve with the change (the production engine and limits, every script, so a module
//!   change that breaks an importer is caught too) and runs the script's fixtures (the
//!   `hooks test` format, stored beside the script); a refusal carries the compiler's or the
//!   fixture's message (`file:line:col`), and nothing is stored.
//! - **Pushed to every instance.** The change feed's topic `hooks` (the V3 trigger, as for
//!   the space snapshot in `crate::spaces`): a notice reloads at once, a (re)connect or a lag
//!   reloads whatever the version says, and a version check every half of
//!   `cache_max_staleness_seconds` is the backstop (and the only path on SQLite for other
//!   processes, such as `provisio hooks push`). The instance that wrote reloads before it
//!   answers ([`Hooks::refresh_database`]).
//! - **Fleet status.** Each server writes what it serves to `hook_instances` after every
//!   change and every [`HEARTBEAT`]; [`fleet_status`] shows whether every live instance
//!   serves the database's versions.
//!
//! How files and database scripts combine (`hooks.source`) is decided in
//! [`super::set::merge`]; docs/hooks.md, "Scripts in the database", is the operator's view.

use super::Hooks;
use super::set::{self, FileKind, Origin, StoredScript};
use super::tools::{Fixture, check_fixture};
use crate::config::HookSource;
use crate::document::RenderInput;
use crate::error::{AppError, FieldErrors};
use crate::model::{iso_time, now_ms};
use crate::store::{Change, DynStore, HookInstanceReport, Store, StoreResult};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often a server rewrites its report when nothing changed, so the status can tell a
/// live instance from one that stopped without saying so.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// A report older than this is shown as stale (and left out of the fleet's agreement).
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// Reports older than this are deleted (an instance that died without cleaning up).
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Most fixtures stored beside one script.
pub const MAX_FIXTURES: usize = 64;
/// Names no script may take: `/api/hooks/status` is a route of its own.
pub const RESERVED_NAMES: &[&str] = &["status"];
/// Longest script name (a domain name's limit).
const MAX_NAME_CHARS: usize = 253;

/// The live scripts of the database at one `hooks` change version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseScripts {
    /// The `hooks` change version read before the scripts (0: never read).
    pub version: i64,
    /// Every live script, by name.
    pub scripts: Vec<StoredScript>,
}

impl DatabaseScripts {
    /// Reads the version, then the live scripts (so a write in between is seen again).
    pub async fn load(store: &dyn Store) -> StoreResult<DatabaseScripts> {
        let version = store.change_version(Change::HOOKS).await?;
        let scripts = live_scripts(store).await?;
        Ok(DatabaseScripts { version, scripts })
    }
}

/// The database's live scripts, as the merge takes them.
pub async fn live_scripts(store: &dyn Store) -> StoreResult<Vec<StoredScript>> {
    Ok(store
        .live_hook_scripts()
        .await?
        .into_iter()
        .filter_map(|r| {
            Some(StoredScript {
                name: r.name,
                version: r.version,
                source: r.source?,
            })
        })
        .collect())
}

/// Who this process is in the fleet's status.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Random, per process start.
    pub id: String,
    /// Host name and process id, for people.
    pub host: String,
    /// When this process loaded its hooks (unix ms).
    pub started_at: i64,
}

impl Instance {
    /// A new identity for this process.
    pub fn new() -> Instance {
        let mut random = [0u8; 8];
        // Without randomness the id is the time and pid: still distinct per process.
        let id = match getrandom::fill(&mut random) {
            Ok(()) => hex::encode(random),
            Err(_) => format!("{:x}-{:x}", now_ms(), std::process::id()),
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_string());
        Instance {
            id,
            host: format!("{host} (pid {})", std::process::id()),
            started_at: now_ms(),
        }
    }
}

impl Default for Instance {
    fn default() -> Self {
        Instance::new()
    }
}

/// Checks a script name and says what it names: `default`, a module, or a space (a domain,
/// lower-cased). `Err` explains the rule.
pub fn parse_name(name: &str) -> Result<(String, FileKind), String> {
    let rule = "a script name is `default`, a module name (letters, digits, '_' and '-') or a \
                space's domain";
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if name.is_empty()
        || name.len() > MAX_NAME_CHARS
        || !plain
        || name.starts_with('.')
        || name.ends_with('.')
        || name.contains("..")
    {
        return Err(rule.to_string());
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!("{name:?} is reserved ({rule})"));
    }
    let name = if name.contains('.') {
        name.to_ascii_lowercase()
    } else {
        name.to_string()
    };
    match set::classify(&format!("{name}.rhai")) {
        Some(FileKind::Module) if !super::engine::is_module_name(&name) => Err(rule.to_string()),
        Some(kind) => Ok((name, kind)),
        None => Err(rule.to_string()),
    }
}

/// The API's word for a kind.
pub fn kind_name(kind: &FileKind) -> &'static str {
    match kind {
        FileKind::Default => "default",
        FileKind::Space(_) => "space",
        FileKind::Module => "module",
    }
}

/// One fixture stored beside a script: `hooks test`'s `fixture.toml` and `expected.xml` as
/// text, under the case's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredFixture {
    /// The case's name (its directory under `fixtures/` once pulled).
    pub name: String,
    /// The text of its `fixture.toml`.
    pub fixture: String,
    /// The text of its `expected.xml` (not needed when the fixture expects a status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

/// Reads the `fixtures` of a request body: an array of `{name, fixture, expected}` whose
/// names are plain and distinct and whose fixtures parse. `Err` names the fixture at fault
/// (with the TOML error's line and column).
pub fn parse_fixtures(value: Value) -> Result<Vec<StoredFixture>, String> {
    let fixtures: Vec<StoredFixture> = serde_json::from_value(value).map_err(|e| {
        format!("The fixtures must be an array of {{name, fixture, expected}} objects: {e}.")
    })?;
    check_fixtures(&fixtures)?;
    Ok(fixtures)
}

/// The rules of [`parse_fixtures`], for fixtures read from a directory too.
pub fn check_fixtures(fixtures: &[StoredFixture]) -> Result<(), String> {
    if fixtures.len() > MAX_FIXTURES {
        return Err(format!("At most {MAX_FIXTURES} fixtures per script."));
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in fixtures {
        let plain = !f.name.is_empty()
            && f.name.len() <= 100
            && !f.name.starts_with('.')
            && f.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !plain {
            return Err(format!(
                "Fixture name {:?}: letters, digits, '.', '_' and '-' only.",
                f.name
            ));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(format!("Fixture name {:?} is used twice.", f.name));
        }
        let fixture = Fixture::parse(&f.fixture).map_err(|e| format!("fixture {}: {e}", f.name))?;
        if fixture.expect_status.is_none() && f.expected.is_none() {
            return Err(format!(
                "fixture {}: give `expected` (the document) or `expect_status` in the fixture.",
                f.name
            ));
        }
    }
    Ok(())
}

/// The fixtures of a stored version (none when the column is empty; a column that does not
/// parse, which the API never writes, is logged and read as none).
pub fn stored_fixtures(column: Option<&str>) -> Vec<StoredFixture> {
    let Some(text) = column.filter(|t| !t.trim().is_empty()) else {
        return Vec::new();
    };
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "stored hook fixtures do not parse; ignored");
        Vec::new()
    })
}

/// The `fixtures` column for a list (`None` when empty).
pub fn fixtures_column(fixtures: &[StoredFixture]) -> Option<String> {
    if fixtures.is_empty() {
        return None;
    }
    serde_json::to_string(fixtures).ok()
}

/// The database's live scripts with `name` changed: replaced by `source`, or removed
/// (`None`). The candidate's own version is not known yet (0).
pub fn with_change(live: &[StoredScript], name: &str, source: Option<&str>) -> Vec<StoredScript> {
    let mut scripts: Vec<StoredScript> = live.iter().filter(|s| s.name != name).cloned().collect();
    if let Some(source) = source {
        scripts.push(StoredScript {
            name: name.to_string(),
            version: 0,
            source: source.to_string(),
        });
        scripts.sort_by(|a, b| a.name.cmp(&b.name));
    }
    scripts
}

/// A change that passed validation: the set it would make live, and what is worth a look.
pub struct Checked {
    /// The candidate set with the live engine (renders previews).
    pub hooks: Hooks,
    /// Warnings of the compiled scripts (a misspelt hook name…).
    pub warnings: Vec<String>,
}

/// Why a change is refused (each message with file, line and column where there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A script does not compile.
    Source(Vec<String>),
    /// A fixture fails.
    Fixtures(Vec<String>),
}

impl Refused {
    /// The 422 the API answers (field `source` or `fixtures`).
    pub fn into_error(self) -> AppError {
        let (field, messages) = match self {
            Refused::Source(m) => ("source", m),
            Refused::Fixtures(m) => ("fixtures", m),
        };
        let mut errors = FieldErrors::new();
        errors.insert(field.to_string(), messages);
        AppError::Validation(errors)
    }

    /// Every message, one per line (for the command line).
    pub fn lines(&self) -> Vec<String> {
        match self {
            Refused::Source(m) | Refused::Fixtures(m) => m.clone(),
        }
    }
}

impl Hooks {
    /// Validates a change before it is stored: compiles what this instance would serve if
    /// the database's live scripts were `scripts` (with the production engine and limits, the
    /// hooks directory's files per `hooks.source`), then runs `fixtures` on that set.
    /// Synchronous and CPU-bound (a runaway fixture runs to the deadline): call it on the
    /// blocking pool.
    pub fn check_candidate(
        &self,
        scripts: Vec<StoredScript>,
        fixtures: &[StoredFixture],
    ) -> Result<Checked, Refused> {
        let sources = match super::sources_for(&self.settings, &scripts) {
            Ok(sources) => sources,
            Err(e) => {
                return Err(Refused::Source(vec![format!(
                    "{}: cannot read the hooks directory: {e}",
                    self.dir.display()
                )]));
            }
        };
        let compiled = set::compile_sources(&self.engine, sources);
        let errors = compiled.errors();
        let Some(set) = compiled.set else {
            return Err(Refused::Source(errors));
        };
        let warnings = set.files.iter().flat_map(|f| f.warnings.clone()).collect();
        let candidate = Hooks::assemble(
            &self.settings,
            self.engine.clone(),
            set,
            DatabaseScripts {
                version: 0,
                scripts,
            },
            self.instance.clone(),
        );
        let failures: Vec<String> = fixtures
            .iter()
            .filter_map(|f| {
                let result = Fixture::parse(&f.fixture)
                    .and_then(|fixture| check_fixture(&fixture, f.expected.as_deref(), &candidate));
                result.err().map(|why| format!("fixture {}: {why}", f.name))
            })
            .collect();
        if !failures.is_empty() {
            return Err(Refused::Fixtures(failures));
        }
        Ok(Checked {
            hooks: candidate,
            warnings,
        })
    }

    /// The `hooks.source` of this instance.
    pub fn source(&self) -> HookSource {
        self.settings.source
    }

    /// The version of `name` this instance serves, and where from (`None`: not served).
    pub fn serving(&self, name: &str) -> Option<(Origin, Option<i64>)> {
        let file = format!("{name}.rhai");
        self.current
            .load()
            .files
            .iter()
            .find(|f| f.file == file)
            .map(|f| (f.origin, f.version))
    }

    /// Brings the database's scripts up to date: reads the `hooks` version and, when it
    /// differs from the one held (or with `force`), the live scripts, and recompiles when they
    /// changed (a failure keeps the previous set serving, logged and kept for the status).
    /// Returns whether the scripts changed. One refresh at a time. Nothing with
    /// `hooks.source = "files"`.
    pub async fn refresh_database(
        self: &Arc<Self>,
        store: &dyn Store,
        force: bool,
    ) -> StoreResult<bool> {
        if !self.settings.source.reads_database() {
            return Ok(false);
        }
        let _one = self.db_refresh.lock().await;
        let version = store.change_version(Change::HOOKS).await?;
        let held = self.database.load_full();
        // `!=`, not `>`: a database restored from a backup may go back in time.
        if version == held.version && !force {
            return Ok(false);
        }
        let scripts = live_scripts(store).await?;
        let changed = scripts != held.scripts;
        self.database
            .store(Arc::new(DatabaseScripts { version, scripts }));
        if changed {
            let hooks = self.clone();
            // Failures are logged, counted and kept for the status by reload_now.
            let _ = tokio::task::spawn_blocking(move || hooks.reload_now()).await;
            tracing::debug!(
                version,
                previous = held.version,
                "hook scripts of the database reloaded"
            );
        }
        Ok(changed)
    }

    /// What this instance serves, for `hook_instances`.
    pub fn instance_report(&self) -> HookInstanceReport {
        let status = self.status();
        let scripts: Vec<Value> = status
            .scripts
            .iter()
            .map(|f| {
                json!({
                    "name": f.file.trim_end_matches(".rhai"),
                    "kind": kind_name(&f.kind),
                    "origin": f.origin,
                    "version": f.version,
                    "overrides_file": f.overrides_file,
                })
            })
            .collect();
        let report = json!({
            "source": status.source,
            "database_version": status.database_version,
            "loaded_at": status.loaded_at,
            "up_to_date": status.up_to_date,
            "last_error": status.last_error,
            "scripts": scripts,
        });
        HookInstanceReport {
            instance: self.instance.id.clone(),
            host: self.instance.host.clone(),
            started_at: self.instance.started_at,
            seen_at: now_ms(),
            report: report.to_string(),
        }
    }

    /// Writes this instance's report (and forgets instances silent for [`FORGET_AFTER`]).
    pub async fn write_report(&self, store: &dyn Store) -> StoreResult<()> {
        let report = self.instance_report();
        let forget_before = report.seen_at - i64::try_from(FORGET_AFTER.as_millis()).unwrap_or(0);
        store.report_hook_instance(&report, forget_before).await
    }

    /// What changes the report: the live set, the reload history, the database version.
    fn report_marker(&self) -> (i64, u64, u64, bool, i64) {
        let status = self.status();
        let loaded_at = self.current.load().loaded_at;
        (
            loaded_at,
            status.reloads,
            status.reload_failures,
            status.up_to_date,
            status.database_version,
        )
    }
}

/// Keeps an instance's database scripts fresh and its report written, in the background;
/// [`KeepHooks::stop`] (or dropping it) ends the task.
pub struct KeepHooks {
    task: tokio::task::JoinHandle<()>,
    store: DynStore,
    instance: String,
}

impl KeepHooks {
    /// Starts the refresher on the current runtime: the change feed (when the store has
    /// one), the version check every `interval`, the report after every change and every
    /// [`HEARTBEAT`].
    pub fn start(hooks: Arc<Hooks>, store: DynStore, interval: Duration) -> KeepHooks {
        let instance = hooks.instance.id.clone();
        let task = tokio::spawn(keep(hooks, store.clone(), interval));
        KeepHooks {
            task,
            store,
            instance,
        }
    }

    /// Stops the refresher and deletes this instance's report (it no longer serves).
    pub async fn stop(self) {
        self.task.abort();
        if let Err(e) = self.store.forget_hook_instance(&self.instance).await {
            tracing::debug!(error = %e, "cannot delete this instance's hook report");
        }
    }
}

impl std::fmt::Debug for KeepHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepHooks")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Drop for KeepHooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for the next notice; never returns without a feed.
async fn next_notice(
    feed: &mut Option<tokio::sync::broadcast::Receiver<Change>>,
) -> Result<Change, RecvError> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The refresher of [`KeepHooks`].
async fn keep(hooks: Arc<Hooks>, store: DynStore, interval: Duration) {
    let mut feed = if hooks.settings.source.reads_database() {
        store.change_feed()
    } else {
        None
    };
    let failing = AtomicBool::new(false);
    let refresh = |force: bool| {
        let (hooks, store, failing) = (hooks.clone(), store.clone(), &failing);
        async move {
            match hooks.refresh_database(store.as_ref(), force).await {
                Ok(_) => {
                    if failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("hook scripts of the database refreshed again");
                    }
                }
                Err(e) => {
                    if !failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "cannot refresh the hook scripts of the database; the previous ones keep serving");
                    }
                }
            }
        }
    };
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut reported: Option<(i64, u64, u64, bool, i64)> = None;
    let mut reported_at = tokio::time::Instant::now();
    loop {
        let marker = hooks.report_marker();
        if reported != Some(marker) || reported_at.elapsed() >= HEARTBEAT {
            match hooks.write_report(store.as_ref()).await {
                Ok(()) => {
                    reported = Some(marker);
                    reported_at = tokio::time::Instant::now();
                }
                Err(e) => tracing::debug!(error = %e, "cannot write this instance's hook report"),
            }
        }
        tokio::select! {
            _ = tick.tick() => refresh(false).await,
            notice = next_notice(&mut feed) => match notice {
                Ok(change) if change.topic == Change::ALL => refresh(true).await,
                Ok(change) if change.concerns(Change::HOOKS) => {
                    // A notice of this instance's own write finds that write loaded already.
                    if change.version != hooks.database.load().version {
                        refresh(false).await;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => refresh(true).await,
                Err(RecvError::Closed) => {
                    tracing::warn!("change feed closed; hook scripts are refreshed by the periodic check only");
                    feed = None;
                }
            },
        }
    }
}

/// `GET /api/hooks/status`: this instance's status, the database's live versions, and each
/// instance's report, with whether the fleet agrees (every instance that reported within
/// [`STALE_AFTER`] serves every live database script at its live version, and nothing the
/// database no longer holds).
pub async fn fleet_status(hooks: &Hooks, store: &dyn Store) -> Result<Value, AppError> {
    let mut status = serde_json::to_value(hooks.status())
        .map_err(|e| AppError::Internal(format!("serialising the hook status: {e}")))?;
    let database: BTreeMap<String, i64> = store
        .live_hook_scripts()
        .await?
        .into_iter()
        .filter(|r| r.source.is_some())
        .map(|r| (r.name, r.version))
        .collect();
    let now = now_ms();
    let stale_ms = i64::try_from(STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
    let mut fleet_agrees = true;
    let mut instances = Vec::new();
    for r in store.hook_instances().await? {
        let report: Value = serde_json::from_str(&r.report).unwrap_or(Value::Null);
        let served: BTreeMap<String, i64> = report["scripts"]
            .as_array()
            .map(|scripts| {
                scripts
                    .iter()
                    .filter(|s| s["origin"] == "database")
                    .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["version"].as_i64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let stale = now.saturating_sub(r.seen_at) > stale_ms;
        let agrees = served == database;
        if !stale && !agrees {
            fleet_agrees = false;
        }
        instances.push(json!({
            "instance": r.instance,
            "host": r.host,
            "this": r.instance == hooks.instance.id,
            "started_at": iso_time(r.started_at),
            "seen_at": iso_time(r.seen_at),
            "stale": stale,
            "source": report["source"],
            "database_version": report["database_version"],
            "loaded_at": report["loaded_at"],
            "up_to_date": report["up_to_date"],
            "last_error": report["last_error"],
            "scripts": report["scripts"],
            "agrees": agrees,
        }));
    }
    status["database"] = json!(database);
    status["instances"] = Value::Array(instances);
    status["fleet_agrees"] = json!(fleet_agrees);
    Ok(status)
}

/// Renders the preview document of a dry run with a candidate set: the document, or the
/// refusal the client would get (with the script's error, file and line, for the author).
/// Synchronous: call it on the blocking pool.
pub fn preview(candidate: &Hooks, input: RenderInput) -> Value {
    match crate::document::render(input, candidate) {
        Ok(xml) => json!({ "status": 200, "document": xml }),
        Err(e) => {
            let detail = match &e {
                AppError::Hook(detail) => Some(detail.clone()),
                AppError::Denied { script, .. } => Some(format!("denied by {script}")),
                _ => None,
            };
            json!({
                "status": e.status(),
                "message": e.public_message(),
                "detail": detail,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("default").unwrap().1, FileKind::Default);
        assert_eq!(parse_name("policy").unwrap().1, FileKind::Module);
        assert_eq!(
            parse_name("Sip.Example.com").unwrap(),
            (
                "sip.example.com".to_string(),
                FileKind::Space("sip.example.com".into())
            )
        );
        for bad in [
            "", "status", "../x", "a/b", ".x", "x.", "a..b", "a b", "x.rhai/",
        ] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fixtures_are_checked() {
        let ok = json!([{"name": "a", "fixture": "[space]\ndomain = \"a.example\"\n", "expected": "<config/>"}]);
        assert_eq!(parse_fixtures(ok).unwrap().len(), 1);
        let twice = json!([
            {"name": "a", "fixture": "[space]\ndomain = \"a.example\"\n", "expected": "<config/>"},
            {"name": "a", "fixture": "[space]\ndomain = \"a.example\"\n", "expected": "<config/>"}
        ]);
        assert!(parse_fixtures(twice).unwrap_err().contains("twice"));
        let bad_toml = json!([{"name": "a", "fixture": "[space\n", "expected": "<config/>"}]);
        assert!(parse_fixtures(bad_toml).unwrap_err().contains("fixture a"));
        let no_expectation = json!([{"name": "a", "fixture": "[space]\ndomain = \"a.example\"\n"}]);
        assert!(parse_fixtures(no_expectation).is_err());
        assert!(parse_fixtures(json!({"name": "a"})).is_err());
        assert_eq!(stored_fixtures(None), Vec::new());
        let list = parse_fixtures(json!([{"name": "a", "fixture": "[space]\ndomain = \"a.example\"\n", "expected": "<config/>"}])).unwrap();
        assert_eq!(stored_fixtures(fixtures_column(&list).as_deref()), list);
    }
}

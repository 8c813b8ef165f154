//! Rhai hooks: per-tenant scripts that shape the provisioning document, sandboxed and
//! hot-reloaded. The script-facing reference is `docs/hooks.md`.
//!
//! - [`engine`] builds the one sandboxed engine (limits, deadline, import gate, logging);
//! - [`api`] is what scripts see (`config`, `section`, `request`, `account`, `password`,
//!   `deny`, `log_*`);
//! - [`set`] compiles a directory into a [`set::HookSet`] and formats errors as `file:line`;
//! - `reload` watches the directory and swaps sets atomically;
//! - [`db`] keeps the scripts stored in the database live on every instance, validates a
//!   script before it is stored, and reports what each instance serves;
//! - [`tools`] backs `provisio hooks check|test` and fixture rendering.
//!
//! **Order of execution** for one request: the scripts are `default.rhai`, then
//! `<space-domain>.rhai`; for each script in turn, `on_proxy` (on `proxy_0`, accounts only),
//! `on_auth_info` once per SIP password's `auth_info_N`, then `on_config` (always, anonymous
//! included, with `account` = `()`). This is FlexiAPI's order (proxy, auth, additional
//! sections), per script. All of it happens before overwrite-all and the value rule.
//!
//! **Failures.** `deny(status, message)` always refuses the request
//! ([`AppError::Denied`]). Any other script error (including a limit or the deadline) is
//! logged with file and line, then — per the space's `hook_failure` — fails the request
//! ([`AppError::Hook`], a generic 500: the client keeps its previous configuration) or, with
//! `skip`, serves the document without that script's changes.

pub mod api;
pub mod db;
pub mod engine;
mod reload;
pub mod set;
pub mod tools;

pub use reload::WatchGuard;

use crate::config::{HookSettings, HookSource};
use crate::error::AppError;
use crate::lpconfig::Config;
use crate::model::{Account, HookFailure, Password, Space, iso_time, now_ms};
use crate::request::RequestInfo;
use anyhow::Context as _;
use api::{ConfigHandle, DenyToken, Doc, SectionHandle, SharedDoc};
use arc_swap::ArcSwap;
use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, FnPtr, Scope};
use serde::Serialize;
use set::{Bound, FileReport, HookSet, Script, StoredScript};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Name of the metric counting reloads that failed to compile.
pub const RELOAD_FAILURES_METRIC: &str = "provisio_hook_reload_failures_total";
/// Name of the metric counting script failures at request time (label `scope`: `default` or
/// `space`, never the file, which names a tenant).
pub const RUN_FAILURES_METRIC: &str = "provisio_hook_failures_total";

/// Everything a hook call may read, gathered before the scripts run (scripts never reach the
/// database or the network).
#[derive(Debug, Clone)]
pub struct HookContext {
    /// The request's space (selects `<domain>.rhai`, and its failure mode).
    pub space: Space,
    /// The account's own space (realm, ui flags), when there is an account.
    pub account_space: Option<Space>,
    /// The request.
    pub request: RequestInfo,
    /// The account being provisioned; `None` for anonymous `/provisioning`.
    pub account: Option<Account>,
    /// Index in `config.sections` of `proxy_0` (after `reg_identity` was added).
    pub proxy_section: Option<usize>,
    /// Index in `config.sections` of each SIP password's `auth_info_N`, with that password.
    pub auth_info_sections: Vec<(usize, Password)>,
}

/// Reload bookkeeping, shown by [`Hooks::status`].
#[derive(Debug, Default)]
struct ReloadState {
    reloads: u64,
    failures: u64,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    healthy: bool,
    /// Digest of the files of the latest failed reload, until a reload succeeds or the
    /// files match the live set again: the same broken save is reported once.
    failed_digest: Option<set::Digest>,
}

/// What an operator needs to know about the live scripts (served as JSON on an admin route).
#[derive(Debug, Clone, Serialize)]
pub struct HookStatus {
    /// This instance's id (its row in the fleet's status).
    pub instance: String,
    /// `hooks.source`: `files`, `database` or `both`.
    pub source: &'static str,
    /// The hooks directory.
    pub dir: String,
    /// The database's `hooks` change version the live set reflects (0: never read).
    pub database_version: i64,
    /// Whether a watcher is reloading on change.
    pub watching: bool,
    /// The live scripts and modules, with the hooks each defines.
    pub scripts: Vec<FileReport>,
    /// When the live set was compiled (ISO 8601).
    pub loaded_at: String,
    /// Reloads that swapped in a changed set since start (the initial load, and events that
    /// left every script's text as it was, not counted).
    pub reloads: u64,
    /// Reloads refused because a script did not compile (each distinct broken content once).
    pub reload_failures: u64,
    /// The latest reload error (`file:line:col: message`, one per line), if any ever happened.
    pub last_error: Option<String>,
    /// When that error happened (ISO 8601).
    pub last_error_at: Option<String>,
    /// `false` when the files on disk do not compile and an older set is serving.
    pub up_to_date: bool,
}

/// The live set of compiled scripts, with the engine that runs them.
pub struct Hooks {
    engine: Arc<Engine>,
    settings: HookSettings,
    /// The live scripts of the database, as last read (merged with the files at each
    /// reload, per `hooks.source`).
    database: ArcSwap<db::DatabaseScripts>,
    /// Database refreshes run one at a time.
    db_refresh: tokio::sync::Mutex<()>,
    /// Who this process is in the fleet's status.
    instance: db::Instance,
    dir: PathBuf,
    current: ArcSwap<HookSet>,
    state: Mutex<ReloadState>,
    reload_lock: Mutex<()>,
    watchers: AtomicUsize,
    space_maps: SpaceMaps,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What the hooks of one request read, built once per request and frozen
/// ([`api::FrozenMap`]): every hook call of every script gets these same values (a
/// reference count each, never a copy), and no script can change what the next one sees.
struct Args {
    request: Dynamic,
    account: Dynamic,
    /// The `password` argument for each of `HookContext::auth_info_sections`, built at the
    /// first `on_auth_info` call.
    passwords: Option<Vec<Dynamic>>,
}

impl Args {
    fn new(ctx: &HookContext, home: &Space, spaces: &SpaceMaps) -> Args {
        // The request's space and the account's are usually the same: one map, copied (a
        // copy shares its strings).
        let space = spaces.get(&ctx.space);
        let account = ctx.account.as_ref().map_or(Dynamic::UNIT, |a| {
            let home_map = if home == &ctx.space {
                space.clone()
            } else {
                spaces.get(home)
            };
            api::frozen(api::account_map(a, home, home_map))
        });
        let request = api::frozen(api::request_map(&ctx.request, space));
        Args {
            request,
            account,
            passwords: None,
        }
    }
}

/// The space maps scripts see (`request.space`, `account.space`), kept between requests:
/// spaces change a few times a day, and building a map costs an allocation per string where
/// copying one only counts references. Keyed by domain; an entry is used only while the
/// space is unchanged (compared whole), and the cache is bounded.
#[derive(Default)]
struct SpaceMaps(Mutex<HashMap<String, (Space, rhai::Map)>>);

/// Spaces whose maps are kept (beyond this the cache starts afresh).
const SPACE_MAPS_MAX: usize = 1024;

impl SpaceMaps {
    fn get(&self, space: &Space) -> rhai::Map {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, map)) = cache.get(&space.domain)
            && cached == space
        {
            return map.clone();
        }
        let map = api::space_map(space);
        if cache.len() >= SPACE_MAPS_MAX {
            cache.clear();
        }
        cache.insert(space.domain.clone(), (space.clone(), map.clone()));
        map
    }
}

/// Why one script stopped.
enum Stop {
    Denied(DenyToken),
    Failed(String),
}

impl Hooks {
    /// Builds the engine and compiles the hooks directory. A script that does not compile is
    /// an error naming `file:line` (the server refuses to start on it); a missing directory is
    /// an empty set and a warning.
    pub fn load(settings: &HookSettings) -> anyhow::Result<Hooks> {
        Hooks::load_with(settings, db::DatabaseScripts::default())
    }

    /// [`Hooks::load`] with the scripts read from the database (served per `hooks.source`).
    pub fn load_with(
        settings: &HookSettings,
        database: db::DatabaseScripts,
    ) -> anyhow::Result<Hooks> {
        let dir = settings.dir.clone();
        if settings.source.reads_files() && !dir.exists() {
            tracing::warn!(dir = %dir.display(), "hooks directory does not exist: no hook scripts");
        }
        let engine = engine::new_engine(settings, &dir);
        let sources = sources_for(settings, &database.scripts)
            .with_context(|| format!("reading hooks directory {}", dir.display()))?;
        let compiled = set::compile_sources(&engine, sources);
        let errors = compiled.errors();
        let Some(set) = compiled.set else {
            anyhow::bail!("hook scripts do not compile:\n  {}", errors.join("\n  "));
        };
        log_loaded(&set, "hook scripts loaded");
        Ok(Hooks::assemble(
            settings,
            Arc::new(engine),
            set,
            database,
            db::Instance::new(),
        ))
    }

    /// An engine with no script live, to validate sets with ([`Hooks::check_candidate`]:
    /// `provisio hooks push`), whatever the live scripts are.
    pub fn validator(settings: &HookSettings) -> Hooks {
        let engine = engine::new_engine(settings, &settings.dir);
        Hooks::assemble(
            settings,
            Arc::new(engine),
            HookSet::default(),
            db::DatabaseScripts::default(),
            db::Instance::new(),
        )
    }

    /// A healthy [`Hooks`] serving `set`.
    fn assemble(
        settings: &HookSettings,
        engine: Arc<Engine>,
        set: HookSet,
        database: db::DatabaseScripts,
        instance: db::Instance,
    ) -> Hooks {
        Hooks {
            engine,
            settings: settings.clone(),
            database: ArcSwap::from_pointee(database),
            db_refresh: tokio::sync::Mutex::new(()),
            instance,
            dir: settings.dir.clone(),
            current: ArcSwap::from_pointee(set),
            state: Mutex::new(ReloadState {
                healthy: true,
                ..ReloadState::default()
            }),
            reload_lock: Mutex::new(()),
            watchers: AtomicUsize::new(0),
            space_maps: SpaceMaps::default(),
        }
    }

    /// The hooks directory this set is read from.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Runs the space's scripts on the document (synchronous and CPU-bound: call it on the
    /// blocking pool). The live set is read once, so a reload mid-request does not mix sets.
    /// A space without scripts costs one atomic load.
    pub fn run(&self, ctx: &HookContext, config: &mut Config) -> Result<(), AppError> {
        let set = self.current.load_full();
        let scripts = set.scripts_for(&ctx.space.domain);
        if scripts.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let budget = Duration::from_millis(self.settings.deadline_ms);
        let _deadline = engine::enter_deadline(budget);
        let doc: SharedDoc = Arc::new(Mutex::new(Doc::from_config(std::mem::take(config))));
        let home = ctx.account_space.as_ref().unwrap_or(&ctx.space);
        let mut args = Args::new(ctx, home, &self.space_maps);
        let skip = ctx.space.hook_failure == HookFailure::Skip;

        let mut result = Ok(());
        for script in &scripts {
            let snapshot = skip.then(|| api::lock(&doc).clone());
            let outcome = self.run_script(script, ctx, &doc, &mut args, &home.realm);
            match outcome {
                Ok(()) => {}
                Err(Stop::Denied(token)) => {
                    tracing::info!(
                        script = %script.file,
                        space = %ctx.space.domain,
                        status = token.status,
                        "request denied by hook"
                    );
                    result = Err(AppError::Denied {
                        status: token.status,
                        message: token.message,
                        script: script.file.to_string(),
                    });
                    break;
                }
                Err(Stop::Failed(detail)) => {
                    // The scope, not the file: a space script's name is a tenant's domain.
                    let scope = if &*script.file == "default.rhai" {
                        "default"
                    } else {
                        "space"
                    };
                    metrics::counter!(RUN_FAILURES_METRIC, "scope" => scope).increment(1);
                    match snapshot {
                        Some(before) => {
                            tracing::error!(
                                script = %script.file,
                                space = %ctx.space.domain,
                                error = %detail,
                                "hook script failed; serving the document without its changes \
                                 (hook_failure = skip)"
                            );
                            *api::lock(&doc) = before;
                        }
                        None => {
                            tracing::error!(
                                script = %script.file,
                                space = %ctx.space.domain,
                                error = %detail,
                                "hook script failed; request refused (hook_failure = fail)"
                            );
                            result = Err(AppError::Hook(detail));
                            break;
                        }
                    }
                }
            }
        }
        *config = std::mem::take(&mut *api::lock(&doc)).into_config();
        metrics::histogram!(crate::telemetry::HOOK_DURATION)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Calls one script's hooks in order.
    fn run_script(
        &self,
        script: &Script,
        ctx: &HookContext,
        doc: &SharedDoc,
        args: &mut Args,
        realm: &str,
    ) -> Result<(), Stop> {
        let _script = engine::enter_script(script.file.clone());
        if script.hooks.proxy
            && let Some(id) = ctx.proxy_section
            && api::lock(doc).contains_id(id)
        {
            let section = Dynamic::from(SectionHandle::new(doc.clone(), id));
            let call_args = (section, args.request.clone(), args.account.clone());
            self.call(script, "on_proxy", call_args)?;
        }
        if script.hooks.auth_info {
            let account = &args.account;
            let passwords = args.passwords.get_or_insert_with(|| {
                ctx.auth_info_sections
                    .iter()
                    .map(|(_, p)| api::frozen(api::password_map(p, realm, account.clone())))
                    .collect()
            });
            for ((id, _), password) in ctx.auth_info_sections.iter().zip(passwords.iter()) {
                // An earlier script may have removed the section: nothing to call on.
                if !api::lock(doc).contains_id(*id) {
                    continue;
                }
                let section = Dynamic::from(SectionHandle::new(doc.clone(), *id));
                let call_args = (section, args.request.clone(), password.clone());
                self.call(script, "on_auth_info", call_args)?;
            }
        }
        if script.hooks.config {
            let config = Dynamic::from(ConfigHandle::new(doc.clone()));
            let call_args = (config, args.request.clone(), args.account.clone());
            self.call(script, "on_config", call_args)?;
        }
        Ok(())
    }

    /// One hook call, in a fresh scope. The script's top level (its `import`s and `const`s)
    /// was evaluated once at load time and is bound to its functions; only a script with a
    /// `private` hook has it evaluated again before each call.
    fn call(
        &self,
        script: &Script,
        name: &'static str,
        args: (Dynamic, Dynamic, Dynamic),
    ) -> Result<(), Stop> {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match &script.bound {
            Bound::Once(ast) => FnPtr::new(name)
                .and_then(|hook| hook.call::<Dynamic>(&self.engine, ast, args))
                .map_err(|err| match *err {
                    // The call itself adds a frame naming the hook: drop it, as
                    // `call_fn` does, so errors read the same either way.
                    EvalAltResult::ErrorInFunctionCall(fn_name, _, inner, _) if fn_name == name => {
                        inner
                    }
                    _ => err,
                }),
            Bound::EachCall => self.engine.call_fn_with_options::<Dynamic>(
                CallFnOptions::new().eval_ast(true).rewind_scope(true),
                &mut Scope::new(),
                &script.ast,
                name,
                args,
            ),
        }));
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(self.stop_reason(script, name, &err)),
            Err(_) => Err(Stop::Failed(format!("{}: {name} panicked", script.file))),
        }
    }

    fn stop_reason(&self, script: &Script, hook: &str, err: &EvalAltResult) -> Stop {
        if let EvalAltResult::ErrorTerminated(token, _) = err.unwrap_inner() {
            if let Some(deny) = token.read_lock::<DenyToken>() {
                return Stop::Denied(deny.clone());
            }
            if token
                .clone()
                .into_string()
                .is_ok_and(|s| s == engine::DEADLINE_TOKEN)
            {
                return Stop::Failed(format!(
                    "{} (deadline of {} ms for all hooks of the request exceeded)",
                    set::describe_run_error(script, hook, err),
                    self.settings.deadline_ms
                ));
            }
        }
        Stop::Failed(set::describe_run_error(script, hook, err))
    }

    /// Reads the directory and, when its scripts differ from the live set's (a SHA-256 of
    /// names and sources), recompiles it and swaps the new set in atomically. Unchanged
    /// files are not a reload: nothing is compiled, swapped or counted. If any script fails
    /// to compile, the error is logged (file and line), counted
    /// (`provisio_hook_reload_failures_total`) and kept for [`Hooks::status`], and the
    /// previous set stays live; the same broken content found again (an editor saving it
    /// twice) is not logged or counted again.
    pub fn reload_now(&self) -> Result<(), String> {
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let database = self.database.load_full();
        let sources = match sources_for(&self.settings, &database.scripts) {
            Ok(sources) => sources,
            Err(e) => {
                let error = format!("{}: cannot read the directory: {e}", self.dir.display());
                self.reload_failed(&error, None);
                return Err(error);
            }
        };
        if sources.digest == self.current.load().digest {
            // A save of the same text, a revert to the live version, an event that was not
            // a change: the files on disk are what is serving.
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.healthy = true;
            state.failed_digest = None;
            tracing::debug!(dir = %self.dir.display(), "hook scripts unchanged; not reloaded");
            return Ok(());
        }
        {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.failed_digest == Some(sources.digest) {
                // Already logged and counted once for exactly these files.
                return Err(state.last_error.clone().unwrap_or_default());
            }
        }
        let digest = sources.digest;
        let compiled = set::compile_sources(&self.engine, sources);
        let errors = compiled.errors();
        match compiled.set {
            Some(set) => {
                log_loaded(&set, "hook scripts reloaded");
                self.current.store(Arc::new(set));
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.reloads += 1;
                state.healthy = true;
                state.failed_digest = None;
                Ok(())
            }
            None => {
                let error = errors.join("\n");
                self.reload_failed(&error, Some(digest));
                Err(error)
            }
        }
    }

    /// Logs, counts and records a reload that failed (`digest`: of the files that did not
    /// compile, so the same files are not reported twice).
    fn reload_failed(&self, errors: &str, digest: Option<set::Digest>) {
        for line in errors.lines() {
            tracing::error!(
                error = %line,
                "hook scripts not reloaded: a script does not compile; the previous \
                 scripts stay live"
            );
        }
        metrics::counter!(RELOAD_FAILURES_METRIC).increment(1);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.failures += 1;
        state.last_error = Some(errors.to_string());
        state.last_error_at = Some(now_ms());
        state.healthy = false;
        state.failed_digest = digest;
    }

    /// Starts watching the hooks directory (debounced by `debounce_ms`); every change to a
    /// `*.rhai` file triggers [`Hooks::reload_now`]. Dropping the guard stops the watcher.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<WatchGuard> {
        reload::start(
            self,
            Duration::from_millis(self.settings.debounce_ms.max(1)),
        )
    }

    /// Loaded scripts, the hooks each defines, the reload history.
    pub fn status(&self) -> HookStatus {
        let set = self.current.load();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        HookStatus {
            instance: self.instance.id.clone(),
            source: self.settings.source.as_str(),
            dir: self.dir.display().to_string(),
            database_version: self.database.load().version,
            watching: self.watchers.load(Ordering::Relaxed) > 0,
            scripts: set.files.clone(),
            loaded_at: iso_time(set.loaded_at),
            reloads: state.reloads,
            reload_failures: state.failures,
            last_error: state.last_error.clone(),
            last_error_at: state.last_error_at.map(iso_time),
            up_to_date: state.healthy,
        }
    }
}

/// The scripts to compile under `hooks.source`: the directory's, the database's, or both
/// (the database's replacing files of the same name).
fn sources_for(
    settings: &HookSettings,
    database: &[StoredScript],
) -> std::io::Result<set::Sources> {
    Ok(match settings.source {
        HookSource::Files => set::read_sources(&settings.dir)?,
        HookSource::Both => set::merge(Some(set::read_sources(&settings.dir)?), database),
        HookSource::Database => set::merge(None, database),
    })
}

fn log_loaded(set: &HookSet, what: &str) {
    for f in &set.files {
        for w in &f.warnings {
            tracing::warn!(warning = %w, "hook script");
        }
    }
    let scripts: Vec<String> = set
        .files
        .iter()
        .map(|f| {
            if f.hooks.is_empty() {
                f.file.clone()
            } else {
                format!("{} ({})", f.file, f.hooks.join(", "))
            }
        })
        .collect();
    tracing::info!(count = set.files.len(), scripts = %scripts.join(", "), "{what}");
}

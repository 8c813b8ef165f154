//! The one sandboxed Rhai [`Engine`]: built once per [`super::Hooks`], immutable afterwards,
//! shared by every request thread. This is the only place that sets limits or registers
//! anything.
//!
//! Why `Engine::new_raw()` plus chosen packages rather than `Engine::new()` minus things: the
//! raw engine starts with no module resolver (no file access), no `print` to stdout and no
//! clock, so anything not added here is simply absent — a future Rhai release that adds a
//! capability to `Engine::new()` cannot silently widen the sandbox. We add the language core,
//! logic, maths, arrays, maps and the string library; we leave out the time package (scripts
//! must be deterministic so fixtures stay golden) and blobs (nothing to do with bytes).
//!
//! Per-request state (the wall-clock deadline, the script being run, whether imports may be
//! resolved) lives in thread-locals: the engine is shared, but a hook call runs start to end
//! on one thread.

use crate::config::HookSettings;
use rhai::module_resolvers::FileModuleResolver;
use rhai::packages::{
    BasicArrayPackage, BasicMapPackage, BasicMathPackage, BitFieldPackage, CorePackage,
    LogicPackage, MoreStringPackage, Package,
};
use rhai::{Dynamic, Engine, EvalAltResult, Module, ModuleResolver, Position, Shared};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Modules one hook call may load (imports are resolved at load time; this bounds nesting).
pub const MAX_MODULES: usize = 16;
/// Functions one script may define (Rhai's guard against closure-spam at parse time).
pub const MAX_FUNCTIONS: usize = 256;
/// Variables alive at once in one hook call.
pub const MAX_VARIABLES: usize = 1_000;
/// Bytes (names + values) a document may grow to while scripts run: bounds memory when a
/// script sets many large values, which the per-value string limit alone does not.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Wall-clock budget for compiling one script, imported modules' top-level code included.
pub const LOAD_DEADLINE: Duration = Duration::from_secs(2);
/// How often (in Rhai operations) the deadline is checked: every 16th operation. Once past
/// the deadline, a script runs on for at most this many operations, and an operation can be
/// long — a native call (sorting a big array, replacing in a long string) or Rhai's size
/// check of a big array after each change — so checking every 256 operations let a script
/// overrun the deadline by far more than 10 % (the deadline test in `tests/hooks_sandbox.rs`
/// is such a script). The clock is [`quanta`]'s (the CPU's time-stamp counter where it is
/// reliable, a few nanoseconds a read); checking every 4th operation cost the bundled
/// scripts about 3 % of the hook stage in the progress callback, every 16th a quarter of that.
const DEADLINE_CHECK_MASK: u64 = 16 - 1;
/// Termination token of a script stopped by the deadline.
pub const DEADLINE_TOKEN: &str = "provisio: hook deadline exceeded";

thread_local! {
    static DEADLINE: Cell<Option<quanta::Instant>> = const { Cell::new(None) };
    static SCRIPT: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
    static LOADING: Cell<bool> = const { Cell::new(false) };
    static OVERLAY: RefCell<Option<Arc<ModuleOverlay>>> = const { RefCell::new(None) };
}

/// The modules `import` may resolve while one set is compiled, when that set holds scripts
/// stored in the database (`super::db`): the database's modules by name (they win over files
/// of the same name), and whether the hooks directory supplies the others.
#[derive(Debug, Default)]
pub struct ModuleOverlay {
    /// Module name → source, from the database.
    pub modules: HashMap<String, String>,
    /// Whether a module the database does not hold is looked for in the hooks directory.
    pub files: bool,
}

/// Restores the previous module overlay of this thread when dropped.
pub struct OverlayGuard(Option<Arc<ModuleOverlay>>);

impl Drop for OverlayGuard {
    fn drop(&mut self) {
        let prev = self.0.take();
        OVERLAY.with(|o| *o.borrow_mut() = prev);
    }
}

/// Makes `overlay` the modules `import` resolves on this thread (`None`: the hooks directory
/// alone, as without a database), until the guard drops.
pub fn enter_overlay(overlay: Option<Arc<ModuleOverlay>>) -> OverlayGuard {
    OverlayGuard(OVERLAY.with(|o| std::mem::replace(&mut *o.borrow_mut(), overlay)))
}

/// Where an imported module comes from.
enum Found {
    /// The database's source.
    Memory(String),
    /// The hooks directory.
    Files,
    /// Nowhere: the directory is not read and the database has no such module.
    Nowhere,
}

/// Looks a module name up in this thread's overlay.
fn lookup(name: &str) -> Found {
    OVERLAY.with(|o| match &*o.borrow() {
        None => Found::Files,
        Some(overlay) => match overlay.modules.get(name) {
            Some(source) => Found::Memory(source.clone()),
            None if overlay.files => Found::Files,
            None => Found::Nowhere,
        },
    })
}

/// Compiles a module held in memory, its source named after the module (as the file
/// resolver names a file's), errors wrapped as the file resolver wraps them.
fn compile_module(
    engine: &Engine,
    name: &str,
    source: &str,
    pos: Position,
) -> Result<rhai::AST, Box<EvalAltResult>> {
    let mut ast = engine.compile(source).map_err(|e| {
        Box::new(EvalAltResult::ErrorInModule(
            name.to_string(),
            Box::new(e.into()),
            pos,
        ))
    })?;
    ast.set_source(name);
    Ok(ast)
}

/// Restores the previous deadline of this thread when dropped.
pub struct DeadlineGuard(Option<quanta::Instant>);

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.0));
    }
}

/// Sets the wall-clock deadline of every hook call made on this thread, `budget` from now,
/// until the guard drops.
pub fn enter_deadline(budget: Duration) -> DeadlineGuard {
    let deadline = quanta::Instant::now() + budget;
    DeadlineGuard(DEADLINE.with(|d| d.replace(Some(deadline))))
}

/// Restores the previous "current script" of this thread when dropped.
pub struct ScriptGuard(Option<Arc<str>>);

impl Drop for ScriptGuard {
    fn drop(&mut self) {
        let prev = self.0.take();
        SCRIPT.with(|s| *s.borrow_mut() = prev);
    }
}

/// Names the script running on this thread, so `print` and logs can say which file spoke.
pub fn enter_script(file: Arc<str>) -> ScriptGuard {
    ScriptGuard(SCRIPT.with(|s| s.borrow_mut().replace(file)))
}

/// The script running on this thread (for log fields), or `"?"`.
pub fn current_script() -> Arc<str> {
    SCRIPT
        .with(|s| s.borrow().clone())
        .unwrap_or_else(|| Arc::from("?"))
}

/// Restores the previous loading flag of this thread when dropped.
pub struct LoadingGuard(bool);

impl Drop for LoadingGuard {
    fn drop(&mut self) {
        LOADING.with(|l| l.set(self.0));
    }
}

/// Allows `import` resolution on this thread (only while a hook set is being compiled).
pub fn enter_loading() -> LoadingGuard {
    LoadingGuard(LOADING.with(|l| l.replace(true)))
}

/// Whether a name can be imported: a plain file stem, so `import` cannot leave the hooks
/// directory (`..`, `/`, absolute paths) and cannot name a space script (those have dots).
pub fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name != "default"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The module resolver: Rhai's [`FileModuleResolver`] rooted at the hooks directory (cache
/// off, so every reload reads the files afresh), behind a gate that accepts only plain module
/// names, only files that really are inside the directory, and only while a set is being
/// compiled — at request time every import is already embedded in the script's AST
/// (`compile_into_self_contained`), so a dynamic import path is refused instead of touching
/// the disk. While a set holding database scripts compiles, a module the database holds is
/// compiled from memory instead ([`ModuleOverlay`]), and with `hooks.source = "database"`
/// the directory is not looked at.
struct HooksDirResolver {
    dir: PathBuf,
    inner: FileModuleResolver,
}

impl HooksDirResolver {
    fn new(dir: &Path) -> HooksDirResolver {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let mut inner = FileModuleResolver::new_with_path(&dir);
        inner.enable_cache(false);
        HooksDirResolver { dir, inner }
    }

    /// Refuses imports outside loading and names that are not plain module names.
    fn gate(path: &str, pos: Position) -> Result<(), Box<EvalAltResult>> {
        let refuse = |why: String| -> Result<(), Box<EvalAltResult>> {
            Err(Box::new(EvalAltResult::ErrorRuntime(why.into(), pos)))
        };
        if !LOADING.with(Cell::get) {
            return refuse(format!(
                "import {path:?} at run time: imports must be string literals, resolved when \
                 the scripts are loaded"
            ));
        }
        if !is_module_name(path) {
            return refuse(format!(
                "import {path:?}: only modules of the hooks directory can be imported, by \
                 plain name (letters, digits, '_' and '-'; no path, no extension)"
            ));
        }
        Ok(())
    }

    /// Checks that the module file is really inside the hooks directory.
    fn check(&self, path: &str, pos: Position) -> Result<(), Box<EvalAltResult>> {
        let refuse = |why: String| -> Result<(), Box<EvalAltResult>> {
            Err(Box::new(EvalAltResult::ErrorRuntime(why.into(), pos)))
        };
        // Canonical now, not at start: the directory may have been created since.
        let dir = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        let file = dir.join(format!("{path}.rhai"));
        match file.canonicalize() {
            Ok(real) if real.starts_with(&dir) => Ok(()),
            Ok(_) => refuse(format!(
                "import {path:?}: the module file leaves the hooks directory"
            )),
            Err(_) => Err(Box::new(EvalAltResult::ErrorModuleNotFound(
                path.to_string(),
                pos,
            ))),
        }
    }
}

impl ModuleResolver for HooksDirResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        Self::gate(path, pos)?;
        match lookup(path) {
            Found::Memory(source) => {
                let ast = compile_module(engine, path, &source, pos)?;
                let module =
                    Module::eval_ast_as_new(rhai::Scope::new(), &ast, engine).map_err(|err| {
                        Box::new(EvalAltResult::ErrorInModule(path.to_string(), err, pos))
                    })?;
                Ok(module.into())
            }
            Found::Files => {
                self.check(path, pos)?;
                // No source path: relative names resolve against the hooks directory only.
                self.inner.resolve(engine, None, path, pos)
            }
            Found::Nowhere => Err(Box::new(EvalAltResult::ErrorModuleNotFound(
                path.to_string(),
                pos,
            ))),
        }
    }

    fn resolve_ast(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Option<Result<rhai::AST, Box<EvalAltResult>>> {
        if let Err(e) = Self::gate(path, pos) {
            return Some(Err(e));
        }
        match lookup(path) {
            Found::Memory(source) => Some(compile_module(engine, path, &source, pos)),
            Found::Files => {
                if let Err(e) = self.check(path, pos) {
                    return Some(Err(e));
                }
                self.inner.resolve_ast(engine, None, path, pos)
            }
            Found::Nowhere => Some(Err(Box::new(EvalAltResult::ErrorModuleNotFound(
                path.to_string(),
                pos,
            )))),
        }
    }
}

/// Builds the sandboxed engine for a hooks directory. Limits come from [`HookSettings`] and
/// are set explicitly, so debug and release builds behave the same (Rhai's own defaults
/// differ between them).
pub fn new_engine(settings: &HookSettings, dir: &Path) -> Engine {
    let mut engine = Engine::new_raw();
    // One module for all the packages: Rhai looks a function up in every global module in
    // turn, and up to 2^n times more for functions with `Dynamic` parameters (`set`), so
    // seven package modules made function resolution the costliest single part of the hook
    // stage. Merged, each lookup is one search of this module and one of the functions
    // registered below (searched first, so `sleep` is still shadowed).
    let mut library = Module::new();
    for package in [
        CorePackage::new().as_shared_module(),
        LogicPackage::new().as_shared_module(),
        BasicMathPackage::new().as_shared_module(),
        BitFieldPackage::new().as_shared_module(),
        BasicArrayPackage::new().as_shared_module(),
        BasicMapPackage::new().as_shared_module(),
        MoreStringPackage::new().as_shared_module(),
    ] {
        library.combine_flatten(Module::clone(&package));
    }
    library.build_index();
    engine.register_global_module(library.into());

    engine
        .set_max_operations(settings.max_operations)
        .set_max_call_levels(settings.max_call_levels)
        .set_max_expr_depths(settings.max_expr_depth, settings.max_function_expr_depth)
        .set_max_string_size(settings.max_string_size)
        .set_max_array_size(settings.max_array_size)
        .set_max_map_size(settings.max_map_size)
        .set_max_modules(MAX_MODULES)
        .set_max_functions(MAX_FUNCTIONS)
        .set_max_variables(MAX_VARIABLES)
        .set_strict_variables(true);
    engine.disable_symbol("eval");
    engine.set_module_resolver(HooksDirResolver::new(dir));

    // Calibrate the clock now (once per process, a few milliseconds) rather than in the
    // first request's budget.
    let _ = quanta::Instant::now();
    engine.on_progress(|ops| {
        if ops & DEADLINE_CHECK_MASK != 0 {
            return None;
        }
        match DEADLINE.with(Cell::get) {
            Some(deadline) if quanta::Instant::now() >= deadline => {
                Some(Dynamic::from(DEADLINE_TOKEN))
            }
            _ => None,
        }
    });
    engine.on_print(|text| {
        tracing::info!(target: "provisio::hooks::script", script = %current_script(), "{text}");
    });
    engine.on_debug(|text, source, pos| {
        let script = source.map(Arc::from).unwrap_or_else(current_script);
        tracing::debug!(
            target: "provisio::hooks::script",
            script = %script,
            line = pos.line().unwrap_or(0),
            "{text}"
        );
    });

    super::api::register(&mut engine);
    engine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_plain_stems() {
        assert!(is_module_name("nat"));
        assert!(is_module_name("linphone_ua-2"));
        for bad in [
            "",
            "default",
            "../etc/passwd",
            "/etc/passwd",
            "a.b",
            "a/b",
            "a\\b",
            "..",
        ] {
            assert!(!is_module_name(bad), "{bad}");
        }
    }

    #[test]
    fn guards_restore_thread_state() {
        {
            let _g = enter_deadline(Duration::from_secs(1));
            assert!(
                DEADLINE
                    .with(Cell::get)
                    .is_some_and(|d| d > quanta::Instant::now())
            );
            let _s = enter_script(Arc::from("a.rhai"));
            assert_eq!(&*current_script(), "a.rhai");
        }
        assert_eq!(DEADLINE.with(Cell::get), None);
        assert_eq!(&*current_script(), "?");
    }
}

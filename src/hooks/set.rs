//! A [`HookSet`]: every script of the hooks directory, compiled, with the hooks each one
//! defines — the unit that reloads swap atomically. Also the error formatting shared by
//! load-time and run-time failures (always `file:line`).
//!
//! Which file is what:
//! - `default.rhai` runs for every space;
//! - a file named after a domain (`sip.example.com.rhai`: the stem has a dot) runs for the
//!   space with that domain, after `default.rhai`;
//! - any other `NAME.rhai` (no dot in NAME) is a module, used only through `import "NAME"`.
//!
//! Hidden files (editor swap and backup files start with `.`) are ignored.

use super::engine::{
    LOAD_DEADLINE, ModuleOverlay, enter_deadline, enter_loading, enter_overlay, enter_script,
    is_module_name,
};
use rhai::{AST, Engine, EvalAltResult, Position, Scope};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The hook functions a script may define, with the parameters each takes.
pub const HOOKS: [(&str, [&str; 3]); 3] = [
    ("on_proxy", ["section", "request", "account"]),
    ("on_auth_info", ["section", "request", "password"]),
    ("on_config", ["config", "request", "account"]),
];

/// What a file is to the hooks machinery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "domain")]
pub enum FileKind {
    /// `default.rhai`: every space.
    Default,
    /// `<domain>.rhai`: the space with this (lower-cased) domain.
    Space(String),
    /// A module for `import`.
    Module,
}

/// Which hooks a script defines (found once, at load time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defined {
    /// `on_proxy(section, request, account)`.
    pub proxy: bool,
    /// `on_auth_info(section, request, password)`.
    pub auth_info: bool,
    /// `on_config(config, request, account)`.
    pub config: bool,
}

impl Defined {
    /// Hook names, in call order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.proxy {
            v.push("on_proxy");
        }
        if self.auth_info {
            v.push("on_auth_info");
        }
        if self.config {
            v.push("on_config");
        }
        v
    }

    /// Whether the script defines no hook at all.
    pub fn is_empty(&self) -> bool {
        !(self.proxy || self.auth_info || self.config)
    }
}

/// One compiled script (default or space) ready to run.
#[derive(Debug)]
pub struct Script {
    /// File name (`default.rhai`), used in logs and errors.
    pub file: Arc<str>,
    /// The self-contained AST (its imports embedded).
    pub ast: AST,
    /// What hook calls run: the script's functions bound to its top level, evaluated once at
    /// load time.
    pub bound: Bound,
    /// Hooks it defines.
    pub hooks: Defined,
    /// Definition line of each hook (`on_proxy`, `on_auth_info`, `on_config`), for errors
    /// that carry no position of their own.
    pub hook_lines: [Option<usize>; 3],
}

impl Script {
    /// The line where a hook function is defined.
    pub fn hook_line(&self, hook: &str) -> Option<usize> {
        HOOKS
            .iter()
            .position(|(name, _)| *name == hook)
            .and_then(|i| self.hook_lines[i])
    }
}

/// How a script's hooks see its top level (`import`s and `const`s).
#[derive(Debug)]
pub enum Bound {
    /// The top level was evaluated once, at load time: this AST holds the script's public
    /// functions, each carrying the resulting imports and constants (read-only, shared by
    /// every request), and hooks are called through Rhai's normal dispatch (the path that
    /// honours that environment). Hook calls run no top-level code.
    Once(AST),
    /// A hook is `private` (module evaluation does not export it): the top level runs before
    /// each hook call, on [`Script::ast`].
    EachCall,
}

/// Evaluates a script's top level once (`import`s resolved, `const`s computed) and binds the
/// result to its functions, so a hook call only runs the hook. Top-level values become
/// read-only (imported modules and constants are immutable; `let` variables were never
/// visible to functions), so nothing a request does can reach the next one. A runtime error
/// in the top level is a load error.
fn bind_top_level(engine: &Engine, ast: &AST) -> Result<Bound, Box<EvalAltResult>> {
    let private_hook = ast.iter_functions().any(|f| {
        f.access == rhai::FnAccess::Private && HOOKS.iter().any(|(name, _)| *name == f.name)
    });
    let module = rhai::Module::eval_ast_as_new(Scope::new(), ast, engine)?;
    if private_hook {
        return Ok(Bound::EachCall);
    }
    let mut bound = AST::new_from_module(module);
    if let Some(source) = ast.source() {
        bound.set_source(source);
    }
    Ok(Bound::Once(bound))
}

/// Every script of a directory, compiled.
#[derive(Debug, Default)]
pub struct HookSet {
    /// `default.rhai`.
    pub default: Option<Arc<Script>>,
    /// `<domain>.rhai`, by lower-cased domain.
    pub spaces: HashMap<String, Arc<Script>>,
    /// What was loaded, for the status and `hooks check` (sorted by file name).
    pub files: Vec<FileReport>,
    /// When this set was compiled (unix ms).
    pub loaded_at: i64,
    /// Digest of the file names and sources it was compiled from: a reload whose files hash
    /// the same changes nothing and is skipped.
    pub digest: Digest,
}

/// SHA-256 of a directory's script names and sources (see [`Sources::digest`]).
pub type Digest = [u8; 32];

/// Where a live script comes from (`hooks.source`, docs/hooks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The hooks directory.
    Files,
    /// The database (`hook_scripts`), at a version.
    Database,
}

/// One script as read from the directory or the database.
#[derive(Debug)]
pub struct Source {
    /// File name (`default.rhai`; a database script is named as its file would be).
    pub name: String,
    /// What the file is.
    pub kind: FileKind,
    /// Its text, or why it could not be read.
    pub text: Result<String, String>,
    /// Where it comes from.
    pub origin: Origin,
    /// The database version, for a database script.
    pub version: Option<i64>,
    /// A database script that replaces a file of the same name.
    pub overrides_file: bool,
}

/// Every script of a directory (and of the database), read once: what a reload compares (by
/// digest) before it compiles anything.
#[derive(Debug)]
pub struct Sources {
    /// The files, sorted by name.
    pub files: Vec<Source>,
    /// SHA-256 over each file's name and text (length-prefixed, so no two different sets
    /// hash alike by shifting bytes between names and texts).
    pub digest: Digest,
    /// Whether modules the database does not hold are imported from the hooks directory
    /// (false with `hooks.source = "database"`).
    pub files_modules: bool,
}

/// One live script of the database, as [`merge`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredScript {
    /// Its name (`default`, a module, a domain): the file name without `.rhai`.
    pub name: String,
    /// Its version.
    pub version: i64,
    /// Its source.
    pub source: String,
}

/// The scripts one instance serves: the directory's (`files`, when read) and the database's;
/// a database script replaces the file of the same name. Names that are no script name
/// (which the API and `hooks push` never store) are skipped.
pub fn merge(files: Option<Sources>, database: &[StoredScript]) -> Sources {
    let files_modules = files.is_some();
    let mut by_name: std::collections::BTreeMap<String, Source> = files
        .map(|f| f.files)
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    for script in database {
        let name = format!("{}.rhai", script.name);
        let Some(kind) = classify(&name) else {
            continue;
        };
        let overrides_file = by_name.contains_key(&name);
        by_name.insert(
            name.clone(),
            Source {
                name,
                kind,
                text: Ok(script.source.clone()),
                origin: Origin::Database,
                version: Some(script.version),
                overrides_file,
            },
        );
    }
    let files: Vec<Source> = by_name.into_values().collect();
    Sources {
        digest: digest_of(&files),
        files,
        files_modules,
    }
}

/// SHA-256 over each script's name, origin and text (length-prefixed).
fn digest_of(files: &[Source]) -> Digest {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for f in files {
        hasher.update((f.name.len() as u64).to_le_bytes());
        hasher.update(f.name.as_bytes());
        if f.origin == Origin::Database {
            // Files hash exactly as they did before the database existed.
            hasher.update([2]);
            hasher.update(f.version.unwrap_or(0).to_le_bytes());
            hasher.update([u8::from(f.overrides_file)]);
        }
        match &f.text {
            Ok(t) => {
                hasher.update([1]);
                hasher.update((t.len() as u64).to_le_bytes());
                hasher.update(t.as_bytes());
            }
            Err(e) => {
                hasher.update([0]);
                hasher.update((e.len() as u64).to_le_bytes());
                hasher.update(e.as_bytes());
            }
        }
    }
    hasher.finalize().into()
}

/// Reads every script of a directory (sorted by name) and hashes names and texts. A missing
/// directory is an empty set.
pub fn read_sources(dir: &Path) -> std::io::Result<Sources> {
    let mut files = Vec::new();
    for (name, path, kind) in list(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{name}: cannot read: {e}"));
        files.push(Source {
            name,
            kind,
            text,
            origin: Origin::Files,
            version: None,
            overrides_file: false,
        });
    }
    Ok(Sources {
        digest: digest_of(&files),
        files,
        files_modules: true,
    })
}

impl HookSet {
    /// The scripts that run for a space, in order: default, then the space's own.
    pub fn scripts_for(&self, domain: &str) -> Vec<Arc<Script>> {
        let mut v = Vec::with_capacity(2);
        if let Some(d) = &self.default {
            v.push(d.clone());
        }
        let own = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            self.spaces.get(&domain.to_ascii_lowercase())
        } else {
            self.spaces.get(domain)
        };
        if let Some(s) = own {
            v.push(s.clone());
        }
        v
    }
}

/// The result of compiling one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// File name within the hooks directory.
    pub file: String,
    /// Default, space or module.
    #[serde(flatten)]
    pub kind: FileKind,
    /// Hooks the script defines (empty for modules).
    pub hooks: Vec<&'static str>,
    /// Things worth a look that do not stop loading (a misspelt hook name…).
    pub warnings: Vec<String>,
    /// Why the file did not compile (`file:line:col: message`), if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `files` or `database`.
    pub origin: Origin,
    /// The database version served (database scripts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// A database script that replaces the hooks directory's file of the same name
    /// (`hooks.source = "both"`: the database wins).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overrides_file: bool,
}

/// Everything a compile pass found: per-file reports and, if all compiled, the set.
#[derive(Debug)]
pub struct Compiled {
    /// One report per file, sorted by name.
    pub files: Vec<FileReport>,
    /// The set, when no file failed.
    pub set: Option<HookSet>,
}

impl Compiled {
    /// Every error, one per line.
    pub fn errors(&self) -> Vec<String> {
        self.files.iter().filter_map(|f| f.error.clone()).collect()
    }
}

/// Classifies a file name; `None` for files that are not scripts.
pub fn classify(file_name: &str) -> Option<FileKind> {
    if file_name.starts_with('.') {
        return None;
    }
    let stem = file_name.strip_suffix(".rhai")?;
    if stem.is_empty() {
        return None;
    }
    Some(if stem == "default" {
        FileKind::Default
    } else if stem.contains('.') {
        FileKind::Space(stem.to_ascii_lowercase())
    } else {
        FileKind::Module
    })
}

/// Lists the scripts of a directory, sorted by name. A missing directory is an empty list.
fn list(dir: &Path) -> std::io::Result<Vec<(String, PathBuf, FileKind)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some(kind) = classify(&name) else {
            continue;
        };
        let path = entry.path();
        // Follows symlinks; a dangling link or a directory named x.rhai is skipped.
        if !path.is_file() {
            continue;
        }
        files.push((name, path, kind));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// The line of the first `import "name"` in a source, for errors Rhai reports without one.
fn import_line(source: &str, module: &str) -> Option<usize> {
    let needle = format!("\"{module}\"");
    source
        .lines()
        .position(|l| l.contains("import") && l.contains(&needle))
        .map(|i| i + 1)
}

fn at(file: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(line), Some(col)) => format!("{file}:{line}:{col}"),
        (Some(line), None) => format!("{file}:{line}"),
        _ => file.to_string(),
    }
}

/// Formats a load-time error as `file:line:col: message`, following errors inside imported
/// modules to the module's own file.
pub fn describe_load_error(file: &str, source: &str, err: &EvalAltResult) -> String {
    match err {
        EvalAltResult::ErrorInModule(module, inner, _) => {
            let module_file = format!("{module}.rhai");
            let module_source = String::new();
            format!(
                "{} (imported by {file})",
                describe_load_error(&module_file, &module_source, inner)
            )
        }
        EvalAltResult::ErrorModuleNotFound(module, pos) => {
            let pos_text = match (pos.line(), import_line(source, module)) {
                (Some(_), _) => at(file, *pos),
                (None, Some(line)) => format!("{file}:{line}"),
                (None, None) => file.to_string(),
            };
            format!("{pos_text}: module {module:?} not found in the hooks directory")
        }
        EvalAltResult::ErrorParsing(kind, pos) => {
            format!("{}: syntax error: {kind}", at(file, *pos))
        }
        other => {
            let mut text = other.to_string();
            // Rhai appends " (line L, position P)"; the prefix already says where.
            if let Some(i) = text.rfind(" (line ") {
                text.truncate(i);
            }
            let pos = other.position();
            let pos_text = match (pos.line(), other) {
                (None, EvalAltResult::ErrorRuntime(..)) => {
                    // An import refused by the resolver: point at the import line.
                    let module = text.split('"').nth(1).unwrap_or("");
                    match import_line(source, module) {
                        Some(line) => format!("{file}:{line}"),
                        None => file.to_string(),
                    }
                }
                _ => at(file, pos),
            };
            format!("{pos_text}: {text}")
        }
    }
}

/// Formats a run-time error as `file:line:col: message`: the innermost error's position, in
/// the file of the innermost function (a module's functions live in the module's file).
/// Some errors carry no position (a limit hit on an empty loop body): then the innermost
/// known call site is used, or else the line where the hook function is defined.
pub fn describe_run_error(script: &Script, hook: &str, err: &EvalAltResult) -> String {
    let mut current = err;
    let mut src = script.file.to_string();
    let mut calls = Vec::new();
    let mut fallback: Option<(String, Position)> = None;
    loop {
        match current {
            EvalAltResult::ErrorInFunctionCall(name, source, inner, pos) => {
                if !pos.is_none() {
                    fallback = Some((src.clone(), *pos));
                }
                calls.push(name.clone());
                if !source.is_empty() {
                    src = if source.ends_with(".rhai") {
                        source.clone()
                    } else {
                        format!("{source}.rhai")
                    };
                }
                current = inner;
            }
            EvalAltResult::ErrorInModule(module, inner, _) => {
                src = format!("{module}.rhai");
                current = inner;
            }
            _ => break,
        }
    }
    let mut text = current.to_string();
    if let Some(i) = text.rfind(" (line ") {
        text.truncate(i);
    }
    let via = if calls.is_empty() {
        format!(" (in {hook})")
    } else {
        format!(" (in {hook} → {})", calls.join(" → "))
    };
    let pos = current.position();
    let location = if !pos.is_none() {
        at(&src, pos)
    } else if let Some((file, pos)) = fallback {
        at(&file, pos)
    } else {
        match script.hook_line(hook) {
            Some(line) => format!("{}:{line}", script.file),
            None => script.file.to_string(),
        }
    };
    format!("{location}: {text}{via}")
}

/// The line where `fn <name>(` is defined in a source, if it can be found.
fn fn_line(source: &str, name: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("private ").unwrap_or(l).trim_start();
            l.strip_prefix("fn ")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix(name))
                .is_some_and(|rest| rest.trim_start().starts_with('('))
        })
        .map(|i| i + 1)
}

/// Finds which hooks an AST defines; a hook with the wrong number of parameters is an error
/// (it would never be called), an unknown `on_*` function a warning (a typo, probably).
fn detect_hooks(file: &str, ast: &AST) -> (Defined, Vec<String>, Option<String>) {
    let mut defined = Defined::default();
    let mut warnings = Vec::new();
    let mut error = None;
    for f in ast.iter_functions() {
        match HOOKS.iter().find(|(name, _)| *name == f.name) {
            Some((name, params)) if f.params.len() == params.len() => match *name {
                "on_proxy" => defined.proxy = true,
                "on_auth_info" => defined.auth_info = true,
                _ => defined.config = true,
            },
            Some((name, params)) => {
                error.get_or_insert_with(|| {
                    format!(
                        "{file}: {name} takes {} parameters ({}), this one takes {}",
                        params.len(),
                        params.join(", "),
                        f.params.len()
                    )
                });
            }
            None if f.name.starts_with("on_") => warnings.push(format!(
                "{file}: {}() is not a hook (hooks: on_proxy, on_auth_info, on_config)",
                f.name
            )),
            None => {}
        }
    }
    (defined, warnings, error)
}

/// Compiles every script of a directory. Never fails as a whole: errors are per file, and
/// the set is only built when there are none.
pub fn compile_dir(engine: &Engine, dir: &Path) -> std::io::Result<Compiled> {
    Ok(compile_sources(engine, read_sources(dir)?))
}

/// Compiles scripts already read by [`read_sources`] (modules are read again by `import`,
/// when the scripts that import them compile).
pub fn compile_sources(engine: &Engine, sources: Sources) -> Compiled {
    let mut reports = Vec::with_capacity(sources.files.len());
    let mut set = HookSet {
        loaded_at: crate::model::now_ms(),
        digest: sources.digest,
        ..HookSet::default()
    };
    let _loading = enter_loading();
    // Database modules are imported from memory; without any (and with the directory read),
    // imports resolve exactly as they always did.
    let modules: HashMap<String, String> = sources
        .files
        .iter()
        .filter(|s| s.origin == Origin::Database && s.kind == FileKind::Module)
        .filter_map(|s| {
            let text = s.text.as_ref().ok()?;
            Some((s.name.trim_end_matches(".rhai").to_string(), text.clone()))
        })
        .collect();
    let overlay = (!modules.is_empty() || !sources.files_modules).then(|| {
        Arc::new(ModuleOverlay {
            modules,
            files: sources.files_modules,
        })
    });
    let _overlay = enter_overlay(overlay);
    for Source {
        name,
        kind,
        text,
        origin,
        version,
        overrides_file,
    } in sources.files
    {
        let mut report = FileReport {
            file: name.clone(),
            kind: kind.clone(),
            hooks: Vec::new(),
            warnings: Vec::new(),
            error: None,
            origin,
            version,
            overrides_file,
        };
        let source = match text {
            Ok(s) => s,
            Err(e) => {
                report.error = Some(e);
                reports.push(report);
                continue;
            }
        };
        let file: Arc<str> = Arc::from(name.as_str());
        let _script = enter_script(file.clone());
        let _deadline = enter_deadline(LOAD_DEADLINE);
        match kind {
            FileKind::Module => {
                if !is_module_name(name.trim_end_matches(".rhai")) {
                    report.warnings.push(format!(
                        "{name}: cannot be imported (module names use letters, digits, '_' and '-')"
                    ));
                }
                // Syntax only: a module's code runs when a script imports it.
                if let Err(e) = engine.compile(&source) {
                    report.error = Some(format!(
                        "{}: syntax error: {}",
                        at(&name, e.position()),
                        e.err_type()
                    ));
                }
            }
            FileKind::Default | FileKind::Space(_) => {
                match engine.compile_into_self_contained(&Scope::new(), &source) {
                    Ok(mut ast) => {
                        ast.set_source(name.as_str());
                        let (hooks, warnings, error) = detect_hooks(&name, &ast);
                        report.hooks = hooks.names();
                        report.warnings = warnings;
                        if hooks.is_empty() && error.is_none() {
                            report
                                .warnings
                                .push(format!("{name}: defines no hook, so it never runs"));
                        }
                        report.error = error;
                        let bound = match &report.error {
                            Some(_) => None,
                            None => match bind_top_level(engine, &ast) {
                                Ok(bound) => Some(bound),
                                Err(e) => {
                                    report.error = Some(format!(
                                        "{} (in the top-level code, run once at load time)",
                                        describe_load_error(&name, &source, &e)
                                    ));
                                    None
                                }
                            },
                        };
                        if let Some(bound) = bound {
                            let hook_lines = HOOKS.map(|(hook, _)| fn_line(&source, hook));
                            let script = Arc::new(Script {
                                file,
                                ast,
                                bound,
                                hook_lines,
                                hooks,
                            });
                            match &kind {
                                FileKind::Default => set.default = Some(script),
                                FileKind::Space(domain) => {
                                    set.spaces.insert(domain.clone(), script);
                                }
                                FileKind::Module => {}
                            }
                        }
                    }
                    Err(e) => report.error = Some(describe_load_error(&name, &source, &e)),
                }
            }
        }
        reports.push(report);
    }
    let ok = reports.iter().all(|r| r.error.is_none());
    set.files = reports.clone();
    Compiled {
        files: reports,
        set: ok.then_some(set),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_kinds() {
        assert_eq!(classify("default.rhai"), Some(FileKind::Default));
        assert_eq!(
            classify("Sip.Example.com.rhai"),
            Some(FileKind::Space("sip.example.com".into()))
        );
        assert_eq!(classify("nat.rhai"), Some(FileKind::Module));
        assert_eq!(classify(".default.rhai.swp"), None);
        assert_eq!(classify(".x.rhai"), None);
        assert_eq!(classify("notes.txt"), None);
        assert_eq!(classify("x.tmp"), None);
    }

    fn compile(files: &[(&str, &str)]) -> Compiled {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        let settings = crate::config::HookSettings {
            dir: dir.path().to_path_buf(),
            ..crate::config::HookSettings::default()
        };
        let engine = super::super::engine::new_engine(&settings, dir.path());
        compile_dir(&engine, dir.path()).unwrap()
    }

    #[test]
    fn the_top_level_is_evaluated_once_at_load_time() {
        let hook = "fn on_config(config, request, account) { }\n";
        let ok = compile(&[
            (
                "default.rhai",
                &format!("import \"m\" as m;\nconst A = m::B + 1;\n{hook}"),
            ),
            ("m.rhai", "export const B = 1;\n"),
        ]);
        let set = ok.set.unwrap();
        assert!(matches!(set.default.unwrap().bound, Bound::Once(_)));
        // A runtime error in the top level is a load error, with file and line.
        let bad = compile(&[(
            "default.rhai",
            &format!("const A = 1;\nlet x = 1 / 0;\n{hook}"),
        )]);
        let errors = bad.errors().join("\n");
        assert!(bad.set.is_none(), "{errors}");
        assert!(
            errors.contains("default.rhai:2") && errors.contains("top-level"),
            "{errors}"
        );
        // A private hook keeps the per-call top level.
        let private = compile(&[(
            "default.rhai",
            "const A = 1;\nprivate fn on_config(config, request, account) { global::A }\n",
        )]);
        let set = private.set.unwrap();
        assert!(matches!(set.default.unwrap().bound, Bound::EachCall));
    }

    #[test]
    fn finds_function_lines() {
        let src = "// c\nfn helper() {}\n\n  fn on_config (a, b, c) {\n}\nprivate fn on_proxy(a,b,c) {}\n";
        assert_eq!(fn_line(src, "on_config"), Some(4));
        assert_eq!(fn_line(src, "on_proxy"), Some(6));
        assert_eq!(fn_line(src, "on_auth_info"), None);
        assert_eq!(fn_line(src, "help"), None);
    }

    fn stored(name: &str, version: i64, source: &str) -> StoredScript {
        StoredScript {
            name: name.into(),
            version,
            source: source.into(),
        }
    }

    /// The database wins over a file of the same name; imports resolve a database module
    /// first, then the directory's (unless the directory is not read).
    #[test]
    fn merged_sets_and_their_imports() {
        let dir = tempfile::tempdir().unwrap();
        let hook =
            "fn on_config(config, request, account) { config.section(\"x\").set(\"v\", m::V); }\n";
        std::fs::write(dir.path().join("m.rhai"), "export const V = \"file\";\n").unwrap();
        std::fs::write(
            dir.path().join("default.rhai"),
            format!("import \"m\" as m;\n{hook}"),
        )
        .unwrap();
        let settings = crate::config::HookSettings {
            dir: dir.path().to_path_buf(),
            ..crate::config::HookSettings::default()
        };
        let engine = super::super::engine::new_engine(&settings, dir.path());
        let files = || Some(read_sources(dir.path()).unwrap());

        // Nothing stored: exactly the directory, digest included.
        let plain = merge(files(), &[]);
        assert_eq!(plain.digest, read_sources(dir.path()).unwrap().digest);
        assert!(compile_sources(&engine, plain).set.is_some());

        // A stored space script imports the directory's module; a stored default replaces
        // the file.
        let space = stored("a.example", 3, &format!("import \"m\" as m;\n{hook}"));
        let both = merge(
            files(),
            &[
                stored("default", 1, "fn on_config(c, r, a) {}"),
                space.clone(),
            ],
        );
        let reports: Vec<_> = both
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.origin, f.version, f.overrides_file))
            .collect();
        assert_eq!(
            reports,
            [
                ("a.example.rhai", Origin::Database, Some(3), false),
                ("default.rhai", Origin::Database, Some(1), true),
                ("m.rhai", Origin::Files, None, false),
            ]
        );
        let compiled = compile_sources(&engine, both);
        assert!(compiled.set.is_some(), "{:?}", compiled.errors());

        // A stored module replaces the file's for every importer.
        let with_module = merge(files(), &[stored("m", 2, "export const V = \"db\";\n")]);
        let set = compile_sources(&engine, with_module).set.unwrap();
        assert!(set.default.is_some());
        // Without the directory, its module is nowhere.
        let alone = compile_sources(&engine, merge(None, std::slice::from_ref(&space)));
        let errors = alone.errors().join("\n");
        assert!(
            errors.contains("a.example.rhai") && errors.contains("not found"),
            "{errors}"
        );
        // A stored module is enough.
        let alone = merge(None, &[space, stored("m", 1, "export const V = \"db\";\n")]);
        assert!(compile_sources(&engine, alone).set.is_some());
        // The digest follows the stored version.
        let d1 = merge(files(), &[stored("default", 1, "fn on_config(c, r, a) {}")]).digest;
        let d2 = merge(files(), &[stored("default", 2, "fn on_config(c, r, a) {}")]).digest;
        assert_ne!(d1, d2);
    }
}

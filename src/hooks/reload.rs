//! Hot reload: a debounced watcher on the hooks DIRECTORY (not on single files, so editors
//! that save by writing a temporary file and renaming it over the script are seen), which
//! recompiles the whole set on any `*.rhai` change and swaps it in atomically.
//!
//! Events are handled on the debouncer's own thread (a reload is a few milliseconds of
//! compiling), behind `catch_unwind`: nothing in a reload can panic that thread, whose death
//! would silently stop reloading.

use super::Hooks;
use notify_debouncer_full::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchGuard {
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
    hooks: Weak<Hooks>,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchGuard")
            .field("active", &self.debouncer.is_some())
            .finish()
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(d) = self.debouncer.take() {
            d.stop_nonblocking();
            if let Some(h) = self.hooks.upgrade() {
                h.watchers.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Whether a changed path can affect the set: a visible `*.rhai` file.
fn is_script_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "rhai")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'))
}

fn handle(hooks: &Weak<Hooks>, result: DebounceEventResult) {
    let Some(hooks) = hooks.upgrade() else { return };
    match result {
        Ok(events) => {
            let relevant = events
                .iter()
                .any(|e| e.event.paths.iter().any(|p| is_script_path(p)));
            if relevant {
                // Failures are logged, counted and kept for the status by reload_now.
                let _ = hooks.reload_now();
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, dir = %hooks.dir.display(), "hooks watcher error");
            }
        }
    }
}

/// Starts the debounced watcher for `hooks`.
pub(super) fn start(hooks: &Arc<Hooks>, debounce: Duration) -> anyhow::Result<WatchGuard> {
    let dir = hooks.dir.clone();
    if !dir.is_dir() {
        tracing::warn!(
            dir = %dir.display(),
            "hooks directory does not exist: not watching it (create it and restart to use hooks)"
        );
        return Ok(WatchGuard {
            debouncer: None,
            hooks: Arc::downgrade(hooks),
        });
    }
    let weak = Arc::downgrade(hooks);
    let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
        if std::panic::catch_unwind(AssertUnwindSafe(|| handle(&weak, result))).is_err() {
            tracing::error!("hook reload panicked; the previous scripts stay live");
        }
    })?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    hooks.watchers.fetch_add(1, Ordering::Relaxed);
    tracing::info!(dir = %dir.display(), "watching hook scripts");
    Ok(WatchGuard {
        debouncer: Some(debouncer),
        hooks: Arc::downgrade(hooks),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_rhai_files_count() {
        assert!(is_script_path(Path::new("/h/default.rhai")));
        assert!(is_script_path(Path::new("/h/a.example.com.rhai")));
        assert!(!is_script_path(Path::new("/h/x.tmp")));
        assert!(!is_script_path(Path::new("/h/.default.rhai.swp")));
        assert!(!is_script_path(Path::new("/h/.hidden.rhai")));
        assert!(!is_script_path(Path::new("/h")));
    }
}

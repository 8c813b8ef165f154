//! Hot reload: a debounced watcher on the hooks DIRECTORY (not on single files, so editors
//! that save by writing a temporary file and renaming it over the script are seen), which
//! recompiles the whole set when a `*.rhai` file is created, written, renamed or removed, and
//! swaps it in atomically.
//!
//! Only events that can change a script's text count: opening, reading, closing and
//! metadata changes (`touch`, `chmod`, access times) never do. Reading a script must not
//! reload it — a reload reads every file, and on backends that report reads those reads
//! would be events again, a loop that never stops. Even a real event is only a reload when
//! the files' digest differs from the live set's ([`super::Hooks::reload_now`]).
//!
//! Events are handled on the debouncer's own thread (a reload is a few milliseconds of
//! compiling), behind `catch_unwind`: nothing in a reload can panic that thread, whose death
//! would silently stop reloading.

use super::Hooks;
use notify_debouncer_full::notify::event::ModifyKind;
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
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

/// Whether an event kind can change what a file holds: creation, a data change, a rename,
/// a removal (and the kinds a backend cannot tell apart). Never access (open, read, close)
/// or metadata alone.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any) => true,
        EventKind::Modify(ModifyKind::Other) => false,
        EventKind::Access(_) | EventKind::Other => false,
        // A backend that cannot say what happened: the digest check makes a false alarm
        // cheap and uncounted.
        EventKind::Any => true,
    }
}

fn handle(hooks: &Weak<Hooks>, result: DebounceEventResult) {
    let Some(hooks) = hooks.upgrade() else { return };
    match result {
        Ok(events) => {
            let relevant = events.iter().any(|e| {
                is_change(&e.event.kind) && e.event.paths.iter().any(|p| is_script_path(p))
            });
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

    #[test]
    fn only_changes_count() {
        use notify_debouncer_full::notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode,
        };
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Content)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(is_change(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            EventKind::Other,
        ] {
            assert!(!is_change(&kind), "{kind:?}");
        }
    }
}

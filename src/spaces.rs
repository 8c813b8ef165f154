//! The spaces, in memory: every request reads its space (and its account's) from an immutable
//! [`Snapshot`], indexed by host and by domain and swapped atomically (arc-swap), so a
//! document costs no space query and the anonymous document no query at all. Each space is
//! held as a [`PreparedSpace`]: its static document part is built once per snapshot.
//!
//! **Coherence.** Spaces change a few times a day, through the API of any instance or the CLI.
//! The store keeps a version of the `spaces` topic, bumped in the writer's transaction by
//! every write of any process (`schema/*/V3__change_feed.sql`); a snapshot remembers the
//! version it was loaded at (read *before* the rows, so a write in between is seen again, not
//! missed). A snapshot is refreshed:
//!
//! 1. right after a write through this process's API ([`Spaces::refresh`] awaited by the
//!    handler, so the answer and every later request see the change);
//! 2. on a change notice ([`crate::store::Store::change_feed`]: PostgreSQL `LISTEN/NOTIFY`),
//!    and fully after the feed (re)connects or lags (notices may have been lost);
//! 3. when the version check, every half of `cache_max_staleness_seconds`, finds a new version
//!    (the backstop for lost notices, and the only path for other processes on SQLite, such
//!    as the CLI writing while a server runs);
//! 4. when a request names a host no space serves, once per such burst (a space created
//!    elsewhere a moment ago is served at once; a known host never waits on the database).
//!
//! A change made anywhere is therefore served everywhere within `cache_max_staleness_seconds`
//! (default 2), usually within milliseconds. When the database is unreachable the last
//! snapshot keeps serving. Refreshes run one at a time; one that began after a caller's
//! reason arose answers that caller too, so a burst of notices or misses costs one reload.

use crate::document::PreparedSpace;
use crate::error::AppError;
use crate::store::{Change, DynStore, Store, StoreResult};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Metric: snapshots loaded, by reason (`start`, `write`, `notice`, `reconnect`, `check`,
/// `miss`).
pub const RELOADS_METRIC: &str = "provisio_space_snapshot_reloads_total";
/// Metric: refreshes that failed (the previous snapshot kept serving).
pub const FAILURES_METRIC: &str = "provisio_space_snapshot_refresh_failures_total";

/// Every space at one version of the store.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The `spaces` change version this snapshot was loaded at.
    version: i64,
    /// Every space, by domain (the store's order).
    all: Vec<Arc<PreparedSpace>>,
    /// By HTTP host (lower-case, no port).
    by_host: HashMap<String, Arc<PreparedSpace>>,
    /// By SIP domain.
    by_domain: HashMap<String, Arc<PreparedSpace>>,
}

impl Snapshot {
    /// Indexes `spaces` (as [`Store::list_spaces`] returns them) loaded at `version`.
    pub fn build(version: i64, spaces: Vec<crate::model::Space>) -> Snapshot {
        let all: Vec<Arc<PreparedSpace>> = spaces
            .into_iter()
            .map(|s| Arc::new(PreparedSpace::new(s)))
            .collect();
        let by_host = all
            .iter()
            .map(|s| (s.space.host.clone(), s.clone()))
            .collect();
        let by_domain = all
            .iter()
            .map(|s| (s.space.domain.clone(), s.clone()))
            .collect();
        Snapshot {
            version,
            all,
            by_host,
            by_domain,
        }
    }

    /// Reads the version, then every space: the snapshot a tool (`provisio render`) works on.
    pub async fn load(store: &dyn Store) -> StoreResult<Snapshot> {
        let version = store.change_version(Change::SPACES).await?;
        let spaces = store.list_spaces().await?;
        Ok(Snapshot::build(version, spaces))
    }

    /// The store's `spaces` version this snapshot reflects.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Every space, by domain.
    pub fn list(&self) -> &[Arc<PreparedSpace>] {
        &self.all
    }

    /// The space with this SIP domain.
    pub fn by_domain(&self, domain: &str) -> Option<&Arc<PreparedSpace>> {
        self.by_domain.get(domain)
    }

    /// The space serving a request's Host (lower-case, no port: [`crate::request::normalize_host`]).
    /// With no match, the only space when exactly one exists (a single-tenant install then
    /// answers on any name).
    pub fn for_host(&self, host: &str) -> Option<&Arc<PreparedSpace>> {
        self.by_host.get(host).or(match self.all.as_slice() {
            [only] => Some(only),
            _ => None,
        })
    }
}

/// Why a refresh runs (the `reason` label of [`RELOADS_METRIC`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// This process wrote a space.
    Write,
    /// The change feed announced a change of the spaces.
    Notice,
    /// The change feed (re)connected or lagged: notices may have been lost.
    Reconnect,
    /// The periodic version check.
    Check,
    /// A request named a host no space serves.
    Miss,
}

impl Reason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Write => "write",
            Reason::Notice => "notice",
            Reason::Reconnect => "reconnect",
            Reason::Check => "check",
            Reason::Miss => "miss",
        }
    }
}

/// The live snapshot of one server, and how it stays coherent with the store.
pub struct Spaces {
    /// Where spaces are read from.
    store: DynStore,
    /// The snapshot every request reads.
    current: ArcSwap<Snapshot>,
    /// Refreshes run one at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Refreshes begun so far: a caller that sees it move while waiting knows a refresh began
    /// after its reason arose, and needs none of its own.
    begun: AtomicU64,
    /// Whether the last refresh failed (failures are logged once per outage).
    failing: AtomicBool,
    /// `cache_max_staleness_seconds`.
    max_staleness: Duration,
}

impl std::fmt::Debug for Spaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spaces")
            .field("version", &self.current.load().version)
            .field("spaces", &self.current.load().all.len())
            .finish_non_exhaustive()
    }
}

impl Spaces {
    /// Loads the first snapshot (before the listener binds, so the first request finds it).
    pub async fn load(store: DynStore, max_staleness: Duration) -> StoreResult<Spaces> {
        let first = Snapshot::load(store.as_ref()).await?;
        metrics::counter!(RELOADS_METRIC, "reason" => "start").increment(1);
        Ok(Spaces {
            store,
            current: ArcSwap::from_pointee(first),
            refreshing: tokio::sync::Mutex::new(()),
            begun: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            max_staleness,
        })
    }

    /// The current snapshot (a reference count; it never changes under the holder).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The space with this SIP domain, from the current snapshot.
    pub fn by_domain(&self, domain: &str) -> Option<Arc<PreparedSpace>> {
        self.current.load().by_domain(domain).cloned()
    }

    /// The space serving a request's Host ([`Snapshot::for_host`]). A host no space serves
    /// may belong to a space created elsewhere a moment ago: the store's version is checked
    /// once (a burst of such requests shares one check) before answering 404.
    pub async fn for_host(&self, host: &str) -> Result<Arc<PreparedSpace>, AppError> {
        if let Some(space) = self.current.load().for_host(host) {
            return Ok(space.clone());
        }
        // A failed check is logged by `run`; the snapshot's answer stands. Look again whatever
        // the check found: another refresh (a notice, the timer) may have swapped in a newer
        // snapshot while this request was missing, leaving this one's check nothing to do.
        let _ = self.refresh(Reason::Miss).await;
        match self.current.load().for_host(host) {
            Some(space) => Ok(space.clone()),
            None => Err(AppError::NotFound("Host not configured".to_string())),
        }
    }

    /// Brings the snapshot up to date with the store: reads the version and reloads when it
    /// differs from the snapshot's. Returns whether a new snapshot may hold something the
    /// caller's did not (false: nothing changed). Call it after writing a space, so the writer's
    /// next read sees its write.
    pub async fn refresh(&self, reason: Reason) -> StoreResult<bool> {
        self.run(reason, false).await
    }

    /// Reloads every space whatever the version says (after the change feed reconnected).
    pub async fn reload(&self, reason: Reason) -> StoreResult<()> {
        self.run(reason, true).await.map(|_| ())
    }

    /// One refresh at a time; skipped when another began after this one was asked for (its
    /// snapshot is as fresh as this one's would be).
    async fn run(&self, reason: Reason, force: bool) -> StoreResult<bool> {
        let asked = self.begun.load(Ordering::SeqCst);
        let _one = self.refreshing.lock().await;
        if self.begun.load(Ordering::SeqCst) != asked {
            return Ok(true);
        }
        self.begun.fetch_add(1, Ordering::SeqCst);
        let outcome = self.load_if_changed(reason, force).await;
        match &outcome {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("space snapshot refreshed again");
                }
            }
            Err(e) => {
                metrics::counter!(FAILURES_METRIC).increment(1);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, reason = reason.as_str(), "cannot refresh the space snapshot; the previous one keeps serving");
                }
            }
        }
        outcome
    }

    /// Reads the version; with a new one (or `force`), loads and swaps in a new snapshot.
    async fn load_if_changed(&self, reason: Reason, force: bool) -> StoreResult<bool> {
        let version = self.store.change_version(Change::SPACES).await?;
        let held = self.current.load().version;
        // `!=`, not `>`: a database restored from a backup may go back in time.
        if version == held && !force {
            return Ok(false);
        }
        let spaces = self.store.list_spaces().await?;
        let count = spaces.len();
        self.current
            .store(Arc::new(Snapshot::build(version, spaces)));
        metrics::counter!(RELOADS_METRIC, "reason" => reason.as_str()).increment(1);
        tracing::debug!(
            reason = reason.as_str(),
            version,
            previous = held,
            spaces = count,
            "space snapshot loaded"
        );
        Ok(true)
    }

    /// How often the periodic check runs: half the staleness bound, so a change whose notice
    /// was lost is served within the bound, reload included.
    pub fn check_interval(&self) -> Duration {
        (self.max_staleness / 2).max(Duration::from_millis(100))
    }

    /// Starts keeping the snapshot fresh in the background (the change feed, when the store
    /// has one, and the periodic check) on the current runtime; it stops when the returned
    /// guard is dropped.
    pub fn keep_fresh(self: &Arc<Self>) -> KeepFresh {
        let feed = self.store.change_feed();
        let task = tokio::spawn(keep_fresh(self.clone(), feed));
        KeepFresh { task }
    }
}

/// The background refresher of [`Spaces::keep_fresh`]; dropping it stops the task.
#[derive(Debug)]
pub struct KeepFresh {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeepFresh {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for the next notice; never returns without a feed (the periodic check then does
/// everything).
async fn next_notice(
    feed: &mut Option<tokio::sync::broadcast::Receiver<Change>>,
) -> Result<Change, RecvError> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The refresher: reacts to notices, checks the version on a timer.
async fn keep_fresh(
    spaces: Arc<Spaces>,
    mut feed: Option<tokio::sync::broadcast::Receiver<Change>>,
) {
    let mut tick = tokio::time::interval(spaces.check_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the snapshot was just loaded.
    tick.tick().await;
    loop {
        // Errors are counted and logged by `run`; the previous snapshot keeps serving.
        tokio::select! {
            _ = tick.tick() => {
                let _ = spaces.refresh(Reason::Check).await;
            }
            notice = next_notice(&mut feed) => match notice {
                Ok(change) if change.topic == Change::ALL => {
                    let _ = spaces.reload(Reason::Reconnect).await;
                }
                Ok(change) if change.concerns(Change::SPACES) => {
                    // A notice of this instance's own write finds that write loaded already.
                    if change.version != spaces.current.load().version {
                        let _ = spaces.refresh(Reason::Notice).await;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    let _ = spaces.reload(Reason::Reconnect).await;
                }
                Err(RecvError::Closed) => {
                    tracing::warn!("change feed closed; spaces are refreshed by the periodic check only");
                    feed = None;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Space;

    #[test]
    fn host_then_the_only_space() {
        let one = Snapshot::build(1, vec![Space::new("a.example", "prov.a.example")]);
        assert_eq!(
            one.for_host("prov.a.example").unwrap().space.domain,
            "a.example"
        );
        // A single-tenant install answers on any name.
        assert_eq!(one.for_host("other").unwrap().space.domain, "a.example");
        let two = Snapshot::build(
            2,
            vec![
                Space::new("a.example", "prov.a.example"),
                Space::new("b.example", "prov.b.example"),
            ],
        );
        assert!(two.for_host("other").is_none());
        assert_eq!(
            two.for_host("prov.b.example").unwrap().space.domain,
            "b.example"
        );
        assert_eq!(
            two.by_domain("a.example").unwrap().space.host,
            "prov.a.example"
        );
        assert!(two.by_domain("prov.a.example").is_none());
        assert_eq!(two.list().len(), 2);
        assert_eq!(two.version(), 2);
        assert!(Snapshot::default().for_host("x").is_none());
    }

    /// A real SQLite store, written behind the snapshot's back as another process would.
    async fn store(dir: &tempfile::TempDir) -> DynStore {
        let store = crate::store::open(&dir.path().join("s.sqlite3").display().to_string(), 2)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    }

    #[tokio::test]
    async fn refresh_reloads_only_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store
            .create_space(&Space::new("a.example", "a.example"))
            .await
            .unwrap();
        store
            .create_space(&Space::new("b.example", "b.example"))
            .await
            .unwrap();
        let spaces = Spaces::load(store.clone(), Duration::from_secs(2))
            .await
            .unwrap();
        let first = spaces.snapshot();
        assert_eq!(first.list().len(), 2);
        assert!(
            !spaces.refresh(Reason::Check).await.unwrap(),
            "nothing changed"
        );
        assert!(
            Arc::ptr_eq(&first, &spaces.snapshot()),
            "the same snapshot stays"
        );

        let mut b = store.space_by_domain("b.example").await.unwrap().unwrap();
        b.custom_entries = Some("[x]\ny=1\n".into());
        store.update_space(&b).await.unwrap();
        assert!(
            spaces
                .by_domain("b.example")
                .unwrap()
                .space
                .custom_entries
                .is_none()
        );
        assert!(spaces.refresh(Reason::Write).await.unwrap());
        let now = spaces.by_domain("b.example").unwrap();
        assert_eq!(now.space.custom_entries.as_deref(), Some("[x]\ny=1\n"));
        assert!(spaces.snapshot().version() > first.version());

        // A forced reload loads whatever the version says.
        let before = spaces.snapshot();
        spaces.reload(Reason::Reconnect).await.unwrap();
        assert!(!Arc::ptr_eq(&before, &spaces.snapshot()));
        assert_eq!(spaces.snapshot().version(), before.version());
    }

    #[tokio::test]
    async fn an_unknown_host_checks_the_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store
            .create_space(&Space::new("a.example", "a.example"))
            .await
            .unwrap();
        store
            .create_space(&Space::new("b.example", "b.example"))
            .await
            .unwrap();
        let spaces = Spaces::load(store.clone(), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(
            spaces.for_host("c.example").await.unwrap_err().status(),
            404
        );
        store
            .create_space(&Space::new("c.example", "c.example"))
            .await
            .unwrap();
        // Created elsewhere a moment ago: served on the first request, no waiting.
        assert_eq!(
            spaces.for_host("c.example").await.unwrap().space.domain,
            "c.example"
        );
        assert_eq!(
            spaces.for_host("a.example").await.unwrap().space.domain,
            "a.example"
        );
    }
}

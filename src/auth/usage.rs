//! API-key use records, kept off the request path: authenticating by key is a read, and the
//! uses (latest instant, count) are gathered in memory per key and written in one batch every
//! `api_key_flush_seconds` and at shutdown ([`crate::store::Store::record_api_key_uses`]).
//! Requests with the same key therefore never queue on the key's row, and `/provisioning/me`
//! writes nothing.
//!
//! Idle expiry stays exact for this instance: a key is judged on the later of its stored last
//! use and this instance's unwritten one ([`crate::store::ApiKeyRecord::accepts`]). Another
//! instance sees a use once it is written, so across instances a key may be refused up to one
//! flush interval before its true end of life, never accepted after it. Housekeeping writes
//! this instance's uses before deleting idle keys and waits a minute past expiry, longer than
//! any flush interval ([`crate::housekeeping`]).

use crate::store::{AccountBundle, ApiKeyRecord, ApiKeyUse, DynStore, Store, StoreResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Metric: API-key use batches written, by outcome (`ok`, `failed`).
pub const FLUSH_METRIC: &str = "provisio_api_key_use_flushes_total";

/// Unwritten uses of one key.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Latest use.
    last_used_at: i64,
    /// Uses not yet counted in the store.
    requests: i64,
}

impl Pending {
    /// Folds `other` (uses of the same key) into `self`.
    fn merge(&mut self, other: Pending) {
        self.last_used_at = self.last_used_at.max(other.last_used_at);
        self.requests = self.requests.saturating_add(other.requests);
    }
}

/// The two halves of the record: uses not yet taken by a flush, and those a flush is writing.
#[derive(Debug, Default)]
struct Books {
    /// Uses since the last flush started.
    pending: HashMap<i64, Pending>,
    /// Uses the running flush is writing (still consulted until it committed).
    flushing: HashMap<i64, Pending>,
}

/// This instance's unwritten API-key uses (one per process, shared by every request).
#[derive(Debug, Default)]
pub struct KeyUses {
    /// The record; held only for a map operation, never across an await.
    books: Mutex<Books>,
    /// Serialises flushes, so a use is never written twice.
    flush: tokio::sync::Mutex<()>,
}

impl KeyUses {
    /// An empty record.
    pub fn new() -> KeyUses {
        KeyUses::default()
    }

    /// The record, even if a thread panicked while holding it (the maps stay consistent: every
    /// operation on them is a single insert, merge or swap).
    fn books(&self) -> MutexGuard<'_, Books> {
        self.books
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes one use of key `id` at `now`.
    pub fn record(&self, id: i64, now: i64) {
        let use_ = Pending {
            last_used_at: now,
            requests: 1,
        };
        self.books()
            .pending
            .entry(id)
            .and_modify(|p| p.merge(use_))
            .or_insert(use_);
    }

    /// The latest unwritten use of key `id`, if any.
    pub fn last_use(&self, id: i64) -> Option<i64> {
        let books = self.books();
        let pending = books.pending.get(&id).map(|p| p.last_used_at);
        let flushing = books.flushing.get(&id).map(|p| p.last_used_at);
        pending.max(flushing)
    }

    /// Keys with unwritten uses.
    pub fn pending_keys(&self) -> usize {
        let books = self.books();
        books.pending.len() + books.flushing.len()
    }

    /// Resolves an API key (one read, no write) and judges it on its stored record and this
    /// instance's unwritten uses; when accepted, notes the use. `None`: unknown, bound to
    /// another IP, or idle past its lifetime.
    pub async fn authenticate(
        &self,
        store: &dyn Store,
        key_hash: &[u8],
        ip: Option<&str>,
        now: i64,
        user_key_ttl_minutes: i64,
    ) -> StoreResult<Option<(ApiKeyRecord, AccountBundle)>> {
        let Some((key, bundle)) = store.api_key_identity(key_hash).await? else {
            return Ok(None);
        };
        let last_use = self.last_use(key.id).unwrap_or(key.last_used_at);
        if !key.accepts(ip, last_use, now, user_key_ttl_minutes) {
            return Ok(None);
        }
        self.record(key.id, now);
        Ok(Some((key, bundle)))
    }

    /// Writes every unwritten use in one batch; returns how many keys it covered. On failure
    /// the uses stay in memory for the next flush (nothing is lost or counted twice).
    pub async fn flush(&self, store: &dyn Store) -> StoreResult<usize> {
        let _running = self.flush.lock().await;
        let batch: Vec<ApiKeyUse> = {
            let mut books = self.books();
            let taken = std::mem::take(&mut books.pending);
            books.flushing = taken;
            books
                .flushing
                .iter()
                .map(|(id, p)| ApiKeyUse {
                    id: *id,
                    last_used_at: p.last_used_at,
                    requests: p.requests,
                })
                .collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let written = store.record_api_key_uses(&batch).await;
        let mut books = self.books();
        let flushed = std::mem::take(&mut books.flushing);
        match written {
            Ok(()) => {
                metrics::counter!(FLUSH_METRIC, "outcome" => "ok").increment(1);
                Ok(batch.len())
            }
            Err(e) => {
                metrics::counter!(FLUSH_METRIC, "outcome" => "failed").increment(1);
                for (id, p) in flushed {
                    books
                        .pending
                        .entry(id)
                        .and_modify(|q| q.merge(p))
                        .or_insert(p);
                }
                Err(e)
            }
        }
    }
}

/// The background task that flushes every interval; [`Flusher::stop`] flushes a last time.
pub struct Flusher {
    /// The periodic loop (aborted on drop and on stop).
    task: tokio::task::JoinHandle<()>,
    /// What the last flush writes.
    uses: Arc<KeyUses>,
    /// Where it writes.
    store: DynStore,
}

impl Flusher {
    /// Starts flushing `uses` to `store` every `every` (the first flush one interval from now).
    /// A failed flush is logged and its uses wait for the next one.
    pub fn start(uses: Arc<KeyUses>, store: DynStore, every: Duration) -> Flusher {
        let task = tokio::spawn({
            let (uses, store) = (uses.clone(), store.clone());
            async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    if let Err(e) = uses.flush(store.as_ref()).await {
                        tracing::warn!(error = %e, keys = uses.pending_keys(), "API-key uses not written; retrying at the next flush");
                    }
                }
            }
        });
        Flusher { task, uses, store }
    }

    /// Stops the loop and writes what is left (graceful shutdown).
    pub async fn stop(self) {
        self.task.abort();
        match self.uses.flush(self.store.as_ref()).await {
            Ok(keys) => tracing::debug!(keys, "API-key uses written at shutdown"),
            Err(e) => {
                tracing::warn!(error = %e, keys = self.uses.pending_keys(), "API-key uses lost at shutdown")
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

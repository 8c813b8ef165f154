//! Housekeeping: a background task that deletes rows no answer depends on any more, so tables
//! stop growing with every anonymous auth token, Digest challenge and spent token. Each pass
//! deletes expired auth tokens, expired or answered Digest challenges, user API keys past their
//! idle lifetime, provisioning tokens used or superseded more than `token_retention_days`
//! ago ([`crate::store::Store::purge`] says why no answer changes), and audit events older than
//! `audit_retention_days` (0 keeps them forever).
//!
//! Every instance runs it (`housekeeping_interval_seconds`, 0 = off): a pass is a few
//! idempotent `DELETE`s, so instances sharing a database may overlap harmlessly, and one
//! instance never overlaps itself (the next pass starts an interval after the previous one
//! ended). `provisio purge` runs one pass by hand.
//!
//! API-key uses are written in batches ([`crate::auth::usage`]), so a key's stored last use
//! may lag its real one by up to `api_key_flush_seconds` (at most 30). A pass first writes this
//! instance's pending uses, then judges; other instances' uses are covered by
//! [`EXPIRY_GRACE_MS`], which is longer than any flush interval.

use crate::auth::usage::KeyUses;
use crate::config::Settings;
use crate::model::now_ms;
use crate::store::{DynStore, PurgeCounts, PurgeRules, StoreError};
use std::time::Duration;

/// Metric: rows deleted by housekeeping, by table.
pub const PURGED_ROWS_METRIC: &str = "provisio_purged_rows_total";

/// Longest a pass may run before it is abandoned (its statements are atomic, so an abandoned
/// pass leaves nothing half-done); the next one starts an interval later.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(120);

/// One day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// Rows that die by expiry are deleted this long after they expired, so an instance whose
/// clock runs behind, or whose latest API-key uses are not written yet (at most
/// `api_key_flush_seconds`, 30 s), never sees a row vanish while it would still accept it:
/// deleting must never change an answer.
pub const EXPIRY_GRACE_MS: i64 = 60_000;

/// The cut-offs of a pass at `now` under `settings` (saturating: no setting can overflow them).
pub fn rules(settings: &Settings, now: i64) -> PurgeRules {
    let before = |ms: i64| now.saturating_sub(ms);
    let expired = |ms: i64| before(ms.saturating_add(EXPIRY_GRACE_MS));
    PurgeRules {
        auth_tokens_before: expired(settings.auth_token_ttl_minutes.saturating_mul(60_000)),
        nonces_before: expired(settings.digest_nonce_ttl_seconds.saturating_mul(1000)),
        answered_nonces: true,
        user_keys_idle_before: (settings.api_key_ttl_minutes > 0)
            .then(|| expired(settings.api_key_ttl_minutes.saturating_mul(60_000))),
        tokens_retired_before: Some(before(
            i64::from(settings.token_retention_days).saturating_mul(DAY_MS),
        )),
        audit_events_before: (settings.audit_retention_days > 0)
            .then(|| before(i64::from(settings.audit_retention_days).saturating_mul(DAY_MS))),
    }
}

/// Runs one pass now: deletes, then logs the counts at info and adds them to
/// [`PURGED_ROWS_METRIC`]. Bounded by [`PASS_TIMEOUT`].
pub async fn run_once(store: &DynStore, settings: &Settings) -> Result<PurgeCounts, StoreError> {
    let rules = rules(settings, now_ms());
    let counts = tokio::time::timeout(PASS_TIMEOUT, store.purge(&rules))
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "housekeeping pass took over {} s",
                PASS_TIMEOUT.as_secs()
            ))
        })??;
    for (table, rows) in counts.by_table() {
        metrics::counter!(PURGED_ROWS_METRIC, "table" => table).increment(rows);
    }
    tracing::info!(
        auth_tokens = counts.auth_tokens,
        digest_nonces = counts.digest_nonces,
        api_keys = counts.api_keys,
        provisioning_tokens = counts.provisioning_tokens,
        audit_events = counts.audit_events,
        "housekeeping pass"
    );
    Ok(counts)
}

/// The running background task; dropping it stops the task.
pub struct Housekeeping {
    /// The loop (aborted on drop).
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Housekeeping {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes this instance's pending API-key uses, then runs one pass ([`run_once`]), so no key
/// this instance used is judged on a stale last use. A failed write skips the pass (it would
/// judge stale data) and is reported as the pass's error.
pub async fn run_after_flush(
    store: &DynStore,
    settings: &Settings,
    uses: &KeyUses,
) -> Result<PurgeCounts, StoreError> {
    uses.flush(store.as_ref()).await?;
    run_once(store, settings).await
}

/// Starts the periodic task (first pass one interval after start); `None` when
/// `housekeeping_interval_seconds` is 0. A failed pass is logged and retried at the next tick.
/// Each pass first writes the pending API-key uses of `uses` ([`run_after_flush`]).
pub fn spawn(
    store: DynStore,
    settings: std::sync::Arc<Settings>,
    uses: std::sync::Arc<KeyUses>,
) -> Option<Housekeeping> {
    if settings.housekeeping_interval_seconds == 0 {
        return None;
    }
    let period = Duration::from_secs(settings.housekeeping_interval_seconds);
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            if let Err(e) = run_after_flush(&store, &settings, &uses).await {
                tracing::warn!(error = %e, "housekeeping pass failed; retrying at the next interval");
            }
        }
    });
    Some(Housekeeping { task })
}

//! Provisioning-token consumes on PostgreSQL, grouped: requests that arrive while earlier
//! consumes are in flight are burned together in one statement and one commit.
//!
//! A consume is a write, so its cost is a round trip plus a commit that waits for the WAL to
//! reach the disk; on a virtual disk that flush, not the statement, sets the pace (BENCHMARKS.md).
//! PostgreSQL already shares one flush between backends that commit at the same moment, but
//! never more than one per pooled connection. Here every request queued while
//! [`MAX_IN_FLIGHT`] batches are running joins the next batch, up to [`MAX_BATCH`] tokens, so
//! under load one flush serves many phones, and an idle server still sends each consume alone
//! at once (nothing waits for a batch to fill).
//!
//! Each token keeps its own outcome and its own atomicity: the statement burns a token and
//! activates its account together or not at all, a token named twice in one batch is burned
//! for exactly one of its requests (`UPDATE … FROM` uses one source row per target row), and
//! the per-request [`ConsumeId`] settles an ambiguous commit exactly as the single statement does
//! ([`crate::pipeline::consume`]). Consumes with a password reset (rare, and they write
//! passwords) keep the single statement.

use super::{ConsumeId, StoreError, StoreResult};
use deadpool_postgres::Pool;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most tokens burned by one statement.
pub const MAX_BATCH: usize = 64;

/// Batches running at once (each holds one pooled connection while it runs).
pub const MAX_IN_FLIGHT: usize = 4;

/// Requests that may queue before a consume waits for room (backpressure, never a drop).
const QUEUE_CAPACITY: usize = 4096;

/// The batched form of the single consume statement (`CONSUME_PROVISIONING_TOKEN` in
/// `postgres.rs`, without the password reset): row `i` of the three arrays is one request (token
/// hash, time, consume id). Returns `(consume id, account id)` for every request that burned its
/// token now, and for every request whose id already spent it (an earlier, ambiguous attempt:
/// the outer query reads the rows as they were before this statement).
const CONSUME_BATCH: &str = concat!(
    "WITH input AS (SELECT * FROM unnest($1::BYTEA[], $2::BIGINT[], $3::BYTEA[]) ",
    "AS u(hash, now, by)), ",
    "consumed AS (",
    "UPDATE provisioning_tokens SET used_at = u.now, used_by = u.by FROM input u ",
    "WHERE provisioning_tokens.token_hash = u.hash AND provisioning_tokens.used_at IS NULL ",
    "AND (provisioning_tokens.expires_at IS NULL OR provisioning_tokens.expires_at > u.now) ",
    "AND provisioning_tokens.id = (SELECT MAX(o.id) FROM provisioning_tokens o ",
    "WHERE o.account_id = provisioning_tokens.account_id) ",
    "RETURNING u.by, u.now, provisioning_tokens.account_id), ",
    "activated AS (",
    "UPDATE accounts a SET activated = TRUE, updated_at = c.now FROM consumed c ",
    "WHERE a.id = c.account_id RETURNING a.id) ",
    "SELECT by, account_id FROM consumed ",
    "UNION ALL SELECT t.used_by, t.account_id FROM provisioning_tokens t ",
    "JOIN input u ON t.token_hash = u.hash AND t.used_by = u.by"
);

/// One queued consume and where its outcome goes.
struct Request {
    hash: Vec<u8>,
    now: i64,
    by: ConsumeId,
    reply: oneshot::Sender<StoreResult<Option<i64>>>,
}

/// The queue of consumes; the task that batches them ends when the batcher is dropped.
pub struct ConsumeBatcher {
    tx: mpsc::Sender<Request>,
}

impl ConsumeBatcher {
    /// Starts the batching task on `pool` (needs a Tokio runtime).
    pub fn start(pool: Pool) -> ConsumeBatcher {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(rx, pool));
        ConsumeBatcher { tx }
    }

    /// Burns the token for request `by` if it is unspent, current and unexpired at `now`, and
    /// activates its account; `Some(account id)` when `by` holds it (now or from an earlier
    /// attempt), `None` when it was already spent by someone else or is not consumable.
    pub async fn consume(&self, hash: &[u8], now: i64, by: &ConsumeId) -> StoreResult<Option<i64>> {
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            hash: hash.to_vec(),
            now,
            by: *by,
            reply,
        };
        self.tx
            .send(request)
            .await
            .map_err(|_| StoreError::Unavailable("the consume queue has stopped".to_string()))?;
        outcome.await.map_err(|_| {
            StoreError::Unavailable("the consume batch ended without an answer".to_string())
        })?
    }
}

/// Takes what has queued (at least one request, at most [`MAX_BATCH`]) whenever a batch slot
/// is free, and runs it on its own task.
async fn run(mut rx: mpsc::Receiver<Request>, pool: Pool) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let requests = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let pool = pool.clone();
        tokio::spawn(async move {
            execute(&pool, requests).await;
            drop(slot);
        });
    }
}

/// Runs one batch and answers each of its requests. A failure is every request's failure,
/// as it is (an unknown commit outcome stays [`StoreError::Unavailable`], so each request
/// settles it with its own id).
async fn execute(pool: &Pool, requests: Vec<Request>) {
    match statement(pool, &requests).await {
        Ok(won) => {
            for request in requests {
                let account = won
                    .iter()
                    .find(|(by, _)| by.as_slice() == request.by.0)
                    .map(|(_, account)| *account);
                let _ = request.reply.send(Ok(account));
            }
        }
        Err(e) => {
            for request in requests {
                let _ = request.reply.send(Err(e.clone()));
            }
        }
    }
}

/// The statement for a batch: `(consume id, account id)` of each request that holds its token.
async fn statement(pool: &Pool, requests: &[Request]) -> StoreResult<Vec<(Vec<u8>, i64)>> {
    let hashes: Vec<&[u8]> = requests.iter().map(|r| r.hash.as_slice()).collect();
    let nows: Vec<i64> = requests.iter().map(|r| r.now).collect();
    let ids: Vec<&[u8]> = requests.iter().map(|r| r.by.0.as_slice()).collect();
    let client = pool.get().await.map_err(super::postgres::pool_error)?;
    let stmt = client.prepare_cached(CONSUME_BATCH).await?;
    let rows = client.query(&stmt, &[&hashes, &nows, &ids]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get::<_, Vec<u8>>(0)?, row.try_get::<_, i64>(1)?)))
        .collect()
}

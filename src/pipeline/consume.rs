//! Stage 8 — consume & activate: one atomic store operation that burns the token, activates
//! the account and stores a reset password. Under any concurrency, on either store, exactly
//! one request wins; the others get 404 and never see the document.
//!
//! An ambiguous outcome is settled, not guessed. Each request names its consume with a random
//! [`ConsumeId`] that the store records with the token's use, and the store's consume is
//! idempotent per id. When the consume fails with [`StoreError::Unavailable`] (the connection
//! broke, possibly after `COMMIT` was sent; PostgreSQL restarting; no pooled connection in
//! time) the request repeats the same consume, with the same id and the same `now`, until it
//! gets an answer or [`settle_window`] has passed:
//!
//! * the earlier attempt committed → the token is used by this id → the store returns the
//!   account again and the request serves its document (200);
//! * the earlier attempt did not happen (rolled back, or never reached the server) → the token
//!   is still unused → the repeat consumes it now (200);
//! * another request won, or the token was superseded or expired meanwhile → 404, as for any
//!   loser;
//! * the database stays away for the whole window → the error (500); the token may then be
//!   spent without a document, which only an outage longer than the window can cause.
//!
//! A definite failure (a constraint, a bug) is reported at once: only `Unavailable` repeats.

use crate::error::AppError;
use crate::model::NewPassword;
use crate::pipeline::identity::{Credential, Identity};
use crate::secret::{fingerprint, hash_secret};
use crate::state::AppState;
use crate::store::{ConsumeId, StoreError, StoreResult};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How long a request keeps settling an ambiguous consume (first attempt included) before it
/// gives up with a 500: long enough to span a PostgreSQL restart. It never exceeds two thirds
/// of `request_timeout_seconds` ([`settle_window`]), so the request that won still answers
/// before the request timeout could cut it off.
pub const SETTLE_WINDOW: Duration = Duration::from_secs(10);

/// The settling window under these settings: [`SETTLE_WINDOW`], shortened to two thirds of the
/// request timeout when that is shorter.
pub fn settle_window(request_timeout_seconds: u64) -> Duration {
    SETTLE_WINDOW.min(Duration::from_secs(request_timeout_seconds).mul_f64(2.0 / 3.0))
}

/// First pause between attempts; it doubles up to [`SETTLE_MAX_PAUSE`].
const SETTLE_FIRST_PAUSE: Duration = Duration::from_millis(50);

/// Longest pause between attempts, so a database that comes back is noticed within it.
const SETTLE_MAX_PAUSE: Duration = Duration::from_millis(500);

/// Metric counting consumes that needed more than one attempt, by final outcome (`won`,
/// `lost`, `failed`).
pub const SETTLED_METRIC: &str = "provisio_consume_settled_total";

/// Commits the request's side effects, or fails with 404 if another request won the token.
pub async fn commit(
    state: &AppState,
    credential: &Credential,
    who: &Identity,
    reset: Option<&NewPassword>,
    now: i64,
) -> Result<(), AppError> {
    let won = match credential {
        Credential::Anonymous => true,
        Credential::ProvisioningToken(token) => {
            let hash = hash_secret(token);
            let by = ConsumeId::random();
            settle(state, token, || {
                state
                    .store
                    .consume_provisioning_token(&hash, now, reset, &by)
            })
            .await?
            .is_some()
        }
        Credential::AuthToken(token) => {
            let not_before = now - state.settings.auth_token_ttl_minutes * 60_000;
            auth_token(state, token, now, not_before, reset)
                .await?
                .is_some()
        }
        Credential::Authenticated(_) => {
            if let (Some(account), Some(password)) = (&who.account, reset) {
                state
                    .store
                    .replace_passwords(account.id, std::slice::from_ref(password))
                    .await?;
            }
            true
        }
    };
    if won {
        if let Some(token) = credential.token() {
            tracing::info!(token_fp = %fingerprint(token), account_id = ?who.account.as_ref().map(|a| a.id), "token consumed");
        }
        Ok(())
    } else {
        Err(AppError::NotFound("Not Found".to_string()))
    }
}

/// Redeems an attached auth token once (minted after `not_before`), settling an ambiguous
/// outcome like the provisioning token's; returns its account to exactly one caller. Shared
/// by the provisioning route and any API route that redeems auth tokens.
pub async fn auth_token(
    state: &AppState,
    token: &str,
    now: i64,
    not_before: i64,
    reset: Option<&NewPassword>,
) -> Result<Option<i64>, AppError> {
    let hash = hash_secret(token);
    let by = ConsumeId::random();
    settle(state, token, || {
        state
            .store
            .consume_auth_token_as(&hash, now, not_before, reset, &by)
    })
    .await
}

/// Runs an idempotent consume until its outcome is known (see the module doc), bounded by
/// [`settle_window`] in total, each attempt included.
async fn settle<F, Fut>(
    state: &AppState,
    token: &str,
    mut attempt: F,
) -> Result<Option<i64>, AppError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<Option<i64>>>,
{
    let window = settle_window(state.settings.request_timeout_seconds);
    let deadline = Instant::now() + window;
    let mut pause = SETTLE_FIRST_PAUSE;
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let error = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(outcome)) => {
                if attempts > 1 {
                    let result = if outcome.is_some() { "won" } else { "lost" };
                    metrics::counter!(SETTLED_METRIC, "outcome" => result).increment(1);
                    tracing::info!(
                        token_fp = %fingerprint(token),
                        attempts,
                        outcome = result,
                        "ambiguous consume settled"
                    );
                }
                return Ok(outcome);
            }
            Ok(Err(e)) if !e.is_unavailable() => return Err(e.into()),
            Ok(Err(e)) => e,
            Err(_) => {
                StoreError::Unavailable(format!("no answer within {} ms", window.as_millis()))
            }
        };
        let now = Instant::now();
        if now + pause >= deadline {
            metrics::counter!(SETTLED_METRIC, "outcome" => "failed").increment(1);
            tracing::error!(
                token_fp = %fingerprint(token),
                attempts,
                error = %error,
                "consume outcome unknown: the database stayed unavailable"
            );
            return Err(error.into());
        }
        tracing::warn!(
            token_fp = %fingerprint(token),
            attempt = attempts,
            error = %error,
            "consume outcome unknown, retrying with the same request id"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(SETTLE_MAX_PAUSE);
    }
}

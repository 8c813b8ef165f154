//! Authentication of accounts on `/provisioning/me` and the API: the `x-api-key` header, then
//! HTTP Digest ([`digest`]). Transport-neutral: reads a [`RequestInfo`], returns an account or
//! an [`AppError`] (a 401 that may carry Digest challenges).
//!
//! Order, as FlexiAPI's middlewares (reference §4.1–4.3): an `x-api-key` header decides alone
//! (a key needs no `From`); otherwise a `From` header starts Digest; with neither, a 401 without
//! challenge (there is no account to challenge for). The admin API takes API keys only
//! ([`authenticate_api_key`]), as FlexiAPI since FLEXIAPI-487, but answers a missing key with
//! a JSON 401 instead of a redirect to a login page.

pub mod digest;
pub mod usage;

use crate::error::AppError;
use crate::model::{Account, Space, now_ms};
use crate::request::RequestInfo;
use crate::secret::{fingerprint, hash_secret};
use crate::state::AppState;
use crate::store::AccountBundle;

/// Header carrying an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Body of the 401 for a request that carries neither a key nor a `From` (FlexiAPI's wording).
pub const FROM_REQUIRED: &str = "From header is required or invalid token";

/// Authenticates the request's account by API key or Digest. Missing credentials: 401 ("From
/// header is required or invalid token"); a bad key: 401 ("Invalid API Key"); Digest: 401 with
/// a challenge until it succeeds; a blocked account: 403 ("Account blocked"). `space` is the
/// request's space (the decoy challenge of an unknown identity is drawn from it).
pub async fn authenticate(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
) -> Result<Account, AppError> {
    Ok(authenticate_bundle(state, space, request).await?.account)
}

/// [`authenticate`], with the account's passwords, read in the same round trip (what
/// `/provisioning/me` needs for its document).
pub async fn authenticate_bundle(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
) -> Result<AccountBundle, AppError> {
    let bundle = if request.header(API_KEY_HEADER).is_some() {
        api_key_bundle(state, request).await?
    } else if let Some(from) = request.header("from") {
        digest::authenticate(state, space, request, from).await?
    } else {
        return Err(AppError::Unauthorized(FROM_REQUIRED.to_string()));
    };
    refuse_blocked(&bundle.account)?;
    Ok(bundle)
}

/// Authenticates by API key only (the admin API). Missing key: 401 "Unauthenticated."; bad,
/// expired or bound to another IP: 401 "Invalid API Key"; blocked owner: 403.
pub async fn authenticate_api_key(
    state: &AppState,
    request: &RequestInfo,
) -> Result<Account, AppError> {
    if request.header(API_KEY_HEADER).is_none() {
        return Err(AppError::Unauthorized("Unauthenticated.".to_string()));
    }
    let bundle = api_key_bundle(state, request).await?;
    refuse_blocked(&bundle.account)?;
    Ok(bundle.account)
}

/// Checks the `x-api-key` header: the key must exist, match its IP binding and not have expired
/// (one read, no write: the use is recorded in memory and written later, see [`usage`]).
async fn api_key_bundle(
    state: &AppState,
    request: &RequestInfo,
) -> Result<AccountBundle, AppError> {
    let key = request.header(API_KEY_HEADER).unwrap_or_default();
    let ip = request.client_ip.map(|ip| ip.to_string());
    let found = state
        .key_uses
        .authenticate(
            state.store.as_ref(),
            &hash_secret(key),
            ip.as_deref(),
            now_ms(),
            state.settings.api_key_ttl_minutes,
        )
        .await?;
    let Some((_, bundle)) = found else {
        tracing::info!(key_fp = %fingerprint(key), "API key refused");
        return Err(AppError::Unauthorized("Invalid API Key".to_string()));
    };
    Ok(bundle)
}

/// Blocked accounts authenticate but may do nothing (FlexiAPI's `auth.check_blocked`).
fn refuse_blocked(account: &Account) -> Result<(), AppError> {
    if account.blocked {
        return Err(AppError::Forbidden("Account blocked".to_string()));
    }
    Ok(())
}

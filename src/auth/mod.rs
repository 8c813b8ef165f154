//! Authentication of accounts on `/provisioning/me` and the API: a client certificate
//! ([`certificate`], `/provisioning/me` only), a JWT bearer ([`jwt`]), HTTP Digest ([`digest`]),
//! the `x-api-key` header. Transport-neutral: reads a [`RequestInfo`], returns an account or an
//! [`AppError`] (a 401 that may carry Digest or Bearer challenges, a 403).
//!
//! Order, as FlexiAPI's middlewares (reference §4.1–4.5): on `/provisioning/me` a verified
//! client certificate decides alone; then, in a space with an OIDC provider, a bearer token
//! decides alone (and is the only way in when the space sets `oidc.required`, as in FlexiAPI);
//! then an `x-api-key` header decides alone (a key needs no `From`); otherwise a `From` header
//! starts Digest; with none of them, a 401 without challenge (there is no account to challenge
//! for), carrying the Bearer challenge when the space has a provider. The admin API takes API
//! keys only ([`authenticate_api_key`]), as FlexiAPI since FLEXIAPI-487, but answers a missing
//! key with a JSON 401 instead of a redirect to a login page.

pub mod certificate;
pub mod digest;
pub mod jwks;
pub mod jwt;
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

/// Authenticates the request's account by bearer token, API key or Digest (the user API).
/// Missing credentials: 401 ("From header is required or invalid token"); a bad token: 401
/// with the Bearer challenge; a bad key: 401 ("Invalid API Key"); Digest: 401 with a challenge
/// until it succeeds; a blocked account: 403 ("Account blocked"). `space` is the request's
/// space (its OIDC provider; the decoy challenge of an unknown identity is drawn from it).
pub async fn authenticate(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
) -> Result<Account, AppError> {
    Ok(authenticate_bundle(state, space, request).await?.account)
}

/// [`authenticate`], with the account's passwords, read in the same round trip.
pub async fn authenticate_bundle(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
) -> Result<AccountBundle, AppError> {
    let oidc = space.oidc.as_ref();
    let bundle = match (oidc, jwt::bearer_token(request)) {
        (Some(oidc), Some(token)) => jwt::authenticate(state, space, oidc, token).await?,
        (Some(oidc), None) if oidc.required => return Err(jwt::unauthenticated(oidc)),
        _ if request.header(API_KEY_HEADER).is_some() => api_key_bundle(state, request).await?,
        _ => match request.header("from") {
            Some(from) => digest::authenticate(state, space, request, from).await?,
            None => {
                return Err(match oidc {
                    // Tell the client a bearer token would do (RFC 6750 §3).
                    Some(oidc) => AppError::Challenge {
                        message: FROM_REQUIRED.to_string(),
                        challenges: vec![jwt::challenge(oidc, None)],
                    },
                    None => AppError::Unauthorized(FROM_REQUIRED.to_string()),
                });
            }
        },
    };
    refuse_blocked(&bundle.account)?;
    Ok(bundle)
}

/// Authenticates the account of `/provisioning/me`, with its passwords: a verified client
/// certificate first ([`certificate`]: 403 when the space does not take certificates or the
/// certificate names no account of the space), then as [`authenticate_bundle`].
pub async fn authenticate_provisioning(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
) -> Result<AccountBundle, AppError> {
    if let Some(bundle) = certificate::authenticate(state, space, request).await? {
        refuse_blocked(&bundle.account)?;
        return Ok(bundle);
    }
    authenticate_bundle(state, space, request).await
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

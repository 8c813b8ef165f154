//! Authentication of accounts on `/provisioning/me` and the API: the `x-api-key` header (and,
//! with the API work, HTTP Digest). Transport-neutral: reads a [`RequestInfo`], returns an
//! account or an [`AppError`].

use crate::error::AppError;
use crate::model::{Account, Space, now_ms};
use crate::pipeline::request::RequestInfo;
use crate::secret::{fingerprint, hash_secret};
use crate::state::AppState;

/// Header carrying an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Authenticates the request's account. Missing credentials: 401; a bad key: 401
/// ("Invalid API Key"); a blocked account: 403.
pub async fn authenticate(state: &AppState, _space: &Space, request: &RequestInfo) -> Result<Account, AppError> {
    let Some(key) = request.header(API_KEY_HEADER) else {
        return Err(AppError::Unauthorized("Unauthenticated request".to_string()));
    };
    let ip = request.client_ip.map(|ip| ip.to_string());
    let account_id = state
        .store
        .authenticate_api_key(&hash_secret(key), ip.as_deref(), now_ms(), state.settings.api_key_ttl_minutes)
        .await?;
    let Some(account_id) = account_id else {
        tracing::info!(key_fp = %fingerprint(key), "API key refused");
        return Err(AppError::Unauthorized("Invalid API Key".to_string()));
    };
    let account = state
        .store
        .account(account_id)
        .await?
        .ok_or_else(|| AppError::Unauthorized("Invalid API Key".to_string()))?;
    if account.blocked {
        return Err(AppError::Forbidden("Account blocked".to_string()));
    }
    Ok(account)
}

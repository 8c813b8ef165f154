//! Auth tokens (QR login) and user API keys (reference §1.12, §5.5): a device with no account
//! mints a public auth token and shows it as a QR code; a logged-in device attaches it to its
//! account; the first device then redeems it exactly once, for its provisioning document
//! (`/provisioning/auth_token/{t}`) or for an API key (`/api/accounts/me/api_key/{t}`).
//!
//! Tokens and keys are 256-bit random values stored only as SHA-256 hashes; the clear value is
//! in exactly one response. Logs carry fingerprints.

use crate::api::access;
use crate::api::{ApiReply, ApiResult};
use crate::audit::{self, Actor};
use crate::error::AppError;
use crate::model::{Account, iso_time, now_ms};
use crate::request::RequestInfo;
use crate::secret::{fingerprint, hash_secret, new_token};
use crate::state::AppState;
use crate::store::NewApiKey;
use serde_json::json;

/// The answer for an auth token that is unknown, expired, not attached or already used.
fn token_not_found() -> AppError {
    AppError::NotFound("Not Found".to_string())
}

/// Auth tokens minted before this instant have expired.
fn auth_token_not_before(state: &AppState, now: i64) -> i64 {
    now - state.settings.auth_token_ttl_minutes * 60_000
}

/// `POST /api/accounts/auth_token` (public) — a new unattached auth token, valid for
/// `auth_token_ttl_minutes`; 201 with FlexiAPI's fields (no database id: the token is the
/// handle) plus `expire_at`.
pub async fn create_auth_token(state: &AppState, request: &RequestInfo) -> ApiResult {
    // Each call writes a row without authentication: limited per address, before any work.
    if let Some(ip) = request.client_ip {
        state.limits.take_anonymous(ip)?;
    }
    access::request_space(state, request).await?;
    let token = new_token();
    let now = now_ms();
    let ip = request.client_ip.map(|ip| ip.to_string());
    let user_agent: String = request.user_agent().chars().take(256).collect();
    let ua = Some(user_agent.as_str()).filter(|ua| !ua.is_empty());
    state
        .store
        .create_auth_token(&hash_secret(&token), ip.as_deref(), ua, now)
        .await?;
    tracing::info!(token_fp = %fingerprint(&token), "auth token created");
    Ok(ApiReply::json(
        201,
        json!({
            "token": token,
            "ip": ip,
            "user_agent": ua,
            "created_at": iso_time(now),
            "updated_at": iso_time(now),
            "expire_at": iso_time(now + state.settings.auth_token_ttl_minutes * 60_000),
        }),
    ))
}

/// `GET /api/accounts/auth_token/{token}/attach` (user) — attaches a fresh unattached token
/// to the caller; 200 with an empty body, 404 when unknown, expired or already attached.
pub async fn attach_auth_token(state: &AppState, request: &RequestInfo, token: &str) -> ApiResult {
    let (account, _) = access::user(state, request).await?;
    let now = now_ms();
    let attached = state
        .store
        .attach_auth_token(
            &hash_secret(token),
            account.id,
            auth_token_not_before(state, now),
        )
        .await?;
    if !attached {
        tracing::info!(token_fp = %fingerprint(token), "auth token not attachable");
        return Err(token_not_found());
    }
    tracing::info!(token_fp = %fingerprint(token), account_id = account.id, "auth token attached");
    Ok(ApiReply::empty(200))
}

/// `GET /api/accounts/me/api_key` (user) — a new user API key (replacing the previous one),
/// bound to the caller's IP; 200 with the bare key as a text body, as FlexiAPI.
pub async fn me_api_key(state: &AppState, request: &RequestInfo) -> ApiResult {
    let (account, _) = access::user(state, request).await?;
    let key = new_user_key(state, request, &account).await?;
    Ok(ApiReply::text(200, key))
}

/// `GET /api/accounts/me/api_key/{auth_token}` (public; the attached token is the
/// credential) — redeems the token once for a user API key bound to the caller's IP;
/// 200 `{"api_key": …}`, 404 when the token is unknown, expired, not attached or spent, 403
/// (token kept) when its account is blocked.
pub async fn api_key_from_auth_token(
    state: &AppState,
    request: &RequestInfo,
    token: &str,
) -> ApiResult {
    access::request_space(state, request).await?;
    let hash = hash_secret(token);
    let not_before = auth_token_not_before(state, now_ms());
    let found = state.store.auth_token(&hash, not_before).await?;
    let Some(account_id) = found.and_then(|t| t.account_id) else {
        tracing::info!(token_fp = %fingerprint(token), "auth token unknown, expired or not attached");
        return Err(token_not_found());
    };
    let account = state
        .store
        .account(account_id)
        .await?
        .ok_or_else(token_not_found)?;
    if account.blocked {
        return Err(AppError::Forbidden("Account blocked".to_string()));
    }
    // The consume is the single-use gate: of two concurrent redeemers, one gets the id.
    // Settled like the provisioning route's consume: a lost acknowledgement is read back.
    if crate::pipeline::consume::auth_token(state, token, now_ms(), not_before, None).await?
        != Some(account.id)
    {
        return Err(token_not_found());
    }
    let key = new_user_key(state, request, &account).await?;
    Ok(ApiReply::json(200, json!({ "api_key": key })))
}

/// Mints and stores a user key bound to the request's IP; returns the clear key.
async fn new_user_key(
    state: &AppState,
    request: &RequestInfo,
    account: &Account,
) -> Result<String, AppError> {
    let key = new_token();
    let record = NewApiKey {
        account_id: account.id,
        key_hash: hash_secret(&key),
        name: None,
        ip: request.client_ip.map(|ip| ip.to_string()),
        expires_after_minutes: None,
    };
    let id = state.store.create_api_key(&record, now_ms()).await?;
    tracing::info!(key_fp = %fingerprint(&key), account_id = account.id, "user API key issued");
    let event = audit::event(&Actor::account(account), audit::action::API_KEY_CREATED)
        .about(account)
        .target(id.to_string())
        .from_request(request);
    state.audit.record(event).await;
    Ok(key)
}

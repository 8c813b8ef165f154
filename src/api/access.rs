//! Roles (reference §5.1): who may call which route, decided in one place.
//!
//! The management API reads spaces from the store, as its writes need and as an operator
//! expects right after `provisio space …` or another instance's API; only the request's space
//! (Host → space) comes from the in-memory snapshot, as for documents.
//!
//! * **user** — any authenticated account (API key or Digest), on any host;
//! * **admin** — `admin = true`, by API key only, on its own space's host (another host: 403);
//!   its account lookups are scoped to that space (another space's id: 404);
//! * **super admin** — an admin whose space is a super space: any host, and the spaces API.

use crate::auth;
use crate::error::AppError;
use crate::model::{Account, Space};
use crate::request::RequestInfo;
use crate::state::AppState;

/// FlexiAPI's message for a role refusal.
pub const UNAUTHORIZED_AREA: &str = "Unauthorized area";

/// An authenticated admin calling on a space it may manage.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The admin's account.
    pub account: Account,
    /// The space of the request's Host, the one the call manages.
    pub space: Space,
    /// Admin of a super space: every space, and the spaces API.
    pub super_admin: bool,
}

/// The request's space, from the snapshot (404 "Host not configured" when no space serves
/// the Host).
pub async fn request_space(state: &AppState, request: &RequestInfo) -> Result<Space, AppError> {
    Ok(state.spaces.for_host(&request.host).await?.space.clone())
}

/// An authenticated user (API key or Digest) and the request's space.
pub async fn user(state: &AppState, request: &RequestInfo) -> Result<(Account, Space), AppError> {
    let space = request_space(state, request).await?;
    let account = auth::authenticate(state, &space, request).await?;
    Ok((account, space))
}

/// An admin by API key, allowed on the request's host: 401 without a valid key, 403 for a
/// non-admin or an admin of another space.
pub async fn admin(state: &AppState, request: &RequestInfo) -> Result<Admin, AppError> {
    let space = request_space(state, request).await?;
    let account = auth::authenticate_api_key(state, request).await?;
    if !account.admin {
        return Err(AppError::Forbidden(UNAUTHORIZED_AREA.to_string()));
    }
    // The store's copy, not the snapshot's: a role granted or withdrawn (`provisio admin add
    // --super`, another instance's API) applies from the next call on.
    let own = state
        .store
        .space_by_domain(&account.domain)
        .await?
        .ok_or_else(|| AppError::Forbidden(UNAUTHORIZED_AREA.to_string()))?;
    let super_admin = own.super_space;
    if !super_admin && own.domain != space.domain {
        return Err(AppError::Forbidden(UNAUTHORIZED_AREA.to_string()));
    }
    Ok(Admin {
        account,
        space,
        super_admin,
    })
}

/// A super admin (403 for any other admin).
pub async fn super_admin(state: &AppState, request: &RequestInfo) -> Result<Admin, AppError> {
    let admin = admin(state, request).await?;
    if !admin.super_admin {
        return Err(AppError::Forbidden(UNAUTHORIZED_AREA.to_string()));
    }
    Ok(admin)
}

/// An account of the admin's request space; any other id is a 404 (FlexiAPI always looks
/// accounts up through `request.space.accounts`).
pub async fn scoped_account(state: &AppState, admin: &Admin, id: i64) -> Result<Account, AppError> {
    state
        .store
        .account(id)
        .await?
        .filter(|a| a.domain == admin.space.domain)
        .ok_or_else(|| account_not_found(id))
}

/// Laravel's 404 for a missing account.
pub fn account_not_found(id: i64) -> AppError {
    AppError::NotFound(format!("No query results for model [App\\Account] {id}"))
}

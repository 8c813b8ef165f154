//! `GET /api/hooks/status`: what an operator needs to see about the live hook scripts (which
//! are loaded, which hooks each defines, the last reload error) without shell access.

use crate::api::access;
use crate::api::{ApiReply, ApiResult};
use crate::error::AppError;
use crate::request::RequestInfo;
use crate::state::AppState;

/// `GET /api/hooks/status` (super admin) — the hooks engine's status as JSON. The hooks
/// directory is server-wide (every tenant's script names and errors), so a space admin may
/// not read it.
pub async fn status(state: &AppState, request: &RequestInfo) -> ApiResult {
    access::super_admin(state, request).await?;
    let status = serde_json::to_value(state.hooks.status())
        .map_err(|e| AppError::Internal(format!("serialising the hook status: {e}")))?;
    Ok(ApiReply::json(200, status))
}

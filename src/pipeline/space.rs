//! Stage 1 — space: maps the request's Host to a tenant, from the in-memory snapshot
//! ([`crate::spaces`]): no database round trip for a host a space serves. Errors: 404 when no
//! space serves the Host (and more than one space exists).

use crate::document::PreparedSpace;
use crate::error::AppError;
use crate::state::AppState;
use std::sync::Arc;

/// Reads the Host (lower-case, no port); returns the space serving it. With no match, the only
/// space when exactly one exists (a single-tenant install then answers on any name), else 404.
pub async fn resolve(state: &AppState, host: &str) -> Result<Arc<PreparedSpace>, AppError> {
    state.spaces.for_host(host).await
}

//! One error type for every request path: a status code and a public message for the client,
//! with the full detail kept for the log only.

use crate::store::StoreError;
use std::collections::BTreeMap;

/// Field name → messages, FlexiAPI's 422 `errors` shape.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Everything a request can fail with. `status()` and `public_message()` are the only things a
/// client ever sees; `Display` (for logs) may carry internal detail.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or refused by a guard (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Credentials are missing or wrong (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Credentials are missing or wrong, and the client may retry with HTTP Digest: a 401 with
    /// one `WWW-Authenticate` header per challenge (FlexiAPI: one per stored password algorithm).
    #[error("unauthorized (challenged): {message}")]
    Challenge {
        /// Message shown to the client.
        message: String,
        /// Complete `WWW-Authenticate` header values, in the order they are sent.
        challenges: Vec<String>,
    },
    /// Authenticated but not allowed, or blocked (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Unknown, used or superseded resource (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// A token that exists but has expired (410).
    #[error("gone: {0}")]
    Gone(String),
    /// The request contradicts the resource's state, e.g. an admin blocking itself (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Input validation failed (422), with per-field messages.
    #[error("validation failed: {0:?}")]
    Validation(FieldErrors),
    /// A per-address rate limit refused the request (429, with `Retry-After`).
    #[error("rate limited: {message}")]
    RateLimited {
        /// Message shown to the client.
        message: String,
        /// Seconds until the address may try again.
        retry_after_secs: u64,
    },
    /// A hook script refused the request with an explicit status.
    #[error("denied by hook {script}: {status} {message}")]
    Denied {
        /// HTTP status asked by the script.
        status: u16,
        /// Message asked by the script (shown to the client).
        message: String,
        /// Script that refused, for the log.
        script: String,
    },
    /// A hook failed or ran away; the detail (file, line) is only logged.
    #[error("hook failure: {0}")]
    Hook(String),
    /// A service the request needs is not configured or cannot be reached now, such as the
    /// SMTP relay or an identity provider's keys (503); the message says which.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An upstream server refused what we handed it, such as the SMTP relay refusing a
    /// message (502); the message carries its answer.
    #[error("bad gateway: {0}")]
    BadGateway(String),
    /// A storage failure; never shown to clients.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// Anything else that is our fault; the detail is only logged.
    #[error("internal: {0}")]
    Internal(String),
}

impl AppError {
    /// Convenience for a one-field validation error.
    pub fn field(field: &str, message: impl Into<String>) -> AppError {
        let mut errors = FieldErrors::new();
        errors.insert(field.to_string(), vec![message.into()]);
        AppError::Validation(errors)
    }

    /// The HTTP status code the client gets.
    pub fn status(&self) -> u16 {
        match self {
            AppError::BadRequest(_) => 400,
            AppError::Unauthorized(_) | AppError::Challenge { .. } => 401,
            AppError::Forbidden(_) => 403,
            AppError::NotFound(_) => 404,
            AppError::Conflict(_) => 409,
            AppError::Gone(_) => 410,
            AppError::Validation(_) => 422,
            AppError::RateLimited { .. } => 429,
            AppError::Denied { status, .. } => *status,
            AppError::Store(StoreError::NotFound) => 404,
            AppError::Store(StoreError::Conflict(_)) => 409,
            AppError::Store(StoreError::Unavailable(_)) | AppError::Unavailable(_) => 503,
            AppError::BadGateway(_) => 502,
            AppError::Hook(_) | AppError::Store(_) | AppError::Internal(_) => 500,
        }
    }

    /// The message the client gets: never a database error or a script's source position.
    pub fn public_message(&self) -> String {
        match self {
            AppError::BadRequest(m)
            | AppError::Unauthorized(m)
            | AppError::Forbidden(m)
            | AppError::NotFound(m)
            | AppError::Conflict(m)
            | AppError::Gone(m)
            | AppError::Unavailable(m)
            | AppError::BadGateway(m) => m.clone(),
            AppError::Validation(_) => "The given data was invalid.".to_string(),
            AppError::Denied { message, .. }
            | AppError::Challenge { message, .. }
            | AppError::RateLimited { message, .. } => message.clone(),
            AppError::Store(StoreError::NotFound) => "Not found".to_string(),
            AppError::Store(StoreError::Conflict(m)) => m.clone(),
            AppError::Store(StoreError::Unavailable(_)) => {
                "Service temporarily unavailable, retry shortly".to_string()
            }
            AppError::Hook(_) | AppError::Store(_) | AppError::Internal(_) => {
                "Internal server error".to_string()
            }
        }
    }

    /// Whether the failure is ours (logged at error level) rather than the client's.
    pub fn is_server_error(&self) -> bool {
        self.status() >= 500
    }
}

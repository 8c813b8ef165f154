//! The FlexiAPI-compatible account API's transport-neutral half: JSON shapes, input
//! validation, roles, and one handler per route taking the [`AppState`](crate::state::AppState),
//! a [`RequestInfo`](crate::request::RequestInfo) and parsed inputs, returning an
//! [`ApiReply`] or an [`AppError`]. Only `http/api.rs` turns those into HTTP responses, so no
//! file here mentions warp.

pub mod access;
pub mod accounts;
pub mod admin;
pub mod audit;
pub mod hooks;
pub mod input;
pub mod json;
pub mod spaces;
pub mod tokens;
pub mod validate;
pub mod wizards;

use crate::error::AppError;
use serde_json::Value;

/// A handler's body, before any transport touches it.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// `application/json`.
    Json(Value),
    /// `text/plain` (FlexiAPI answers some routes with a bare value).
    Text(String),
    /// No body at all (FlexiAPI's empty 200s).
    Empty,
}

/// A successful API answer: a status and a body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiReply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Body,
}

impl ApiReply {
    /// A JSON answer.
    pub fn json(status: u16, value: Value) -> ApiReply {
        ApiReply {
            status,
            body: Body::Json(value),
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, text: impl Into<String>) -> ApiReply {
        ApiReply {
            status,
            body: Body::Text(text.into()),
        }
    }

    /// An answer without a body.
    pub fn empty(status: u16) -> ApiReply {
        ApiReply {
            status,
            body: Body::Empty,
        }
    }
}

/// What every API handler returns.
pub type ApiResult = Result<ApiReply, AppError>;

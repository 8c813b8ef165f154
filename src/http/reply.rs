//! Response builders and the single place where errors and rejections become responses.

use crate::error::AppError;
use crate::store::StoreError;
use serde_json::json;
use std::convert::Infallible;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

/// A response with a body, a content type and `Cache-Control: no-store` (documents, QR codes
/// and API answers may all carry credentials or tokens).
pub fn with_body(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
    let body: Vec<u8> = body.into();
    let len = body.len();
    let mut resp = Response::new(body.into());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A JSON response.
pub fn json(status: u16, value: &serde_json::Value) -> Response {
    with_body(status, "application/json", value.to_string())
}

/// The response for an error: JSON `{"message": …}` (plus `errors` for 422; `Retry-After` for
/// 429; the challenges of a Digest 401). Server-side
/// failures are logged here with their detail; the client gets the public message only.
pub fn error(err: &AppError) -> Response {
    let status = err.status();
    if err.is_server_error() {
        tracing::error!(error = %err, status, "request failed");
    } else {
        tracing::debug!(error = %err, status, "request refused");
    }
    let body = match err {
        AppError::Validation(errors) => json!({"message": err.public_message(), "errors": errors}),
        _ => json!({"message": err.public_message()}),
    };
    let mut resp = json(status, &body);
    match err {
        AppError::Challenge { challenges, .. } => {
            for challenge in challenges {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
                }
            }
        }
        AppError::RateLimited {
            retry_after_secs, ..
        } => {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        // The database is away (restarting, failing over): clients may come back shortly.
        AppError::Store(StoreError::Unavailable(_)) | AppError::Unavailable(_) => {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    resp
}

/// Maps warp's own rejections (no route, wrong method, bad body) to JSON errors. Rejections
/// only mean "this route does not match": handlers never reject once matched.
pub async fn handle_rejection(rejection: warp::Rejection) -> Result<Response, Infallible> {
    let (status, message) = if rejection.is_not_found() {
        (404, "Not Found".to_string())
    } else if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        (400, format!("Invalid JSON: {e}"))
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        (413, "Payload Too Large".to_string())
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        (415, "Unsupported Media Type".to_string())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (405, "Method Not Allowed".to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        (400, e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        (400, e.to_string())
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        (500, "Internal server error".to_string())
    };
    Ok(json(status, &json!({ "message": message })))
}

//! Absolute links the server hands out (QR codes, wizard pages, API answers, e-mails): the
//! public base URL of a space and the URLs built on it. Shared by the HTTP edge and the API,
//! so a link means the same wherever it is made.

use crate::model::Space;
use crate::net::proxy::{link_origin, valid_host};
use crate::request::RequestInfo;
use crate::state::AppState;

/// The absolute provisioning URL of a token, on the space's public base URL.
pub fn provisioning_url(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
    token: &str,
    reset: bool,
) -> String {
    let mut url = format!("{}/provisioning/{token}", base_url(state, space, request));
    if reset {
        url.push_str("?reset_password=1");
    }
    url
}

/// The public base URL for links: the space's, else the server's, else the URL the client
/// used: scheme and host from a trusted proxy's `X-Forwarded-Proto`/`X-Forwarded-Host` (or
/// `Forwarded`; the edge drops those headers from any other peer), else the listener's own
/// scheme (`https` with native TLS) + the Host (with its port).
pub fn base_url(state: &AppState, space: &Space, request: &RequestInfo) -> String {
    if let Some(url) = space.public_url.as_deref().filter(|u| !u.is_empty()) {
        return url.trim_end_matches('/').to_string();
    }
    if !state.settings.public_url.is_empty() {
        return state.settings.public_url.trim_end_matches('/').to_string();
    }
    let origin = link_origin(
        request.header("x-forwarded-proto"),
        request.header("x-forwarded-host"),
        request.header("forwarded"),
    );
    let host = origin
        .host
        .or_else(|| {
            request
                .header("host")
                .filter(|h| valid_host(h))
                .map(str::to_string)
        })
        .unwrap_or_else(|| state.settings.listen.to_string());
    format!(
        "{}://{host}",
        origin.scheme.unwrap_or(state.settings.scheme())
    )
}

/// The absolute URL of a wizard link (`/wizard/{token}`), on the space's public base URL.
pub fn wizard_url(state: &AppState, space: &Space, request: &RequestInfo, token: &str) -> String {
    format!("{}/wizard/{token}", base_url(state, space, request))
}

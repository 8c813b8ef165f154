//! What every request goes through around the routes, in order:
//!
//! 1. **Client address** — the TCP peer, or, when the peer is a trusted proxy, the client it
//!    names ([`crate::net::proxy`]). From any other peer the forwarding headers are removed, so
//!    no route, hook or log can be fooled by them.
//! 1. **Client certificate** — the one the TLS connection presented and rustls verified, or,
//!    from a trusted proxy and only from one, the subject it forwarded in
//!    `tls.client_subject_header` ([`client_certificate`]); from any other peer that header is
//!    removed like the forwarding headers. It reaches routes as a request extension.
//! 2. **Failure limit** — on the routes where a refusal means a wrong guess
//!    ([`counts_failures`]), an address whose failure bucket is empty gets 429 with
//!    `Retry-After` here, before routing, so the database is never touched.
//! 3. **The routes**, bounded by `request_timeout_seconds`: past it the handler is dropped and
//!    the client gets 503, so a stalled database cannot hold requests (and connections) forever.
//! 4. **Accounting** — a refused guess (403, 404, 410, or 401 to a request that carried
//!    credentials) takes a cell of the address's failure bucket; a 405 gets its `Allow` header;
//!    the request is counted and timed under its route template
//!    ([`crate::telemetry::record_request`]); and one access-log line is written: method,
//!    route template (never the path, which may hold a token), status, `duration_ms`, client
//!    address, space and account when a handler named them ([`AccessNote`]), a fingerprint of
//!    the client certificate's subject (`client_cert`) when there is one, user agent. It is
//!    at info for every answer below 500 (a 401 Digest challenge, a 404 for `/favicon.ico` are
//!    normal traffic) and at error for a 5xx.

use crate::auth::API_KEY_HEADER;
use crate::error::AppError;
use crate::http::{ClientAddr, MatchedRoute, api, reply};
use crate::net::proxy::FORWARDING_HEADERS;
use crate::request::ClientCertificate;
use crate::state::AppState;
use crate::telemetry::UNMATCHED_ROUTE;
use serde_json::json;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tracing::Instrument;
use warp::http::{HeaderMap, HeaderValue, Request, header};
use warp::reply::Response;

/// Message of the 503 for a request that ran past `request_timeout_seconds`.
pub const TIMEOUT_MESSAGE: &str = "The server took too long to answer; please try again later.";

/// Serves one request through `service` (the routes) with everything above; `connection_cert`
/// is the verified certificate of the TLS connection it came on.
pub async fn handle<S, B>(
    state: &AppState,
    mut service: S,
    peer: SocketAddr,
    connection_cert: Option<ClientCertificate>,
    mut req: Request<B>,
) -> Response
where
    S: tower_service::Service<Request<B>, Response = Response, Error = Infallible>,
{
    let started = Instant::now();
    let client = client_address(state, peer, req.headers_mut());
    let certificate = client_certificate(state, peer, connection_cert, req.headers_mut());
    let client_cert = certificate
        .as_ref()
        .map(|c| crate::secret::fingerprint(&c.subject));
    // HTTP/2 carries the host in `:authority`, which hyper puts in the URI; spaces, links and
    // hooks read `Host`, as HTTP/1.1 sends it.
    if !req.headers().contains_key(header::HOST)
        && let Some(value) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, value);
    }
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .map(|v| bounded(&String::from_utf8_lossy(v.as_bytes())));
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let guarded = counts_failures(&method, &path);
    let credentials = req.headers().contains_key(header::AUTHORIZATION)
        || req.headers().contains_key(API_KEY_HEADER);
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = tracing::field::Empty,
        client = %client
    );
    let matched = MatchedRoute::default();
    let refused = if guarded {
        span.in_scope(|| state.limits.check_failures(client)).err()
    } else {
        None
    };
    let mut response = match refused {
        Some(limited) => reply::error(&AppError::from(limited)),
        None => {
            req.extensions_mut().insert(ClientAddr { peer, client });
            if let Some(certificate) = certificate {
                req.extensions_mut().insert(certificate);
            }
            req.extensions_mut().insert(matched.clone());
            let limit = Duration::from_secs(state.settings.request_timeout_seconds);
            let routed = async move { service.call(req).await }.instrument(span.clone());
            match tokio::time::timeout(limit, routed).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::warn!(
                        parent: &span,
                        seconds = limit.as_secs(),
                        "request timed out (request_timeout_seconds)"
                    );
                    metrics::counter!("provisio_request_timeouts_total").increment(1);
                    reply::json(503, &json!({ "message": TIMEOUT_MESSAGE }))
                }
            }
        }
    };
    let status = response.status().as_u16();
    if guarded && is_failed_guess(status, credentials) {
        state.limits.record_failure(client);
    }
    if status == 405 {
        let allow = api::allowed_methods(&path).join(", ");
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
    }
    let route = matched.get();
    if route.is_none() {
        span.record("route", tracing::field::display(UNMATCHED_ROUTE));
    }
    let route = route.unwrap_or(UNMATCHED_ROUTE);
    let elapsed = started.elapsed();
    crate::telemetry::record_request(route, status, elapsed.as_secs_f64());
    let note = response
        .extensions_mut()
        .remove::<AccessNote>()
        .unwrap_or_default();
    let access = AccessLine {
        method: &method,
        route,
        status,
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        client,
        note: &note,
        client_cert: client_cert.as_deref(),
        user_agent: user_agent.as_deref(),
    };
    access.log();
    response
}

/// What a handler knows about a request that the access line should carry, handed to the
/// edge as a response extension (see [`note`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessNote {
    /// The space (its domain) that served the request.
    pub space: Option<String>,
    /// The account the request was about (provisioned, or authenticated).
    pub account: Option<i64>,
}

/// Attaches the space and account of a request to its response, for the access line.
pub fn note(response: &mut Response, space: Option<&str>, account: Option<i64>) {
    response.extensions_mut().insert(AccessNote {
        space: space.map(str::to_string),
        account,
    });
}

/// One access-log line (target `provisio::access`, outside the request span so its fields are
/// not repeated).
struct AccessLine<'a> {
    method: &'a str,
    route: &'static str,
    status: u16,
    duration_ms: u64,
    client: IpAddr,
    note: &'a AccessNote,
    /// [`crate::secret::fingerprint`] of the client certificate's subject (the subject names a
    /// person; the fingerprint still tells requests of one certificate apart).
    client_cert: Option<&'a str>,
    user_agent: Option<&'a str>,
}

impl AccessLine<'_> {
    /// Writes the line: info below 500, error from 500.
    fn log(&self) {
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: "provisio::access",
                    parent: None,
                    method = %self.method,
                    route = %self.route,
                    status = self.status,
                    duration_ms = self.duration_ms,
                    client = %self.client,
                    space = self.note.space.as_deref(),
                    account = self.note.account,
                    client_cert = self.client_cert,
                    user_agent = self.user_agent,
                    "request"
                )
            };
        }
        if self.status >= 500 {
            line!(error);
        } else {
            line!(info);
        }
    }
}

/// Longest user agent the access line keeps, in characters (a client chooses it).
const MAX_USER_AGENT_CHARS: usize = 200;

/// `text` cut to [`MAX_USER_AGENT_CHARS`] characters.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_USER_AGENT_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The client address of a request from `peer`; strips the forwarding headers unless the peer
/// is a trusted proxy.
fn client_address(state: &AppState, peer: SocketAddr, headers: &mut HeaderMap) -> IpAddr {
    if state.proxies.contains(peer.ip()) {
        let xff = joined(headers, "x-forwarded-for");
        let forwarded = joined(headers, "forwarded");
        state
            .proxies
            .client_ip(peer.ip(), xff.as_deref(), forwarded.as_deref())
    } else {
        for name in FORWARDING_HEADERS {
            headers.remove(*name);
        }
        peer.ip().to_canonical()
    }
}

/// Longest forwarded client-certificate subject believed, in bytes (a DN is far shorter; a
/// longer header is a misconfigured proxy, and ignored).
const MAX_FORWARDED_SUBJECT: usize = 1024;

/// The client certificate of a request. Without `tls.client_subject_header`, the TLS
/// connection's own. With it, a trusted proxy's request carries only what the proxy forwarded
/// in that header (the connection's certificate, if any, is the proxy's, not its client's);
/// an empty or missing header means no certificate. From any other peer the header is removed
/// (so no route, hook or log sees it) and the connection's certificate stands.
pub fn client_certificate(
    state: &AppState,
    peer: SocketAddr,
    connection_cert: Option<ClientCertificate>,
    headers: &mut HeaderMap,
) -> Option<ClientCertificate> {
    let name = state.settings.tls.client_subject_header.as_str();
    if name.is_empty() {
        return connection_cert;
    }
    if !state.proxies.contains(peer.ip()) {
        headers.remove(name);
        return connection_cert;
    }
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        // Two subjects for one request: the proxy did not replace what the client sent.
        tracing::warn!(
            header = name,
            "a trusted proxy sent the client-certificate header twice; ignoring it"
        );
        return None;
    }
    let subject = std::str::from_utf8(value.as_bytes()).ok()?.trim();
    if subject.is_empty() || subject.len() > MAX_FORWARDED_SUBJECT {
        return None;
    }
    Some(ClientCertificate {
        subject: subject.to_string(),
        uris: Vec::new(),
    })
}

/// Every line of a header, joined with `,` (each proxy may have added its own line).
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Whether a status on a guarded route is a refused guess: 403, 404, 410, and 401 when the
/// request carried credentials (a 401 without any is a Digest challenge or a missing-key
/// answer that every well-behaved client meets once; those are limited as anonymous rows).
pub fn is_failed_guess(status: u16, had_credentials: bool) -> bool {
    matches!(status, 403 | 404 | 410) || (status == 401 && had_credentials)
}

/// Whether refusals on this request count as guesses: everything under `/provisioning`,
/// `/wizard` and `/api` except the anonymous `POST /api/accounts/auth_token` (which has its
/// own limit). Classified conservatively: empty segments skipped, `%XX` decoded, case ignored,
/// so no spelling of a path escapes the count.
pub fn counts_failures(method: &str, path: &str) -> bool {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .take(4)
        .map(|s| percent_decode(s).to_ascii_lowercase())
        .collect();
    match segments.first().map(String::as_str) {
        Some("provisioning" | "wizard") => true,
        Some("api") => {
            !(method.eq_ignore_ascii_case("POST") && segments[1..] == ["accounts", "auth_token"])
        }
        _ => false,
    }
}

/// `%XX` escapes decoded (invalid ones kept as they are), invalid UTF-8 replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_routes_in_every_spelling() {
        for path in [
            "/provisioning",
            "/provisioning/abc",
            "/provisioning/abc/",
            "//provisioning//abc",
            "/%70rovisioning/abc",
            "/PROVISIONING/abc",
            "/wizard/abc",
            "/api/accounts/me",
            "/api/accounts/auth_token/abc/attach",
        ] {
            assert!(counts_failures("GET", path), "{path}");
        }
        assert!(counts_failures("GET", "/api/accounts/auth_token"));
        for path in ["/api/accounts/auth_token", "/api/accounts/auth_token/"] {
            assert!(!counts_failures("POST", path), "{path}");
        }
        for path in [
            "/",
            "/healthz",
            "/metrics",
            "/provisioningx",
            "/nowhere/provisioning",
        ] {
            assert!(!counts_failures("GET", path), "{path}");
        }
    }

    #[test]
    fn which_statuses_are_guesses() {
        for status in [403, 404, 410] {
            assert!(is_failed_guess(status, false));
        }
        assert!(is_failed_guess(401, true));
        assert!(
            !is_failed_guess(401, false),
            "a bare challenge is not a guess"
        );
        for status in [200, 201, 400, 405, 422, 429, 500, 503] {
            assert!(!is_failed_guess(status, true));
        }
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%41%4a%zz%"), "aAJ%zz%");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}

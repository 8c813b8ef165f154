//! The HTTP edge: warp filters and replies only. Nothing below `http/` mentions warp; handlers
//! turn requests into [`RequestInfo`] values, call the pipeline or the store, and turn results
//! into responses. One file per area: [`provisioning`], [`wizard`], [`ops`]; [`reply`] renders
//! errors in one place.
//!
//! The server runs its own accept loop (instead of `warp::serve`) for two reasons: warp 0.4
//! sets no hyper timer, so it has no slow-header timeout; and graceful shutdown needs a
//! deadline, which warp's `graceful` lacks.

pub mod api;
pub mod ops;
pub mod provisioning;
pub mod reply;
pub mod wizard;

use crate::pipeline::request::{RequestInfo, RouteKind};
use crate::pipeline::space::normalize_host;
use crate::state::AppState;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;

/// The peer address of a connection, attached to each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Hands every handler the shared state (warp's idiom for `with_state`).
pub fn with_state(
    state: AppState,
) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The raw query string, or empty when there is none (warp's own filter rejects that case).
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Builds the transport-neutral [`RequestInfo`] for a route.
pub fn request_info(
    route: RouteKind,
) -> impl Filter<Extract = (RequestInfo,), Error = Infallible> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ClientAddr>())
        .map(
            move |method: warp::http::Method,
                  path: warp::path::FullPath,
                  raw_query: String,
                  headers: HeaderMap,
                  addr: Option<ClientAddr>| {
                build_request_info(
                    route,
                    method.as_str(),
                    path.as_str(),
                    raw_query,
                    &headers,
                    addr,
                )
            },
        )
}

/// Collects what the pipeline and hooks may read from an HTTP request.
fn build_request_info(
    route: RouteKind,
    method: &str,
    path: &str,
    raw_query: String,
    headers: &HeaderMap,
    addr: Option<ClientAddr>,
) -> RequestInfo {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let host = normalize_host(map.get("host").map(String::as_str).unwrap_or(""));
    let query = form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    RequestInfo {
        method: method.to_string(),
        path: path.to_string(),
        raw_query,
        query,
        headers: map,
        host,
        client_ip: addr.map(|a| a.0.ip()),
        route,
    }
}

/// Every route of the server, with the one rejection handler.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    provisioning::routes(state.clone())
        .or(wizard::routes(state.clone()))
        .unify()
        .or(api::routes(state.clone()))
        .unify()
        .or(ops::routes(state))
        .unify()
        .recover(reply::handle_rejection)
        .unify()
        .with(warp::trace(|info| {
            tracing::info_span!("request", method = %info.method(), route = %redact_path(info.path()))
        }))
        .map(warp::Reply::into_response)
        .boxed()
}

/// The path with every secret segment replaced, so spans and logs never carry a token or key
/// (`/provisioning/abc` → `/provisioning/{token}`).
pub fn redact_path(path: &str) -> String {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let secret_at = match segments.as_slice() {
        ["provisioning", "me"] | ["provisioning"] => None,
        ["provisioning", "auth_token" | "qrcode", _] => Some(2),
        ["provisioning", _] | ["wizard", _] => Some(1),
        ["api", "accounts", "auth_token", _, ..] => Some(3),
        ["api", "accounts", "me", "api_key", _] => Some(4),
        _ => None,
    };
    match secret_at {
        None => path.to_string(),
        Some(i) => {
            let mut parts = segments;
            parts[i] = "{token}";
            format!("/{}", parts.join("/"))
        }
    }
}

/// Serves `routes(state)` on an already-bound listener until `shutdown` resolves, then waits
/// up to `shutdown_grace_seconds` for requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = state.settings.clone();
    let service = warp::service(routes(state));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(settings.header_read_timeout_seconds));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let svc = service.clone();
                let hyper_svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ClientAddr(addr));
                    let mut svc = svc.clone();
                    tower_service::Service::call(&mut svc, req)
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_svc);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = Duration::from_secs(settings.shutdown_grace_seconds);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = grace.as_secs(),
            "requests still open after the shutdown grace period; closing them"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redact_path;

    #[test]
    fn secrets_never_reach_span_paths() {
        assert_eq!(redact_path("/provisioning/abc123"), "/provisioning/{token}");
        assert_eq!(
            redact_path("/provisioning/qrcode/abc"),
            "/provisioning/qrcode/{token}"
        );
        assert_eq!(
            redact_path("/provisioning/auth_token/abc"),
            "/provisioning/auth_token/{token}"
        );
        assert_eq!(redact_path("/wizard/abc"), "/wizard/{token}");
        assert_eq!(
            redact_path("/api/accounts/auth_token/abc/attach"),
            "/api/accounts/auth_token/{token}/attach"
        );
        assert_eq!(
            redact_path("/api/accounts/me/api_key/abc"),
            "/api/accounts/me/api_key/{token}"
        );
        assert_eq!(redact_path("/provisioning/me"), "/provisioning/me");
        assert_eq!(redact_path("/api/accounts/12"), "/api/accounts/12");
    }
}

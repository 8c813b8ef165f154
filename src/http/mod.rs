//! The HTTP edge: warp filters and replies only. Nothing below `http/` mentions warp; handlers
//! turn requests into [`RequestInfo`] values, call the pipeline or the store, and turn results
//! into responses. One file per area: [`provisioning`], [`wizard`], [`api`], [`ops`]; [`reply`]
//! renders errors in one place.
//!
//! Around the routes: [`server`] runs the accept loop and watches every connection (head and
//! idle deadlines, the connection cap); [`edge`] wraps every request (client address behind
//! trusted proxies, rate limits, request timeout, `Allow` on 405, the access log). Logs name
//! the route template that matched ([`route_tag`]), never the path, which may hold a token in
//! any spelling (trailing slash, percent-escapes).

pub mod api;
pub mod edge;
pub mod ops;
pub mod provisioning;
pub mod reply;
pub mod server;
pub mod wizard;

pub use server::serve;

use crate::request::{ClientCertificate, RequestInfo, RouteKind, normalize_host};
use crate::state::AppState;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;

/// Who sent a request, attached to it by [`edge`]: the TCP peer, and the client it stands for
/// (the peer itself unless the peer is a trusted proxy).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client address every later decision uses (IP bindings, limits, logs, hooks).
    pub client: IpAddr,
}

/// The template of the route that matched (`/provisioning/{token}`), set by [`route_tag`] and
/// read by [`edge`] for its log line.
#[derive(Debug, Clone, Default)]
pub struct MatchedRoute(Arc<Mutex<Option<&'static str>>>);

impl MatchedRoute {
    /// Records the template (a later match overwrites an earlier one).
    pub fn set(&self, template: &'static str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(template);
    }

    /// The template, when a route matched.
    pub fn get(&self) -> Option<&'static str> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Records `template` as the route of this request, in the request's [`MatchedRoute`] and in
/// the `route` field of its log span. Place it after every filter that may still reject, so
/// only the route that answers is named.
pub fn route_tag(template: &'static str) -> impl Filter<Extract = (), Error = Infallible> + Clone {
    warp::ext::optional::<MatchedRoute>()
        .map(move |slot: Option<MatchedRoute>| {
            if let Some(slot) = slot {
                slot.set(template);
            }
            tracing::Span::current().record("route", tracing::field::display(template));
        })
        .untuple_one()
}

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

/// Builds the transport-neutral [`RequestInfo`] for a route, recording `template` as the
/// matched route (see [`route_tag`]).
pub fn request_info(
    route: RouteKind,
    template: &'static str,
) -> impl Filter<Extract = (RequestInfo,), Error = Infallible> + Clone {
    route_tag(template)
        .and(warp::method())
        .and(warp::path::full())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ClientAddr>())
        .and(warp::ext::optional::<ClientCertificate>())
        .map(
            move |method: warp::http::Method,
                  path: warp::path::FullPath,
                  raw_query: String,
                  headers: HeaderMap,
                  addr: Option<ClientAddr>,
                  certificate: Option<ClientCertificate>| {
                let mut info = build_request_info(
                    route,
                    method.as_str(),
                    path.as_str(),
                    raw_query,
                    &headers,
                    addr,
                );
                info.client_certificate = certificate;
                info
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
        client_ip: addr.map(|a| a.client),
        route,
        client_certificate: None,
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
        .map(warp::Reply::into_response)
        .boxed()
}

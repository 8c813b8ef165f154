//! Operations routes: liveness, readiness (database round trip) and Prometheus metrics. With
//! `metrics_listen` set, `/metrics` moves to its own listener ([`metrics_listener_routes`]) and
//! the main listener answers 404 for it, so the public port shows nothing of the service's
//! internals.

use crate::http::{reply, route_tag, with_state};
use crate::state::AppState;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// `/healthz`, `/readyz`, and `/metrics` unless it has a listener of its own.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and(route_tag("/healthz"))
        .map(|| reply::json(200, &json!({"status": "ok"})));
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(route_tag("/readyz"))
        .and(with_state(state.clone()))
        .then(readyz);
    let probes = healthz.or(readyz).unify();
    if separate_listener(&state) {
        probes.boxed()
    } else {
        probes.or(metrics(state)).unify().boxed()
    }
}

/// Everything the `metrics_listen` listener serves: `/metrics`, and 404 JSON for anything else.
pub fn metrics_listener_routes(state: AppState) -> BoxedFilter<(Response,)> {
    metrics(state)
        .recover(reply::handle_rejection)
        .unify()
        .map(warp::Reply::into_response)
        .boxed()
}

/// Whether `/metrics` is served by its own listener instead of the main one.
fn separate_listener(state: &AppState) -> bool {
    matches!(state.settings.metrics_listen_addr(), Ok(Some(_)))
}

/// `GET /metrics` — the Prometheus text format, with the pool gauges read at this moment.
fn metrics(state: AppState) -> BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(route_tag("/metrics"))
        .and(with_state(state))
        .map(|state: AppState| match &state.metrics {
            Some(handle) => {
                crate::telemetry::record_pool(&state.store.pool_status());
                reply::with_body(200, "text/plain; version=0.0.4", handle.render())
            }
            None => reply::json(
                404,
                &json!({"message": "metrics are not enabled in this process"}),
            ),
        })
        .boxed()
}

/// `GET /readyz` — 200 when the database answers, 503 otherwise.
async fn readyz(state: AppState) -> Response {
    match state.store.ping().await {
        Ok(()) => reply::json(
            200,
            &json!({"status": "ready", "store": state.store.backend()}),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            reply::json(503, &json!({"status": "unavailable"}))
        }
    }
}

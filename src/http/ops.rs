//! Operations routes: liveness, readiness (database round trip) and Prometheus metrics.

use crate::http::{reply, route_tag, with_state};
use crate::state::AppState;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// `/healthz`, `/readyz`, `/metrics`.
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
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(route_tag("/metrics"))
        .and(with_state(state))
        .map(|state: AppState| match &state.metrics {
            Some(handle) => reply::with_body(200, "text/plain; version=0.0.4", handle.render()),
            None => reply::json(
                404,
                &json!({"message": "metrics are not enabled in this process"}),
            ),
        });
    healthz.or(readyz).unify().or(metrics).unify().boxed()
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

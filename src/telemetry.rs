//! What an operator watches: the log (text for a terminal, one JSON object per line for a
//! collector) and the Prometheus metrics, every one of them described (`# HELP`) and the
//! latency ones rendered as histograms (buckets), which Prometheus can aggregate across
//! instances, unlike summaries.
//!
//! Metric names follow Prometheus' conventions (<https://prometheus.io/docs/practices/naming/>):
//! the unit in the name (`_seconds`), `_total` on counters, and labels with few values: route
//! templates, status codes, outcomes, never a tenant, account or token.

use crate::config::{LogFormat, Settings};
use crate::store::PoolStatus;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;

/// Requests answered, by route template and status.
pub const HTTP_REQUESTS: &str = "provisio_http_requests_total";
/// Time from a request's head to its response, by route template.
pub const HTTP_DURATION: &str = "provisio_http_request_duration_seconds";
/// Time the hook scripts of one request ran.
pub const HOOK_DURATION: &str = "provisio_hook_duration_seconds";
/// The build that is running (`version` label, value 1).
pub const BUILD_INFO: &str = "provisio_build_info";
/// Database connections the pool may open.
pub const POOL_MAX: &str = "provisio_db_pool_max_connections";
/// Database connections the pool holds open.
pub const POOL_OPEN: &str = "provisio_db_pool_connections";
/// Open database connections not in use.
pub const POOL_IDLE: &str = "provisio_db_pool_idle_connections";
/// Requests waiting for a database connection.
pub const POOL_WAITING: &str = "provisio_db_pool_waiting_requests";

/// The `route` label of a request no route matched (scanners, typos): one value, so unknown
/// paths cannot grow the label set.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Upper bounds of the request-duration buckets, in seconds: from a cached 1 ms answer to the
/// longest `request_timeout_seconds` worth telling apart.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of the hook-duration buckets, in seconds: up to the largest `hooks.deadline_ms`
/// worth telling apart.
const HOOK_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Installs the global log subscriber: the filter (`RUST_LOG` wins over the `log` setting,
/// with the redacting caps of [`crate::app::log_filter`]), on standard error, in
/// `log_format`. Colours only when standard error is a terminal and `NO_COLOR` is unset, so
/// files and journald get no escape codes.
pub fn init_logging(settings: &Settings) {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.log.clone());
    let filter = crate::app::log_filter(&base);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// The Prometheus builder with provisio's histogram buckets (tests that install their own
/// recorder use it too).
pub fn prometheus_builder() -> anyhow::Result<PrometheusBuilder> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_string()), HTTP_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(HOOK_DURATION.to_string()), HOOK_BUCKETS)?)
}

/// Installs the process-wide recorder (once per process), describes every metric and sets
/// [`BUILD_INFO`].
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = prometheus_builder()?.install_recorder()?;
    describe_metrics();
    Ok(handle)
}

/// Describes every metric provisio emits (the `# HELP` lines) and sets [`BUILD_INFO`]; call it
/// after a recorder is installed.
pub fn describe_metrics() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by route template and status code."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from a request's head to its response head, by route template."
    );
    describe_histogram!(
        HOOK_DURATION,
        Unit::Seconds,
        "Wall-clock time the hook scripts of one provisioning request ran."
    );
    describe_counter!(
        crate::hooks::RUN_FAILURES_METRIC,
        Unit::Count,
        "Hook scripts that failed at request time, by scope (default.rhai or a space script)."
    );
    describe_counter!(
        crate::hooks::RELOAD_FAILURES_METRIC,
        Unit::Count,
        "Hook reloads refused because a script did not compile (the previous set stays live)."
    );
    describe_counter!(
        "provisio_api_responses_total",
        Unit::Count,
        "Account API answers, by route template and status (a subset of provisio_http_requests_total)."
    );
    describe_gauge!(
        BUILD_INFO,
        "The provisio build that is running (value 1, version in the label)."
    );
    describe_gauge!(
        POOL_MAX,
        Unit::Count,
        "Database connections the pool may open (pool_size)."
    );
    describe_gauge!(
        POOL_OPEN,
        Unit::Count,
        "Database connections the pool holds open."
    );
    describe_gauge!(
        POOL_IDLE,
        Unit::Count,
        "Open database connections not in use."
    );
    describe_gauge!(
        POOL_WAITING,
        Unit::Count,
        "Requests waiting for a database connection."
    );
    describe_counter!(
        "provisio_rate_limited_total",
        Unit::Count,
        "Requests refused with 429, by limit (failures, anonymous)."
    );
    describe_gauge!(
        "provisio_rate_limit_keys",
        Unit::Count,
        "Client addresses the rate limiter currently tracks."
    );
    describe_counter!(
        "provisio_request_timeouts_total",
        Unit::Count,
        "Requests answered 503 after request_timeout_seconds."
    );
    describe_counter!(
        "provisio_accept_errors_total",
        Unit::Count,
        "Failed accept() calls (out of file descriptors, say)."
    );
    describe_counter!(
        "provisio_connections_refused_total",
        Unit::Count,
        "Connections closed at once because max_connections were open."
    );
    describe_gauge!(
        "provisio_connections_open",
        Unit::Count,
        "Client connections open."
    );
    describe_counter!(
        "provisio_connections_closed_total",
        Unit::Count,
        "Connections the server closed, by reason (header_timeout, idle)."
    );
    describe_counter!(
        "provisio_tls_handshake_failures_total",
        Unit::Count,
        "TLS handshakes that failed (error: refused or broken; timeout: not done within header_read_timeout_seconds)."
    );
    describe_counter!(
        "provisio_tls_reloads_total",
        Unit::Count,
        "Reloads of changed TLS files, by result (ok; error: the previous certificate stays)."
    );
    describe_counter!(
        crate::housekeeping::PURGED_ROWS_METRIC,
        Unit::Count,
        "Expired or spent rows housekeeping deleted, by table."
    );
    describe_counter!(
        crate::audit::WRITTEN_METRIC,
        Unit::Count,
        "Audit events by outcome: ok (written), failed (a batch write failed and is retried), lost (could not be written; each is logged at error)."
    );
    describe_counter!(
        crate::pipeline::consume::SETTLED_METRIC,
        Unit::Count,
        "Token consumes whose commit acknowledgement was lost, by how they were settled."
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Counts one answered request and its duration under its route template.
pub fn record_request(route: &'static str, status: u16, seconds: f64) {
    metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route).record(seconds);
}

/// Sets the database pool gauges (read when `/metrics` is rendered, so they are current).
pub fn record_pool(status: &PoolStatus) {
    metrics::gauge!(POOL_MAX).set(status.max_size as f64);
    metrics::gauge!(POOL_OPEN).set(status.size as f64);
    metrics::gauge!(POOL_IDLE).set(status.available as f64);
    metrics::gauge!(POOL_WAITING).set(status.waiting as f64);
}

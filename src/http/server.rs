//! The accept loop (hyper-util, HTTP/1.1 and HTTP/2 prior knowledge), instead of
//! `warp::serve`, because every connection needs deadlines hyper does not give:
//!
//! * **Head deadline.** A connection must deliver a complete request head within
//!   `header_read_timeout_seconds` of being *accepted*. hyper's own HTTP/1 timer starts only at
//!   the first byte, and nothing in hyper bounds a socket that sends nothing, or only the
//!   HTTP/2 preface; ~1,000 of those would exhaust the file descriptors.
//! * **Idle deadline.** A connection with no request in flight closes `keep_alive_seconds`
//!   after its last response (hyper has no idle timeout on either protocol).
//! * **Cap.** At most `max_connections` are open; past it new sockets are closed at once (and
//!   counted) while open connections keep being served.
//! * **Graceful shutdown with a deadline** (`shutdown_grace_seconds`), which warp's lacks.
//! * **Native TLS** (`[tls]`, [`crate::net::tls`]) on the main listener. The handshake runs in
//!   the connection's own task, never in the accept loop, and within the head deadline (which
//!   counts from accept), so a slow or broken handshake holds one connection slot for at most
//!   `header_read_timeout_seconds` and delays no one else. Each handshake takes the live
//!   configuration, so a reloaded certificate applies to new connections while open ones go
//!   on. ALPN offers `h2` and `http/1.1`. The verified client certificate is read once per
//!   connection and handed to [`edge`] with every request on it. The metrics listener stays
//!   plain HTTP (it is meant for a private address).
//!
//! A request is "in flight" from the moment hyper hands its head to the service until its
//! response body has been sent (the body carries a guard), so a deadline never cuts a request
//! that is being served; bounding the handler itself is [`super::edge`]'s request timeout.

use crate::http::{edge, ops, routes};
use crate::net::limit::SWEEP_INTERVAL;
use crate::net::tls::Tls;
use crate::request::ClientCertificate;
use crate::state::AppState;
use anyhow::Context as _;
use futures_util::FutureExt as _;
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// Pause after a failed `accept` (out of descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning per this period for a repeated condition (accept errors, the cap).
const WARN_PERIOD: Duration = Duration::from_secs(10);

/// Serves `routes(state)` on an already-bound listener until `shutdown` resolves, then waits
/// up to `shutdown_grace_seconds` for requests in flight. With `metrics_listen` set, binds that
/// address too and serves `/metrics` there alone, with the same deadlines and shutdown.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = match state.settings.metrics_listen_addr() {
        Ok(Some(addr)) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (key `metrics_listen`)"))?,
        ),
        Ok(None) => None,
        Err(why) => anyhow::bail!("key `metrics_listen`: {why}"),
    };
    let sweeper = tokio::spawn(sweep_limits(state.clone()));
    let shutdown = shutdown.shared();
    let tls = state.tls.clone();
    let result = match metrics {
        None => accept_loop(listener, state.clone(), routes(state), tls, shutdown).await,
        Some(metrics) => {
            tracing::info!(
                addr = %metrics.local_addr()?,
                "metrics listening (key `metrics_listen`)"
            );
            let (main, metrics) = tokio::join!(
                accept_loop(
                    listener,
                    state.clone(),
                    routes(state.clone()),
                    tls,
                    shutdown.clone()
                ),
                accept_loop(
                    metrics,
                    state.clone(),
                    ops::metrics_listener_routes(state),
                    None,
                    shutdown
                ),
            );
            main.and(metrics)
        }
    };
    sweeper.abort();
    result
}

/// Accepts connections on `listener` and serves `routes` through the [`edge`] (over TLS when
/// `tls` is set) until `shutdown` resolves, then waits up to `shutdown_grace_seconds` for
/// requests in flight.
async fn accept_loop(
    listener: TcpListener,
    state: AppState,
    routes: BoxedFilter<(Response,)>,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = state.settings.clone();
    let service = warp::service(routes);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = Duration::from_secs(settings.header_read_timeout_seconds);
    let deadlines = Deadlines {
        head: header_timeout,
        idle: Duration::from_secs(settings.keep_alive_seconds),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut accept_warning = Throttled::default();
    let mut cap_warning = Throttled::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        metrics::counter!("provisio_accept_errors_total").increment(1);
                        accept_warning.warn(|suppressed| {
                            tracing::warn!(error = %e, suppressed, "accept failed; backing off");
                        });
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    drop(stream);
                    metrics::counter!("provisio_connections_refused_total").increment(1);
                    cap_warning.warn(|suppressed| {
                        tracing::warn!(
                            max_connections = settings.max_connections,
                            suppressed,
                            "connection limit reached; closing new connections at once"
                        );
                    });
                    continue;
                };
                let conn = Conn {
                    watch: Arc::new(ConnWatch::new()),
                    graceful: graceful.watcher(),
                    builder: builder.clone(),
                    state: state.clone(),
                    service: service.clone(),
                    peer,
                    deadlines,
                };
                // The live configuration at accept time: a reload from now on is for the
                // connections accepted after it.
                let handshake = tls.as_ref().map(|tls| tokio_rustls::TlsAcceptor::from(tls.config()));
                tokio::spawn(async move {
                    let _permit = permit;
                    let open = metrics::gauge!("provisio_connections_open");
                    open.increment(1.0);
                    match handshake {
                        None => conn.serve(TokioIo::new(stream), None).await,
                        Some(acceptor) => {
                            if let Some((stream, certificate)) = conn.handshake(acceptor, stream).await {
                                conn.serve(TokioIo::new(stream), certificate).await;
                            }
                        }
                    }
                    open.decrement(1.0);
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

/// What one connection's task needs to serve it.
struct Conn<S> {
    watch: Arc<ConnWatch>,
    graceful: hyper_util::server::graceful::Watcher,
    builder: auto::Builder<TokioExecutor>,
    state: AppState,
    service: S,
    peer: SocketAddr,
    deadlines: Deadlines,
}

impl<S> Conn<S>
where
    S: tower_service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// The TLS handshake, bounded by the head deadline (which counts from accept); the stream
    /// and the verified client certificate, or `None` (counted and logged at debug) when the
    /// handshake fails or takes too long.
    async fn handshake(
        &self,
        acceptor: tokio_rustls::TlsAcceptor,
        stream: TcpStream,
    ) -> Option<(
        tokio_rustls::server::TlsStream<TcpStream>,
        Option<ClientCertificate>,
    )> {
        let deadline = self.watch.accepted + self.deadlines.head;
        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(crate::net::tls::client_certificate);
                Some((stream, certificate))
            }
            Ok(Err(e)) => {
                metrics::counter!("provisio_tls_handshake_failures_total", "reason" => "error")
                    .increment(1);
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                metrics::counter!("provisio_tls_handshake_failures_total", "reason" => "timeout")
                    .increment(1);
                tracing::debug!(peer = %self.peer, "TLS handshake timed out; closing");
                None
            }
        }
    }

    /// Serves the connection's requests (each through the [`edge`], carrying `certificate`)
    /// under the deadlines and the graceful shutdown.
    async fn serve<I>(self, io: I, certificate: Option<ClientCertificate>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Conn {
            watch,
            graceful,
            builder,
            state,
            service,
            peer,
            deadlines,
        } = self;
        let hyper_svc = {
            let watch = watch.clone();
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let guard = InFlight::start(watch.clone());
                let state = state.clone();
                let service = service.clone();
                let certificate = certificate.clone();
                async move {
                    let response = edge::handle(&state, service, peer, certificate, req).await;
                    Ok::<_, Infallible>(response.map(|body| Guarded {
                        body,
                        _guard: guard,
                    }))
                }
            })
        };
        let conn = builder
            .serve_connection_with_upgrades(io, hyper_svc)
            .into_owned();
        supervise(graceful.watch(conn), watch, deadlines).await;
    }
}

/// Forgets rate-limit keys whose buckets are full again, every [`SWEEP_INTERVAL`].
async fn sweep_limits(state: AppState) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        state.limits.sweep();
        metrics::gauge!("provisio_rate_limit_keys").set(state.limits.tracked_keys() as f64);
    }
}

/// A warning for a condition that may repeat thousands of times a second: logged at most once
/// per [`WARN_PERIOD`], with the number of occurrences it stands for.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    /// Calls `log` with the count of suppressed occurrences, unless one was logged recently.
    fn warn(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_PERIOD)
        {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// The two deadlines of a connection with nothing in flight.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// From accept to the first complete request head.
    head: Duration,
    /// From the end of the last response to the next request head.
    idle: Duration,
}

/// What the supervisor of one connection knows about its requests.
struct ConnWatch {
    /// Requests whose head arrived and whose response has not been sent completely.
    in_flight: AtomicUsize,
    /// Whether any request head arrived.
    served: AtomicBool,
    /// When the last request in flight finished.
    idle_since: Mutex<Instant>,
    /// Wakes the supervisor when any of the above changes.
    changed: Notify,
    /// When the socket was accepted.
    accepted: Instant,
}

impl ConnWatch {
    fn new() -> ConnWatch {
        let now = Instant::now();
        ConnWatch {
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: Mutex::new(now),
            changed: Notify::new(),
            accepted: now,
        }
    }

    /// When the connection must be closed if nothing happens, and why; `None` while a request
    /// is in flight.
    fn deadline(&self, d: Deadlines) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        if !self.served.load(Ordering::SeqCst) {
            return Some((self.accepted + d.head, "header_timeout"));
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        Some((since + d.idle, "idle"))
    }
}

/// Marks one request in flight on its connection, from its head to the end of its response
/// body (it travels inside [`Guarded`]).
struct InFlight(Arc<ConnWatch>);

impl InFlight {
    fn start(watch: Arc<ConnWatch>) -> InFlight {
        watch.served.store(true, Ordering::SeqCst);
        watch.in_flight.fetch_add(1, Ordering::SeqCst);
        watch.changed.notify_one();
        InFlight(watch)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The idle clock is set before the count drops, so the supervisor never sees an idle
        // connection with a stale clock.
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_one();
    }
}

/// A response body that holds its request's [`InFlight`] until hyper drops it (sent, or the
/// connection ended).
struct Guarded<B> {
    body: B,
    _guard: InFlight,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Drives one connection until it ends, or closes it (by dropping it) when a deadline passes
/// with no request in flight.
async fn supervise<F, E>(conn: F, watch: Arc<ConnWatch>, deadlines: Deadlines)
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    loop {
        let deadline = watch.deadline(deadlines);
        if let Some((at, reason)) = deadline
            && at <= Instant::now()
        {
            metrics::counter!("provisio_connections_closed_total", "reason" => reason).increment(1);
            tracing::debug!(reason, "closing connection");
            return;
        }
        let changed = watch.changed.notified();
        let ended = match deadline {
            None => tokio::select! {
                ended = &mut conn => Some(ended),
                () = changed => None,
            },
            Some((at, _)) => tokio::select! {
                ended = &mut conn => Some(ended),
                () = changed => None,
                () = tokio::time::sleep_until(at) => None,
            },
        };
        if let Some(result) = ended {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_requests() {
        let d = Deadlines {
            head: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        };
        let watch = Arc::new(ConnWatch::new());
        let t0 = watch.accepted;
        assert_eq!(watch.deadline(d), Some((t0 + d.head, "header_timeout")));
        let guard = InFlight::start(watch.clone());
        let second = InFlight::start(watch.clone());
        assert_eq!(watch.deadline(d), None, "busy: no deadline");
        tokio::time::advance(Duration::from_secs(60)).await;
        drop(guard);
        assert_eq!(watch.deadline(d), None, "still one in flight");
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(second);
        let idle_from = t0 + Duration::from_secs(61);
        assert_eq!(watch.deadline(d), Some((idle_from + d.idle, "idle")));
    }

    #[tokio::test(start_paused = true)]
    async fn supervisor_drops_a_silent_connection_at_the_head_deadline() {
        let d = Deadlines {
            head: Duration::from_secs(2),
            idle: Duration::from_secs(30),
        };
        let watch = Arc::new(ConnWatch::new());
        let started = Instant::now();
        supervise(std::future::pending::<Result<(), Infallible>>(), watch, d).await;
        assert_eq!(Instant::now() - started, d.head);
    }

    #[test]
    fn throttled_warnings_count_what_they_suppress() {
        let mut t = Throttled::default();
        let mut logged = Vec::new();
        for _ in 0..5 {
            t.warn(|n| logged.push(n));
        }
        assert_eq!(logged, [0]);
        assert_eq!(t.suppressed, 4);
    }
}

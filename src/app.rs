//! Start-up wiring: settings → store (migrations applied before the listener binds) → space
//! snapshot → hooks → HTTP server, and the background tasks that live as long as the server
//! (space coherence, hook scripts of the database, API-key use batches, audit-trail batches,
//! housekeeping, hot reload).

use crate::config::Settings;
use crate::hooks::Hooks;
use crate::model::Space;
use crate::net::limit::Limits;
use crate::net::proxy::TrustedProxies;
use crate::spaces::{KeepFresh, Spaces};
use crate::state::AppState;
use crate::store::{self, DynStore};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Opens the configured store and applies pending migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<DynStore> {
    let url = settings.database_url();
    if settings.database.is_empty() {
        // 0700: the database in it holds HA1s (docs/deploy.md, "Secrets at rest").
        store::sqlite_file::create_private_dir(&settings.data_dir)
            .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    }
    let store = store::open(&url, settings.pool_size)
        .await
        .with_context(|| format!("opening the {} database", backend_name(&url)))?;
    let applied = store.migrate().await.context("applying migrations")?;
    for name in applied {
        tracing::info!(migration = %name, "migration applied");
    }
    Ok(store)
}

fn backend_name(url: &str) -> &'static str {
    if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

/// Builds the shared state: store (migrated), space snapshot (loaded) and hooks (compiled).
/// `metrics` installs the Prometheus recorder (once per process).
pub async fn build_state(settings: Settings, metrics: bool) -> anyhow::Result<AppState> {
    let store = open_store(&settings).await?;
    let spaces = Spaces::load(
        store.clone(),
        Duration::from_secs(settings.cache_max_staleness_seconds),
    )
    .await
    .context("loading the spaces")?;
    let hooks = load_hooks(&settings, store.as_ref()).await?;
    let metrics = if metrics {
        crate::telemetry::install_metrics()
            .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
            .ok()
    } else {
        None
    };
    let proxies = TrustedProxies::parse(&settings.trusted_proxies)
        .map_err(|why| anyhow::anyhow!("key `trusted_proxies`: {why}"))?;
    let tls = crate::net::tls::Tls::load(&settings.tls)?;
    Ok(AppState {
        store,
        spaces: Arc::new(spaces),
        hooks: Arc::new(hooks),
        limits: Arc::new(Limits::new(&settings.rate_limit)),
        proxies: Arc::new(proxies),
        key_uses: Arc::new(crate::auth::usage::KeyUses::new()),
        jwks: Arc::new(crate::auth::jwks::JwksCache::new(Duration::from_secs(
            settings.oidc_jwks_min_refresh_seconds,
        ))),
        audit: crate::audit::Sink::default(),
        settings: Arc::new(settings),
        metrics,
        tls,
    })
}

/// Compiles the hook scripts `hooks.source` names: the directory's, the database's, or both.
pub async fn load_hooks(settings: &Settings, store: &dyn store::Store) -> anyhow::Result<Hooks> {
    let database = if settings.hooks.source.reads_database() {
        crate::hooks::db::DatabaseScripts::load(store)
            .await
            .context("reading the hook scripts of the database")?
    } else {
        crate::hooks::db::DatabaseScripts::default()
    };
    Hooks::load_with(&settings.hooks, database).context("loading hook scripts")
}

/// Starts keeping the hook scripts of the database fresh and this instance's report written
/// (checked as often as the space snapshot).
fn keep_hooks(state: &AppState) -> crate::hooks::db::KeepHooks {
    crate::hooks::db::KeepHooks::start(
        state.hooks.clone(),
        state.store.clone(),
        state.spaces.check_interval(),
    )
}

/// A server running in the background (tests, `demo`): its address and a way to stop it.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, waits for requests in flight (bounded by the grace period).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.context("server task")?
    }
}

/// Binds `addr` and serves `state` in a background task. The file-descriptor limit is left as
/// it is (the embedding process owns it; [`serve`] raises it).
pub async fn spawn(state: AppState, addr: SocketAddr) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let flusher = key_use_flusher(&state);
    let audit = crate::audit::Writer::start(&state.audit, state.store.clone());
    let fresh = state.spaces.keep_fresh();
    let tls_watch = watch_tls(&state)?;
    let hooks = keep_hooks(&state);
    let task = tokio::spawn(async move {
        let served = crate::http::serve(listener, state, async move {
            let _ = rx.await;
        })
        .await;
        drop::<KeepFresh>(fresh);
        drop(tls_watch);
        hooks.stop().await;
        flusher.stop().await;
        if let Some(audit) = audit {
            audit.stop().await;
        }
        served
    });
    Ok(Running {
        addr,
        shutdown: Some(tx),
        task,
    })
}

/// Runs the server in the foreground until SIGINT/SIGTERM: the file-descriptor limit is raised
/// and checked against `max_connections`, hooks are watched, housekeeping runs in the
/// background, the listener is bound only after migrations ran.
pub async fn serve(state: AppState, on_ready: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    ensure_fd_limit(&state.settings)?;
    let _watch = if state.settings.hooks.watch && state.settings.hooks.source.reads_files() {
        Some(
            state
                .hooks
                .watch()
                .context("watching the hooks directory")?,
        )
    } else {
        None
    };
    let _housekeeping = crate::housekeeping::spawn(
        state.store.clone(),
        state.settings.clone(),
        state.key_uses.clone(),
    );
    let tls_watch = watch_tls(&state)?;
    let _hangups = match &tls_watch {
        Some(_) => None,
        None => Some(log_hangups()?),
    };
    let addr = state.settings.listen;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (key `listen`)"))?;
    let local = listener.local_addr()?;
    tracing::info!(
        addr = %local,
        store = state.store.backend(),
        scheme = if state.tls.is_some() { "https" } else { "http" },
        "provisio listening"
    );
    on_ready(local);
    let flusher = key_use_flusher(&state);
    let audit = crate::audit::Writer::start(&state.audit, state.store.clone());
    let _fresh = state.spaces.keep_fresh();
    let hooks = keep_hooks(&state);
    let served = crate::http::serve(listener, state, shutdown_signal()).await;
    hooks.stop().await;
    flusher.stop().await;
    if let Some(audit) = audit {
        audit.stop().await;
    }
    served
}

/// Reloads the TLS files on SIGHUP and when they change, while the guard lives (nothing
/// without native TLS).
fn watch_tls(state: &AppState) -> anyhow::Result<Option<crate::net::tls::TlsWatch>> {
    state
        .tls
        .as_ref()
        .map(|tls| tls.watch(state.settings.tls.watch))
        .transpose()
}

/// Without native TLS a SIGHUP has nothing to reload: it is logged, not left to its default
/// action (ending the process, which systemd's `Restart=on-failure` would not undo).
fn log_hangups() -> anyhow::Result<AbortOnDrop> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        Ok(AbortOnDrop(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: nothing to reload (no native TLS; hooks reload on change)");
            }
        })))
    }
    #[cfg(not(unix))]
    Ok(AbortOnDrop(tokio::spawn(async {})))
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts writing the state's API-key uses every `api_key_flush_seconds`; stopping it writes
/// the rest (after the requests in flight ended).
fn key_use_flusher(state: &AppState) -> crate::auth::usage::Flusher {
    crate::auth::usage::Flusher::start(
        state.key_uses.clone(),
        state.store.clone(),
        std::time::Duration::from_secs(state.settings.api_key_flush_seconds),
    )
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, logs both, and refuses to start when
/// `max_connections` cannot fit (see [`crate::net::fd`]).
fn ensure_fd_limit(settings: &Settings) -> anyhow::Result<()> {
    let limits = match crate::net::fd::raise_nofile() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the file-descriptor limit");
            return Ok(());
        }
    };
    tracing::info!(
        soft = limits.soft,
        soft_at_start = limits.soft_before,
        hard = limits.hard,
        max_connections = settings.max_connections,
        "file-descriptor limit (RLIMIT_NOFILE)"
    );
    crate::net::fd::check(&limits, settings.max_connections, settings.pool_size)
        .map_err(|why| anyhow::anyhow!("configuration error: {why}"))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}

/// The base URL links are built on outside a request: the space's, the server's, else the
/// listen address (`https://` with native TLS).
pub fn public_base(settings: &Settings, space: &Space) -> String {
    space
        .public_url
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| Some(settings.public_url.clone()).filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("{}://{}", settings.scheme(), settings.listen))
        .trim_end_matches('/')
        .to_string()
}

/// Targets capped at `info` in every log filter: warp, hyper and h2 (HTTP/2) log request paths
/// and headers (which carry tokens and keys), and tokio-postgres logs statement parameters
/// (HA1s, token hashes), at debug/trace level, so they are capped whatever the operator asks for.
pub const REDACTING_TARGETS: &[&str] = &["warp", "hyper", "hyper_util", "h2", "tokio_postgres"];

/// The log filter for a base filter string (`RUST_LOG` syntax), with the redacting caps.
pub fn log_filter(base: &str) -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_new(base)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A cap, never a raise: with `warn`, these crates stay at warn rather than gain info lines.
    let cap = filter
        .max_level_hint()
        .map_or(tracing::level_filters::LevelFilter::INFO, |hint| {
            hint.min(tracing::level_filters::LevelFilter::INFO)
        });
    for target in REDACTING_TARGETS {
        if let Ok(d) = format!("{target}={cap}").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::log_filter;
    use tracing::level_filters::LevelFilter;

    /// The redacting directives cap noisy crates; they never make a quieter filter louder.
    #[test]
    fn redacting_caps_never_raise_the_level() {
        assert_eq!(log_filter("warn").max_level_hint(), Some(LevelFilter::WARN));
        assert_eq!(
            log_filter("error").max_level_hint(),
            Some(LevelFilter::ERROR)
        );
        assert_eq!(log_filter("info").max_level_hint(), Some(LevelFilter::INFO));
        let trace = log_filter("trace").to_string();
        assert!(trace.contains("tokio_postgres=info"), "{trace}");
        assert!(trace.contains("h2=info"), "{trace}");
    }
}

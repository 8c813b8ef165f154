//! The handles every request needs, cheap to clone: no lock sits in the request path.

use crate::auth::usage::KeyUses;
use crate::config::Settings;
use crate::hooks::Hooks;
use crate::net::limit::Limits;
use crate::net::proxy::TrustedProxies;
use crate::spaces::Spaces;
use crate::store::DynStore;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// Shared application state.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: DynStore,
    /// Every space, in memory, kept coherent with the store (see `crate::spaces`).
    pub spaces: Arc<Spaces>,
    /// The live hook scripts (swapped atomically on reload).
    pub hooks: Arc<Hooks>,
    /// Start-up settings (restart-only).
    pub settings: Arc<Settings>,
    /// Renders `/metrics`; `None` when another recorder was already installed (tests).
    pub metrics: Option<PrometheusHandle>,
    /// Per-address rate limits (`[rate_limit]`), shared by every connection.
    pub limits: Arc<Limits>,
    /// `trusted_proxies`, parsed once.
    pub proxies: Arc<TrustedProxies>,
    /// API-key uses not yet written (batched off the request path, see `crate::auth::usage`).
    pub key_uses: Arc<KeyUses>,
    /// The spaces' OIDC signing keys fetched from their JWKS URLs (see `crate::auth::jwks`).
    pub jwks: Arc<crate::auth::jwks::JwksCache>,
    /// The audit trail's queue (written in batches off the request path, see `crate::audit`).
    pub audit: crate::audit::Sink,
    /// Native TLS of the main listener (`[tls]`), `None` for plain HTTP; its certificate is
    /// swapped on reload (see `crate::net::tls`).
    pub tls: Option<Arc<crate::net::tls::Tls>>,
}

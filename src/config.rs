//! Layered configuration: built-in defaults → `provisio.toml` → `PROVISIO_*` environment →
//! command-line flags. A bad value fails at start with a message naming the key.
//!
//! Restart-only: everything here. Hook *scripts* reload live; the hook *limits* below are read
//! once when the Rhai engine is built. The *contents* of the `[tls]` files reload live (SIGHUP
//! or a change on disk); their paths are restart-only.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Environment prefix of every setting (`PROVISIO_LISTEN`, `PROVISIO_HOOKS__DIR`, …).
pub const ENV_PREFIX: &str = "PROVISIO_";
/// Environment variable naming the configuration file (default `provisio.toml`, optional).
pub const CONFIG_ENV: &str = "PROVISIO_CONFIG";
/// Default configuration file, read only if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "provisio.toml";
/// Default listen address: loopback only, so a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8318";

/// All settings of a provisio process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server binds (`listen`, `PROVISIO_LISTEN`).
    pub listen: SocketAddr,
    /// Directory of the embedded SQLite database (`data_dir`).
    pub data_dir: PathBuf,
    /// Database URL: empty for SQLite in `data_dir`, `sqlite://PATH`, or `postgres://…`.
    pub database: String,
    /// Database connections kept in the pool.
    pub pool_size: usize,
    /// Base URL (`https://host[:port]`) for QR codes and wizard links when the space names none;
    /// empty derives it from the request's Host.
    pub public_url: String,
    /// Minutes an auth token (QR login) stays redeemable; FlexiAPI hard-codes 5.
    pub auth_token_ttl_minutes: i64,
    /// Minutes a user API key survives without use (0 = forever); FlexiAPI's default is 60.
    pub api_key_ttl_minutes: i64,
    /// Seconds between writes of API-key use records (last use, count), batched so that
    /// authenticating by key writes nothing; expiry is exact to within this (1 to 30).
    pub api_key_flush_seconds: u64,
    /// Longest time a space changed elsewhere (another instance, the CLI) may still be served
    /// as it was: the in-memory space snapshot checks the store's version every half of it, as
    /// the backstop for lost change notices (1 to 3600).
    pub cache_max_staleness_seconds: u64,
    /// Seconds a Digest challenge (nonce/opaque) stays answerable.
    pub digest_nonce_ttl_seconds: i64,
    /// Least seconds between two fetches of one OIDC provider's JWKS (a token naming an unknown
    /// `kid` triggers one), so made-up `kid`s cannot make provisio hammer the provider
    /// (0 = no limit, for tests; at most 3600).
    pub oidc_jwks_min_refresh_seconds: u64,
    /// Fewest characters a SIP password set through the API or CLI may have (FlexiAPI: 3).
    pub min_password_length: usize,
    /// Seconds a client may take to send its request headers (slow-header guard).
    pub header_read_timeout_seconds: u64,
    /// Seconds an idle keep-alive connection stays open (each one holds a file descriptor).
    pub keep_alive_seconds: u64,
    /// Open connections past which new sockets are closed at once (a cap that must fit the
    /// file-descriptor limit, so requests on open connections keep being served).
    pub max_connections: usize,
    /// Seconds a request may take before it is answered 503, so a stalled database cannot
    /// hold a client (and its connection) forever.
    pub request_timeout_seconds: u64,
    /// Reverse proxies (CIDR blocks or addresses) whose `X-Forwarded-For`/`Forwarded` and
    /// `X-Forwarded-Proto`/`-Host` are believed; empty = the TCP peer is always the client.
    /// `PROVISIO_TRUSTED_PROXIES` takes a comma-separated list.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub trusted_proxies: Vec<String>,
    /// Per-address limits against guessing and row flooding.
    pub rate_limit: RateLimitSettings,
    /// Seconds a graceful shutdown waits for requests in flight.
    pub shutdown_grace_seconds: u64,
    /// Seconds between housekeeping passes that delete expired and spent rows, so tables stop
    /// growing (0 = off; at most one day).
    pub housekeeping_interval_seconds: u64,
    /// Days a used or superseded provisioning token is kept (for audits and support) before
    /// housekeeping deletes it (1 to 3650).
    pub token_retention_days: u32,
    /// Days audit events are kept (who provisioned or changed what, from where) before
    /// housekeeping deletes them (0 = keep forever, at most 36500).
    pub audit_retention_days: u32,
    /// Log filter in `tracing` EnvFilter syntax (`RUST_LOG` wins when set).
    pub log: String,
    /// Log line format: `text` for people at a terminal, `json` (one object per line) for a
    /// log collector.
    pub log_format: LogFormat,
    /// Address of a separate listener that alone serves `/metrics` (empty = the main listener
    /// serves it), so the metrics stay off the public port.
    pub metrics_listen: String,
    /// Hook scripts and their sandbox.
    pub hooks: HookSettings,
    /// The SMTP relay provisioning e-mails go through.
    pub smtp: SmtpSettings,
    /// Native TLS and client certificates (`[tls]`), so a small deployment needs no reverse
    /// proxy.
    pub tls: TlsSettings,
}

/// Outgoing mail (`[smtp]`): the relay that `POST /api/accounts/{id}/send_provisioning_email`
/// hands its message to. No URL, no e-mail (that route answers 503).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    /// `smtp://[user:password@]host[:port]` (plain, port 25; add `?tls=required` for
    /// STARTTLS, port 587) or `smtps://…` (TLS from the first byte, port 465). Credentials,
    /// percent-encoded, are never logged. Empty: no e-mail.
    pub url: String,
    /// The `From` of every mail, `Name <address>` or a bare address (required with `url`).
    pub from: String,
    /// Directory of per-space texts: `<space-domain>/provisioning.{subject,txt,html}`, then
    /// `default/…`, override the built-in ones (empty: built-in only; see docs/api.md).
    pub templates_dir: PathBuf,
    /// Seconds one exchange with the relay may take (connect, each reply), so a stalled relay
    /// fails the request with 503 before the request timeout (1 to 300).
    pub timeout_seconds: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        SmtpSettings {
            url: String::new(),
            from: String::new(),
            templates_dir: PathBuf::new(),
            timeout_seconds: 10,
        }
    }
}

/// Native TLS (`[tls]`): HTTPS on the main listener, optional client certificates, and the
/// header a TLS-terminating proxy forwards a verified client certificate in. The files are
/// reloaded on SIGHUP and when they change, without dropping open connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first (empty = plain HTTP); set together with `key_file`.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates client certificates are verified against (empty = none asked for);
    /// a client without a certificate still connects.
    pub client_ca_file: PathBuf,
    /// Header in which a proxy listed in `trusted_proxies` forwards the subject of the client
    /// certificate it verified (e.g. `X-SSL-Client-S-DN`); dropped from any other peer.
    pub client_subject_header: String,
    /// Reload the files when their directories change (SIGHUP always reloads); off for file
    /// systems without change notification.
    pub watch: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            client_subject_header: String::new(),
            watch: true,
        }
    }
}

/// Credentials in the relay URL stay out of every debug print.
impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &redact_url(&self.url))
            .field("from", &self.from)
            .field("templates_dir", &self.templates_dir)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// A URL with any `user:password@` replaced by `***@`, for messages and debug prints.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

impl TlsSettings {
    /// Whether the main listener speaks HTTPS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// Whether TLS connections are asked for a client certificate.
    pub fn verifies_clients(&self) -> bool {
        self.enabled() && !self.client_ca_file.as_os_str().is_empty()
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured only when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object per line, never coloured: what journald, Loki or Elasticsearch ingest.
    Json,
}

/// Where hook scripts live and how tightly they are sandboxed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    /// Directory of `default.rhai` and `<space-domain>.rhai` (`PROVISIO_HOOKS__DIR`).
    pub dir: PathBuf,
    /// Where scripts come from: the directory, the database (`/api/hooks`, `provisio hooks
    /// push`), or both, a database script replacing the file of the same name.
    pub source: HookSource,
    /// Watch the directory and reload on change.
    pub watch: bool,
    /// Milliseconds of quiet before a burst of file events triggers one reload.
    pub debounce_ms: u64,
    /// Rhai operations one hook call may perform (restart-only).
    pub max_operations: u64,
    /// Nested function calls (restart-only).
    pub max_call_levels: usize,
    /// Expression nesting at top level (restart-only; the same in debug and release builds).
    pub max_expr_depth: usize,
    /// Expression nesting inside functions (restart-only).
    pub max_function_expr_depth: usize,
    /// Longest string a script may build, in bytes (restart-only).
    pub max_string_size: usize,
    /// Largest array (restart-only).
    pub max_array_size: usize,
    /// Largest object map (restart-only).
    pub max_map_size: usize,
    /// Wall-clock milliseconds all hooks of one request may run (restart-only).
    pub deadline_ms: u64,
}

/// Where hook scripts are read from (`hooks.source`), so a fleet can keep its scripts in the
/// shared database while GitOps users keep files in a repository (docs/hooks.md, "Scripts in
/// the database").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookSource {
    /// The hooks directory only: scripts stored in the database are ignored and the API and
    /// `hooks push` refuse to store more.
    Files,
    /// The database only: the directory is neither read nor watched.
    Database,
    /// Both: every file of the directory and every script of the database; a script stored in
    /// the database replaces the file of the same name.
    #[default]
    Both,
}

impl HookSource {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HookSource::Files => "files",
            HookSource::Database => "database",
            HookSource::Both => "both",
        }
    }

    /// Whether scripts of the hooks directory are served.
    pub fn reads_files(self) -> bool {
        self != HookSource::Database
    }

    /// Whether scripts stored in the database are served.
    pub fn reads_database(self) -> bool {
        self != HookSource::Files
    }
}

/// Per-address rate limits (`[rate_limit]`); 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Failed guesses (401 with credentials, 403, 404, 410 on provisioning, wizard and
    /// authenticated API routes) an address may make per minute before it gets 429s.
    pub failures_per_minute: u32,
    /// Rows an address may create per minute without authentication (auth tokens, Digest
    /// challenges).
    pub anonymous_per_minute: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            failures_per_minute: 30,
            anonymous_per_minute: 30,
        }
    }
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            dir: PathBuf::from("./hooks"),
            source: HookSource::Both,
            watch: true,
            debounce_ms: 200,
            max_operations: 200_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            deadline_ms: 100,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            #[allow(clippy::unwrap_used)] // a constant that parses
            listen: DEFAULT_LISTEN.parse().unwrap(),
            data_dir: PathBuf::from("./provisio-data"),
            database: String::new(),
            pool_size: 16,
            public_url: String::new(),
            auth_token_ttl_minutes: 5,
            api_key_ttl_minutes: 60,
            api_key_flush_seconds: 1,
            cache_max_staleness_seconds: 2,
            digest_nonce_ttl_seconds: 300,
            oidc_jwks_min_refresh_seconds: 60,
            min_password_length: 8,
            header_read_timeout_seconds: 10,
            keep_alive_seconds: 30,
            max_connections: 10_000,
            request_timeout_seconds: 30,
            trusted_proxies: Vec::new(),
            rate_limit: RateLimitSettings::default(),
            shutdown_grace_seconds: 10,
            housekeeping_interval_seconds: 300,
            token_retention_days: 30,
            audit_retention_days: 90,
            log: "info".to_string(),
            log_format: LogFormat::Text,
            metrics_listen: String::new(),
            hooks: HookSettings::default(),
            smtp: SmtpSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

/// Command-line values that override every other layer (`None` = not given).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--database`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--public-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// `--hooks-dir`, nested under `hooks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksOverride>,
}

/// `--hooks-dir` as a nested override.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HooksOverride {
    /// Hooks directory.
    pub dir: PathBuf,
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Loads the layers. `file` is `--config`; without it `PROVISIO_CONFIG` or `provisio.toml`
    /// is read when present (an explicitly named file must exist).
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let env_file = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let (path, required) = match (file, env_file) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(p)) => (p, true),
            (None, None) => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        if required && !path.exists() {
            return Err(ConfigError(format!(
                "configuration file {} does not exist",
                path.display()
            )));
        }
        let mut settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(&path))
            .merge(
                Env::prefixed(ENV_PREFIX)
                    .split("__")
                    .ignore(&["config"])
                    .filter(|key| is_known_key(key.as_str())),
            )
            .merge(Serialized::globals(overrides))
            .extract()
            .map_err(|e| ConfigError(describe(e)))?;
        settings.validate()?;
        settings.hooks.dir = absolute(&settings.hooks.dir);
        // HTTP/1 and HTTP/2 header names are case-insensitive; the edge looks them up as
        // lower-case.
        settings.tls.client_subject_header = settings
            .tls
            .client_subject_header
            .trim()
            .to_ascii_lowercase();
        Ok(settings)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("key `{key}`: {why}")));
        // Every number has a documented range (README, configuration table), so no arithmetic
        // on a configured number (`now ± ttl × 60 000`, pool sizes, sandbox limits) can
        // overflow or mean "unlimited" by accident.
        let ranges: [(&str, u64, std::ops::RangeInclusive<u64>); 28] = [
            ("pool_size", self.pool_size as u64, 1..=1_024),
            (
                "auth_token_ttl_minutes",
                clamp_u64(self.auth_token_ttl_minutes),
                1..=1_440,
            ),
            (
                "api_key_ttl_minutes",
                clamp_u64(self.api_key_ttl_minutes),
                0..=525_600,
            ),
            (
                "digest_nonce_ttl_seconds",
                clamp_u64(self.digest_nonce_ttl_seconds),
                1..=86_400,
            ),
            (
                "oidc_jwks_min_refresh_seconds",
                self.oidc_jwks_min_refresh_seconds,
                0..=3_600,
            ),
            (
                "min_password_length",
                self.min_password_length as u64,
                1..=128,
            ),
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
                1..=3_600,
            ),
            (
                "shutdown_grace_seconds",
                self.shutdown_grace_seconds,
                0..=3_600,
            ),
            ("hooks.debounce_ms", self.hooks.debounce_ms, 0..=60_000),
            (
                "hooks.max_operations",
                self.hooks.max_operations,
                1..=1_000_000_000,
            ),
            (
                "hooks.max_call_levels",
                self.hooks.max_call_levels as u64,
                1..=256,
            ),
            (
                "hooks.max_expr_depth",
                self.hooks.max_expr_depth as u64,
                1..=1_024,
            ),
            (
                "hooks.max_function_expr_depth",
                self.hooks.max_function_expr_depth as u64,
                1..=1_024,
            ),
            (
                "hooks.max_string_size",
                self.hooks.max_string_size as u64,
                1..=16 * 1024 * 1024,
            ),
            (
                "hooks.max_array_size",
                self.hooks.max_array_size as u64,
                1..=1_000_000,
            ),
            (
                "hooks.max_map_size",
                self.hooks.max_map_size as u64,
                1..=1_000_000,
            ),
            ("hooks.deadline_ms", self.hooks.deadline_ms, 1..=60_000),
            ("keep_alive_seconds", self.keep_alive_seconds, 1..=3_600),
            (
                "max_connections",
                self.max_connections as u64,
                1..=1_000_000,
            ),
            (
                "request_timeout_seconds",
                self.request_timeout_seconds,
                1..=3_600,
            ),
            (
                "rate_limit.failures_per_minute",
                u64::from(self.rate_limit.failures_per_minute),
                0..=1_000_000,
            ),
            (
                "rate_limit.anonymous_per_minute",
                u64::from(self.rate_limit.anonymous_per_minute),
                0..=1_000_000,
            ),
            (
                "housekeeping_interval_seconds",
                self.housekeeping_interval_seconds,
                0..=86_400,
            ),
            // Below housekeeping's expiry grace (60 s), so a pass never deletes a key whose
            // latest use another instance has not written yet.
            ("api_key_flush_seconds", self.api_key_flush_seconds, 1..=30),
            (
                "cache_max_staleness_seconds",
                self.cache_max_staleness_seconds,
                1..=3_600,
            ),
            (
                "token_retention_days",
                u64::from(self.token_retention_days),
                1..=3_650,
            ),
            (
                "audit_retention_days",
                u64::from(self.audit_retention_days),
                0..=36_500,
            ),
            ("smtp.timeout_seconds", self.smtp.timeout_seconds, 1..=300),
        ];
        for (key, value, range) in ranges {
            if !range.contains(&value) {
                return bad(
                    key,
                    &format!("must be between {} and {}", range.start(), range.end()),
                );
            }
        }
        if !self.public_url.is_empty() {
            validate_public_url(&self.public_url)
                .map_err(|why| ConfigError(format!("key `public_url`: {why}")))?;
        }
        let db = self.database.as_str();
        if !(db.is_empty()
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://")
            || db.starts_with("sqlite://"))
        {
            return bad(
                "database",
                "must be empty (embedded SQLite), sqlite://PATH, or postgres://USER@HOST/DB",
            );
        }
        if db.starts_with("postgres")
            && let Err(e) = crate::store::pg_tls::split_url(db)
        {
            return bad("database", &e.to_string());
        }
        crate::net::proxy::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|why| ConfigError(format!("key `trusted_proxies`: {why}")))?;
        if let Err(e) = self.metrics_listen_addr() {
            return bad("metrics_listen", &e);
        }
        crate::mail::check_settings(&self.smtp).map_err(ConfigError)?;
        self.validate_tls()
    }

    /// Checks the `[tls]` keys that depend on each other (the files themselves are read when
    /// the server starts, see [`crate::net::tls`]).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("key `{key}`: {why}")));
        let tls = &self.tls;
        let cert = !tls.cert_file.as_os_str().is_empty();
        let key = !tls.key_file.as_os_str().is_empty();
        if cert && !key {
            return bad("tls.key_file", "must be set when `tls.cert_file` is");
        }
        if key && !cert {
            return bad("tls.cert_file", "must be set when `tls.key_file` is");
        }
        if !tls.client_ca_file.as_os_str().is_empty() && !cert {
            return bad(
                "tls.client_ca_file",
                "asks TLS clients for certificates: set `tls.cert_file` and `tls.key_file` too",
            );
        }
        let header = tls.client_subject_header.trim();
        if !header.is_empty() {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return bad(
                    "tls.client_subject_header",
                    &format!("{header:?} is not an HTTP header name"),
                );
            }
            if self.trusted_proxies.is_empty() {
                return bad(
                    "tls.client_subject_header",
                    "is only believed from a peer in `trusted_proxies`, which is empty",
                );
            }
        }
        Ok(())
    }

    /// The separate metrics listener's address, `None` when `/metrics` stays on the main
    /// listener.
    pub fn metrics_listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        let text = self.metrics_listen.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| format!("{text:?} is not an address: write IP:PORT, e.g. 127.0.0.1:9318"))
    }

    /// The scheme clients reach the main listener with: `https` with native TLS.
    pub fn scheme(&self) -> &'static str {
        if self.tls.enabled() { "https" } else { "http" }
    }

    /// The database URL to open: the configured one, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        if self.database.is_empty() {
            format!(
                "sqlite://{}",
                self.data_dir.join("provisio.sqlite3").display()
            )
        } else {
            self.database.clone()
        }
    }
}

/// Every key a setting can have, dotted (`hooks.dir`), with each section on its own (`hooks`).
fn known_keys() -> Vec<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = value {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                walk(&path, child, out);
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(Settings::default()) {
        walk("", &value, &mut out);
    }
    out
}

/// Whether a dotted key (case ignored) names a setting.
fn is_known_key(key: &str) -> bool {
    known_keys().iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// `PROVISIO_*` environment variables that name no setting. They are ignored, not fatal (a
/// test harness or a wrapper may export its own), and the binary warns about each once logging
/// is up, so a misspelt key does not go unnoticed.
pub fn unknown_env_vars() -> Vec<String> {
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            name.len() > ENV_PREFIX.len()
                && name.is_char_boundary(ENV_PREFIX.len())
                && name[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX)
                && !name.eq_ignore_ascii_case(CONFIG_ENV)
        })
        .filter(|name| !is_known_key(&name[ENV_PREFIX.len()..].replace("__", ".")))
        .collect();
    unknown.sort();
    unknown
}

/// A path made absolute against the current directory, so the hooks directory (and the module
/// resolver that keeps imports inside it) means the same thing whatever a later step does.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A signed setting as `u64` for range checks: a negative value maps to `u64::MAX`, outside
/// every range.
fn clamp_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Checks a public base URL: `http(s)://host[:port][/prefix]`, no query, no trailing slash.
pub fn validate_public_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("must name a host".to_string());
    }
    if url.ends_with('/') {
        return Err("must not end with '/'".to_string());
    }
    if url.contains(['?', '#', ' ']) || url.chars().any(crate::lpconfig::is_forbidden_char) {
        return Err("must not contain a query, fragment, space or control character".to_string());
    }
    Ok(())
}

/// A list given either as a list (TOML, `PROVISIO_X=[a, b]`) or as one comma-separated
/// string (`PROVISIO_TRUSTED_PROXIES=10.0.0.0/8,192.0.2.7`), which is how environment variables
/// are usually written; blank items are dropped.
fn list_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    let items = match Form::deserialize(deserializer)? {
        Form::List(items) => items,
        Form::Text(text) => text.split(',').map(str::to_string).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Figment's message, made to start with the key that failed.
fn describe(e: figment::Error) -> String {
    let mut out = Vec::new();
    for err in e {
        let key = err.path.join(".");
        let source = err
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref().map(|s| format!(" (from {s})")))
            .unwrap_or_default();
        if key.is_empty() {
            out.push(format!("{}{source}", err.kind));
        } else {
            out.push(format!("key `{key}`: {}{source}", err.kind));
        }
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let s = Settings::default();
        s.validate().unwrap();
        assert!(s.listen.ip().is_loopback());
        assert!(s.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn layers_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\n[hooks]\ndeadline_ms = 7\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.hooks.deadline_ms, 7);

        let o = Overrides {
            listen: Some("127.0.0.1:1234".into()),
            ..Default::default()
        };
        assert_eq!(Settings::load(Some(&file), &o).unwrap().listen.port(), 1234);

        std::fs::write(&file, "listen = \"not an address\"\n").unwrap();
        let e = Settings::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`listen`"), "{e}");

        std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let e = Settings::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen"), "{e}");

        std::fs::write(&file, "database = \"mysql://x\"\n").unwrap();
        let e = Settings::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`database`"), "{e}");

        for (line, key) in [
            ("pool_size = 0", "`pool_size`"),
            (
                "auth_token_ttl_minutes = 9223372036854775807",
                "`auth_token_ttl_minutes`",
            ),
            ("api_key_ttl_minutes = -1", "`api_key_ttl_minutes`"),
            ("api_key_flush_seconds = 0", "`api_key_flush_seconds`"),
            ("api_key_flush_seconds = 31", "`api_key_flush_seconds`"),
            (
                "cache_max_staleness_seconds = 0",
                "`cache_max_staleness_seconds`",
            ),
            (
                "cache_max_staleness_seconds = 3601",
                "`cache_max_staleness_seconds`",
            ),
            (
                "digest_nonce_ttl_seconds = 86401",
                "`digest_nonce_ttl_seconds`",
            ),
            ("min_password_length = 0", "`min_password_length`"),
            ("max_connections = 0", "`max_connections`"),
            ("keep_alive_seconds = 0", "`keep_alive_seconds`"),
            ("min_password_length = 129", "`min_password_length`"),
            ("audit_retention_days = 36501", "`audit_retention_days`"),
            ("[hooks]\ndeadline_ms = 0", "`hooks.deadline_ms`"),
            (
                "[hooks]\nmax_operations = 9223372036854775807",
                "`hooks.max_operations`",
            ),
        ] {
            std::fs::write(&file, format!("{line}\n")).unwrap();
            let e = Settings::load(Some(&file), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("between"), "{line}: {e}");
        }
        std::fs::write(&file, "min_password_length = 12\n").unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(s.min_password_length, 12);
        std::fs::write(&file, "audit_retention_days = 0\n").unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(s.audit_retention_days, 0, "0 keeps the audit trail forever");

        let missing = dir.path().join("missing.toml");
        assert!(Settings::load(Some(&missing), &Overrides::default()).is_err());
    }

    #[test]
    fn a_bad_sslmode_names_the_database_key() {
        let settings = Settings {
            database: "postgres://u@db.example.com/p?sslmode=allow".to_string(),
            ..Settings::default()
        };
        let e = settings.validate().unwrap_err().to_string();
        assert!(e.contains("`database`") && e.contains("sslmode"), "{e}");
    }

    #[test]
    fn the_sample_file_shows_the_defaults() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/provisio.toml");
        let s = Settings::load(Some(&sample), &Overrides::default()).unwrap();
        let mut defaults = Settings::default();
        defaults.hooks.dir = absolute(&defaults.hooks.dir);
        assert_eq!(s, defaults);
    }

    #[test]
    fn log_format_and_metrics_listen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "log_format = \"json\"\nmetrics_listen = \"127.0.0.1:9318\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(
            s.metrics_listen_addr().unwrap(),
            Some("127.0.0.1:9318".parse().unwrap())
        );
        assert_eq!(Settings::default().metrics_listen_addr().unwrap(), None);
        for (text, key) in [
            ("log_format = \"yaml\"\n", "`log_format`"),
            ("metrics_listen = \"localhost\"\n", "`metrics_listen`"),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = Settings::load(Some(&file), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn known_keys_for_environment_variables() {
        for key in [
            "listen",
            "LOG_FORMAT",
            "metrics_listen",
            "hooks.dir",
            "HOOKS.DEADLINE_MS",
            "rate_limit.failures_per_minute",
            "hooks",
        ] {
            assert!(is_known_key(key), "{key}");
        }
        for key in ["test_database_url", "hooks.nope", "listen.port", ""] {
            assert!(!is_known_key(key), "{key}");
        }
    }

    #[test]
    fn trusted_proxies_as_a_list_or_a_comma_separated_string() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        for text in [
            "trusted_proxies = \"10.0.0.0/8, 192.0.2.7,,\"\n",
            "trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\n",
        ] {
            std::fs::write(&file, text).unwrap();
            let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
            assert_eq!(s.trusted_proxies, ["10.0.0.0/8", "192.0.2.7"], "{text}");
        }
        std::fs::write(&file, "trusted_proxies = \"10.0.0.0/8, proxy.lan\"\n").unwrap();
        let e = Settings::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`trusted_proxies`") && e.contains("proxy.lan"),
            "{e}"
        );
        std::fs::write(&file, "[rate_limit]\nfailures_per_minute = 0\n").unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(s.rate_limit.failures_per_minute, 0);
        assert_eq!(s.rate_limit.anonymous_per_minute, 30);
    }

    #[test]
    fn tls_keys_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        for (text, key) in [
            ("[tls]\ncert_file = \"c.pem\"\n", "`tls.key_file`"),
            ("[tls]\nkey_file = \"k.pem\"\n", "`tls.cert_file`"),
            (
                "[tls]\nclient_ca_file = \"ca.pem\"\n",
                "`tls.client_ca_file`",
            ),
            (
                "[tls]\nclient_subject_header = \"X-SSL-Client-S-DN\"\n",
                "`trusted_proxies`",
            ),
            (
                "trusted_proxies = [\"127.0.0.1\"]\n[tls]\nclient_subject_header = \"bad header\"\n",
                "`tls.client_subject_header`",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = Settings::load(Some(&file), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        std::fs::write(
            &file,
            "trusted_proxies = [\"127.0.0.1\"]\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n\
             client_subject_header = \" X-SSL-Client-S-DN \"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert!(s.tls.enabled() && !s.tls.verifies_clients() && s.tls.watch);
        assert_eq!(s.scheme(), "https");
        assert_eq!(s.tls.client_subject_header, "x-ssl-client-s-dn");
        assert_eq!(Settings::default().scheme(), "http");
        for key in ["tls", "tls.cert_file", "TLS.CLIENT_CA_FILE", "tls.watch"] {
            assert!(is_known_key(key), "{key}");
        }
    }
}

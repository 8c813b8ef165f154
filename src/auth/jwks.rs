//! The signing keys of the spaces' OpenID Connect providers, fetched from their JWKS URLs
//! (RFC 7517 §5) over HTTP or HTTPS and kept in memory, so verifying a JWT costs no round trip.
//!
//! A key set is fetched when first needed, and again when a token names a `kid` the set lacks
//! (the provider rotated its keys) or when the set is older than [`MAX_AGE`]. Fetches of one
//! URL run one at a time and at most once per `oidc_jwks_min_refresh_seconds` (default 60),
//! failed ones included: a client sending tokens with made-up `kid`s cannot make provisio
//! hammer the provider. A failed refresh keeps the keys already held.
//!
//! HTTPS is verified against the system's root certificates (`SSL_CERT_FILE` and
//! `SSL_CERT_DIR` name others, as rustls-native-certs reads them), through rustls with the
//! `ring` provider as the PostgreSQL connector (`src/store/pg_tls.rs`). Redirects are not
//! followed; bodies above [`MAX_BYTES`] are refused.

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Metric: JWKS fetches, by outcome (`ok`, `error`).
pub const FETCHES_METRIC: &str = "provisio_oidc_jwks_fetches_total";
/// Age past which a key set is fetched again even when it names the wanted key (revoked keys
/// leave the set; the set held keeps working if the provider is down).
pub const MAX_AGE: Duration = Duration::from_secs(3600);
/// Longest JWKS document read (a provider's holds a handful of keys: a few KiB).
pub const MAX_BYTES: usize = 256 * 1024;
/// Longest time one fetch (connect, TLS, request, body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no key could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// No key set was ever fetched from the URL, and fetching failed (or was tried too
    /// recently to try again).
    #[error("the JWKS at {url} is unavailable: {why}")]
    Unavailable {
        /// The URL.
        url: String,
        /// What went wrong.
        why: String,
    },
}

/// A key set as fetched.
#[derive(Debug)]
struct Fetched {
    /// The signature keys (`use` absent or `sig`) of the set.
    keys: Vec<Jwk>,
    /// When it was fetched.
    at: Instant,
}

/// One JWKS URL's keys and fetch state.
#[derive(Debug, Default)]
struct Entry {
    /// The latest key set fetched, if any (read without a lock).
    fetched: ArcSwapOption<Fetched>,
    /// Fetches run one at a time.
    fetching: tokio::sync::Mutex<()>,
    /// When the last fetch was tried, and why it failed (if it did).
    attempt: Mutex<Option<(Instant, Option<String>)>>,
}

/// Key sets by JWKS URL, shared by every request.
#[derive(Debug)]
pub struct JwksCache {
    /// Least time between two fetches of one URL.
    min_refresh: Duration,
    /// By URL (the spaces' configured URLs: a client cannot add entries).
    sets: DashMap<String, Arc<Entry>>,
    /// The HTTPS client configuration, built on the first HTTPS fetch.
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl JwksCache {
    /// An empty cache fetching each URL at most once per `min_refresh`.
    pub fn new(min_refresh: Duration) -> JwksCache {
        JwksCache {
            min_refresh,
            sets: DashMap::new(),
            tls: OnceLock::new(),
        }
    }

    /// The signature keys of the set at `url` a token may be verified with: the one(s) with
    /// `kid`, or every key when the token names none. Fetches the set when it is not held yet,
    /// lacks `kid`, or is older than [`MAX_AGE`] — unless a fetch was tried less than
    /// `min_refresh` ago. An empty list means the key is unknown.
    pub async fn keys(&self, url: &str, kid: Option<&str>) -> Result<Vec<Jwk>, JwksError> {
        let entry = self.sets.entry(url.to_string()).or_default().clone();
        if let Some(held) = entry.fetched.load_full() {
            let found = select(&held.keys, kid);
            if !found.is_empty() && held.at.elapsed() < MAX_AGE {
                return Ok(found);
            }
        }
        let _one = entry.fetching.lock().await;
        let held = entry.fetched.load_full();
        // A fetch that ran while this request waited may have brought the key.
        if let Some(held) = &held {
            let found = select(&held.keys, kid);
            if !found.is_empty() && held.at.elapsed() < MAX_AGE {
                return Ok(found);
            }
        }
        let recent = entry
            .attempt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|(at, _)| at.elapsed() < self.min_refresh);
        if let Some((_, failure)) = recent {
            return match (&held, failure) {
                (Some(held), _) => Ok(select(&held.keys, kid)),
                (None, why) => Err(JwksError::Unavailable {
                    url: url.to_string(),
                    why: why.unwrap_or_else(|| "no key set".to_string()),
                }),
            };
        }
        let outcome = tokio::time::timeout(FETCH_TIMEOUT, self.fetch(url))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {FETCH_TIMEOUT:?}")));
        let now = Instant::now();
        match outcome {
            Ok(keys) => {
                metrics::counter!(FETCHES_METRIC, "outcome" => "ok").increment(1);
                tracing::info!(url, keys = keys.len(), "OIDC signing keys fetched");
                *entry.attempt.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, None));
                let found = select(&keys, kid);
                entry
                    .fetched
                    .store(Some(Arc::new(Fetched { keys, at: now })));
                Ok(found)
            }
            Err(why) => {
                metrics::counter!(FETCHES_METRIC, "outcome" => "error").increment(1);
                tracing::warn!(url, error = %why, "cannot fetch the OIDC signing keys");
                *entry.attempt.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((now, Some(why.clone())));
                match held {
                    Some(held) => Ok(select(&held.keys, kid)),
                    None => Err(JwksError::Unavailable {
                        url: url.to_string(),
                        why,
                    }),
                }
            }
        }
    }

    /// GETs the JWKS document and keeps its signature keys (keys this crate cannot read, and
    /// encryption keys, are skipped).
    async fn fetch(&self, url: &str) -> Result<Vec<Jwk>, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("the URL must start with http:// or https://".to_string()),
        };
        let host = uri.host().ok_or("the URL has no host")?;
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map_or_else(|| host.to_string(), |a| a.as_str().to_string());
        let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let tcp = TcpStream::connect((bare_host, port))
            .await
            .map_err(|e| format!("connecting to {authority}: {e}"))?;
        let body = if https {
            let config = self
                .tls
                .get_or_init(tls_config)
                .clone()
                .map_err(|e| format!("HTTPS: {e}"))?;
            let name = rustls::pki_types::ServerName::try_from(bare_host.to_string())
                .map_err(|e| format!("host {bare_host}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {authority}: {e}"))?;
            get(tls, &authority, &target).await?
        } else {
            get(tcp, &authority, &target).await?
        };
        parse_set(&body)
    }
}

/// The keys of `keys` a token naming `kid` (or none) may be verified with.
fn select(keys: &[Jwk], kid: Option<&str>) -> Vec<Jwk> {
    keys.iter()
        .filter(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
        .cloned()
        .collect()
}

/// The RSA and EC signature keys of a JWKS document (RFC 7517 §5: `{"keys": [...]}`); any
/// other key (a shared secret, an encryption key, a `kty` or `alg` this crate cannot read) is
/// skipped rather than failing the set.
pub fn parse_set(body: &[u8]) -> Result<Vec<Jwk>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let Some(keys) = doc.get("keys").and_then(serde_json::Value::as_array) else {
        return Err("not a JWKS document: no \"keys\" array".to_string());
    };
    Ok(keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter(|k| {
            matches!(
                k.algorithm,
                AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)
            )
        })
        .collect())
}

/// One HTTP/1.1 GET over an open connection: the body of a 200, or why not.
async fn get<S>(io: S, authority: &str, target: &str) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP with {authority}: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get(target)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("provisio/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let outcome = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET from {authority}: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("{authority} answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {authority}: {e}"))?;
        Ok(body.to_bytes().to_vec())
    }
    .await;
    driver.abort();
    outcome
}

/// The HTTPS client configuration: the system's roots, rustls with `ring`.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        return Err(
            "no trusted root certificate on this system (install ca-certificates, or name a \
             PEM bundle with SSL_CERT_FILE)"
                .to_string(),
        );
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS protocol versions: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_keeps_its_signature_keys_only() {
        let body = br#"{"keys": [
            {"kty": "RSA", "kid": "sig", "use": "sig", "alg": "RS256", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "f83O", "y": "x_FE"},
            {"kty": "weird", "kid": "odd"}
        ]}"#;
        let keys = parse_set(body).unwrap();
        let kids: Vec<_> = keys
            .iter()
            .map(|k| k.common.key_id.clone().unwrap())
            .collect();
        assert_eq!(kids, ["sig", "ec"]);
        assert_eq!(select(&keys, Some("ec")).len(), 1);
        assert_eq!(select(&keys, None).len(), 2);
        assert!(select(&keys, Some("nope")).is_empty());
        assert!(parse_set(b"[]").is_err());
        assert!(parse_set(b"{").is_err());
    }
}

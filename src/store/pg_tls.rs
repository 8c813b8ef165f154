//! PostgreSQL over TLS, as libpq does it, so a managed PostgreSQL service can be used: the
//! database URL's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`) and
//! `sslrootcert=PATH` choose whether the connection is encrypted and what is verified, through
//! rustls (`ring` provider). The pool and the change feed's listening connection share one
//! connector, so both are encrypted and verified alike (docs/deploy.md, "PostgreSQL").
//!
//! - `disable`: plain TCP.
//! - `prefer` (the default, as libpq's): TLS when the server offers it, plain otherwise; the
//!   certificate is not verified.
//! - `require`: TLS or no connection; the certificate is not verified (the handshake's
//!   signatures still are, so the peer holds the key of the certificate it shows).
//! - `verify-ca`: TLS, and the certificate chains to a trusted root; the host name is not
//!   checked.
//! - `verify-full`: `verify-ca`, and the certificate names the host of the URL.
//!
//! Trusted roots are the system's (`ca-certificates`) unless `sslrootcert=PATH` names a PEM
//! file, which then replaces them (`sslrootcert=system` keeps the system's). As in libpq, an
//! explicit `sslrootcert` with `prefer` or `require` verifies the chain too (like `verify-ca`).

use anyhow::{Context as _, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::config::SslMode as DriverSslMode;
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values (the ones that concern a client without a client certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when offered, unverified; plain otherwise.
    Prefer,
    /// TLS, unverified.
    Require,
    /// TLS, chain verified, host name not checked.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    /// Parses the URL value.
    fn parse(value: &str) -> anyhow::Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => bail!(
                "sslmode {other:?} is not supported: use disable, prefer, require, verify-ca or \
                 verify-full"
            ),
        })
    }

    /// The URL value, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What the driver does before the handshake (verification is the connector's business).
    fn driver_mode(self) -> DriverSslMode {
        match self {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        }
    }
}

/// What a database URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// `sslmode` (default `prefer`).
    pub mode: SslMode,
    /// `sslrootcert`: PEM file of the trusted CA(s); `None` = the system roots.
    pub root_cert: Option<PathBuf>,
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verification {
    /// Nothing but the handshake signatures.
    None,
    /// The chain up to a trusted root.
    Chain,
    /// The chain and the host name.
    Full,
}

impl TlsOptions {
    /// What is verified: `verify-*` as named; `prefer`/`require` verify the chain when a root
    /// certificate is named (libpq's rule).
    fn verification(&self) -> Verification {
        match self.mode {
            SslMode::VerifyFull => Verification::Full,
            SslMode::VerifyCa => Verification::Chain,
            SslMode::Prefer | SslMode::Require if self.root_cert.is_some() => Verification::Chain,
            _ => Verification::None,
        }
    }

    /// Where the trusted roots come from, for messages.
    fn roots_described(&self) -> String {
        match &self.root_cert {
            Some(path) => format!("sslrootcert={}", path.display()),
            None => "the system root certificates (name the server's CA with \
                     sslrootcert=PATH)"
                .to_string(),
        }
    }

    /// The rustls connector for the pool and the listener.
    pub fn connector(&self) -> anyhow::Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.verification() {
            Verification::None => Arc::new(NoCertificateCheck {
                provider: provider.clone(),
            }),
            Verification::Chain => Arc::new(ChainOnly(self.webpki(&provider)?)),
            Verification::Full => self.webpki(&provider)?,
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// The standard verifier over the configured roots.
    fn webpki(&self, provider: &Arc<CryptoProvider>) -> anyhow::Result<Arc<WebPkiServerVerifier>> {
        let roots = self.roots()?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .context("building the TLS certificate verifier")
    }

    /// The trusted roots: the `sslrootcert` file, or the system's.
    fn roots(&self) -> anyhow::Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let text = std::fs::read(path)
                    .with_context(|| format!("sslrootcert: cannot read {}", path.display()))?;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        anyhow::anyhow!("sslrootcert {}: not PEM certificates: {e}", path.display())
                    })?;
                if certs.is_empty() {
                    bail!(
                        "sslrootcert {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" \
                         blocks)",
                        path.display()
                    );
                }
                for cert in certs {
                    roots.add(cert).with_context(|| {
                        format!("sslrootcert {}: unusable certificate", path.display())
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    bail!(
                        "sslmode={} needs trusted root certificates and the system has none \
                         (install ca-certificates) — or name the server's CA with \
                         sslrootcert=PATH",
                        self.mode.as_str()
                    );
                }
            }
        }
        Ok(roots)
    }

    /// A clear account of a failed connection when TLS (or its absence) is the cause: an
    /// unverifiable certificate, a certificate for another host, a server without TLS, or a
    /// server that refuses unencrypted connections. `None` for anything else.
    pub fn explain(&self, host: &str, error: &tokio_postgres::Error) -> Option<String> {
        if let Some(db) = error.as_db_error() {
            // pg_hba.conf: `no pg_hba.conf entry for host "…", user "…", database "…", no
            // encryption` when only `hostssl` lines match.
            if db.code().code() == "28000" && db.message().contains("no encryption") {
                return Some(format!(
                    "the server requires TLS: it refused a connection without encryption \
                     (sslmode={}; its pg_hba.conf allows only hostssl from here). Use \
                     sslmode=verify-full (or require)",
                    self.mode.as_str()
                ));
            }
            return None;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = cause {
            if e.to_string().contains("server does not support TLS") {
                return Some(format!(
                    "the server does not offer TLS (ssl = off) but sslmode={} requires it",
                    self.mode.as_str()
                ));
            }
            let rustls_error = e.downcast_ref::<rustls::Error>().or_else(|| {
                e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(tls) = rustls_error {
                return Some(self.explain_tls(host, tls));
            }
            cause = e.source();
        }
        None
    }

    /// [`TlsOptions::explain`] for a rustls failure.
    fn explain_tls(&self, host: &str, error: &rustls::Error) -> String {
        let mode = self.mode.as_str();
        match error {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => {
                let presented = match error {
                    rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForNameContext { presented, .. },
                    ) => format!(
                        " (it names {})",
                        presented
                            .iter()
                            .map(|name| bare_name(name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    _ => String::new(),
                };
                format!(
                    "TLS: the server's certificate is not valid for host name {host:?}{presented}; \
                     sslmode={mode} checks the host name: connect with a name the certificate \
                     lists, or use sslmode=verify-ca"
                )
            }
            rustls::Error::InvalidCertificate(reason) => format!(
                "TLS: certificate verification failed: the server's certificate does not verify \
                 against {} (sslmode={mode}): {}",
                self.roots_described(),
                describe_certificate_error(reason)
            ),
            other => format!("TLS handshake failed (sslmode={mode}): {other}"),
        }
    }
}

/// `localhost` out of rustls' `DnsName("localhost")` (how it lists a certificate's names).
fn bare_name(presented: &str) -> &str {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map_or(presented, |inner| inner.trim_matches('"'))
}

/// Words for the usual certificate failures.
fn describe_certificate_error(reason: &CertificateError) -> String {
    match reason {
        CertificateError::UnknownIssuer => {
            "it was not issued by a trusted certificate authority (unknown issuer)".to_string()
        }
        CertificateError::BadSignature => "its signature does not verify".to_string(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".to_string()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet".to_string()
        }
        other => format!("{other:?}"),
    }
}

/// Splits libpq's TLS parameters off a `postgres://` URL: the URL the driver parses (without
/// `sslmode` and `sslrootcert`, which it does not fully know) and what they asked for.
pub fn split_url(url: &str) -> anyhow::Result<(String, TlsOptions)> {
    let mut options = TlsOptions {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), options));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .with_context(|| format!("database URL parameter {key}: not UTF-8"))?;
        match key {
            "sslmode" => options.mode = SslMode::parse(&value)?,
            "sslrootcert" if value.is_empty() || value == "system" => options.root_cert = None,
            "sslrootcert" => options.root_cert = Some(PathBuf::from(value.as_ref())),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, options))
}

/// Parses a `postgres://` URL into the driver's configuration (its `sslmode` set from
/// `options`) and the TLS options.
pub fn parse_url(url: &str) -> anyhow::Result<(tokio_postgres::Config, TlsOptions)> {
    let (rest, options) = split_url(url)?;
    let mut config: tokio_postgres::Config = rest
        .parse()
        .context("invalid PostgreSQL URL (expected postgres://user@host:port/database)")?;
    config.ssl_mode(options.mode.driver_mode());
    Ok((config, options))
}

/// `require`/`prefer`: any certificate is accepted, but the handshake must be signed by the
/// key of the certificate shown, so the session is encrypted to whoever holds it.
#[derive(Debug)]
struct NoCertificateCheck {
    /// Signature algorithms to verify the handshake with.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify-ca`: the standard verifier, with a name mismatch forgiven. webpki checks the chain
/// before the name, so a name mismatch means the chain verified.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_split_off() {
        let (url, o) = split_url(
            "postgres://u:p@db.example.com/prov?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url, "postgres://u:p@db.example.com/prov?application_name=x");
        assert_eq!(o.mode, SslMode::VerifyFull);
        assert_eq!(o.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(o.verification(), Verification::Full);

        let (url, o) = split_url("postgres://h/db").unwrap();
        assert_eq!(url, "postgres://h/db");
        assert_eq!(o.mode, SslMode::Prefer);
        assert_eq!(o.verification(), Verification::None);

        let (url, o) = split_url("postgres://h/db?sslmode=require&sslrootcert=ca.pem").unwrap();
        assert_eq!(url, "postgres://h/db");
        assert_eq!(
            o.verification(),
            Verification::Chain,
            "libpq: a root cert is used"
        );

        let (_, o) = split_url("postgres://h/db?sslmode=verify-ca&sslrootcert=system").unwrap();
        assert_eq!(o.root_cert, None);
        assert_eq!(o.verification(), Verification::Chain);

        assert_eq!(bare_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(bare_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(bare_name("plain"), "plain");

        let e = split_url("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(e.to_string().contains("verify-full"), "{e}");
    }

    #[test]
    fn the_driver_gets_the_mode() {
        let (config, _) = parse_url("postgres://u@h/db?sslmode=verify-ca").unwrap();
        assert_eq!(config.get_ssl_mode(), DriverSslMode::Require);
        let (config, _) = parse_url("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(config.get_ssl_mode(), DriverSslMode::Disable);
        let (config, _) = parse_url("postgres://u@h/db").unwrap();
        assert_eq!(config.get_ssl_mode(), DriverSslMode::Prefer);
    }

    #[test]
    fn a_missing_root_file_is_named() {
        let o = TlsOptions {
            mode: SslMode::VerifyFull,
            root_cert: Some(PathBuf::from("/nonexistent/ca.pem")),
        };
        let e = format!("{:#}", o.connector().err().unwrap());
        assert!(
            e.contains("sslrootcert") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }
}

//! Commands for running provisio in production (docs/deploy.md): `healthcheck`, the probe a
//! container's `HEALTHCHECK` runs, and `backup`, an online copy of the embedded database.

use crate::config::Settings;
use anyhow::{Context as _, bail};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The URL `healthcheck` probes by default: `/readyz` on the listen address, with a wildcard
/// address (`0.0.0.0`, `::`) replaced by the loopback of its family, which is where a probe
/// inside the same host or container reaches the server; `https` with native TLS.
pub fn default_probe_url(listen: SocketAddr, scheme: &str) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}/readyz", SocketAddr::new(ip, listen.port()))
}

/// Sends one `GET` to `url` and succeeds only on 200, all within `timeout`. The probe talks to
/// the server's own listener, not to a proxy in front: `http://`, or `https://` when the
/// server has native TLS, whose certificate file `pinned_cert` names. The server must then
/// present exactly that file's first certificate (pinned: no CA, no name check, so a
/// self-signed certificate or one for a public name both work on a loopback address).
pub async fn healthcheck(
    url: &str,
    timeout: Duration,
    pinned_cert: Option<&Path>,
) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    let tls = match (uri.scheme_str(), pinned_cert) {
        (Some("http"), _) => None,
        (Some("https"), Some(cert)) => Some(pinned_client(cert)?),
        (Some("https"), None) => bail!(
            "{url}: healthcheck speaks https:// only to a server with native TLS \
             (`tls.cert_file`), whose certificate it pins"
        ),
        _ => bail!("{url}: healthcheck speaks http:// or https:// to the server's own listener"),
    };
    let host = uri.host().context("the URL has no host")?.to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let probe = async move {
        // `[::1]` in a URL is `::1` to the resolver.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        let (mut sender, driver) = match tls {
            None => send_on(stream).await?,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
                send_on(connector.connect(name, stream).await?).await?
            }
        };
        let request = http::Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::USER_AGENT, "provisio-healthcheck")
            .body(String::new())?;
        let status = sender.send_request(request).await?.status();
        driver.abort();
        anyhow::Ok(status)
    };
    let status = tokio::time::timeout(timeout, probe)
        .await
        .with_context(|| format!("{url}: no answer within {}s", timeout.as_secs()))?
        .with_context(|| format!("{url}: request failed"))?;
    if status != http::StatusCode::OK {
        bail!("{url} answered {status}");
    }
    Ok(())
}

/// An HTTP/1.1 connection on `io`: its sender, and the task driving it.
async fn send_on<I>(
    io: I,
) -> anyhow::Result<(
    hyper::client::conn::http1::SendRequest<String>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    Ok((sender, tokio::spawn(conn)))
}

/// A TLS connector that accepts only the first certificate of the PEM file `cert`.
fn pinned_client(cert: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let leaf = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {} (key `tls.cert_file`)", cert.display()))?
        .next()
        .with_context(|| format!("{} holds no PEM certificate", cert.display()))?
        .with_context(|| format!("reading {} (key `tls.cert_file`)", cert.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let pinned = Pinned {
        leaf,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(pinned))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// Trusts one certificate, byte for byte (the handshake signatures are still verified, so
/// the peer holds its key).
#[derive(Debug)]
struct Pinned {
    leaf: rustls::pki_types::CertificateDer<'static>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `provisio backup FILE`: copies the embedded SQLite database (the server may be running);
/// refuses PostgreSQL with the `pg_dump` command to use instead. Returns what to print.
pub fn backup(settings: &Settings, dest: &Path, force: bool) -> anyhow::Result<String> {
    let url = settings.database_url();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let shown = redact_password(&url);
        bail!(
            "provisio backup copies the embedded SQLite database; this one is PostgreSQL. \
             Back it up with pg_dump (the password from PGPASSWORD or ~/.pgpass):\n  \
             pg_dump --format=custom --file={file} '{shown}'\n\
             and restore it, with no provisio instance running, with:\n  \
             pg_restore --clean --if-exists --no-owner --dbname='{shown}' {file}",
            file = dest.display()
        );
    }
    let source = url.strip_prefix("sqlite://").unwrap_or(&url);
    let report = crate::store::sqlite_file::backup(Path::new(source), dest, force)?;
    if report.foreign_owner {
        tracing::warn!(
            "the database belongs to another user: run backups as the service's user \
             (sudo -u provisio …) so the files SQLite may create beside it stay the service's"
        );
    }
    Ok(format!(
        "backup of {source} written to {} ({} bytes, mode 0600)",
        dest.display(),
        report.bytes
    ))
}

/// A database URL without its password (in the user-info part or a `password=` parameter),
/// fit to print.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}@{host}")
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|kv| !kv.starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_url_uses_loopback_for_wildcards() {
        let cases = [
            ("0.0.0.0:8318", "http://127.0.0.1:8318/readyz"),
            ("[::]:9000", "http://[::1]:9000/readyz"),
            ("192.0.2.7:80", "http://192.0.2.7:80/readyz"),
        ];
        for (listen, url) in cases {
            assert_eq!(default_probe_url(listen.parse().unwrap(), "http"), url);
        }
        assert_eq!(
            default_probe_url("0.0.0.0:443".parse().unwrap(), "https"),
            "https://127.0.0.1:443/readyz"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            (
                "postgres://prov:s3cret@db.example.com:5432/provisio?sslmode=require",
                "postgres://prov@db.example.com:5432/provisio?sslmode=require",
            ),
            (
                "postgresql://db/provisio?password=s3cret&sslmode=verify-full",
                "postgresql://db/provisio?sslmode=verify-full",
            ),
            (
                "postgres://prov@127.0.0.1/provisio",
                "postgres://prov@127.0.0.1/provisio",
            ),
            ("postgres://u:p@h", "postgres://u@h"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_password(url), shown);
        }
    }
}

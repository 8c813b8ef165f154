//! Commands for running provisio in production (docs/deploy.md): `healthcheck`, the probe a
//! container's `HEALTHCHECK` runs, and `backup`, an online copy of the embedded database.

use crate::config::Settings;
use anyhow::{Context as _, bail};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The URL `healthcheck` probes by default: `/readyz` on the listen address, with a wildcard
/// address (`0.0.0.0`, `::`) replaced by the loopback of its family, which is where a probe
/// inside the same host or container reaches the server.
pub fn default_probe_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/readyz", SocketAddr::new(ip, listen.port()))
}

/// Sends one `GET` to `url` (plain HTTP: the probe talks to the server's own listener, not to
/// the TLS proxy in front) and succeeds only on 200, all within `timeout`.
pub async fn healthcheck(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{url}: healthcheck speaks plain http:// to the server's own listener");
    }
    let host = uri.host().context("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let probe = async move {
        // `[::1]` in a URL is `::1` to the resolver.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let driver = tokio::spawn(conn);
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
            assert_eq!(default_probe_url(listen.parse().unwrap()), url);
        }
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

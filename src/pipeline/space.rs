//! Stage 1 — space: maps the request's Host to a tenant.

use crate::error::AppError;
use crate::model::Space;
use crate::store::Store;

/// Reads the Host (lower-case, no port); returns the space serving it. With no match, the only
/// space when exactly one exists (a single-tenant install then answers on any name), else 404.
pub async fn resolve(store: &dyn Store, host: &str) -> Result<Space, AppError> {
    if let Some(space) = store.space_by_host(host).await? {
        return Ok(space);
    }
    let mut spaces = store.list_spaces().await?;
    if spaces.len() == 1 {
        return Ok(spaces.remove(0));
    }
    Err(AppError::NotFound("Host not configured".to_string()))
}

/// The Host header without its port, lower-cased (`[::1]:80` → `[::1]`).
pub fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                raw
            }
        })
    };
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn strips_port_and_case() {
        assert_eq!(normalize_host("SIP.Example.com:8080"), "sip.example.com");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(normalize_host("[::1]:8318"), "[::1]");
    }
}

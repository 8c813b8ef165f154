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

/// The Host header without its port, lower-cased (`[::1]:80` → `[::1]`). Per RFC 9110 §7.2 a
/// Host is `uri-host [":" port]` and only an IP-literal (`[…]`) may hold a colon, so only a
/// single `:digits` suffix (or what follows `]`) is a port; anything else is kept whole and
/// simply matches no space. Idempotent, and never panics on any input.
pub fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        match raw.split_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => raw,
        }
    };
    host.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn strips_port_and_case() {
        assert_eq!(normalize_host("SIP.Example.com:8080"), "sip.example.com");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(normalize_host("[::1]:8318"), "[::1]");
        assert_eq!(normalize_host(" Host.Example:"), "host.example");
        // Only an IP-literal may hold a colon: a bare IPv6 address is no host with a port.
        assert_eq!(normalize_host("::1"), "::1");
        assert_eq!(normalize_host("a:1:2"), "a:1:2");
        assert_eq!(normalize_host("[::1"), "[::1");
    }

    mod properties {
        use super::super::normalize_host;
        use proptest::prelude::*;

        /// Host-ish text: letters of both cases, digits, dots, colons, brackets, spaces and
        /// any other character.
        fn hostish() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    4 => proptest::char::range('a', 'z'),
                    2 => proptest::char::range('A', 'Z'),
                    2 => proptest::char::range('0', '9'),
                    2 => proptest::sample::select(vec!['.', ':', '[', ']', ' ', '-', '\t', '%']),
                    1 => any::<char>(),
                ],
                0..24,
            )
            .prop_map(|v| v.into_iter().collect())
        }

        /// A DNS name or an IPv4 address, in any case.
        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,12}){0,3}",
                (0..=255_u8, 0..=255_u8, 0..=255_u8, 0..=255_u8)
                    .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any text: no panic, lower-case ASCII, trimmed, and normalising twice changes
            /// nothing.
            #[test]
            fn total_lowercase_and_idempotent(raw in hostish()) {
                let once = normalize_host(&raw);
                prop_assert!(!once.chars().any(|c| c.is_ascii_uppercase()));
                prop_assert_eq!(once.trim(), once.as_str());
                prop_assert_eq!(normalize_host(&once), once.clone());
            }

            /// A name with or without a port is the name, lower-cased.
            #[test]
            fn ports_are_dropped(host in name(), port in proptest::option::of(0..=65535_u32)) {
                let raw = match port {
                    Some(p) => format!("{host}:{p}"),
                    None => host.clone(),
                };
                prop_assert_eq!(normalize_host(&raw), host.to_ascii_lowercase());
            }

            /// An IPv6 literal keeps its brackets and colons; its port is dropped.
            #[test]
            fn ipv6_literals(groups in proptest::collection::vec("[0-9a-fA-F]{1,4}", 2..8),
                             port in proptest::option::of(0..=65535_u32)) {
                let literal = format!("[{}]", groups.join(":"));
                let raw = match port {
                    Some(p) => format!("{literal}:{p}"),
                    None => literal.clone(),
                };
                prop_assert_eq!(normalize_host(&raw), literal.to_ascii_lowercase());
            }
        }
    }
}

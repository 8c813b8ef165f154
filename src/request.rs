//! What the pipeline, the API and hook scripts know about an HTTP request, without any HTTP
//! types. It sits below all of them (it imports nothing of the crate), so `http` builds it,
//! and `pipeline`, `api`, `auth` and `hooks` read it, without any of them reaching into another.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Which provisioning route a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `GET /provisioning`: space-level content, no account.
    Anonymous,
    /// `GET /provisioning/{token}`: a provisioning token.
    Token,
    /// `GET /provisioning/auth_token/{token}`: a QR-login auth token.
    AuthToken,
    /// `GET /provisioning/me`: an authenticated account.
    Me,
    /// `provisio render` / `provisio hooks test`: no server involved.
    Render,
}

impl RouteKind {
    /// The name hook scripts see in `request.route`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Anonymous => "anonymous",
            RouteKind::Token => "token",
            RouteKind::AuthToken => "auth_token",
            RouteKind::Me => "me",
            RouteKind::Render => "render",
        }
    }
}

/// A transport-neutral view of the request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// HTTP method, upper-case.
    pub method: String,
    /// Path as received (percent-escapes kept), without the query.
    pub path: String,
    /// Raw query string, without `?` (empty when none).
    pub raw_query: String,
    /// Decoded query parameters; a key without `=` maps to an empty string.
    pub query: BTreeMap<String, String>,
    /// Headers with lower-cased names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// Host without port, lower-cased.
    pub host: String,
    /// Client address, when known.
    pub client_ip: Option<IpAddr>,
    /// Route kind.
    pub route: RouteKind,
    /// The client certificate the connection presented and the server verified (native TLS
    /// with `tls.client_ca_file`), or the verified subject a trusted proxy forwarded; `None`
    /// otherwise. Never built from anything an untrusted client sent.
    pub client_certificate: Option<ClientCertificate>,
}

/// A verified client certificate, as far as authentication needs it (FlexiAPI accepts
/// `CN=sip:user@domain` as the subject; provisio also accepts a `sip:` SAN URI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject distinguished name in RFC 4514 form, e.g. `CN=sip:alice@example.com`.
    pub subject: String,
    /// The certificate's subjectAltName URIs (empty when it has none, or when only the subject
    /// was forwarded by a proxy).
    pub uris: Vec<String>,
}

impl RequestInfo {
    /// A header value by (any-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The User-Agent header, or an empty string.
    pub fn user_agent(&self) -> &str {
        self.header("user-agent").unwrap_or("")
    }

    /// Whether the query names this key (any value, even none): FlexiAPI's `?reset_password`.
    pub fn has_query(&self, key: &str) -> bool {
        self.query.contains_key(key)
    }

    /// The client IP as text, or an empty string.
    pub fn client_ip_string(&self) -> String {
        self.client_ip.map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// A request for `provisio render` and hook fixtures.
    pub fn synthetic(host: &str, path: &str, route: RouteKind) -> RequestInfo {
        RequestInfo {
            method: "GET".to_string(),
            path: path.to_string(),
            raw_query: String::new(),
            query: BTreeMap::new(),
            headers: BTreeMap::new(),
            host: host.to_ascii_lowercase(),
            client_ip: None,
            route,
            client_certificate: None,
        }
    }
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

//! The client behind a reverse proxy. A proxy connects to provisio itself, so the TCP peer is
//! the proxy; the client it served is named in `X-Forwarded-For` (de facto) or `Forwarded`
//! (RFC 7239). Anyone can write those headers, so they are believed only when the TCP peer is
//! listed in `trusted_proxies`, and even then only up to the first hop that is not itself
//! trusted: each proxy appends the address it saw, so the right-most untrusted entry is the one
//! a trusted proxy vouched for, and everything to its left may be forged by the client.
//!
//! Nothing here knows HTTP types: the glue in `http/` passes header values in.

use ipnet::IpNet;
use std::net::IpAddr;

/// Headers a proxy uses to describe its client. From an untrusted peer they are forged: the
/// HTTP edge drops them before routes, hooks or logs can read them.
pub const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// The `trusted_proxies` setting, parsed once at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) or bare addresses (one host); the
    /// error names the entry that is neither.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.as_ref().trim();
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "`{entry}` is not an IP address or CIDR block (e.g. 10.0.0.0/8, 2001:db8::/32)"
                    )
                })?;
            nets.push(net.trunc());
        }
        Ok(TrustedProxies { nets })
    }

    /// Whether no proxy is trusted (the default: forwarding headers are always ignored).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4 address) is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request whose TCP peer is `peer`. An untrusted peer is the
    /// client, whatever its headers say. A trusted peer's `X-Forwarded-For` (or, without one,
    /// the `for=` of `Forwarded`) is walked from the right: trusted hops are skipped, the first
    /// untrusted address is the client. An entry that is not an address (`unknown`, an
    /// obfuscated identifier, garbage) stops the walk at the last trusted hop, which is then
    /// the best address anyone vouched for; a chain made only of trusted hops gives its
    /// left-most entry.
    pub fn client_ip(
        &self,
        peer: IpAddr,
        x_forwarded_for: Option<&str>,
        forwarded: Option<&str>,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<Option<IpAddr>> = match x_forwarded_for.filter(|v| !v.trim().is_empty()) {
            Some(xff) => xff.split(',').map(parse_node).collect(),
            None => forwarded
                .map(|f| {
                    parse_forwarded(f)
                        .iter()
                        .map(|e| e.for_node.as_deref().and_then(parse_node))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = hop else {
                return client;
            };
            client = ip.to_canonical();
            if !self.contains(client) {
                return client;
            }
        }
        client
    }
}

/// One element (one hop) of an RFC 7239 `Forwarded` header; parameter values are unquoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedElement {
    /// `for=`: the node that made the request to this hop.
    pub for_node: Option<String>,
    /// `proto=`: the scheme that request used.
    pub proto: Option<String>,
    /// `host=`: the Host that request carried.
    pub host: Option<String>,
}

/// Parses a `Forwarded` value (`for=192.0.2.1;proto=https, for="[2001:db8::1]:4711"`):
/// elements split on `,`, pairs on `;`, both outside quoted strings. Unknown parameters and
/// malformed pairs are skipped; it never fails.
pub fn parse_forwarded(value: &str) -> Vec<ForwardedElement> {
    split_unquoted(value, ',')
        .into_iter()
        .map(|element| {
            let mut out = ForwardedElement::default();
            for pair in split_unquoted(element, ';') {
                let Some((key, raw)) = pair.split_once('=') else {
                    continue;
                };
                let value = unquote(raw.trim());
                match key.trim().to_ascii_lowercase().as_str() {
                    "for" => out.for_node = Some(value),
                    "proto" => out.proto = Some(value),
                    "host" => out.host = Some(value),
                    _ => {}
                }
            }
            out
        })
        .collect()
}

/// Splits on `sep` where it is not inside a double-quoted string (`\` escapes inside quotes).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A quoted-string's content (escapes resolved), or a token as it is.
fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"') else {
        return s.to_string();
    };
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One hop as proxies write it: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`, `192.0.2.1:4711`, possibly quoted. `None` for anything else
/// (`unknown`, `_hidden`, garbage).
pub fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return if port_ok {
            inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            None
        };
    }
    let (host, port) = s.split_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// What a trusted proxy says about the URL its client used, for building links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkOrigin {
    /// `http` or `https`, when a proxy said so.
    pub scheme: Option<&'static str>,
    /// The Host the client used (`name[:port]`), when a proxy said so and it is well formed.
    pub host: Option<String>,
}

/// Reads `X-Forwarded-Proto` and `X-Forwarded-Host` (their first value: the one the outermost
/// proxy saw), falling back to the first `Forwarded` element's `proto=` and `host=`. Values
/// that are not `http`/`https` or not a plain host name/address with an optional port are
/// ignored. Only meaningful for a request whose peer is trusted (the edge drops the headers
/// otherwise).
pub fn link_origin(
    x_forwarded_proto: Option<&str>,
    x_forwarded_host: Option<&str>,
    forwarded: Option<&str>,
) -> LinkOrigin {
    let first = |v: Option<&str>| {
        v.and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let element = forwarded
        .and_then(|f| parse_forwarded(f).into_iter().next())
        .unwrap_or_default();
    let proto = first(x_forwarded_proto).or(element.proto);
    let host = first(x_forwarded_host).or(element.host);
    LinkOrigin {
        scheme: proto.and_then(|p| match p.to_ascii_lowercase().as_str() {
            "http" => Some("http"),
            "https" => Some("https"),
            _ => None,
        }),
        host: host.filter(|h| valid_host(h)),
    }
}

/// A host as it may appear in a link: a name, an IPv4 address or a bracketed IPv6 address,
/// with an optional port; nothing that could end the authority (`/`, `@`, `?`, spaces).
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 261
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse(&["10.0.0.0/8", "2001:db8:1::/48", "192.0.2.7"]).unwrap()
    }

    #[test]
    fn parses_cidrs_and_addresses_and_names_bad_entries() {
        let t = trusted();
        assert!(t.contains(ip("10.1.2.3")));
        assert!(
            t.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(t.contains(ip("2001:db8:1:ffff::1")));
        assert!(t.contains(ip("192.0.2.7")));
        assert!(!t.contains(ip("192.0.2.8")));
        assert!(!t.contains(ip("11.0.0.1")));
        let e = TrustedProxies::parse(&["10.0.0.0/8", "proxy.example.com"]).unwrap_err();
        assert!(e.contains("proxy.example.com"), "{e}");
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_say() {
        let t = trusted();
        let peer = ip("203.0.113.9");
        assert_eq!(t.client_ip(peer, Some("198.51.100.1"), None), peer);
        assert_eq!(t.client_ip(peer, None, Some("for=198.51.100.1")), peer);
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("10.0.0.1"), Some("1.2.3.4"), None),
            ip("10.0.0.1")
        );
        assert_eq!(
            none.client_ip(ip("::ffff:10.0.0.1"), None, None),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_peers_yield_the_rightmost_untrusted_hop() {
        let t = trusted();
        let peer = ip("10.0.0.1");
        // The client forged the left entry; our proxy appended the real one.
        assert_eq!(
            t.client_ip(peer, Some("6.6.6.6, 203.0.113.7"), None),
            ip("203.0.113.7")
        );
        // Two trusted proxies in a row are skipped.
        assert_eq!(
            t.client_ip(
                peer,
                Some("6.6.6.6, 203.0.113.7, 10.9.9.9, 192.0.2.7"),
                None
            ),
            ip("203.0.113.7")
        );
        // Ports and brackets as some proxies write them.
        assert_eq!(
            t.client_ip(peer, Some("203.0.113.7:5555"), None),
            ip("203.0.113.7")
        );
        assert_eq!(
            t.client_ip(peer, Some("[2001:db8:2::5]:443"), None),
            ip("2001:db8:2::5")
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(t.client_ip(peer, Some("6.6.6.6, unknown"), None), peer);
        assert_eq!(
            t.client_ip(peer, Some("6.6.6.6, garbage, 10.2.2.2"), None),
            ip("10.2.2.2")
        );
        // Only trusted hops: the left-most.
        assert_eq!(
            t.client_ip(peer, Some("10.3.3.3, 10.2.2.2"), None),
            ip("10.3.3.3")
        );
        // No header: the peer itself.
        assert_eq!(t.client_ip(peer, None, None), peer);
        assert_eq!(t.client_ip(peer, Some("  "), None), peer);
    }

    #[test]
    fn forwarded_header_when_there_is_no_x_forwarded_for() {
        let t = trusted();
        let peer = ip("10.0.0.1");
        let fwd = r#"for=6.6.6.6, for="[2001:db8:2::5]:4711";proto=https, For=10.4.4.4"#;
        assert_eq!(t.client_ip(peer, None, Some(fwd)), ip("2001:db8:2::5"));
        assert_eq!(
            t.client_ip(peer, None, Some("for=_hidden, for=10.4.4.4")),
            ip("10.4.4.4")
        );
        assert_eq!(t.client_ip(peer, None, Some("proto=https")), peer);
        // X-Forwarded-For wins when both are present.
        assert_eq!(
            t.client_ip(peer, Some("203.0.113.7"), Some("for=6.6.6.6")),
            ip("203.0.113.7")
        );
        let parsed = parse_forwarded(r#"for="a,b";host="h.example:8443";proto=HTTPS"#);
        assert_eq!(parsed.len(), 1, "a comma inside quotes does not split");
        assert_eq!(parsed[0].for_node.as_deref(), Some("a,b"));
        assert_eq!(parsed[0].host.as_deref(), Some("h.example:8443"));
    }

    #[test]
    fn link_origin_takes_the_first_valid_values() {
        assert_eq!(
            link_origin(Some("https, http"), Some("prov.example.org"), None),
            LinkOrigin {
                scheme: Some("https"),
                host: Some("prov.example.org".into())
            }
        );
        assert_eq!(
            link_origin(None, None, Some("proto=https;host=\"[2001:db8::1]:8443\"")),
            LinkOrigin {
                scheme: Some("https"),
                host: Some("[2001:db8::1]:8443".into())
            }
        );
        assert_eq!(
            link_origin(Some("gopher"), Some("evil.example/path"), None),
            LinkOrigin::default()
        );
        assert_eq!(
            link_origin(Some(""), Some("a@b"), None),
            LinkOrigin::default()
        );
    }

    /// An address inside 10.0.0.0/8 (trusted) or outside every trusted block.
    fn hop() -> impl Strategy<Value = (IpAddr, bool)> {
        prop_oneof![
            any::<[u8; 3]>().prop_map(|b| (IpAddr::from([10, b[0], b[1], b[2]]), true)),
            any::<[u8; 2]>().prop_map(|b| (IpAddr::from([198, 51, b[0], b[1]]), false)),
            any::<[u16; 2]>().prop_map(|w| (
                IpAddr::from([0x2001, 0xdb8, 0x9, w[0], 0, 0, 0, w[1]]),
                false
            )),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn never_panics_on_any_header(peer in any::<[u8; 4]>(), xff in ".{0,80}", fwd in ".{0,80}",
                                      proto in ".{0,12}", host in ".{0,40}") {
            let t = trusted();
            for p in [IpAddr::from(peer), ip("10.0.0.1")] {
                let _ = t.client_ip(p, Some(&xff), Some(&fwd));
                let _ = t.client_ip(p, None, Some(&fwd));
            }
            let origin = link_origin(Some(&proto), Some(&host), Some(&fwd));
            if let Some(h) = origin.host {
                prop_assert!(valid_host(&h));
            }
        }

        #[test]
        fn forged_headers_from_untrusted_peers_change_nothing(
            peer in any::<[u8; 4]>().prop_filter("untrusted", |b| b[0] != 10 && *b != [192, 0, 2, 7]),
            xff in ".{0,80}", fwd in ".{0,80}") {
            let peer = IpAddr::from(peer);
            prop_assert_eq!(trusted().client_ip(peer, Some(&xff), Some(&fwd)), peer);
        }

        #[test]
        fn chain_yields_rightmost_untrusted(hops in proptest::collection::vec(hop(), 0..8),
                                            bracket in any::<bool>()) {
            let t = trusted();
            let peer = ip("10.0.0.1");
            let expected = hops.iter().rev().find(|(_, trusted)| !trusted).map(|(ip, _)| *ip)
                .or_else(|| hops.first().map(|(ip, _)| *ip))
                .unwrap_or(peer);
            let render = |ip: &IpAddr| match ip {
                IpAddr::V6(v6) if bracket => format!("[{v6}]:1234"),
                other => other.to_string(),
            };
            let xff = hops.iter().map(|(ip, _)| render(ip)).collect::<Vec<_>>().join(", ");
            prop_assert_eq!(t.client_ip(peer, Some(&xff), None), expected);
            let fwd = hops.iter().map(|(ip, _)| format!("for=\"{}\"", render(ip)))
                .collect::<Vec<_>>().join(", ");
            prop_assert_eq!(t.client_ip(peer, None, Some(&fwd)), expected);
        }
    }
}

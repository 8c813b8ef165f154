//! What the pipeline (and hook scripts) know about the HTTP request, without any HTTP types.

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
        }
    }
}

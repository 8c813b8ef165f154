//! Wizard links (FlexiAPI's `/wizard/{token}`, FLEXIAPI-462): what a visit turns into, free of
//! any transport. A wizard page hands the Linphone app a `sip-linphone:` URI whose query asks
//! for an action (`call`, `show`, …), optionally a configuration to fetch
//! (`linphone-fetch-config`, a freshly minted provisioning URL) and SIPS. The URI is built
//! exactly as FlexiAPI builds it, so an app that opens FlexiAPI's links opens ours; the page
//! also offers the app's download for the visitor's platform (read from its User-Agent).

use crate::store::LINPHONE_ACTIONS;

/// The action a wizard asks for when it names none.
pub const DEFAULT_ACTION: &str = "show";

/// Whether `action` is one of FlexiAPI's app actions (`call, show, bye, accept, decline`).
pub fn is_action(action: &str) -> bool {
    LINPHONE_ACTIONS.contains(&action)
}

/// The `sip-linphone:` URI of a wizard page, in FlexiAPI's exact form: `sip-linphone:`, the
/// SIP URI without its `sip:`/`sips:` scheme, `?`, then the query in this order:
/// `linphone-action`, `linphone-fetch-config` (when a configuration is to be fetched),
/// `linphone-use-sips=true` (when SIPS is asked), each value percent-encoded as RFC 3986
/// (every byte but `A-Z a-z 0-9 - . _ ~`, as PHP's `http_build_query` with
/// `PHP_QUERY_RFC3986`). Parameters the SIP URI itself carries (`?subject=…`) come first, and
/// one of ours replaces a same-named one in place, as Laravel's `Uri::withQuery` merges.
pub fn sip_linphone_uri(
    sip: &str,
    action: &str,
    fetch_config: Option<&str>,
    use_sips: bool,
) -> String {
    let target = strip_sip_scheme(sip);
    let (path, existing) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut query: Vec<(String, String)> = existing
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let mut set = |key: &str, value: &str| match query.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => query.push((key.to_string(), value.to_string())),
    };
    set("linphone-action", action);
    if let Some(url) = fetch_config {
        set("linphone-fetch-config", url);
    }
    if use_sips {
        set("linphone-use-sips", "true");
    }
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", rfc3986(k), rfc3986(v)))
        .collect();
    format!("sip-linphone:{path}?{}", query.join("&"))
}

/// `sip:` or `sips:` (any case) removed from the front of a SIP URI, as FlexiAPI's
/// `stripSipProtocol` (which only knows lower case; `SIP:` is a valid scheme too).
pub fn strip_sip_scheme(sip: &str) -> &str {
    for scheme in ["sips:", "sip:"] {
        if sip.len() >= scheme.len()
            && sip.is_char_boundary(scheme.len())
            && sip[..scheme.len()].eq_ignore_ascii_case(scheme)
        {
            return &sip[scheme.len()..];
        }
    }
    sip
}

/// Percent-encodes every byte but RFC 3986's unreserved characters.
fn rfc3986(s: &str) -> String {
    /// Everything but `A-Z a-z 0-9 - . _ ~`.
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// The heading of the page for an action, as FlexiAPI words it.
pub fn heading(action: &str) -> &'static str {
    match action {
        "call" => "Start a Linphone call",
        "show" => "Open the Linphone application",
        _ => "Configure your Linphone application",
    }
}

/// The visitor's platform family, for the download button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// GNU/Linux desktops.
    Linux,
    /// macOS.
    Mac,
    /// Windows.
    Windows,
    /// Phones, tablets and anything unrecognised: the app stores are on the download page.
    Other,
}

impl Platform {
    /// The family a User-Agent names. Phones come first: Android's User-Agent says `Linux`,
    /// an iPhone's `like Mac OS X`, and neither can run a desktop build.
    pub fn from_user_agent(ua: &str) -> Platform {
        let has = |needle: &str| ua.contains(needle);
        if has("Android") || has("iPhone") || has("iPad") || has("iPod") || has("CrOS") {
            Platform::Other
        } else if has("Windows") {
            Platform::Windows
        } else if has("Macintosh") || has("Mac OS X") {
            Platform::Mac
        } else if has("Linux") || has("X11") {
            Platform::Linux
        } else {
            Platform::Other
        }
    }

    /// Where this platform gets the app, and the button's label (FLEXIAPI-461).
    pub fn download(self) -> (&'static str, &'static str) {
        match self {
            Platform::Linux => (
                "https://download.linphone.org/releases/linux/latest_app",
                "Download Linphone for GNU/Linux",
            ),
            Platform::Mac => (
                "https://download.linphone.org/releases/macos/latest_app",
                "Download Linphone for MacOS",
            ),
            Platform::Windows => (
                "https://download.linphone.org/releases/windows/latest_app",
                "Download Linphone for Windows",
            ),
            Platform::Other => (ALL_DOWNLOADS, "Download Linphone"),
        }
    }

    /// Whether the page also links the other platforms' downloads (desktops only).
    pub fn offers_other_platforms(self) -> bool {
        self != Platform::Other
    }
}

/// Linphone's download page, for every platform.
pub const ALL_DOWNLOADS: &str = "https://www.linphone.org/en/download/";

/// Whether `s` is a SIP or SIPS URI by RFC 3261 §19.1 / §25.1, the grammar FlexiAPI's
/// `isSip` encodes as a regular expression (case-insensitive scheme, ASCII only):
/// `sip[s]:[user[:password]@]host[:port]*(;param[=value])[?hname=hvalue*(&hname=hvalue)]`.
pub fn is_sip_uri(s: &str) -> bool {
    if !s.is_ascii() {
        return false;
    }
    let Some(rest) = ["sips:", "sip:"].iter().find_map(|scheme| {
        (s.len() >= scheme.len() && s[..scheme.len()].eq_ignore_ascii_case(scheme))
            .then(|| &s[scheme.len()..])
    }) else {
        return false;
    };
    // No class after the user info holds `@`: there is at most one, and it ends the user info.
    let rest = match rest.split_once('@') {
        Some((userinfo, rest)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if user.is_empty()
                || !chars_in(user, |c| is_unreserved(c) || "&=+$,;?/".contains(c))
                || !password
                    .is_none_or(|p| chars_in(p, |c| is_unreserved(c) || "&=+$,".contains(c)))
            {
                return false;
            }
            rest
        }
        None => rest,
    };
    // host: an IPv6 reference, or everything up to the first `:`, `;` or `?`.
    let (host_ok, rest) = match rest.strip_prefix('[') {
        Some(inner) => match inner.split_once(']') {
            Some((address, rest)) => (address.parse::<std::net::Ipv6Addr>().is_ok(), rest),
            None => return false,
        },
        None => {
            let end = rest.find([':', ';', '?']).unwrap_or(rest.len());
            let host = &rest[..end];
            (is_ipv4(host) || is_hostname(host), &rest[end..])
        }
    };
    if !host_ok || !(rest.is_empty() || rest.starts_with([':', ';', '?'])) {
        return false;
    }
    // [":" port]
    let rest = match rest.strip_prefix(':') {
        Some(port) => {
            let end = port.find([';', '?']).unwrap_or(port.len());
            if end == 0 || !port[..end].bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            &port[end..]
        }
        None => rest,
    };
    // *( ";" pname [ "=" pvalue ] ), then [ "?" headers ]
    let (params, headers) = match rest.split_once('?') {
        Some((params, headers)) => (params, Some(headers)),
        None => (rest, None),
    };
    if !params.is_empty() {
        let Some(params) = params.strip_prefix(';') else {
            return false;
        };
        let param_char = |c: char| is_unreserved(c) || "[]/:&+$".contains(c);
        for param in params.split(';') {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name, value),
                None => (param, ""),
            };
            if !chars_in(name, param_char) || !chars_in(value, param_char) {
                return false;
            }
        }
    }
    if let Some(headers) = headers {
        let header_char = |c: char| is_unreserved(c) || "[]/?:+$".contains(c);
        for header in headers.split('&') {
            let Some((name, value)) = header.split_once('=') else {
                return false;
            };
            if name.is_empty() || !chars_in(name, header_char) || !chars_in(value, header_char) {
                return false;
            }
        }
    }
    true
}

/// RFC 3261 `unreserved`: alphanumerics and the marks `- _ . ! ~ * ' ( )`.
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()".contains(c)
}

/// Whether every character of `s` is allowed by `allowed` or is part of an `escaped`
/// (`%` and two hex digits).
fn chars_in(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if allowed(char::from(bytes[i])) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// `1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT`.
fn is_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `*( domainlabel "." ) toplabel [ "." ]`: labels of alphanumerics and inner hyphens, the
/// last one starting with a letter.
fn is_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.iter().all(|l| label_ok(l))
        && labels
            .last()
            .is_some_and(|top| top.starts_with(|c: char| c.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flexiapi_uri_forms() {
        // The forms of FlexiAPI's WizardTest and its documentation, byte for byte.
        assert_eq!(
            sip_linphone_uri(
                "sip:admin@sip.linphone.org",
                "call",
                Some("https://sip.example.com/provisioning/AbC123"),
                false
            ),
            "sip-linphone:admin@sip.linphone.org?linphone-action=call&linphone-fetch-config=https%3A%2F%2Fsip.example.com%2Fprovisioning%2FAbC123"
        );
        assert_eq!(
            sip_linphone_uri(
                "sip:admin@sip.linphone.org",
                "bye",
                Some("https://x/p/T"),
                true
            ),
            "sip-linphone:admin@sip.linphone.org?linphone-action=bye&linphone-fetch-config=https%3A%2F%2Fx%2Fp%2FT&linphone-use-sips=true"
        );
        assert_eq!(
            sip_linphone_uri("", "show", None, false),
            "sip-linphone:?linphone-action=show"
        );
        assert_eq!(
            sip_linphone_uri("sips:a@b.c", "show", None, true),
            "sip-linphone:a@b.c?linphone-action=show&linphone-use-sips=true"
        );
        // The SIP URI's own headers come first; ours replace a same-named one in place.
        assert_eq!(
            sip_linphone_uri(
                "sip:a@b.c?subject=hi%20there&linphone-action=x",
                "call",
                None,
                false
            ),
            "sip-linphone:a@b.c?subject=hi%20there&linphone-action=call"
        );
        assert_eq!(strip_sip_scheme("SIP:a@b"), "a@b");
        assert_eq!(strip_sip_scheme("tel:1"), "tel:1");
    }

    #[test]
    fn sip_uri_grammar() {
        for ok in [
            "sip:admin@sip.linphone.org",
            "sips:bob:secret@example.com:5061",
            "SIP:alice@example.com;transport=tls",
            "sip:example.com",
            "sip:192.0.2.1:5060",
            "sip:a@[2001:db8::1]:5060;lr",
            "sip:a%20b@example.com?subject=project&priority=urgent",
            "sip:+33123;phone-context=x@example.com",
            "sip:a@example.com.",
        ] {
            assert!(is_sip_uri(ok), "{ok}");
        }
        for bad in [
            "",
            "sip:",
            "admin@sip.linphone.org",
            "http://example.com",
            "sip:a@b@c.com",
            "sip:a@exa mple.com",
            "sip:a@-x.com",
            "sip:a@example.123",
            "sip:a@example.com:",
            "sip:a@example.com:50x",
            "sip:a@example.com?novalue",
            "sip:a%2@example.com",
            "sip:a@[zz::1]",
            "sip:é@example.com",
            "sip:a@example.com#frag",
            "sip:a@1.2.3.4.5",
        ] {
            assert!(!is_sip_uri(bad), "{bad}");
        }
    }

    #[test]
    fn platforms() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                Platform::Linux,
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
                Platform::Windows,
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)",
                Platform::Mac,
            ),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8)", Platform::Other),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)",
                Platform::Other,
            ),
            ("curl/8.5.0", Platform::Other),
        ];
        for (ua, platform) in cases {
            assert_eq!(Platform::from_user_agent(ua), platform, "{ua}");
        }
        assert!(Platform::Mac.offers_other_platforms());
        assert!(!Platform::Other.offers_other_platforms());
        assert_eq!(Platform::Other.download().0, ALL_DOWNLOADS);
    }
}

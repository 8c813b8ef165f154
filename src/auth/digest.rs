//! HTTP Digest (RFC 7616, MD5 and SHA-256) as FlexiAPI speaks it on `/provisioning/me` and the
//! user API (reference §4.3), so an already-provisioned Linphone can re-fetch its document with
//! the HA1 it holds — with FlexiAPI's flaws fixed:
//!
//! * the nonce the client answers IS checked (FlexiAPI only looks the opaque up), and both are
//!   random, stored, bound to the client IP and expire after `digest_nonce_ttl_seconds`;
//! * `nc` must strictly increase per nonce, checked and recorded in one atomic store operation
//!   ([`crate::store::Store::check_digest_nonce`]), so a replay is refused even when the copies
//!   race each other; a response without `qop` does not hash `nc`, so its nonce is single-use;
//! * `uri` must be the request-target as received (path and query, `%XX` compared without case,
//!   as belle-sip lower-cases escapes), where FlexiAPI ignores the query;
//! * an unknown `From` gets a 401 whose challenge looks like any other (FlexiAPI answers 404,
//!   which enumerates accounts): a decoy credential in the space's algorithm, never stored;
//! * responses are compared in constant time, and nonces, opaques, responses and HA1s are never
//!   logged (only [`fingerprint`]s).
//!
//! What liblinphone sends is tolerated: a quoted `algorithm`, a missing one (MD5), `nc` without
//! `qop`, two spaces after `Authorization:` (linphone-digest.md).

use crate::error::AppError;
use crate::model::{Algorithm, Space, now_ms};
use crate::request::RequestInfo;
use crate::secret::{ct_eq, digest_hex, fingerprint, hash_secret, new_hex};
use crate::state::AppState;
use crate::store::{AccountBundle, NonceCheck};
use std::collections::BTreeMap;

/// Body of the 401 that carries a first challenge (FlexiAPI's wording).
pub const UNAUTHENTICATED: &str = "Unauthenticated request";
/// Body of the 401 for a wrong response (wrong password, unknown account alike).
pub const UNAUTHORIZED: &str = "Unauthorized";
/// Body of the 401 for a challenge that is unknown, expired, or was issued to another IP.
pub const INVALID_OPAQUE: &str = "Invalid opaque";
/// Body of the 401 for a nonce count that did not increase.
pub const NONCE_REPLAYED: &str = "Nonce replayed";
/// Body of the 401 for a response in an algorithm the account has no password for.
pub const WRONG_ALGORITHM: &str = "Wrong algorithm";

/// The form in which a nonce or opaque is stored and looked up: hex SHA-256, so neither the
/// database nor a driver's debug log of statement parameters holds a live challenge.
pub fn at_rest(value: &str) -> String {
    hex::encode(hash_secret(value))
}

/// The account a `From: sip:user@domain` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipIdentity {
    /// User part, percent-decoded.
    pub username: String,
    /// Host part, lower-cased, without port.
    pub domain: String,
}

/// Parses a `From` header: `sip:user@domain`, optionally in `<…>` with a display name, with
/// parameters after `;` ignored and the user part percent-decoded. FlexiAPI refuses the `<…>`
/// form; accepting it costs nothing and covers clients that send a name-addr.
pub fn parse_from(value: &str) -> Option<SipIdentity> {
    let value = value.trim();
    let uri = match (value.find('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        (None, None) => value,
        _ => return None,
    };
    let uri = uri.split(';').next().unwrap_or("").trim();
    let lower = uri.to_ascii_lowercase();
    let rest = if lower.starts_with("sip:") {
        &uri[4..]
    } else if lower.starts_with("sips:") {
        &uri[5..]
    } else {
        return None;
    };
    let rest = rest.split('?').next().unwrap_or("");
    let (user, host) = rest.rsplit_once('@')?;
    let user = percent_decode(user)?;
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    let valid_user =
        !user.is_empty() && !user.contains([':', '@']) && !user.chars().any(char::is_control);
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
    (valid_user && valid_host).then(|| SipIdentity {
        username: user,
        domain: host.to_ascii_lowercase(),
    })
}

/// Decodes `%XX` escapes (a SIP user part may carry them); `None` for a bad escape or UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `Digest k=v, k="v", …` into lower-cased keys and unquoted values. `None` when the
/// scheme is not Digest or the list is malformed (unterminated quote, repeated key).
pub fn parse_authorization(value: &str) -> Option<BTreeMap<String, String>> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|c| c.is_ascii_whitespace() || *c == ',')
        {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return None;
        }
        let key = key.trim().to_ascii_lowercase();
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.push(chars.next()?),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
            val = val.trim().to_string();
        }
        if key.is_empty() || params.insert(key, val).is_some() {
            return None;
        }
    }
    Some(params)
}

/// One challenge header value, in FlexiAPI's exact format (no space after commas, unquoted
/// algorithm).
pub fn challenge_header(realm: &str, algorithm: Algorithm, nonce: &str, opaque: &str) -> String {
    format!(
        "Digest realm=\"{realm}\",qop=\"auth\",algorithm={},nonce=\"{nonce}\",opaque=\"{opaque}\"",
        algorithm.as_str()
    )
}

/// `%XX` escapes with upper-case hex, so `%2f` and `%2F` compare equal.
fn normalize_escapes(s: &str) -> Vec<u8> {
    let mut out = s.as_bytes().to_vec();
    let mut i = 0;
    while i + 2 < out.len() {
        if out[i] == b'%' && out[i + 1].is_ascii_hexdigit() && out[i + 2].is_ascii_hexdigit() {
            out[i + 1] = out[i + 1].to_ascii_uppercase();
            out[i + 2] = out[i + 2].to_ascii_uppercase();
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// Whether a Digest `uri` names this request: its request-target (path and query as received),
/// or the same in absolute form; `%XX` escapes compare without case.
pub fn same_request_target(uri: &str, path: &str, raw_query: &str) -> bool {
    let uri = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            uri.get(..scheme.len())
                .filter(|p| p.eq_ignore_ascii_case(scheme))
                .map(|_| &uri[scheme.len()..])
        })
        .map_or(uri, |rest| rest.find('/').map_or("/", |i| &rest[i..]));
    let target = if raw_query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{raw_query}")
    };
    let uri = normalize_escapes(uri);
    let target = normalize_escapes(&target);
    uri == target || (raw_query.is_empty() && uri.strip_suffix(b"?") == Some(target.as_slice()))
}

/// The response a client holding `ha1` must send: `H(HA1:nonce:nc:cnonce:qop:HA2)` with qop,
/// `H(HA1:nonce:HA2)` without (RFC 2069 style, what liblinphone does for a qop-less challenge).
pub fn expected_response(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = digest_hex(algorithm, &format!("{method}:{uri}"));
    match qop {
        Some((nc, cnonce, qop)) => digest_hex(
            algorithm,
            &format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"),
        ),
        None => digest_hex(algorithm, &format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Who a challenge is for: a real account with its HA1s, or a decoy for an unknown identity
/// that must look the same from outside.
struct Subject {
    /// The account with its passwords, `None` for a decoy.
    account: Option<AccountBundle>,
    /// Digest realm of the challenge.
    realm: String,
    /// `(algorithm, ha1)`, MD5 first, as FlexiAPI orders its headers.
    credentials: Vec<(Algorithm, String)>,
}

/// Finds the account the `From` names, or builds a decoy in the space of its domain (else the
/// request's space): one credential in that space's algorithm, with a random HA1.
async fn subject(state: &AppState, space: &Space, who: &SipIdentity) -> Result<Subject, AppError> {
    if let Some(bundle) = state
        .store
        .account_bundle_by_identity(&who.username, &who.domain)
        .await?
        && !bundle.passwords.is_empty()
    {
        let realm = state
            .spaces
            .by_domain(&bundle.account.domain)
            .map_or_else(|| bundle.account.domain.clone(), |s| s.space.realm.clone());
        let mut credentials: Vec<(Algorithm, String)> = bundle
            .passwords
            .iter()
            .map(|p| (p.algorithm, p.ha1.clone()))
            .collect();
        credentials.sort_by_key(|(alg, _)| match alg {
            Algorithm::Md5 => 0,
            Algorithm::Sha256 => 1,
        });
        return Ok(Subject {
            account: Some(bundle),
            realm,
            credentials,
        });
    }
    let decoy_space = state
        .spaces
        .by_domain(&who.domain)
        .map_or_else(|| space.clone(), |s| s.space.clone());
    let algorithm = decoy_space.password_algorithm;
    let ha1_len = match algorithm {
        Algorithm::Md5 => 16,
        Algorithm::Sha256 => 32,
    };
    Ok(Subject {
        account: None,
        realm: decoy_space.realm,
        credentials: vec![(algorithm, new_hex(ha1_len))],
    })
}

/// A 401 with a fresh challenge: a new random nonce and opaque (stored for a real account,
/// bound to the client IP), one header per credential algorithm. Each challenge takes a cell of
/// the client's anonymous rate limit first (decoys too, so a 429 says nothing about whether
/// the account exists).
async fn challenge(
    state: &AppState,
    subject: &Subject,
    request: &RequestInfo,
    message: &str,
) -> AppError {
    if let Some(ip) = request.client_ip
        && let Err(limited) = state.limits.take_anonymous(ip)
    {
        return limited.into();
    }
    let nonce = new_hex(32);
    let opaque = new_hex(32);
    if let Some(bundle) = &subject.account {
        let stored = state
            .store
            .create_digest_nonce(
                bundle.account.id,
                &at_rest(&nonce),
                &at_rest(&opaque),
                &request.client_ip_string(),
                now_ms(),
            )
            .await;
        if let Err(e) = stored {
            return AppError::Store(e);
        }
    }
    tracing::info!(
        reason = message,
        known = subject.account.is_some(),
        opaque_fp = %fingerprint(&opaque),
        "Digest challenge sent"
    );
    AppError::Challenge {
        message: message.to_string(),
        challenges: subject
            .credentials
            .iter()
            .map(|(alg, _)| challenge_header(&subject.realm, *alg, &nonce, &opaque))
            .collect(),
    }
}

/// Authenticates a request whose `From` header is `from`: without `Authorization`, answers a
/// challenge; with one, checks it and returns the account with its passwords (read in one
/// round trip with the HA1s the check needs). Every refusal is a 401 with a new challenge.
pub async fn authenticate(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
    from: &str,
) -> Result<AccountBundle, AppError> {
    let Some(who) = parse_from(from) else {
        return Err(AppError::Unauthorized("Invalid SIP address".to_string()));
    };
    let subject = subject(state, space, &who).await?;
    let Some(params) = request
        .header("authorization")
        .and_then(parse_authorization)
    else {
        return Err(challenge(state, &subject, request, UNAUTHENTICATED).await);
    };
    match verify(state, &subject, &who, request, &params).await {
        Ok(bundle) => Ok(bundle),
        Err(Refusal::Store(e)) => Err(e),
        Err(Refusal::Retry(message)) => Err(challenge(state, &subject, request, message).await),
    }
}

/// Why a response was refused.
enum Refusal {
    /// Answer a new challenge with this message.
    Retry(&'static str),
    /// The store failed.
    Store(AppError),
}

/// Checks a parsed response against the subject, then records its nonce count.
async fn verify(
    state: &AppState,
    subject: &Subject,
    who: &SipIdentity,
    request: &RequestInfo,
    params: &BTreeMap<String, String>,
) -> Result<AccountBundle, Refusal> {
    const MALFORMED: &str = "Invalid Digest response";
    let get = |k: &str| params.get(k).map(String::as_str);
    let (Some(username), Some(realm), Some(nonce), Some(opaque), Some(uri), Some(response)) = (
        get("username"),
        get("realm"),
        get("nonce"),
        get("opaque"),
        get("uri"),
        get("response"),
    ) else {
        return Err(Refusal::Retry(MALFORMED));
    };
    if username != who.username
        || realm != subject.realm
        || get("userhash").is_some_and(|v| v != "false")
    {
        return Err(Refusal::Retry(MALFORMED));
    }
    if !same_request_target(uri, &request.path, &request.raw_query) {
        return Err(Refusal::Retry(MALFORMED));
    }
    let algorithm = match get("algorithm").map(str::to_ascii_uppercase).as_deref() {
        None | Some("MD5") => Algorithm::Md5,
        Some("SHA-256") => Algorithm::Sha256,
        Some(_) => return Err(Refusal::Retry(WRONG_ALGORITHM)),
    };
    let nc_text = get("nc");
    let nc = match nc_text {
        Some(t) if !t.is_empty() && t.len() <= 8 => match u32::from_str_radix(t, 16) {
            Ok(n) if n > 0 => Some(i64::from(n)),
            _ => return Err(Refusal::Retry(MALFORMED)),
        },
        Some(_) => return Err(Refusal::Retry(MALFORMED)),
        None => None,
    };
    // With qop the count is part of the hash and may grow; without, it is not, so the nonce
    // is spent at once (recorded as the highest count).
    let (qop_parts, counted_nc) = match get("qop") {
        Some("auth") => match (nc_text, nc, get("cnonce")) {
            (Some(nc_text), Some(nc), Some(cnonce)) if !cnonce.is_empty() => {
                (Some((nc_text, cnonce, "auth")), nc)
            }
            _ => return Err(Refusal::Retry(MALFORMED)),
        },
        Some(_) => return Err(Refusal::Retry(MALFORMED)),
        None => (None, i64::MAX),
    };
    let Some((_, ha1)) = subject
        .credentials
        .iter()
        .find(|(alg, _)| *alg == algorithm)
    else {
        return Err(Refusal::Retry(WRONG_ALGORITHM));
    };
    let expected = expected_response(algorithm, ha1, nonce, qop_parts, &request.method, uri);
    let matches = ct_eq(&expected, &response.to_ascii_lowercase());
    let bundle = match (&subject.account, matches) {
        (Some(bundle), true) => bundle,
        _ => return Err(Refusal::Retry(UNAUTHORIZED)),
    };
    let not_before = now_ms() - state.settings.digest_nonce_ttl_seconds * 1000;
    let outcome = state
        .store
        .check_digest_nonce(
            bundle.account.id,
            &at_rest(opaque),
            &at_rest(nonce),
            &request.client_ip_string(),
            counted_nc,
            not_before,
        )
        .await
        .map_err(|e| Refusal::Store(AppError::Store(e)))?;
    match outcome {
        NonceCheck::Accepted => Ok(bundle.clone()),
        NonceCheck::Unknown => Err(Refusal::Retry(INVALID_OPAQUE)),
        NonceCheck::Replayed => Err(Refusal::Retry(NONCE_REPLAYED)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_header_forms() {
        let alice = Some(SipIdentity {
            username: "alice".into(),
            domain: "example.test".into(),
        });
        assert_eq!(parse_from("sip:alice@example.test"), alice);
        assert_eq!(
            parse_from("sip:alice@Example.TEST:5060;transport=udp"),
            alice
        );
        assert_eq!(
            parse_from("\"Alice\" <sip:alice@example.test>;tag=1"),
            alice
        );
        assert_eq!(parse_from("<sips:alice@example.test;transport=tls>"), alice);
        assert_eq!(parse_from("sip:al%69ce@example.test"), alice);
        assert_eq!(parse_from("alice@example.test"), None);
        assert_eq!(parse_from("sip:@example.test"), None);
        assert_eq!(parse_from("sip:alice:pw@example.test"), None);
        assert_eq!(parse_from("<sip:alice@example.test"), None);
    }

    #[test]
    fn parses_what_liblinphone_sends() {
        // linphone-digest.md: two spaces after the colon, quoted algorithm, unquoted nc/qop.
        let raw = " Digest realm=\"example.test\", nonce=\"Dt0h\", algorithm=\"SHA-256\", opaque=\"cc79\", \
                   username=\"alice\", response=\"f2da\", cnonce=\"~F16x\", nc=00000001, qop=auth, uri=\"/prov/alice?token=abc\"";
        let p = parse_authorization(raw).unwrap();
        assert_eq!(p["algorithm"], "SHA-256");
        assert_eq!(p["nc"], "00000001");
        assert_eq!(p["qop"], "auth");
        assert_eq!(p["uri"], "/prov/alice?token=abc");
        assert_eq!(p["cnonce"], "~F16x");
        assert!(parse_authorization("Basic YWxpY2U6c2VjcmV0").is_none());
        assert!(parse_authorization("Digest realm=\"x").is_none());
        assert!(parse_authorization("Digest realm=a, realm=b").is_none());
        let esc = parse_authorization(r#"digest username="a\"b",REALM=r"#).unwrap();
        assert_eq!(esc["username"], "a\"b");
        assert_eq!(esc["realm"], "r");
    }

    #[test]
    fn verifies_the_linphone_vector() {
        // The exact exchange recorded in linphone-digest.md.
        let ha1 = "cc0140d97f2b011fee9f86aa26b63fc472268267b652dcea0675e15d9da92468";
        let r = expected_response(
            Algorithm::Sha256,
            ha1,
            "Dt0hRt0ih3AMB_1jSYXCTiOE",
            Some(("00000001", "~F16xrmWgZdUs0Mn", "auth")),
            "GET",
            "/prov/alice?token=abc",
        );
        assert_eq!(
            r,
            "f2dac13df7caa4f0be3f3cd02e84222d00f57a8ab8ddafbbfc62de7d280c2647"
        );
    }

    #[test]
    fn request_target_matching() {
        assert!(same_request_target("/p/me", "/p/me", ""));
        assert!(same_request_target("/p/me?", "/p/me", ""));
        assert!(same_request_target("/p?t=x%2fy", "/p", "t=x%2Fy"));
        assert!(same_request_target("/p?t=x%2Fy", "/p", "t=x%2fy"));
        assert!(same_request_target("http://h:1/p?a=1", "/p", "a=1"));
        assert!(!same_request_target("/p", "/p", "a=1"));
        assert!(!same_request_target("/other", "/p", ""));
        assert!(!same_request_target("/p?t=x/y", "/p", "t=x%2Fy"));
    }

    #[test]
    fn challenge_format_is_flexiapis() {
        assert_eq!(
            challenge_header("r", Algorithm::Md5, "n", "o"),
            "Digest realm=\"r\",qop=\"auth\",algorithm=MD5,nonce=\"n\",opaque=\"o\""
        );
    }
}

/// Property tests of the parsers of untrusted Digest input (`Authorization`, `From`, `uri`).
#[cfg(test)]
mod properties {
    use super::{parse_authorization, parse_from, same_request_target};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Text with the characters that matter to the header grammar, and any others.
    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                3 => proptest::char::range(' ', '~'),
                2 => proptest::sample::select(vec!['"', '\\', ',', '=', ' ', '\t', '%', '<', '>', ';', '@', ':']),
                1 => any::<char>(),
            ],
            0..max,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    /// `\`-escapes `"` and `\` (RFC 7616 §3.4, RFC 9110 §5.6.4 quoted-pair).
    fn quote(value: &str) -> String {
        let mut out = String::from("\"");
        for c in value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any header value is answered without panicking.
        #[test]
        fn authorization_never_panics(raw in text(64), tail in text(64)) {
            let _ = parse_authorization(&raw);
            let _ = parse_authorization(&format!("Digest {raw}"));
            let _ = parse_authorization(&format!("Digest {raw}=\"{tail}"));
        }

        /// Parameters written with quoted values (any characters, escaped) or bare tokens, in
        /// any key case and with loose separators, read back exactly, keys lower-cased.
        #[test]
        fn authorization_round_trips(
            params in proptest::collection::btree_map("[a-z][a-z0-9_-]{0,8}", (text(24), any::<bool>()), 1..8),
            upper in any::<bool>(),
            separator in proptest::sample::select(vec![",", ", ", " , ", ",\t"]),
            token in "[A-Za-z0-9._~+/-]{1,12}",
        ) {
            let mut expected = BTreeMap::new();
            let parts: Vec<String> = params
                .iter()
                .map(|(k, (v, quoted))| {
                    let key = if upper { k.to_ascii_uppercase() } else { k.clone() };
                    if *quoted {
                        expected.insert(k.clone(), v.clone());
                        format!("{key}={}", quote(v))
                    } else {
                        expected.insert(k.clone(), token.clone());
                        format!("{key}={token}")
                    }
                })
                .collect();
            let header = format!("Digest {}", parts.join(separator));
            prop_assert_eq!(parse_authorization(&header), Some(expected), "{}", header);
        }

        /// Another scheme is never read as Digest.
        #[test]
        fn other_schemes_are_refused(scheme in "[A-Za-z]{1,10}", rest in text(32)) {
            prop_assume!(!scheme.eq_ignore_ascii_case("digest"));
            prop_assert_eq!(parse_authorization(&format!("{scheme} {rest}")), None);
        }

        /// `From` parsing is total, and what it accepts is a usable identity.
        #[test]
        fn from_is_total_and_sane(raw in text(48)) {
            for candidate in [raw.clone(), format!("sip:{raw}"), format!("<sip:{raw}>")] {
                if let Some(id) = parse_from(&candidate) {
                    prop_assert!(!id.username.is_empty() && !id.username.contains(['@', ':']));
                    prop_assert!(!id.username.chars().any(char::is_control));
                    prop_assert!(!id.domain.is_empty() && !id.domain.chars().any(|c| c.is_ascii_uppercase()));
                }
            }
        }

        /// A user and host always come back from the URI forms liblinphone sends.
        #[test]
        fn from_reads_generated_identities(user in "[a-z0-9_.+-]{1,16}", host in "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,3}") {
            for form in [format!("sip:{user}@{host}"), format!("\"N\" <sip:{user}@{host}>;tag=x"), format!("sip:{user}@{host}:5060;transport=tls")] {
                let id = parse_from(&form);
                prop_assert_eq!(id.as_ref().map(|i| i.username.as_str()), Some(user.as_str()), "{}", form);
                prop_assert_eq!(id.as_ref().map(|i| i.domain.as_str()), Some(host.as_str()));
            }
        }

        /// Request-target comparison is total and reflexive.
        #[test]
        fn request_target_is_total(uri in text(32), path in "/[a-z/%0-9A-F]{0,16}", query in "[a-z=&%0-9A-F]{0,16}") {
            let _ = same_request_target(&uri, &path, &query);
            let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            prop_assert!(same_request_target(&target, &path, &query));
        }
    }
}

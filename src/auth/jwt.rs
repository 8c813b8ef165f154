//! JWT bearer authentication, per space (reference §4.4; FLEXIAPI-143, 167, 430, 464): a space
//! that names an OpenID Connect provider (`oidc_authentication_configuration`) accepts
//! `Authorization: Bearer <JWT>` signed by that provider, on the user API and on
//! `/provisioning/me`.
//!
//! As FlexiAPI: RS256/384/512 (and ES256 here) over a PEM public key; `exp` is checked; the
//! account is the one the SIP URI claim (`sip_identity` by default) names, else the one with
//! the `email` claim; no account: 403 "The JWT token is not related to someone in the system";
//! any other failure: 401 with `WWW-Authenticate: Bearer authz_server="…",realm="…",
//! error="invalid_token", error_description="…"`. Beyond FlexiAPI: the keys may come from a
//! JWKS URL ([`super::jwks`]); `aud` and `iss` are checked when the space names them; `nbf` is
//! checked; a token without `exp` is refused; the account must belong to the request's space
//! (FlexiAPI looks it up in every space); an e-mail names an account only when exactly one
//! account of the space has it and the token does not say `"email_verified": false`; and
//! Digest and API keys keep working beside the bearer unless the space sets `required`.
//!
//! A token is never logged, only its [`fingerprint`].

use crate::auth::digest::parse_from;
use crate::auth::jwks::{JwksCache, JwksError};
use crate::error::AppError;
use crate::model::{OidcSettings, Space};
use crate::request::RequestInfo;
use crate::secret::fingerprint;
use crate::state::AppState;
use crate::store::AccountBundle;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::str::FromStr;

/// The algorithms a token may be signed with (FlexiAPI: the three RSA ones).
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
];

/// Seconds of clock skew tolerated on `exp` and `nbf` between the provider and provisio.
pub const LEEWAY_SECONDS: u64 = 60;

/// FlexiAPI's 403 for a valid token that names no account.
pub const NOT_RELATED: &str = "The JWT token is not related to someone in the system";

/// The token of an `Authorization: Bearer <token>` header (scheme in any case, RFC 7235
/// §2.1), if the request carries one.
pub fn bearer_token(request: &RequestInfo) -> Option<&str> {
    let value = request.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The `WWW-Authenticate` value of a Bearer 401 (RFC 6750 §3), in FlexiAPI's spelling: the
/// discovery form without `error`, or an `invalid_token` with its description.
pub fn challenge(oidc: &OidcSettings, error_description: Option<&str>) -> String {
    let mut value = format!(
        "Bearer authz_server=\"{}\",realm=\"{}\"",
        oidc.authz_server(),
        oidc.realm
    );
    if let Some(why) = error_description {
        value.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{why}\""
        ));
    }
    value
}

/// The 401 of a request without a token in a space where a token is required: the Bearer
/// challenge alone (RFC 8898 discovery).
pub fn unauthenticated(oidc: &OidcSettings) -> AppError {
    AppError::Challenge {
        message: "Unauthenticated.".to_string(),
        challenges: vec![challenge(oidc, None)],
    }
}

/// The 401 of a token that does not verify.
fn invalid(oidc: &OidcSettings, why: &str) -> AppError {
    AppError::Challenge {
        message: why.to_string(),
        challenges: vec![challenge(oidc, Some(why))],
    }
}

/// Authenticates the bearer `token` in `space` (whose provider is `oidc`): the account with
/// its passwords. 401 with the Bearer challenge for a token that does not verify, 403 for a
/// valid token naming no account of the space, 503 when the provider's keys cannot be had.
pub async fn authenticate(
    state: &AppState,
    space: &Space,
    oidc: &OidcSettings,
    token: &str,
) -> Result<AccountBundle, AppError> {
    let claims = match verify(&state.jwks, oidc, token).await {
        Ok(claims) => claims,
        Err(Refusal::Invalid(why)) => {
            tracing::info!(token_fp = %fingerprint(token), space = %space.domain, reason = %why, "JWT refused");
            return Err(invalid(oidc, &why));
        }
        Err(Refusal::Keys(e)) => {
            tracing::warn!(token_fp = %fingerprint(token), space = %space.domain, error = %e, "JWT not verifiable");
            return Err(AppError::Unavailable(
                "The identity provider's signing keys are unavailable, retry shortly".to_string(),
            ));
        }
    };
    match identify(state, space, oidc, &claims).await? {
        Some(bundle) => Ok(bundle),
        None => {
            tracing::info!(token_fp = %fingerprint(token), space = %space.domain, "JWT names no account of the space");
            Err(AppError::Forbidden(NOT_RELATED.to_string()))
        }
    }
}

/// Why a token was not accepted.
#[derive(Debug)]
enum Refusal {
    /// It does not verify; the description goes into the challenge (no quote in it).
    Invalid(String),
    /// The keys to verify it with cannot be had.
    Keys(JwksError),
}

/// Checks the token's signature and claims; its claims when it verifies.
async fn verify(
    jwks: &JwksCache,
    oidc: &OidcSettings,
    token: &str,
) -> Result<Map<String, Value>, Refusal> {
    let invalid = |why: &str| Refusal::Invalid(why.to_string());
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("Malformed JWT token"))?;
    let alg = header.alg;
    if !ALGORITHMS.contains(&alg) {
        return Err(invalid("Unsupported JWT signature algorithm"));
    }
    let keys: Vec<DecodingKey> = match (&oidc.public_key, &oidc.jwks_url) {
        (Some(pem), _) => {
            vec![pem_key(pem, alg).map_err(|_| invalid("Invalid JWT token signature"))?]
        }
        (None, Some(url)) => jwks
            .keys(url, header.kid.as_deref())
            .await
            .map_err(Refusal::Keys)?
            .iter()
            .filter(|jwk| fits(jwk, alg))
            .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok())
            .collect(),
        (None, None) => Vec::new(),
    };
    if keys.is_empty() {
        return Err(invalid("Unknown JWT signing key"));
    }
    let validation = validation(oidc, alg);
    let mut refusal = invalid("Invalid JWT token signature");
    for key in &keys {
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
            Ok(data) => return Ok(data.claims),
            // Another key of the set (a token without `kid`) may still verify it.
            Err(e) if is_key_mismatch(e.kind()) => {}
            Err(e) => {
                refusal = Refusal::Invalid(describe(e.kind()));
                break;
            }
        }
    }
    Err(refusal)
}

/// What the claims must satisfy: `exp` (required) and `nbf` with [`LEEWAY_SECONDS`], and the
/// space's `aud` and `iss` when it names them (then required too).
fn validation(oidc: &OidcSettings, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECONDS;
    v.validate_nbf = true;
    match &oidc.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".to_string());
        }
        None => v.validate_aud = false,
    }
    if let Some(iss) = &oidc.issuer {
        v.set_issuer(&[iss]);
        v.required_spec_claims.insert("iss".to_string());
    }
    v
}

/// The space's PEM public key as a key for `alg` (RSA for RS*, EC for ES256).
pub fn pem_key(pem: &str, alg: Algorithm) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
    match alg {
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
        _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
    }
}

/// Whether a PEM text is a public key a token can be verified with (RSA, or EC P-256): what
/// the space settings accept.
pub fn is_usable_public_key(pem: &str) -> bool {
    pem_key(pem, Algorithm::RS256).is_ok() || pem_key(pem, Algorithm::ES256).is_ok()
}

/// Whether a JWKS key may verify an `alg` signature: its type fits, and its own `alg`, when it
/// names one, is that one.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let type_fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => {
            matches!(alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
        }
        AlgorithmParameters::EllipticCurve(p) => {
            alg == Algorithm::ES256 && p.curve == EllipticCurve::P256
        }
        _ => false,
    };
    let alg_fits = jwk
        .common
        .key_algorithm
        .is_none_or(|k| Algorithm::from_str(&k.to_string()).is_ok_and(|a| a == alg));
    type_fits && alg_fits
}

/// Failures that only say this key is not the signer's.
fn is_key_mismatch(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
    )
}

/// The `error_description` of a refused token (FlexiAPI's wording where it has one).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "Expired JWT token".to_string(),
        ErrorKind::ImmatureSignature => "JWT token not yet valid".to_string(),
        ErrorKind::InvalidAudience => "Invalid JWT token audience".to_string(),
        ErrorKind::InvalidIssuer => "Invalid JWT token issuer".to_string(),
        ErrorKind::MissingRequiredClaim(claim) => {
            // Only the names of `validation` (exp, aud, iss): nothing from the token.
            format!("Missing JWT claim {}", claim.replace('"', ""))
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            "Unsupported JWT signature algorithm".to_string()
        }
        k if is_key_mismatch(k) => "Invalid JWT token signature".to_string(),
        _ => "Malformed JWT token".to_string(),
    }
}

/// The account of `space` the claims name: by the SIP URI claim, then by `email` (unless the
/// provider says it is not verified). `None` when neither names one.
async fn identify(
    state: &AppState,
    space: &Space,
    oidc: &OidcSettings,
    claims: &Map<String, Value>,
) -> Result<Option<AccountBundle>, AppError> {
    if let Some(uri) = claims
        .get(&oidc.sip_identifier_claim)
        .and_then(Value::as_str)
        && let Some(who) = parse_from(uri)
        && who.domain == space.domain
        && let Some(bundle) = state
            .store
            .account_bundle_by_identity(&who.username, &who.domain)
            .await?
    {
        return Ok(Some(bundle));
    }
    let unverified = claims.get("email_verified") == Some(&Value::Bool(false));
    if let Some(email) = claims.get("email").and_then(Value::as_str)
        && !unverified
        && !email.is_empty()
    {
        return Ok(state
            .store
            .account_bundle_by_email(&space.domain, email)
            .await?);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RouteKind;

    #[test]
    fn bearer_header_forms() {
        let mut r = RequestInfo::synthetic("h", "/provisioning/me", RouteKind::Me);
        assert_eq!(bearer_token(&r), None);
        r.headers
            .insert("authorization".into(), "Bearer abc.def.ghi".into());
        assert_eq!(bearer_token(&r), Some("abc.def.ghi"));
        r.headers
            .insert("authorization".into(), "bearer   xyz ".into());
        assert_eq!(bearer_token(&r), Some("xyz"));
        r.headers.insert("authorization".into(), "Bearer ".into());
        assert_eq!(bearer_token(&r), None);
        r.headers
            .insert("authorization".into(), "Digest username=\"a\"".into());
        assert_eq!(bearer_token(&r), None);
    }

    #[test]
    fn challenge_is_flexiapis() {
        let oidc = OidcSettings {
            server_url: "https://sso.example.com/".into(),
            realm: "phones".into(),
            ..OidcSettings::default()
        };
        assert_eq!(
            challenge(&oidc, None),
            "Bearer authz_server=\"https://sso.example.com/realms/phones\",realm=\"phones\""
        );
        assert_eq!(
            challenge(&oidc, Some("Expired JWT token")),
            "Bearer authz_server=\"https://sso.example.com/realms/phones\",realm=\"phones\", \
             error=\"invalid_token\", error_description=\"Expired JWT token\""
        );
    }

    #[test]
    fn descriptions_never_quote() {
        let kinds = [
            ErrorKind::ExpiredSignature,
            ErrorKind::InvalidSignature,
            ErrorKind::MissingRequiredClaim("a\"b".into()),
            ErrorKind::InvalidToken,
        ];
        for kind in kinds {
            assert!(!describe(&kind).contains('"'));
        }
    }
}

//! Client-certificate authentication on `/provisioning/me` (reference §4.5, FLEXIAPI-440): the
//! authorization half. The TLS listener (or a trusted proxy's header) vouches for the
//! certificate and fills [`RequestInfo::client_certificate`]; this module decides which
//! account, if any, it names.
//!
//! As FlexiAPI: a certificate in a space without `client_certificate_authentication` is a 403
//! "Not a valid authentication method"; the subject must be exactly `CN=sip:user@domain` (an
//! extra RDN fails); the account must be in the request's space, else 403 "The certificate is
//! not linked to any account in the system.". Beyond FlexiAPI: when the subject is not such a
//! CN, a `sip:user@domain` subjectAltName URI names the account instead (certificates from a
//! PKI that puts a person's name in the CN).

use crate::error::AppError;
use crate::model::Space;
use crate::request::{ClientCertificate, RequestInfo};
use crate::state::AppState;
use crate::store::AccountBundle;

/// 403 when the space does not take certificates (FlexiAPI's wording).
pub const NOT_ALLOWED: &str = "Not a valid authentication method";
/// 403 when neither the subject nor a SAN is a SIP URI.
pub const NO_SIP_URI: &str = "The client certificate does not contain a valid CN.";
/// 403 when the URI names no account of the space (FlexiAPI's wording).
pub const NOT_LINKED: &str = "The certificate is not linked to any account in the system.";

/// The account (with its passwords) the request's verified client certificate names, when it
/// carries one: `None` without a certificate (the other methods decide), a 403 when the
/// certificate is refused.
pub async fn authenticate(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
) -> Result<Option<AccountBundle>, AppError> {
    let Some(certificate) = &request.client_certificate else {
        return Ok(None);
    };
    let (username, domain) = decide(space, certificate)?;
    let found = state
        .store
        .account_bundle_by_identity(&username, &domain)
        .await?;
    match found {
        Some(bundle) => Ok(Some(bundle)),
        None => {
            tracing::info!(space = %space.domain, "client certificate names no account of the space");
            Err(AppError::Forbidden(NOT_LINKED.to_string()))
        }
    }
}

/// The `(username, domain)` a certificate names in `space`, or the 403 that refuses it; what
/// does not need the store.
pub fn decide(
    space: &Space,
    certificate: &ClientCertificate,
) -> Result<(String, String), AppError> {
    if !space.client_certificate_authentication {
        return Err(AppError::Forbidden(NOT_ALLOWED.to_string()));
    }
    let named = certificate
        .subject
        .trim()
        .strip_prefix("CN=")
        .and_then(sip_uri)
        .or_else(|| certificate.uris.iter().find_map(|uri| sip_uri(uri)));
    let Some((username, domain)) = named else {
        return Err(AppError::Forbidden(NO_SIP_URI.to_string()));
    };
    if domain != space.domain {
        return Err(AppError::Forbidden(NOT_LINKED.to_string()));
    }
    Ok((username, domain))
}

/// `sip:user@domain` exactly (scheme in any case, domain lower-cased): no display name, no
/// parameters, no port, no escapes, nothing after the domain — so `CN=sip:a@b,O=x` is refused.
pub fn sip_uri(text: &str) -> Option<(String, String)> {
    let scheme = text.get(..4)?;
    if !scheme.eq_ignore_ascii_case("sip:") {
        return None;
    }
    let (user, domain) = text[4..].split_once('@')?;
    let user_ok = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c));
    let domain_ok = crate::api::validate::is_valid_domain(domain);
    (user_ok && domain_ok).then(|| (user.to_string(), domain.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(allowed: bool) -> Space {
        let mut s = Space::new("example.com", "prov.example.com");
        s.client_certificate_authentication = allowed;
        s
    }

    fn cert(subject: &str, uris: &[&str]) -> ClientCertificate {
        ClientCertificate {
            subject: subject.to_string(),
            uris: uris.iter().map(|u| u.to_string()).collect(),
        }
    }

    fn refused(r: Result<(String, String), AppError>) -> String {
        match r {
            Err(AppError::Forbidden(m)) => m,
            other => panic!("expected a 403, got {other:?}"),
        }
    }

    #[test]
    fn a_sip_cn_names_the_account() {
        let named = decide(&space(true), &cert("CN=sip:alice@example.com", &[])).unwrap();
        assert_eq!(named, ("alice".to_string(), "example.com".to_string()));
        let named = decide(&space(true), &cert("CN=SIP:bob@Example.COM", &[])).unwrap();
        assert_eq!(named, ("bob".to_string(), "example.com".to_string()));
    }

    #[test]
    fn the_space_must_allow_certificates() {
        let m = refused(decide(
            &space(false),
            &cert("CN=sip:alice@example.com", &[]),
        ));
        assert_eq!(m, NOT_ALLOWED);
    }

    #[test]
    fn extra_rdns_and_other_forms_fail() {
        for subject in [
            "CN=sip:alice@example.com,O=Example",
            "O=Example,CN=sip:alice@example.com",
            "CN=sip:alice@example.com+UID=1",
            "CN=alice@example.com",
            "CN=<sip:alice@example.com>",
            "CN=sip:alice@example.com;transport=tls",
            "CN=sip:alice@example.com:5061",
            "CN=sips:alice@example.com",
            "CN=sip:@example.com",
            "CN=Alice",
            "",
        ] {
            let m = refused(decide(&space(true), &cert(subject, &[])));
            assert_eq!(m, NO_SIP_URI, "{subject}");
        }
    }

    #[test]
    fn a_san_uri_names_the_account_when_the_cn_does_not() {
        let c = cert(
            "CN=Alice Liddell,O=Example",
            &["https://example.com/alice", "sip:alice@example.com"],
        );
        assert_eq!(
            decide(&space(true), &c).unwrap(),
            ("alice".to_string(), "example.com".to_string())
        );
        // The CN wins when it is a SIP URI.
        let c = cert("CN=sip:bob@example.com", &["sip:alice@example.com"]);
        assert_eq!(decide(&space(true), &c).unwrap().0, "bob");
        let c = cert("CN=Alice", &["sip:alice@example.com;x=y"]);
        assert_eq!(refused(decide(&space(true), &c)), NO_SIP_URI);
    }

    #[test]
    fn another_space_is_not_linked() {
        let c = cert("CN=sip:alice@other.example", &[]);
        assert_eq!(refused(decide(&space(true), &c)), NOT_LINKED);
    }
}

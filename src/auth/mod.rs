//! Authentication of accounts on `/provisioning/me` and the API: a client certificate
//! ([`certificate`], `/provisioning/me` only), a JWT bearer ([`jwt`]), HTTP Digest ([`digest`]),
//! the `x-api-key` header. Transport-neutral: reads a [`RequestInfo`], returns an account or an
//! [`AppError`] (a 401 that may carry Digest or Bearer challenges, a 403).
//!
//! Order, as FlexiAPI's middlewares (reference §4.1–4.5): on `/provisioning/me` a verified
//! client certificate decides alone; then, in a space with an OIDC provider, a bearer token
//! decides alone (and is the only way in when the space sets `oidc.required`, as in FlexiAPI);
//! then an `x-api-key` header decides alone (a key needs no `From`); otherwise a `From` header
//! starts Digest; with none of them, a 401 without challenge (there is no account to challenge
//! for), carrying the Bearer challenge when the space has a provider. The admin API takes API
//! keys only ([`authenticate_api_key`]), as FlexiAPI since FLEXIAPI-487, but answers a missing
//! key with a JSON 401 instead of a redirect to a login page.

pub mod certificate;
pub mod digest;
pub mod jwks;
pub mod jwt;
pub mod usage;

use crate::error::AppError;
use crate::model::{Account, Space, now_ms};
use crate::request::RequestInfo;
use crate::secret::{fingerprint, hash_secret};
use crate::state::AppState;
use crate::store::AccountBundle;

/// Header carrying an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Body of the 401 for a request that carries neither a key nor a `From` (FlexiAPI's wording).
pub const FROM_REQUIRED: &str = "From header is required or invalid token";

/// Authenticates the request's account by bearer token, API key or Digest (the user API).
/// Missing credentials: 401 ("From header is required or invalid token"); a bad token: 401
/// with the Bearer challenge; a bad key: 401 ("Invalid API Key"); Digest: 401 with a challenge
/// until it succeeds; a blocked account: 403 ("Account blocked"). `space` is the request's
/// space (its OIDC provider; the decoy challenge of an unknown identity is drawn from it).
pub async fn authenticate(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
) -> Result<Account, AppError> {
    Ok(authenticate_bundle(state, space, request).await?.account)
}

/// [`authenticate`], with the account's passwords, read in the same round trip.
pub async fn authenticate_bundle(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
) -> Result<AccountBundle, AppError> {
    let oidc = space.oidc.as_ref();
    let bundle = match (oidc, jwt::bearer_token(request)) {
        (Some(oidc), Some(token)) => jwt::authenticate(state, space, oidc, token).await?,
        (Some(oidc), None) if oidc.required => return Err(jwt::unauthenticated(oidc)),
        _ if request.header(API_KEY_HEADER).is_some() => api_key_bundle(state, request).await?,
        _ => match request.header("from") {
            Some(from) => digest::authenticate(state, space, request, from).await?,
            None => {
                return Err(match oidc {
                    // Tell the client a bearer token would do (RFC 6750 §3).
                    Some(oidc) => AppError::Challenge {
                        message: FROM_REQUIRED.to_string(),
                        challenges: vec![jwt::challenge(oidc, None)],
                    },
                    None => AppError::Unauthorized(FROM_REQUIRED.to_string()),
                });
            }
        },
    };
    refuse_blocked(&bundle.account)?;
    Ok(bundle)
}

/// Authenticates the account of `/provisioning/me`, with its passwords: a verified client
/// certificate first ([`certificate`]: 403 when the space does not take certificates or the
/// certificate names no account of the space), then as [`authenticate_bundle`].
pub async fn authenticate_provisioning(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
) -> Result<AccountBundle, AppError> {
    if let Some(bundle) = certificate::authenticate(state, space, request).await? {
        refuse_blocked(&bundle.account)?;
        return Ok(bundle);
    }
    authenticate_bundle(state, space, request).await
}

/// Authenticates by API key only (the admin API). Missing key: 401 "Unauthenticated."; bad,
/// expired or bound to another IP: 401 "Invalid API Key"; blocked owner: 403.
pub async fn authenticate_api_key(
    state: &AppState,
    request: &RequestInfo,
) -> Result<Account, AppError> {
    if request.header(API_KEY_HEADER).is_none() {
        return Err(AppError::Unauthorized("Unauthenticated.".to_string()));
    }
    let bundle = api_key_bundle(state, request).await?;
    refuse_blocked(&bundle.account)?;
    Ok(bundle.account)
}

/// Checks the `x-api-key` header: the key must exist, match its IP binding and not have expired
/// (one read, no write: the use is recorded in memory and written later, see [`usage`]).
async fn api_key_bundle(
    state: &AppState,
    request: &RequestInfo,
) -> Result<AccountBundle, AppError> {
    let key = request.header(API_KEY_HEADER).unwrap_or_default();
    let ip = request.client_ip.map(|ip| ip.to_string());
    let found = state
        .key_uses
        .authenticate(
            state.store.as_ref(),
            &hash_secret(key),
            ip.as_deref(),
            now_ms(),
            state.settings.api_key_ttl_minutes,
        )
        .await?;
    let Some((_, bundle)) = found else {
        tracing::info!(key_fp = %fingerprint(key), "API key refused");
        return Err(AppError::Unauthorized("Invalid API Key".to_string()));
    };
    Ok(bundle)
}

/// Blocked accounts authenticate but may do nothing (FlexiAPI's `auth.check_blocked`).
fn refuse_blocked(account: &Account) -> Result<(), AppError> {
    if account.blocked {
        return Err(AppError::Forbidden("Account blocked".to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The decision of `/provisioning/me` over a request carrying a verified client certificate
    //! (what the TLS listener or a trusted proxy puts in [`RequestInfo::client_certificate`]),
    //! against a real SQLite store.
    use super::*;
    use crate::config::Settings;
    use crate::request::{ClientCertificate, RouteKind};
    use crate::secret::hash_password;
    use crate::store::{AccountUpdate, NewAccount};

    /// A state over a fresh SQLite file, with spaces `a.example` and `c.example` taking
    /// certificates and `b.example` not, and one account in each.
    async fn state(dir: &tempfile::TempDir) -> AppState {
        let mut settings = Settings {
            database: format!("sqlite://{}", dir.path().join("t.sqlite3").display()),
            data_dir: dir.path().join("data"),
            ..Settings::default()
        };
        settings.hooks.dir = dir.path().join("hooks");
        settings.hooks.watch = false;
        std::fs::create_dir_all(&settings.hooks.dir).unwrap();
        let state = crate::app::build_state(settings, false).await.unwrap();
        for (domain, allowed, user) in [
            ("a.example", true, "alice"),
            ("b.example", false, "bob"),
            ("c.example", true, "carol"),
        ] {
            let mut space = Space::new(domain, domain);
            space.client_certificate_authentication = allowed;
            state.store.create_space(&space).await.unwrap();
            let new = NewAccount {
                username: user.to_string(),
                domain: domain.to_string(),
                passwords: vec![hash_password(
                    space.password_algorithm,
                    user,
                    domain,
                    "password",
                )],
                ..Default::default()
            };
            state.store.create_account(&new, now_ms()).await.unwrap();
        }
        state
    }

    /// A `/provisioning/me` request with this certificate (and these headers).
    fn request(certificate: Option<(&str, &[&str])>, headers: &[(&str, &str)]) -> RequestInfo {
        let mut r = RequestInfo::synthetic("a.example", "/provisioning/me", RouteKind::Me);
        r.client_certificate = certificate.map(|(subject, uris)| ClientCertificate {
            subject: subject.to_string(),
            uris: uris.iter().map(|u| u.to_string()).collect(),
        });
        for (k, v) in headers {
            r.headers.insert(k.to_string(), v.to_string());
        }
        r
    }

    /// The space `domain` as stored.
    async fn space(state: &AppState, domain: &str) -> Space {
        state.store.space_by_domain(domain).await.unwrap().unwrap()
    }

    /// The status and message of a refusal.
    fn refusal(r: Result<AccountBundle, AppError>) -> (u16, String) {
        match r {
            Ok(b) => panic!("expected a refusal, got {}", b.account.sip_uri()),
            Err(e) => (e.status(), e.public_message()),
        }
    }

    #[tokio::test]
    async fn a_certificate_names_its_account_in_the_request_space() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir).await;
        let a = space(&state, "a.example").await;

        let subject = request(Some(("CN=sip:alice@a.example", &[])), &[]);
        let bundle = authenticate_provisioning(&state, &a, &subject)
            .await
            .unwrap();
        assert_eq!(bundle.account.sip_uri(), "sip:alice@a.example");
        assert_eq!(
            bundle.passwords.len(),
            1,
            "the document's auth_info comes along"
        );

        let san = request(
            Some(("CN=Alice Liddell,O=Example", &["sip:alice@a.example"])),
            &[],
        );
        let bundle = authenticate_provisioning(&state, &a, &san).await.unwrap();
        assert_eq!(bundle.account.username, "alice");

        // The certificate decides alone: a bad API key or a From beside it changes nothing.
        let with_key = request(
            Some(("CN=sip:alice@a.example", &[])),
            &[("x-api-key", "not-a-key"), ("from", "sip:carol@c.example")],
        );
        let bundle = authenticate_provisioning(&state, &a, &with_key)
            .await
            .unwrap();
        assert_eq!(bundle.account.username, "alice");
    }

    #[tokio::test]
    async fn refused_certificates_get_flexiapis_403s() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir).await;
        let a = space(&state, "a.example").await;
        let b = space(&state, "b.example").await;
        let cases: [(&Space, &str, &[&str], &str); 6] = [
            // Another space's account, though that space takes certificates too.
            (&a, "CN=sip:carol@c.example", &[], certificate::NOT_LINKED),
            (&a, "CN=sip:nobody@a.example", &[], certificate::NOT_LINKED),
            // An extra RDN beside the CN, and no SAN to fall back on.
            (
                &a,
                "CN=sip:alice@a.example,O=Example",
                &[],
                certificate::NO_SIP_URI,
            ),
            (
                &a,
                "CN=Alice",
                &["https://a.example/alice"],
                certificate::NO_SIP_URI,
            ),
            // A space that does not take certificates, whatever the certificate says.
            (&b, "CN=sip:bob@b.example", &[], certificate::NOT_ALLOWED),
            (&b, "CN=sip:alice@a.example", &[], certificate::NOT_ALLOWED),
        ];
        for (space, subject, uris, message) in cases {
            let r = authenticate_provisioning(&state, space, &request(Some((subject, uris)), &[]))
                .await;
            assert_eq!(refusal(r), (403, message.to_string()), "{subject}");
        }
        // A space without certificate authentication refuses the certificate even when the
        // request also carries a working credential (FlexiAPI's order: the certificate first).
        let bob = state
            .store
            .account_by_identity("bob", "b.example")
            .await
            .unwrap()
            .unwrap();
        let key = "a-user-key-for-bob-0123456789abcdef";
        state
            .store
            .create_api_key(
                &crate::store::NewApiKey {
                    account_id: bob.id,
                    key_hash: crate::secret::hash_secret(key),
                    name: None,
                    ip: None,
                    expires_after_minutes: None,
                },
                now_ms(),
            )
            .await
            .unwrap();
        let with_key = request(Some(("CN=sip:bob@b.example", &[])), &[("x-api-key", key)]);
        assert_eq!(
            refusal(authenticate_provisioning(&state, &b, &with_key).await),
            (403, certificate::NOT_ALLOWED.to_string())
        );
        let key_only = request(None, &[("x-api-key", key)]);
        let bundle = authenticate_provisioning(&state, &b, &key_only)
            .await
            .unwrap();
        assert_eq!(
            bundle.account.id, bob.id,
            "without a certificate the key decides"
        );

        // A blocked account's certificate authenticates but gets nothing.
        let alice = state
            .store
            .account_by_identity("alice", "a.example")
            .await
            .unwrap()
            .unwrap();
        let block = AccountUpdate {
            blocked: Some(true),
            ..Default::default()
        };
        state
            .store
            .update_account(alice.id, &block, now_ms())
            .await
            .unwrap();
        let r = authenticate_provisioning(
            &state,
            &a,
            &request(Some(("CN=sip:alice@a.example", &[])), &[]),
        )
        .await;
        assert_eq!(refusal(r), (403, "Account blocked".to_string()));
    }

    #[tokio::test]
    async fn the_user_api_does_not_take_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir).await;
        let a = space(&state, "a.example").await;
        let r = authenticate_bundle(
            &state,
            &a,
            &request(Some(("CN=sip:alice@a.example", &[])), &[]),
        )
        .await;
        assert_eq!(refusal(r), (401, FROM_REQUIRED.to_string()));
        // Nor does /provisioning/me without one: the other methods decide.
        let r = authenticate_provisioning(&state, &a, &request(None, &[])).await;
        assert_eq!(refusal(r), (401, FROM_REQUIRED.to_string()));
    }
}

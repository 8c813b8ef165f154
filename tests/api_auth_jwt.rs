//! JWT bearer authentication per space (FlexiAPI's AccountJWTAuthenticationTest, and beyond):
//! the test makes its own RSA and EC P-256 keys, serves their JWKS on 127.0.0.1, signs tokens,
//! and a real server on both stores answers `/provisioning/me` and the user API: a valid token
//! gets the account's document; an expired one, a wrong audience or issuer, and a key the
//! provider never published get 401 with the Bearer challenge; a token naming no account of
//! the space gets 403; Digest and API keys keep working unless the space requires a token.
//! The JWKS is fetched again for a new `kid` (key rotation), at most once per
//! `oidc_jwks_min_refresh_seconds`. Spaces take their provider through the API and the CLI.

mod api_support;
mod common;

use api_support::*;
use common::server::{TestApp, independent_ha1};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use provisio::model::{Algorithm as HashAlgorithm, OidcSettings};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const HOST: &str = "sip.example.com";
const OTHER: &str = "other.example.com";
const SERVER_URL: &str = "https://sso.example.test/";
const REALM: &str = "phones";
const AUDIENCE: &str = "provisio";
const ISSUER: &str = "https://sso.example.test/realms/phones";
/// The discovery challenge of the spaces below (FlexiAPI's spelling).
const CHALLENGE: &str =
    "Bearer authz_server=\"https://sso.example.test/realms/phones\",realm=\"phones\"";

// ---- keys and tokens ------------------------------------------------------------------------

/// A signing key the test made, as the provider would hold it.
#[derive(Clone)]
struct SigningKey {
    /// Its `kid`.
    kid: String,
    /// The algorithm tokens are signed with.
    alg: Algorithm,
    /// The private half.
    encoding: EncodingKey,
    /// The public half as a JWK (with `kid`, and with `alg` unless `bare`).
    jwk: Jwk,
    /// The public half as PEM (SubjectPublicKeyInfo).
    public_pem: String,
}

/// A fresh 2048-bit RSA key.
fn rsa_key(kid: &str, alg: Algorithm) -> SigningKey {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use rsa::{Generate, PrivateKey};
    let private = PrivateKey::generate();
    let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    SigningKey {
        kid: kid.to_string(),
        alg,
        encoding,
        jwk,
        public_pem,
    }
}

/// A fresh EC P-256 key (made by rcgen).
fn ec_key(kid: &str) -> SigningKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    SigningKey {
        kid: kid.to_string(),
        alg: Algorithm::ES256,
        encoding,
        jwk,
        public_pem: pair.public_key_pem(),
    }
}

/// Now, in seconds.
fn now() -> i64 {
    provisio::model::now_ms() / 1000
}

/// Claims valid for an hour, with the spaces' audience and issuer, naming `sip` (when given).
fn claims(sip: Option<&str>) -> Value {
    let mut c = json!({
        "exp": now() + 3600,
        "iat": now(),
        "aud": AUDIENCE,
        "iss": ISSUER,
        "sub": "f7c1e0a2",
    });
    if let Some(sip) = sip {
        c["sip_identity"] = json!(sip);
    }
    c
}

/// A token signed by `key` (its `kid` in the header, unless `kid` says otherwise).
fn sign(key: &SigningKey, claims: &Value) -> String {
    sign_as(key, Some(&key.kid), claims)
}

/// A token signed by `key` with the header's `kid` set to `kid`.
fn sign_as(key: &SigningKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

// ---- the provider's JWKS endpoint -----------------------------------------------------------

/// A JWKS served on 127.0.0.1 by the test: the keys it publishes can change, and it counts
/// the fetches.
struct Jwks {
    url: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Jwks {
    /// Serves `keys` (any path answers with the set).
    async fn serve(keys: Vec<Jwk>) -> Jwks {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/realms/phones/protocol/openid-connect/certs",
            listener.local_addr().unwrap()
        );
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let set = JwkSet {
                    keys: served.lock().unwrap().clone(),
                };
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0_u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = serde_json::to_string(&set).unwrap();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Jwks {
            url,
            keys,
            fetches,
            task,
        }
    }

    /// Publishes another key (the provider rotates).
    fn publish(&self, key: &SigningKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    /// How many times the set was fetched.
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The spaces' provider settings, with the given key source.
fn oidc(public_key: Option<String>, jwks_url: Option<String>) -> OidcSettings {
    OidcSettings {
        server_url: SERVER_URL.to_string(),
        realm: REALM.to_string(),
        public_key,
        jwks_url,
        audience: Some(AUDIENCE.to_string()),
        issuer: Some(ISSUER.to_string()),
        ..OidcSettings::default()
    }
}

// ---- requests -------------------------------------------------------------------------------

/// `GET /provisioning/me` with a bearer token.
fn me_with(app: &TestApp, host: &str, token: &str) -> reqwest::RequestBuilder {
    app.provision(host, "/provisioning/me")
        .header("authorization", format!("Bearer {token}"))
}

/// Status, the `WWW-Authenticate` values and the body of a response.
async fn answer(r: reqwest::RequestBuilder) -> (u16, Vec<String>, String) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let challenges = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    (status, challenges, r.text().await.unwrap())
}

/// The Bearer challenge of a refused token, as FlexiAPI spells it.
fn invalid(why: &str) -> String {
    format!("{CHALLENGE}, error=\"invalid_token\", error_description=\"{why}\"")
}

/// The `ha1` of the document's first `auth_info`.
fn document_ha1(xml: &str) -> String {
    let doc = roxmltree::Document::parse(xml).unwrap();
    doc.descendants()
        .find(|n| n.has_tag_name("entry") && n.attribute("name") == Some("ha1"))
        .and_then(|n| n.text())
        .unwrap_or_default()
        .to_string()
}

/// The rate limit is off: these tests make many refused requests from one address.
fn no_rate_limit(s: &mut provisio::config::Settings) {
    s.rate_limit.failures_per_minute = 0;
    s.oidc_jwks_min_refresh_seconds = 0;
}

both_backends!(
    jwks_tokens_provision_and_are_refused_with_the_bearer_challenge,
    settings = no_rate_limit,
    |app: TestApp| async move {
        let rs256 = rsa_key("rsa-1", Algorithm::RS256);
        let es256 = ec_key("ec-1");
        // A key published without `alg` verifies any RSA algorithm (RS384 here).
        let mut rs384 = rsa_key("rsa-2", Algorithm::RS384);
        rs384.jwk.common.key_algorithm = None;
        let jwks = Jwks::serve(vec![
            rs256.jwk.clone(),
            es256.jwk.clone(),
            rs384.jwk.clone(),
        ])
        .await;
        let space = app
            .space(HOST, |s| s.oidc = Some(oidc(None, Some(jwks.url.clone()))))
            .await;
        let other = app.space(OTHER, |_| {}).await;
        let alice = app.account(&space, "alice", "alice-password").await;
        let bob = app
            .account_with(&space, "bob", "bob-password", |a| {
                a.email = Some("Bob@Mail.example".into())
            })
            .await;
        app.account(&other, "carol", "carol-password").await;
        assert_eq!(jwks.fetches(), 0, "nothing fetched before a token needs it");

        // A valid token: the account's document, with its HA1 (FlexiAPI's testBaseProvisioning).
        let (status, _, xml) = answer(me_with(
            &app,
            HOST,
            &sign(&rs256, &claims(Some("sip:alice@sip.example.com"))),
        ))
        .await;
        assert_eq!(status, 200, "{xml}");
        assert_eq!(
            document_ha1(&xml),
            independent_ha1(HashAlgorithm::Sha256, "alice", HOST, "alice-password")
        );
        assert!(xml.contains("sip:alice@sip.example.com"));
        assert_eq!(jwks.fetches(), 1);
        // The `<…>` form with parameters names the account too.
        let (status, _, _) = answer(me_with(
            &app,
            HOST,
            &sign(
                &rs256,
                &claims(Some("<sip:alice@sip.example.com;transport=tls>")),
            ),
        ))
        .await;
        assert_eq!(status, 200);

        // ES256, naming the account by e-mail (no SIP claim; case ignored).
        let mut by_mail = claims(None);
        by_mail["email"] = json!("bob@mail.EXAMPLE");
        let (status, _, xml) = answer(me_with(&app, HOST, &sign(&es256, &by_mail))).await;
        assert_eq!(status, 200, "{xml}");
        assert!(xml.contains("sip:bob@sip.example.com"));
        // … unless the provider says the e-mail is not verified.
        by_mail["email_verified"] = json!(false);
        let (status, _, body) = answer(me_with(&app, HOST, &sign(&es256, &by_mail))).await;
        assert_eq!(status, 403, "{body}");

        // RS384 with the key published without `alg`; a token without `kid` tries every key.
        let (status, _, _) = answer(me_with(
            &app,
            HOST,
            &sign(&rs384, &claims(Some("sip:alice@sip.example.com"))),
        ))
        .await;
        assert_eq!(status, 200);
        let (status, _, _) = answer(me_with(
            &app,
            HOST,
            &sign_as(&rs256, None, &claims(Some("sip:alice@sip.example.com"))),
        ))
        .await;
        assert_eq!(status, 200);

        // The user API takes the token too.
        let (status, body) = status_json(
            call(&app, Method::GET, HOST, "/api/accounts/me", None).header(
                "authorization",
                format!(
                    "Bearer {}",
                    sign(&es256, &claims(Some("sip:bob@sip.example.com")))
                ),
            ),
        )
        .await;
        assert_eq!((status, body["id"].as_i64()), (200, Some(bob.id)), "{body}");

        // Refusals: 401 with the challenge naming why.
        let alice_sip = Some("sip:alice@sip.example.com");
        let mut expired = claims(alice_sip);
        expired["exp"] = json!(now() - 3600);
        let mut wrong_aud = claims(alice_sip);
        wrong_aud["aud"] = json!("another-client");
        let mut wrong_iss = claims(alice_sip);
        wrong_iss["iss"] = json!("https://evil.example/realms/phones");
        let mut no_aud = claims(alice_sip);
        no_aud.as_object_mut().unwrap().remove("aud");
        let mut not_yet = claims(alice_sip);
        not_yet["nbf"] = json!(now() + 3600);
        let rogue = rsa_key("rogue", Algorithm::RS256);
        let cases = [
            (sign(&rs256, &expired), "Expired JWT token"),
            (sign(&rs256, &wrong_aud), "Invalid JWT token audience"),
            (sign(&rs256, &wrong_iss), "Invalid JWT token issuer"),
            (sign(&rs256, &no_aud), "Missing JWT claim aud"),
            (sign(&rs256, &not_yet), "JWT token not yet valid"),
            // A key the provider never published, under its own kid or under a known one.
            (sign(&rogue, &claims(alice_sip)), "Unknown JWT signing key"),
            (
                sign_as(&rogue, Some("rsa-1"), &claims(alice_sip)),
                "Invalid JWT token signature",
            ),
            ("not.a.jwt".to_string(), "Malformed JWT token"),
        ];
        for (token, why) in cases {
            let (status, challenges, body) = answer(me_with(&app, HOST, &token)).await;
            assert_eq!(status, 401, "{why}: {body}");
            assert_eq!(challenges, [invalid(why)], "{why}");
            assert!(!body.contains(&token), "the token is not echoed");
        }
        // HS256 signed with the public key (algorithm confusion) is refused outright.
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(alice_sip),
            &EncodingKey::from_secret(rs256.public_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let (status, challenges, _) = answer(me_with(&app, HOST, &confused)).await;
        assert_eq!(status, 401);
        assert_eq!(challenges, [invalid("Unsupported JWT signature algorithm")]);

        // Valid tokens naming no account of the space: 403 (FlexiAPI's message).
        for sip in [
            "sip:nobody@sip.example.com",
            "sip:carol@other.example.com",
            "not a sip uri",
        ] {
            let (status, challenges, body) =
                answer(me_with(&app, HOST, &sign(&rs256, &claims(Some(sip))))).await;
            assert_eq!(status, 403, "{sip}: {body}");
            assert!(challenges.is_empty());
            assert_eq!(
                serde_json::from_str::<Value>(&body).unwrap()["message"],
                "The JWT token is not related to someone in the system"
            );
        }

        // Key rotation: a new kid is fetched (the interval is 0 in this test).
        let before = jwks.fetches();
        let rotated = rsa_key("rsa-3", Algorithm::RS512);
        jwks.publish(&rotated);
        let (status, _, _) = answer(me_with(&app, HOST, &sign(&rotated, &claims(alice_sip)))).await;
        assert_eq!(status, 200);
        assert!(jwks.fetches() > before, "the new kid made a fetch");

        // Not required: Digest and API keys still work; without any credential, the 401
        // carries the Bearer challenge.
        let key = user_key(&app, &alice, None).await;
        let r = app
            .provision(HOST, "/provisioning/me")
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = app
            .provision(HOST, "/provisioning/me")
            .header("from", "sip:alice@sip.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let digest = api_support::challenges(&r);
        assert_eq!(digest.len(), 1, "a Digest challenge");
        let answer_header = Answer {
            challenge: &digest[0],
            user: "alice",
            ha1: &ha1(HashAlgorithm::Sha256, "alice", HOST, "alice-password"),
            alg: HashAlgorithm::Sha256,
            method: "GET",
            uri: "/provisioning/me",
            nc: Some(1),
        }
        .header();
        let r = app
            .provision(HOST, "/provisioning/me")
            .header("from", "sip:alice@sip.example.com")
            .header("authorization", answer_header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "Digest still works");
        let (status, challenges, _) = answer(app.provision(HOST, "/provisioning/me")).await;
        assert_eq!((status, challenges), (401, vec![CHALLENGE.to_string()]));

        // Required: a bearer token is the only way in (FlexiAPI's behaviour).
        let mut required = space.clone();
        if let Some(o) = required.oidc.as_mut() {
            o.required = true;
        }
        app.state.store.update_space(&required).await.unwrap();
        app.spaces_written().await;
        for request in [
            app.provision(HOST, "/provisioning/me")
                .header("x-api-key", &key),
            app.provision(HOST, "/provisioning/me")
                .header("from", "sip:alice@sip.example.com"),
            app.provision(HOST, "/provisioning/me"),
            call(&app, Method::GET, HOST, "/api/accounts/me", Some(&key)),
        ] {
            let (status, challenges, _) = answer(request).await;
            assert_eq!((status, challenges), (401, vec![CHALLENGE.to_string()]));
        }
        let (status, _, _) = answer(me_with(&app, HOST, &sign(&rs256, &claims(alice_sip)))).await;
        assert_eq!(status, 200);

        // A blocked account authenticates but gets nothing.
        let blocked = provisio::store::AccountUpdate {
            blocked: Some(true),
            ..Default::default()
        };
        app.state
            .store
            .update_account(alice.id, &blocked, provisio::model::now_ms())
            .await
            .unwrap();
        let (status, _, body) =
            answer(me_with(&app, HOST, &sign(&rs256, &claims(alice_sip)))).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("Account blocked"));

        // A space without a provider ignores bearer tokens (the other methods decide).
        let (status, challenges, _) = answer(me_with(
            &app,
            OTHER,
            &sign(&rs256, &claims(Some("sip:carol@other.example.com"))),
        ))
        .await;
        assert_eq!(status, 401);
        assert!(challenges.is_empty());
    }
);

both_backends!(
    a_pem_public_key_verifies_rsa_and_ec_tokens,
    settings = no_rate_limit,
    |app: TestApp| async move {
        let rsa = rsa_key("ignored", Algorithm::RS512);
        let ec = ec_key("ignored");
        let space = app
            .space(HOST, |s| {
                s.oidc = Some(oidc(Some(rsa.public_pem.clone()), None))
            })
            .await;
        let other = app
            .space(OTHER, |s| {
                s.oidc = Some(oidc(Some(ec.public_pem.clone()), None))
            })
            .await;
        app.account(&space, "alice", "alice-password").await;
        app.account(&other, "carol", "carol-password").await;
        let alice = claims(Some("sip:alice@sip.example.com"));
        let carol = claims(Some("sip:carol@other.example.com"));

        let (status, _, _) = answer(me_with(&app, HOST, &sign(&rsa, &alice))).await;
        assert_eq!(status, 200);
        let mut rs256 = rsa.clone();
        rs256.alg = Algorithm::RS256;
        let (status, _, _) = answer(me_with(&app, HOST, &sign(&rs256, &alice))).await;
        assert_eq!(status, 200);
        // The EC key signs for the other space only.
        let (status, _, _) = answer(me_with(&app, OTHER, &sign(&ec, &carol))).await;
        assert_eq!(status, 200);
        let (status, challenges, _) = answer(me_with(&app, HOST, &sign(&ec, &alice))).await;
        assert_eq!(status, 401);
        assert_eq!(challenges, [invalid("Invalid JWT token signature")]);
        // A token of one space's account does not open another space.
        let (status, _, _) = answer(me_with(&app, HOST, &sign(&rsa, &carol))).await;
        assert_eq!(status, 403);
    }
);

/// The JWKS is fetched at most once per `oidc_jwks_min_refresh_seconds`: tokens naming unknown
/// `kid`s (made up, or a rotation within the interval) cost no fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwks_fetches_are_rate_limited() {
    let app = TestApp::start_with(common::server::Backend::Sqlite, |s| {
        s.rate_limit.failures_per_minute = 0;
        s.oidc_jwks_min_refresh_seconds = 3600;
    })
    .await
    .unwrap();
    let key = rsa_key("rsa-1", Algorithm::RS256);
    let jwks = Jwks::serve(vec![key.jwk.clone()]).await;
    let space = app
        .space(HOST, |s| s.oidc = Some(oidc(None, Some(jwks.url.clone()))))
        .await;
    app.account(&space, "alice", "alice-password").await;
    let alice = claims(Some("sip:alice@sip.example.com"));

    let (status, _, _) = answer(me_with(&app, HOST, &sign(&key, &alice))).await;
    assert_eq!(status, 200);
    assert_eq!(jwks.fetches(), 1);
    for n in 0..5 {
        let token = sign_as(&key, Some(&format!("made-up-{n}")), &alice);
        let (status, challenges, _) = answer(me_with(&app, HOST, &token)).await;
        assert_eq!(status, 401);
        assert_eq!(challenges, [invalid("Unknown JWT signing key")]);
    }
    let rotated = rsa_key("rsa-2", Algorithm::RS256);
    jwks.publish(&rotated);
    let (status, _, _) = answer(me_with(&app, HOST, &sign(&rotated, &alice))).await;
    assert_eq!(
        status, 401,
        "within the interval, the new key is not fetched yet"
    );
    assert_eq!(jwks.fetches(), 1, "one fetch in all");
    let (status, _, _) = answer(me_with(&app, HOST, &sign(&key, &alice))).await;
    assert_eq!(status, 200, "the held keys keep working");
    app.stop().await;
}

/// A provider whose JWKS cannot be fetched: 503 (retry), not a 401 blaming the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_jwks_is_a_503() {
    let app = TestApp::start(common::server::Backend::Sqlite)
        .await
        .unwrap();
    // A port nothing listens on: bound, then released.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", closed.local_addr().unwrap());
    drop(closed);
    let space = app
        .space(HOST, |s| s.oidc = Some(oidc(None, Some(url))))
        .await;
    app.account(&space, "alice", "alice-password").await;
    let key = rsa_key("rsa-1", Algorithm::RS256);
    let r = me_with(
        &app,
        HOST,
        &sign(&key, &claims(Some("sip:alice@sip.example.com"))),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    app.stop().await;
}

both_backends!(spaces_api_takes_the_provider, |app: TestApp| async move {
    let space = app.space(HOST, |s| s.super_space = true).await;
    let (_, key) = admin(&app, &space, "root").await;
    let rsa = rsa_key("k", Algorithm::RS256);
    let put = |body: Value| {
        status_json(
            call(
                &app,
                Method::PUT,
                HOST,
                &format!("/api/spaces/{HOST}"),
                Some(&key),
            )
            .json(&body),
        )
    };

    let (status, body) = status_json(call(
        &app,
        Method::GET,
        HOST,
        &format!("/api/spaces/{HOST}"),
        Some(&key),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["oidc_authentication_configuration"], Value::Null);
    assert_eq!(body["client_certificate_authentication"], false);

    let (status, body) = put(json!({
        "client_certificate_authentication": true,
        "oidc_authentication_configuration": {
            "server_url": SERVER_URL,
            "realm": REALM,
            "public_key": rsa.public_pem,
            "audience": AUDIENCE,
        }
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_certificate_authentication"], true);
    let oidc = &body["oidc_authentication_configuration"];
    assert_eq!(oidc["server_url"], SERVER_URL);
    assert_eq!(oidc["realm"], REALM);
    assert_eq!(oidc["public_key"], rsa.public_pem.as_str());
    assert_eq!(oidc["jwks_url"], Value::Null);
    assert_eq!(oidc["sip_identifier_claim"], "sip_identity");
    assert_eq!(oidc["audience"], AUDIENCE);
    assert_eq!(oidc["issuer"], Value::Null);
    assert_eq!(oidc["required"], false);
    let stored = app
        .state
        .store
        .space_by_domain(HOST)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.client_certificate_authentication);
    assert_eq!(
        stored.oidc.as_ref().map(|o| o.audience.as_deref()),
        Some(Some(AUDIENCE))
    );

    // A partial update keeps the rest; the custom claim names the account.
    let (status, body) = put(json!({
        "oidc_authentication_configuration": {"sip_identifier_claim": "sip", "required": true}
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    let oidc = &body["oidc_authentication_configuration"];
    assert_eq!(
        (
            oidc["sip_identifier_claim"].as_str(),
            oidc["required"].as_bool()
        ),
        (Some("sip"), Some(true))
    );
    assert_eq!(oidc["audience"], AUDIENCE);
    let alice = app.account(&space, "alice", "alice-password").await;
    let mut custom = claims(None);
    custom["sip"] = json!("sip:alice@sip.example.com");
    custom.as_object_mut().unwrap().remove("iss");
    let (status, body) = status_json(
        call(&app, Method::GET, HOST, "/api/accounts/me", None)
            .header("authorization", format!("Bearer {}", sign(&rsa, &custom))),
    )
    .await;
    assert_eq!(
        (status, body["id"].as_i64()),
        (200, Some(alice.id)),
        "{body}"
    );

    // Refused settings: 422 naming the field.
    for (bad, field) in [
        (
            json!({"jwks_url": "https://sso.example.test/certs"}),
            "oidc_authentication_configuration.public_key",
        ),
        (
            json!({"public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}),
            "oidc_authentication_configuration.public_key",
        ),
        (
            json!({"server_url": "ftp://sso.example.test/"}),
            "oidc_authentication_configuration.server_url",
        ),
        (
            json!({"realm": "a\"b"}),
            "oidc_authentication_configuration.realm",
        ),
        (
            json!({"sip_identifier_claim": "a\u{1}b"}),
            "oidc_authentication_configuration.sip_identifier_claim",
        ),
        (
            json!({"required": "maybe"}),
            "oidc_authentication_configuration.required",
        ),
    ] {
        let (status, body) = put(json!({"oidc_authentication_configuration": bad})).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(body["errors"].get(field).is_some(), "{bad}: {body}");
    }
    let (status, body) = put(json!({
        "oidc_authentication_configuration": {"server_url": SERVER_URL}
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put(json!({
        "oidc_authentication_configuration": {"sip_identifier_claim": ""}
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["oidc_authentication_configuration"]["sip_identifier_claim"], "sip_identity",
        "an empty claim name is FlexiAPI's default"
    );
    // A new space needs a realm and a key.
    let (status, body) = status_json(
        call(&app, Method::POST, HOST, "/api/spaces", Some(&key))
            .json(&json!({"domain": "new.example.com", "oidc_authentication_configuration": {"server_url": SERVER_URL}})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["errors"]
            .get("oidc_authentication_configuration.realm")
            .is_some()
    );

    // `null` removes the provider.
    let (status, body) = put(json!({"oidc_authentication_configuration": null})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["oidc_authentication_configuration"], Value::Null);
    assert_eq!(body["client_certificate_authentication"], true);
});

/// `provisio space add|update` with the `--oidc-*` flags and `--client-certificate-authentication`.
#[test]
fn the_cli_sets_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    let ec = ec_key("k");
    std::fs::write(dir.path().join("key.pem"), &ec.public_pem).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_provisio"))
            .current_dir(dir.path())
            .env_remove("PROVISIO_CONFIG")
            .args(["--data-dir", "data", "--hooks-dir", "hooks"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&[
        "space",
        "add",
        HOST,
        "--oidc-server-url",
        SERVER_URL,
        "--oidc-realm",
        REALM,
        "--oidc-public-key",
        "key.pem",
        "--oidc-audience",
        AUDIENCE,
        "--oidc-required",
        "--client-certificate-authentication",
        "--json",
    ]);
    assert!(ok, "{err}");
    let space: Value = serde_json::from_str(&out).unwrap();
    let oidc = &space["oidc_authentication_configuration"];
    assert_eq!(oidc["public_key"], ec.public_pem.as_str());
    assert_eq!(oidc["required"], true);
    assert_eq!(oidc["audience"], AUDIENCE);
    assert_eq!(space["client_certificate_authentication"], true);

    let (ok, out, err) = run(&[
        "space",
        "update",
        HOST,
        "--oidc-public-key",
        "",
        "--oidc-jwks-url",
        "https://sso.example.test/realms/phones/protocol/openid-connect/certs",
        "--oidc-audience",
        "",
        "--oidc-sip-identifier-claim",
        "sip",
        "--json",
    ]);
    assert!(ok, "{err}");
    let space: Value = serde_json::from_str(&out).unwrap();
    let oidc = &space["oidc_authentication_configuration"];
    assert_eq!(oidc["public_key"], Value::Null);
    assert_eq!(oidc["audience"], Value::Null);
    assert_eq!(oidc["sip_identifier_claim"], "sip");
    assert_eq!(oidc["required"], true, "kept");

    // Refused: both key sources, or none.
    let (ok, _, err) = run(&["space", "update", HOST, "--oidc-public-key", "key.pem"]);
    assert!(!ok);
    assert!(err.contains("not both"), "{err}");
    let (ok, _, err) = run(&[
        "space",
        "add",
        OTHER,
        "--oidc-server-url",
        SERVER_URL,
        "--oidc-realm",
        REALM,
    ]);
    assert!(!ok);
    assert!(err.contains("jwks_url"), "{err}");

    let (ok, out, err) = run(&[
        "space",
        "update",
        HOST,
        "--no-oidc",
        "--client-certificate-authentication=false",
        "--json",
    ]);
    assert!(ok, "{err}");
    let space: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(space["oidc_authentication_configuration"], Value::Null);
    assert_eq!(space["client_certificate_authentication"], false);
}

/// The PEM public keys a space accepts: RSA and EC P-256, nothing else.
#[test]
fn usable_public_keys() {
    assert!(provisio::auth::jwt::is_usable_public_key(
        &rsa_key("a", Algorithm::RS256).public_pem
    ));
    assert!(provisio::auth::jwt::is_usable_public_key(
        &ec_key("b").public_pem
    ));
    assert!(!provisio::auth::jwt::is_usable_public_key("not a key"));
    let certificate = rcgen::generate_simple_self_signed(vec!["x.example".to_string()]).unwrap();
    assert!(
        !provisio::auth::jwt::is_usable_public_key(&certificate.signing_key.serialize_pem()),
        "a private key is not a public key"
    );
}

//! Authentication over HTTP, on both stores: HTTP Digest (FlexiAPI's ApiAuthenticationTest,
//! with its flaws fixed), API keys (ApiAccountApiKeyTest), QR-login auth tokens
//! (testAuthTokenProvisioning, testAuthToken), and Digest driven by independent clients
//! (Python `requests`, `curl --digest`).

mod api_support;
mod common;

use api_support::*;
use common::server::TestApp;
use provisio::auth::digest::at_rest;
use provisio::model::{Algorithm, NewPassword, now_ms};
use provisio::secret::new_hex;
use reqwest::Method;

const HOST: &str = "sip.example.com";
const ME: &str = "/api/accounts/me";

/// A GET with Host and From, and optionally an Authorization header.
fn digest_get(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    from: &str,
    auth: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut r = client
        .get(format!("{}{}", app.base, path))
        .header("host", HOST)
        .header("from", from)
        .header("x-linphone-provisioning", "1");
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    r
}

/// Sends the first, unauthenticated request and returns its challenges.
async fn challenge(app: &TestApp, path: &str, from: &str) -> Vec<Challenge> {
    let r = digest_get(app, &app.client, path, from, None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let cs = challenges(&r);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Unauthenticated request");
    cs
}

both_backends!(digest_md5_and_replay, |app: TestApp| async move {
    let space = app
        .space(HOST, |s| s.password_algorithm = Algorithm::Md5)
        .await;
    app.account(&space, "alice", "secret").await;
    let from = "sip:alice@sip.example.com";
    let cs = challenge(&app, ME, from).await;
    assert_eq!(cs.len(), 1);
    assert_flexiapi_format(&cs[0], HOST, Algorithm::Md5);
    let secret_ha1 = ha1(Algorithm::Md5, "alice", HOST, "secret");
    let answer = |nc| {
        Answer {
            challenge: &cs[0],
            user: "alice",
            ha1: &secret_ha1,
            alg: Algorithm::Md5,
            method: "GET",
            uri: ME,
            nc: Some(nc),
        }
        .header()
    };
    let send = |auth: String| digest_get(&app, &app.client, ME, from, Some(&auth)).send();

    let r = send(answer(1)).await.unwrap();
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().await.unwrap();
    assert_eq!(me["username"], "alice");
    // testReplayNonce: nc 1 then 2 pass; 2 again is a replay.
    assert_eq!(send(answer(2)).await.unwrap().status(), 200);
    let r = send(answer(2)).await.unwrap();
    assert_eq!(r.status(), 401);
    let fresh = challenges(&r);
    assert_eq!(fresh.len(), 1, "a replay is answered with a new challenge");
    assert_ne!(fresh[0].get("nonce"), cs[0].get("nonce"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Nonce replayed");
    // The replayed challenge is gone for good.
    let r = send(answer(3)).await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Invalid opaque");
});

both_backends!(
    digest_sha256_multi_hash_and_provisioning_me,
    |app: TestApp| async move {
        let space = app.space(HOST, |_| {}).await;
        let md5 = ha1(Algorithm::Md5, "bob", HOST, "secret");
        let sha = ha1(Algorithm::Sha256, "bob", HOST, "secret");
        account_with_passwords(
            &app,
            &space,
            "bob",
            vec![
                NewPassword {
                    algorithm: Algorithm::Sha256,
                    ha1: sha.clone(),
                },
                NewPassword {
                    algorithm: Algorithm::Md5,
                    ha1: md5.clone(),
                },
            ],
        )
        .await;
        let from = "sip:bob@sip.example.com";
        // testMultiHash: one header per password, MD5 first, one nonce/opaque pair.
        let cs = challenge(&app, "/provisioning/me", from).await;
        assert_eq!(cs.len(), 2);
        assert_flexiapi_format(&cs[0], HOST, Algorithm::Md5);
        assert_flexiapi_format(&cs[1], HOST, Algorithm::Sha256);
        assert_eq!(cs[0].get("nonce"), cs[1].get("nonce"));
        assert_eq!(cs[0].get("opaque"), cs[1].get("opaque"));
        let auth = Answer {
            challenge: &cs[1],
            user: "bob",
            ha1: &sha,
            alg: Algorithm::Sha256,
            method: "GET",
            uri: "/provisioning/me",
            nc: Some(1),
        }
        .header();
        let r = digest_get(&app, &app.client, "/provisioning/me", from, Some(&auth))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/xml");
        let xml = r.text().await.unwrap();
        assert!(xml.contains(&sha), "the document carries the account's HA1");

        // The same for the user API, answering the MD5 header this time.
        let cs = challenge(&app, ME, from).await;
        let auth = Answer {
            challenge: &cs[0],
            user: "bob",
            ha1: &md5,
            alg: Algorithm::Md5,
            method: "GET",
            uri: ME,
            nc: Some(1),
        }
        .header();
        let r = digest_get(&app, &app.client, ME, from, Some(&auth))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
);

both_backends!(
    digest_tolerates_liblinphone_quirks,
    |app: TestApp| async move {
        let space = app
            .space(HOST, |s| s.password_algorithm = Algorithm::Md5)
            .await;
        app.account(&space, "carol", "secret").await;
        let from = "sip:carol@sip.example.com";
        let secret_ha1 = ha1(Algorithm::Md5, "carol", HOST, "secret");
        // The request-target keeps its query; the client lower-cased the escape, uri= upper-cases
        // it: they name the same resource.
        let path = "/api/accounts/me?x=a%2fb";
        let cs = challenge(&app, path, from).await;
        let header = Answer {
            challenge: &cs[0],
            user: "carol",
            ha1: &secret_ha1,
            alg: Algorithm::Md5,
            method: "GET",
            uri: "/api/accounts/me?x=a%2Fb",
            nc: Some(1),
        }
        .header();
        // Two spaces after the colon, as belle-sip writes it; no algorithm key means MD5.
        let header = format!(" {}", header.replace(", algorithm=\"MD5\"", ""));
        let r = digest_get(&app, &app.client, path, from, Some(&header))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);

        // A uri naming another resource is refused.
        let cs = challenge(&app, ME, from).await;
        let wrong_uri = Answer {
            challenge: &cs[0],
            user: "carol",
            ha1: &secret_ha1,
            alg: Algorithm::Md5,
            method: "GET",
            uri: "/provisioning/me",
            nc: Some(1),
        }
        .header();
        let r = digest_get(&app, &app.client, ME, from, Some(&wrong_uri))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // Without qop (nc sent anyway, as liblinphone does): accepted once, the nonce is then spent.
        let cs = challenge(&app, ME, from).await;
        let no_qop = Answer {
            challenge: &cs[0],
            user: "carol",
            ha1: &secret_ha1,
            alg: Algorithm::Md5,
            method: "GET",
            uri: ME,
            nc: None,
        }
        .header();
        assert!(!no_qop.contains("qop"));
        let r = digest_get(&app, &app.client, ME, from, Some(&no_qop))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = digest_get(&app, &app.client, ME, from, Some(&no_qop))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            401,
            "a qop-less response does not hash nc: its nonce is single-use"
        );
    }
);

both_backends!(digest_refusals, |app: TestApp| async move {
    let space = app.space(HOST, |_| {}).await;
    let dave = app.account(&space, "dave", "secret").await;
    let from = "sip:dave@sip.example.com";
    let sha = ha1(Algorithm::Sha256, "dave", HOST, "secret");
    let message = |v: serde_json::Value| v["message"].as_str().unwrap_or("").to_string();

    // testMandatoryFrom: no From, no key: 401 without challenge.
    let r = app.get(HOST, ME).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_none());
    assert_eq!(
        message(r.json().await.unwrap()),
        "From header is required or invalid token"
    );
    let r = app
        .get(HOST, ME)
        .header("from", "<not a sip uri")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(message(r.json().await.unwrap()), "Invalid SIP address");

    // testAuthenticationWrongAlgorithm: MD5 against a SHA-256-only account.
    let cs = challenge(&app, ME, from).await;
    let md5 = ha1(Algorithm::Md5, "dave", HOST, "secret");
    let auth = Answer {
        challenge: &cs[0],
        user: "dave",
        ha1: &md5,
        alg: Algorithm::Md5,
        method: "GET",
        uri: ME,
        nc: Some(1),
    }
    .header();
    let r = digest_get(&app, &app.client, ME, from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(challenges(&r).len(), 1);
    assert_eq!(message(r.json().await.unwrap()), "Wrong algorithm");

    // testAuthenticationBadPassword.
    let cs = challenge(&app, ME, from).await;
    let bad = ha1(Algorithm::Sha256, "dave", HOST, "wrong");
    let auth = Answer {
        challenge: &cs[0],
        user: "dave",
        ha1: &bad,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: ME,
        nc: Some(1),
    }
    .header();
    let r = digest_get(&app, &app.client, ME, from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let bad_password_shape = challenges(&r)[0].shape();
    assert_eq!(message(r.json().await.unwrap()), "Unauthorized");

    // testClearedNonce: a challenge deleted from the store.
    let cs = challenge(&app, ME, from).await;
    app.state
        .store
        .purge_expired(0, now_ms() + 3_600_000)
        .await
        .unwrap();
    let auth = Answer {
        challenge: &cs[0],
        user: "dave",
        ha1: &sha,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: ME,
        nc: Some(1),
    }
    .header();
    let r = digest_get(&app, &app.client, ME, from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(challenges(&r).len(), 1, "with a fresh challenge");
    assert_eq!(message(r.json().await.unwrap()), "Invalid opaque");

    // testReplayAnotherIP: a challenge issued to 127.0.0.1 answered from 127.0.0.2.
    let cs = challenge(&app, ME, from).await;
    let auth = Answer {
        challenge: &cs[0],
        user: "dave",
        ha1: &sha,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: ME,
        nc: Some(1),
    }
    .header();
    let other = client_from([127, 0, 0, 2]);
    let r = digest_get(&app, &other, ME, from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(message(r.json().await.unwrap()), "Invalid opaque");
    // …and a challenge stored for another IP, answered from here.
    let (nonce, opaque) = (new_hex(32), new_hex(32));
    app.state
        .store
        .create_digest_nonce(
            dave.id,
            &at_rest(&nonce),
            &at_rest(&opaque),
            "10.9.8.7",
            now_ms(),
        )
        .await
        .unwrap();
    let forged = Challenge {
        raw: String::new(),
        params: [
            ("realm", HOST),
            ("nonce", nonce.as_str()),
            ("opaque", opaque.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    let auth = Answer {
        challenge: &forged,
        user: "dave",
        ha1: &sha,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: ME,
        nc: Some(1),
    }
    .header();
    let r = digest_get(&app, &app.client, ME, from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // An expired challenge (older than digest_nonce_ttl_seconds).
    let (nonce, opaque) = (new_hex(32), new_hex(32));
    let old = now_ms() - (app.state.settings.digest_nonce_ttl_seconds + 5) * 1000;
    app.state
        .store
        .create_digest_nonce(
            dave.id,
            &at_rest(&nonce),
            &at_rest(&opaque),
            "127.0.0.1",
            old,
        )
        .await
        .unwrap();
    let stale = Challenge {
        params: [
            ("realm", HOST),
            ("nonce", nonce.as_str()),
            ("opaque", opaque.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..forged.clone()
    };
    let auth = Answer {
        challenge: &stale,
        user: "dave",
        ha1: &sha,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: ME,
        nc: Some(1),
    }
    .header();
    let r = digest_get(&app, &app.client, ME, from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(message(r.json().await.unwrap()), "Invalid opaque");
    // Control: the same kind of stored challenge, fresh and for this IP, is accepted, so the
    // two refusals above are the IP binding and the expiry at work.
    let (nonce, opaque) = (new_hex(32), new_hex(32));
    app.state
        .store
        .create_digest_nonce(
            dave.id,
            &at_rest(&nonce),
            &at_rest(&opaque),
            "127.0.0.1",
            now_ms(),
        )
        .await
        .unwrap();
    let mut fresh = stale.clone();
    fresh.params.insert("nonce".into(), nonce.clone());
    fresh.params.insert("opaque".into(), opaque.clone());
    let auth = Answer {
        challenge: &fresh,
        user: "dave",
        ha1: &sha,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: ME,
        nc: Some(1),
    }
    .header();
    let r = digest_get(&app, &app.client, ME, from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The client's nonce is checked, not just the opaque (FlexiAPI never compares it).
    let cs = challenge(&app, ME, from).await;
    let mut tampered = cs[0].clone();
    tampered.params.insert("nonce".into(), new_hex(32));
    let auth = Answer {
        challenge: &tampered,
        user: "dave",
        ha1: &sha,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: ME,
        nc: Some(1),
    }
    .header();
    let r = digest_get(&app, &app.client, ME, from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(message(r.json().await.unwrap()), "Invalid opaque");

    // An unknown account looks exactly like a known one: same challenge shape, same refusals.
    let ghost_from = "sip:ghost@sip.example.com";
    let known = challenge(&app, ME, from).await;
    let ghost = challenge(&app, ME, ghost_from).await;
    assert_eq!(ghost.len(), known.len());
    assert_eq!(ghost[0].shape(), known[0].shape());
    assert_flexiapi_format(&ghost[0], HOST, Algorithm::Sha256);
    let guess = ha1(Algorithm::Sha256, "ghost", HOST, "wrong");
    let auth = Answer {
        challenge: &ghost[0],
        user: "ghost",
        ha1: &guess,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: ME,
        nc: Some(1),
    }
    .header();
    let r = digest_get(&app, &app.client, ME, ghost_from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(challenges(&r)[0].shape(), bad_password_shape);
    assert_eq!(message(r.json().await.unwrap()), "Unauthorized");

    // A blocked account authenticates but is refused.
    let update = provisio::store::AccountUpdate {
        blocked: Some(true),
        ..Default::default()
    };
    app.state
        .store
        .update_account(dave.id, &update, now_ms())
        .await
        .unwrap();
    let cs = challenge(&app, ME, from).await;
    let auth = Answer {
        challenge: &cs[0],
        user: "dave",
        ha1: &sha,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: ME,
        nc: Some(1),
    }
    .header();
    let r = digest_get(&app, &app.client, ME, from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(message(r.json().await.unwrap()), "Account blocked");
});

both_backends!(
    digest_parallel_replay_wins_once,
    // 40 replays from one address are 39 failed guesses and 39 new challenges: the rate limits
    // would answer some with 429 (tests/hardening_net.rs covers that). Only the atomic nonce
    // check is under test here.
    settings = |s: &mut provisio::config::Settings| {
        s.rate_limit.failures_per_minute = 0;
        s.rate_limit.anonymous_per_minute = 0;
    },
    |app: TestApp| async move {
        let space = app.space(HOST, |_| {}).await;
        app.account(&space, "erin", "secret").await;
        let from = "sip:erin@sip.example.com";
        let sha = ha1(Algorithm::Sha256, "erin", HOST, "secret");
        let cs = challenge(&app, ME, from).await;
        let auth = Answer {
            challenge: &cs[0],
            user: "erin",
            ha1: &sha,
            alg: Algorithm::Sha256,
            method: "GET",
            uri: ME,
            nc: Some(1),
        }
        .header();
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let req = digest_get(&app, &app.client, ME, from, Some(&auth));
            tasks.push(tokio::spawn(async move {
                req.send().await.unwrap().status().as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 401),
            "{statuses:?}"
        );
    }
);

both_backends!(api_key_refresh_and_ip_binding, |app: TestApp| async move {
    let space = app.space(HOST, |_| {}).await;
    let frank = app.account(&space, "frank", "secret").await;
    let from = "sip:frank@sip.example.com";
    let sha = ha1(Algorithm::Sha256, "frank", HOST, "secret");

    // testMandatoryFrom (ApiAccountTest): me/api_key without auth.
    assert_eq!(
        app.get(HOST, "/api/accounts/me/api_key")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // testRefresh: by Digest, then by key.
    let path = "/api/accounts/me/api_key";
    let cs = challenge(&app, path, from).await;
    let auth = Answer {
        challenge: &cs[0],
        user: "frank",
        ha1: &sha,
        alg: Algorithm::Sha256,
        method: "GET",
        uri: path,
        nc: Some(1),
    }
    .header();
    let r = digest_get(&app, &app.client, path, from, Some(&auth))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let key1 = r.text().await.unwrap();
    assert!(key1.len() >= 40);
    let r = app
        .get(HOST, path)
        .header("x-api-key", &key1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let key2 = r.text().await.unwrap();
    assert_ne!(key1, key2);
    assert_eq!(
        app.get(HOST, ME)
            .header("x-api-key", &key1)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "replaced"
    );

    // testRequest: uses are counted; the key is bound to the IP that made it.
    for _ in 0..3 {
        let r = app
            .get(HOST, ME)
            .header("x-api-key", &key2)
            .header("from", "sip:nobody@nowhere.test")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "a key needs no From, and a wrong one is ignored"
        );
    }
    // Uses are written in batches (every `api_key_flush_seconds`): write them now.
    app.state
        .key_uses
        .flush(app.state.store.as_ref())
        .await
        .unwrap();
    let keys = app.state.store.api_keys(frank.id).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].requests, 3);
    assert_eq!(keys[0].ip.as_deref(), Some("127.0.0.1"));
    let other = client_from([127, 0, 0, 2]);
    let r = other
        .get(format!("{}{ME}", app.base))
        .header("host", HOST)
        .header("x-api-key", &key2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Invalid API Key");

    // A key bound to another address, made directly in the store.
    let bound = user_key(&app, &frank, Some("127.0.0.2")).await;
    assert_eq!(
        app.get(HOST, ME)
            .header("x-api-key", &bound)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = other
        .get(format!("{}{ME}", app.base))
        .header("host", HOST)
        .header("x-api-key", &bound)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Expiry is enforced at request time: an admin key idle longer than its lifetime.
    let stale = provisio::secret::new_token();
    app.state
        .store
        .create_api_key(
            &provisio::store::NewApiKey {
                account_id: frank.id,
                key_hash: provisio::secret::hash_secret(&stale),
                name: Some("short".into()),
                ip: None,
                expires_after_minutes: Some(1),
            },
            now_ms() - 2 * 60_000,
        )
        .await
        .unwrap();
    assert_eq!(
        app.get(HOST, ME)
            .header("x-api-key", &stale)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
});

both_backends!(auth_token_qr_login, |app: TestApp| async move {
    let space = app.space(HOST, |_| {}).await;
    let gina = app.account(&space, "gina", "secret").await;
    let key = user_key(&app, &gina, None).await;
    let sha = ha1(Algorithm::Sha256, "gina", HOST, "secret");

    // testAuthTokenProvisioning: a public token, attached by the logged-in device, redeemed
    // once on /provisioning/auth_token/{t}.
    let (status, body) = status_json(call(
        &app,
        Method::POST,
        HOST,
        "/api/accounts/auth_token",
        None,
    ))
    .await;
    assert_eq!(status, 201);
    let token = body["token"].as_str().unwrap().to_string();
    assert!(token.len() >= 32);
    assert_eq!(body["ip"], "127.0.0.1");
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    let prov = format!("/provisioning/auth_token/{token}");
    assert_eq!(
        app.provision(HOST, &prov).send().await.unwrap().status(),
        404,
        "not attached yet"
    );
    let attach = format!("/api/accounts/auth_token/{token}/attach");
    let r = app.get(HOST, &attach).send().await.unwrap();
    assert_eq!(r.status(), 401, "attaching needs a logged-in user");
    let r = app
        .get(HOST, &attach)
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(
        app.get(HOST, &attach)
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "attached once"
    );
    let r = app.provision(HOST, &prov).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(&sha));
    assert_eq!(
        app.provision(HOST, &prov).send().await.unwrap().status(),
        404,
        "redeemed once"
    );

    // testAuthToken: me/api_key/{t}.
    let (_, body) = status_json(call(
        &app,
        Method::POST,
        HOST,
        "/api/accounts/auth_token",
        None,
    ))
    .await;
    let token = body["token"].as_str().unwrap().to_string();
    let redeem = format!("/api/accounts/me/api_key/{token}");
    assert_eq!(
        app.get(HOST, &redeem).send().await.unwrap().status(),
        404,
        "not attached"
    );
    let wrong = "/api/accounts/auth_token/not-a-token/attach";
    assert_eq!(
        app.get(HOST, wrong)
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = app
        .get(HOST, &format!("/api/accounts/auth_token/{token}/attach"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = status_json(app.get(HOST, &redeem)).await;
    assert_eq!(status, 200);
    let api_key = body["api_key"].as_str().unwrap().to_string();
    assert_eq!(
        app.get(HOST, &redeem).send().await.unwrap().status(),
        404,
        "redeemed once"
    );
    let (status, me) = status_json(app.get(HOST, ME).header("x-api-key", &api_key)).await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "gina");

    // An expired token is refused (`key` was replaced: one user key per account).
    assert_eq!(
        app.get(HOST, ME)
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let stale = provisio::secret::new_token();
    let old = now_ms() - (app.state.settings.auth_token_ttl_minutes + 1) * 60_000;
    app.state
        .store
        .create_auth_token(&provisio::secret::hash_secret(&stale), None, None, old)
        .await
        .unwrap();
    let r = app
        .get(HOST, &format!("/api/accounts/auth_token/{stale}/attach"))
        .header("x-api-key", &api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
});

/// Runs Python `requests` with HTTPDigestAuth against a URL; returns (status, body).
fn python_digest(
    url: &str,
    host: &str,
    from: &str,
    user: &str,
    password: &str,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut headers = format!("{{'Host': {host:?}, 'From': {from:?}");
    for (k, v) in extra {
        headers.push_str(&format!(", {k:?}: {v:?}"));
    }
    headers.push('}');
    let script = format!(
        "import requests, sys\n\
         from requests.auth import HTTPDigestAuth\n\
         s = requests.Session()\n\
         auth = HTTPDigestAuth({user:?}, {password:?})\n\
         r = s.get({url:?}, auth=auth, headers={headers}, timeout=10)\n\
         r2 = s.get({url:?}, auth=auth, headers={headers}, timeout=10)\n\
         print(r.status_code, r2.status_code, r2.request.headers.get('Authorization', ''), file=sys.stderr)\n\
         sys.stdout.write(str(r.status_code) + '\\n' + r.text)\n"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "python failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = stdout.split_once('\n').unwrap();
    // The session reuses the nonce with nc=00000002 on its second request: still accepted.
    assert!(
        stderr.starts_with(&format!("{status} 200 ")),
        "second request: {stderr}"
    );
    assert!(stderr.contains("nc=00000002"), "{stderr}");
    (status.parse().unwrap(), body.to_string())
}

both_backends!(python_requests_digest, |app: TestApp| async move {
    if !tool_available(
        "python3 -c 'import requests'",
        "Python requests",
        "pip install requests",
    ) {
        return;
    }
    for (domain, alg) in [
        ("md5.example.com", Algorithm::Md5),
        ("sha.example.com", Algorithm::Sha256),
    ] {
        let space = app.space(domain, |s| s.password_algorithm = alg).await;
        app.account(&space, "hank", "s3cret!").await;
        let from = format!("sip:hank@{domain}");
        let url = format!("{}/api/accounts/me?probe=a%2Fb", app.base);
        let (base, from2) = (url.clone(), from.clone());
        let (status, body) = tokio::task::spawn_blocking(move || {
            python_digest(&base, domain, &from2, "hank", "s3cret!", &[])
        })
        .await
        .unwrap();
        assert_eq!(status, 200, "{alg}: {body}");
        let me: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(me["username"], "hank");
        let url = format!("{}/provisioning/me", app.base);
        let (status, body) = tokio::task::spawn_blocking(move || {
            python_digest(
                &url,
                domain,
                &from,
                "hank",
                "s3cret!",
                &[("x-linphone-provisioning", "1")],
            )
        })
        .await
        .unwrap();
        assert_eq!(status, 200, "{alg}: {body}");
        assert!(body.contains(&ha1(alg, "hank", domain, "s3cret!")));
    }
    // A wrong password fails for the independent client too.
    let (status, _) = {
        let url = format!("{}/api/accounts/me", app.base);
        tokio::task::spawn_blocking(move || {
            let script = format!(
                "import requests\nfrom requests.auth import HTTPDigestAuth\n\
                 r = requests.get({url:?}, auth=HTTPDigestAuth('hank', 'nope'), headers={{'Host': 'md5.example.com', 'From': 'sip:hank@md5.example.com'}}, timeout=10)\n\
                 print(r.status_code)\n"
            );
            let out = std::process::Command::new("python3").arg("-c").arg(script).output().unwrap();
            (String::from_utf8_lossy(&out.stdout).trim().parse::<u16>().unwrap(), ())
        })
        .await
        .unwrap()
    };
    assert_eq!(status, 401);
});

both_backends!(curl_digest, |app: TestApp| async move {
    if !tool_available("curl --version", "curl", "apt-get install curl") {
        return;
    }
    for (domain, alg) in [
        ("md5.example.com", Algorithm::Md5),
        ("sha.example.com", Algorithm::Sha256),
    ] {
        let space = app.space(domain, |s| s.password_algorithm = alg).await;
        app.account(&space, "ivan", "pa55word").await;
        let url = format!("{}/api/accounts/me", app.base);
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--digest", "-u", "ivan:pa55word", "-H"])
                .arg(format!("Host: {domain}"))
                .arg("-H")
                .arg(format!("From: sip:ivan@{domain}"))
                .args(["-w", "\n%{http_code}"])
                .arg(url)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = stdout.rsplit_once('\n').unwrap();
        assert_eq!(
            status,
            "200",
            "{alg}: {body} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let me: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(me["domain"], domain);
    }
});

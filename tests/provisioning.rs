//! The provisioning endpoints end to end: a real server on 127.0.0.1:0, over HTTP, on SQLite
//! and on PostgreSQL (FlexiAPI semantics, reference §1).

mod common;

use common::server::{TestApp, independent_ha1};
use provisio::model::{Algorithm, HeaderMode, now_ms};
use provisio::secret::{hash_secret, new_token};
use std::collections::BTreeMap;

/// Every `section/entry` of a document, read with an XML parser that is not provisio's.
fn entries(xml: &str) -> BTreeMap<String, String> {
    let doc = roxmltree::Document::parse(xml).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "config");
    let mut out = BTreeMap::new();
    for section in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("section"))
    {
        let s = section.attribute("name").expect("section name");
        for entry in section.children().filter(|n| n.has_tag_name("entry")) {
            let k = entry.attribute("name").expect("entry name");
            out.insert(format!("{s}/{k}"), entry.text().unwrap_or("").to_string());
        }
    }
    out
}

both_backends!(token_lifecycle, |app: TestApp| async move {
    let space = app.space("sip.example.com", |_| {}).await;
    let account = app.account(&space, "anna", "secret").await;
    let token = app.token(&account).await;
    let path = format!("/provisioning/{token}");

    // Without the header: 400, and nothing consumed or activated.
    let r = app.get("sip.example.com", &path).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let state = app
        .state
        .store
        .provisioning_token(&hash_secret(&token))
        .await
        .unwrap()
        .unwrap();
    assert!(!state.used);
    assert!(
        !app.state
            .store
            .account(account.id)
            .await
            .unwrap()
            .unwrap()
            .activated
    );

    // With it: 200, the document, the headers a client needs.
    let r = app
        .provision("sip.example.com", &path)
        .header("accept-encoding", "gzip, deflate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/xml");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers().get("content-encoding").is_none(), "never gzip");
    let len: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = r.text().await.unwrap();
    assert_eq!(len, body.len());
    assert!(body.starts_with("<config xmlns=\"http://www.linphone.org/xsds/lpconfig.xsd\">"));
    let e = entries(&body);
    assert_eq!(e["proxy_0/reg_identity"], "<sip:anna@sip.example.com>");
    assert_eq!(e["auth_info_0/username"], "anna");
    assert_eq!(e["auth_info_0/domain"], "sip.example.com");
    assert_eq!(e["auth_info_0/realm"], "sip.example.com");
    assert_eq!(e["auth_info_0/algorithm"], "SHA-256");
    assert_eq!(
        e["auth_info_0/ha1"],
        independent_ha1(Algorithm::Sha256, "anna", "sip.example.com", "secret")
    );
    assert!(
        app.state
            .store
            .account(account.id)
            .await
            .unwrap()
            .unwrap()
            .activated
    );

    // Again: 404.
    let r = app
        .provision("sip.example.com", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Unknown token: 404.
    let r = app
        .provision("sip.example.com", "/provisioning/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
});

both_backends!(latest_token_wins, |app: TestApp| async move {
    let space = app.space("sip.example.com", |_| {}).await;
    let account = app.account(&space, "bob", "secret").await;
    let old = app.token(&account).await;
    let new = app.token(&account).await;
    let r = app
        .provision("sip.example.com", &format!("/provisioning/{old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "superseded token");
    let r = app
        .provision("sip.example.com", &format!("/provisioning/{new}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
});

both_backends!(
    expired_token_is_gone_not_consumed,
    |app: TestApp| async move {
        let space = app
            .space("sip.example.com", |s| s.token_lifetime_minutes = 10)
            .await;
        let account = app.account(&space, "carl", "secret").await;
        let token = new_token();
        let created = now_ms() - 1000 * 60_000;
        app.state
            .store
            .create_provisioning_token(
                account.id,
                &hash_secret(&token),
                created,
                Some(created + 10 * 60_000),
            )
            .await
            .unwrap();
        for path in [
            format!("/provisioning/{token}"),
            format!("/provisioning/qrcode/{token}"),
            format!("/wizard/{token}"),
        ] {
            let r = app
                .provision("sip.example.com", &path)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 410, "{path}");
        }
        let state = app
            .state
            .store
            .provisioning_token(&hash_secret(&token))
            .await
            .unwrap()
            .unwrap();
        assert!(!state.used);
        assert!(
            !app.state
                .store
                .account(account.id)
                .await
                .unwrap()
                .unwrap()
                .activated
        );
    }
);

both_backends!(
    concurrent_fetches_consume_once,
    // 60 fetches of one token from one address are 59 failed guesses: the failure limit would
    // answer some with 429 depending on timing (tests/hardening_net.rs covers that). Only the
    // atomic consume is under test here.
    settings = |s: &mut provisio::config::Settings| s.rate_limit.failures_per_minute = 0,
    |app: TestApp| async move {
        let space = app.space("sip.example.com", |_| {}).await;
        let account = app.account(&space, "dora", "secret").await;
        let token = app.token(&account).await;
        let mut tasks = Vec::new();
        for _ in 0..60 {
            let req = app.provision("sip.example.com", &format!("/provisioning/{token}"));
            tasks.push(tokio::spawn(async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                (status, body)
            }));
        }
        let mut ok = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                200 => {
                    ok += 1;
                    assert!(body.contains("ha1"));
                }
                404 => assert!(!body.contains("ha1")),
                other => panic!("unexpected status {other}: {body}"),
            }
        }
        assert_eq!(ok, 1, "exactly one request wins the token");
        assert!(
            app.state
                .store
                .account(account.id)
                .await
                .unwrap()
                .unwrap()
                .activated
        );
    }
);

both_backends!(reset_password_md5_and_sha256, |app: TestApp| async move {
    for (domain, algorithm, hex_len) in [
        ("md5.example.com", Algorithm::Md5, 32),
        ("sha.example.com", Algorithm::Sha256, 64),
    ] {
        let space = app
            .space(domain, |s| s.password_algorithm = algorithm)
            .await;
        let account = app.account(&space, "erin", "old-password").await;
        let old = app.state.store.passwords(account.id).await.unwrap();
        assert_eq!(
            old[0].ha1,
            independent_ha1(algorithm, "erin", domain, "old-password")
        );

        let token = app.token(&account).await;
        // The QR code of a reset URL carries reset_password=1.
        let r = app
            .get(
                domain,
                &format!("/provisioning/qrcode/{token}?reset_password"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let url = r.headers()["x-qrcode-url"].to_str().unwrap().to_string();
        assert!(
            url.ends_with(&format!("/provisioning/{token}?reset_password=1")),
            "{url}"
        );

        let r = app
            .provision(domain, &format!("/provisioning/{token}?reset_password=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let e = entries(&r.text().await.unwrap());
        let ha1 = &e["auth_info_0/ha1"];
        assert_eq!(ha1.len(), hex_len);
        assert_ne!(ha1, &old[0].ha1);
        assert_eq!(e["auth_info_0/algorithm"], algorithm.as_str());
        let stored = app.state.store.passwords(account.id).await.unwrap();
        assert_eq!(stored.len(), 1, "old passwords removed");
        assert_eq!(&stored[0].ha1, ha1, "the document carries the stored HA1");
    }
});

both_backends!(qrcode_and_wizard, |app: TestApp| async move {
    let space = app
        .space("sip.example.com", |s| {
            s.public_url = Some("https://prov.example.com".into())
        })
        .await;
    let account = app.account(&space, "finn", "secret").await;
    let token = app.token(&account).await;

    let r = app
        .get("sip.example.com", &format!("/provisioning/qrcode/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let expected = format!("https://prov.example.com/provisioning/{token}");
    assert_eq!(r.headers()["x-qrcode-url"], expected.as_str());
    let png = r.bytes().await.unwrap();
    let img = image::load_from_memory(&png).unwrap().to_luma8();
    assert!(img.width() >= 300 && img.height() >= 300);
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1);
    let (meta, content) = grids[0].decode().unwrap();
    assert_eq!(
        content, expected,
        "the QR code encodes the provisioning URL"
    );
    assert_eq!(meta.ecc_level, 2, "error correction High (format bits 10)");

    let r = app
        .get("sip.example.com", &format!("/wizard/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(
        html.contains(&format!("href=\"linphone-config:{expected}\"")),
        "{html}"
    );
    assert!(html.contains("src=\"data:image/png;base64,"));
    assert!(html.contains("Download the app"));

    // Neither consumed the token.
    let r = app
        .provision("sip.example.com", &format!("/provisioning/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Once used, QR and wizard refuse it too.
    let r = app
        .get("sip.example.com", &format!("/provisioning/qrcode/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .get("sip.example.com", &format!("/wizard/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
});

both_backends!(anonymous_and_spaces, |app: TestApp| async move {
    let a = app
        .space("a.example.com", |s| {
            s.custom_entries =
                Some("[sip]\nguess_hostname=1\n[app]\nurl=\"https://x?a=1&b=2\"\n".into());
            s.vcard_list_url = Some("https://a.example.com/contacts/vcard".into());
        })
        .await;
    let _b = app.space("b.example.com", |_| {}).await;
    let r = app
        .get("a.example.com", "/provisioning")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .provision("a.example.com:8080", "/provisioning")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(!body.contains("ha1"));
    assert!(!body.contains("proxy_0"));
    let e = entries(&body);
    assert_eq!(e["sip/guess_hostname"], "1");
    assert_eq!(e["app/url"], "https://x?a=1&b=2");
    assert_eq!(
        e["misc/contacts-vcard-list"],
        "https://a.example.com/contacts/vcard"
    );
    assert_eq!(a.domain, "a.example.com");
    // Two spaces and an unknown host: 404.
    let r = app
        .provision("c.example.com", "/provisioning")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
});

both_backends!(header_modes, |app: TestApp| async move {
    let space = app
        .space("ua.example.com", |s| {
            s.header_mode = HeaderMode::LinphoneUserAgent
        })
        .await;
    let account = app.account(&space, "gus", "secret").await;
    let token = app.token(&account).await;
    let path = format!("/provisioning/{token}");
    let r = app
        .get("ua.example.com", &path)
        .header("user-agent", "curl/8.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .get("ua.example.com", &path)
        .header("user-agent", "Linphonec/5.1.65")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let off = app
        .space("off.example.com", |s| s.header_mode = HeaderMode::Off)
        .await;
    let r = app.get(&off.host, "/provisioning").send().await.unwrap();
    assert_eq!(r.status(), 200);
});

both_backends!(escaping_round_trips, |app: TestApp| async move {
    let space = app
        .space("esc.example.com", |s| {
            s.custom_entries = Some("[proxy_0]\nreg_route=\"<sip:a&b;lr>\"\n".into());
            s.overwrite_all = true;
        })
        .await;
    let name = "Zoë \"Z\" O'Brien & <Co> ☃ 😀";
    let account = app
        .account_with(&space, "zoe", "secret", |a| {
            a.display_name = Some(name.into())
        })
        .await;
    let token = app.token(&account).await;
    let r = app
        .provision("esc.example.com", &format!("/provisioning/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let e = entries(&body);
    // RFC 3261 §25.1: the display name is a quoted-string, its `"` written as quoted-pairs.
    assert_eq!(
        e["proxy_0/reg_identity"],
        "\"Zoë \\\"Z\\\" O'Brien & <Co> ☃ 😀\" <sip:zoe@esc.example.com>"
    );
    assert_eq!(e["proxy_0/reg_route"], "<sip:a&b;lr>");
    let doc = roxmltree::Document::parse(&body).unwrap();
    assert!(
        doc.descendants()
            .filter(|n| n.has_tag_name("entry"))
            .all(|n| n.attribute("overwrite") == Some("true")),
        "overwrite-all marks every entry"
    );
});

both_backends!(auth_token_route, |app: TestApp| async move {
    let space = app.space("sip.example.com", |_| {}).await;
    let account = app.account(&space, "hana", "secret").await;
    let store = &app.state.store;
    let unattached = new_token();
    store
        .create_auth_token(&hash_secret(&unattached), None, None, now_ms())
        .await
        .unwrap();
    let r = app
        .provision(
            "sip.example.com",
            &format!("/provisioning/auth_token/{unattached}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "not attached yet");

    let t = new_token();
    store
        .create_auth_token(&hash_secret(&t), None, None, now_ms())
        .await
        .unwrap();
    assert!(
        store
            .attach_auth_token(&hash_secret(&t), account.id, now_ms() - 60_000)
            .await
            .unwrap()
    );
    let path = format!("/provisioning/auth_token/{t}");
    let r = app.get("sip.example.com", &path).send().await.unwrap();
    assert_eq!(r.status(), 400, "guarded, unlike FlexiAPI");
    let r = app
        .provision("sip.example.com", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("ha1"));
    let r = app
        .provision("sip.example.com", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "deleted on use");
});

both_backends!(
    me_with_api_key_and_blocked_accounts,
    |app: TestApp| async move {
        let space = app.space("sip.example.com", |_| {}).await;
        let account = app.account(&space, "ivan", "secret").await;
        let key = new_token();
        app.state
            .store
            .create_api_key(
                &provisio::store::NewApiKey {
                    account_id: account.id,
                    key_hash: hash_secret(&key),
                    name: None,
                    ip: None,
                    expires_after_minutes: None,
                },
                now_ms(),
            )
            .await
            .unwrap();
        let r = app
            .provision("sip.example.com", "/provisioning/me")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = app
            .get("sip.example.com", "/provisioning/me")
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        for _ in 0..2 {
            let r = app
                .provision("sip.example.com", "/provisioning/me")
                .header("x-api-key", &key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.text().await.unwrap().contains("ha1"));
        }
        let r = app
            .provision("sip.example.com", "/provisioning/me")
            .header("x-api-key", "wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // Blocked accounts get no document on any route.
        let token = app.token(&account).await;
        let update = provisio::store::AccountUpdate {
            blocked: Some(true),
            ..Default::default()
        };
        app.state
            .store
            .update_account(account.id, &update, now_ms())
            .await
            .unwrap();
        let r = app
            .provision("sip.example.com", &format!("/provisioning/{token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = app
            .provision("sip.example.com", "/provisioning/me")
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let state = app
            .state
            .store
            .provisioning_token(&hash_secret(&token))
            .await
            .unwrap()
            .unwrap();
        assert!(!state.used);
    }
);

both_backends!(ops_routes, |app: TestApp| async move {
    let r = app.get("x", "/healthz").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.get("x", "/readyz").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.get("x", "/no/such/route").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let r = app
        .client
        .post(format!("{}/provisioning", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
});

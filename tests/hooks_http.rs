//! Hooks through the real server: what scripts write reaches the client, `deny` refuses and
//! burns nothing, a runaway script fails only its own request, and a script dropped into the
//! watched directory of a running server changes the next response.

mod common;

use common::server::TestApp;
use provisio::model::HookFailure;
use provisio::secret::hash_secret;
use std::time::{Duration, Instant};

fn write(app: &TestApp, name: &str, script: &str) {
    std::fs::write(app.hooks_dir.join(name), script).unwrap();
}

both_backends!(deny_consumes_nothing, |app: TestApp| async move {
    let space = app.space("sip.example.com", |_| {}).await;
    let account = app.account(&space, "anna", "secret").await;
    let token = app.token(&account).await;
    write(
        &app,
        "sip.example.com.rhai",
        r#"fn on_config(config, request, account) { deny(451, "provisioning paused"); }"#,
    );
    app.state.hooks.reload_now().unwrap();
    let path = format!("/provisioning/{token}");
    let r = app
        .provision("sip.example.com", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["message"],
        "provisioning paused"
    );
    let state = app
        .state
        .store
        .provisioning_token(&hash_secret(&token))
        .await
        .unwrap()
        .unwrap();
    assert!(!state.used, "a denied request burns nothing");
    assert!(
        !app.state
            .store
            .account(account.id)
            .await
            .unwrap()
            .unwrap()
            .activated
    );

    // The operator relents: the same token now works, once.
    write(
        &app,
        "sip.example.com.rhai",
        r#"fn on_proxy(section, request, account) {
               section.set("reg_route", "<sip:edge.example.com;transport=tls;lr>");
               section.set("x_user_agent", request.headers["user-agent"]);
               section.set("x_tier", account.dictionary["tier"]);
           }"#,
    );
    app.state.hooks.reload_now().unwrap();
    let update = provisio::store::AccountUpdate {
        dictionary: Some([("tier".to_string(), "gold & <co>".to_string())].into()),
        ..Default::default()
    };
    app.state
        .store
        .update_account(account.id, &update, provisio::model::now_ms())
        .await
        .unwrap();
    let r = app
        .provision("sip.example.com", &path)
        .header("user-agent", "Linphone/6 \"test\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let doc = provisio::lpconfig::xml::parse(&body).unwrap();
    let proxy = doc.section("proxy_0").unwrap();
    assert_eq!(
        proxy.get("reg_route"),
        Some("<sip:edge.example.com;transport=tls;lr>")
    );
    assert_eq!(proxy.get("x_user_agent"), Some("Linphone/6 \"test\""));
    assert_eq!(proxy.get("x_tier"), Some("gold & <co>"));
    assert!(
        body.contains("gold &amp; &lt;co&gt;"),
        "escaped on the wire: {body}"
    );
    let r = app
        .provision("sip.example.com", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
});

both_backends!(runaway_script_fails_alone, |app: TestApp| async move {
    let stuck = app.space("stuck.example.com", |_| {}).await;
    let skip = app
        .space("skip.example.com", |s| s.hook_failure = HookFailure::Skip)
        .await;
    let fine = app.space("fine.example.com", |_| {}).await;
    for space in [&stuck, &skip] {
        write(
            &app,
            &format!("{}.rhai", space.domain),
            r#"fn on_config(config, request, account) { config.section("x").set("k", "1"); loop { } }"#,
        );
    }
    app.state.hooks.reload_now().unwrap();
    let account = app.account(&stuck, "sam", "secret").await;
    let token = app.token(&account).await;

    let hammer = {
        let reqs: Vec<_> = (0..20)
            .map(|_| app.provision(&fine.host, "/provisioning"))
            .collect();
        tokio::spawn(async move {
            let mut ok = 0;
            for r in reqs {
                if r.send().await.unwrap().status() == 200 {
                    ok += 1;
                }
            }
            ok
        })
    };
    let started = Instant::now();
    let r = app
        .provision(&stuck.host, &format!("/provisioning/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["message"],
        "Internal server error"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cut off by the deadline"
    );
    assert!(
        !app.state
            .store
            .provisioning_token(&hash_secret(&token))
            .await
            .unwrap()
            .unwrap()
            .used
    );

    // hook_failure = skip: served without the failing script's changes.
    let r = app
        .provision(&skip.host, "/provisioning")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains("name=\"x\""));

    assert_eq!(hammer.await.unwrap(), 20, "other requests kept succeeding");
});

both_backends!(
    hot_reload_through_the_filesystem,
    |app: TestApp| async move {
        let space = app.space("live.example.com", |_| {}).await;
        let _guard = app.state.hooks.watch().unwrap();
        let fetch = || async {
            let r = app
                .provision(&space.host, "/provisioning")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        };
        let wait_for = |want: bool, needle: &'static str| {
            let fetch = &fetch;
            async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let body = fetch().await;
                    if body.contains(needle) == want {
                        return Instant::now();
                    }
                    assert!(Instant::now() < deadline, "reload not seen: {body}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert!(!fetch().await.contains("live_hooks"));

        let written = Instant::now();
        write(
            &app,
            "default.rhai",
            r#"fn on_config(config, request, account) { config.section("live_hooks").set("v", "1"); }"#,
        );
        let seen = wait_for(true, "live_hooks").await;
        eprintln!("new script live after {:?}", seen - written);

        // A syntax error changes nothing clients see, and is reported.
        write(
            &app,
            "default.rhai",
            "fn on_config(config, request, account) { let = ; }",
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            fetch().await.contains("live_hooks"),
            "previous set still serving"
        );
        let status = serde_json::to_value(app.state.hooks.status()).unwrap();
        assert!(status.to_string().contains("default.rhai"), "{status}");

        // A rename-style save (editors write a temp file, then rename it over the script).
        let tmp = app.hooks_dir.join(".default.rhai.swp");
        std::fs::write(
        &tmp,
        r#"fn on_config(config, request, account) { config.section("renamed_in").set("v", "2"); }"#,
    )
    .unwrap();
        std::fs::rename(&tmp, app.hooks_dir.join("default.rhai")).unwrap();
        wait_for(true, "renamed_in").await;

        // Deleting the script removes its effect.
        std::fs::remove_file(app.hooks_dir.join("default.rhai")).unwrap();
        wait_for(false, "renamed_in").await;
    }
);

both_backends!(status_is_for_super_admins, |app: TestApp| async move {
    write(
        &app,
        "default.rhai",
        "fn on_config(config, request, account) { }",
    );
    app.state.hooks.reload_now().unwrap();
    let key = |identity: &'static str, super_admin: bool| {
        let store = app.state.store.clone();
        let settings = app.state.settings.clone();
        async move {
            let out = provisio::api::admin::create_admin(
                &store,
                &settings,
                identity,
                "pw-123456",
                super_admin,
            )
            .await
            .unwrap();
            out["api_key"].as_str().unwrap().to_string()
        }
    };
    let root = key("root@root.example.com", true).await;
    let admin = key("admin@tenant.example.com", false).await;
    let r = app
        .get("tenant.example.com", "/api/hooks/status")
        .header("x-api-key", &admin)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "a space admin cannot read other tenants' scripts"
    );
    let r = app
        .get("root.example.com", "/api/hooks/status")
        .header("x-api-key", &root)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status: serde_json::Value = r.json().await.unwrap();
    assert!(
        status["scripts"].to_string().contains("default.rhai"),
        "{status}"
    );
    assert!(
        status["scripts"].to_string().contains("on_config"),
        "{status}"
    );
});

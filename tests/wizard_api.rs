//! The wizard API, the `sip-linphone:` wizard page and the provisioning e-mail over HTTP, on
//! both stores (FlexiAPI's WizardTest and ApiAccountTest::testSendProvisioningEmail, driven to
//! the end): `POST /api/wizard`, then `GET /wizard/{token}` gives FlexiAPI's link byte for
//! byte, whose provisioning URL provisions the account; validation and roles; `/wizard` from
//! its query; the older `linphone-config:` page still served for a provisioning token.
//!
//! The e-mail goes to a real SMTP relay started by the test (`tests/smtp_sink.py`, on Python's
//! aiosmtpd, with AUTH): the message arrives, multipart text + HTML with the QR code as an
//! inline PNG (parsed by Python's `email` package); its QR code decodes (rqrr) to a URL that
//! provisions the account, and its link opens the wizard page. No e-mail: 403; no relay
//! configured: 503; relay down: 503, refusing: 502, each naming the relay and never its
//! password. Needs `python3` with `aiosmtpd` (skipped with a message when missing, unless CI
//! is set).

mod api_support;
mod common;

use api_support::*;
use base64::Engine as _;
use common::server::{Backend, TestApp};
use provisio::model::{Account, Space};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HOST: &str = "sip.example.com";
/// The space's public base URL: every link the server hands out starts with it.
const PUBLIC: &str = "https://sip.example.com";
const LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126 Safari/537.36";
const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15";

/// The space of these tests, with links on [`PUBLIC`].
async fn example_space(app: &TestApp) -> Space {
    app.space(HOST, |s| {
        s.name = "Example Phones".to_string();
        s.public_url = Some(PUBLIC.to_string());
    })
    .await
}

/// `POST /api/wizard` with `body`.
async fn post_wizard(app: &TestApp, key: Option<&str>, body: Value) -> (u16, Value) {
    status_json(call(app, Method::POST, HOST, "/api/wizard", key).json(&body)).await
}

/// A GET of a link the server handed out (on [`PUBLIC`]), sent to the test server.
fn follow(app: &TestApp, url: &str) -> reqwest::RequestBuilder {
    let path = url
        .strip_prefix(PUBLIC)
        .unwrap_or_else(|| panic!("{url} is not on {PUBLIC}"));
    app.get(HOST, path)
}

/// The wizard page at `path`, as a Linux browser sees it: (status, body).
async fn page(app: &TestApp, path: &str, ua: &str) -> (u16, String) {
    let r = app
        .get(HOST, path)
        .header("user-agent", ua)
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/html; charset=utf-8"
        );
    }
    (status, r.text().await.unwrap())
}

/// The `href` of the page's "Open the app" link, HTML-unescaped.
fn open_app_link(html: &str) -> String {
    let start = html
        .find("<a id=\"open_app\" class=\"btn\" href=\"")
        .unwrap_or_else(|| panic!("no open_app link in {html}"))
        + "<a id=\"open_app\" class=\"btn\" href=\"".len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].replace("&amp;", "&")
}

/// The provisioning token inside a `linphone-fetch-config` value of a link.
fn fetched_token(link: &str) -> String {
    let start = link
        .find("linphone-fetch-config=https%3A%2F%2Fsip.example.com%2Fprovisioning%2F")
        .unwrap_or_else(|| panic!("no fetch-config in {link}"))
        + "linphone-fetch-config=https%3A%2F%2Fsip.example.com%2Fprovisioning%2F".len();
    let token: String = link[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(token.len(), 43, "a 256-bit token: {link}");
    token
}

/// Provisions `path` with the header a phone sends: (status, body).
async fn provision(app: &TestApp, path: &str) -> (u16, String) {
    let r = app.provision(HOST, path).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Asserts an lpconfig document holding `account`'s identity.
fn assert_document_of(body: &str, account: &Account) {
    let doc = roxmltree::Document::parse(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let identity = format!("sip:{}@{}", account.username, account.domain);
    assert!(
        doc.descendants()
            .any(|n| n.text() == Some(identity.as_str())
                || n.text().is_some_and(|t| t.contains(&identity))),
        "the document names {identity}: {body}"
    );
}

/// Polls the audit API until it lists `n` events for `query`; fails after 15 s (events are
/// written in batches, within about a second).
async fn wait_audit(app: &TestApp, key: &str, query: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = status_json(call(
            app,
            Method::GET,
            HOST,
            &format!("/api/audit?{query}"),
            Some(key),
        ))
        .await;
        assert_eq!(status, 200, "{body}");
        let events = body.as_array().expect("an array").clone();
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} audit events for {query}, got {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

both_backends!(wizard_link_byte_for_byte, |app: TestApp| async move {
    let space = example_space(&app).await;
    let (_, key) = admin(&app, &space, "admin").await;
    let alice = app.account(&space, "alice", "alice-password").await;

    // FlexiAPI's WizardTest, first case: a call with a configuration to fetch.
    let (status, body) = post_wizard(
        &app,
        Some(&key),
        json!({
            "provisioning_account_id": alice.id,
            "sip": "sip:admin@sip.linphone.org",
            "linphone_action": "call",
            "linphone_use_sips": false
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43);
    assert_eq!(
        body,
        json!({
            "provisioning_account_id": alice.id,
            "sip": "sip:admin@sip.linphone.org",
            "linphone_action": "call",
            "linphone_use_sips": false,
            "token": token,
            "url": format!("{PUBLIC}/wizard/{token}"),
        })
    );
    let wizard_path = format!("/wizard/{token}");

    // A link previewer's HEAD leaves the link alone.
    let head = app
        .client
        .head(format!("{}{wizard_path}", app.base))
        .header("host", HOST);
    assert_eq!(head.send().await.unwrap().status(), 200);

    let (status, html) = page(&app, &wizard_path, LINUX).await;
    assert_eq!(status, 200, "{html}");
    let link = open_app_link(&html);
    let minted = fetched_token(&link);
    assert_eq!(
        link,
        format!(
            "sip-linphone:admin@sip.linphone.org?linphone-action=call&linphone-fetch-config=https%3A%2F%2Fsip.example.com%2Fprovisioning%2F{minted}"
        )
    );
    assert!(
        html.contains("<h3 class=\"center\">Start a Linphone call</h3>"),
        "{html}"
    );
    assert!(html.contains("<script>document.querySelector('#open_app').click()</script>"));
    assert!(html.contains(
        "href=\"https://download.linphone.org/releases/linux/latest_app\">Download Linphone for GNU/Linux</a>"
    ));
    assert!(html.contains("Download for another platform"));

    // The fetched configuration is Alice's, once.
    let (status, doc) = provision(&app, &format!("/provisioning/{minted}")).await;
    assert_eq!(status, 200, "{doc}");
    assert_document_of(&doc, &alice);
    assert_eq!(
        provision(&app, &format!("/provisioning/{minted}")).await.0,
        404
    );

    // Single use: a browser gets the error page, a script JSON.
    let (status, html) = page(&app, &wizard_path, LINUX).await;
    assert_eq!(status, 404);
    assert!(
        html.contains("This link does not work (any more)"),
        "{html}"
    );
    let (status, body) = status_json(call(&app, Method::GET, HOST, &wizard_path, None)).await;
    assert_eq!(status, 404);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already been used"),
        "{body}"
    );

    // `bye` with SIPS: the flag ends the query.
    let (_, body) = post_wizard(
        &app,
        Some(&key),
        json!({"provisioning_account_id": alice.id, "sip": "sip:admin@sip.linphone.org",
               "linphone_action": "bye", "linphone_use_sips": true}),
    )
    .await;
    let (_, html) = page(
        &app,
        &format!("/wizard/{}", body["token"].as_str().unwrap()),
        WINDOWS,
    )
    .await;
    let link = open_app_link(&html);
    let minted = fetched_token(&link);
    assert_eq!(
        link,
        format!(
            "sip-linphone:admin@sip.linphone.org?linphone-action=bye&linphone-fetch-config=https%3A%2F%2Fsip.example.com%2Fprovisioning%2F{minted}&linphone-use-sips=true"
        )
    );
    assert!(html.contains("Configure your Linphone application"));
    assert!(html.contains("https://download.linphone.org/releases/windows/latest_app"));

    // No account, no action: `show`; a stored `false` overrides the visit's parameter.
    let (_, body) = post_wizard(
        &app,
        Some(&key),
        json!({"provisioning_account_id": null, "sip": "sip:admin@sip.linphone.org",
               "linphone_action": null, "linphone_use_sips": false}),
    )
    .await;
    let path = format!(
        "/wizard/{}?linphone-use-sips",
        body["token"].as_str().unwrap()
    );
    let (status, html) = page(&app, &path, IPHONE).await;
    assert_eq!(status, 200);
    assert_eq!(
        open_app_link(&html),
        "sip-linphone:admin@sip.linphone.org?linphone-action=show"
    );
    assert!(html.contains("Open the Linphone application"));
    assert!(html.contains("href=\"https://www.linphone.org/en/download/\">Download Linphone</a>"));
    assert!(
        !html.contains("Download for another platform"),
        "a phone: {html}"
    );

    // `show` needs no SIP URI (FLEXIAPI-512); with no stored flag the visit's parameter decides.
    let (status, body) = post_wizard(&app, Some(&key), json!({"linphone_action": "show"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sip"], Value::Null);
    let token = body["token"].as_str().unwrap();
    let (_, html) = page(&app, &format!("/wizard/{token}?linphone-use-sips=1"), LINUX).await;
    assert_eq!(
        open_app_link(&html),
        "sip-linphone:?linphone-action=show&linphone-use-sips=true"
    );
    let (_, body) = post_wizard(&app, Some(&key), json!({"linphone_action": "show"})).await;
    let (_, html) = page(
        &app,
        &format!("/wizard/{}", body["token"].as_str().unwrap()),
        LINUX,
    )
    .await;
    assert_eq!(open_app_link(&html), "sip-linphone:?linphone-action=show");

    // Without a token, the query builds the link; what is not valid is left out.
    for (query, expected) in [
        (
            "?sip=sip%3Aadmin%40sip.linphone.org&linphone-action=decline",
            "sip-linphone:admin@sip.linphone.org?linphone-action=decline",
        ),
        (
            "?sip=sip%3Aadmin%40sip.linphone.org&linphone-use-sips=whatever",
            "sip-linphone:admin@sip.linphone.org?linphone-action=show&linphone-use-sips=true",
        ),
        (
            "?sip=mailto%3Ax%40y.z&linphone-action=dance",
            "sip-linphone:?linphone-action=show",
        ),
        ("", "sip-linphone:?linphone-action=show"),
    ] {
        let (status, html) = page(&app, &format!("/wizard{query}"), LINUX).await;
        assert_eq!(status, 200, "{query}: {html}");
        assert_eq!(open_app_link(&html), expected, "{query}");
    }

    // The older page for a provisioning token is still served, consuming nothing.
    let bob = app.account(&space, "bob", "bob-password").await;
    let legacy = app.token(&bob).await;
    let (status, html) = page(&app, &format!("/wizard/{legacy}"), LINUX).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!(
            "href=\"linphone-config:{PUBLIC}/provisioning/{legacy}\""
        )),
        "{html}"
    );
    assert_eq!(
        provision(&app, &format!("/provisioning/{legacy}")).await.0,
        200
    );
    assert_eq!(page(&app, "/wizard/no-such-token", LINUX).await.0, 404);

    // A link answers only on its own space's host.
    app.space("other.example.com", |_| {}).await;
    let (_, body) = post_wizard(&app, Some(&key), json!({"linphone_action": "show"})).await;
    let r = app
        .get(
            "other.example.com",
            &format!("/wizard/{}", body["token"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Made and opened links are in the audit trail, never with their token.
    let created = wait_audit(&app, &key, "action=wizard.created", 6).await;
    let opened = wait_audit(&app, &key, "action=wizard.opened", 5).await;
    let about_alice = created
        .iter()
        .filter(|e| e["account_id"] == json!(alice.id))
        .count();
    assert_eq!(about_alice, 2, "{created:?}");
    assert!(opened.iter().all(|e| e["actor_kind"] == "anonymous"));
    let trail = format!("{created:?}{opened:?}");
    assert!(!trail.contains(&token.to_string()));
    app.stop().await;
});

both_backends!(wizard_validation_and_roles, |app: TestApp| async move {
    let space = example_space(&app).await;
    let (_, key) = admin(&app, &space, "admin").await;
    let alice = app.account(&space, "alice", "alice-password").await;
    let other = app.space("other.example.com", |_| {}).await;
    let stranger = app.account(&other, "carol", "carol-password").await;

    for (body, field) in [
        (json!({"linphone_action": "call"}), "sip"),
        (json!({"linphone_action": "call", "sip": null}), "sip"),
        (json!({"sip": null}), "sip"),
        (json!({"sip": ""}), "sip"),
        (json!({"sip": 12}), "sip"),
        (json!({"sip": "http://example.com"}), "sip"),
        (json!({"sip": "sip:a@b@c.com"}), "sip"),
        (
            json!({"sip": format!("sip:{}@example.com", "a".repeat(260))}),
            "sip",
        ),
        (json!({"linphone_action": "dance"}), "linphone_action"),
        (json!({"linphone_action": 3}), "linphone_action"),
        (json!({"linphone_use_sips": "maybe"}), "linphone_use_sips"),
        (
            json!({"provisioning_account_id": "x"}),
            "provisioning_account_id",
        ),
        (
            json!({"provisioning_account_id": alice.id + 1000}),
            "provisioning_account_id",
        ),
        // FlexiAPI takes any account; a link here provisions only an account of the space.
        (
            json!({"provisioning_account_id": stranger.id}),
            "provisioning_account_id",
        ),
    ] {
        let (status, answer) = post_wizard(&app, Some(&key), body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["message"], "The given data was invalid.");
        let errors = answer["errors"].as_object().unwrap();
        assert!(errors.contains_key(field), "{body}: {answer}");
    }
    let (status, answer) = post_wizard(&app, Some(&key), json!([1])).await;
    assert_eq!(status, 400, "{answer}");

    // Accepted forms: an empty body (`show`), `sips:`, a numeric string id, booleans as 0/1.
    for body in [
        json!({}),
        json!({"sip": "sips:bob@example.com:5061;transport=tls", "linphone_action": "accept"}),
        json!({"provisioning_account_id": alice.id.to_string(), "linphone_use_sips": 1}),
    ] {
        let (status, answer) = post_wizard(&app, Some(&key), body.clone()).await;
        assert_eq!(status, 201, "{body}: {answer}");
    }

    // Roles: no key 401, a user's key 403, another space's admin 403 on this host.
    assert_eq!(post_wizard(&app, None, json!({})).await.0, 401);
    let user_key = user_key(&app, &alice, None).await;
    let (status, answer) = post_wizard(&app, Some(&user_key), json!({})).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (403, Some("Unauthorized area"))
    );
    let (_, other_key) = admin(&app, &other, "otheradmin").await;
    assert_eq!(post_wizard(&app, Some(&other_key), json!({})).await.0, 403);
    assert_eq!(post_wizard(&app, Some("not-a-key"), json!({})).await.0, 401);
    app.stop().await;
});

// ---- the provisioning e-mail ---------------------------------------------------------------

/// The relay's AUTH user and password (the password has a `/`, percent-encoded in the URL).
const RELAY_USER: &str = "provisio";
const RELAY_PASSWORD: &str = "s3cr/t-relay";

/// A running `tests/smtp_sink.py`: its port and the directory of the messages it took.
struct Relay {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Relay {
    /// Starts the relay; `None` (printed) when Python or aiosmtpd is missing outside CI.
    fn start() -> Option<Relay> {
        if !tool_available(
            "python3 -c 'import aiosmtpd'",
            "Python's aiosmtpd",
            "pip install aiosmtpd",
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .args([RELAY_USER, RELAY_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP relay");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the relay did not start: {line:?}"));
        Some(Relay { child, port, dir })
    }

    /// `smtp.url` for this relay, with its credentials.
    fn url(&self) -> String {
        format!(
            "smtp://{RELAY_USER}:{}@127.0.0.1:{}",
            RELAY_PASSWORD.replace('/', "%2F"),
            self.port
        )
    }

    /// The summary of the `n`-th message taken (written before the relay said 250).
    fn message(&self, n: usize) -> Value {
        let path: PathBuf = self.dir.path().join(format!("{n}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("message {n} did not arrive ({}): {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// How many messages were taken.
    fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .count()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Closing its standard input ends it; kill is the fallback.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An app whose `[smtp]` points at `relay` (`templates` as `templates_dir`).
async fn app_with_relay(
    backend: Backend,
    url: String,
    templates: Option<PathBuf>,
) -> Option<TestApp> {
    TestApp::start_with(backend, move |s| {
        s.smtp.url = url;
        s.smtp.from = "Example Phones <noreply@example.com>".to_string();
        s.smtp.templates_dir = templates.unwrap_or_default();
    })
    .await
}

/// `POST /api/accounts/{id}/send_provisioning_email`: (status, body text).
async fn send_email(app: &TestApp, key: Option<&str>, id: i64) -> (u16, String) {
    let r = call(
        app,
        Method::POST,
        HOST,
        &format!("/api/accounts/{id}/send_provisioning_email"),
        key,
    )
    .send()
    .await
    .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Every QR code rqrr finds in a PNG.
fn decode_qr(png: &[u8]) -> Vec<String> {
    let image = image::load_from_memory(png).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    prepared
        .detect_grids()
        .into_iter()
        .filter_map(|g| g.decode().ok().map(|(_, content)| content))
        .collect()
}

/// The mail arrives through a real relay (with AUTH), multipart text + HTML with the QR code
/// inline; the QR code provisions the account, the link opens the wizard page whose own
/// provisioning URL provisions it again; a space's templates replace the texts.
async fn email_end_to_end(backend: Backend) {
    let Some(relay) = Relay::start() else { return };
    let templates = tempfile::tempdir().unwrap();
    let Some(app) =
        app_with_relay(backend, relay.url(), Some(templates.path().to_path_buf())).await
    else {
        return;
    };
    let space = example_space(&app).await;
    let (_, key) = admin(&app, &space, "admin").await;
    let anna = app
        .account_with(&space, "anna", "anna-password", |a| {
            a.email = Some("anna@example.org".to_string());
            a.display_name = Some("Anna Müller".to_string());
        })
        .await;

    let (status, body) = send_email(&app, Some(&key), anna.id).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let mail = relay.message(0);
    assert_eq!(
        mail["auth_login"], RELAY_USER,
        "the relay's credentials were used"
    );
    assert_eq!(mail["mail_from"], "noreply@example.com");
    assert_eq!(mail["rcpt_tos"], json!(["anna@example.org"]));
    assert_eq!(mail["from"], "Example Phones <noreply@example.com>");
    assert_eq!(mail["to"], "Anna Müller <anna@example.org>");
    assert_eq!(
        mail["subject"],
        "Welcome to Example Phones: Start using your account today"
    );
    assert_eq!(
        mail["structure"],
        json!([
            "multipart/alternative",
            "text/plain",
            "multipart/related",
            "text/html",
            "image/png"
        ])
    );
    let text = mail["text"].as_str().unwrap();
    let html = mail["html"].as_str().unwrap();
    let link = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("{PUBLIC}/wizard/")))
        .unwrap_or_else(|| panic!("no wizard link in the text part: {text}"))
        .to_string();
    assert!(text.contains("Hello anna@sip.example.com,"), "{text}");
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    assert!(
        html.contains("src=\"cid:provisioning-qrcode@provisio\""),
        "{html}"
    );
    let image = &mail["images"][0];
    assert_eq!(image["content_id"], "<provisioning-qrcode@provisio>");
    assert!(
        image["disposition"].as_str().unwrap().starts_with("inline"),
        "{image}"
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(image["data"].as_str().unwrap())
        .unwrap();

    // The QR code is a provisioning URL that provisions Anna (the phone sends the header).
    let codes = decode_qr(&png);
    assert_eq!(codes.len(), 1, "{codes:?}");
    let qr_url = &codes[0];
    assert!(
        qr_url.starts_with(&format!("{PUBLIC}/provisioning/")),
        "{qr_url}"
    );
    let r = follow(&app, qr_url)
        .header("x-linphone-provisioning", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_document_of(&r.text().await.unwrap(), &anna);

    // The link opens the wizard, which hands the app a fresh provisioning URL for Anna.
    let r = follow(&app, &link)
        .header("user-agent", LINUX)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page_html = r.text().await.unwrap();
    let app_link = open_app_link(&page_html);
    let minted = fetched_token(&app_link);
    assert_eq!(
        app_link,
        format!(
            "sip-linphone:?linphone-action=show&linphone-fetch-config=https%3A%2F%2Fsip.example.com%2Fprovisioning%2F{minted}"
        )
    );
    let (status, doc) = provision(&app, &format!("/provisioning/{minted}")).await;
    assert_eq!(status, 200);
    assert_document_of(&doc, &anna);
    assert_eq!(
        follow(&app, &link).send().await.unwrap().status(),
        404,
        "single use"
    );
    assert_eq!(
        follow(&app, qr_url)
            .header("x-linphone-provisioning", "1")
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "the QR code's token was used"
    );

    // A space's own texts, with placeholders; the part it does not override stays built in.
    let own = templates.path().join(HOST);
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(own.join("provisioning.subject"), "Hello {{ username }}!\n").unwrap();
    std::fs::write(
        own.join("provisioning.txt"),
        "{{display_name}}, open {{link}} ({{identifier}}, {{space}}, {{domain}}) {{unknown}}",
    )
    .unwrap();
    let bert = app
        .account_with(&space, "bert", "bert-password", |a| {
            a.email = Some("bert@example.org".to_string());
            a.display_name = Some("Bert".to_string());
        })
        .await;
    assert_eq!(send_email(&app, Some(&key), bert.id).await.0, 200);
    let mail = relay.message(1);
    assert_eq!(mail["subject"], "Hello bert!");
    let text = mail["text"].as_str().unwrap();
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{PUBLIC}/wizard/")))
        .unwrap();
    assert_eq!(
        text.trim_end(),
        format!(
            "Bert, open {link} (bert@sip.example.com, Example Phones, sip.example.com) {{{{unknown}}}}"
        )
    );
    assert!(
        mail["html"]
            .as_str()
            .unwrap()
            .contains("Welcome to Example Phones")
    );
    assert_eq!(follow(&app, link).send().await.unwrap().status(), 200);

    let sent = wait_audit(&app, &key, "action=provisioning_email.sent", 2).await;
    assert!(sent.iter().all(|e| e["outcome"] == "ok"), "{sent:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_end_to_end_sqlite() {
    email_end_to_end(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_end_to_end_postgres() {
    email_end_to_end(Backend::Postgres).await;
}

both_backends!(email_refusals_without_a_relay, |app: TestApp| async move {
    let space = example_space(&app).await;
    let (_, key) = admin(&app, &space, "admin").await;
    let with_mail = app
        .account_with(&space, "anna", "anna-password", |a| {
            a.email = Some("anna@example.org".to_string())
        })
        .await;
    let without = app.account(&space, "bob", "bob-password").await;
    let (status, body) = send_email(&app, Some(&key), without.id).await;
    assert_eq!(status, 403);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["message"],
        "No email configured"
    );
    let (status, body) = send_email(&app, Some(&key), with_mail.id).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("smtp.url"), "{body}");
    assert_eq!(
        send_email(&app, Some(&key), with_mail.id + 1000).await.0,
        404
    );
    assert_eq!(send_email(&app, None, with_mail.id).await.0, 401);
    let user = user_key(&app, &with_mail, None).await;
    assert_eq!(send_email(&app, Some(&user), with_mail.id).await.0, 403);
    app.stop().await;
});

/// A relay that is down: 503 naming it (never its password), and nothing minted, so the
/// account's current token still works. A relay that refuses the recipient: 502 with its
/// answer; one that asks to retry later: 503.
async fn email_relay_failures(backend: Backend) {
    let Some(relay) = Relay::start() else { return };
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = format!("smtp://{RELAY_USER}:{RELAY_PASSWORD}-down@127.0.0.1:{closed_port}")
        .replace("/t-relay", "%2Ft-relay");
    let Some(app) = app_with_relay(backend, down, None).await else {
        return;
    };
    let space = example_space(&app).await;
    let (_, key) = admin(&app, &space, "admin").await;
    let anna = app
        .account_with(&space, "anna", "anna-password", |a| {
            a.email = Some("anna@example.org".to_string())
        })
        .await;
    let current = app.token(&anna).await;
    let (status, body) = send_email(&app, Some(&key), anna.id).await;
    assert_eq!(status, 503, "{body}");
    let message = serde_json::from_str::<Value>(&body).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{closed_port}"))
            && message.contains("cannot be reached"),
        "{message}"
    );
    assert!(
        !body.contains("s3cr") && !body.contains(RELAY_USER),
        "{body}"
    );
    assert_eq!(
        provision(&app, &format!("/provisioning/{current}")).await.0,
        200,
        "nothing was minted"
    );
    let failed = wait_audit(&app, &key, "action=provisioning_email.sent", 1).await;
    assert_eq!(failed[0]["outcome"], "failed");
    assert!(!failed[0].to_string().contains("s3cr"));
    app.stop().await;

    let Some(app) = app_with_relay(backend, relay.url(), None).await else {
        return;
    };
    let space = example_space(&app).await;
    let (_, key) = admin(&app, &space, "admin").await;
    for (user, status, needle) in [("refused", 502, "550"), ("busy", 503, "451")] {
        let account = app
            .account_with(&space, user, "some-password", |a| {
                a.email = Some(format!("{user}@example.org"))
            })
            .await;
        let (got, body) = send_email(&app, Some(&key), account.id).await;
        assert_eq!(got, status, "{user}: {body}");
        assert!(
            body.contains(needle) && body.contains("refused") == (status == 502),
            "{body}"
        );
        assert!(!body.contains("s3cr"), "{body}");
    }
    assert_eq!(relay.count(), 0, "no message was taken");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_relay_failures_sqlite() {
    email_relay_failures(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_relay_failures_postgres() {
    email_relay_failures(Backend::Postgres).await;
}

//! Helpers for the API tests: admins and keys made directly in the store, API calls, and an
//! HTTP Digest client written from RFC 7616 (independently of provisio's own code: it hashes
//! with the `md-5`/`sha2` crates and parses challenges itself).
#![allow(dead_code)]

use crate::common::server::TestApp;
use md5::Md5;
use provisio::model::{Account, Algorithm, NewPassword, Space, now_ms};
use provisio::secret::{hash_secret, new_token};
use provisio::store::{NewAccount, NewApiKey};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Lowercase hex of H(data).
pub fn h(alg: Algorithm, data: &str) -> String {
    match alg {
        Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
        Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
    }
}

/// HA1 = H(user:realm:password).
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    h(alg, &format!("{user}:{realm}:{password}"))
}

/// A parsed `WWW-Authenticate: Digest …` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The header exactly as received.
    pub raw: String,
    /// Its parameters.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter.
    pub fn get(&self, k: &str) -> &str {
        self.params.get(k).map(String::as_str).unwrap_or("")
    }

    /// The header with nonce and opaque masked, to compare shapes.
    pub fn shape(&self) -> String {
        self.raw
            .replace(self.get("nonce"), "N")
            .replace(self.get("opaque"), "O")
    }
}

/// Every Digest challenge of a response, in order.
pub fn challenges(r: &reqwest::Response) -> Vec<Challenge> {
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| {
            let raw = v.to_str().unwrap().to_string();
            let rest = raw.strip_prefix("Digest ").expect("a Digest challenge");
            let mut params = BTreeMap::new();
            for part in rest.split(',') {
                let (k, v) = part.split_once('=').expect("k=v");
                params.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
            }
            Challenge { raw, params }
        })
        .collect()
}

/// Asserts FlexiAPI's exact challenge format and returns the challenge.
pub fn assert_flexiapi_format(c: &Challenge, realm: &str, alg: Algorithm) {
    let expected = format!(
        "Digest realm=\"{realm}\",qop=\"auth\",algorithm={},nonce=\"{}\",opaque=\"{}\"",
        alg.as_str(),
        c.get("nonce"),
        c.get("opaque")
    );
    assert_eq!(c.raw, expected);
    for k in ["nonce", "opaque"] {
        let v = c.get(k);
        assert_eq!(v.len(), 64, "{k} is 32 random bytes in hex");
        assert!(
            v.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}

/// What a Digest answer is made of.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    /// The challenge answered.
    pub challenge: &'a Challenge,
    /// Username.
    pub user: &'a str,
    /// HA1 held by the client.
    pub ha1: &'a str,
    /// Algorithm of that HA1 (sent quoted, as liblinphone does).
    pub alg: Algorithm,
    /// Method of the request.
    pub method: &'a str,
    /// `uri=` value.
    pub uri: &'a str,
    /// Nonce count (`None`: RFC 2069 style, no qop).
    pub nc: Option<u32>,
}

impl Answer<'_> {
    /// The Authorization header value, in liblinphone's parameter order and quoting.
    pub fn header(&self) -> String {
        let nonce = self.challenge.get("nonce");
        let ha2 = h(self.alg, &format!("{}:{}", self.method, self.uri));
        let cnonce = "~F16xrmWgZdUs0Mn";
        let (response, tail) = match self.nc {
            Some(nc) => {
                let nc = format!("{nc:08x}");
                let r = h(
                    self.alg,
                    &format!("{}:{nonce}:{nc}:{cnonce}:auth:{ha2}", self.ha1),
                );
                (r, format!("cnonce=\"{cnonce}\", nc={nc}, qop=auth, "))
            }
            None => (
                h(self.alg, &format!("{}:{nonce}:{ha2}", self.ha1)),
                "nc=00000001, ".to_string(),
            ),
        };
        format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm=\"{}\", opaque=\"{}\", username=\"{}\", response=\"{response}\", {tail}uri=\"{}\"",
            self.challenge.get("realm"),
            self.alg.as_str(),
            self.challenge.get("opaque"),
            self.user,
            self.uri
        )
    }
}

/// A client whose connections come from another loopback address (127.0.0.0/8 is all local).
pub fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

/// Creates an account with explicit passwords.
pub async fn account_with_passwords(
    app: &TestApp,
    space: &Space,
    user: &str,
    passwords: Vec<NewPassword>,
) -> Account {
    let new = NewAccount {
        username: user.to_string(),
        domain: space.domain.clone(),
        passwords,
        ..Default::default()
    };
    app.state
        .store
        .create_account(&new, now_ms())
        .await
        .unwrap()
}

/// An admin of `space` with an admin API key (clear value returned).
pub async fn admin(app: &TestApp, space: &Space, user: &str) -> (Account, String) {
    let account = app
        .account_with(space, user, "admin-password", |a| {
            a.admin = true;
            a.activated = true;
        })
        .await;
    let key = admin_key(app, &account).await;
    (account, key)
}

/// A never-expiring admin key for an account.
pub async fn admin_key(app: &TestApp, account: &Account) -> String {
    let key = new_token();
    app.state
        .store
        .create_api_key(
            &NewApiKey {
                account_id: account.id,
                key_hash: hash_secret(&key),
                name: Some(format!("test-{}", &key[..6])),
                ip: None,
                expires_after_minutes: Some(0),
            },
            now_ms(),
        )
        .await
        .unwrap();
    key
}

/// A user key (optionally bound to an IP) for an account.
pub async fn user_key(app: &TestApp, account: &Account, ip: Option<&str>) -> String {
    let key = new_token();
    app.state
        .store
        .create_api_key(
            &NewApiKey {
                account_id: account.id,
                key_hash: hash_secret(&key),
                name: None,
                ip: ip.map(str::to_string),
                expires_after_minutes: None,
            },
            now_ms(),
        )
        .await
        .unwrap();
    key
}

/// A request with Host and an optional API key, as FlexiAPI's `keyAuthenticated()` (JSON in
/// and out).
pub fn call(
    app: &TestApp,
    method: reqwest::Method,
    host: &str,
    path: &str,
    key: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut r = app
        .client
        .request(method, format!("{}{}", app.base, path))
        .header("host", host)
        .header("accept", "application/json");
    if let Some(key) = key {
        r = r.header("x-api-key", key);
    }
    r
}

/// Status and JSON body (`Null` when the body is not JSON).
pub async fn status_json(r: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Whether an external tool can run; when it cannot, skip with a message, or fail under CI.
pub fn tool_available(check: &str, what: &str, install: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(check)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but {what} is missing ({install})");
        }
        eprintln!("SKIPPED: {what} is missing ({install})");
    }
    ok
}

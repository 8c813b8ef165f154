//! Domain types shared by the store, the pipeline, the hooks and the API, so no layer
//! depends on another layer's representation.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Digest hash algorithm of a stored SIP password; FlexiAPI spells them exactly `MD5` and `SHA-256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Algorithm {
    /// RFC 2617 MD5, what liblinphone assumes when a credential names no algorithm.
    #[serde(rename = "MD5")]
    Md5,
    /// RFC 7616 SHA-256, FlexiAPI's default for new spaces.
    #[default]
    #[serde(rename = "SHA-256")]
    Sha256,
}

impl Algorithm {
    /// The token as it appears in XML, Digest headers and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "MD5" | "md5" => Ok(Algorithm::Md5),
            "SHA-256" | "sha-256" => Ok(Algorithm::Sha256),
            other => Err(format!(
                "unknown algorithm {other:?} (expected MD5 or SHA-256)"
            )),
        }
    }
}

/// How strictly a space demands proof that the requester is a Linphone client before it
/// hands out (and burns) a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HeaderMode {
    /// The `x-linphone-provisioning` header must be present (FlexiAPI, liblinphone ≥ 5.3).
    #[default]
    Required,
    /// The header, or a User-Agent naming Linphone (liblinphone < 5.3 never sends the header).
    LinphoneUserAgent,
    /// No check: for closed networks and tests only.
    Off,
}

impl HeaderMode {
    /// The spelling used in configuration, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderMode::Required => "required",
            HeaderMode::LinphoneUserAgent => "linphone-user-agent",
            HeaderMode::Off => "off",
        }
    }
}

impl FromStr for HeaderMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "required" => Ok(HeaderMode::Required),
            "linphone-user-agent" => Ok(HeaderMode::LinphoneUserAgent),
            "off" => Ok(HeaderMode::Off),
            other => Err(format!(
                "unknown header mode {other:?} (expected required, linphone-user-agent or off)"
            )),
        }
    }
}

/// FlexiAPI's `ui` section flags, emitted in this exact order (reference §1.9 step 8a).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UiFlags {
    /// Leaks the space's super flag to the client, as FlexiAPI does.
    pub super_space: bool,
    /// Hides chat in the app.
    pub disable_chat_feature: bool,
    /// Hides meetings in the app.
    pub disable_meetings_feature: bool,
    /// Hides broadcasts in the app (FlexiAPI default: true).
    pub disable_broadcast_feature: bool,
    /// Hides the whole settings screen.
    pub hide_settings: bool,
    /// Hides the account settings screen.
    pub hide_account_settings: bool,
    /// Disables call recordings.
    pub disable_call_recordings_feature: bool,
    /// Shows only the user part of SIP URIs.
    pub only_display_sip_uri_username: bool,
    /// Hides "create account" in the assistant.
    pub assistant_hide_create_account: bool,
    /// Disables QR login in the assistant.
    pub assistant_disable_qr_code: bool,
    /// Hides third-party SIP accounts in the assistant.
    pub assistant_hide_third_party_account: bool,
    /// Maximum number of accounts in the app (0 = unlimited).
    pub max_account: i64,
}

impl Default for UiFlags {
    fn default() -> Self {
        UiFlags {
            super_space: false,
            disable_chat_feature: false,
            disable_meetings_feature: false,
            disable_broadcast_feature: true,
            hide_settings: false,
            hide_account_settings: false,
            disable_call_recordings_feature: false,
            only_display_sip_uri_username: false,
            assistant_hide_create_account: false,
            assistant_disable_qr_code: false,
            assistant_hide_third_party_account: false,
            max_account: 0,
        }
    }
}

impl UiFlags {
    /// The `(key, value)` pairs in FlexiAPI's order, booleans as `0`/`1`.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let b = |v: bool| if v { "1" } else { "0" }.to_string();
        vec![
            ("super", b(self.super_space)),
            ("disable_chat_feature", b(self.disable_chat_feature)),
            ("disable_meetings_feature", b(self.disable_meetings_feature)),
            (
                "disable_broadcast_feature",
                b(self.disable_broadcast_feature),
            ),
            ("hide_settings", b(self.hide_settings)),
            ("hide_account_settings", b(self.hide_account_settings)),
            (
                "disable_call_recordings_feature",
                b(self.disable_call_recordings_feature),
            ),
            (
                "only_display_sip_uri_username",
                b(self.only_display_sip_uri_username),
            ),
            (
                "assistant_hide_create_account",
                b(self.assistant_hide_create_account),
            ),
            (
                "assistant_disable_qr_code",
                b(self.assistant_disable_qr_code),
            ),
            (
                "assistant_hide_third_party_account",
                b(self.assistant_hide_third_party_account),
            ),
            ("max_account", self.max_account.to_string()),
        ]
    }
}

/// What a space does when one of its hook scripts fails at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HookFailure {
    /// Refuse the request with a generic 500: the client keeps its previous configuration.
    #[default]
    Fail,
    /// Serve the document without the failing script's changes.
    Skip,
}

impl HookFailure {
    /// The spelling used in configuration, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            HookFailure::Fail => "fail",
            HookFailure::Skip => "skip",
        }
    }
}

impl FromStr for HookFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail" => Ok(HookFailure::Fail),
            "skip" => Ok(HookFailure::Skip),
            other => Err(format!(
                "unknown hook failure mode {other:?} (expected fail or skip)"
            )),
        }
    }
}

/// A tenant: one SIP domain served on one HTTP host, with its own provisioning settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Space {
    /// Database id (not exposed in FlexiAPI's space JSON).
    #[serde(skip_serializing)]
    pub id: i64,
    /// SIP domain of the space's accounts; the key of the space in the API.
    pub domain: String,
    /// HTTP host (lower-case, no port) whose requests belong to this space.
    pub host: String,
    /// Human-readable name.
    pub name: String,
    /// Super spaces make their admins super admins.
    #[serde(rename = "super")]
    pub super_space: bool,
    /// Digest realm used for HA1 and challenges (defaults to the domain).
    pub realm: String,
    /// Algorithm used for new passwords and resets.
    pub password_algorithm: Algorithm,
    /// Base linphonerc (INI) emitted first in every document of this space.
    pub base_rc: Option<String>,
    /// FlexiAPI's `custom_provisioning_entries` (INI), emitted after the base rc.
    pub custom_entries: Option<String>,
    /// FlexiAPI's `custom_provisioning_overwrite_all`: every entry gets `overwrite="true"`.
    pub overwrite_all: bool,
    /// FlexiAPI's `ui` section.
    pub ui: UiFlags,
    /// `misc/contacts-vcard-list` URL; omitted when empty.
    pub vcard_list_url: Option<String>,
    /// Public base URL (scheme://host[:port]) used in QR codes and wizard links.
    pub public_url: Option<String>,
    /// Lifetime of provisioning tokens in minutes (0 = never expire, as FlexiAPI's default).
    pub token_lifetime_minutes: i64,
    /// The `x-linphone-provisioning` guard mode.
    pub header_mode: HeaderMode,
    /// What a failing hook script does to the request.
    pub hook_failure: HookFailure,
    /// Maximum accounts (0 = unlimited).
    pub max_accounts: i64,
    /// The space's OpenID Connect provider, whose JWTs authenticate its accounts; `None`: no
    /// bearer tokens (FlexiAPI's `oidc_authentication_configuration`).
    pub oidc: Option<OidcSettings>,
    /// `/provisioning/me` accepts a verified client certificate naming one of the space's
    /// accounts (FlexiAPI's `client_certificate_authentication`, FLEXIAPI-440).
    pub client_certificate_authentication: bool,
}

/// The claim FlexiAPI reads a SIP URI from when the space names none.
pub const DEFAULT_SIP_IDENTIFIER_CLAIM: &str = "sip_identity";

/// How a space trusts the JWTs of its OpenID Connect provider (reference §4.4): where the
/// signing keys come from, which claims name the account, and what else a token must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcSettings {
    /// Base URL of the provider (Keycloak: `https://sso.example.com/`); with `realm`, the
    /// `authz_server` of the Bearer challenge.
    pub server_url: String,
    /// The provider's realm, named in the Bearer challenge.
    pub realm: String,
    /// PEM public key (RSA, or EC P-256) the tokens are signed with; or `jwks_url`.
    pub public_key: Option<String>,
    /// URL of the provider's JWKS (fetched over HTTP(S), cached, refreshed when a token names
    /// an unknown `kid`); or `public_key`.
    pub jwks_url: Option<String>,
    /// Claim holding the account's SIP URI (`sip_identity` by default); the `email` claim is
    /// the fallback.
    pub sip_identifier_claim: String,
    /// `aud` a token must carry, when set.
    pub audience: Option<String>,
    /// `iss` a token must carry, when set.
    pub issuer: Option<String>,
    /// Whether a bearer token is the only way in (FlexiAPI's behaviour): Digest and API keys
    /// are then refused on user routes and `/provisioning/me`.
    pub required: bool,
}

impl Default for OidcSettings {
    fn default() -> Self {
        OidcSettings {
            server_url: String::new(),
            realm: String::new(),
            public_key: None,
            jwks_url: None,
            sip_identifier_claim: DEFAULT_SIP_IDENTIFIER_CLAIM.to_string(),
            audience: None,
            issuer: None,
            required: false,
        }
    }
}

impl OidcSettings {
    /// The `authz_server` of the Bearer challenge: `{server_url}/realms/{realm}`, Keycloak's
    /// issuer URL (FlexiAPI pastes the two without a slash, so its `server_url` must end with
    /// one; here either spelling works).
    pub fn authz_server(&self) -> String {
        format!(
            "{}/realms/{}",
            self.server_url.trim_end_matches('/'),
            self.realm
        )
    }
}

impl Space {
    /// A space with FlexiAPI's defaults for the given domain, served on `host`.
    pub fn new(domain: &str, host: &str) -> Space {
        Space {
            id: 0,
            domain: domain.to_string(),
            host: host.to_ascii_lowercase(),
            name: domain.to_string(),
            super_space: false,
            realm: domain.to_string(),
            password_algorithm: Algorithm::Sha256,
            base_rc: None,
            custom_entries: None,
            overwrite_all: false,
            ui: UiFlags::default(),
            vcard_list_url: None,
            public_url: None,
            token_lifetime_minutes: 0,
            header_mode: HeaderMode::Required,
            hook_failure: HookFailure::Fail,
            max_accounts: 0,
            oidc: None,
            client_certificate_authentication: false,
        }
    }
}

/// A SIP account as provisioning and the API see it (never carries secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Database id.
    pub id: i64,
    /// SIP user part.
    pub username: String,
    /// SIP domain, which is also the key of the account's space.
    pub domain: String,
    /// Optional e-mail.
    pub email: Option<String>,
    /// Optional display name, quoted in `reg_identity`.
    pub display_name: Option<String>,
    /// Optional phone number.
    pub phone: Option<String>,
    /// Set by the first successful provisioning (or by an admin).
    pub activated: bool,
    /// Blocked accounts get 403 on the user API and on provisioning.
    pub blocked: bool,
    /// Admins manage the accounts of their space.
    pub admin: bool,
    /// DTMF protocol hint, as FlexiAPI keeps it.
    pub dtmf_protocol: Option<String>,
    /// Address of the request that created the account.
    pub ip_address: Option<String>,
    /// User agent of the request that created the account.
    pub user_agent: Option<String>,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Last update time, unix milliseconds.
    pub updated_at: i64,
    /// Free-form per-account key/values, visible to hooks.
    pub dictionary: BTreeMap<String, String>,
}

impl Account {
    /// `sip:user@domain`.
    pub fn sip_uri(&self) -> String {
        format!("sip:{}@{}", self.username, self.domain)
    }

    /// FlexiAPI's `fullIdentifier`: `"Display" <sip:user@domain>` or `<sip:user@domain>`, the
    /// display name as an RFC 3261 quoted-string (§25.1: `"` and `\` escaped), so a name
    /// holding either still parses as one name-addr (FlexiAPI pastes it raw).
    pub fn full_identifier(&self) -> String {
        match self.display_name.as_deref().filter(|d| !d.is_empty()) {
            Some(name) => format!("{} <{}>", quoted_string(name), self.sip_uri()),
            None => format!("<{}>", self.sip_uri()),
        }
    }
}

/// `text` as an RFC 3261 quoted-string (§25.1): wrapped in `"`, with `"` and `\` written as
/// quoted-pairs. The value rule keeps control characters out beforehand, so nothing else needs
/// escaping (UTF-8 is qdtext).
pub fn quoted_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A stored SIP password: only its HA1, never the clear value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Password {
    /// Database id.
    pub id: i64,
    /// Owner.
    pub account_id: i64,
    /// Hash algorithm of `ha1`.
    pub algorithm: Algorithm,
    /// Lowercase hex of H(username:realm:password).
    pub ha1: String,
}

/// A password about to be stored (HA1 already computed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPassword {
    /// Hash algorithm of `ha1`.
    pub algorithm: Algorithm,
    /// Lowercase hex of H(username:realm:password).
    pub ha1: String,
}

/// Current time in unix milliseconds, the unit every stored timestamp uses.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// FlexiAPI's JSON timestamp shape (`2026-08-20T10:00:00.000000Z`) for a unix-ms time.
pub fn iso_time(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        ),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_rfc3261_quoted_strings() {
        assert_eq!(quoted_string("Anna O'Reily"), "\"Anna O'Reily\"");
        assert_eq!(quoted_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quoted_string(""), "\"\"");
        assert_eq!(quoted_string("é ☃"), "\"é ☃\"");
    }
}

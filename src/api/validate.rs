//! Input validation shared by the API (422 with FlexiAPI's `errors` shape) and the CLI: every
//! text that can reach a document obeys the value rule ([`crate::lpconfig::ValueError`]) here,
//! where it enters, and every number lies in the documented range of [`limits`], so no
//! arithmetic on a client's number can overflow.

use crate::config::validate_public_url;
use crate::error::{AppError, FieldErrors};
use crate::lpconfig::{describe_forbidden, first_forbidden, ini};
use crate::model::{OidcSettings, Space};
use crate::store::NewAccount;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// The documented range of every number the API accepts (docs/openapi.yaml states the same
/// `minimum`/`maximum`; a test compares them).
pub mod limits {
    use std::ops::RangeInclusive;

    /// `provisioning_token_expiration_minutes`: 0 (never) to one year.
    pub const TOKEN_LIFETIME_MINUTES: RangeInclusive<i64> = 0..=525_600;
    /// `max_accounts`: 0 (unlimited) to ten million accounts per space.
    pub const MAX_ACCOUNTS: RangeInclusive<i64> = 0..=10_000_000;
    /// `max_account` (the `ui` flag the app reads as a C `int`): 0 (unlimited) to 1000.
    pub const UI_MAX_ACCOUNT: RangeInclusive<i64> = 0..=1_000;
    /// `page` of the account list.
    pub const PAGE: RangeInclusive<i64> = 1..=1_000_000;
    /// `per_page` of the account list.
    pub const PER_PAGE: RangeInclusive<i64> = 1..=100;
    /// Longest URL (`vcard_list_url`, `public_url`) a space may hold.
    pub const URL_CHARS: usize = 2_048;
}

/// Custom-entry keys FlexiAPI refuses because the platform sets them (reference §5.7).
pub const RESERVED_CUSTOM_KEYS: &[&str] = &[
    "account_proxy_registrar_address",
    "assistant_disable_qr_code",
    "assistant_hide_create_account",
    "assistant_hide_third_party_account",
    "copyright_text",
    "disable_broadcast_feature",
    "disable_call_recordings_feature",
    "disable_chat_feature",
    "disable_meetings_feature",
    "hide_account_settings",
    "hide_settings",
    "intro_registration_text",
    "max_account",
    "newsletter_registration_address",
    "only_display_sip_uri_username",
];

/// Collects field errors and turns them into one 422.
#[derive(Default)]
pub struct Errors(FieldErrors);

impl Errors {
    /// Records a message for a field.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_string())
            .or_default()
            .push(message.into());
    }

    /// `Ok` when nothing was recorded.
    pub fn finish(self) -> Result<(), AppError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.0))
        }
    }

    /// Checks free text against the value rule (and a length cap).
    pub fn text(&mut self, field: &str, value: Option<&str>, max: usize) {
        if let Some(v) = value {
            if v.chars().count() > max {
                self.add(
                    field,
                    format!("The {field} may not be greater than {max} characters."),
                );
            }
            self.chars(field, v);
        }
    }

    /// Checks text against the value rule alone, naming the first refused character.
    pub fn chars(&mut self, field: &str, value: &str) {
        if let Some(message) = forbidden_message(field, value) {
            self.add(field, message);
        }
    }

    /// Checks that a number lies in its documented range.
    pub fn range(&mut self, field: &str, value: i64, range: &RangeInclusive<i64>) {
        if !range.contains(&value) {
            self.add(field, range_message(field, range));
        }
    }
}

/// The 422 message for a value holding a character the value rule refuses, or `None`.
pub fn forbidden_message(field: &str, value: &str) -> Option<String> {
    first_forbidden(value).map(|c| {
        format!(
            "The {field} may not contain U+{:04X} ({}): control characters, line separators, U+FFFE and U+FFFF cannot go into a provisioning document.",
            c as u32,
            describe_forbidden(c as u32)
        )
    })
}

/// The 422 message for a number outside its range.
pub fn range_message(field: &str, range: &RangeInclusive<i64>) -> String {
    format!(
        "The {field} field must be between {} and {}.",
        range.start(),
        range.end()
    )
}

/// FlexiAPI's default username rule `^[a-z0-9+_.-]*$`, non-empty, at most 64 characters.
pub fn is_valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+_.-".contains(c))
}

/// A DNS-like name: letters, digits, `-`, `.`, at most 253 characters.
pub fn is_valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && !d.starts_with('.')
        && !d.ends_with('.')
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Checks an account about to be created (and its clear password, when there is one, against
/// the `min_password_length` setting).
pub fn new_account(
    a: &NewAccount,
    password: Option<&str>,
    min_password_length: usize,
) -> Result<(), AppError> {
    let mut e = Errors::default();
    if !is_valid_username(&a.username) {
        e.add(
            "username",
            "The username must be 1–64 characters among a-z 0-9 + _ . -",
        );
    }
    if !is_valid_domain(&a.domain) {
        e.add("domain", "The domain is not a valid domain name.");
    }
    e.text("display_name", a.display_name.as_deref(), 255);
    e.text("email", a.email.as_deref(), 255);
    if a.email
        .as_deref()
        .is_some_and(|m| !m.contains('@') || m.contains(char::is_whitespace))
    {
        e.add("email", "The email must be a valid email address.");
    }
    e.text("phone", a.phone.as_deref(), 64);
    if let Some(Err(why)) = password.map(|p| password_rule(p, min_password_length)) {
        e.add("password", why);
    }
    if let Some(d) = &a.dtmf_protocol
        && !["sipinfo", "rfc2833", "sipmessage"].contains(&d.as_str())
    {
        e.add(
            "dtmf_protocol",
            "The dtmf protocol must be one of sipinfo, rfc2833, sipmessage.",
        );
    }
    if let Err(AppError::Validation(fields)) = dictionary(&a.dictionary) {
        for (k, msgs) in fields {
            for m in msgs {
                e.add(&k, m);
            }
        }
    }
    e.finish()
}

/// The password rule: at least `min` characters, none refused by the value rule (a password
/// travels in JSON and on command lines; a control character in it is a mistake).
pub fn password_rule(password: &str, min: usize) -> Result<(), String> {
    if password.chars().count() < min {
        return Err(format!("The password must be at least {min} characters."));
    }
    match forbidden_message("password", password) {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// Dictionary keys are identifiers (1–64 of a-z A-Z 0-9 _ . -); values obey the value rule.
pub fn dictionary(d: &BTreeMap<String, String>) -> Result<(), AppError> {
    let mut e = Errors::default();
    for (k, v) in d {
        if k.is_empty()
            || k.len() > 64
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            e.add(
                "dictionary",
                format!("The key {k:?} must be 1–64 characters among a-z A-Z 0-9 _ . -"),
            );
        }
        if v.chars().count() > 4096 {
            e.add(
                "dictionary",
                format!("The value of {k:?} may not be greater than 4096 characters."),
            );
        }
        if let Some(message) = forbidden_message(&format!("value of {k:?}"), v) {
            e.add("dictionary", message);
        }
    }
    e.finish()
}

/// Checks a space's settings, including that its INI texts parse.
pub fn space(s: &Space) -> Result<(), AppError> {
    let mut e = Errors::default();
    if !is_valid_domain(&s.domain) {
        e.add("domain", "The domain is not a valid domain name.");
    }
    if s.host.is_empty()
        || s.host.len() > 253
        || !s
            .host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
    {
        e.add("host", "The host must be a host name (no port, no scheme).");
    }
    e.text("name", Some(&s.name), 255);
    // The realm is sent in `WWW-Authenticate` quoted-strings: printable ASCII only.
    if s.realm.is_empty()
        || s.realm.len() > 255
        || !s
            .realm
            .chars()
            .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\')
    {
        e.add(
            "realm",
            "The realm must be 1–255 printable ASCII characters, without a double quote or backslash.",
        );
    }
    for (field, text) in [
        ("base_rc", &s.base_rc),
        ("custom_provisioning_entries", &s.custom_entries),
    ] {
        if let Some(text) = text {
            match ini::parse(text) {
                Err(err) => e.add(field, format!("Invalid ini format: {err}")),
                Ok(parsed) if field == "custom_provisioning_entries" => {
                    let reserved: Vec<_> = parsed
                        .sections
                        .iter()
                        .flat_map(|s| s.entries.iter())
                        .filter(|en| RESERVED_CUSTOM_KEYS.contains(&en.name.as_str()))
                        .map(|en| en.name.clone())
                        .collect();
                    if !reserved.is_empty() {
                        e.add(
                            field,
                            format!(
                                "Invalid ini format. The following settings cannot be set, they are already handled by the platform: {}",
                                reserved.join(", ")
                            ),
                        );
                    }
                }
                Ok(_) => {}
            }
        }
    }
    for (field, url) in [
        ("vcard_list_url", &s.vcard_list_url),
        ("public_url", &s.public_url),
    ] {
        if let Some(url) = url.as_deref().filter(|u| !u.is_empty()) {
            if let Some(message) = forbidden_message(field, url) {
                e.add(field, message);
                continue;
            }
            let ok = if url.chars().count() > limits::URL_CHARS {
                Err(format!(
                    "may not be greater than {} characters",
                    limits::URL_CHARS
                ))
            } else if field == "public_url" {
                validate_public_url(url)
            } else if url.starts_with("http://") || url.starts_with("https://") {
                Ok(())
            } else {
                Err("must start with http:// or https://".to_string())
            };
            if let Err(why) = ok {
                e.add(field, format!("The {field} {why}."));
            }
        }
    }
    if let Some(oidc) = &s.oidc {
        check_oidc(&mut e, oidc);
    }
    e.range(
        "provisioning_token_expiration_minutes",
        s.token_lifetime_minutes,
        &limits::TOKEN_LIFETIME_MINUTES,
    );
    e.range("max_accounts", s.max_accounts, &limits::MAX_ACCOUNTS);
    e.range("max_account", s.ui.max_account, &limits::UI_MAX_ACCOUNT);
    e.finish()
}

/// Checks a space's OIDC provider: a server URL and a realm (they go into the Bearer
/// challenge's quoted-strings), exactly one key source, and a claim name.
fn check_oidc(e: &mut Errors, o: &OidcSettings) {
    const P: &str = "oidc_authentication_configuration";
    let quotable = |v: &str| {
        v.chars()
            .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\')
    };
    for (field, url, required) in [
        ("server_url", Some(o.server_url.as_str()), true),
        ("jwks_url", o.jwks_url.as_deref(), false),
    ] {
        let name = format!("{P}.{field}");
        match url {
            None | Some("") if required => e.add(&name, format!("The {field} field is required.")),
            None | Some("") => {}
            Some(url) => {
                let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
                let parses = url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
                if !scheme_ok || !parses || !quotable(url) || url.len() > limits::URL_CHARS {
                    e.add(
                        &name,
                        format!(
                            "The {field} must be an http:// or https:// URL of at most {} printable ASCII characters, without a double quote or backslash.",
                            limits::URL_CHARS
                        ),
                    );
                }
            }
        }
    }
    if o.realm.is_empty() || o.realm.len() > 255 || !quotable(&o.realm) {
        e.add(
            &format!("{P}.realm"),
            "The realm must be 1–255 printable ASCII characters, without a double quote or backslash.",
        );
    }
    match (&o.public_key, &o.jwks_url) {
        (None, None) => e.add(
            &format!("{P}.public_key"),
            "Either public_key (PEM) or jwks_url is required.",
        ),
        (Some(_), Some(_)) => e.add(
            &format!("{P}.public_key"),
            "Set either public_key or jwks_url, not both.",
        ),
        (Some(pem), None)
            if pem.len() > 16 * 1024 || !crate::auth::jwt::is_usable_public_key(pem) =>
        {
            e.add(
                &format!("{P}.public_key"),
                "The public_key must be a PEM public key (RSA, or EC P-256).",
            )
        }
        _ => {}
    }
    let claim = &o.sip_identifier_claim;
    if claim.is_empty() || claim.chars().count() > 255 || first_forbidden(claim).is_some() {
        e.add(
            &format!("{P}.sip_identifier_claim"),
            "The sip_identifier_claim must be a claim name of 1–255 characters.",
        );
    }
    for (field, value) in [("audience", &o.audience), ("issuer", &o.issuer)] {
        if let Some(v) = value
            && (v.chars().count() > limits::URL_CHARS || first_forbidden(v).is_some())
        {
            e.add(
                &format!("{P}.{field}"),
                format!(
                    "The {field} must be at most {} characters, without control characters.",
                    limits::URL_CHARS
                ),
            );
        }
    }
}

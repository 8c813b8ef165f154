//! Input validation shared by the API (422 with FlexiAPI's `errors` shape) and the CLI: every
//! text that can reach a document obeys the value rule here, where it enters.

use crate::config::validate_public_url;
use crate::error::{AppError, FieldErrors};
use crate::lpconfig::{check_value, ini, is_forbidden_char};
use crate::model::Space;
use crate::store::NewAccount;
use std::collections::BTreeMap;

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
            if check_value(field, v).is_err() {
                self.add(
                    field,
                    format!("The {field} may not contain control characters."),
                );
            }
        }
    }
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

/// Checks an account about to be created (and its clear password, when there is one).
pub fn new_account(a: &NewAccount, password: Option<&str>) -> Result<(), AppError> {
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
    if let Some(p) = password {
        if p.chars().count() < 3 {
            e.add("password", "The password must be at least 3 characters.");
        }
        if p.chars().any(is_forbidden_char) {
            e.add(
                "password",
                "The password may not contain control characters.",
            );
        }
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
        if v.len() > 4096 || v.chars().any(is_forbidden_char) {
            e.add(
                "dictionary",
                format!(
                    "The value of {k:?} must be at most 4096 characters without control characters."
                ),
            );
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
        || !s
            .host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
    {
        e.add("host", "The host must be a host name (no port, no scheme).");
    }
    e.text("name", Some(&s.name), 255);
    if s.realm.is_empty() || s.realm.contains('"') {
        e.add(
            "realm",
            "The realm must be non-empty and contain no double quote.",
        );
    }
    e.text("realm", Some(&s.realm), 255);
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
            let ok = if field == "public_url" {
                validate_public_url(url)
            } else if url.starts_with("http://") || url.starts_with("https://") {
                check_value(field, url).map_err(|e| e.to_string())
            } else {
                Err("must start with http:// or https://".to_string())
            };
            if let Err(why) = ok {
                e.add(field, format!("The {field} {why}."));
            }
        }
    }
    if s.token_lifetime_minutes < 0 {
        e.add(
            "provisioning_token_expiration_minutes",
            "Must be 0 (never) or positive.",
        );
    }
    if s.max_accounts < 0 || s.ui.max_account < 0 {
        e.add("max_accounts", "Must be 0 (unlimited) or positive.");
    }
    e.finish()
}

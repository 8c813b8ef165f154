//! JSON shapes of FlexiAPI (reference §5.8, §5.7), without its leaks: no password hash
//! anywhere, and the provisioning token only in the response that minted it (it is stored
//! hashed, so it cannot be shown again).

use crate::model::{Account, OidcSettings, Password, Space, iso_time};
use crate::store::LastProvisioned;
use crate::tokens::MintedToken;
use serde_json::{Value, json};

/// An account as FlexiAPI serialises it, plus the device inventory (`last_provisioned_*`, null
/// here: [`set_last_provisioned`] fills them).
pub fn account(a: &Account, passwords: &[Password], minted: Option<&MintedToken>) -> Value {
    json!({
        "id": a.id,
        "username": a.username,
        "domain": a.domain,
        "email": a.email,
        "activated": a.activated,
        "ip_address": a.ip_address,
        "user_agent": a.user_agent,
        "created_at": iso_time(a.created_at),
        "display_name": a.display_name,
        "dtmf_protocol": a.dtmf_protocol,
        "updated_at": iso_time(a.updated_at),
        "blocked": a.blocked,
        "admin": a.admin,
        "phone": a.phone,
        "provisioning_token": minted.map(|m| m.token.clone()),
        "provisioning_token_expire_at": minted.and_then(|m| m.expires_at).map(iso_time),
        "dictionary": a.dictionary,
        "sip_uri": a.sip_uri(),
        "passwords": passwords.iter().map(|p| json!({"algorithm": p.algorithm.as_str()})).collect::<Vec<_>>(),
        "email_change_code": null,
        "types": [],
        "actions": [],
        "carddav_servers": [],
        "last_provisioned_at": null,
        "last_provisioned_ip": null,
        "last_provisioned_user_agent": null,
    })
}

/// Fills the device-inventory fields of an account's JSON from its latest delivered document
/// (they stay null when it was never provisioned).
pub fn set_last_provisioned(account: &mut Value, last: Option<&LastProvisioned>) {
    if let (Some(last), Some(map)) = (last, account.as_object_mut()) {
        map.insert("last_provisioned_at".into(), json!(iso_time(last.at)));
        map.insert("last_provisioned_ip".into(), json!(last.ip));
        map.insert("last_provisioned_user_agent".into(), json!(last.user_agent));
    }
}

/// A space with its provisioning settings (no database id).
pub fn space(s: &Space) -> Value {
    json!({
        "domain": s.domain,
        "host": s.host,
        "name": s.name,
        "super": s.super_space,
        "custom_provisioning_entries": s.custom_entries,
        "custom_provisioning_overwrite_all": s.overwrite_all,
        "base_rc": s.base_rc,
        "vcard_list_url": s.vcard_list_url,
        "public_url": s.public_url,
        "provisioning_token_expiration_minutes": s.token_lifetime_minutes,
        "provisioning_header_mode": s.header_mode.as_str(),
        "hook_failure": s.hook_failure.as_str(),
        "max_accounts": s.max_accounts,
        "disable_chat_feature": s.ui.disable_chat_feature,
        "disable_meetings_feature": s.ui.disable_meetings_feature,
        "disable_broadcast_feature": s.ui.disable_broadcast_feature,
        "hide_settings": s.ui.hide_settings,
        "hide_account_settings": s.ui.hide_account_settings,
        "disable_call_recordings_feature": s.ui.disable_call_recordings_feature,
        "only_display_sip_uri_username": s.ui.only_display_sip_uri_username,
        "assistant_hide_create_account": s.ui.assistant_hide_create_account,
        "assistant_disable_qr_code": s.ui.assistant_disable_qr_code,
        "assistant_hide_third_party_account": s.ui.assistant_hide_third_party_account,
        "max_account": s.ui.max_account,
        "digest_authentication_configuration": {
            "realm": s.realm,
            "default_password_algorithm": s.password_algorithm.as_str(),
        },
        "oidc_authentication_configuration": s.oidc.as_ref().map(oidc),
        "client_certificate_authentication": s.client_certificate_authentication,
    })
}

/// A space's OIDC provider (public material only: a public key and URLs).
pub fn oidc(o: &OidcSettings) -> Value {
    json!({
        "server_url": o.server_url,
        "realm": o.realm,
        "public_key": o.public_key,
        "jwks_url": o.jwks_url,
        "sip_identifier_claim": o.sip_identifier_claim,
        "audience": o.audience,
        "issuer": o.issuer,
        "required": o.required,
    })
}

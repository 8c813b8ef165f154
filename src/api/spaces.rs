//! Spaces (tenants) CRUD for super admins (reference §5.7), with the provisioning settings of
//! each space under the JSON names of [`json::space`]; the same JSON goes in and comes out.
//!
//! Differences from FlexiAPI, on purpose: `PUT` changes only the fields it sends (FlexiAPI
//! demands every boolean); the Digest realm cannot change while the space has accounts (their
//! HA1s would all break; FlexiAPI enforces this only in its web form); a super admin cannot
//! delete its own space (it would delete itself).

use crate::api::access::{self, UNAUTHORIZED_AREA};
use crate::api::input::Input;
use crate::api::{ApiReply, ApiResult, json, validate};
use crate::audit::{self, Actor};
use crate::error::AppError;
use crate::model::{Algorithm, DEFAULT_SIP_IDENTIFIER_CLAIM, HeaderMode, HookFailure, Space};
use crate::request::RequestInfo;
use crate::spaces::Reason;
use crate::state::AppState;
use crate::store::StoreError;
use serde_json::Value;
use std::str::FromStr;

/// 404 for an unknown space.
fn space_not_found(domain: &str) -> AppError {
    AppError::NotFound(format!("No query results for model [App\\Space] {domain}"))
}

/// `GET /api/spaces` (super admin) — every space, by domain, as stored.
pub async fn list(state: &AppState, request: &RequestInfo) -> ApiResult {
    access::super_admin(state, request).await?;
    let spaces = state.store.list_spaces().await?;
    Ok(ApiReply::json(
        200,
        Value::Array(spaces.iter().map(json::space).collect()),
    ))
}

/// `GET /api/spaces/{domain}` (super admin), as stored.
pub async fn show(state: &AppState, request: &RequestInfo, domain: &str) -> ApiResult {
    access::super_admin(state, request).await?;
    let space = state
        .store
        .space_by_domain(domain)
        .await?
        .ok_or_else(|| space_not_found(domain))?;
    Ok(ApiReply::json(200, json::space(&space)))
}

/// After a write: this instance serves the change from its next request on (other
/// instances within `cache_max_staleness_seconds`). A failed refresh is logged and retried by
/// the periodic check; the write itself stands.
async fn written(state: &AppState) {
    let _ = state.spaces.refresh(Reason::Write).await;
}

/// `POST /api/spaces` (super admin) — `domain` is required; `host` and `name` default to it,
/// everything else to FlexiAPI's defaults. 201 with the space; 422 on invalid or taken values.
pub async fn create(state: &AppState, request: &RequestInfo, body: Value) -> ApiResult {
    let admin = access::super_admin(state, request).await?;
    let mut input = Input::new(body)?;
    let domain = input
        .required_string("domain")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut space = Space::new(&domain, &domain);
    apply(&mut input, &mut space);
    input.merge(validate::space(&space));
    input.finish()?;
    let created = state.store.create_space(&space).await.map_err(conflict)?;
    written(state).await;
    tracing::info!(domain = %created.domain, "space created");
    record(
        state,
        request,
        &admin,
        audit::action::SPACE_CREATED,
        &created.domain,
    )
    .await;
    Ok(ApiReply::json(201, json::space(&created)))
}

/// `PUT /api/spaces/{domain}` (super admin) — changes the fields sent; 200 with the space.
pub async fn update(
    state: &AppState,
    request: &RequestInfo,
    domain: &str,
    body: Value,
) -> ApiResult {
    let admin = access::super_admin(state, request).await?;
    let current = state
        .store
        .space_by_domain(domain)
        .await?
        .ok_or_else(|| space_not_found(domain))?;
    let mut input = Input::new(body)?;
    if let Some(d) = input.string("domain")
        && !d.eq_ignore_ascii_case(&current.domain)
    {
        input.error("domain", "The domain of a space cannot change.");
    }
    let mut space = current.clone();
    apply(&mut input, &mut space);
    if space.realm != current.realm {
        let (_, accounts) = state
            .store
            .list_accounts(Some(&current.domain), 0, 0)
            .await?;
        if accounts > 0 {
            input.error(
                "digest_authentication_configuration.realm",
                "The realm cannot change while the space has accounts (their passwords are hashed with it).",
            );
        }
    }
    input.merge(validate::space(&space));
    input.finish()?;
    let updated = state
        .store
        .update_space(&space)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => space_not_found(domain),
            e => conflict(e),
        })?;
    written(state).await;
    tracing::info!(domain = %updated.domain, "space updated");
    record(
        state,
        request,
        &admin,
        audit::action::SPACE_UPDATED,
        &updated.domain,
    )
    .await;
    Ok(ApiReply::json(200, json::space(&updated)))
}

/// `DELETE /api/spaces/{domain}` (super admin) — deletes the space and, by cascade, its
/// accounts; 200 with an empty body. A super admin's own space is refused (403).
pub async fn delete(state: &AppState, request: &RequestInfo, domain: &str) -> ApiResult {
    let admin = access::super_admin(state, request).await?;
    if admin.account.domain.eq_ignore_ascii_case(domain) {
        return Err(AppError::Forbidden(format!(
            "{UNAUTHORIZED_AREA}: a super admin cannot delete its own space"
        )));
    }
    if !state.store.delete_space(domain).await? {
        return Err(space_not_found(domain));
    }
    written(state).await;
    tracing::info!(domain, "space deleted");
    record(state, request, &admin, audit::action::SPACE_DELETED, domain).await;
    Ok(ApiReply::empty(200))
}

/// Queues a space event by the super admin: the space is the target and the event's space.
async fn record(
    state: &AppState,
    request: &RequestInfo,
    admin: &access::Admin,
    action: &str,
    domain: &str,
) {
    let event = audit::event(&Actor::account(&admin.account), action)
        .target(domain)
        .space(domain)
        .from_request(request);
    state.audit.record(event).await;
}

/// A uniqueness clash as a 422 on the field that clashed.
fn conflict(e: StoreError) -> AppError {
    match e {
        StoreError::Conflict(m) if m.contains("host") => {
            AppError::field("host", "The host has already been taken.")
        }
        StoreError::Conflict(m) if m.contains("name") => {
            AppError::field("name", "The name has already been taken.")
        }
        StoreError::Conflict(_) => AppError::field("domain", "The domain has already been taken."),
        e => e.into(),
    }
}

/// Applies every field the body carries to `space` (the names of [`json::space`]).
pub fn apply(input: &mut Input, space: &mut Space) {
    if let Some(host) = input.string("host") {
        space.host = host.to_ascii_lowercase();
    }
    if let Some(name) = input.string("name") {
        space.name = name;
    }
    if let Some(v) = input.boolean("super") {
        space.super_space = v;
    }
    let optional_texts: [(&str, &mut Option<String>); 4] = [
        ("custom_provisioning_entries", &mut space.custom_entries),
        ("base_rc", &mut space.base_rc),
        ("vcard_list_url", &mut space.vcard_list_url),
        ("public_url", &mut space.public_url),
    ];
    for (field, slot) in optional_texts {
        if input.has(field) {
            *slot = input.string(field);
        }
    }
    if let Some(v) = input.boolean("custom_provisioning_overwrite_all") {
        space.overwrite_all = v;
    }
    if let Some(v) = input.integer("provisioning_token_expiration_minutes") {
        space.token_lifetime_minutes = v;
    }
    if let Some(v) = input.integer("max_accounts") {
        space.max_accounts = v;
    }
    parsed(
        input,
        "provisioning_header_mode",
        &mut space.header_mode,
        HeaderMode::from_str,
    );
    parsed(
        input,
        "hook_failure",
        &mut space.hook_failure,
        HookFailure::from_str,
    );
    let ui = &mut space.ui;
    let flags: [(&str, &mut bool); 10] = [
        ("disable_chat_feature", &mut ui.disable_chat_feature),
        ("disable_meetings_feature", &mut ui.disable_meetings_feature),
        (
            "disable_broadcast_feature",
            &mut ui.disable_broadcast_feature,
        ),
        ("hide_settings", &mut ui.hide_settings),
        ("hide_account_settings", &mut ui.hide_account_settings),
        (
            "disable_call_recordings_feature",
            &mut ui.disable_call_recordings_feature,
        ),
        (
            "only_display_sip_uri_username",
            &mut ui.only_display_sip_uri_username,
        ),
        (
            "assistant_hide_create_account",
            &mut ui.assistant_hide_create_account,
        ),
        (
            "assistant_disable_qr_code",
            &mut ui.assistant_disable_qr_code,
        ),
        (
            "assistant_hide_third_party_account",
            &mut ui.assistant_hide_third_party_account,
        ),
    ];
    for (field, slot) in flags {
        if let Some(v) = input.boolean(field) {
            *slot = v;
        }
    }
    if let Some(v) = input.integer("max_account") {
        ui.max_account = v;
    }
    ui.super_space = space.super_space;
    if let Some(v) = input.boolean("client_certificate_authentication") {
        space.client_certificate_authentication = v;
    }
    apply_oidc(input, space);
    const DIGEST: &str = "digest_authentication_configuration";
    if let Some(mut digest) = input.object(DIGEST) {
        if let Some(realm) = digest.string("realm") {
            space.realm = realm;
        }
        parsed(
            &mut digest,
            "default_password_algorithm",
            &mut space.password_algorithm,
            Algorithm::from_str,
        );
        input.absorb(DIGEST, digest);
    }
}

/// `oidc_authentication_configuration`: `null` removes the provider; an object sets the fields
/// it carries (on a space without a provider, over the defaults: claim `sip_identity`, not
/// required).
fn apply_oidc(input: &mut Input, space: &mut Space) {
    const OIDC: &str = "oidc_authentication_configuration";
    if !input.has(OIDC) {
        return;
    }
    let Some(mut given) = input.object(OIDC) else {
        // `null` (or a wrong type, already recorded as an error).
        space.oidc = None;
        return;
    };
    let mut oidc = space.oidc.clone().unwrap_or_default();
    if let Some(v) = given.string("server_url") {
        oidc.server_url = v;
    }
    if let Some(v) = given.string("realm") {
        oidc.realm = v;
    }
    if given.has("sip_identifier_claim") {
        // `null` or `""` (Laravel reads both as null): back to FlexiAPI's default claim.
        oidc.sip_identifier_claim = given
            .string("sip_identifier_claim")
            .unwrap_or_else(|| DEFAULT_SIP_IDENTIFIER_CLAIM.to_string());
    }
    let optional: [(&str, &mut Option<String>); 4] = [
        ("public_key", &mut oidc.public_key),
        ("jwks_url", &mut oidc.jwks_url),
        ("audience", &mut oidc.audience),
        ("issuer", &mut oidc.issuer),
    ];
    for (field, slot) in optional {
        if given.has(field) {
            *slot = given.string(field);
        }
    }
    if let Some(v) = given.boolean("required") {
        oidc.required = v;
    }
    input.absorb(OIDC, given);
    space.oidc = Some(oidc);
}

/// Reads a string field through `FromStr`, recording its error message.
fn parsed<T>(
    input: &mut Input,
    field: &str,
    slot: &mut T,
    parse: impl Fn(&str) -> Result<T, String>,
) {
    if let Some(text) = input.string(field) {
        match parse(&text) {
            Ok(v) => *slot = v,
            Err(why) => input.error(field, format!("The selected {field} is invalid: {why}.")),
        }
    }
}

//! Bootstrapping an administrator from the command line (`provisio admin add`), so a fresh
//! install can be driven over HTTP: the CLI is the only way in before any API key exists.

use crate::api::json;
use crate::api::validate::{is_valid_domain, is_valid_username};
use crate::audit::{self, Actor};
use crate::config::Settings;
use crate::model::{Space, now_ms};
use crate::secret::{fingerprint, hash_password, hash_secret, new_token};
use crate::store::{AccountUpdate, DynStore, NewAccount, NewApiKey};
use anyhow::{Context, bail};
use serde_json::json;

/// Creates (or promotes) the admin `user@domain` and returns its JSON with a new admin API key,
/// shown this once (`{"account": …, "api_key": …, "space": …, "super": …}`).
///
/// * The space `domain` is created when missing, served on host = domain (change it later with
///   `PUT /api/spaces/{domain}` or the `space` commands).
/// * `super_admin` marks that space as a super space: its admins manage every space.
/// * An existing account is promoted to admin and its password replaced, so the command also
///   recovers a lost admin key.
/// * The key is a named admin key that never expires from inactivity and is bound to no IP.
pub async fn create_admin(
    store: &DynStore,
    settings: &Settings,
    identity: &str,
    password: &str,
    super_admin: bool,
) -> anyhow::Result<serde_json::Value> {
    let (username, domain) = identity
        .split_once('@')
        .context("the admin identity must be user@domain")?;
    let domain = domain.to_ascii_lowercase();
    if !is_valid_username(username) {
        bail!("invalid username {username:?}: 1–64 characters among a-z 0-9 + _ . -");
    }
    if !is_valid_domain(&domain) {
        bail!("invalid domain {domain:?}");
    }
    if let Err(why) = crate::api::validate::password_rule(password, settings.min_password_length) {
        bail!("{why}");
    }
    let space_event = |action: &str| {
        audit::event(&Actor::Cli, action)
            .target(domain.clone())
            .space(domain.clone())
    };
    let mut events = Vec::new();
    let mut space = match store.space_by_domain(&domain).await? {
        Some(space) => space,
        None => {
            let created = store
                .create_space(&Space::new(&domain, &domain))
                .await
                .with_context(|| format!("creating space {domain}"))?;
            events.push(space_event(audit::action::SPACE_CREATED).detail("admin add"));
            created
        }
    };
    if super_admin && !space.super_space {
        space.super_space = true;
        space.ui.super_space = true;
        space = store
            .update_space(&space)
            .await
            .context("marking the space super")?;
        events.push(space_event(audit::action::SPACE_UPDATED).detail("admin add --super"));
    }
    let hashed = hash_password(space.password_algorithm, username, &space.realm, password);
    let now = now_ms();
    let account = match store.account_by_identity(username, &domain).await? {
        Some(existing) => {
            store.replace_passwords(existing.id, &[hashed]).await?;
            let promote = AccountUpdate {
                admin: Some(true),
                activated: Some(true),
                ..Default::default()
            };
            let promoted = store
                .update_account(existing.id, &promote, now)
                .await?
                .context("the account vanished while being promoted")?;
            events.push(
                audit::event(&Actor::Cli, audit::action::ACCOUNT_UPDATED)
                    .about(&promoted)
                    .detail("admin add: promoted to admin, password replaced"),
            );
            promoted
        }
        None => {
            let new = NewAccount {
                username: username.to_string(),
                domain: domain.clone(),
                activated: true,
                admin: true,
                user_agent: Some("provisio admin add".to_string()),
                passwords: vec![hashed],
                ..Default::default()
            };
            let created = store
                .create_account(&new, now)
                .await
                .with_context(|| format!("creating account {identity}"))?;
            events.push(audit::event(&Actor::Cli, audit::action::ACCOUNT_CREATED).about(&created));
            created
        }
    };
    let key = new_token();
    let record = NewApiKey {
        account_id: account.id,
        key_hash: hash_secret(&key),
        name: Some(format!("cli-{}", crate::secret::new_hex(4))),
        ip: None,
        expires_after_minutes: Some(0),
    };
    let key_id = store
        .create_api_key(&record, now)
        .await
        .context("storing the API key")?;
    events.push(
        audit::event(&Actor::Cli, audit::action::API_KEY_CREATED)
            .about(&account)
            .target(key_id.to_string())
            .detail("admin key"),
    );
    audit::record_now(store.as_ref(), &events).await;
    tracing::info!(account_id = account.id, key_fp = %fingerprint(&key), "admin API key issued");
    let passwords = store.passwords(account.id).await?;
    Ok(json!({
        "account": json::account(&account, &passwords, None),
        "api_key": key,
        "space": space.domain,
        "super": space.super_space,
    }))
}

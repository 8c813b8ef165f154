//! Account routes (reference §5.2–5.4): the admin's `/api/accounts…` and the user's
//! `/api/accounts/me…`. Statuses and JSON shapes are FlexiAPI's; account JSON never carries a
//! password hash, and carries the provisioning token only in the answer that minted it.

use crate::api::access;
use crate::api::input::Input;
use crate::api::validate::{Errors, limits};
use crate::api::{ApiReply, ApiResult, json, validate};
use crate::audit::{self, Actor, action as act};
use crate::error::AppError;
use crate::lpconfig::is_forbidden_char;
use crate::model::{Account, Algorithm, Space, now_ms};
use crate::request::RequestInfo;
use crate::secret::{ct_eq, ha1, hash_password};
use crate::state::AppState;
use crate::store::{AccountUpdate, NewAccount, StoreError};
use crate::tokens::{self, MintedToken};
use serde_json::{Value, json};

/// Laravel's page size for FlexiAPI's account list.
pub const DEFAULT_PER_PAGE: i64 = 20;

/// The four admin switches of `POST /api/accounts/{id}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `activate`: `activated = true`.
    Activate,
    /// `deactivate`: `activated = false`.
    Deactivate,
    /// `block`: `blocked = true` (user API and provisioning refused).
    Block,
    /// `unblock`: `blocked = false`.
    Unblock,
}

impl Action {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Activate => "activate",
            Action::Deactivate => "deactivate",
            Action::Block => "block",
            Action::Unblock => "unblock",
        }
    }

    /// The update it applies.
    fn update(self) -> AccountUpdate {
        let mut u = AccountUpdate::default();
        match self {
            Action::Activate => u.activated = Some(true),
            Action::Deactivate => u.activated = Some(false),
            Action::Block => u.blocked = Some(true),
            Action::Unblock => u.blocked = Some(false),
        }
        u
    }
}

/// An account's JSON with its password algorithms, its latest provisioning (from the audit
/// trail) and the token, when just minted.
pub async fn account_json(
    state: &AppState,
    account: &Account,
    minted: Option<&MintedToken>,
) -> Result<Value, AppError> {
    let passwords = state.store.passwords(account.id).await?;
    let mut value = json::account(account, &passwords, minted);
    let last = state.store.last_provisioned(account.id).await?;
    json::set_last_provisioned(&mut value, last.as_ref());
    Ok(value)
}

/// Mints a provisioning token for the account (the previous one stops working), with its
/// space's token lifetime, and records `token.minted` by `actor` (never the token itself).
pub async fn mint(
    state: &AppState,
    request: &RequestInfo,
    actor: &Actor,
    account: &Account,
) -> Result<MintedToken, AppError> {
    let minted = tokens::mint_provisioning_token(state.store.as_ref(), account)
        .await
        .map_err(|e| AppError::Internal(format!("minting a provisioning token: {e:#}")))?;
    record(state, request, actor, act::TOKEN_MINTED, account).await;
    Ok(minted)
}

/// Queues an audit event by `actor` about `account`, from the request's client.
pub async fn record(
    state: &AppState,
    request: &RequestInfo,
    actor: &Actor,
    action: &str,
    account: &Account,
) {
    state
        .audit
        .record(
            audit::event(actor, action)
                .about(account)
                .from_request(request),
        )
        .await;
}

/// `POST /api/accounts` (admin) — creates an account in the request's space (or, for a super
/// admin, in the space `domain` names) and answers 200 with its JSON and first provisioning
/// token. 422 on invalid fields or a taken (or ever deleted) username; 403 when the space is
/// full.
pub async fn create(state: &AppState, request: &RequestInfo, body: Value) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let mut input = Input::new(body)?;
    let username = input.required_string("username");
    let password = input.required_string("password");
    let algorithm = input.string("algorithm");
    let domain = input.string("domain");
    let email = input.string("email");
    let display_name = input.string("display_name");
    let dtmf_protocol = input.string("dtmf_protocol");
    let phone = input.string("phone");
    let dictionary = input.dictionary("dictionary").unwrap_or_default();
    let is_admin = input.boolean("admin").unwrap_or(false);
    let activated = input.boolean("activated").unwrap_or(false);

    // Only a super admin chooses the space; FlexiAPI ignores `domain` for everyone else.
    let space = match domain.filter(|d| admin.super_admin && *d != admin.space.domain) {
        Some(d) => match state.store.space_by_domain(&d).await? {
            Some(s) => s,
            None => {
                input.error("domain", "The selected domain is invalid.");
                admin.space.clone()
            }
        },
        None => admin.space.clone(),
    };
    check_algorithm(&mut input, algorithm.as_deref(), &space);
    let (Some(username), Some(password)) = (username, password) else {
        // The required-field errors are recorded: answer them (with any others).
        return Err(input
            .finish()
            .err()
            .unwrap_or_else(|| AppError::field("username", "The username field is required.")));
    };
    let new = NewAccount {
        passwords: vec![hash_password(
            space.password_algorithm,
            &username,
            &space.realm,
            &password,
        )],
        username,
        domain: space.domain.clone(),
        display_name,
        email,
        phone,
        dtmf_protocol,
        activated,
        admin: is_admin,
        ip_address: request.client_ip.map(|ip| ip.to_string()),
        // Hooks and the JSON see the creator's User-Agent: keep only what the value rule allows.
        user_agent: Some(
            Some(request.user_agent())
                .filter(|ua| !ua.is_empty())
                .map_or_else(
                    || space.name.clone(),
                    |ua| {
                        ua.chars()
                            .filter(|c| !is_forbidden_char(*c))
                            .take(256)
                            .collect()
                    },
                ),
        ),
        dictionary,
    };
    input.merge(validate::new_account(
        &new,
        Some(&password),
        state.settings.min_password_length,
    ));
    input.finish()?;

    if space.max_accounts > 0 {
        let (_, total) = state.store.list_accounts(Some(&space.domain), 0, 0).await?;
        if total >= space.max_accounts {
            return Err(AppError::Forbidden(
                "This action is unauthorized.".to_string(),
            ));
        }
    }
    let account = match state.store.create_account(&new, now_ms()).await {
        Ok(a) => a,
        Err(StoreError::Conflict(_)) => {
            return Err(AppError::field(
                "username",
                "The username has already been taken.",
            ));
        }
        Err(StoreError::NotFound) => {
            return Err(AppError::field("domain", "The selected domain is invalid."));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        account_id = account.id,
        admin_id = admin.account.id,
        "account created"
    );
    let actor = Actor::account(&admin.account);
    record(state, request, &actor, act::ACCOUNT_CREATED, &account).await;
    let minted = mint(state, request, &actor, &account).await?;
    Ok(ApiReply::json(
        200,
        account_json(state, &account, Some(&minted)).await?,
    ))
}

/// FlexiAPI's deprecated `algorithm` field: accepted only when it names the space's algorithm.
fn check_algorithm(input: &mut Input, algorithm: Option<&str>, space: &Space) {
    if let Some(alg) = algorithm
        && alg.parse::<Algorithm>() != Ok(space.password_algorithm)
    {
        input.error(
            "algorithm",
            format!(
                "The selected algorithm is invalid: this space uses {}.",
                space.password_algorithm
            ),
        );
    }
}

/// `GET /api/accounts[?page=N&per_page=M]` (admin) — the request space's accounts, by id, in
/// Laravel's paginator shape (`data`, `total`, `current_page`, `per_page`, `last_page`, …).
/// `page` (1–1,000,000) and `per_page` (1–100, default 20) outside their range: 422.
pub async fn list(state: &AppState, request: &RequestInfo) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let mut errors = Errors::default();
    let mut number = |k: &str, range: &std::ops::RangeInclusive<i64>, default: i64| {
        let Some(raw) = request.query.get(k) else {
            return default;
        };
        match raw.trim().parse::<i64>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                errors.add(k, validate::range_message(k, range));
                default
            }
        }
    };
    let page = number("page", &limits::PAGE, 1);
    let per_page = number("per_page", &limits::PER_PAGE, DEFAULT_PER_PAGE);
    errors.finish()?;
    let offset = (page - 1).saturating_mul(per_page);
    let (accounts, total) = state
        .store
        .list_accounts(Some(&admin.space.domain), offset, per_page)
        .await?;
    let mut data = Vec::with_capacity(accounts.len());
    for account in &accounts {
        data.push(account_json(state, account, None).await?);
    }
    let last_page = (total.saturating_add(per_page - 1) / per_page).max(1);
    let url = |p: i64| format!("{}?page={p}", request.path);
    let count = i64::try_from(data.len()).unwrap_or(i64::MAX);
    Ok(ApiReply::json(
        200,
        json!({
            "current_page": page,
            "data": data,
            "first_page_url": url(1),
            "from": (count > 0).then_some(offset + 1),
            "last_page": last_page,
            "last_page_url": url(last_page),
            "next_page_url": (page < last_page).then(|| url(page + 1)),
            "path": request.path,
            "per_page": per_page,
            "prev_page_url": (page > 1).then(|| url(page - 1)),
            "to": (count > 0).then_some(offset + count),
            "total": total,
        }),
    ))
}

/// `GET /api/accounts/{id}` (admin) — one account of the request space (404 otherwise).
pub async fn show(state: &AppState, request: &RequestInfo, id: i64) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let account = access::scoped_account(state, &admin, id).await?;
    Ok(ApiReply::json(
        200,
        account_json(state, &account, None).await?,
    ))
}

/// `DELETE /api/accounts/{id}` (admin) — deletes it and tombstones its identity (never
/// reusable); 200 with an empty body. The caller's own account: 409 (an admin that deletes
/// itself may leave its space with no admin at all).
pub async fn delete(state: &AppState, request: &RequestInfo, id: i64) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let account = access::scoped_account(state, &admin, id).await?;
    if account.id == admin.account.id {
        return Err(AppError::Conflict(
            "An admin cannot delete its own account: another admin must do it.".to_string(),
        ));
    }
    remove(state, &account).await?;
    tracing::info!(
        account_id = account.id,
        admin_id = admin.account.id,
        "account deleted"
    );
    let actor = Actor::account(&admin.account);
    record(state, request, &actor, act::ACCOUNT_DELETED, &account).await;
    Ok(ApiReply::empty(200))
}

/// `POST /api/accounts/{id}/activate|deactivate|block|unblock` (admin) — 200 with the account.
/// Blocking the caller's own account: 409 (it would lock the admin out of the API).
pub async fn action(state: &AppState, request: &RequestInfo, id: i64, action: Action) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let account = access::scoped_account(state, &admin, id).await?;
    if action == Action::Block && account.id == admin.account.id {
        return Err(AppError::Conflict(
            "An admin cannot block its own account: another admin must do it.".to_string(),
        ));
    }
    let updated = state
        .store
        .update_account(account.id, &action.update(), now_ms())
        .await?
        .ok_or_else(|| access::account_not_found(id))?;
    tracing::info!(
        account_id = id,
        admin_id = admin.account.id,
        action = action.as_str(),
        "account updated"
    );
    let recorded = match action {
        Action::Block => act::ACCOUNT_BLOCKED,
        Action::Unblock => act::ACCOUNT_UNBLOCKED,
        Action::Activate | Action::Deactivate => act::ACCOUNT_UPDATED,
    };
    state
        .audit
        .record(
            audit::event(&Actor::account(&admin.account), recorded)
                .about(&updated)
                .from_request(request)
                .detail(action.as_str()),
        )
        .await;
    Ok(ApiReply::json(
        200,
        account_json(state, &updated, None).await?,
    ))
}

/// `GET /api/accounts/{id}/provision` (admin) — mints a new provisioning token; 200 with the
/// account JSON carrying it.
pub async fn provision(state: &AppState, request: &RequestInfo, id: i64) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let account = access::scoped_account(state, &admin, id).await?;
    let minted = mint(state, request, &Actor::account(&admin.account), &account).await?;
    Ok(ApiReply::json(
        200,
        account_json(state, &account, Some(&minted)).await?,
    ))
}

/// `GET /api/accounts/me` (user) — the caller's account.
pub async fn me(state: &AppState, request: &RequestInfo) -> ApiResult {
    let (account, _) = access::user(state, request).await?;
    Ok(ApiReply::json(
        200,
        account_json(state, &account, None).await?,
    ))
}

/// `GET /api/accounts/me/provision` (user) — mints a provisioning token for the caller.
pub async fn me_provision(state: &AppState, request: &RequestInfo) -> ApiResult {
    let (account, _) = access::user(state, request).await?;
    let minted = mint(state, request, &Actor::account(&account), &account).await?;
    Ok(ApiReply::json(
        200,
        account_json(state, &account, Some(&minted)).await?,
    ))
}

/// `DELETE /api/accounts/me` (user) — deletes the caller (tombstoned); 200 with body `1`, as
/// Laravel renders FlexiAPI's `true`. An admin gets 409: it cannot delete itself through the
/// API (another admin, or the command line, must).
pub async fn me_delete(state: &AppState, request: &RequestInfo) -> ApiResult {
    let (account, _) = access::user(state, request).await?;
    if account.admin {
        return Err(AppError::Conflict(
            "An admin cannot delete its own account: another admin must do it.".to_string(),
        ));
    }
    remove(state, &account).await?;
    tracing::info!(account_id = account.id, "account deleted by its owner");
    let actor = Actor::account(&account);
    record(state, request, &actor, act::ACCOUNT_DELETED, &account).await;
    Ok(ApiReply::json(200, json!(1)))
}

/// `POST /api/accounts/me/password` (user) — sets a new password (`password`, and
/// `old_password` when one exists), hashed in the account space's realm and algorithm; the
/// account is activated, as in FlexiAPI. 200 with the account.
pub async fn me_password(state: &AppState, request: &RequestInfo, body: Value) -> ApiResult {
    let (account, _) = access::user(state, request).await?;
    let space = state
        .store
        .space_by_domain(&account.domain)
        .await?
        .ok_or_else(|| {
            AppError::Internal(format!(
                "space {} of account {} is missing",
                account.domain, account.id
            ))
        })?;
    let mut input = Input::new(body)?;
    let password = input.required_string("password");
    let algorithm = input.string("algorithm");
    check_algorithm(&mut input, algorithm.as_deref(), &space);
    let current = state.store.passwords(account.id).await?;
    if !current.is_empty()
        && let Some(old) = input.required_string("old_password")
    {
        let correct = current.iter().any(|p| {
            ct_eq(
                &ha1(p.algorithm, &account.username, &space.realm, &old),
                &p.ha1,
            )
        });
        if !correct {
            input.error("old_password", "Incorrect old password");
        }
    }
    if let Some(p) = &password {
        let probe = NewAccount {
            username: account.username.clone(),
            domain: account.domain.clone(),
            ..Default::default()
        };
        input.merge(validate::new_account(
            &probe,
            Some(p),
            state.settings.min_password_length,
        ));
    }
    input.finish()?;
    let Some(password) = password else {
        return Err(AppError::field(
            "password",
            "The password field is required.",
        ));
    };
    let hashed = hash_password(
        space.password_algorithm,
        &account.username,
        &space.realm,
        &password,
    );
    state.store.replace_passwords(account.id, &[hashed]).await?;
    let update = AccountUpdate {
        activated: Some(true),
        ..Default::default()
    };
    let updated = state
        .store
        .update_account(account.id, &update, now_ms())
        .await?
        .ok_or_else(|| access::account_not_found(account.id))?;
    tracing::info!(account_id = account.id, "password changed by its owner");
    let actor = Actor::account(&account);
    record(state, request, &actor, act::PASSWORD_CHANGED, &updated).await;
    Ok(ApiReply::json(
        200,
        account_json(state, &updated, None).await?,
    ))
}

/// Deletes an account (404 if it vanished meanwhile).
async fn remove(state: &AppState, account: &Account) -> Result<(), AppError> {
    if state.store.delete_account(account.id, now_ms()).await? {
        Ok(())
    } else {
        Err(access::account_not_found(account.id))
    }
}

/// `PUT /api/accounts/{id}` (admin) — FlexiAPI's update (reference §5.3): `username` is
/// required (a 422 before the 404 check, as Laravel validates first) with the create rules;
/// `email`, `display_name`, `dtmf_protocol` and `phone` are overwritten, with null when absent;
/// `activated`, `blocked` and `admin` change only when sent; `password` is hashed with the
/// space's realm and algorithm and replaces every stored password; a `dictionary` replaces the
/// whole dictionary; `domain` moves the account to another space for a super admin only (it is
/// ignored for anyone else). 200 with the account.
///
/// Beyond FlexiAPI: the stored HA1s hash the username and the realm, so a new username or
/// space needs a new `password` too (422 otherwise, instead of silently breaking the phone's
/// credentials); a new identity that was ever deleted is refused like a taken one; and an admin
/// cannot block itself, drop its own admin role or move itself away (409).
pub async fn update(state: &AppState, request: &RequestInfo, id: i64, body: Value) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let mut input = Input::new(body)?;
    let username = input.required_string("username");
    let password = input.string("password");
    let algorithm = input.string("algorithm");
    let domain = input.string("domain");
    let email = input.string("email");
    let display_name = input.string("display_name");
    let dtmf_protocol = input.string("dtmf_protocol");
    let phone = input.string("phone");
    let dictionary = input.dictionary("dictionary");
    let activated = input.boolean("activated");
    let blocked = input.boolean("blocked");
    let is_admin = input.boolean("admin");
    let Some(username) = username else {
        return Err(input
            .finish()
            .err()
            .unwrap_or_else(|| AppError::field("username", "The username field is required.")));
    };
    let account = access::scoped_account(state, &admin, id).await?;

    // Only a super admin moves an account; FlexiAPI ignores `domain` for everyone else.
    let space = match domain.filter(|d| admin.super_admin && *d != account.domain) {
        Some(d) => match state.store.space_by_domain(&d).await? {
            Some(s) => s,
            None => {
                input.error("domain", "The selected domain is invalid.");
                admin.space.clone()
            }
        },
        None => admin.space.clone(),
    };
    let moved = space.domain != account.domain;
    let renamed = username != account.username;
    check_algorithm(&mut input, algorithm.as_deref(), &space);
    if (renamed || moved) && password.is_none() && !state.store.passwords(id).await?.is_empty() {
        input.error(
            "password",
            "The password is required to change the username or the domain: the stored password hashes include them.",
        );
    }
    if account.id == admin.account.id {
        let refusal = if blocked == Some(true) {
            Some("An admin cannot block its own account: another admin must do it.")
        } else if is_admin == Some(false) {
            Some("An admin cannot drop its own admin role: another admin must do it.")
        } else if moved {
            Some("An admin cannot move its own account to another space: another admin must do it.")
        } else {
            None
        };
        if let Some(message) = refusal {
            return Err(AppError::Conflict(message.to_string()));
        }
    }
    let probe = NewAccount {
        username: username.clone(),
        domain: space.domain.clone(),
        email: email.clone(),
        display_name: display_name.clone(),
        phone: phone.clone(),
        dtmf_protocol: dtmf_protocol.clone(),
        dictionary: dictionary.clone().unwrap_or_default(),
        ..Default::default()
    };
    input.merge(validate::new_account(
        &probe,
        password.as_deref(),
        state.settings.min_password_length,
    ));
    input.finish()?;
    if moved && space.max_accounts > 0 {
        let (_, total) = state.store.list_accounts(Some(&space.domain), 0, 0).await?;
        if total >= space.max_accounts {
            return Err(AppError::Forbidden(
                "This action is unauthorized.".to_string(),
            ));
        }
    }

    let update = AccountUpdate {
        username: renamed.then(|| username.clone()),
        domain: moved.then(|| space.domain.clone()),
        email: Some(email),
        display_name: Some(display_name),
        phone: Some(phone),
        dtmf_protocol: Some(dtmf_protocol),
        activated,
        blocked,
        admin: is_admin,
        dictionary,
        passwords: password.as_deref().map(|p| {
            vec![hash_password(
                space.password_algorithm,
                &username,
                &space.realm,
                p,
            )]
        }),
    };
    let updated = match state.store.update_account(id, &update, now_ms()).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(access::account_not_found(id)),
        Err(StoreError::Conflict(_)) => {
            return Err(AppError::field(
                "username",
                "The username has already been taken.",
            ));
        }
        Err(StoreError::NotFound) => {
            return Err(AppError::field("domain", "The selected domain is invalid."));
        }
        Err(e) => return Err(e.into()),
    };
    let changed = changed_fields(&account, &updated, password.is_some());
    tracing::info!(
        account_id = id,
        admin_id = admin.account.id,
        changed = %changed.join(","),
        "account updated"
    );
    let actor = Actor::account(&admin.account);
    state
        .audit
        .record(
            audit::event(&actor, act::ACCOUNT_UPDATED)
                .about(&updated)
                .from_request(request)
                .detail(changed.join(",")),
        )
        .await;
    if password.is_some() {
        record(state, request, &actor, act::PASSWORD_CHANGED, &updated).await;
    }
    Ok(ApiReply::json(
        200,
        account_json(state, &updated, None).await?,
    ))
}

/// The names of the fields an update changed (what the audit trail keeps: never a value).
fn changed_fields(before: &Account, after: &Account, password: bool) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let pairs = [
        ("username", before.username != after.username),
        ("domain", before.domain != after.domain),
        ("email", before.email != after.email),
        ("display_name", before.display_name != after.display_name),
        ("phone", before.phone != after.phone),
        ("dtmf_protocol", before.dtmf_protocol != after.dtmf_protocol),
        ("activated", before.activated != after.activated),
        ("blocked", before.blocked != after.blocked),
        ("admin", before.admin != after.admin),
        ("dictionary", before.dictionary != after.dictionary),
        ("password", password),
    ];
    for (field, differs) in pairs {
        if differs {
            changed.push(field);
        }
    }
    changed
}

/// `GET /api/accounts/{sip}/search` (admin) — the account of the request's space whose SIP
/// identity is `{sip}`: `user@domain` as FlexiAPI takes it (a `sip:` prefix and
/// percent-escapes are accepted too). 404 when the space has no such account. The `/search`
/// suffix is how FlexiAPI tells it from `GET /api/accounts/{id}`.
pub async fn search(state: &AppState, request: &RequestInfo, sip: &str) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let decoded = percent_encoding::percent_decode_str(sip).decode_utf8_lossy();
    let identity = decoded.strip_prefix("sip:").unwrap_or(&decoded);
    let found = match identity.rsplit_once('@') {
        Some((user, domain))
            if !user.is_empty() && domain.eq_ignore_ascii_case(&admin.space.domain) =>
        {
            state
                .store
                .account_by_identity(user, &admin.space.domain)
                .await?
        }
        _ => None,
    };
    let account = found.ok_or_else(|| {
        AppError::NotFound("No query results for model [App\\Account].".to_string())
    })?;
    Ok(ApiReply::json(
        200,
        account_json(state, &account, None).await?,
    ))
}

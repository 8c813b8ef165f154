//! Wizard links and the provisioning e-mail (reference §2.3, §2.4): `POST /api/wizard` makes a
//! single-use `/wizard/{token}` link; `POST /api/accounts/{id}/send_provisioning_email` mails
//! an account such a link and the QR code of a fresh provisioning token.
//!
//! Beyond FlexiAPI: the provisioned account must belong to the admin's space (FlexiAPI takes
//! any account id), the link is served only on that space's host, and its token is 256
//! random bits stored as a hash (FlexiAPI: 8 characters, stored in clear).

use crate::api::access::{self, Admin};
use crate::api::accounts::{mint, record};
use crate::api::input::Input;
use crate::api::{ApiReply, ApiResult};
use crate::audit::{self, Actor, action as act};
use crate::error::AppError;
use crate::links::{provisioning_url, wizard_url};
use crate::mail::{self, MailError, Relay, Vars};
use crate::model::{Account, now_ms};
use crate::request::RequestInfo;
use crate::secret::{fingerprint, hash_secret, new_token};
use crate::state::AppState;
use crate::store::{LINPHONE_ACTIONS, NewWizard, StoreError, Wizard};
use crate::wizard::{DEFAULT_ACTION, is_action, is_sip_uri};
use lettre::message::Mailbox;
use serde_json::{Value, json};

/// Longest `sip` a wizard keeps (FlexiAPI's column is a `varchar(255)`).
pub const MAX_SIP_CHARS: usize = 255;

/// FlexiAPI's message when the account has no address to mail.
pub const NO_EMAIL: &str = "No email configured";

/// `POST /api/wizard` (admin) — makes a wizard link from FlexiAPI's fields:
/// `provisioning_account_id` (an account of the admin's space), `sip` (a SIP/SIPS URI,
/// required for `call`), `linphone_action` (`call`, `show`, `bye`, `accept`, `decline`) and
/// `linphone_use_sips` (boolean), each nullable. 201 with those fields, the `token` and the
/// link's `url`; 422 naming the field at fault.
pub async fn create(state: &AppState, request: &RequestInfo, body: Value) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let mut input = Input::new(body)?;
    let account_id = input.integer("provisioning_account_id");
    let action = input.string("linphone_action");
    let use_sips = input.boolean("linphone_use_sips");
    let sip_empty = input.sent_empty("sip");
    let sip = input.string("sip");
    if let Some(a) = action.as_deref()
        && !is_action(a)
    {
        input.error(
            "linphone_action",
            format!(
                "The selected linphone action is invalid: use one of {}.",
                LINPHONE_ACTIONS.join(", ")
            ),
        );
    }
    match sip.as_deref() {
        None if action.as_deref() == Some("call") => {
            input.error(
                "sip",
                "The sip field is required when linphone action is call.",
            );
        }
        // Sent as null or "": Laravel's `string` rule refuses it (FLEXIAPI-512).
        None if sip_empty => {
            input.error("sip", "The sip field must be a string.");
        }
        None => {}
        Some(s) if s.chars().count() > MAX_SIP_CHARS => {
            input.error(
                "sip",
                format!("The sip may not be greater than {MAX_SIP_CHARS} characters."),
            );
        }
        Some(s) if !is_sip_uri(s) => {
            input.error("sip", "The sip must be a valid SIP URI.");
        }
        Some(_) => {}
    }
    let account = match account_id {
        Some(id) => {
            let found = state
                .store
                .account(id)
                .await?
                .filter(|a| a.domain == admin.space.domain);
            if found.is_none() {
                input.error(
                    "provisioning_account_id",
                    "The selected provisioning account id is invalid: no account of this space has it.",
                );
            }
            found
        }
        None => None,
    };
    input.finish()?;
    let new = NewWizard {
        token_hash: Vec::new(),
        space: admin.space.domain.clone(),
        created_by: Some(admin.account.id),
        provisioning_account_id: account.as_ref().map(|a| a.id),
        sip,
        linphone_action: action,
        linphone_use_sips: use_sips,
    };
    let token = new_token();
    let detail = new.linphone_action.clone();
    let wizard = store(
        state,
        request,
        &admin,
        account.as_ref(),
        new,
        &token,
        detail.as_deref().unwrap_or(DEFAULT_ACTION),
    )
    .await?;
    Ok(ApiReply::json(
        201,
        json!({
            "provisioning_account_id": wizard.provisioning_account_id,
            "sip": wizard.sip,
            "linphone_action": wizard.linphone_action,
            "linphone_use_sips": wizard.linphone_use_sips,
            "token": token,
            "url": wizard_url(state, &admin.space, request, &token),
        }),
    ))
}

/// Stores a wizard under `token` (its hash) and records `wizard.created` with `detail`.
async fn store(
    state: &AppState,
    request: &RequestInfo,
    admin: &Admin,
    account: Option<&Account>,
    mut new: NewWizard,
    token: &str,
    detail: &str,
) -> Result<Wizard, AppError> {
    new.token_hash = hash_secret(token);
    let wizard = match state.store.create_wizard(&new, now_ms()).await {
        Ok(w) => w,
        // The account was deleted in between.
        Err(StoreError::NotFound) => {
            return Err(AppError::field(
                "provisioning_account_id",
                "The selected provisioning account id is invalid: no account of this space has it.",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        wizard_id = wizard.id,
        admin_id = admin.account.id,
        account_id = wizard.provisioning_account_id,
        token = %fingerprint(token),
        "wizard link created"
    );
    let event = audit::event(&Actor::account(&admin.account), act::WIZARD_CREATED)
        .from_request(request)
        .detail(detail);
    let event = match account {
        Some(a) => event.about(a),
        None => event
            .target(admin.space.domain.clone())
            .space(admin.space.domain.clone()),
    };
    state.audit.record(event).await;
    Ok(wizard)
}

/// `POST /api/accounts/{id}/send_provisioning_email` (admin) — mails the account (of the
/// admin's space) a wizard link and the QR code of a freshly minted provisioning token, both
/// on the space's public base URL; 200 with an empty body. 403 "No email configured" when it
/// has no e-mail; 503 when no relay is configured, or it cannot be reached or take the
/// message now; 502 when it refuses the message. Nothing is minted when the relay cannot be
/// reached or the texts cannot be built.
pub async fn send_provisioning_email(
    state: &AppState,
    request: &RequestInfo,
    id: i64,
) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let account = access::scoped_account(state, &admin, id).await?;
    let Some(email) = account.email.clone().filter(|e| !e.trim().is_empty()) else {
        return Err(AppError::Forbidden(NO_EMAIL.to_string()));
    };
    let relay = Relay::from_settings(&state.settings.smtp)
        .map_err(AppError::Internal)?
        .ok_or_else(|| {
            AppError::Unavailable(
                "E-mail is not configured on this server: set smtp.url and smtp.from".to_string(),
            )
        })?;
    let address = email.trim().parse().map_err(|e| {
        AppError::field(
            "email",
            format!("The email of this account is not a deliverable address: {e}."),
        )
    })?;
    let to = Mailbox::new(
        account.display_name.clone().filter(|n| !n.is_empty()),
        address,
    );
    let space = admin.space.clone();
    let actor = Actor::account(&admin.account);

    // The link's token is made first, so the texts are built (and a broken template found)
    // before anything is stored; the relay is asked before anything is minted.
    let wizard_token = new_token();
    let vars = Vars {
        link: wizard_url(state, &space, request, &wizard_token),
        username: account.username.clone(),
        domain: account.domain.clone(),
        identifier: format!("{}@{}", account.username, account.domain),
        display_name: account.display_name.clone().unwrap_or_default(),
        space: space.name.clone(),
        qrcode: format!("cid:{}", mail::QR_CONTENT_ID),
    };
    let templates = state.settings.smtp.templates_dir.clone();
    let domain = space.domain.clone();
    let texts =
        tokio::task::spawn_blocking(move || mail::provisioning_texts(&templates, &domain, &vars))
            .await
            .map_err(|e| AppError::Internal(format!("template task failed: {e}")))?
            .map_err(|e| {
                AppError::Unavailable(format!(
                    "The provisioning e-mail of space {} cannot be built: {e}",
                    space.domain
                ))
            })?;
    if let Err(e) = relay.check().await {
        return Err(mail_failed(state, request, &actor, &account, e).await);
    }

    let minted = mint(state, request, &actor, &account).await?;
    let new = NewWizard {
        space: space.domain.clone(),
        created_by: Some(admin.account.id),
        provisioning_account_id: Some(account.id),
        ..NewWizard::default()
    };
    store(
        state,
        request,
        &admin,
        Some(&account),
        new,
        &wizard_token,
        "e-mail",
    )
    .await?;
    let url = provisioning_url(state, &space, request, &minted.token, false);
    let png = tokio::task::spawn_blocking(move || crate::qr::png(&url))
        .await
        .map_err(|e| AppError::Internal(format!("QR task failed: {e}")))?
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let message = mail::provisioning_message(relay.from(), to, texts, png)
        .map_err(|e| AppError::Internal(format!("building the provisioning e-mail: {e}")))?;
    if let Err(e) = relay.send(message).await {
        return Err(mail_failed(state, request, &actor, &account, e).await);
    }
    tracing::info!(
        account_id = account.id,
        admin_id = admin.account.id,
        relay = relay.label(),
        "provisioning e-mail sent"
    );
    record(
        state,
        request,
        &actor,
        act::PROVISIONING_EMAIL_SENT,
        &account,
    )
    .await;
    Ok(ApiReply::empty(200))
}

/// Records a failed e-mail (outcome `failed`, the reason as detail) and turns the relay's
/// failure into the answer: 503 (unreachable, or not now) or 502 (refused).
async fn mail_failed(
    state: &AppState,
    request: &RequestInfo,
    actor: &Actor,
    account: &Account,
    e: MailError,
) -> AppError {
    let mut event = audit::event(actor, act::PROVISIONING_EMAIL_SENT)
        .about(account)
        .from_request(request)
        .detail(e.to_string());
    event.outcome = "failed".to_string();
    state.audit.record(event).await;
    match e {
        MailError::Unavailable(m) => AppError::Unavailable(m),
        MailError::Refused(m) => AppError::BadGateway(m),
    }
}

//! The provisioning pipeline. One file per stage; a request flows through them in this order:
//!
//! 1. [`space`] — the request's Host selects its space, from the in-memory snapshot
//!    ([`crate::spaces`]; 404 if none matches);
//! 2. [`guard`] — the `x-linphone-provisioning` check, before any token is read (400);
//! 3. [`identity`] — who is being provisioned: nobody, a provisioning token's owner, an auth
//!    token's owner or an authenticated account, with its passwords, in one round trip (404
//!    unknown/used/superseded, 410 expired, 403 blocked); nothing is changed yet;
//! 4. [`reset`] — with `?reset_password`, a new random password and its HA1 (not stored yet);
//! 5. [`render`] — assemble (FlexiAPI's order), hooks (the space's Rhai scripts: `on_proxy`,
//!    `on_auth_info`, `on_config`), finish (overwrite-all, the value rule, XML): the one
//!    render path of [`crate::document`], shared with `provisio render` and `hooks test`;
//! 6. [`consume`] — one atomic store operation: burn the token, activate the account, store the
//!    reset password. Only the request that wins it gets the document.
//!
//! Consumption comes last on purpose (DESIGN.md lists it before assembly): a hook that denies
//! the request, a failing script or an invalid document then burns nothing, and the token
//! still works on the next try. The document is held in memory until the consume wins, so a
//! loser never sees credentials.
//!
//! Round trips: the anonymous document needs none; `/provisioning/me` one (the key or Digest
//! identity, read by the HTTP layer); a token two (identity, consume).

pub mod consume;
pub mod guard;
pub mod identity;
pub mod render;
pub mod reset;
pub mod space;

use crate::document::{PreparedSpace, RenderInput};
use crate::error::AppError;
use crate::model::{Password, now_ms};
use crate::request::RequestInfo;
use crate::state::AppState;
pub use identity::Credential;
use std::sync::Arc;

/// A rendered document, ready to send.
#[derive(Debug, Clone)]
pub struct Document {
    /// The lpconfig XML.
    pub xml: String,
    /// The account provisioned, if any (for logs and the audit trail).
    pub account_id: Option<i64>,
    /// Its domain (the space its audit events belong to).
    pub account_domain: Option<String>,
    /// The document carried a new password (`?reset_password`), now stored.
    pub password_reset: bool,
}

/// Runs stages 2–6 for a request whose space is already resolved (the HTTP layer resolves the
/// space first because `/provisioning/me` authenticates between stages 1 and 2).
pub async fn provision(
    state: &AppState,
    space: &Arc<PreparedSpace>,
    request: RequestInfo,
    credential: &Credential,
) -> Result<Document, AppError> {
    guard::check(&space.space, &request)?;
    let now = now_ms();
    let mut who = identity::resolve(state, credential, now).await?;
    let new_password = reset::prepare(&request, &who, &space.space);
    let passwords: Vec<Password> = match (&new_password, &who.account) {
        (Some(p), Some(account)) => vec![Password {
            id: 0,
            account_id: account.id,
            algorithm: p.algorithm,
            ha1: p.ha1.clone(),
        }],
        // Consuming needs the account, not its passwords.
        _ => std::mem::take(&mut who.passwords),
    };
    let input = RenderInput {
        space: space.clone(),
        account_space: who.account_space.clone(),
        account: who.account.clone(),
        passwords,
        request,
    };
    let xml = render::run(state, input).await?;
    consume::commit(state, credential, &who, new_password.as_ref(), now).await?;
    Ok(Document {
        xml,
        account_id: who.account.as_ref().map(|a| a.id),
        account_domain: who.account.as_ref().map(|a| a.domain.clone()),
        password_reset: new_password.is_some() && who.account.is_some(),
    })
}

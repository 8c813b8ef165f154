//! Stage 3 — identity: who the document is for. Reads the credential and the store, in one
//! round trip: a token or key resolves to its state, the account and its passwords together
//! ([`crate::store::Store::token_identity`] and friends). Writes nothing (a refused or failed
//! request burns no token). Errors: 404 for an unknown, used or superseded token, 410 for an
//! expired one, 403 for a blocked account.

use crate::document::PreparedSpace;
use crate::error::AppError;
use crate::model::{Account, Password};
use crate::secret::{fingerprint, hash_secret};
use crate::state::AppState;
use crate::store::{AccountBundle, TokenState};
use std::sync::Arc;

/// What the request presents.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `GET /provisioning`: nothing.
    Anonymous,
    /// `GET /provisioning/{token}`: a provisioning token (clear, from the URL).
    ProvisioningToken(String),
    /// `GET /provisioning/auth_token/{token}`: an attached QR-login auth token.
    AuthToken(String),
    /// `GET /provisioning/me`: an account already authenticated by the HTTP layer, with the
    /// passwords read in the same round trip.
    Authenticated(Box<AccountBundle>),
}

impl Credential {
    /// The clear token, if the credential is one.
    pub fn token(&self) -> Option<&str> {
        match self {
            Credential::ProvisioningToken(t) | Credential::AuthToken(t) => Some(t),
            _ => None,
        }
    }
}

/// The resolved identity and what assembly needs about it.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The account, if any.
    pub account: Option<Account>,
    /// The account's own space (realm, algorithm, ui flags), from the snapshot.
    pub account_space: Option<Arc<PreparedSpace>>,
    /// The account's stored passwords.
    pub passwords: Vec<Password>,
}

/// Resolves a credential without consuming anything.
pub async fn resolve(
    state: &AppState,
    credential: &Credential,
    now: i64,
) -> Result<Identity, AppError> {
    let bundle = match credential {
        Credential::Anonymous => return Ok(Identity::default()),
        Credential::ProvisioningToken(token) => {
            let found = state.store.token_identity(&hash_secret(token)).await?;
            let (token_state, bundle) = found.unzip();
            judge_provisioning_token(token, token_state, now)?;
            bundle.ok_or_else(not_found)?
        }
        Credential::AuthToken(token) => {
            let not_before = now - state.settings.auth_token_ttl_minutes * 60_000;
            let found = state
                .store
                .auth_token_identity(&hash_secret(token), not_before)
                .await?;
            let Some((_, bundle)) = found else {
                tracing::info!(token_fp = %fingerprint(token), "auth token unknown, expired or not attached");
                return Err(not_found());
            };
            bundle
        }
        Credential::Authenticated(bundle) => bundle.as_ref().clone(),
    };
    let AccountBundle { account, passwords } = bundle;
    if account.blocked {
        return Err(AppError::Forbidden("Account blocked".to_string()));
    }
    let account_space = state.spaces.by_domain(&account.domain);
    Ok(Identity {
        account: Some(account),
        account_space,
        passwords,
    })
}

/// Checks a provisioning token as the QR, wizard and provisioning routes all need it: it must
/// exist, be unused and be its account's latest (404), and not be expired (410). Returns its
/// account's id.
pub async fn check_provisioning_token(
    state: &AppState,
    token: &str,
    now: i64,
) -> Result<i64, AppError> {
    let found = state.store.provisioning_token(&hash_secret(token)).await?;
    judge_provisioning_token(token, found, now)
}

/// The rule of [`check_provisioning_token`] over a token's state as read.
fn judge_provisioning_token(
    token: &str,
    found: Option<TokenState>,
    now: i64,
) -> Result<i64, AppError> {
    let Some(t) = found.filter(|t| !t.used && t.current) else {
        tracing::info!(token_fp = %fingerprint(token), "provisioning token unknown, used or superseded");
        return Err(not_found());
    };
    if t.expires_at.is_some_and(|at| at <= now) {
        tracing::info!(token_fp = %fingerprint(token), "provisioning token expired");
        return Err(AppError::Gone("Expired".to_string()));
    }
    Ok(t.account_id)
}

/// The answer to every unknown or unusable credential (the same for all, so it tells nothing).
fn not_found() -> AppError {
    AppError::NotFound("Not Found".to_string())
}

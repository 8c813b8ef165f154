//! Stage 8 — consume & activate: one atomic store operation that burns the token (or deletes
//! the auth token), activates the account and stores a reset password. Under any concurrency,
//! on either store, exactly one request wins; the others get 404 and never see the document.

use crate::error::AppError;
use crate::model::NewPassword;
use crate::pipeline::identity::{Credential, Identity};
use crate::secret::{fingerprint, hash_secret};
use crate::state::AppState;

/// Commits the request's side effects, or fails with 404 if another request won the token.
pub async fn commit(
    state: &AppState,
    credential: &Credential,
    who: &Identity,
    reset: Option<&NewPassword>,
    now: i64,
) -> Result<(), AppError> {
    let won = match credential {
        Credential::Anonymous => true,
        Credential::ProvisioningToken(token) => state
            .store
            .consume_provisioning_token(&hash_secret(token), now, reset)
            .await?
            .is_some(),
        Credential::AuthToken(token) => {
            let not_before = now - state.settings.auth_token_ttl_minutes * 60_000;
            state
                .store
                .consume_auth_token(&hash_secret(token), not_before, reset)
                .await?
                .is_some()
        }
        Credential::Authenticated(_) => {
            if let (Some(account), Some(password)) = (&who.account, reset) {
                state
                    .store
                    .replace_passwords(account.id, std::slice::from_ref(password))
                    .await?;
            }
            true
        }
    };
    if won {
        if let Some(token) = credential.token() {
            tracing::info!(token_fp = %fingerprint(token), account_id = ?who.account.as_ref().map(|a| a.id), "token consumed");
        }
        Ok(())
    } else {
        Err(AppError::NotFound("Not Found".to_string()))
    }
}

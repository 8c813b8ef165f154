//! Provisioning tokens: minting, for the API, the CLI and tests alike. A token is 256 random
//! bits shown once ([`MintedToken`]) and stored only as its SHA-256 hash; it becomes its
//! account's only live token, and expires after its space's token lifetime.

use crate::model::{Account, Space, now_ms};
use crate::secret::{hash_secret, new_token};
use crate::store::{Store, StoreResult};
use anyhow::Context as _;

/// A freshly minted provisioning token: the clear value exists only here.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The clear token (shown once).
    pub token: String,
    /// Expiry, unix ms, when the space's tokens expire.
    pub expires_at: Option<i64>,
}

/// When a token minted at `now` in `space` expires (`None`: never).
pub fn expiry(space: &Space, now: i64) -> Option<i64> {
    // The lifetime is range-checked at input; saturating arithmetic keeps a value stored
    // before that check (or edited by hand) from wrapping into a token born expired.
    (space.token_lifetime_minutes > 0)
        .then(|| now.saturating_add(space.token_lifetime_minutes.saturating_mul(60_000)))
}

/// Mints a provisioning token for `account`, whose space is `space` (the server passes its
/// snapshot's copy: no space query).
pub async fn mint(store: &dyn Store, space: &Space, account: &Account) -> StoreResult<MintedToken> {
    let now = now_ms();
    let expires_at = expiry(space, now);
    let token = new_token();
    store
        .create_provisioning_token(account.id, &hash_secret(&token), now, expires_at)
        .await?;
    Ok(MintedToken { token, expires_at })
}

/// Mints a provisioning token for `account`, reading its space from the store (tools and
/// tests, which hold no snapshot).
pub async fn mint_provisioning_token(
    store: &dyn Store,
    account: &Account,
) -> anyhow::Result<MintedToken> {
    let space = store
        .space_by_domain(&account.domain)
        .await?
        .with_context(|| format!("space {} not found", account.domain))?;
    Ok(mint(store, &space, account).await?)
}

//! Bootstrapping an administrator from the command line (`provisio admin add`), so a fresh
//! install can be driven over HTTP. PLACEHOLDER: the API work completes this.

use crate::config::Settings;
use crate::store::DynStore;

/// Creates an admin account and returns its JSON with a freshly minted API key.
pub async fn create_admin(
    _store: &DynStore,
    _settings: &Settings,
    _identity: &str,
    _password: &str,
    _super_admin: bool,
) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("admin accounts are not implemented yet")
}

//! The storage contract: every operation the pipeline and the API need, with the atomicity each
//! one promises. Two implementations pass the same contract suite (`tests/store_contract.rs`):
//! [`sqlite`] (embedded default) and [`postgres`].
//!
//! Times are unix milliseconds (`i64`) supplied by the caller, so both backends agree to the
//! millisecond and tests can travel in time. Secrets (tokens, API keys) arrive already hashed
//! ([`crate::secret::hash_secret`]); the store never sees a clear token.

/// Columns of `spaces`, in the order both backends' `space_from_row` read them (one list, so
/// the two stores cannot drift apart).
macro_rules! space_columns {
    () => {
        "id, domain, host, name, super_space, realm, password_algorithm, base_rc, custom_entries, \
         overwrite_all, ui_super, ui_disable_chat_feature, ui_disable_meetings_feature, \
         ui_disable_broadcast_feature, ui_hide_settings, ui_hide_account_settings, \
         ui_disable_call_recordings_feature, ui_only_display_sip_uri_username, \
         ui_assistant_hide_create_account, ui_assistant_disable_qr_code, \
         ui_assistant_hide_third_party_account, ui_max_account, vcard_list_url, public_url, \
         token_lifetime_minutes, header_mode, hook_failure, max_accounts"
    };
}

/// Columns of `accounts`, in the order both backends' `account_from_row` read them.
macro_rules! account_columns {
    () => {
        "id, username, domain, email, display_name, phone, activated, blocked, admin, \
         dtmf_protocol, ip_address, user_agent, created_at, updated_at"
    };
}

pub mod migrations;
pub mod postgres;
pub mod sqlite;
pub mod sqlite_file;

use crate::model::{Account, NewPassword, Password, Space};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed row does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule would be broken (the message names what clashed, safe for clients).
    #[error("{0}")]
    Conflict(String),
    /// The database failed; the message is for logs only.
    #[error("database error: {0}")]
    Backend(String),
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A shared handle to whichever backend the configuration selected.
pub type DynStore = Arc<dyn Store>;

/// Fields of an account about to be created.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    /// SIP user part (validated by the caller).
    pub username: String,
    /// Domain of an existing space.
    pub domain: String,
    /// Optional display name.
    pub display_name: Option<String>,
    /// Optional e-mail.
    pub email: Option<String>,
    /// Optional phone number.
    pub phone: Option<String>,
    /// Optional DTMF protocol.
    pub dtmf_protocol: Option<String>,
    /// Initial activation state.
    pub activated: bool,
    /// Admin of its space.
    pub admin: bool,
    /// Address of the creating request.
    pub ip_address: Option<String>,
    /// User agent of the creating request.
    pub user_agent: Option<String>,
    /// Initial per-account dictionary.
    pub dictionary: BTreeMap<String, String>,
    /// Initial passwords (already hashed).
    pub passwords: Vec<NewPassword>,
}

/// A partial update of an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AccountUpdate {
    /// New display name (`Some(None)` clears it).
    pub display_name: Option<Option<String>>,
    /// New e-mail (`Some(None)` clears it).
    pub email: Option<Option<String>>,
    /// New phone (`Some(None)` clears it).
    pub phone: Option<Option<String>>,
    /// New DTMF protocol (`Some(None)` clears it).
    pub dtmf_protocol: Option<Option<String>>,
    /// New activation state.
    pub activated: Option<bool>,
    /// New blocked state.
    pub blocked: Option<bool>,
    /// New admin flag.
    pub admin: Option<bool>,
    /// Replaces the whole dictionary.
    pub dictionary: Option<BTreeMap<String, String>>,
}

/// What the store knows about a provisioning token, read without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    /// Owner of the token.
    pub account_id: i64,
    /// When the token was minted.
    pub created_at: i64,
    /// When it stops working, if it expires.
    pub expires_at: Option<i64>,
    /// Already consumed.
    pub used: bool,
    /// It is the account's latest token, used or not (only the latest may be consumed: minting
    /// a new token kills every older one for good).
    pub current: bool,
}

/// State of an auth token (QR login), read without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthTokenState {
    /// Account it is attached to, if any.
    pub account_id: Option<i64>,
    /// When it was minted.
    pub created_at: i64,
}

/// An API key as stored (the key itself is only a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Database id.
    pub id: i64,
    /// Owner.
    pub account_id: i64,
    /// Name of an admin key; `None` for a user key.
    pub name: Option<String>,
    /// IP address the key is bound to, if any.
    pub ip: Option<String>,
    /// Admin keys: minutes of inactivity after which the key dies (0 = never). `None` = user key.
    pub expires_after_minutes: Option<i64>,
    /// Last successful use.
    pub last_used_at: i64,
    /// Successful uses.
    pub requests: i64,
}

/// A new API key to store.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Owner.
    pub account_id: i64,
    /// SHA-256 of the clear key.
    pub key_hash: Vec<u8>,
    /// Name (admin keys only).
    pub name: Option<String>,
    /// IP binding, if any.
    pub ip: Option<String>,
    /// `None` makes a user key (replacing the account's previous user key); `Some(m)` an admin key.
    pub expires_after_minutes: Option<i64>,
}

/// Outcome of checking a Digest response's opaque/nonce/nc against the stored challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// The challenge exists for this account and IP, is fresh, and `nc` is higher than any
    /// seen before; the new `nc` has been recorded.
    Accepted,
    /// No such opaque for this account, nonce or IP, or it expired.
    Unknown,
    /// The nonce count did not increase: a replay.
    Replayed,
}

/// Every storage operation provisio performs.
#[async_trait]
pub trait Store: Send + Sync {
    /// `"sqlite"` or `"postgres"`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Applies the embedded migrations not yet applied; returns their names.
    async fn migrate(&self) -> StoreResult<Vec<String>>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> StoreResult<()>;

    // ---- spaces ---------------------------------------------------------------------------

    /// Creates a space; `Conflict` if its domain, host or name is taken.
    async fn create_space(&self, space: &Space) -> StoreResult<Space>;
    /// Replaces every setting of the space with `space.domain`; `NotFound` if none.
    async fn update_space(&self, space: &Space) -> StoreResult<Space>;
    /// Deletes a space and, by cascade, its accounts; false if it did not exist.
    async fn delete_space(&self, domain: &str) -> StoreResult<bool>;
    /// The space with this SIP domain.
    async fn space_by_domain(&self, domain: &str) -> StoreResult<Option<Space>>;
    /// The space served on this HTTP host (lower-case, no port).
    async fn space_by_host(&self, host: &str) -> StoreResult<Option<Space>>;
    /// All spaces, by domain.
    async fn list_spaces(&self) -> StoreResult<Vec<Space>>;

    // ---- accounts -------------------------------------------------------------------------

    /// Creates an account with its passwords; `Conflict` if (username, domain) exists or was
    /// ever deleted (tombstone), `NotFound` if the space does not exist.
    async fn create_account(&self, new: &NewAccount, now: i64) -> StoreResult<Account>;
    /// The account with this id.
    async fn account(&self, id: i64) -> StoreResult<Option<Account>>;
    /// The account `username@domain`.
    async fn account_by_identity(
        &self,
        username: &str,
        domain: &str,
    ) -> StoreResult<Option<Account>>;
    /// A page of accounts (by id), optionally of one domain, and the total count.
    async fn list_accounts(
        &self,
        domain: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Account>, i64)>;
    /// Applies a partial update; `None` if the account does not exist.
    async fn update_account(
        &self,
        id: i64,
        update: &AccountUpdate,
        now: i64,
    ) -> StoreResult<Option<Account>>;
    /// Deletes an account (cascading to its passwords, tokens, keys and nonces) and writes a
    /// tombstone so its identity is never reused; false if it did not exist.
    async fn delete_account(&self, id: i64, now: i64) -> StoreResult<bool>;
    /// The account's passwords, by id.
    async fn passwords(&self, account_id: i64) -> StoreResult<Vec<Password>>;
    /// Atomically replaces all of an account's passwords.
    async fn replace_passwords(
        &self,
        account_id: i64,
        passwords: &[NewPassword],
    ) -> StoreResult<()>;

    // ---- provisioning tokens ----------------------------------------------------------------

    /// Stores a new provisioning token for the account; it becomes the current one.
    async fn create_provisioning_token(
        &self,
        account_id: i64,
        token_hash: &[u8],
        now: i64,
        expires_at: Option<i64>,
    ) -> StoreResult<()>;
    /// Reads a token's state without changing it; `None` if unknown.
    async fn provisioning_token(&self, token_hash: &[u8]) -> StoreResult<Option<TokenState>>;
    /// In one transaction: marks the token used, but only if it is unused, current and not
    /// expired at `now`; activates its account; and, with `reset`, replaces the account's
    /// passwords. Returns the account id to exactly one caller, `None` to every other.
    async fn consume_provisioning_token(
        &self,
        token_hash: &[u8],
        now: i64,
        reset: Option<&NewPassword>,
    ) -> StoreResult<Option<i64>>;

    // ---- auth tokens (QR login) -----------------------------------------------------------

    /// Stores a new unattached auth token.
    async fn create_auth_token(
        &self,
        token_hash: &[u8],
        ip: Option<&str>,
        user_agent: Option<&str>,
        now: i64,
    ) -> StoreResult<()>;
    /// Reads an auth token minted after `not_before`; `None` if unknown or older.
    async fn auth_token(
        &self,
        token_hash: &[u8],
        not_before: i64,
    ) -> StoreResult<Option<AuthTokenState>>;
    /// Attaches a fresh (minted after `not_before`) unattached token to the account; false otherwise.
    async fn attach_auth_token(
        &self,
        token_hash: &[u8],
        account_id: i64,
        not_before: i64,
    ) -> StoreResult<bool>;
    /// In one transaction: deletes the token if it is attached and minted after `not_before`,
    /// and with `reset` replaces its account's passwords. Returns the account id to exactly
    /// one caller.
    async fn consume_auth_token(
        &self,
        token_hash: &[u8],
        not_before: i64,
        reset: Option<&NewPassword>,
    ) -> StoreResult<Option<i64>>;

    // ---- API keys -------------------------------------------------------------------------

    /// Stores a key; a user key (`expires_after_minutes = None`) replaces the account's previous
    /// user key. Returns its id.
    async fn create_api_key(&self, key: &NewApiKey, now: i64) -> StoreResult<i64>;
    /// Accepts a key if it exists, its IP binding (if any) equals `ip`, and it has not expired
    /// (user keys: unused for `user_key_ttl_minutes`, 0 = never; admin keys: their own
    /// setting); then records the use. Returns the owner's id.
    async fn authenticate_api_key(
        &self,
        key_hash: &[u8],
        ip: Option<&str>,
        now: i64,
        user_key_ttl_minutes: i64,
    ) -> StoreResult<Option<i64>>;
    /// The account's keys, by id.
    async fn api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>>;

    // ---- Digest challenges ----------------------------------------------------------------

    /// Records a challenge sent to `ip` for the account.
    async fn create_digest_nonce(
        &self,
        account_id: i64,
        nonce: &str,
        opaque: &str,
        ip: &str,
        now: i64,
    ) -> StoreResult<()>;
    /// Atomically checks a response's challenge: same account, opaque, nonce and IP, created
    /// after `not_before`, and `nc` strictly greater than the last one accepted (then records
    /// `nc`). A replay deletes the challenge.
    async fn check_digest_nonce(
        &self,
        account_id: i64,
        opaque: &str,
        nonce: &str,
        ip: &str,
        nc: i64,
        not_before: i64,
    ) -> StoreResult<NonceCheck>;

    /// Deletes expired auth tokens and Digest challenges; returns how many rows went.
    async fn purge_expired(&self, auth_tokens_before: i64, nonces_before: i64) -> StoreResult<u64>;
}

/// Opens the store a database URL names: `postgres://…`/`postgresql://…` for PostgreSQL,
/// `sqlite://PATH` or a plain path for SQLite.
pub async fn open(url: &str, pool_size: usize) -> anyhow::Result<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PostgresStore::connect(url, pool_size).await?,
        ))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Arc::new(
            sqlite::SqliteStore::open(std::path::Path::new(path), pool_size).await?,
        ))
    }
}

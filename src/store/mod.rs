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
         token_lifetime_minutes, header_mode, hook_failure, max_accounts, oidc_server_url, \
         oidc_realm, oidc_public_key, oidc_jwks_url, oidc_sip_identifier_claim, oidc_audience, \
         oidc_issuer, oidc_required, client_certificate_authentication"
    };
}

/// Columns of `accounts`, in the order both backends' `account_from_row` read them.
macro_rules! account_columns {
    () => {
        "id, username, domain, email, display_name, phone, activated, blocked, admin, \
         dtmf_protocol, ip_address, user_agent, created_at, updated_at"
    };
}

/// Columns of `audit_events` but its id, in the order both backends insert them.
macro_rules! audit_insert_columns {
    () => {
        "at, actor_kind, actor_account_id, actor_label, action, target, account_id, space, \
         client_ip, user_agent, outcome, detail"
    };
}

/// Columns of `hook_scripts` but its id, in the order both backends read them.
macro_rules! hook_script_columns {
    () => {
        "name, version, source, fixtures, author, author_account_id, comment, created_at"
    };
}

/// The columns of [`AccountBundle`] for PostgreSQL: the account `a` (as
/// [`account_columns!`]), its dictionary and its passwords as parallel arrays (NULL when
/// empty) from the lateral joins of [`pg_bundle_joins!`], so a token, a key or an identity
/// resolves to everything in one statement.
macro_rules! pg_bundle_columns {
    () => {
        "a.id, a.username, a.domain, a.email, a.display_name, a.phone, a.activated, a.blocked, \
         a.admin, a.dtmf_protocol, a.ip_address, a.user_agent, a.created_at, a.updated_at, \
         bd.dictionary_keys, bd.dictionary_values, bp.password_ids, bp.password_algorithms, \
         bp.password_ha1s"
    };
}

/// The joins [`pg_bundle_columns!`] reads, placed after the `accounts a` join: one index
/// range scan per table, aggregated in one pass (five `ARRAY(SELECT …)` columns scanned the
/// same rows five times, and cost the query a third of its throughput; see BENCHMARKS.md).
macro_rules! pg_bundle_joins {
    () => {
        " CROSS JOIN LATERAL (SELECT array_agg(d.key ORDER BY d.key) AS dictionary_keys, \
         array_agg(d.value ORDER BY d.key) AS dictionary_values \
         FROM account_dictionary d WHERE d.account_id = a.id) bd \
         CROSS JOIN LATERAL (SELECT array_agg(p.id ORDER BY p.id) AS password_ids, \
         array_agg(p.algorithm ORDER BY p.id) AS password_algorithms, \
         array_agg(p.ha1 ORDER BY p.id) AS password_ha1s \
         FROM passwords p WHERE p.account_id = a.id) bp "
    };
}

pub mod changes;
pub mod migrations;
pub mod pg_consume;
pub mod pg_tls;
pub mod postgres;
pub mod sqlite;
pub mod sqlite_file;
pub mod writer;

use crate::model::{Account, NewPassword, Password, Space};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The database could not be reached, or the connection broke mid-operation (PostgreSQL
    /// restarted, a pool wait timed out, SQLite busy): a write in flight may or may not have
    /// committed, and the same operation may succeed if retried. The message is for logs only.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the failure may be transient and the outcome of a write is unknown, so an
    /// idempotent operation should be retried rather than reported (see
    /// [`crate::pipeline::consume`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
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
    /// New username (HA1 covers it: the caller sends new `passwords` with it). `Conflict` if
    /// the new identity exists or was ever deleted (tombstone).
    pub username: Option<String>,
    /// New domain, i.e. another space (`NotFound` if there is none); the same caveats as
    /// `username`.
    pub domain: Option<String>,
    /// Replaces every stored password, in the update's transaction.
    pub passwords: Option<Vec<NewPassword>>,
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

impl ApiKeyRecord {
    /// Whether the key may be used by a request from `ip` at `now`, when its latest use is
    /// `last_use` (the stored [`ApiKeyRecord::last_used_at`], or a later use not yet written:
    /// see `crate::auth::usage`): its IP binding, if any, must match, and it must not have been
    /// idle for its lifetime (user keys: `user_key_ttl_minutes`, 0 = never; admin keys: their
    /// own `expires_after_minutes`, 0 = never). It dies at the instant last use + lifetime.
    pub fn accepts(
        &self,
        ip: Option<&str>,
        last_use: i64,
        now: i64,
        user_key_ttl_minutes: i64,
    ) -> bool {
        if self.ip.as_deref().is_some_and(|bound| ip != Some(bound)) {
            return false;
        }
        let lifetime = self.expires_after_minutes.unwrap_or(user_key_ttl_minutes);
        lifetime == 0
            || last_use.max(self.last_used_at) > now.saturating_sub(lifetime.saturating_mul(60_000))
    }
}

/// Uses of one API key not yet written: the latest one and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKeyUse {
    /// The key's id.
    pub id: i64,
    /// Latest use (unix ms); the stored value only ever moves forward.
    pub last_used_at: i64,
    /// Uses to add to the key's count.
    pub requests: i64,
}

/// An account with everything a document or an authentication needs about it, read in one
/// round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountBundle {
    /// The account, dictionary included.
    pub account: Account,
    /// Its stored passwords, by id.
    pub passwords: Vec<Password>,
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

/// Names one request's attempt to consume a token. It is stored with the token's use, so a
/// request whose commit acknowledgement was lost can read back whether it won, and repeating a
/// consume with the same id is idempotent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ConsumeId(pub [u8; 16]);

impl ConsumeId {
    /// A fresh random id (128 bits: two requests never share one).
    pub fn random() -> ConsumeId {
        let mut id = [0u8; 16];
        #[allow(clippy::expect_used)] // as in crate::secret: no randomness, nothing to recover
        getrandom::fill(&mut id).expect("the operating system random number generator failed");
        ConsumeId(id)
    }
}

impl std::fmt::Debug for ConsumeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConsumeId({})", hex::encode(self.0))
    }
}

/// What one housekeeping pass deletes: rows no answer depends on any more. Every cut-off is an
/// instant (unix ms) computed by the caller from `now` and the settings, so tests can travel in
/// time; a row is deleted when its deciding instant is at or before the cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeRules {
    /// Auth tokens minted at or before this instant are expired (`now` − their lifetime); a
    /// spent one also waits until its use is that old, so a request settling an ambiguous
    /// consume can still read it back.
    pub auth_tokens_before: i64,
    /// Digest challenges created at or before this instant are expired.
    pub nonces_before: i64,
    /// Also delete challenges answered for good before they expired (a response without
    /// `qop` spends its nonce).
    pub answered_nonces: bool,
    /// User API keys last used at or before this instant are past their idle lifetime; `None`
    /// when user keys never expire. Admin keys are never purged (their owners list them).
    pub user_keys_idle_before: Option<i64>,
    /// Provisioning tokens used, or superseded by a newer token, at or before this instant;
    /// `None` keeps them all.
    pub tokens_retired_before: Option<i64>,
    /// Audit events that happened at or before this instant (`audit_retention_days`); `None`
    /// keeps them all.
    pub audit_events_before: Option<i64>,
}

/// Rows one housekeeping pass deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Expired or spent QR-login auth tokens.
    pub auth_tokens: u64,
    /// Expired or answered Digest challenges.
    pub digest_nonces: u64,
    /// User API keys past their idle lifetime.
    pub api_keys: u64,
    /// Provisioning tokens used or superseded long ago.
    pub provisioning_tokens: u64,
    /// Audit events older than their retention.
    pub audit_events: u64,
}

impl PurgeCounts {
    /// (table, rows) pairs, in a fixed order, for logs, metrics and `provisio purge`.
    pub fn by_table(&self) -> [(&'static str, u64); 5] {
        [
            ("auth_tokens", self.auth_tokens),
            ("digest_nonces", self.digest_nonces),
            ("api_keys", self.api_keys),
            ("provisioning_tokens", self.provisioning_tokens),
            ("audit_events", self.audit_events),
        ]
    }

    /// All rows deleted.
    pub fn total(&self) -> u64 {
        self.by_table().iter().map(|(_, n)| n).sum()
    }
}

/// A notice from the change feed ([`Store::change_feed`]): data of `topic` changed and its
/// version is now `version`. Topic `"*"` with version -1 ([`Change::reload_all`]) means that
/// notices may have been lost (the feed (re)connected): reload everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What changed: `"spaces"`, `"hooks"` (the hook scripts stored in the database), or
    /// `"*"` for everything.
    pub topic: String,
    /// The topic's version after the change (as [`Store::change_version`] reads it); -1 for `*`.
    pub version: i64,
}

impl Change {
    /// The topic of every table whose rows the `spaces` snapshot holds.
    pub const SPACES: &'static str = "spaces";
    /// The topic of the hook scripts stored in the database (`hook_scripts`).
    pub const HOOKS: &'static str = "hooks";
    /// The topic meaning "anything may have changed".
    pub const ALL: &'static str = "*";

    /// The "reload everything" notice sent after every (re)connect of the feed.
    pub fn reload_all() -> Change {
        Change {
            topic: Change::ALL.to_string(),
            version: -1,
        }
    }

    /// Whether a holder of `topic`'s data must reload on this notice.
    pub fn concerns(&self, topic: &str) -> bool {
        self.topic == topic || self.topic == Change::ALL
    }
}

/// One audit-trail event (`audit_events`, see [`crate::audit`]): who did what to what, when,
/// from where. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEvent {
    /// Database id (0 before it is stored).
    pub id: i64,
    /// When it happened (unix ms).
    pub at: i64,
    /// `account`, `cli` or `anonymous`.
    pub actor_kind: String,
    /// The acting account, when an account acted.
    pub actor_account_id: Option<i64>,
    /// The actor as a person reads it: `user@domain`, `cli` or `anonymous`.
    pub actor_label: String,
    /// What happened (`document.delivered`, `account.created`, …: [`crate::audit::action`]).
    pub action: String,
    /// What it happened to: an account id, a space domain or an API key id.
    pub target: Option<String>,
    /// The account the event is about.
    pub account_id: Option<i64>,
    /// The space (domain) it belongs to.
    pub space: Option<String>,
    /// Client address (after trusted proxies).
    pub client_ip: Option<String>,
    /// Client's User-Agent.
    pub user_agent: Option<String>,
    /// `ok`, or why it failed.
    pub outcome: String,
    /// Free detail (a document's route template, an update's switch).
    pub detail: Option<String>,
}

/// Which audit events to read, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditQuery {
    /// Events about this account or by it (as actor).
    pub account_id: Option<i64>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this space's events (a space admin's scope).
    pub space: Option<String>,
    /// Only events at or after this instant (unix ms).
    pub since: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// One version of a hook script as stored (`hook_scripts`, migration V6): every save, rollback
/// and deletion is a new version, nothing is overwritten.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HookScriptRecord {
    /// `default`, a module name, or a space's domain.
    pub name: String,
    /// 1, 2, 3… per name.
    pub version: i64,
    /// The script; `None` for a deletion (tombstone).
    pub source: Option<String>,
    /// The fixtures stored beside it (JSON array, see `crate::hooks::db::StoredFixture`).
    pub fixtures: Option<String>,
    /// `user@domain` of the account that saved it, or `cli`.
    pub author: String,
    /// That account's id.
    pub author_account_id: Option<i64>,
    /// Why it was saved.
    pub comment: Option<String>,
    /// When (unix ms).
    pub created_at: i64,
}

/// A hook script version about to be stored; the store numbers it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewHookScript {
    /// The script's name.
    pub name: String,
    /// Its source; `None` records a deletion.
    pub source: Option<String>,
    /// Its fixtures (JSON array), if any.
    pub fixtures: Option<String>,
    /// `user@domain` or `cli`.
    pub author: String,
    /// The saving account's id.
    pub author_account_id: Option<i64>,
    /// Why.
    pub comment: Option<String>,
}

/// What one running instance last reported about the hook scripts it serves
/// (`hook_instances`), for the fleet's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HookInstanceReport {
    /// Random id of the process.
    pub instance: String,
    /// Host name and process id.
    pub host: String,
    /// When the process started (unix ms).
    pub started_at: i64,
    /// When it last reported (unix ms).
    pub seen_at: i64,
    /// What it serves (JSON, see `crate::hooks::db`).
    pub report: String,
}

/// The latest document delivered to an account: the device inventory of the account JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastProvisioned {
    /// When (unix ms).
    pub at: i64,
    /// From which client address.
    pub ip: Option<String>,
    /// With which User-Agent.
    pub user_agent: Option<String>,
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

/// The actions a wizard link may ask of the app (FlexiAPI's `Wizard::LINPHONE_ACTION`).
pub const LINPHONE_ACTIONS: &[&str] = &["call", "show", "bye", "accept", "decline"];

/// A wizard link about to be stored (`POST /api/wizard`, a provisioning e-mail).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewWizard {
    /// SHA-256 of the clear token (the clear value is shown once, in the API answer or mail).
    pub token_hash: Vec<u8>,
    /// Domain of the space whose host serves the link.
    pub space: String,
    /// The admin who made it.
    pub created_by: Option<i64>,
    /// The account a visit provisions (a fresh token is minted for it then).
    pub provisioning_account_id: Option<i64>,
    /// SIP URI the app is pointed at, as sent (`sip:`/`sips:` included).
    pub sip: Option<String>,
    /// One of [`LINPHONE_ACTIONS`]; `None` means `show`.
    pub linphone_action: Option<String>,
    /// Whether the app must use SIPS; `None` lets the visit's `?linphone-use-sips` decide.
    pub linphone_use_sips: Option<bool>,
}

/// A stored wizard link (its token only as a hash, never read back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wizard {
    /// Database id.
    pub id: i64,
    /// Domain of the space whose host serves the link.
    pub space: String,
    /// The admin who made it (`None` once that account is deleted).
    pub created_by: Option<i64>,
    /// The account a visit provisions.
    pub provisioning_account_id: Option<i64>,
    /// SIP URI the app is pointed at.
    pub sip: Option<String>,
    /// The app action; `None` means `show`.
    pub linphone_action: Option<String>,
    /// Whether the app must use SIPS; `None`: the visit decides.
    pub linphone_use_sips: Option<bool>,
    /// When it was made (unix ms).
    pub created_at: i64,
    /// When it was opened (single use), if it was.
    pub used_at: Option<i64>,
}

/// The provisioning token a wizard visit mints for the wizard's account, stored in the same
/// transaction that marks the wizard used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WizardToken {
    /// SHA-256 of the clear provisioning token.
    pub token_hash: Vec<u8>,
    /// When it expires (the account space's token lifetime), if it does.
    pub expires_at: Option<i64>,
}

/// The connection pool at one moment (deadpool's `Status`), for the `/metrics` gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections the pool may open.
    pub max_size: usize,
    /// Connections open.
    pub size: usize,
    /// Open connections not in use.
    pub available: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// Every storage operation provisio performs.
#[async_trait]
pub trait Store: Send + Sync {
    /// `"sqlite"` or `"postgres"`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// The pool's connections right now (all zero for a store without a pool).
    fn pool_status(&self) -> PoolStatus {
        PoolStatus::default()
    }

    /// Applies the embedded migrations not yet applied; returns their names.
    async fn migrate(&self) -> StoreResult<Vec<String>>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> StoreResult<()>;

    // ---- change feed (src/store/changes.rs) -------------------------------------------------

    /// Current version of a change topic (`"spaces"`, `"hooks"`): cheap, one
    /// indexed read, for the periodic coherence check. Every committed write of the topic's
    /// rows, by any process, increases it (in the writer's transaction). 0 for a topic the
    /// schema does not know. Read it *before* loading the data, so a change in between is
    /// seen again at the next check rather than missed.
    async fn change_version(&self, topic: &str) -> StoreResult<i64>;

    /// Notices of changes made by any process (PostgreSQL LISTEN/NOTIFY on a dedicated
    /// connection that reconnects with backoff; after every (re)connect a `Change { topic:
    /// "*", version: -1 }` "reload everything" notice is sent). SQLite: `None` (the periodic
    /// check covers other processes; this process refreshes in-process after its own writes).
    /// The first call starts the listener (on the current tokio runtime; `None` outside one);
    /// it stops when the store is dropped. A receiver that lags (`RecvError::Lagged`) must
    /// reload, as for `*`.
    fn change_feed(&self) -> Option<tokio::sync::broadcast::Receiver<Change>>;

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
    /// The account `username@domain` with its passwords, in one round trip (Digest).
    async fn account_bundle_by_identity(
        &self,
        username: &str,
        domain: &str,
    ) -> StoreResult<Option<AccountBundle>>;
    /// The one account of `domain` whose e-mail is `email` (ASCII case ignored), with its
    /// passwords; `None` when no account, or more than one, has it (a JWT naming its account
    /// by e-mail must name exactly one).
    async fn account_bundle_by_email(
        &self,
        domain: &str,
        email: &str,
    ) -> StoreResult<Option<AccountBundle>>;
    /// A page of accounts (by id), optionally of one domain, and the total count.
    async fn list_accounts(
        &self,
        domain: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Account>, i64)>;
    /// Applies a partial update in one transaction (passwords included); `None` if the account
    /// does not exist.
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
    /// A token's state and its account with passwords, in one round trip, changing nothing;
    /// `None` if unknown. The caller judges the state (used, current, expired).
    async fn token_identity(
        &self,
        token_hash: &[u8],
    ) -> StoreResult<Option<(TokenState, AccountBundle)>>;
    /// In one transaction: marks the token used by `by`, but only if it is unused, current
    /// and not expired at `now`; activates its account; and, with `reset`, replaces the
    /// account's passwords. Returns the account id to exactly one caller, `None` to every
    /// other. Idempotent per `by`: when the token is already used by `by` (an earlier call
    /// committed but its answer was lost), returns the account id again and changes nothing.
    async fn consume_provisioning_token(
        &self,
        token_hash: &[u8],
        now: i64,
        reset: Option<&NewPassword>,
        by: &ConsumeId,
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
    /// Reads an unspent auth token minted after `not_before`; `None` if unknown, spent or older.
    async fn auth_token(
        &self,
        token_hash: &[u8],
        not_before: i64,
    ) -> StoreResult<Option<AuthTokenState>>;
    /// An unspent auth token minted after `not_before` AND attached, with its account and
    /// passwords, in one round trip; `None` if unknown, spent, older or not attached.
    async fn auth_token_identity(
        &self,
        token_hash: &[u8],
        not_before: i64,
    ) -> StoreResult<Option<(AuthTokenState, AccountBundle)>>;
    /// Attaches a fresh (minted after `not_before`) unattached token to the account; false otherwise.
    async fn attach_auth_token(
        &self,
        token_hash: &[u8],
        account_id: i64,
        not_before: i64,
    ) -> StoreResult<bool>;
    /// In one transaction: marks the token spent at `now` by `by` if it is unspent, attached
    /// and minted after `not_before`, and with `reset` replaces its account's passwords.
    /// Returns the account id to exactly one caller. Idempotent per `by`, like
    /// [`Store::consume_provisioning_token`]. Spent tokens stay (answering as unknown) until
    /// housekeeping deletes them.
    async fn consume_auth_token_as(
        &self,
        token_hash: &[u8],
        now: i64,
        not_before: i64,
        reset: Option<&NewPassword>,
        by: &ConsumeId,
    ) -> StoreResult<Option<i64>>;

    /// [`Store::consume_auth_token_as`] with a fresh id and the wall clock, for callers that
    /// do not settle an ambiguous outcome themselves (prefer
    /// [`crate::pipeline::consume::auth_token`], which does).
    async fn consume_auth_token(
        &self,
        token_hash: &[u8],
        not_before: i64,
        reset: Option<&NewPassword>,
    ) -> StoreResult<Option<i64>> {
        self.consume_auth_token_as(
            token_hash,
            crate::model::now_ms(),
            not_before,
            reset,
            &ConsumeId::random(),
        )
        .await
    }

    // ---- API keys -------------------------------------------------------------------------

    /// Stores a key; a user key (`expires_after_minutes = None`) replaces the account's previous
    /// user key. Returns its id.
    async fn create_api_key(&self, key: &NewApiKey, now: i64) -> StoreResult<i64>;
    /// A key and its owner with passwords, in one round trip, writing nothing (the use is
    /// recorded later, in a batch: [`Store::record_api_key_uses`]); `None` if unknown. The
    /// caller judges it with [`ApiKeyRecord::accepts`].
    async fn api_key_identity(
        &self,
        key_hash: &[u8],
    ) -> StoreResult<Option<(ApiKeyRecord, AccountBundle)>>;
    /// Adds a batch of uses in one write: each key's `last_used_at` becomes the later of the
    /// stored and the given instant, its count grows by `requests`. Keys deleted meanwhile are
    /// skipped.
    async fn record_api_key_uses(&self, uses: &[ApiKeyUse]) -> StoreResult<()>;
    /// Checks a key ([`ApiKeyRecord::accepts`]) and records the use at once, unbatched; returns
    /// the owner's id. For tools and tests: the server batches uses (`crate::auth::usage`).
    async fn authenticate_api_key(
        &self,
        key_hash: &[u8],
        ip: Option<&str>,
        now: i64,
        user_key_ttl_minutes: i64,
    ) -> StoreResult<Option<i64>> {
        let Some((key, _)) = self.api_key_identity(key_hash).await? else {
            return Ok(None);
        };
        if !key.accepts(ip, key.last_used_at, now, user_key_ttl_minutes) {
            return Ok(None);
        }
        self.record_api_key_uses(&[ApiKeyUse {
            id: key.id,
            last_used_at: now,
            requests: 1,
        }])
        .await?;
        Ok(Some(key.account_id))
    }
    /// The account's keys, by id.
    async fn api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Revokes a key by id (`provisio admin revoke`): it stops authenticating at once, since
    /// every request looks its key up. Returns whether it existed.
    async fn delete_api_key(&self, id: i64) -> StoreResult<bool>;

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

    // ---- audit trail (src/audit.rs) ---------------------------------------------------------

    /// Appends a batch of audit events in one write (their `id` is ignored).
    async fn record_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()>;
    /// Audit events matching `query`, newest first (by time, then id).
    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;
    /// The latest `document.delivered` event of the account, read from the audit trail (one
    /// indexed probe): nothing is written to the account on the request path.
    async fn last_provisioned(&self, account_id: i64) -> StoreResult<Option<LastProvisioned>>;

    // ---- wizard links (FlexiAPI's `wizards`) --------------------------------------------------

    /// Stores a wizard link; `NotFound` if its space or one of its accounts does not exist,
    /// `Conflict` if the token hash is taken.
    async fn create_wizard(&self, wizard: &NewWizard, now: i64) -> StoreResult<Wizard>;
    /// Reads a wizard link, used or not, changing nothing; `None` if unknown.
    async fn wizard(&self, token_hash: &[u8]) -> StoreResult<Option<Wizard>>;
    /// In one transaction: marks the wizard used at `now` if it is unused and, when it names
    /// a provisioning account and `mint` is given, stores `mint` as that account's new (so
    /// current) provisioning token. Returns the wizard, `used_at` set, to exactly one caller;
    /// `None` to every other and for an unknown token.
    async fn use_wizard(
        &self,
        token_hash: &[u8],
        now: i64,
        mint: Option<&WizardToken>,
    ) -> StoreResult<Option<Wizard>>;

    // ---- housekeeping ---------------------------------------------------------------------

    /// Deletes the rows `rules` name, table by table (each delete is one atomic statement, so
    /// concurrent passes on several instances are harmless), and counts them. Deleting never
    /// changes an answer: a purged token was already unknown, spent, superseded or expired.
    /// Provisioning tokens go in a way that keeps each account's newest remaining token its
    /// newest (a token is deleted only with every older token of its account), so no
    /// superseded token can ever become current again.
    async fn purge(&self, rules: &PurgeRules) -> StoreResult<PurgeCounts>;

    /// Deletes expired auth tokens and Digest challenges only; returns how many rows went.
    async fn purge_expired(&self, auth_tokens_before: i64, nonces_before: i64) -> StoreResult<u64> {
        let counts = self
            .purge(&PurgeRules {
                auth_tokens_before,
                nonces_before,
                answered_nonces: false,
                user_keys_idle_before: None,
                tokens_retired_before: None,
                audit_events_before: None,
            })
            .await?;
        Ok(counts.total())
    }

    // ---- hook scripts (src/hooks/db.rs, migration V6) ---------------------------------------

    /// The live version of every script: each name's newest version, unless it is a deletion;
    /// by name.
    async fn live_hook_scripts(&self) -> StoreResult<Vec<HookScriptRecord>>;
    /// Every version of one script, newest first (empty when it never existed).
    async fn hook_script_versions(&self, name: &str) -> StoreResult<Vec<HookScriptRecord>>;
    /// One version of one script.
    async fn hook_script_version(
        &self,
        name: &str,
        version: i64,
    ) -> StoreResult<Option<HookScriptRecord>>;
    /// Stores each script as the next version of its name, all in one transaction (a push of
    /// several scripts goes live together or not at all); returns them as stored, numbered.
    async fn save_hook_scripts(
        &self,
        scripts: &[NewHookScript],
        now: i64,
    ) -> StoreResult<Vec<HookScriptRecord>>;
    /// Writes an instance's report (replacing its previous one) and deletes the reports of
    /// instances silent since `forget_before` (unix ms).
    async fn report_hook_instance(
        &self,
        report: &HookInstanceReport,
        forget_before: i64,
    ) -> StoreResult<()>;
    /// Deletes an instance's report (it stops).
    async fn forget_hook_instance(&self, instance: &str) -> StoreResult<()>;
    /// Every instance's latest report, by instance id.
    async fn hook_instances(&self) -> StoreResult<Vec<HookInstanceReport>>;
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

//! PostgreSQL backend, for production and for several stateless provisio instances sharing one
//! database: deadpool-postgres pool, plain SQL, every statement through `prepare_cached`.
//!
//! Atomic operations are one statement (`UPDATE … WHERE used_at IS NULL … RETURNING`) or one
//! transaction that locks the rows it decides on (`SELECT … FOR UPDATE`). Under READ COMMITTED,
//! a concurrent writer blocked on the same row re-checks the `WHERE` clause against the
//! committed row, so of several concurrent consumers exactly one wins.
//!
//! The code is kept statement for statement parallel to [`super::sqlite`].

use super::changes::Listener;
use super::migrations;
use super::pg_consume::ConsumeBatcher;
use super::pg_tls::{self, MakeRustlsConnect, TlsOptions};
use super::sqlite::apply_account_update;
use super::{
    AccountBundle, AccountUpdate, ApiKeyRecord, ApiKeyUse, AuditEvent, AuditQuery, AuthTokenState,
    Change, ConsumeId, HookInstanceReport, HookScriptRecord, LastProvisioned, NewAccount,
    NewApiKey, NewHookScript, NewWizard, NonceCheck, PurgeCounts, PurgeRules, Store, StoreError,
    StoreResult, TokenState, Wizard, WizardToken,
};
use crate::model::{
    Account, DEFAULT_SIP_IDENTIFIER_CLAIM, NewPassword, OidcSettings, Password, Space, UiFlags,
};
use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use deadpool_postgres::{
    Client, GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
    Transaction,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

/// How long a caller waits for a pooled connection, and a new connection may take to open.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle seconds before TCP keepalive probes start on a pooled connection, so a connection
/// whose server vanished without closing it (host down, network cut) is found dead and
/// dropped instead of being handed out again.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);

/// How long sent data may stay unacknowledged before the kernel closes the connection
/// (`TCP_USER_TIMEOUT`): a query to an unreachable server fails instead of hanging.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);

/// The PostgreSQL store: a pool of connections to one database (and schema, via the URL's
/// `options=-csearch_path=…`).
pub struct PostgresStore {
    /// Connections; statements are cached per connection.
    pool: Pool,
    /// The pool's connection settings, for the change feed's own connection.
    config: tokio_postgres::Config,
    /// The pool's TLS connector (`sslmode`, `sslrootcert`), shared with the change feed.
    tls: MakeRustlsConnect,
    /// The change feed's listener, started by the first [`Store::change_feed`] call.
    listener: std::sync::OnceLock<Listener>,
    /// Token consumes grouped into shared statements, started by the first consume.
    consumes: std::sync::OnceLock<ConsumeBatcher>,
}

impl PostgresStore {
    /// Parses a `postgres://` URL, builds the pool and opens one connection, so a bad URL or an
    /// unreachable server fails at start-up with a clear message (the password is never shown).
    pub async fn connect(url: &str, pool_size: usize) -> anyhow::Result<PostgresStore> {
        let (mut config, tls_options) = pg_tls::parse_url(url)?;
        let target = describe(&config);
        let tls = tls_options
            .connector()
            .with_context(|| format!("PostgreSQL at {target}: TLS set-up"))?;
        // Every wait on the server is bounded: opening (connect_timeout), an idle connection
        // whose peer vanished (keepalives) and unacknowledged writes (TCP_USER_TIMEOUT). A URL
        // that sets one of these keeps its own value.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        // Keepalives are on by default (a URL may turn them off); only the idle time, by
        // default two hours, is shortened.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .context("cannot build the PostgreSQL connection pool")?;
        let store = PostgresStore {
            pool,
            config,
            tls,
            listener: std::sync::OnceLock::new(),
            consumes: std::sync::OnceLock::new(),
        };
        store
            .first_connection(&tls_options)
            .await
            .map_err(|why| anyhow!("cannot connect to PostgreSQL at {target}: {why}"))?;
        Ok(store)
    }

    /// Opens the first pooled connection and runs a query, explaining a TLS failure (wrong CA,
    /// wrong host name, server without TLS or refusing plain connections) in words.
    async fn first_connection(&self, tls: &TlsOptions) -> Result<(), String> {
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(PoolError::Backend(e)) => {
                return Err(tls
                    .explain(&host_name(&self.config), &e)
                    .unwrap_or_else(|| pool_error(PoolError::Backend(e)).to_string()));
            }
            Err(e) => return Err(pool_error(e).to_string()),
        };
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| StoreError::from(e).to_string())
    }

    /// A pooled connection. Recycling (`RecyclingMethod::Fast`) drops a connection whose
    /// driver task has ended, which it does as soon as the server closes the socket (restart,
    /// crash, `pg_terminate_backend`), so a dead connection is never handed out as healthy; one
    /// that dies while in use fails its statement with [`StoreError::Unavailable`] and is
    /// dropped at its next checkout. Waiting for a connection is bounded by [`POOL_TIMEOUT`].
    async fn client(&self) -> StoreResult<Client> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Backend process id of the change feed's listening connection, `None` before the first
    /// [`Store::change_feed`] call and while it reconnects: for diagnostics and fault tests.
    pub fn change_feed_backend_pid(&self) -> Option<i32> {
        self.listener.get().and_then(Listener::backend_pid)
    }
}

/// Maps a pool failure: no connection free in time, or the server unreachable or not accepting
/// connections yet, is [`StoreError::Unavailable`]; anything else (bad credentials, a closed
/// pool) is a `Backend` error.
pub(super) fn pool_error(e: PoolError) -> StoreError {
    let message = format!("postgres pool: {}", error_chain(&e));
    match &e {
        PoolError::Timeout(_) => StoreError::Unavailable(message),
        PoolError::Backend(pg) if is_transient(pg) => StoreError::Unavailable(message),
        _ => StoreError::Backend(message),
    }
}

/// Whether a driver error leaves the outcome of the statement unknown and a retry may work:
/// the connection broke or could not be made (I/O error, closed, timeout), or the server says
/// it is shutting down, starting up, out of connections or lost the connection (SQLSTATE
/// class 08, 57P01–57P03, 53300). A serialization failure or deadlock (40001, 40P01) rolled
/// back for sure and may be retried too.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08")
            || matches!(
                code,
                "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
            );
    }
    if e.is_closed() || e.to_string() == "timeout waiting for server" {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error and its sources joined with ": " (tokio-postgres keeps the cause, such as
/// "Connection refused", out of its own message), skipping text a parent already quotes.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The first host of a configuration (the name TLS verifies), `localhost` when none is given.
fn host_name(config: &tokio_postgres::Config) -> String {
    match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    }
}

/// `user@host:port/dbname` of a configuration, for error messages without the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = host_name(config);
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// Maps PostgreSQL errors: unique violations become a client-safe `Conflict`, foreign-key
/// violations `NotFound` (the referenced row is missing), anything else `Backend`. The server's
/// DETAIL (which quotes the offending values, possibly a token hash) is never included.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) if *db.code() == SqlState::UNIQUE_VIOLATION => {
                StoreError::Conflict(conflict_message(db.constraint().unwrap_or("")))
            }
            Some(db) if *db.code() == SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound,
            Some(db) => {
                let message = format!(
                    "postgres: {}: {} [{}]",
                    db.severity(),
                    db.message(),
                    db.code().code()
                );
                if is_transient(&e) {
                    StoreError::Unavailable(message)
                } else {
                    StoreError::Backend(message)
                }
            }
            None if is_transient(&e) => {
                StoreError::Unavailable(format!("postgres: {}", error_chain(&e)))
            }
            None => StoreError::Backend(format!("postgres: {}", error_chain(&e))),
        }
    }
}

/// Names what clashed, from the constraint names of `schema/postgres`.
fn conflict_message(constraint: &str) -> String {
    let what = match constraint {
        "spaces_domain_key" => "space domain",
        "spaces_host_key" => "space host",
        "spaces_name_key" => "space name",
        "accounts_username_domain_key" => "account",
        "passwords_account_id_algorithm_key" => "password for this algorithm",
        "account_dictionary_pkey" => "dictionary key",
        "provisioning_tokens_token_hash_key" => "provisioning token",
        "auth_tokens_token_hash_key" => "auth token",
        "wizards_token_hash_key" => "wizard",
        "api_keys_key_hash_key" => "api key",
        "api_keys_one_user_key_idx" => "user api key",
        "digest_nonces_opaque_key" => "digest challenge",
        _ => "record",
    };
    format!("{what} already exists")
}

/// Columns of `wizards` as [`wizard_from_row`] reads them.
macro_rules! wizard_columns {
    () => {
        "id, space, created_by, provisioning_account_id, sip, linphone_action, \
         linphone_use_sips, created_at, used_at"
    };
}

/// A [`Wizard`] from a row of [`wizard_columns!`].
fn wizard_from_row(row: &Row) -> StoreResult<Wizard> {
    Ok(Wizard {
        id: row.try_get("id")?,
        space: row.try_get("space")?,
        created_by: row.try_get("created_by")?,
        provisioning_account_id: row.try_get("provisioning_account_id")?,
        sip: row.try_get("sip")?,
        linphone_action: row.try_get("linphone_action")?,
        linphone_use_sips: row.try_get("linphone_use_sips")?,
        created_at: row.try_get("created_at")?,
        used_at: row.try_get("used_at")?,
    })
}

/// Marks a wizard used and, in the same statement, stores the provisioning token its visit
/// mints (`$3` NULL: none) for its account.
const USE_WIZARD: &str = concat!(
    "WITH used AS (UPDATE wizards SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL ",
    "RETURNING ",
    wizard_columns!(),
    "), minted AS (INSERT INTO provisioning_tokens (account_id, token_hash, created_at, expires_at) ",
    "SELECT provisioning_account_id, $3::BYTEA, $2, $4::BIGINT FROM used ",
    "WHERE provisioning_account_id IS NOT NULL AND $3::BYTEA IS NOT NULL) ",
    "SELECT ",
    wizard_columns!(),
    " FROM used"
);

/// Starts a read-only snapshot, so multi-statement reads see one consistent state.
async fn snapshot(client: &mut Client) -> StoreResult<Transaction<'_>> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// Parses a text column holding one of the model's enums.
fn parse_column<T: std::str::FromStr<Err = String>>(row: &Row, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|e: String| StoreError::Backend(format!("column {column}: {e}")))
}

/// Builds a space from a row of [`space_columns!`].
fn space_from_row(row: &Row) -> StoreResult<Space> {
    Ok(Space {
        id: row.try_get("id")?,
        domain: row.try_get("domain")?,
        host: row.try_get("host")?,
        name: row.try_get("name")?,
        super_space: row.try_get("super_space")?,
        realm: row.try_get("realm")?,
        password_algorithm: parse_column(row, "password_algorithm")?,
        base_rc: row.try_get("base_rc")?,
        custom_entries: row.try_get("custom_entries")?,
        overwrite_all: row.try_get("overwrite_all")?,
        ui: UiFlags {
            super_space: row.try_get("ui_super")?,
            disable_chat_feature: row.try_get("ui_disable_chat_feature")?,
            disable_meetings_feature: row.try_get("ui_disable_meetings_feature")?,
            disable_broadcast_feature: row.try_get("ui_disable_broadcast_feature")?,
            hide_settings: row.try_get("ui_hide_settings")?,
            hide_account_settings: row.try_get("ui_hide_account_settings")?,
            disable_call_recordings_feature: row.try_get("ui_disable_call_recordings_feature")?,
            only_display_sip_uri_username: row.try_get("ui_only_display_sip_uri_username")?,
            assistant_hide_create_account: row.try_get("ui_assistant_hide_create_account")?,
            assistant_disable_qr_code: row.try_get("ui_assistant_disable_qr_code")?,
            assistant_hide_third_party_account: row
                .try_get("ui_assistant_hide_third_party_account")?,
            max_account: row.try_get("ui_max_account")?,
        },
        vcard_list_url: row.try_get("vcard_list_url")?,
        public_url: row.try_get("public_url")?,
        token_lifetime_minutes: row.try_get("token_lifetime_minutes")?,
        header_mode: parse_column(row, "header_mode")?,
        hook_failure: parse_column(row, "hook_failure")?,
        max_accounts: row.try_get("max_accounts")?,
        oidc: oidc_from_row(row)?,
        client_certificate_authentication: row.try_get("client_certificate_authentication")?,
    })
}

/// A space's OIDC settings from a row of [`space_columns!`]: set when `oidc_server_url` is.
fn oidc_from_row(row: &Row) -> StoreResult<Option<OidcSettings>> {
    let Some(server_url) = row.try_get::<_, Option<String>>("oidc_server_url")? else {
        return Ok(None);
    };
    Ok(Some(OidcSettings {
        server_url,
        realm: row
            .try_get::<_, Option<String>>("oidc_realm")?
            .unwrap_or_default(),
        public_key: row.try_get("oidc_public_key")?,
        jwks_url: row.try_get("oidc_jwks_url")?,
        sip_identifier_claim: row.try_get("oidc_sip_identifier_claim")?,
        audience: row.try_get("oidc_audience")?,
        issuer: row.try_get("oidc_issuer")?,
        required: row.try_get("oidc_required")?,
    }))
}

/// A boxed statement parameter, so a row's values can be built once and bound anywhere.
type Param = Box<dyn ToSql + Sync + Send>;

/// The 36 settings of a space as `$1..$36`, in [`space_columns!`] order without `id`
/// (`$1` is the domain, the key of an update).
fn space_values(s: &Space) -> Vec<Param> {
    let oidc = s.oidc.as_ref();
    vec![
        Box::new(s.domain.clone()),
        Box::new(s.host.clone()),
        Box::new(s.name.clone()),
        Box::new(s.super_space),
        Box::new(s.realm.clone()),
        Box::new(s.password_algorithm.as_str()),
        Box::new(s.base_rc.clone()),
        Box::new(s.custom_entries.clone()),
        Box::new(s.overwrite_all),
        Box::new(s.ui.super_space),
        Box::new(s.ui.disable_chat_feature),
        Box::new(s.ui.disable_meetings_feature),
        Box::new(s.ui.disable_broadcast_feature),
        Box::new(s.ui.hide_settings),
        Box::new(s.ui.hide_account_settings),
        Box::new(s.ui.disable_call_recordings_feature),
        Box::new(s.ui.only_display_sip_uri_username),
        Box::new(s.ui.assistant_hide_create_account),
        Box::new(s.ui.assistant_disable_qr_code),
        Box::new(s.ui.assistant_hide_third_party_account),
        Box::new(s.ui.max_account),
        Box::new(s.vcard_list_url.clone()),
        Box::new(s.public_url.clone()),
        Box::new(s.token_lifetime_minutes),
        Box::new(s.header_mode.as_str()),
        Box::new(s.hook_failure.as_str()),
        Box::new(s.max_accounts),
        Box::new(oidc.map(|o| o.server_url.clone())),
        Box::new(oidc.map(|o| o.realm.clone())),
        Box::new(oidc.and_then(|o| o.public_key.clone())),
        Box::new(oidc.and_then(|o| o.jwks_url.clone())),
        Box::new(oidc.map_or_else(
            || DEFAULT_SIP_IDENTIFIER_CLAIM.to_string(),
            |o| o.sip_identifier_claim.clone(),
        )),
        Box::new(oidc.and_then(|o| o.audience.clone())),
        Box::new(oidc.and_then(|o| o.issuer.clone())),
        Box::new(oidc.is_some_and(|o| o.required)),
        Box::new(s.client_certificate_authentication),
    ]
}

/// Borrows boxed parameters in the shape `query` wants.
fn bind(values: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Builds an account (without its dictionary) from a row of [`account_columns!`].
fn account_from_row(row: &Row) -> StoreResult<Account> {
    Ok(Account {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        domain: row.try_get("domain")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        phone: row.try_get("phone")?,
        activated: row.try_get("activated")?,
        blocked: row.try_get("blocked")?,
        admin: row.try_get("admin")?,
        dtmf_protocol: row.try_get("dtmf_protocol")?,
        ip_address: row.try_get("ip_address")?,
        user_agent: row.try_get("user_agent")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        dictionary: BTreeMap::new(),
    })
}

/// Builds an account with its dictionary and passwords from a row of [`pg_bundle_columns!`].
fn bundle_from_row(row: &Row) -> StoreResult<AccountBundle> {
    let mut account = account_from_row(row)?;
    // `array_agg` over no row is NULL.
    let keys: Option<Vec<String>> = row.try_get("dictionary_keys")?;
    let values: Option<Vec<String>> = row.try_get("dictionary_values")?;
    account.dictionary = keys
        .unwrap_or_default()
        .into_iter()
        .zip(values.unwrap_or_default())
        .collect();
    let ids: Option<Vec<i64>> = row.try_get("password_ids")?;
    let algorithms: Option<Vec<String>> = row.try_get("password_algorithms")?;
    let ha1s: Option<Vec<String>> = row.try_get("password_ha1s")?;
    let (ids, algorithms, ha1s) = (
        ids.unwrap_or_default(),
        algorithms.unwrap_or_default(),
        ha1s.unwrap_or_default(),
    );
    let passwords = ids
        .into_iter()
        .zip(algorithms)
        .zip(ha1s)
        .map(|((id, algorithm), ha1)| {
            Ok(Password {
                id,
                account_id: account.id,
                algorithm: algorithm
                    .parse()
                    .map_err(|e: String| StoreError::Backend(format!("column algorithm: {e}")))?,
                ha1,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(AccountBundle { account, passwords })
}

/// Builds an API key record from a row with its columns prefixed `key_`.
fn api_key_from_row(row: &Row) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.try_get("key_id")?,
        account_id: row.try_get("key_account_id")?,
        name: row.try_get("key_name")?,
        ip: row.try_get("key_ip")?,
        expires_after_minutes: row.try_get("key_expires_after_minutes")?,
        last_used_at: row.try_get("key_last_used_at")?,
        requests: row.try_get("key_requests")?,
    })
}

/// Reads the dictionaries of several accounts in one round trip.
async fn load_dictionaries(
    c: &impl GenericClient,
    account_ids: &[i64],
) -> StoreResult<HashMap<i64, BTreeMap<String, String>>> {
    let stmt = c
        .prepare_cached(
            "SELECT account_id, key, value FROM account_dictionary WHERE account_id = ANY($1) ORDER BY key",
        )
        .await?;
    let mut out: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
    for row in c.query(&stmt, &[&account_ids]).await? {
        out.entry(row.try_get("account_id")?)
            .or_default()
            .insert(row.try_get("key")?, row.try_get("value")?);
    }
    Ok(out)
}

/// Reads one account's dictionary.
async fn load_dictionary(
    c: &impl GenericClient,
    account_id: i64,
) -> StoreResult<BTreeMap<String, String>> {
    Ok(load_dictionaries(c, &[account_id])
        .await?
        .remove(&account_id)
        .unwrap_or_default())
}

/// Replaces one account's dictionary (inside the caller's transaction).
async fn write_dictionary(
    tx: &Transaction<'_>,
    account_id: i64,
    dictionary: &BTreeMap<String, String>,
) -> StoreResult<()> {
    let delete = tx
        .prepare_cached("DELETE FROM account_dictionary WHERE account_id = $1")
        .await?;
    tx.execute(&delete, &[&account_id]).await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO account_dictionary (account_id, key, value) VALUES ($1, $2, $3)",
        )
        .await?;
    for (key, value) in dictionary {
        tx.execute(&insert, &[&account_id, key, value]).await?;
    }
    Ok(())
}

/// Replaces one account's passwords (inside the caller's transaction).
async fn write_passwords(
    tx: &Transaction<'_>,
    account_id: i64,
    passwords: &[NewPassword],
) -> StoreResult<()> {
    let delete = tx
        .prepare_cached("DELETE FROM passwords WHERE account_id = $1")
        .await?;
    tx.execute(&delete, &[&account_id]).await?;
    let insert = tx
        .prepare_cached("INSERT INTO passwords (account_id, algorithm, ha1) VALUES ($1, $2, $3)")
        .await?;
    for password in passwords {
        tx.execute(
            &insert,
            &[&account_id, &password.algorithm.as_str(), &password.ha1],
        )
        .await?;
    }
    Ok(())
}

/// Reads an account with its dictionary; `lock` takes its row lock (inside a transaction).
async fn load_account(c: &impl GenericClient, id: i64, lock: bool) -> StoreResult<Option<Account>> {
    let sql = if lock {
        concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE id = $1 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE id = $1"
        )
    };
    let stmt = c.prepare_cached(sql).await?;
    let Some(row) = c.query_opt(&stmt, &[&id]).await? else {
        return Ok(None);
    };
    let mut account = account_from_row(&row)?;
    account.dictionary = load_dictionary(c, account.id).await?;
    Ok(Some(account))
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_status(&self) -> super::PoolStatus {
        let s = self.pool.status();
        super::PoolStatus {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }

    async fn migrate(&self) -> StoreResult<Vec<String>> {
        let mut client = self.client().await?;
        Ok(migrations::apply_postgres(&mut client).await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT 1").await?;
        client.query_one(&stmt, &[]).await?;
        Ok(())
    }

    // ---- change feed ----------------------------------------------------------------------

    async fn change_version(&self, topic: &str) -> StoreResult<i64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT COALESCE((SELECT version FROM changes WHERE topic = $1), 0)")
            .await?;
        Ok(client.query_one(&stmt, &[&topic]).await?.try_get(0)?)
    }

    fn change_feed(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        if let Some(listener) = self.listener.get() {
            return Some(listener.subscribe());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut first = None;
        let listener = self.listener.get_or_init(|| {
            let (listener, receiver) =
                Listener::start(&runtime, self.config.clone(), self.tls.clone());
            first = Some(receiver);
            listener
        });
        Some(first.unwrap_or_else(|| listener.subscribe()))
    }

    // ---- spaces ---------------------------------------------------------------------------

    async fn create_space(&self, space: &Space) -> StoreResult<Space> {
        let values = space_values(space);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "INSERT INTO spaces (",
                "domain, host, name, super_space, realm, password_algorithm, base_rc, ",
                "custom_entries, overwrite_all, ui_super, ui_disable_chat_feature, ",
                "ui_disable_meetings_feature, ui_disable_broadcast_feature, ui_hide_settings, ",
                "ui_hide_account_settings, ui_disable_call_recordings_feature, ",
                "ui_only_display_sip_uri_username, ui_assistant_hide_create_account, ",
                "ui_assistant_disable_qr_code, ui_assistant_hide_third_party_account, ",
                "ui_max_account, vcard_list_url, public_url, token_lifetime_minutes, ",
                "header_mode, hook_failure, max_accounts, oidc_server_url, oidc_realm, ",
                "oidc_public_key, oidc_jwks_url, oidc_sip_identifier_claim, oidc_audience, ",
                "oidc_issuer, oidc_required, client_certificate_authentication) VALUES (",
                "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, ",
                "$18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, ",
                "$31, $32, $33, $34, $35, $36) RETURNING ",
                space_columns!()
            ))
            .await?;
        let row = client.query_one(&stmt, &bind(&values)).await?;
        space_from_row(&row)
    }

    async fn update_space(&self, space: &Space) -> StoreResult<Space> {
        let values = space_values(space);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "UPDATE spaces SET host = $2, name = $3, super_space = $4, realm = $5, ",
                "password_algorithm = $6, base_rc = $7, custom_entries = $8, overwrite_all = $9, ",
                "ui_super = $10, ui_disable_chat_feature = $11, ui_disable_meetings_feature = $12, ",
                "ui_disable_broadcast_feature = $13, ui_hide_settings = $14, ",
                "ui_hide_account_settings = $15, ui_disable_call_recordings_feature = $16, ",
                "ui_only_display_sip_uri_username = $17, ui_assistant_hide_create_account = $18, ",
                "ui_assistant_disable_qr_code = $19, ui_assistant_hide_third_party_account = $20, ",
                "ui_max_account = $21, vcard_list_url = $22, public_url = $23, ",
                "token_lifetime_minutes = $24, header_mode = $25, hook_failure = $26, ",
                "max_accounts = $27, oidc_server_url = $28, oidc_realm = $29, ",
                "oidc_public_key = $30, oidc_jwks_url = $31, oidc_sip_identifier_claim = $32, ",
                "oidc_audience = $33, oidc_issuer = $34, oidc_required = $35, ",
                "client_certificate_authentication = $36 WHERE domain = $1 RETURNING ",
                space_columns!()
            ))
            .await?;
        match client.query_opt(&stmt, &bind(&values)).await? {
            Some(row) => space_from_row(&row),
            None => Err(StoreError::NotFound),
        }
    }

    async fn delete_space(&self, domain: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM spaces WHERE domain = $1")
            .await?;
        Ok(client.execute(&stmt, &[&domain]).await? > 0)
    }

    async fn space_by_domain(&self, domain: &str) -> StoreResult<Option<Space>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                space_columns!(),
                " FROM spaces WHERE domain = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&domain])
            .await?
            .map(|row| space_from_row(&row))
            .transpose()
    }

    async fn space_by_host(&self, host: &str) -> StoreResult<Option<Space>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                space_columns!(),
                " FROM spaces WHERE host = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&host])
            .await?
            .map(|row| space_from_row(&row))
            .transpose()
    }

    async fn list_spaces(&self) -> StoreResult<Vec<Space>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                space_columns!(),
                " FROM spaces ORDER BY domain"
            ))
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(space_from_row)
            .collect()
    }

    // ---- accounts -------------------------------------------------------------------------

    async fn create_account(&self, new: &NewAccount, now: i64) -> StoreResult<Account> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let space = tx
            .prepare_cached("SELECT 1 FROM spaces WHERE domain = $1")
            .await?;
        if tx.query_opt(&space, &[&new.domain]).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        let insert = tx
            .prepare_cached(concat!(
                "INSERT INTO accounts (username, domain, email, display_name, phone, activated, ",
                "blocked, admin, dtmf_protocol, ip_address, user_agent, created_at, updated_at) ",
                "VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $8, $9, $10, $11, $11) RETURNING ",
                account_columns!()
            ))
            .await?;
        let row = tx
            .query_one(
                &insert,
                &[
                    &new.username,
                    &new.domain,
                    &new.email,
                    &new.display_name,
                    &new.phone,
                    &new.activated,
                    &new.admin,
                    &new.dtmf_protocol,
                    &new.ip_address,
                    &new.user_agent,
                    &now,
                ],
            )
            .await?;
        let mut account = account_from_row(&row)?;
        // Checked after the insert: if a delete of the same identity was in flight, the insert
        // waited for it on the unique index, and this statement's fresh snapshot (READ
        // COMMITTED) now sees the tombstone it wrote.
        let tombstone = tx
            .prepare_cached("SELECT 1 FROM accounts_tombstones WHERE username = $1 AND domain = $2")
            .await?;
        if tx
            .query_opt(&tombstone, &[&new.username, &new.domain])
            .await?
            .is_some()
        {
            return Err(StoreError::Conflict("account already exists".into()));
        }
        write_dictionary(&tx, account.id, &new.dictionary).await?;
        write_passwords(&tx, account.id, &new.passwords).await?;
        tx.commit().await?;
        account.dictionary = new.dictionary.clone();
        Ok(account)
    }

    async fn account(&self, id: i64) -> StoreResult<Option<Account>> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let account = load_account(&tx, id, false).await?;
        tx.commit().await?;
        Ok(account)
    }

    async fn account_by_identity(
        &self,
        username: &str,
        domain: &str,
    ) -> StoreResult<Option<Account>> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let stmt = tx
            .prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE username = $1 AND domain = $2"
            ))
            .await?;
        let account = match tx.query_opt(&stmt, &[&username, &domain]).await? {
            Some(row) => {
                let mut account = account_from_row(&row)?;
                account.dictionary = load_dictionary(&tx, account.id).await?;
                Some(account)
            }
            None => None,
        };
        tx.commit().await?;
        Ok(account)
    }

    async fn account_bundle_by_identity(
        &self,
        username: &str,
        domain: &str,
    ) -> StoreResult<Option<AccountBundle>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                pg_bundle_columns!(),
                " FROM accounts a",
                pg_bundle_joins!(),
                "WHERE a.username = $1 AND a.domain = $2"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&username, &domain])
            .await?
            .map(|row| bundle_from_row(&row))
            .transpose()
    }

    async fn account_bundle_by_email(
        &self,
        domain: &str,
        email: &str,
    ) -> StoreResult<Option<AccountBundle>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                pg_bundle_columns!(),
                " FROM accounts a",
                pg_bundle_joins!(),
                "WHERE a.domain = $1 AND lower(a.email) = lower($2) ",
                "ORDER BY a.id LIMIT 2"
            ))
            .await?;
        let rows = client.query(&stmt, &[&domain, &email]).await?;
        match rows.as_slice() {
            [only] => bundle_from_row(only).map(Some),
            _ => Ok(None),
        }
    }

    async fn list_accounts(
        &self,
        domain: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Account>, i64)> {
        let (offset, limit) = (offset.max(0), limit.max(0));
        let mut client = self.client().await?;
        // One snapshot, so the page and the total agree.
        let tx = snapshot(&mut client).await?;
        let page = tx
            .prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE ($1::TEXT IS NULL OR domain = $1) ORDER BY id LIMIT $2 OFFSET $3"
            ))
            .await?;
        let mut accounts = tx
            .query(&page, &[&domain, &limit, &offset])
            .await?
            .iter()
            .map(account_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let count = tx
            .prepare_cached("SELECT COUNT(*) FROM accounts WHERE ($1::TEXT IS NULL OR domain = $1)")
            .await?;
        let total: i64 = tx.query_one(&count, &[&domain]).await?.try_get(0)?;
        let ids: Vec<i64> = accounts.iter().map(|a| a.id).collect();
        let mut dictionaries = load_dictionaries(&tx, &ids).await?;
        for account in &mut accounts {
            account.dictionary = dictionaries.remove(&account.id).unwrap_or_default();
        }
        tx.commit().await?;
        Ok((accounts, total))
    }

    async fn update_account(
        &self,
        id: i64,
        update: &AccountUpdate,
        now: i64,
    ) -> StoreResult<Option<Account>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(mut account) = load_account(&tx, id, true).await? else {
            return Ok(None);
        };
        let before = (account.username.clone(), account.domain.clone());
        let mut update = update.clone();
        let passwords = update.passwords.take();
        apply_account_update(&mut account, update, now);
        let stmt = tx
            .prepare_cached(concat!(
                "UPDATE accounts SET email = $2, display_name = $3, phone = $4, ",
                "dtmf_protocol = $5, activated = $6, blocked = $7, admin = $8, updated_at = $9, ",
                "username = $10, domain = $11 WHERE id = $1"
            ))
            .await?;
        tx.execute(
            &stmt,
            &[
                &id,
                &account.email,
                &account.display_name,
                &account.phone,
                &account.dtmf_protocol,
                &account.activated,
                &account.blocked,
                &account.admin,
                &account.updated_at,
                &account.username,
                &account.domain,
            ],
        )
        .await?;
        // A new identity must never have been deleted (as on create: the update waited for a
        // concurrent delete of that identity on the unique index, so its tombstone is visible).
        if (account.username.clone(), account.domain.clone()) != before {
            let tombstone = tx
                .prepare_cached(
                    "SELECT 1 FROM accounts_tombstones WHERE username = $1 AND domain = $2",
                )
                .await?;
            if tx
                .query_opt(&tombstone, &[&account.username, &account.domain])
                .await?
                .is_some()
            {
                return Err(StoreError::Conflict("account already exists".into()));
            }
        }
        write_dictionary(&tx, id, &account.dictionary).await?;
        if let Some(passwords) = passwords {
            write_passwords(&tx, id, &passwords).await?;
        }
        tx.commit().await?;
        Ok(Some(account))
    }

    async fn delete_account(&self, id: i64, now: i64) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let delete = tx
            .prepare_cached("DELETE FROM accounts WHERE id = $1 RETURNING username, domain")
            .await?;
        let Some(row) = tx.query_opt(&delete, &[&id]).await? else {
            return Ok(false);
        };
        let (username, domain): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let tombstone = tx
            .prepare_cached(concat!(
                "INSERT INTO accounts_tombstones (username, domain, created_at) ",
                "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            ))
            .await?;
        tx.execute(&tombstone, &[&username, &domain, &now]).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn passwords(&self, account_id: i64) -> StoreResult<Vec<Password>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, account_id, algorithm, ha1 FROM passwords WHERE account_id = $1 ORDER BY id",
            )
            .await?;
        client
            .query(&stmt, &[&account_id])
            .await?
            .iter()
            .map(|row| {
                Ok(Password {
                    id: row.try_get("id")?,
                    account_id: row.try_get("account_id")?,
                    algorithm: parse_column(row, "algorithm")?,
                    ha1: row.try_get("ha1")?,
                })
            })
            .collect()
    }

    async fn replace_passwords(
        &self,
        account_id: i64,
        passwords: &[NewPassword],
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let exists = tx
            .prepare_cached("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
            .await?;
        if tx.query_opt(&exists, &[&account_id]).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        write_passwords(&tx, account_id, passwords).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- provisioning tokens ----------------------------------------------------------------

    async fn create_provisioning_token(
        &self,
        account_id: i64,
        token_hash: &[u8],
        now: i64,
        expires_at: Option<i64>,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "INSERT INTO provisioning_tokens (account_id, token_hash, created_at, expires_at) ",
                "VALUES ($1, $2, $3, $4)"
            ))
            .await?;
        client
            .execute(&stmt, &[&account_id, &token_hash, &now, &expires_at])
            .await?;
        Ok(())
    }

    async fn provisioning_token(&self, token_hash: &[u8]) -> StoreResult<Option<TokenState>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT t.account_id, t.created_at, t.expires_at, t.used_at IS NOT NULL AS used, ",
                "COALESCE(t.used_at IS NULL AND t.id = (SELECT MAX(o.id) FROM provisioning_tokens o ",
                "WHERE o.account_id = t.account_id), FALSE) AS current ",
                "FROM provisioning_tokens t WHERE t.token_hash = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&token_hash])
            .await?
            .map(|row| {
                Ok(TokenState {
                    account_id: row.try_get("account_id")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    used: row.try_get("used")?,
                    current: row.try_get("current")?,
                })
            })
            .transpose()
    }

    async fn token_identity(
        &self,
        token_hash: &[u8],
    ) -> StoreResult<Option<(TokenState, AccountBundle)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT t.account_id AS token_account_id, t.created_at AS token_created_at, ",
                "t.expires_at AS token_expires_at, t.used_at IS NOT NULL AS token_used, ",
                "COALESCE(t.used_at IS NULL AND t.id = (SELECT MAX(o.id) FROM provisioning_tokens o ",
                "WHERE o.account_id = t.account_id), FALSE) AS token_current, ",
                pg_bundle_columns!(),
                " FROM provisioning_tokens t JOIN accounts a ON a.id = t.account_id",
                pg_bundle_joins!(),
                "WHERE t.token_hash = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&token_hash])
            .await?
            .map(|row| {
                let state = TokenState {
                    account_id: row.try_get("token_account_id")?,
                    created_at: row.try_get("token_created_at")?,
                    expires_at: row.try_get("token_expires_at")?,
                    used: row.try_get("token_used")?,
                    current: row.try_get("token_current")?,
                };
                Ok((state, bundle_from_row(&row)?))
            })
            .transpose()
    }

    async fn consume_provisioning_token(
        &self,
        token_hash: &[u8],
        now: i64,
        reset: Option<&NewPassword>,
        by: &ConsumeId,
    ) -> StoreResult<Option<i64>> {
        if reset.is_none() {
            return self
                .consumes
                .get_or_init(|| ConsumeBatcher::start(self.pool.clone()))
                .consume(token_hash, now, by)
                .await;
        }
        let client = self.client().await?;
        let stmt = client.prepare_cached(CONSUME_PROVISIONING_TOKEN).await?;
        let (algorithm, ha1) = reset_params(reset);
        let by = by.0.as_slice();
        client
            .query_opt(&stmt, &[&token_hash, &now, &by, &algorithm, &ha1])
            .await?
            .map(|row| Ok(row.try_get(0)?))
            .transpose()
    }

    // ---- auth tokens (QR login) -----------------------------------------------------------

    async fn create_auth_token(
        &self,
        token_hash: &[u8],
        ip: Option<&str>,
        user_agent: Option<&str>,
        now: i64,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO auth_tokens (token_hash, ip, user_agent, created_at) VALUES ($1, $2, $3, $4)",
            )
            .await?;
        client
            .execute(&stmt, &[&token_hash, &ip, &user_agent, &now])
            .await?;
        Ok(())
    }

    async fn auth_token(
        &self,
        token_hash: &[u8],
        not_before: i64,
    ) -> StoreResult<Option<AuthTokenState>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT account_id, created_at FROM auth_tokens WHERE token_hash = $1 AND created_at > $2 AND used_at IS NULL",
            )
            .await?;
        client
            .query_opt(&stmt, &[&token_hash, &not_before])
            .await?
            .map(|row| {
                Ok(AuthTokenState {
                    account_id: row.try_get("account_id")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .transpose()
    }

    async fn auth_token_identity(
        &self,
        token_hash: &[u8],
        not_before: i64,
    ) -> StoreResult<Option<(AuthTokenState, AccountBundle)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT t.created_at AS token_created_at, ",
                pg_bundle_columns!(),
                " FROM auth_tokens t JOIN accounts a ON a.id = t.account_id",
                pg_bundle_joins!(),
                "WHERE t.token_hash = $1 AND t.created_at > $2 AND t.used_at IS NULL"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&token_hash, &not_before])
            .await?
            .map(|row| {
                let bundle = bundle_from_row(&row)?;
                let state = AuthTokenState {
                    account_id: Some(bundle.account.id),
                    created_at: row.try_get("token_created_at")?,
                };
                Ok((state, bundle))
            })
            .transpose()
    }

    async fn attach_auth_token(
        &self,
        token_hash: &[u8],
        account_id: i64,
        not_before: i64,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "UPDATE auth_tokens SET account_id = $2 ",
                "WHERE token_hash = $1 AND account_id IS NULL AND created_at > $3 AND used_at IS NULL"
            ))
            .await?;
        let n = client
            .execute(&stmt, &[&token_hash, &account_id, &not_before])
            .await?;
        Ok(n == 1)
    }

    async fn consume_auth_token_as(
        &self,
        token_hash: &[u8],
        now: i64,
        not_before: i64,
        reset: Option<&NewPassword>,
        by: &ConsumeId,
    ) -> StoreResult<Option<i64>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(CONSUME_AUTH_TOKEN).await?;
        let (algorithm, ha1) = reset_params(reset);
        let by = by.0.as_slice();
        client
            .query_opt(
                &stmt,
                &[&token_hash, &not_before, &now, &by, &algorithm, &ha1],
            )
            .await?
            .map(|row| Ok(row.try_get(0)?))
            .transpose()
    }

    // ---- API keys -------------------------------------------------------------------------

    async fn create_api_key(&self, key: &NewApiKey, now: i64) -> StoreResult<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Locking the owner serialises concurrent user-key rotations of one account.
        let owner = tx
            .prepare_cached("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
            .await?;
        if tx.query_opt(&owner, &[&key.account_id]).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        if key.expires_after_minutes.is_none() {
            let delete = tx
                .prepare_cached(
                    "DELETE FROM api_keys WHERE account_id = $1 AND expires_after_minutes IS NULL",
                )
                .await?;
            tx.execute(&delete, &[&key.account_id]).await?;
        }
        let insert = tx
            .prepare_cached(concat!(
                "INSERT INTO api_keys (account_id, key_hash, name, ip, expires_after_minutes, ",
                "created_at, last_used_at, requests) VALUES ($1, $2, $3, $4, $5, $6, $6, 0) ",
                "RETURNING id"
            ))
            .await?;
        let id: i64 = tx
            .query_one(
                &insert,
                &[
                    &key.account_id,
                    &key.key_hash,
                    &key.name,
                    &key.ip,
                    &key.expires_after_minutes,
                    &now,
                ],
            )
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok(id)
    }

    async fn api_key_identity(
        &self,
        key_hash: &[u8],
    ) -> StoreResult<Option<(ApiKeyRecord, AccountBundle)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT k.id AS key_id, k.account_id AS key_account_id, k.name AS key_name, ",
                "k.ip AS key_ip, k.expires_after_minutes AS key_expires_after_minutes, ",
                "k.last_used_at AS key_last_used_at, k.requests AS key_requests, ",
                pg_bundle_columns!(),
                " FROM api_keys k JOIN accounts a ON a.id = k.account_id",
                pg_bundle_joins!(),
                "WHERE k.key_hash = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&key_hash])
            .await?
            .map(|row| Ok((api_key_from_row(&row)?, bundle_from_row(&row)?)))
            .transpose()
    }

    async fn record_api_key_uses(&self, uses: &[ApiKeyUse]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = uses.iter().map(|u| u.id).collect();
        let last: Vec<i64> = uses.iter().map(|u| u.last_used_at).collect();
        let requests: Vec<i64> = uses.iter().map(|u| u.requests).collect();
        let client = self.client().await?;
        // One statement for the whole batch; rows are locked in id order, so two instances
        // flushing overlapping batches cannot deadlock.
        let stmt = client
            .prepare_cached(concat!(
                "UPDATE api_keys k SET last_used_at = GREATEST(k.last_used_at, u.last_used_at), ",
                "requests = k.requests + u.requests ",
                "FROM (SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[]) ",
                "AS u(id, last_used_at, requests) ORDER BY id) u WHERE k.id = u.id"
            ))
            .await?;
        client.execute(&stmt, &[&ids, &last, &requests]).await?;
        Ok(())
    }

    async fn api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT id, account_id, name, ip, expires_after_minutes, last_used_at, requests ",
                "FROM api_keys WHERE account_id = $1 ORDER BY id"
            ))
            .await?;
        client
            .query(&stmt, &[&account_id])
            .await?
            .iter()
            .map(|row| {
                Ok(ApiKeyRecord {
                    id: row.try_get("id")?,
                    account_id: row.try_get("account_id")?,
                    name: row.try_get("name")?,
                    ip: row.try_get("ip")?,
                    expires_after_minutes: row.try_get("expires_after_minutes")?,
                    last_used_at: row.try_get("last_used_at")?,
                    requests: row.try_get("requests")?,
                })
            })
            .collect()
    }

    async fn delete_api_key(&self, id: i64) -> StoreResult<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM api_keys WHERE id = $1")
            .await?;
        Ok(client.execute(&stmt, &[&id]).await? > 0)
    }

    // ---- Digest challenges ----------------------------------------------------------------

    async fn create_digest_nonce(
        &self,
        account_id: i64,
        nonce: &str,
        opaque: &str,
        ip: &str,
        now: i64,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "INSERT INTO digest_nonces (account_id, opaque, nonce, ip, nc, created_at) ",
                "VALUES ($1, $2, $3, $4, 0, $5)"
            ))
            .await?;
        client
            .execute(&stmt, &[&account_id, &opaque, &nonce, &ip, &now])
            .await?;
        Ok(())
    }

    async fn check_digest_nonce(
        &self,
        account_id: i64,
        opaque: &str,
        nonce: &str,
        ip: &str,
        nc: i64,
        not_before: i64,
    ) -> StoreResult<NonceCheck> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // FOR UPDATE: a concurrent check of the same challenge waits, then reads the nc this
        // one recorded (or finds the row deleted).
        let select = tx
            .prepare_cached(concat!(
                "SELECT id, nc FROM digest_nonces WHERE opaque = $1 AND account_id = $2 ",
                "AND nonce = $3 AND ip = $4 AND created_at > $5 FOR UPDATE"
            ))
            .await?;
        let Some(row) = tx
            .query_opt(&select, &[&opaque, &account_id, &nonce, &ip, &not_before])
            .await?
        else {
            return Ok(NonceCheck::Unknown);
        };
        let (id, last_nc): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let outcome = if nc <= last_nc {
            let delete = tx
                .prepare_cached("DELETE FROM digest_nonces WHERE id = $1")
                .await?;
            tx.execute(&delete, &[&id]).await?;
            NonceCheck::Replayed
        } else {
            let update = tx
                .prepare_cached("UPDATE digest_nonces SET nc = $2 WHERE id = $1")
                .await?;
            tx.execute(&update, &[&id, &nc]).await?;
            NonceCheck::Accepted
        };
        tx.commit().await?;
        Ok(outcome)
    }

    // ---- audit trail ------------------------------------------------------------------------

    async fn record_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let at: Vec<i64> = events.iter().map(|e| e.at).collect();
        let actor_kind: Vec<&str> = events.iter().map(|e| e.actor_kind.as_str()).collect();
        let actor_account_id: Vec<Option<i64>> =
            events.iter().map(|e| e.actor_account_id).collect();
        let actor_label: Vec<&str> = events.iter().map(|e| e.actor_label.as_str()).collect();
        let action: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        let target: Vec<Option<&str>> = events.iter().map(|e| e.target.as_deref()).collect();
        let account_id: Vec<Option<i64>> = events.iter().map(|e| e.account_id).collect();
        let space: Vec<Option<&str>> = events.iter().map(|e| e.space.as_deref()).collect();
        let client_ip: Vec<Option<&str>> = events.iter().map(|e| e.client_ip.as_deref()).collect();
        let user_agent: Vec<Option<&str>> =
            events.iter().map(|e| e.user_agent.as_deref()).collect();
        let outcome: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
        let detail: Vec<Option<&str>> = events.iter().map(|e| e.detail.as_deref()).collect();
        let client = self.client().await?;
        // One statement for the whole batch.
        let stmt = client
            .prepare_cached(concat!(
                "INSERT INTO audit_events (",
                audit_insert_columns!(),
                ") SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], ",
                "$5::TEXT[], $6::TEXT[], $7::BIGINT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], ",
                "$11::TEXT[], $12::TEXT[])"
            ))
            .await?;
        client
            .execute(
                &stmt,
                &[
                    &at,
                    &actor_kind,
                    &actor_account_id,
                    &actor_label,
                    &action,
                    &target,
                    &account_id,
                    &space,
                    &client_ip,
                    &user_agent,
                    &outcome,
                    &detail,
                ],
            )
            .await?;
        Ok(())
    }

    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let mut sql = String::from(concat!(
            "SELECT id, ",
            audit_insert_columns!(),
            " FROM audit_events WHERE TRUE"
        ));
        let mut values: Vec<Param> = Vec::new();
        if let Some(id) = query.account_id {
            values.push(Box::new(id));
            let n = values.len();
            sql.push_str(&format!(
                " AND (account_id = ${n} OR actor_account_id = ${n})"
            ));
        }
        if let Some(action) = &query.action {
            values.push(Box::new(action.clone()));
            sql.push_str(&format!(" AND action = ${}", values.len()));
        }
        if let Some(space) = &query.space {
            values.push(Box::new(space.clone()));
            sql.push_str(&format!(" AND space = ${}", values.len()));
        }
        if let Some(since) = query.since {
            values.push(Box::new(since));
            sql.push_str(&format!(" AND at >= ${}", values.len()));
        }
        values.push(Box::new(query.limit));
        sql.push_str(&format!(
            " ORDER BY at DESC, id DESC LIMIT ${}",
            values.len()
        ));
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        client
            .query(&stmt, &bind(&values))
            .await?
            .iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    actor_kind: row.try_get("actor_kind")?,
                    actor_account_id: row.try_get("actor_account_id")?,
                    actor_label: row.try_get("actor_label")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    account_id: row.try_get("account_id")?,
                    space: row.try_get("space")?,
                    client_ip: row.try_get("client_ip")?,
                    user_agent: row.try_get("user_agent")?,
                    outcome: row.try_get("outcome")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn last_provisioned(&self, account_id: i64) -> StoreResult<Option<LastProvisioned>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT at, client_ip, user_agent FROM audit_events ",
                "WHERE account_id = $1 AND action = $2 ORDER BY at DESC, id DESC LIMIT 1"
            ))
            .await?;
        let row = client
            .query_opt(
                &stmt,
                &[&account_id, &crate::audit::action::DOCUMENT_DELIVERED],
            )
            .await?;
        row.map(|row| {
            Ok(LastProvisioned {
                at: row.try_get("at")?,
                ip: row.try_get("client_ip")?,
                user_agent: row.try_get("user_agent")?,
            })
        })
        .transpose()
    }

    // ---- wizard links ---------------------------------------------------------------------

    async fn create_wizard(&self, wizard: &NewWizard, now: i64) -> StoreResult<Wizard> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "INSERT INTO wizards (token_hash, space, created_by, provisioning_account_id, sip, ",
                "linphone_action, linphone_use_sips, created_at) ",
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
                wizard_columns!()
            ))
            .await?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &wizard.token_hash,
                    &wizard.space,
                    &wizard.created_by,
                    &wizard.provisioning_account_id,
                    &wizard.sip,
                    &wizard.linphone_action,
                    &wizard.linphone_use_sips,
                    &now,
                ],
            )
            .await?;
        wizard_from_row(&row)
    }

    async fn wizard(&self, token_hash: &[u8]) -> StoreResult<Option<Wizard>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                wizard_columns!(),
                " FROM wizards WHERE token_hash = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&token_hash])
            .await?
            .map(|row| wizard_from_row(&row))
            .transpose()
    }

    async fn use_wizard(
        &self,
        token_hash: &[u8],
        now: i64,
        mint: Option<&WizardToken>,
    ) -> StoreResult<Option<Wizard>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(USE_WIZARD).await?;
        let minted_hash = mint.map(|m| m.token_hash.as_slice());
        let expires_at = mint.and_then(|m| m.expires_at);
        client
            .query_opt(&stmt, &[&token_hash, &now, &minted_hash, &expires_at])
            .await?
            .map(|row| wizard_from_row(&row))
            .transpose()
    }

    // ---- housekeeping ---------------------------------------------------------------------

    async fn purge(&self, rules: &PurgeRules) -> StoreResult<PurgeCounts> {
        let client = self.client().await?;
        // One autocommit statement per table: each is atomic on its own, holds its row locks
        // only for itself, and a pass cut short leaves nothing half-deleted that matters.
        let auth = client.prepare_cached(PURGE_AUTH_TOKENS).await?;
        let auth_tokens = client.execute(&auth, &[&rules.auth_tokens_before]).await?;
        let nonces = client.prepare_cached(PURGE_NONCES).await?;
        let digest_nonces = client
            .execute(
                &nonces,
                &[&rules.nonces_before, &rules.answered_nonces, &i64::MAX],
            )
            .await?;
        let api_keys = match rules.user_keys_idle_before {
            Some(before) => {
                let keys = client.prepare_cached(PURGE_USER_KEYS).await?;
                client.execute(&keys, &[&before]).await?
            }
            None => 0,
        };
        let provisioning_tokens = match rules.tokens_retired_before {
            Some(before) => {
                let tokens = client.prepare_cached(PURGE_PROVISIONING_TOKENS).await?;
                client.execute(&tokens, &[&before]).await?
            }
            None => 0,
        };
        let audit_events = match rules.audit_events_before {
            Some(before) => {
                let events = client
                    .prepare_cached("DELETE FROM audit_events WHERE at <= $1")
                    .await?;
                client.execute(&events, &[&before]).await?
            }
            None => 0,
        };
        Ok(PurgeCounts {
            auth_tokens,
            digest_nonces,
            api_keys,
            provisioning_tokens,
            audit_events,
        })
    }

    // ---- hook scripts ---------------------------------------------------------------------

    async fn live_hook_scripts(&self) -> StoreResult<Vec<HookScriptRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                hook_script_columns!(),
                " FROM hook_scripts h WHERE h.source IS NOT NULL AND h.version = ",
                "(SELECT MAX(version) FROM hook_scripts WHERE name = h.name) ORDER BY h.name"
            ))
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(hook_script_from_row)
            .collect()
    }

    async fn hook_script_versions(&self, name: &str) -> StoreResult<Vec<HookScriptRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                hook_script_columns!(),
                " FROM hook_scripts WHERE name = $1 ORDER BY version DESC"
            ))
            .await?;
        client
            .query(&stmt, &[&name])
            .await?
            .iter()
            .map(hook_script_from_row)
            .collect()
    }

    async fn hook_script_version(
        &self,
        name: &str,
        version: i64,
    ) -> StoreResult<Option<HookScriptRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                hook_script_columns!(),
                " FROM hook_scripts WHERE name = $1 AND version = $2"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&name, &version])
            .await?
            .as_ref()
            .map(hook_script_from_row)
            .transpose()
    }

    async fn save_hook_scripts(
        &self,
        scripts: &[NewHookScript],
        now: i64,
    ) -> StoreResult<Vec<HookScriptRecord>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Saves are serialised per schema (they are rare): two instances saving the same name
        // at once each get their own next version instead of a unique violation.
        let lock = tx
            .prepare_cached(
                "SELECT pg_advisory_xact_lock(hashtextextended('provisio.hooks:' || current_schema(), 0))",
            )
            .await?;
        tx.execute(&lock, &[]).await?;
        let insert = tx
            .prepare_cached(concat!(
                "INSERT INTO hook_scripts (name, version, source, fixtures, author, ",
                "author_account_id, comment, created_at) ",
                "SELECT $1::TEXT, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7 ",
                "FROM hook_scripts WHERE name = $1 RETURNING ",
                hook_script_columns!()
            ))
            .await?;
        let mut saved = Vec::with_capacity(scripts.len());
        for s in scripts {
            let row = tx
                .query_one(
                    &insert,
                    &[
                        &s.name,
                        &s.source,
                        &s.fixtures,
                        &s.author,
                        &s.author_account_id,
                        &s.comment,
                        &now,
                    ],
                )
                .await?;
            saved.push(hook_script_from_row(&row)?);
        }
        tx.commit().await?;
        Ok(saved)
    }

    async fn report_hook_instance(
        &self,
        report: &HookInstanceReport,
        forget_before: i64,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let upsert = client
            .prepare_cached(concat!(
                "INSERT INTO hook_instances (instance, host, started_at, seen_at, report) ",
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (instance) DO UPDATE SET ",
                "host = excluded.host, seen_at = excluded.seen_at, report = excluded.report"
            ))
            .await?;
        client
            .execute(
                &upsert,
                &[
                    &report.instance,
                    &report.host,
                    &report.started_at,
                    &report.seen_at,
                    &report.report,
                ],
            )
            .await?;
        let forget = client
            .prepare_cached("DELETE FROM hook_instances WHERE seen_at < $1")
            .await?;
        client.execute(&forget, &[&forget_before]).await?;
        Ok(())
    }

    async fn forget_hook_instance(&self, instance: &str) -> StoreResult<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM hook_instances WHERE instance = $1")
            .await?;
        client.execute(&stmt, &[&instance]).await?;
        Ok(())
    }

    async fn hook_instances(&self) -> StoreResult<Vec<HookInstanceReport>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT instance, host, started_at, seen_at, report FROM hook_instances \
                 ORDER BY instance",
            )
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|row| {
                Ok(HookInstanceReport {
                    instance: row.try_get("instance")?,
                    host: row.try_get("host")?,
                    started_at: row.try_get("started_at")?,
                    seen_at: row.try_get("seen_at")?,
                    report: row.try_get("report")?,
                })
            })
            .collect()
    }
}

/// Builds a hook script version from a row of [`hook_script_columns!`].
fn hook_script_from_row(row: &Row) -> StoreResult<HookScriptRecord> {
    Ok(HookScriptRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        source: row.try_get("source")?,
        fixtures: row.try_get("fixtures")?,
        author: row.try_get("author")?,
        author_account_id: row.try_get("author_account_id")?,
        comment: row.try_get("comment")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The NULL-or-value parameters of an optional password reset (algorithm, HA1).
fn reset_params(reset: Option<&NewPassword>) -> (Option<&'static str>, Option<&str>) {
    (
        reset.map(|p| p.algorithm.as_str()),
        reset.map(|p| p.ha1.as_str()),
    )
}

/// The whole consume of a provisioning token, one statement and so one round trip and one
/// atomic unit: mark the token used by `$3` if it is unused, current (the account's token with
/// the highest id) and not expired at `$2`; activate its account; with a reset (`$4`
/// algorithm, `$5` HA1) make that the account's only password. When no token was marked, the
/// account of a token already used by `$3` is returned (an earlier attempt of this request
/// committed but its answer was lost), else nothing.
///
/// Concurrent consumers block on the token row; under READ COMMITTED the one that waited
/// re-checks `used_at IS NULL` against the committed row and marks nothing, so exactly one
/// wins. The reset writes rows no other part of the statement touches (an upsert of the new
/// algorithm's row, a delete of the others), so their order inside the statement is moot.
const CONSUME_PROVISIONING_TOKEN: &str = concat!(
    "WITH consumed AS (",
    "UPDATE provisioning_tokens SET used_at = $2, used_by = $3 ",
    "WHERE token_hash = $1 AND used_at IS NULL ",
    "AND (expires_at IS NULL OR expires_at > $2) ",
    "AND id = (SELECT MAX(o.id) FROM provisioning_tokens o ",
    "WHERE o.account_id = provisioning_tokens.account_id) ",
    "RETURNING account_id), ",
    "activated AS (",
    "UPDATE accounts SET activated = TRUE, updated_at = $2 ",
    "WHERE id IN (SELECT account_id FROM consumed) RETURNING id), ",
    "reset AS (",
    "INSERT INTO passwords (account_id, algorithm, ha1) ",
    "SELECT account_id, $4::TEXT, $5::TEXT FROM consumed WHERE $4::TEXT IS NOT NULL ",
    "ON CONFLICT (account_id, algorithm) DO UPDATE SET ha1 = EXCLUDED.ha1 RETURNING id), ",
    "others AS (",
    "DELETE FROM passwords WHERE $4::TEXT IS NOT NULL AND algorithm <> $4::TEXT ",
    "AND account_id IN (SELECT account_id FROM consumed) RETURNING id) ",
    "SELECT account_id FROM consumed ",
    "UNION ALL SELECT account_id FROM provisioning_tokens ",
    "WHERE token_hash = $1 AND used_by = $3 AND NOT EXISTS (SELECT 1 FROM consumed)"
);

/// The whole redemption of an auth token, one statement, as [`CONSUME_PROVISIONING_TOKEN`]:
/// mark it spent at `$3` by `$4` if it is unspent, attached and minted after `$2`; with a
/// reset (`$5`, `$6`) make that its account's only password; else the account of a token
/// already spent by `$4`.
const CONSUME_AUTH_TOKEN: &str = concat!(
    "WITH consumed AS (",
    "UPDATE auth_tokens SET used_at = $3, used_by = $4 ",
    "WHERE token_hash = $1 AND account_id IS NOT NULL AND created_at > $2 ",
    "AND used_at IS NULL RETURNING account_id), ",
    "reset AS (",
    "INSERT INTO passwords (account_id, algorithm, ha1) ",
    "SELECT account_id, $5::TEXT, $6::TEXT FROM consumed WHERE $5::TEXT IS NOT NULL ",
    "ON CONFLICT (account_id, algorithm) DO UPDATE SET ha1 = EXCLUDED.ha1 RETURNING id), ",
    "others AS (",
    "DELETE FROM passwords WHERE $5::TEXT IS NOT NULL AND algorithm <> $5::TEXT ",
    "AND account_id IN (SELECT account_id FROM consumed) RETURNING id) ",
    "SELECT account_id FROM consumed ",
    "UNION ALL SELECT account_id FROM auth_tokens ",
    "WHERE token_hash = $1 AND used_by = $4 AND NOT EXISTS (SELECT 1 FROM consumed)"
);

/// Expired auth tokens; a spent one only once its use is as old (see [`PurgeRules`]).
const PURGE_AUTH_TOKENS: &str = concat!(
    "DELETE FROM auth_tokens WHERE created_at <= $1 ",
    "AND (used_at IS NULL OR used_at <= $1)"
);

/// Expired challenges, and (with `$2`) those a qop-less response spent (`nc` = `$3`, the
/// highest count, as `crate::auth::digest` records it).
const PURGE_NONCES: &str = "DELETE FROM digest_nonces WHERE created_at <= $1 OR ($2 AND nc = $3)";

/// User keys idle since the cut-off (admin keys have their own lifetime and are listed).
const PURGE_USER_KEYS: &str =
    "DELETE FROM api_keys WHERE expires_after_minutes IS NULL AND last_used_at <= $1";

/// Provisioning tokens retired at or before `$1`: superseded (a newer token of the account was
/// minted by then), or used by then and minted by then. A token is deleted only together with
/// every older token of its account — an older one is superseded by it, minted before the
/// cut-off — so each account's newest remaining token stays its newest and `current` (the
/// highest id) never moves back to an older token. The statement sees one snapshot, so the
/// rule holds within it; concurrent passes delete unions of such sets, which keep it too.
const PURGE_PROVISIONING_TOKENS: &str = concat!(
    "DELETE FROM provisioning_tokens t WHERE ",
    "EXISTS (SELECT 1 FROM provisioning_tokens n ",
    "WHERE n.account_id = t.account_id AND n.id > t.id AND n.created_at <= $1) ",
    "OR (t.used_at <= $1 AND t.created_at <= $1)"
);

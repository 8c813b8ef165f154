//! Embedded SQLite backend, the zero-set-up default: one file in the data directory, in WAL
//! mode, so readers never block the writer nor the writer the readers.
//!
//! Writes go to one writer connection on its own thread, fed by a queue
//! ([`super::writer`]): the writes of this process never compete for SQLite's write lock, so
//! they never busy-wait, and several queued writes commit together (one fsync). Each write job
//! keeps its own atomicity (a savepoint) and sees the committed state of every job before it,
//! so of several concurrent consumers of a token exactly one finds it unused. Reads run on a
//! pool of `query_only` connections, each read in its own snapshot.
//!
//! Every connection gets `busy_timeout` (another process, such as the CLI, may hold the write
//! lock for a moment) and `foreign_keys = ON`, so cascades always work. `synchronous` stays at
//! its default (FULL): a consumed token must stay consumed across a power loss.
//!
//! The code is kept statement for statement parallel to [`super::postgres`].

use super::migrations;
use super::writer::Writer;
use super::{
    AccountBundle, AccountUpdate, ApiKeyRecord, ApiKeyUse, AuditEvent, AuditQuery, AuthTokenState,
    Change, ConsumeId, HookInstanceReport, HookScriptRecord, LastProvisioned, NewAccount,
    NewApiKey, NewHookScript, NewWizard, NonceCheck, PurgeCounts, PurgeRules, Store, StoreError,
    StoreResult, TokenState, Wizard, WizardToken,
};
use crate::model::{
    Account, DEFAULT_SIP_IDENTIFIER_CLAIM, NewPassword, OidcSettings, Password, Space, UiFlags,
};
use anyhow::Context as _;
use async_trait::async_trait;
use deadpool_sqlite::rusqlite::types::Value;
use deadpool_sqlite::rusqlite::{
    self, Connection, OptionalExtension, Params, Row, Statement, params, params_from_iter,
};
use deadpool_sqlite::{Config, Hook, HookError, Pool, Runtime};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Settings of the writer connection. `busy_timeout` comes first so that switching a new
/// database file to WAL waits for a concurrent opener (another process) instead of failing.
const WRITER_PRAGMAS: &str = "PRAGMA busy_timeout = 5000;
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;";

/// Settings of every reading connection: they can never write (`query_only`), so no request
/// path but the writer's ever takes the write lock. Each keeps a 512 KiB page cache instead of
/// SQLite's 2 MiB default: with `pool_size` readers the default alone would hold 32 MiB of
/// copies of pages that the kernel's page cache already keeps for all of them.
const READER_PRAGMAS: &str = "PRAGMA busy_timeout = 5000;
PRAGMA foreign_keys = ON;
PRAGMA query_only = ON;
PRAGMA cache_size = -512;";

/// How long a caller waits for a free reading connection before the request fails.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The SQLite store: one writer thread and a pool of reading connections on one file.
pub struct SqliteStore {
    /// Reading connections, each initialised with [`READER_PRAGMAS`].
    readers: Pool,
    /// The only writing connection of this process.
    writer: Writer,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and its parent directory, and
    /// checks that a connection works, so a bad path fails at start-up. `pool_size` reading
    /// connections, plus the writer.
    pub async fn open(path: &Path, pool_size: usize) -> anyhow::Result<SqliteStore> {
        let shown = path.to_string_lossy();
        if shown.contains("://") {
            anyhow::bail!(
                "unsupported database URL {shown:?} (expected postgres://…, sqlite://PATH or a path)"
            );
        }
        if shown.starts_with(":memory:") {
            // Every connection would get its own, different, empty database.
            anyhow::bail!("in-memory SQLite is not supported; give a file path");
        }
        // Directory 0700, file 0600 before SQLite opens it: it holds HA1s.
        super::sqlite_file::prepare(path)?;
        let owned = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = Connection::open(&owned)?;
            conn.execute_batch(WRITER_PRAGMAS)?;
            Ok::<_, rusqlite::Error>(conn)
        })
        .await
        .context("opening the SQLite writer")?
        .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
        let writer = Writer::start(conn).context("cannot start the SQLite writer thread")?;
        let readers = Config::new(path)
            .builder(Runtime::Tokio1)?
            .max_size(pool_size.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .post_create(Hook::async_fn(|conn, _| {
                Box::pin(async move {
                    conn.interact(|c| c.execute_batch(READER_PRAGMAS))
                        .await
                        .map_err(|e| HookError::message(e.to_string()))?
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .context("cannot build the SQLite connection pool")?;
        let store = SqliteStore { readers, writer };
        store
            .ping()
            .await
            .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
        Ok(store)
    }

    /// Runs `f` on a reading connection, on a blocking thread.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.readers.get().await.map_err(|e| match e {
            deadpool_sqlite::PoolError::Timeout(_) => {
                StoreError::Unavailable(format!("sqlite pool: {e}"))
            }
            e => StoreError::Backend(format!("sqlite pool: {e}")),
        })?;
        conn.interact(f)
            .await
            .map_err(|e| StoreError::Unavailable(format!("sqlite connection task: {e}")))?
    }

    /// Runs `f` on the writer (see [`super::writer`]): committed when this returns `Ok`;
    /// an `Err` from `f` leaves nothing of it written.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write(f).await
    }
}

/// Maps SQLite errors: unique violations become a client-safe `Conflict`, foreign-key
/// violations `NotFound` (the referenced row is missing), anything else `Backend`. SQLite's
/// messages name tables and columns, never bound values, so no secret can leak into them.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(code, message) = &e {
            match code.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    return StoreError::Conflict(conflict_message(
                        message.as_deref().unwrap_or(""),
                    ));
                }
                rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => return StoreError::NotFound,
                _ => {}
            }
            // Still locked after busy_timeout: nothing was written, a retry may succeed.
            if matches!(
                code.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) {
                return StoreError::Unavailable(format!("sqlite: {e}"));
            }
        }
        StoreError::Backend(format!("sqlite: {e}"))
    }
}

/// Names what clashed, from SQLite's "UNIQUE constraint failed: table.column, …" message.
fn conflict_message(message: &str) -> String {
    let target = message
        .strip_prefix("UNIQUE constraint failed: ")
        .unwrap_or(message);
    let what = match target {
        "spaces.domain" => "space domain",
        "spaces.host" => "space host",
        "spaces.name" => "space name",
        "accounts.username, accounts.domain" => "account",
        "passwords.account_id, passwords.algorithm" => "password for this algorithm",
        "account_dictionary.account_id, account_dictionary.key" => "dictionary key",
        "provisioning_tokens.token_hash" => "provisioning token",
        "auth_tokens.token_hash" => "auth token",
        "wizards.token_hash" => "wizard",
        "api_keys.key_hash" => "api key",
        "api_keys.account_id" => "user api key",
        "digest_nonces.opaque" => "digest challenge",
        _ => "record",
    };
    format!("{what} already exists")
}

/// Runs a query expected to return at most one row and maps it.
fn query_opt<T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    map: impl FnOnce(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut rows = stmt.query(params)?;
    match rows.next()? {
        Some(row) => Ok(Some(map(row)?)),
        None => Ok(None),
    }
}

/// Columns of `wizards` as [`wizard_from_row`] reads them.
const WIZARD_COLUMNS: &str = "id, space, created_by, provisioning_account_id, sip, linphone_action, \
     linphone_use_sips, created_at, used_at";

/// A [`Wizard`] from a row of [`WIZARD_COLUMNS`].
fn wizard_from_row(row: &Row<'_>) -> rusqlite::Result<Wizard> {
    Ok(Wizard {
        id: row.get("id")?,
        space: row.get("space")?,
        created_by: row.get("created_by")?,
        provisioning_account_id: row.get("provisioning_account_id")?,
        sip: row.get("sip")?,
        linphone_action: row.get("linphone_action")?,
        linphone_use_sips: row.get("linphone_use_sips")?,
        created_at: row.get("created_at")?,
        used_at: row.get("used_at")?,
    })
}

/// Runs a query and maps every row.
fn query_all<T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    mut map: impl FnMut(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// Parses a text column holding one of the model's enums.
fn parse_column<T: std::str::FromStr<Err = String>>(row: &Row<'_>, column: &str) -> StoreResult<T> {
    let text: String = row.get(column)?;
    text.parse()
        .map_err(|e: String| StoreError::Backend(format!("column {column}: {e}")))
}

/// Builds a space from a row of [`space_columns!`].
fn space_from_row(row: &Row<'_>) -> StoreResult<Space> {
    Ok(Space {
        id: row.get("id")?,
        domain: row.get("domain")?,
        host: row.get("host")?,
        name: row.get("name")?,
        super_space: row.get("super_space")?,
        realm: row.get("realm")?,
        password_algorithm: parse_column(row, "password_algorithm")?,
        base_rc: row.get("base_rc")?,
        custom_entries: row.get("custom_entries")?,
        overwrite_all: row.get("overwrite_all")?,
        ui: UiFlags {
            super_space: row.get("ui_super")?,
            disable_chat_feature: row.get("ui_disable_chat_feature")?,
            disable_meetings_feature: row.get("ui_disable_meetings_feature")?,
            disable_broadcast_feature: row.get("ui_disable_broadcast_feature")?,
            hide_settings: row.get("ui_hide_settings")?,
            hide_account_settings: row.get("ui_hide_account_settings")?,
            disable_call_recordings_feature: row.get("ui_disable_call_recordings_feature")?,
            only_display_sip_uri_username: row.get("ui_only_display_sip_uri_username")?,
            assistant_hide_create_account: row.get("ui_assistant_hide_create_account")?,
            assistant_disable_qr_code: row.get("ui_assistant_disable_qr_code")?,
            assistant_hide_third_party_account: row.get("ui_assistant_hide_third_party_account")?,
            max_account: row.get("ui_max_account")?,
        },
        vcard_list_url: row.get("vcard_list_url")?,
        public_url: row.get("public_url")?,
        token_lifetime_minutes: row.get("token_lifetime_minutes")?,
        header_mode: parse_column(row, "header_mode")?,
        hook_failure: parse_column(row, "hook_failure")?,
        max_accounts: row.get("max_accounts")?,
        oidc: oidc_from_row(row)?,
        client_certificate_authentication: row.get("client_certificate_authentication")?,
    })
}

/// A space's OIDC settings from a row of [`space_columns!`]: set when `oidc_server_url` is.
fn oidc_from_row(row: &Row<'_>) -> StoreResult<Option<OidcSettings>> {
    let Some(server_url) = row.get::<_, Option<String>>("oidc_server_url")? else {
        return Ok(None);
    };
    Ok(Some(OidcSettings {
        server_url,
        realm: row
            .get::<_, Option<String>>("oidc_realm")?
            .unwrap_or_default(),
        public_key: row.get("oidc_public_key")?,
        jwks_url: row.get("oidc_jwks_url")?,
        sip_identifier_claim: row.get("oidc_sip_identifier_claim")?,
        audience: row.get("oidc_audience")?,
        issuer: row.get("oidc_issuer")?,
        required: row.get("oidc_required")?,
    }))
}

/// The 36 settings of a space as `?1..?36`, in [`space_columns!`] order without `id`
/// (`?1` is the domain, the key of an update).
fn space_values(s: &Space) -> Vec<Value> {
    let oidc = s.oidc.as_ref();
    vec![
        s.domain.clone().into(),
        s.host.clone().into(),
        s.name.clone().into(),
        s.super_space.into(),
        s.realm.clone().into(),
        s.password_algorithm.as_str().to_string().into(),
        s.base_rc.clone().into(),
        s.custom_entries.clone().into(),
        s.overwrite_all.into(),
        s.ui.super_space.into(),
        s.ui.disable_chat_feature.into(),
        s.ui.disable_meetings_feature.into(),
        s.ui.disable_broadcast_feature.into(),
        s.ui.hide_settings.into(),
        s.ui.hide_account_settings.into(),
        s.ui.disable_call_recordings_feature.into(),
        s.ui.only_display_sip_uri_username.into(),
        s.ui.assistant_hide_create_account.into(),
        s.ui.assistant_disable_qr_code.into(),
        s.ui.assistant_hide_third_party_account.into(),
        s.ui.max_account.into(),
        s.vcard_list_url.clone().into(),
        s.public_url.clone().into(),
        s.token_lifetime_minutes.into(),
        s.header_mode.as_str().to_string().into(),
        s.hook_failure.as_str().to_string().into(),
        s.max_accounts.into(),
        oidc.map(|o| o.server_url.clone()).into(),
        oidc.map(|o| o.realm.clone()).into(),
        oidc.and_then(|o| o.public_key.clone()).into(),
        oidc.and_then(|o| o.jwks_url.clone()).into(),
        oidc.map_or_else(
            || DEFAULT_SIP_IDENTIFIER_CLAIM.to_string(),
            |o| o.sip_identifier_claim.clone(),
        )
        .into(),
        oidc.and_then(|o| o.audience.clone()).into(),
        oidc.and_then(|o| o.issuer.clone()).into(),
        oidc.is_some_and(|o| o.required).into(),
        s.client_certificate_authentication.into(),
    ]
}

/// Builds an account (without its dictionary) from a row of [`account_columns!`].
fn account_from_row(row: &Row<'_>) -> StoreResult<Account> {
    Ok(Account {
        id: row.get("id")?,
        username: row.get("username")?,
        domain: row.get("domain")?,
        email: row.get("email")?,
        display_name: row.get("display_name")?,
        phone: row.get("phone")?,
        activated: row.get("activated")?,
        blocked: row.get("blocked")?,
        admin: row.get("admin")?,
        dtmf_protocol: row.get("dtmf_protocol")?,
        ip_address: row.get("ip_address")?,
        user_agent: row.get("user_agent")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        dictionary: BTreeMap::new(),
    })
}

/// Reads one account's dictionary.
fn load_dictionary(conn: &Connection, account_id: i64) -> StoreResult<BTreeMap<String, String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT key, value FROM account_dictionary WHERE account_id = ?1 ORDER BY key",
    )?;
    let pairs = query_all(&mut stmt, [account_id], |row| {
        Ok((row.get("key")?, row.get("value")?))
    })?;
    Ok(pairs.into_iter().collect())
}

/// Reads one account's passwords, by id.
fn load_passwords(conn: &Connection, account_id: i64) -> StoreResult<Vec<Password>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, account_id, algorithm, ha1 FROM passwords WHERE account_id = ?1 ORDER BY id",
    )?;
    query_all(&mut stmt, [account_id], |row| {
        Ok(Password {
            id: row.get("id")?,
            account_id: row.get("account_id")?,
            algorithm: parse_column(row, "algorithm")?,
            ha1: row.get("ha1")?,
        })
    })
}

/// Completes an account read by a join (without its dictionary) into a bundle, on the same
/// connection and in the caller's read transaction: no network, so a few indexed statements
/// cost microseconds.
fn complete_bundle(conn: &Connection, mut account: Account) -> StoreResult<AccountBundle> {
    account.dictionary = load_dictionary(conn, account.id)?;
    let passwords = load_passwords(conn, account.id)?;
    Ok(AccountBundle { account, passwords })
}

/// Prefixes every column of [`account_columns!`] with `a.`, for joins.
macro_rules! joined_account_columns {
    () => {
        "a.id, a.username, a.domain, a.email, a.display_name, a.phone, a.activated, a.blocked, \
         a.admin, a.dtmf_protocol, a.ip_address, a.user_agent, a.created_at, a.updated_at"
    };
}

/// Replaces one account's dictionary (inside the caller's transaction).
fn write_dictionary(
    tx: &Connection,
    account_id: i64,
    dictionary: &BTreeMap<String, String>,
) -> StoreResult<()> {
    tx.prepare_cached("DELETE FROM account_dictionary WHERE account_id = ?1")?
        .execute([account_id])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO account_dictionary (account_id, key, value) VALUES (?1, ?2, ?3)",
    )?;
    for (key, value) in dictionary {
        insert.execute(params![account_id, key, value])?;
    }
    Ok(())
}

/// Replaces one account's passwords (inside the caller's transaction).
fn write_passwords(tx: &Connection, account_id: i64, passwords: &[NewPassword]) -> StoreResult<()> {
    tx.prepare_cached("DELETE FROM passwords WHERE account_id = ?1")?
        .execute([account_id])?;
    let mut insert = tx
        .prepare_cached("INSERT INTO passwords (account_id, algorithm, ha1) VALUES (?1, ?2, ?3)")?;
    for password in passwords {
        insert.execute(params![
            account_id,
            password.algorithm.as_str(),
            password.ha1
        ])?;
    }
    Ok(())
}

/// Builds an audit event from a row of `id` + [`audit_insert_columns!`].
fn audit_from_row(row: &Row<'_>) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        id: row.get("id")?,
        at: row.get("at")?,
        actor_kind: row.get("actor_kind")?,
        actor_account_id: row.get("actor_account_id")?,
        actor_label: row.get("actor_label")?,
        action: row.get("action")?,
        target: row.get("target")?,
        account_id: row.get("account_id")?,
        space: row.get("space")?,
        client_ip: row.get("client_ip")?,
        user_agent: row.get("user_agent")?,
        outcome: row.get("outcome")?,
        detail: row.get("detail")?,
    })
}

/// Reads an account with its dictionary.
fn load_account(conn: &Connection, id: i64) -> StoreResult<Option<Account>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE id = ?1"
    ))?;
    let Some(mut account) = query_opt(&mut stmt, [id], account_from_row)? else {
        return Ok(None);
    };
    account.dictionary = load_dictionary(conn, account.id)?;
    Ok(Some(account))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    /// The read pool (the writer is one dedicated connection, always open).
    fn pool_status(&self) -> super::PoolStatus {
        let s = self.readers.status();
        super::PoolStatus {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }

    async fn migrate(&self) -> StoreResult<Vec<String>> {
        self.writer
            .alone(|c| Ok(migrations::apply_sqlite(c)?))
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| {
            c.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    // ---- change feed ----------------------------------------------------------------------

    async fn change_version(&self, topic: &str) -> StoreResult<i64> {
        let topic = topic.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT COALESCE((SELECT version FROM changes WHERE topic = ?1), 0)",
            )?
            .query_row([topic], |row| row.get(0))?)
        })
        .await
    }

    fn change_feed(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    // ---- spaces ---------------------------------------------------------------------------

    async fn create_space(&self, space: &Space) -> StoreResult<Space> {
        let values = space_values(space);
        self.write(move |c| {
            let mut stmt = c.prepare_cached(concat!(
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
                "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ",
                "?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ",
                "?31, ?32, ?33, ?34, ?35, ?36) RETURNING ",
                space_columns!()
            ))?;
            query_opt(&mut stmt, params_from_iter(values), space_from_row)?
                .ok_or_else(|| StoreError::Backend("insert returned no row".into()))
        })
        .await
    }

    async fn update_space(&self, space: &Space) -> StoreResult<Space> {
        let values = space_values(space);
        self.write(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "UPDATE spaces SET host = ?2, name = ?3, super_space = ?4, realm = ?5, ",
                "password_algorithm = ?6, base_rc = ?7, custom_entries = ?8, overwrite_all = ?9, ",
                "ui_super = ?10, ui_disable_chat_feature = ?11, ui_disable_meetings_feature = ?12, ",
                "ui_disable_broadcast_feature = ?13, ui_hide_settings = ?14, ",
                "ui_hide_account_settings = ?15, ui_disable_call_recordings_feature = ?16, ",
                "ui_only_display_sip_uri_username = ?17, ui_assistant_hide_create_account = ?18, ",
                "ui_assistant_disable_qr_code = ?19, ui_assistant_hide_third_party_account = ?20, ",
                "ui_max_account = ?21, vcard_list_url = ?22, public_url = ?23, ",
                "token_lifetime_minutes = ?24, header_mode = ?25, hook_failure = ?26, ",
                "max_accounts = ?27, oidc_server_url = ?28, oidc_realm = ?29, ",
                "oidc_public_key = ?30, oidc_jwks_url = ?31, oidc_sip_identifier_claim = ?32, ",
                "oidc_audience = ?33, oidc_issuer = ?34, oidc_required = ?35, ",
                "client_certificate_authentication = ?36 WHERE domain = ?1 RETURNING ",
                space_columns!()
            ))?;
            query_opt(&mut stmt, params_from_iter(values), space_from_row)?
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn delete_space(&self, domain: &str) -> StoreResult<bool> {
        let domain = domain.to_string();
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM spaces WHERE domain = ?1")?
                .execute([domain])?;
            Ok(n > 0)
        })
        .await
    }

    async fn space_by_domain(&self, domain: &str) -> StoreResult<Option<Space>> {
        let domain = domain.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT ",
                space_columns!(),
                " FROM spaces WHERE domain = ?1"
            ))?;
            query_opt(&mut stmt, [domain], space_from_row)
        })
        .await
    }

    async fn space_by_host(&self, host: &str) -> StoreResult<Option<Space>> {
        let host = host.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT ",
                space_columns!(),
                " FROM spaces WHERE host = ?1"
            ))?;
            query_opt(&mut stmt, [host], space_from_row)
        })
        .await
    }

    async fn list_spaces(&self) -> StoreResult<Vec<Space>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT ",
                space_columns!(),
                " FROM spaces ORDER BY domain"
            ))?;
            query_all(&mut stmt, [], space_from_row)
        })
        .await
    }

    // ---- accounts -------------------------------------------------------------------------

    async fn create_account(&self, new: &NewAccount, now: i64) -> StoreResult<Account> {
        let new = new.clone();
        self.write(move |tx| {
            let space_exists = tx
                .prepare_cached("SELECT 1 FROM spaces WHERE domain = ?1")?
                .query_row([&new.domain], |_| Ok(()))
                .optional()?
                .is_some();
            if !space_exists {
                return Err(StoreError::NotFound);
            }
            let mut insert = tx.prepare_cached(concat!(
                "INSERT INTO accounts (username, domain, email, display_name, phone, activated, ",
                "blocked, admin, dtmf_protocol, ip_address, user_agent, created_at, updated_at) ",
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?11) RETURNING ",
                account_columns!()
            ))?;
            let params = params![
                new.username,
                new.domain,
                new.email,
                new.display_name,
                new.phone,
                new.activated,
                new.admin,
                new.dtmf_protocol,
                new.ip_address,
                new.user_agent,
                now,
            ];
            let mut account = query_opt(&mut insert, params, account_from_row)?
                .ok_or_else(|| StoreError::Backend("insert returned no row".into()))?;
            drop(insert);
            // Checked after the insert (as in the PostgreSQL backend, where the insert waits
            // for a concurrent delete of the same identity, whose tombstone is then visible).
            let tombstoned = tx
                .prepare_cached(
                    "SELECT 1 FROM accounts_tombstones WHERE username = ?1 AND domain = ?2",
                )?
                .query_row([&new.username, &new.domain], |_| Ok(()))
                .optional()?
                .is_some();
            if tombstoned {
                return Err(StoreError::Conflict("account already exists".into()));
            }
            write_dictionary(tx, account.id, &new.dictionary)?;
            write_passwords(tx, account.id, &new.passwords)?;
            account.dictionary = new.dictionary;
            Ok(account)
        })
        .await
    }

    async fn account(&self, id: i64) -> StoreResult<Option<Account>> {
        self.read(move |c| {
            let tx = c.transaction()?;
            let account = load_account(&tx, id)?;
            tx.commit()?;
            Ok(account)
        })
        .await
    }

    async fn account_by_identity(
        &self,
        username: &str,
        domain: &str,
    ) -> StoreResult<Option<Account>> {
        let (username, domain) = (username.to_string(), domain.to_string());
        self.read(move |c| {
            let tx = c.transaction()?;
            let mut stmt = tx.prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE username = ?1 AND domain = ?2"
            ))?;
            let found = query_opt(&mut stmt, [username, domain], account_from_row)?;
            drop(stmt);
            let account = match found {
                Some(mut account) => {
                    account.dictionary = load_dictionary(&tx, account.id)?;
                    Some(account)
                }
                None => None,
            };
            tx.commit()?;
            Ok(account)
        })
        .await
    }

    async fn account_bundle_by_identity(
        &self,
        username: &str,
        domain: &str,
    ) -> StoreResult<Option<AccountBundle>> {
        let (username, domain) = (username.to_string(), domain.to_string());
        self.read(move |c| {
            let tx = c.transaction()?;
            let mut stmt = tx.prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE username = ?1 AND domain = ?2"
            ))?;
            let found = query_opt(&mut stmt, [username, domain], account_from_row)?;
            drop(stmt);
            let bundle = found.map(|a| complete_bundle(&tx, a)).transpose()?;
            tx.commit()?;
            Ok(bundle)
        })
        .await
    }

    async fn account_bundle_by_email(
        &self,
        domain: &str,
        email: &str,
    ) -> StoreResult<Option<AccountBundle>> {
        let (domain, email) = (domain.to_string(), email.to_string());
        self.read(move |c| {
            let tx = c.transaction()?;
            let mut stmt = tx.prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE domain = ?1 AND lower(email) = lower(?2) ORDER BY id LIMIT 2"
            ))?;
            let mut found = query_all(&mut stmt, [domain, email], account_from_row)?;
            drop(stmt);
            let bundle = match found.pop() {
                Some(account) if found.is_empty() => Some(complete_bundle(&tx, account)?),
                _ => None,
            };
            tx.commit()?;
            Ok(bundle)
        })
        .await
    }

    async fn list_accounts(
        &self,
        domain: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Account>, i64)> {
        let domain = domain.map(str::to_string);
        let (offset, limit) = (offset.max(0), limit.max(0));
        self.read(move |c| {
            // One read transaction, so the page and the total come from the same snapshot.
            let tx = c.transaction()?;
            let mut page = tx.prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE (?1 IS NULL OR domain = ?1) ORDER BY id LIMIT ?2 OFFSET ?3"
            ))?;
            let mut accounts =
                query_all(&mut page, params![domain, limit, offset], account_from_row)?;
            drop(page);
            let total: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM accounts WHERE (?1 IS NULL OR domain = ?1)")?
                .query_row([&domain], |row| row.get(0))?;
            for account in &mut accounts {
                account.dictionary = load_dictionary(&tx, account.id)?;
            }
            tx.commit()?;
            Ok((accounts, total))
        })
        .await
    }

    async fn update_account(
        &self,
        id: i64,
        update: &AccountUpdate,
        now: i64,
    ) -> StoreResult<Option<Account>> {
        let mut update = update.clone();
        self.write(move |tx| {
            let Some(mut account) = load_account(tx, id)? else {
                return Ok(None);
            };
            let before = (account.username.clone(), account.domain.clone());
            let passwords = update.passwords.take();
            apply_account_update(&mut account, update, now);
            tx.prepare_cached(concat!(
                "UPDATE accounts SET email = ?2, display_name = ?3, phone = ?4, ",
                "dtmf_protocol = ?5, activated = ?6, blocked = ?7, admin = ?8, updated_at = ?9, ",
                "username = ?10, domain = ?11 WHERE id = ?1"
            ))?
            .execute(params![
                id,
                account.email,
                account.display_name,
                account.phone,
                account.dtmf_protocol,
                account.activated,
                account.blocked,
                account.admin,
                account.updated_at,
                account.username,
                account.domain,
            ])?;
            // A new identity must never have been deleted (as on create).
            if (account.username.clone(), account.domain.clone()) != before {
                let tombstoned = tx
                    .prepare_cached(
                        "SELECT 1 FROM accounts_tombstones WHERE username = ?1 AND domain = ?2",
                    )?
                    .query_row([&account.username, &account.domain], |_| Ok(()))
                    .optional()?
                    .is_some();
                if tombstoned {
                    return Err(StoreError::Conflict("account already exists".into()));
                }
            }
            write_dictionary(tx, id, &account.dictionary)?;
            if let Some(passwords) = passwords {
                write_passwords(tx, id, &passwords)?;
            }
            Ok(Some(account))
        })
        .await
    }

    async fn delete_account(&self, id: i64, now: i64) -> StoreResult<bool> {
        self.write(move |tx| {
            let identity: Option<(String, String)> = tx
                .prepare_cached("DELETE FROM accounts WHERE id = ?1 RETURNING username, domain")?
                .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let Some((username, domain)) = identity else {
                return Ok(false);
            };
            tx.prepare_cached(concat!(
                "INSERT INTO accounts_tombstones (username, domain, created_at) ",
                "VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING"
            ))?
            .execute(params![username, domain, now])?;
            Ok(true)
        })
        .await
    }

    async fn passwords(&self, account_id: i64) -> StoreResult<Vec<Password>> {
        self.read(move |c| load_passwords(c, account_id)).await
    }

    async fn replace_passwords(
        &self,
        account_id: i64,
        passwords: &[NewPassword],
    ) -> StoreResult<()> {
        let passwords = passwords.to_vec();
        self.write(move |tx| {
            let exists = tx
                .prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")?
                .query_row([account_id], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound);
            }
            write_passwords(tx, account_id, &passwords)?;
            Ok(())
        })
        .await
    }

    // ---- provisioning tokens ----------------------------------------------------------------

    async fn create_provisioning_token(
        &self,
        account_id: i64,
        token_hash: &[u8],
        now: i64,
        expires_at: Option<i64>,
    ) -> StoreResult<()> {
        let token_hash = token_hash.to_vec();
        self.write(move |c| {
            c.prepare_cached(concat!(
                "INSERT INTO provisioning_tokens (account_id, token_hash, created_at, expires_at) ",
                "VALUES (?1, ?2, ?3, ?4)"
            ))?
            .execute(params![account_id, token_hash, now, expires_at])?;
            Ok(())
        })
        .await
    }

    async fn provisioning_token(&self, token_hash: &[u8]) -> StoreResult<Option<TokenState>> {
        let token_hash = token_hash.to_vec();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT t.account_id, t.created_at, t.expires_at, t.used_at IS NOT NULL AS used, ",
                "COALESCE(t.used_at IS NULL AND t.id = (SELECT MAX(o.id) FROM provisioning_tokens o ",
                "WHERE o.account_id = t.account_id), 0) AS current ",
                "FROM provisioning_tokens t WHERE t.token_hash = ?1"
            ))?;
            query_opt(&mut stmt, [token_hash], |row| {
                Ok(TokenState {
                    account_id: row.get("account_id")?,
                    created_at: row.get("created_at")?,
                    expires_at: row.get("expires_at")?,
                    used: row.get("used")?,
                    current: row.get("current")?,
                })
            })
        })
        .await
    }

    async fn token_identity(
        &self,
        token_hash: &[u8],
    ) -> StoreResult<Option<(TokenState, AccountBundle)>> {
        let token_hash = token_hash.to_vec();
        self.read(move |c| {
            let tx = c.transaction()?;
            let mut stmt = tx.prepare_cached(concat!(
                "SELECT t.account_id AS token_account_id, t.created_at AS token_created_at, ",
                "t.expires_at AS token_expires_at, t.used_at IS NOT NULL AS token_used, ",
                "COALESCE(t.used_at IS NULL AND t.id = (SELECT MAX(o.id) FROM provisioning_tokens o ",
                "WHERE o.account_id = t.account_id), 0) AS token_current, ",
                joined_account_columns!(),
                " FROM provisioning_tokens t JOIN accounts a ON a.id = t.account_id ",
                "WHERE t.token_hash = ?1"
            ))?;
            let found = query_opt(&mut stmt, [token_hash], |row| {
                let state = TokenState {
                    account_id: row.get("token_account_id")?,
                    created_at: row.get("token_created_at")?,
                    expires_at: row.get("token_expires_at")?,
                    used: row.get("token_used")?,
                    current: row.get("token_current")?,
                };
                Ok((state, account_from_row(row)?))
            })?;
            drop(stmt);
            let identity = found
                .map(|(state, account)| Ok::<_, StoreError>((state, complete_bundle(&tx, account)?)))
                .transpose()?;
            tx.commit()?;
            Ok(identity)
        })
        .await
    }

    async fn consume_provisioning_token(
        &self,
        token_hash: &[u8],
        now: i64,
        reset: Option<&NewPassword>,
        by: &ConsumeId,
    ) -> StoreResult<Option<i64>> {
        let token_hash = token_hash.to_vec();
        let reset = reset.cloned();
        let by = by.0;
        self.write(move |tx| {
            // Unused, current (the account's unused token with the highest id) and, when it
            // expires, not yet at its expiry instant.
            let account_id: Option<i64> = tx
                .prepare_cached(concat!(
                    "UPDATE provisioning_tokens SET used_at = ?2, used_by = ?3 ",
                    "WHERE token_hash = ?1 AND used_at IS NULL ",
                    "AND (expires_at IS NULL OR expires_at > ?2) ",
                    "AND id = (SELECT MAX(o.id) FROM provisioning_tokens o ",
                    "WHERE o.account_id = provisioning_tokens.account_id) ",
                    "RETURNING account_id"
                ))?
                .query_row(params![token_hash, now, by], |row| row.get(0))
                .optional()?;
            let Some(account_id) = account_id else {
                // Already ours: an earlier attempt with this id committed.
                return Ok(tx
                    .prepare_cached(
                        "SELECT account_id FROM provisioning_tokens WHERE token_hash = ?1 AND used_by = ?2",
                    )?
                    .query_row(params![token_hash, by], |row| row.get(0))
                    .optional()?);
            };
            tx.prepare_cached("UPDATE accounts SET activated = 1, updated_at = ?2 WHERE id = ?1")?
                .execute(params![account_id, now])?;
            if let Some(password) = reset {
                write_passwords(tx, account_id, &[password])?;
            }
            Ok(Some(account_id))
        })
        .await
    }

    // ---- auth tokens (QR login) -----------------------------------------------------------

    async fn create_auth_token(
        &self,
        token_hash: &[u8],
        ip: Option<&str>,
        user_agent: Option<&str>,
        now: i64,
    ) -> StoreResult<()> {
        let token_hash = token_hash.to_vec();
        let (ip, user_agent) = (ip.map(str::to_string), user_agent.map(str::to_string));
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO auth_tokens (token_hash, ip, user_agent, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![token_hash, ip, user_agent, now])?;
            Ok(())
        })
        .await
    }

    async fn auth_token(
        &self,
        token_hash: &[u8],
        not_before: i64,
    ) -> StoreResult<Option<AuthTokenState>> {
        let token_hash = token_hash.to_vec();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT account_id, created_at FROM auth_tokens WHERE token_hash = ?1 AND created_at > ?2 AND used_at IS NULL",
            )?;
            query_opt(&mut stmt, params![token_hash, not_before], |row| {
                Ok(AuthTokenState {
                    account_id: row.get("account_id")?,
                    created_at: row.get("created_at")?,
                })
            })
        })
        .await
    }

    async fn auth_token_identity(
        &self,
        token_hash: &[u8],
        not_before: i64,
    ) -> StoreResult<Option<(AuthTokenState, AccountBundle)>> {
        let token_hash = token_hash.to_vec();
        self.read(move |c| {
            let tx = c.transaction()?;
            let mut stmt = tx.prepare_cached(concat!(
                "SELECT t.created_at AS token_created_at, ",
                joined_account_columns!(),
                " FROM auth_tokens t JOIN accounts a ON a.id = t.account_id ",
                "WHERE t.token_hash = ?1 AND t.created_at > ?2 AND t.used_at IS NULL"
            ))?;
            let found = query_opt(&mut stmt, params![token_hash, not_before], |row| {
                Ok((
                    row.get::<_, i64>("token_created_at")?,
                    account_from_row(row)?,
                ))
            })?;
            drop(stmt);
            let identity = found
                .map(|(created_at, account)| {
                    let state = AuthTokenState {
                        account_id: Some(account.id),
                        created_at,
                    };
                    Ok::<_, StoreError>((state, complete_bundle(&tx, account)?))
                })
                .transpose()?;
            tx.commit()?;
            Ok(identity)
        })
        .await
    }

    async fn attach_auth_token(
        &self,
        token_hash: &[u8],
        account_id: i64,
        not_before: i64,
    ) -> StoreResult<bool> {
        let token_hash = token_hash.to_vec();
        self.write(move |c| {
            let n = c
                .prepare_cached(concat!(
                    "UPDATE auth_tokens SET account_id = ?2 ",
                    "WHERE token_hash = ?1 AND account_id IS NULL AND created_at > ?3 AND used_at IS NULL"
                ))?
                .execute(params![token_hash, account_id, not_before])?;
            Ok(n == 1)
        })
        .await
    }

    async fn consume_auth_token_as(
        &self,
        token_hash: &[u8],
        now: i64,
        not_before: i64,
        reset: Option<&NewPassword>,
        by: &ConsumeId,
    ) -> StoreResult<Option<i64>> {
        let token_hash = token_hash.to_vec();
        let reset = reset.cloned();
        let by = by.0;
        self.write(move |tx| {
            let account_id: Option<i64> = tx
                .prepare_cached(concat!(
                    "UPDATE auth_tokens SET used_at = ?3, used_by = ?4 ",
                    "WHERE token_hash = ?1 AND account_id IS NOT NULL AND created_at > ?2 ",
                    "AND used_at IS NULL RETURNING account_id"
                ))?
                .query_row(params![token_hash, not_before, now, by], |row| row.get(0))
                .optional()?;
            let Some(account_id) = account_id else {
                return Ok(tx
                    .prepare_cached(
                        "SELECT account_id FROM auth_tokens WHERE token_hash = ?1 AND used_by = ?2",
                    )?
                    .query_row(params![token_hash, by], |row| row.get(0))
                    .optional()?);
            };
            if let Some(password) = reset {
                write_passwords(tx, account_id, &[password])?;
            }
            Ok(Some(account_id))
        })
        .await
    }

    // ---- API keys -------------------------------------------------------------------------

    async fn create_api_key(&self, key: &NewApiKey, now: i64) -> StoreResult<i64> {
        let key = key.clone();
        self.write(move |tx| {
            let exists = tx
                .prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")?
                .query_row([key.account_id], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound);
            }
            if key.expires_after_minutes.is_none() {
                tx.prepare_cached(
                    "DELETE FROM api_keys WHERE account_id = ?1 AND expires_after_minutes IS NULL",
                )?
                .execute([key.account_id])?;
            }
            let id: i64 = tx
                .prepare_cached(concat!(
                    "INSERT INTO api_keys (account_id, key_hash, name, ip, expires_after_minutes, ",
                    "created_at, last_used_at, requests) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 0) ",
                    "RETURNING id"
                ))?
                .query_row(
                    params![
                        key.account_id,
                        key.key_hash,
                        key.name,
                        key.ip,
                        key.expires_after_minutes,
                        now
                    ],
                    |row| row.get(0),
                )?;
            Ok(id)
        })
        .await
    }

    async fn api_key_identity(
        &self,
        key_hash: &[u8],
    ) -> StoreResult<Option<(ApiKeyRecord, AccountBundle)>> {
        let key_hash = key_hash.to_vec();
        self.read(move |c| {
            let tx = c.transaction()?;
            let mut stmt = tx.prepare_cached(concat!(
                "SELECT k.id AS key_id, k.account_id AS key_account_id, k.name AS key_name, ",
                "k.ip AS key_ip, k.expires_after_minutes AS key_expires_after_minutes, ",
                "k.last_used_at AS key_last_used_at, k.requests AS key_requests, ",
                joined_account_columns!(),
                " FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = ?1"
            ))?;
            let found = query_opt(&mut stmt, [key_hash], |row| {
                let key = ApiKeyRecord {
                    id: row.get("key_id")?,
                    account_id: row.get("key_account_id")?,
                    name: row.get("key_name")?,
                    ip: row.get("key_ip")?,
                    expires_after_minutes: row.get("key_expires_after_minutes")?,
                    last_used_at: row.get("key_last_used_at")?,
                    requests: row.get("key_requests")?,
                };
                Ok((key, account_from_row(row)?))
            })?;
            drop(stmt);
            let identity = found
                .map(|(key, account)| Ok::<_, StoreError>((key, complete_bundle(&tx, account)?)))
                .transpose()?;
            tx.commit()?;
            Ok(identity)
        })
        .await
    }

    async fn record_api_key_uses(&self, uses: &[ApiKeyUse]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let uses = uses.to_vec();
        // One write job: the whole batch commits together.
        self.write(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "UPDATE api_keys SET last_used_at = MAX(last_used_at, ?2), ",
                "requests = requests + ?3 WHERE id = ?1"
            ))?;
            for u in &uses {
                stmt.execute(params![u.id, u.last_used_at, u.requests])?;
            }
            Ok(())
        })
        .await
    }

    async fn api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT id, account_id, name, ip, expires_after_minutes, last_used_at, requests ",
                "FROM api_keys WHERE account_id = ?1 ORDER BY id"
            ))?;
            query_all(&mut stmt, [account_id], |row| {
                Ok(ApiKeyRecord {
                    id: row.get("id")?,
                    account_id: row.get("account_id")?,
                    name: row.get("name")?,
                    ip: row.get("ip")?,
                    expires_after_minutes: row.get("expires_after_minutes")?,
                    last_used_at: row.get("last_used_at")?,
                    requests: row.get("requests")?,
                })
            })
        })
        .await
    }

    async fn delete_api_key(&self, id: i64) -> StoreResult<bool> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM api_keys WHERE id = ?1")?
                .execute([id])?;
            Ok(n > 0)
        })
        .await
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
        let (nonce, opaque, ip) = (nonce.to_string(), opaque.to_string(), ip.to_string());
        self.write(move |c| {
            c.prepare_cached(concat!(
                "INSERT INTO digest_nonces (account_id, opaque, nonce, ip, nc, created_at) ",
                "VALUES (?1, ?2, ?3, ?4, 0, ?5)"
            ))?
            .execute(params![account_id, opaque, nonce, ip, now])?;
            Ok(())
        })
        .await
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
        let (opaque, nonce, ip) = (opaque.to_string(), nonce.to_string(), ip.to_string());
        self.write(move |tx| {
            let found: Option<(i64, i64)> = tx
                .prepare_cached(concat!(
                    "SELECT id, nc FROM digest_nonces WHERE opaque = ?1 AND account_id = ?2 ",
                    "AND nonce = ?3 AND ip = ?4 AND created_at > ?5"
                ))?
                .query_row(params![opaque, account_id, nonce, ip, not_before], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            let Some((id, last_nc)) = found else {
                return Ok(NonceCheck::Unknown);
            };
            let outcome = if nc <= last_nc {
                tx.prepare_cached("DELETE FROM digest_nonces WHERE id = ?1")?
                    .execute([id])?;
                NonceCheck::Replayed
            } else {
                tx.prepare_cached("UPDATE digest_nonces SET nc = ?2 WHERE id = ?1")?
                    .execute([id, nc])?;
                NonceCheck::Accepted
            };
            Ok(outcome)
        })
        .await
    }

    // ---- audit trail ------------------------------------------------------------------------

    async fn record_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        // One write job: the whole batch commits together.
        self.write(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "INSERT INTO audit_events (",
                audit_insert_columns!(),
                ") ",
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?;
            for e in &events {
                stmt.execute(params![
                    e.at,
                    e.actor_kind,
                    e.actor_account_id,
                    e.actor_label,
                    e.action,
                    e.target,
                    e.account_id,
                    e.space,
                    e.client_ip,
                    e.user_agent,
                    e.outcome,
                    e.detail
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let query = query.clone();
        self.read(move |c| {
            let mut sql = String::from(concat!(
                "SELECT id, ",
                audit_insert_columns!(),
                " FROM audit_events WHERE 1 = 1"
            ));
            let mut values: Vec<Value> = Vec::new();
            if let Some(id) = query.account_id {
                values.push(id.into());
                let n = values.len();
                sql.push_str(&format!(
                    " AND (account_id = ?{n} OR actor_account_id = ?{n})"
                ));
            }
            if let Some(action) = query.action {
                values.push(action.into());
                sql.push_str(&format!(" AND action = ?{}", values.len()));
            }
            if let Some(space) = query.space {
                values.push(space.into());
                sql.push_str(&format!(" AND space = ?{}", values.len()));
            }
            if let Some(since) = query.since {
                values.push(since.into());
                sql.push_str(&format!(" AND at >= ?{}", values.len()));
            }
            values.push(query.limit.into());
            sql.push_str(&format!(
                " ORDER BY at DESC, id DESC LIMIT ?{}",
                values.len()
            ));
            let mut stmt = c.prepare_cached(&sql)?;
            query_all(&mut stmt, params_from_iter(values), audit_from_row)
        })
        .await
    }

    async fn last_provisioned(&self, account_id: i64) -> StoreResult<Option<LastProvisioned>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT at, client_ip, user_agent FROM audit_events ",
                "WHERE account_id = ?1 AND action = ?2 ORDER BY at DESC, id DESC LIMIT 1"
            ))?;
            query_opt(
                &mut stmt,
                params![account_id, crate::audit::action::DOCUMENT_DELIVERED],
                |row| {
                    Ok(LastProvisioned {
                        at: row.get("at")?,
                        ip: row.get("client_ip")?,
                        user_agent: row.get("user_agent")?,
                    })
                },
            )
        })
        .await
    }

    // ---- wizard links ---------------------------------------------------------------------

    async fn create_wizard(&self, wizard: &NewWizard, now: i64) -> StoreResult<Wizard> {
        let w = wizard.clone();
        self.write(move |c| {
            let sql = format!(
                "INSERT INTO wizards (token_hash, space, created_by, provisioning_account_id, sip, \
                 linphone_action, linphone_use_sips, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING {WIZARD_COLUMNS}"
            );
            Ok(c.prepare_cached(&sql)?.query_row(
                params![
                    w.token_hash,
                    w.space,
                    w.created_by,
                    w.provisioning_account_id,
                    w.sip,
                    w.linphone_action,
                    w.linphone_use_sips,
                    now
                ],
                wizard_from_row,
            )?)
        })
        .await
    }

    async fn wizard(&self, token_hash: &[u8]) -> StoreResult<Option<Wizard>> {
        let token_hash = token_hash.to_vec();
        self.read(move |c| {
            let sql = format!("SELECT {WIZARD_COLUMNS} FROM wizards WHERE token_hash = ?1");
            let mut stmt = c.prepare_cached(&sql)?;
            query_opt(&mut stmt, [token_hash], |row| Ok(wizard_from_row(row)?))
        })
        .await
    }

    async fn use_wizard(
        &self,
        token_hash: &[u8],
        now: i64,
        mint: Option<&WizardToken>,
    ) -> StoreResult<Option<Wizard>> {
        let token_hash = token_hash.to_vec();
        let mint = mint.cloned();
        self.write(move |tx| {
            let sql = format!(
                "UPDATE wizards SET used_at = ?2 WHERE token_hash = ?1 AND used_at IS NULL \
                 RETURNING {WIZARD_COLUMNS}"
            );
            let used = tx
                .prepare_cached(&sql)?
                .query_row(params![token_hash, now], wizard_from_row)
                .optional()?;
            if let (Some(wizard), Some(mint)) = (&used, &mint)
                && let Some(account_id) = wizard.provisioning_account_id
            {
                tx.prepare_cached(concat!(
                    "INSERT INTO provisioning_tokens (account_id, token_hash, created_at, expires_at) ",
                    "VALUES (?1, ?2, ?3, ?4)"
                ))?
                .execute(params![account_id, mint.token_hash, now, mint.expires_at])?;
            }
            Ok(used)
        })
        .await
    }

    // ---- housekeeping ---------------------------------------------------------------------

    async fn purge(&self, rules: &PurgeRules) -> StoreResult<PurgeCounts> {
        let rules = *rules;
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        // One write job per table, as the PostgreSQL store runs one statement per table: each
        // is atomic on its own, and requests queued meanwhile are served between them.
        let auth_tokens = self
            .write(move |c| {
                Ok(c.prepare_cached(concat!(
                    "DELETE FROM auth_tokens WHERE created_at <= ?1 ",
                    "AND (used_at IS NULL OR used_at <= ?1)"
                ))?
                .execute([rules.auth_tokens_before])?)
            })
            .await?;
        let digest_nonces = self
            .write(move |c| {
                Ok(c.prepare_cached(
                    "DELETE FROM digest_nonces WHERE created_at <= ?1 OR (?2 AND nc = ?3)",
                )?
                .execute(params![
                    rules.nonces_before,
                    rules.answered_nonces,
                    i64::MAX
                ])?)
            })
            .await?;
        let api_keys = match rules.user_keys_idle_before {
            Some(before) => {
                self.write(move |c| {
                    Ok(c.prepare_cached(
                        "DELETE FROM api_keys WHERE expires_after_minutes IS NULL AND last_used_at <= ?1",
                    )?
                    .execute([before])?)
                })
                .await?
            }
            None => 0,
        };
        // The rule and why it keeps `current` right: postgres::PURGE_PROVISIONING_TOKENS.
        // SQLite evaluates the WHERE clause over the table as it was before the statement.
        let provisioning_tokens = match rules.tokens_retired_before {
            Some(before) => {
                self.write(move |c| {
                    Ok(c.prepare_cached(concat!(
                        "DELETE FROM provisioning_tokens AS t WHERE ",
                        "EXISTS (SELECT 1 FROM provisioning_tokens n ",
                        "WHERE n.account_id = t.account_id AND n.id > t.id AND n.created_at <= ?1) ",
                        "OR (t.used_at <= ?1 AND t.created_at <= ?1)"
                    ))?
                    .execute([before])?)
                })
                .await?
            }
            None => 0,
        };
        let audit_events = match rules.audit_events_before {
            Some(before) => {
                self.write(move |c| {
                    Ok(c.prepare_cached("DELETE FROM audit_events WHERE at <= ?1")?
                        .execute([before])?)
                })
                .await?
            }
            None => 0,
        };
        Ok(PurgeCounts {
            auth_tokens: count(auth_tokens),
            digest_nonces: count(digest_nonces),
            api_keys: count(api_keys),
            provisioning_tokens: count(provisioning_tokens),
            audit_events: count(audit_events),
        })
    }

    // ---- hook scripts ---------------------------------------------------------------------

    async fn live_hook_scripts(&self) -> StoreResult<Vec<HookScriptRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT ",
                hook_script_columns!(),
                " FROM hook_scripts h WHERE h.source IS NOT NULL AND h.version = ",
                "(SELECT MAX(version) FROM hook_scripts WHERE name = h.name) ORDER BY h.name"
            ))?;
            query_all(&mut stmt, [], hook_script_from_row)
        })
        .await
    }

    async fn hook_script_versions(&self, name: &str) -> StoreResult<Vec<HookScriptRecord>> {
        let name = name.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT ",
                hook_script_columns!(),
                " FROM hook_scripts WHERE name = ?1 ORDER BY version DESC"
            ))?;
            query_all(&mut stmt, [name], hook_script_from_row)
        })
        .await
    }

    async fn hook_script_version(
        &self,
        name: &str,
        version: i64,
    ) -> StoreResult<Option<HookScriptRecord>> {
        let name = name.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT ",
                hook_script_columns!(),
                " FROM hook_scripts WHERE name = ?1 AND version = ?2"
            ))?;
            query_opt(&mut stmt, params![name, version], hook_script_from_row)
        })
        .await
    }

    async fn save_hook_scripts(
        &self,
        scripts: &[NewHookScript],
        now: i64,
    ) -> StoreResult<Vec<HookScriptRecord>> {
        let scripts = scripts.to_vec();
        // One write job: the scripts commit together (the single writer numbers them in turn).
        self.write(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "INSERT INTO hook_scripts (name, version, source, fixtures, author, ",
                "author_account_id, comment, created_at) ",
                "SELECT ?1, COALESCE(MAX(version), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7 ",
                "FROM hook_scripts WHERE name = ?1 RETURNING ",
                hook_script_columns!()
            ))?;
            let mut saved = Vec::with_capacity(scripts.len());
            for s in &scripts {
                let params = params![
                    s.name,
                    s.source,
                    s.fixtures,
                    s.author,
                    s.author_account_id,
                    s.comment,
                    now
                ];
                saved.push(
                    query_opt(&mut stmt, params, hook_script_from_row)?
                        .ok_or_else(|| StoreError::Backend("insert returned no row".into()))?,
                );
            }
            Ok(saved)
        })
        .await
    }

    async fn report_hook_instance(
        &self,
        report: &HookInstanceReport,
        forget_before: i64,
    ) -> StoreResult<()> {
        let r = report.clone();
        self.write(move |c| {
            c.prepare_cached(concat!(
                "INSERT INTO hook_instances (instance, host, started_at, seen_at, report) ",
                "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (instance) DO UPDATE SET ",
                "host = excluded.host, seen_at = excluded.seen_at, report = excluded.report"
            ))?
            .execute(params![
                r.instance,
                r.host,
                r.started_at,
                r.seen_at,
                r.report
            ])?;
            c.prepare_cached("DELETE FROM hook_instances WHERE seen_at < ?1")?
                .execute([forget_before])?;
            Ok(())
        })
        .await
    }

    async fn forget_hook_instance(&self, instance: &str) -> StoreResult<()> {
        let instance = instance.to_string();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM hook_instances WHERE instance = ?1")?
                .execute([instance])?;
            Ok(())
        })
        .await
    }

    async fn hook_instances(&self) -> StoreResult<Vec<HookInstanceReport>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT instance, host, started_at, seen_at, report FROM hook_instances \
                 ORDER BY instance",
            )?;
            query_all(&mut stmt, [], |row| {
                Ok(HookInstanceReport {
                    instance: row.get("instance")?,
                    host: row.get("host")?,
                    started_at: row.get("started_at")?,
                    seen_at: row.get("seen_at")?,
                    report: row.get("report")?,
                })
            })
        })
        .await
    }
}

/// Builds a hook script version from a row of [`hook_script_columns!`].
fn hook_script_from_row(row: &Row<'_>) -> StoreResult<HookScriptRecord> {
    Ok(HookScriptRecord {
        name: row.get("name")?,
        version: row.get("version")?,
        source: row.get("source")?,
        fixtures: row.get("fixtures")?,
        author: row.get("author")?,
        author_account_id: row.get("author_account_id")?,
        comment: row.get("comment")?,
        created_at: row.get("created_at")?,
    })
}

/// Applies a partial update to an account read in the same transaction; the caller writes the
/// result back. Shared with [`super::postgres`] so both backends merge updates identically.
pub(super) fn apply_account_update(account: &mut Account, update: AccountUpdate, now: i64) {
    if let Some(v) = update.display_name {
        account.display_name = v;
    }
    if let Some(v) = update.email {
        account.email = v;
    }
    if let Some(v) = update.phone {
        account.phone = v;
    }
    if let Some(v) = update.dtmf_protocol {
        account.dtmf_protocol = v;
    }
    if let Some(v) = update.activated {
        account.activated = v;
    }
    if let Some(v) = update.blocked {
        account.blocked = v;
    }
    if let Some(v) = update.admin {
        account.admin = v;
    }
    if let Some(v) = update.dictionary {
        account.dictionary = v;
    }
    if let Some(v) = update.username {
        account.username = v;
    }
    if let Some(v) = update.domain {
        account.domain = v;
    }
    account.updated_at = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pragmas are per connection, so every reading connection must have them, not only
    /// the first one; and none of them can write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_reading_connection_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db").join("x.sqlite3"), 4)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(store.readers.get().await.unwrap());
        }
        for conn in &held {
            let settings = conn
                .interact(|c| {
                    let fk: i64 = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
                    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                    let busy: i64 = c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
                    let write = c.execute("DELETE FROM spaces", []).is_err();
                    Ok::<_, rusqlite::Error>((fk, mode, busy, write))
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(settings, (1, "wal".to_string(), 5000, true));
        }
        let writer = store
            .writer
            .alone(|c| {
                let fk: i64 = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
                let busy: i64 = c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
                Ok((fk, busy))
            })
            .await
            .unwrap();
        assert_eq!(writer, (1, 5000));
    }

    /// A batch whose jobs fail, succeed and panic: each failing job leaves nothing, the others
    /// commit, and each caller gets its own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_jobs_keep_their_own_atomicity() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            SqliteStore::open(&dir.path().join("x.sqlite3"), 2)
                .await
                .unwrap(),
        );
        store.migrate().await.unwrap();
        let insert = |c: &Connection, domain: &str| -> StoreResult<usize> {
            Ok(c.execute(
                "INSERT INTO spaces (domain, host, name, realm) VALUES (?1, ?1, ?1, ?1)",
                [domain],
            )?)
        };
        let mut set = tokio::task::JoinSet::new();
        for i in 0..60 {
            let store = store.clone();
            set.spawn(async move {
                let domain = format!("d{i}.example");
                let outcome = store
                    .write(move |c| {
                        insert(c, &domain)?;
                        match i % 3 {
                            0 => Ok(i),
                            1 => Err(StoreError::Conflict(format!("job {i} refused"))),
                            _ if i == 5 => panic!("job {i} panicked"),
                            _ => {
                                // A constraint failure after a write: the write goes too.
                                insert(c, &domain)?;
                                Ok(i)
                            }
                        }
                    })
                    .await;
                (i, outcome)
            });
        }
        for (i, outcome) in set.join_all().await {
            match (i % 3, outcome) {
                (0, Ok(n)) => assert_eq!(n, i),
                (1, Err(StoreError::Conflict(m))) => assert_eq!(m, format!("job {i} refused")),
                (2, Err(StoreError::Unavailable(_))) if i == 5 => {}
                (2, Err(StoreError::Conflict(_))) => {}
                (_, other) => panic!("job {i}: {other:?}"),
            }
        }
        let mut domains: Vec<String> = store
            .list_spaces()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.domain)
            .collect();
        domains.sort();
        let mut wanted: Vec<String> = (0..60)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("d{i}.example"))
            .collect();
        wanted.sort();
        assert_eq!(domains, wanted);
        // The writer survived the panic.
        store
            .create_space(&Space::new("after.example", "after.example"))
            .await
            .unwrap();
    }

    /// Mistyped URLs and `:memory:` fail at start instead of creating odd files.
    #[tokio::test]
    async fn refuses_urls_and_memory() {
        for bad in ["mysql://db/x", ":memory:"] {
            assert!(SqliteStore::open(Path::new(bad), 1).await.is_err(), "{bad}");
        }
    }
}

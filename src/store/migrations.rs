//! Plain-SQL schema migrations embedded in the binary, so a fresh database (and `provisio
//! migrate`) needs nothing but the executable. Each backend has its own ordered list; migration
//! `i` (0-based) has version `i + 1` and a name starting with `V{i + 1}__`.
//!
//! Every migration runs in its own transaction together with the `schema_migrations` row that
//! records it, so a failed migration leaves neither half-applied DDL (both engines have
//! transactional DDL) nor a false record. Applying is idempotent: recorded versions are skipped.

use deadpool_sqlite::rusqlite::{self, OptionalExtension, TransactionBehavior};

/// SQLite migrations, in order: (name, SQL).
pub const SQLITE: &[(&str, &str)] = &[
    ("V1__init", include_str!("../../schema/sqlite/V1__init.sql")),
    (
        "V2__consume_owner",
        include_str!("../../schema/sqlite/V2__consume_owner.sql"),
    ),
    (
        "V3__change_feed",
        include_str!("../../schema/sqlite/V3__change_feed.sql"),
    ),
    (
        "V4__audit",
        include_str!("../../schema/sqlite/V4__audit.sql"),
    ),
    (
        "V5__wizards",
        include_str!("../../schema/sqlite/V5__wizards.sql"),
    ),
    (
        "V6__hook_scripts",
        include_str!("../../schema/sqlite/V6__hook_scripts.sql"),
    ),
    (
        "V7__space_auth",
        include_str!("../../schema/sqlite/V7__space_auth.sql"),
    ),
];

/// PostgreSQL migrations, in order: (name, SQL).
pub const POSTGRES: &[(&str, &str)] = &[
    (
        "V1__init",
        include_str!("../../schema/postgres/V1__init.sql"),
    ),
    (
        "V2__consume_owner",
        include_str!("../../schema/postgres/V2__consume_owner.sql"),
    ),
    (
        "V3__change_feed",
        include_str!("../../schema/postgres/V3__change_feed.sql"),
    ),
    (
        "V4__audit",
        include_str!("../../schema/postgres/V4__audit.sql"),
    ),
    (
        "V5__wizards",
        include_str!("../../schema/postgres/V5__wizards.sql"),
    ),
    (
        "V6__hook_scripts",
        include_str!("../../schema/postgres/V6__hook_scripts.sql"),
    ),
    (
        "V7__space_auth",
        include_str!("../../schema/postgres/V7__space_auth.sql"),
    ),
];

/// Version number of the migration at `index` in its list (versions start at 1).
fn version_of(index: usize) -> i64 {
    i64::try_from(index).map_or(i64::MAX, |i| i + 1)
}

/// Wall-clock unix milliseconds for `applied_at` (informational only; 0 if the clock is
/// before 1970).
fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The bookkeeping table for SQLite, created before anything else.
const SQLITE_BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT;";

/// The bookkeeping table for PostgreSQL, created under the migration lock.
const POSTGRES_BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT   NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Applies the SQLite migrations not yet recorded; returns the names applied now.
///
/// Each migration runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock
/// before reading `schema_migrations`, so two processes starting together cannot both apply one.
pub fn apply_sqlite(conn: &mut rusqlite::Connection) -> rusqlite::Result<Vec<String>> {
    let now = unix_ms_now();
    conn.execute_batch(SQLITE_BOOKKEEPING)?;
    let mut applied = Vec::new();
    for (index, (name, sql)) in SQLITE.iter().enumerate() {
        let version = version_of(index);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done = tx
            .prepare_cached("SELECT 1 FROM schema_migrations WHERE version = ?1")?
            .query_row([version], |_| Ok(()))
            .optional()?
            .is_some();
        if done {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.prepare_cached(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(rusqlite::params![version, name, now])?;
        tx.commit()?;
        applied.push((*name).to_string());
    }
    Ok(applied)
}

/// Applies the PostgreSQL migrations not yet recorded; returns the names applied now.
///
/// Each migration's transaction first takes a transaction-scoped advisory lock keyed by the
/// current schema, so instances starting together against one database apply each migration
/// once, while test schemas in the same database do not wait on each other.
pub async fn apply_postgres(
    client: &mut deadpool_postgres::Client,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let now = unix_ms_now();
    let mut applied = Vec::new();
    for (index, (name, sql)) in POSTGRES.iter().enumerate() {
        let version = version_of(index);
        let tx = client.transaction().await?;
        let lock = tx
            .prepare_cached(
                "SELECT pg_advisory_xact_lock(hashtextextended('provisio.migrate:' || current_schema(), 0))",
            )
            .await?;
        tx.execute(&lock, &[]).await?;
        // "already exists, skipping" is a NOTICE on every start after the first: not news.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await?;
        tx.batch_execute(POSTGRES_BOOKKEEPING).await?;
        let select = tx
            .prepare_cached("SELECT 1 FROM schema_migrations WHERE version = $1")
            .await?;
        if tx.query_opt(&select, &[&version]).await?.is_some() {
            continue;
        }
        tx.batch_execute(sql).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .await?;
        tx.execute(&insert, &[&version, name, &now]).await?;
        tx.commit().await?;
        applied.push((*name).to_string());
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names must carry their position as version, so the two lists cannot drift silently.
    #[test]
    fn names_match_versions() {
        for list in [SQLITE, POSTGRES] {
            for (index, (name, sql)) in list.iter().enumerate() {
                assert!(
                    name.starts_with(&format!("V{}__", version_of(index))),
                    "{name}"
                );
                assert!(!sql.trim().is_empty(), "{name} is empty");
            }
        }
        let sqlite: Vec<_> = SQLITE.iter().map(|(n, _)| n).collect();
        let postgres: Vec<_> = POSTGRES.iter().map(|(n, _)| n).collect();
        assert_eq!(
            sqlite, postgres,
            "both backends must have the same migrations"
        );
    }
}

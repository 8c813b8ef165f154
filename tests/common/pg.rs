//! A fresh PostgreSQL schema per test, so PostgreSQL tests run in parallel against one local
//! database without seeing each other's rows, and skip cleanly where no server runs (but never
//! in CI, where a silent skip would hide a whole backend).

use std::time::Duration;

/// Where the test PostgreSQL lives unless `TEST_DATABASE_URL` says otherwise.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Test schemas older than this are dropped by the next test that starts.
const STALE_AFTER_SECS: u64 = 3600;

/// Creates a new empty schema `t_<hex>` and returns a URL whose connections use it
/// (`options=-csearch_path%3D<schema>`). The hex is 8 digits of creation time (unix seconds)
/// then 16 random digits, so stale schemas of earlier runs can be recognised and dropped.
/// `None` when PostgreSQL is unreachable outside CI (the skip is printed); panics when it is
/// unreachable and `CI` is set.
pub async fn fresh_postgres_url() -> Option<String> {
    let base = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let client = match connect(&base).await {
        Ok(client) => client,
        Err(e) => {
            let e = error_chain(&e);
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL is required when CI is set, but {base} is unavailable: {e}");
            }
            eprintln!("SKIPPED (PostgreSQL unavailable at {base}): {e}");
            return None;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    drop_stale_schemas(&client, now).await;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("OS random number generator");
    let schema = format!("t_{:08x}{}", now as u32, hex::encode(random));
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create test schema {schema}: {e}"));
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{separator}options=-csearch_path%3D{schema}"))
}

/// Best-effort removal of test schemas created more than [`STALE_AFTER_SECS`] ago (by this
/// naming scheme); failures, e.g. a concurrent run dropping the same schema, are ignored.
async fn drop_stale_schemas(client: &tokio_postgres::Client, now: u64) {
    let Ok(rows) = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname ~ '^t_[0-9a-f]{24}$'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let created = u64::from_str_radix(&name[2..10], 16).unwrap_or(u64::MAX);
        if created.saturating_add(STALE_AFTER_SECS) < now {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .await;
        }
    }
}

/// Opens one connection (driving it on a background task), failing fast if nothing listens.
async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// An error and its sources joined with ": ", since tokio-postgres keeps the cause (such as
/// "Connection refused") out of its own message.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

//! The change feed: how an instance learns that data it keeps in memory (the spaces) was
//! changed by any process. The schema keeps one version per topic in `changes`, bumped by
//! triggers in the writer's transaction (`schema/*/V3__change_feed.sql`), so
//! [`super::Store::change_version`] is a cheap staleness check on both stores. On PostgreSQL
//! the trigger also sends `NOTIFY provisio_changes`, and this module's [`Listener`] turns those
//! notices into [`Change`]s on a broadcast channel ([`super::Store::change_feed`]).
//!
//! The listener holds one dedicated connection (not a pooled one: `LISTEN` belongs to a
//! session). When that connection breaks it reconnects with backoff; after every successful
//! (re)connect it sends [`Change::reload_all`], because notices sent while it was away are
//! lost. A subscriber therefore subscribes first, loads, and reloads on a notice for its topic
//! or for `*`, and on `RecvError::Lagged` (it fell more than [`CAPACITY`] notices behind).
//! Notices can still be lost without a reconnect being seen (a half-open socket until
//! keepalive finds it), which is why subscribers also compare versions periodically.

use super::Change;
use super::pg_tls::MakeRustlsConnect;
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, Notification};

/// The `NOTIFY` channel the V3 trigger announces on.
pub const CHANNEL: &str = "provisio_changes";

/// Notices a subscriber may fall behind by before it gets `Lagged` (and must reload).
pub const CAPACITY: usize = 256;

/// First pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Longest pause between reconnection attempts, so a database that comes back is listened to
/// again within it.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `application_name` of the listener's connection (unless the URL sets one), so operators can
/// tell it from pooled connections in `pg_stat_activity`.
const APPLICATION_NAME: &str = "provisio-changes";

/// The running listener of one PostgreSQL store; dropping it stops the task and closes its
/// connection.
pub struct Listener {
    /// Where notices are published (subscribers call `subscribe`).
    sender: broadcast::Sender<Change>,
    /// Backend process id of the live listening connection, 0 while disconnected.
    pid: Arc<AtomicI32>,
    /// The reconnecting loop (aborted on drop).
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Starts listening with `config` and `tls` (the store's own, so the same server, database,
    /// schema, timeouts and TLS verification) on the current runtime, and returns the listener with a first receiver
    /// subscribed before the task starts, so it sees the first `*` notice.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        mut config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
    ) -> (Listener, broadcast::Receiver<Change>) {
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        let (sender, first) = broadcast::channel(CAPACITY);
        let pid = Arc::new(AtomicI32::new(0));
        let task = runtime.spawn(run(config, tls, sender.clone(), pid.clone()));
        (Listener { sender, pid, task }, first)
    }

    /// A new receiver of the notices sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    /// Backend process id of the listening connection, `None` while (re)connecting: for
    /// operators' diagnostics and for tests that kill it (`pg_terminate_backend`).
    pub fn backend_pid(&self) -> Option<i32> {
        Some(self.pid.load(Ordering::Relaxed)).filter(|pid| *pid != 0)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Aborts a task when dropped, so the connection driver never outlives its listener.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Listens until aborted: connect, announce `*`, forward notices; on any failure wait (with
/// backoff) and start again.
async fn run(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    sender: broadcast::Sender<Change>,
    pid: Arc<AtomicI32>,
) {
    let mut pause = FIRST_BACKOFF;
    loop {
        let error = listen(&config, &tls, &sender, &pid, &mut pause).await;
        pid.store(0, Ordering::Relaxed);
        tracing::warn!(
            error = %error,
            retry_in_ms = pause.as_millis(),
            "change feed disconnected from PostgreSQL; cached data is checked by version meanwhile"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// One session: returns why it ended. Resets `pause` once the session is listening.
async fn listen(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    sender: &broadcast::Sender<Change>,
    pid: &AtomicI32,
    pause: &mut Duration,
) -> String {
    let (client, mut connection) = match config.connect(tls.clone()).await {
        Ok(pair) => pair,
        Err(e) => return format!("connect: {e}"),
    };
    // The connection must be polled for the client's statements to complete; the driver
    // forwards notifications and ends (closing the channel) when the connection does.
    let (notices, mut received) = mpsc::unbounded_channel::<Notification>();
    let driver = AbortOnDrop(tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notices.send(n).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "change feed connection ended");
                    break;
                }
            }
        }
    }));
    let schema = match client
        .query_one("SELECT current_schema(), pg_backend_pid()", &[])
        .await
    {
        Ok(row) => {
            let schema: Option<String> = row.get(0);
            pid.store(row.get(1), Ordering::Relaxed);
            schema
        }
        Err(e) => return format!("session: {e}"),
    };
    // Last statement of the session, so `pg_stat_activity.query` shows it.
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        return format!("LISTEN: {e}");
    }
    *pause = FIRST_BACKOFF;
    tracing::info!(schema = ?schema, "change feed listening");
    // Anything may have changed while nobody listened.
    let _ = sender.send(Change::reload_all());
    while let Some(notice) = received.recv().await {
        match parse(notice.payload()) {
            Some((change, from)) if schema.as_deref().is_none_or(|s| s == from) => {
                let _ = sender.send(change);
            }
            Some(_) => {} // another schema of the same database
            None => tracing::warn!(channel = CHANNEL, "malformed change notice ignored"),
        }
    }
    drop(driver);
    "connection closed".to_string()
}

/// Parses a trigger's payload `topic:version:schema` (the schema last: it may contain `:`).
fn parse(payload: &str) -> Option<(Change, &str)> {
    let mut parts = payload.splitn(3, ':');
    let topic = parts.next().filter(|t| !t.is_empty())?;
    let version = parts.next()?.parse().ok()?;
    let schema = parts.next()?;
    Some((
        Change {
            topic: topic.to_string(),
            version,
        },
        schema,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(
            parse("spaces:42:t_1:x"),
            Some((
                Change {
                    topic: "spaces".into(),
                    version: 42
                },
                "t_1:x"
            ))
        );
        assert_eq!(parse("spaces:x:public"), None);
        assert_eq!(parse(":1:public"), None);
        assert_eq!(parse("spaces:1"), None);
    }
}

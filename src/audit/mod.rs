//! The audit trail: one row per event an operator must be able to answer for (which phone
//! fetched which account's configuration, when and from where; which admin minted a token,
//! changed an account, a key or a space), in the database (`audit_events`, migration V4).
//!
//! Recording stays off the request path, as API-key uses do ([`crate::auth::usage`]): a
//! handler hands its event to the [`Sink`], a bounded in-memory queue, and a background
//! [`Writer`] inserts what has queued in one batch, at least every [`FLUSH_EVERY`] (sooner when
//! [`MAX_BATCH`] events wait), and a last time at shutdown. `/provisioning/me` therefore still
//! performs no write of its own. Events are never dropped: a full queue makes the handler wait
//! for room (backpressure), a failed batch stays in memory and is retried, and an event that
//! can still not be written (the writer stopped, the database down at shutdown) is logged at
//! error with its action.
//!
//! The command line writes its events directly ([`record_now`]). No event ever holds a secret:
//! no token, API key, password or HA1, only ids, domains and route templates.

pub mod cli;

use crate::model::{Account, iso_time, now_ms};
use crate::request::RequestInfo;
use crate::store::{AuditEvent, DynStore, Store};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The actions recorded, by name (the `action` column and the API's `action=` filter).
pub mod action {
    /// A provisioning document was served (any document route; the QR code is not one).
    pub const DOCUMENT_DELIVERED: &str = "document.delivered";
    /// A provisioning token was minted (API, CLI, account creation).
    pub const TOKEN_MINTED: &str = "token.minted";
    /// A document with `?reset_password` replaced the account's password.
    pub const PASSWORD_RESET: &str = "password.reset";
    /// The account's owner set a new password (`POST /api/accounts/me/password`).
    pub const PASSWORD_CHANGED: &str = "password.changed";
    /// An account was created.
    pub const ACCOUNT_CREATED: &str = "account.created";
    /// An account was changed (activated, deactivated, promoted, its dictionary edited).
    pub const ACCOUNT_UPDATED: &str = "account.updated";
    /// An account was blocked.
    pub const ACCOUNT_BLOCKED: &str = "account.blocked";
    /// An account was unblocked.
    pub const ACCOUNT_UNBLOCKED: &str = "account.unblocked";
    /// An account was deleted.
    pub const ACCOUNT_DELETED: &str = "account.deleted";
    /// An API key was issued (target: its id).
    pub const API_KEY_CREATED: &str = "api_key.created";
    /// An API key was revoked (target: its id).
    pub const API_KEY_REVOKED: &str = "api_key.revoked";
    /// A space was created (target: its domain).
    pub const SPACE_CREATED: &str = "space.created";
    /// A space's settings changed.
    pub const SPACE_UPDATED: &str = "space.updated";
    /// A space (and its accounts) was deleted.
    pub const SPACE_DELETED: &str = "space.deleted";
    /// A wizard link was made (`POST /api/wizard`, a provisioning e-mail; target: the account
    /// it provisions, else the space; detail: its app action).
    pub const WIZARD_CREATED: &str = "wizard.created";
    /// A wizard link was opened (single use; it mints a token when it names an account).
    pub const WIZARD_OPENED: &str = "wizard.opened";
    /// A provisioning e-mail was handed to the SMTP relay (outcome `failed` when the relay
    /// refused it or could not be reached; detail: why).
    pub const PROVISIONING_EMAIL_SENT: &str = "provisioning_email.sent";
    /// A hook script version was stored (target: the script's name; detail: its version).
    pub const HOOK_SAVED: &str = "hook.saved";
    /// A hook script was deleted (a tombstone version).
    pub const HOOK_DELETED: &str = "hook.deleted";
    /// An older version of a hook script was made live again as a new version.
    pub const HOOK_ROLLED_BACK: &str = "hook.rolled_back";
}

/// Outcome of an event that happened.
pub const OK: &str = "ok";

/// Longest an event waits in memory before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Most events written in one statement; a batch this full is written at once.
pub const MAX_BATCH: usize = 512;

/// Events the queue holds before handlers wait for room (a few seconds of a busy server).
pub const QUEUE_CAPACITY: usize = 8192;

/// Consecutive failed writes of one batch after which it is given up (each event logged at
/// error with its action), so one event the database refuses for good cannot stop the trail.
pub const MAX_ATTEMPTS: u32 = 30;

/// Longest user agent kept, in characters (a client chooses it).
const MAX_USER_AGENT_CHARS: usize = 256;

/// Metric: audit events written, by outcome (`ok`, `failed`: a batch failed and is retried;
/// `lost`: could not be written at shutdown).
pub const WRITTEN_METRIC: &str = "provisio_audit_events_total";

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An authenticated account (an admin on the API, an owner on its own routes or `/me`).
    Account {
        /// Its id.
        id: i64,
        /// `user@domain`.
        label: String,
    },
    /// The `provisio` command line (whoever can read the database).
    Cli,
    /// A client without an identity of its own (a token or an anonymous document fetch).
    Anonymous,
}

impl Actor {
    /// The account `a` acting.
    pub fn account(a: &Account) -> Actor {
        Actor::Account {
            id: a.id,
            label: format!("{}@{}", a.username, a.domain),
        }
    }
}

/// A new event by `actor` at the wall-clock time, outcome [`OK`]; fill in the rest with the
/// builder methods.
pub fn event(actor: &Actor, action: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        at: now_ms(),
        action: action.to_string(),
        outcome: OK.to_string(),
        ..AuditEvent::default()
    }
    .by(actor)
}

impl AuditEvent {
    /// Sets who acted.
    pub fn by(mut self, actor: &Actor) -> AuditEvent {
        let (kind, id, label) = match actor {
            Actor::Account { id, label } => ("account", Some(*id), label.clone()),
            Actor::Cli => ("cli", None, "cli".to_string()),
            Actor::Anonymous => ("anonymous", None, "anonymous".to_string()),
        };
        self.actor_kind = kind.to_string();
        self.actor_account_id = id;
        self.actor_label = label;
        self
    }

    /// About this account: its id is the target and the subject, its domain the space.
    pub fn about(mut self, account: &Account) -> AuditEvent {
        self.target = Some(account.id.to_string());
        self.account_id = Some(account.id);
        self.space = Some(account.domain.clone());
        self
    }

    /// Sets the target (a key id, a space domain).
    pub fn target(mut self, target: impl Into<String>) -> AuditEvent {
        self.target = Some(target.into());
        self
    }

    /// Sets the space the event belongs to.
    pub fn space(mut self, domain: impl Into<String>) -> AuditEvent {
        self.space = Some(domain.into());
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> AuditEvent {
        self.detail = Some(detail.into());
        self
    }

    /// The client address (after trusted proxies) and User-Agent of the request.
    pub fn from_request(mut self, request: &RequestInfo) -> AuditEvent {
        self.client_ip = request.client_ip.map(|ip| ip.to_string());
        let ua = request.user_agent();
        self.user_agent = (!ua.is_empty()).then(|| ua.chars().take(MAX_USER_AGENT_CHARS).collect());
        self
    }
}

/// An event as the API and `provisio audit --json` show it.
pub fn json(e: &AuditEvent) -> Value {
    json!({
        "id": e.id,
        "at": iso_time(e.at),
        "actor": e.actor_label,
        "actor_kind": e.actor_kind,
        "actor_account_id": e.actor_account_id,
        "action": e.action,
        "target": e.target,
        "account_id": e.account_id,
        "space": e.space,
        "client_ip": e.client_ip,
        "user_agent": e.user_agent,
        "outcome": e.outcome,
        "detail": e.detail,
    })
}

/// Writes events at once, for the command line (no server, no queue). A failure is logged at
/// error: the change itself is done, and the operator must learn that its record is missing.
pub async fn record_now(store: &dyn Store, events: &[AuditEvent]) {
    if let Err(e) = store.record_audit_events(events).await {
        metrics::counter!(WRITTEN_METRIC, "outcome" => "lost").increment(events.len() as u64);
        for event in events {
            tracing::error!(error = %e, action = %event.action, target = event.target.as_deref(), "audit event not written");
        }
    }
}

/// Records a command-line event at once: about `account` when given, else targeting the space
/// `domain`. One call per command that changes something, so the CLI's record is one line.
pub async fn record_cli(store: &DynStore, action: &str, account: Option<&Account>, domain: &str) {
    let event = event(&Actor::Cli, action);
    let event = match account {
        Some(a) => event.about(a),
        None => event.target(domain).space(domain),
    };
    record_now(store.as_ref(), &[event]).await;
}

/// Where handlers put their events: the sending half of the queue, cheap to clone.
#[derive(Clone)]
pub struct Sink {
    /// The queue.
    tx: mpsc::Sender<AuditEvent>,
    /// The receiving half until a [`Writer`] takes it.
    rx: Arc<Mutex<Option<mpsc::Receiver<AuditEvent>>>>,
}

impl Default for Sink {
    fn default() -> Self {
        Sink::new(QUEUE_CAPACITY)
    }
}

impl Sink {
    /// A queue of `capacity` events, with no writer yet.
    pub fn new(capacity: usize) -> Sink {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Sink {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }

    /// Queues an event; waits for room when the queue is full (never drops it). Logged at
    /// error when no writer will ever take it (the server stopped).
    pub async fn record(&self, event: AuditEvent) {
        if let Err(mpsc::error::SendError(event)) = self.tx.send(event).await {
            metrics::counter!(WRITTEN_METRIC, "outcome" => "lost").increment(1);
            tracing::error!(action = %event.action, target = event.target.as_deref(), "audit event not written: the audit writer has stopped");
        }
    }

    /// Takes the receiving half (once).
    fn take_receiver(&self) -> Option<mpsc::Receiver<AuditEvent>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The background task writing the queue; [`Writer::stop`] writes what is left.
pub struct Writer {
    /// Tells the task to drain and stop.
    stop: Option<oneshot::Sender<()>>,
    /// The task.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    /// Starts writing `sink`'s events to `store`. `None` when another writer already took the
    /// queue (one writer per state).
    pub fn start(sink: &Sink, store: DynStore) -> Option<Writer> {
        let rx = sink.take_receiver()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(rx, store, stopped));
        Some(Writer {
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops taking new events, writes every queued one, and returns when done (graceful
    /// shutdown, after the requests in flight ended).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The writer's loop: gather a batch (until [`MAX_BATCH`] events or [`FLUSH_EVERY`] after its
/// first one), write it, repeat; on stop, close the queue and write everything in it.
async fn run(mut rx: mpsc::Receiver<AuditEvent>, store: DynStore, mut stop: oneshot::Receiver<()>) {
    let mut batch: Vec<AuditEvent> = Vec::new();
    let mut stopping = false;
    let mut failures = 0_u32;
    while !stopping {
        if batch.is_empty() {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                n = rx.recv_many(&mut batch, MAX_BATCH) => if n == 0 { break },
            }
        }
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                biased;
                _ = &mut stop => { stopping = true; break }
                _ = tokio::time::sleep_until(deadline) => break,
                n = rx.recv_many(&mut batch, room) => if n == 0 { break },
            }
        }
        if write(store.as_ref(), &mut batch).await {
            failures = 0;
        } else {
            failures += 1;
            if failures >= MAX_ATTEMPTS {
                give_up(
                    &mut batch,
                    "audit event given up after repeated write failures",
                );
                failures = 0;
                continue;
            }
            // Kept for the next round; give the database a moment.
            tokio::select! {
                _ = &mut stop => stopping = true,
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
            }
        }
    }
    rx.close();
    while let Some(event) = rx.recv().await {
        batch.push(event);
    }
    while !batch.is_empty() {
        let rest = batch.split_off(batch.len().min(MAX_BATCH));
        let mut head = std::mem::replace(&mut batch, rest);
        if !write(store.as_ref(), &mut head).await {
            head.append(&mut batch);
            give_up(
                &mut head,
                "audit event lost at shutdown: the database refused it",
            );
            return;
        }
    }
}

/// Logs every event of `batch` at error (action and target: never a secret), counts them as
/// lost and empties it.
fn give_up(batch: &mut Vec<AuditEvent>, why: &'static str) {
    metrics::counter!(WRITTEN_METRIC, "outcome" => "lost").increment(batch.len() as u64);
    for event in batch.drain(..) {
        tracing::error!(action = %event.action, target = event.target.as_deref(), at = event.at, "{why}");
    }
}

/// Writes `batch` and empties it; on failure logs, keeps it and returns false.
async fn write(store: &dyn Store, batch: &mut Vec<AuditEvent>) -> bool {
    if batch.is_empty() {
        return true;
    }
    match store.record_audit_events(batch).await {
        Ok(()) => {
            metrics::counter!(WRITTEN_METRIC, "outcome" => "ok").increment(batch.len() as u64);
            batch.clear();
            true
        }
        Err(e) => {
            metrics::counter!(WRITTEN_METRIC, "outcome" => "failed").increment(batch.len() as u64);
            tracing::warn!(error = %e, events = batch.len(), "audit events not written; retrying");
            false
        }
    }
}

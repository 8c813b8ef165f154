//! PostgreSQL faults under a real server, over HTTP, in a test binary of their own (nothing
//! else competes with the restarts; the tests here run one at a time):
//!
//! * a commit whose acknowledgement is lost, and a commit request that never reaches the
//!   server, made exact by a TCP proxy between provisio and PostgreSQL that cuts the connection
//!   at that message of the consume (one statement, committed at its `Sync`): the request
//!   settles the outcome and serves the document either way;
//! * a private PostgreSQL cluster (tests/common/pg_cluster.rs) stopped with `-m fast` and then
//!   `-m immediate` while 2,000 distinct tokens are being fetched by clients that retry on 5xx
//!   and on connection errors: every token gets exactly one 200 (none burned without one, none
//!   answered twice), `/readyz` is 503 during the outage and 200 within 5 s after PostgreSQL
//!   is back, and so are documents.

mod common;

use common::pg;
use common::pg_cluster::{PgCluster, StopMode};
use common::server::independent_ha1;
use metrics_exporter_prometheus::PrometheusHandle;
use provisio::app::{self, Running};
use provisio::config::Settings;
use provisio::model::{Algorithm, Space, now_ms};
use provisio::secret::{hash_password, hash_secret};
use provisio::state::AppState;
use provisio::store::{DynStore, NewAccount};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The tests of this binary run one after the other: the restart test's bounds are about
/// PostgreSQL coming back, not about sharing two cores with another load.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process-wide Prometheus recorder (a process may install only one).
fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("install the Prometheus recorder")
        })
        .clone()
}

/// A provisio server on `database`, with metrics.
async fn server(database: String, pool_size: usize) -> (AppState, Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let hooks = dir.path().join("hooks");
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("data"),
        database,
        pool_size,
        ..Settings::default()
    };
    settings.hooks.dir = hooks;
    settings.hooks.watch = false;
    // Thousands of expected 404s (re-fetching spent tokens) from one address: the guessing
    // limit is not under test here.
    settings.rate_limit.failures_per_minute = 0;
    let mut state = app::build_state(settings, false)
        .await
        .expect("build state");
    state.metrics = Some(metrics());
    let running = app::spawn(state.clone(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("spawn server");
    (state, running, dir)
}

/// The value of `provisio_consume_settled_total{outcome=...}` in a Prometheus text page.
fn settled(page: &str, outcome: &str) -> u64 {
    let needle = format!("provisio_consume_settled_total{{outcome=\"{outcome}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().expect("counter value"))
}

/// Creates `count` accounts `u{i}@{domain}` (password `pw{i}`), `concurrency` at a time.
async fn accounts(store: &DynStore, space: &Space, count: usize) -> Vec<i64> {
    let mut ids = vec![0; count];
    let mut set = tokio::task::JoinSet::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(count.div_ceil(16)) {
        let (store, space, chunk) = (store.clone(), space.clone(), chunk.to_vec());
        set.spawn(async move {
            let mut out = Vec::new();
            for i in chunk {
                let username = format!("u{i}");
                let new = NewAccount {
                    passwords: vec![hash_password(
                        space.password_algorithm,
                        &username,
                        &space.realm,
                        &format!("pw{i}"),
                    )],
                    username,
                    domain: space.domain.clone(),
                    ..Default::default()
                };
                let account = store.create_account(&new, now_ms()).await.expect("account");
                out.push((i, account.id));
            }
            out
        });
    }
    for (i, id) in set.join_all().await.into_iter().flatten() {
        ids[i] = id;
    }
    ids
}

/// Mints one token per account (clear values, in account order).
async fn tokens(store: &DynStore, ids: &[i64]) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for (n, chunk) in ids.chunks(ids.len().div_ceil(16)).enumerate() {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        set.spawn(async move {
            let mut out = Vec::new();
            for id in chunk {
                let account = store.account(id).await.expect("read").expect("account");
                out.push(
                    provisio::tokens::mint_provisioning_token(store.as_ref(), &account)
                        .await
                        .expect("mint")
                        .token,
                );
            }
            (n, out)
        });
    }
    let mut chunks = set.join_all().await;
    chunks.sort_by_key(|(n, _)| *n);
    chunks.into_iter().flat_map(|(_, t)| t).collect()
}

// ---- a TCP proxy that cuts a connection at a chosen protocol message ------------------------

/// Where the proxy cuts the connection, once, in the consume: one statement (the store's
/// `CONSUME_PROVISIONING_TOKEN`) run in an implicit transaction, which the server commits when
/// it reads the `Sync` that follows the statement's `Bind`/`Execute`, and acknowledges with
/// `ReadyForQuery` after the result rows and `CommandComplete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Forward the statement and its `Sync`, hold back the server's answer (rows,
    /// `CommandComplete`) and drop it with the `ReadyForQuery` that follows the commit: the
    /// transaction committed, provisio never hears it.
    CommitAcknowledgement,
    /// Forward the statement, drop its `Sync`: the server ran it inside the implicit
    /// transaction, sees the connection die before the commit and rolls it back.
    CommitRequest,
}

/// What a relay knows about the consume on its connection.
#[derive(Default)]
struct Consume {
    /// Names of the prepared statements that are the consume (`Parse` of its SQL).
    statements: Mutex<std::collections::HashSet<String>>,
    /// A consume was bound and the server has not said `ReadyForQuery` since.
    running: AtomicBool,
}

/// What a pump does with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Pass it on.
    Forward,
    /// Keep it back (an answer the armed cut will drop).
    Withhold,
    /// Cut the connection here: drop it, what is withheld, and both sockets.
    Cut,
}

/// `url` with `sslmode=disable`: the proxy reads the protocol's messages, so it needs them in
/// clear (without it provisio would try TLS first, as libpq's default `prefer` does).
fn without_tls(url: String) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode=disable")
}

/// A proxy in front of PostgreSQL; `arm` makes it cut the next matching connection once.
struct Proxy {
    /// Where provisio connects.
    addr: SocketAddr,
    /// What every relay shares.
    shared: Arc<Shared>,
}

/// State shared by the proxy's relays.
struct Shared {
    /// The pending cut, if armed.
    armed: Mutex<Option<Cut>>,
    /// Cuts performed.
    fired: AtomicUsize,
    /// Delay of the server's messages on their way back (a wire of some length). When the
    /// server goes away, what is still on the wire is lost with the connection, as when a
    /// database host dies with acknowledgements in flight.
    latency: Duration,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `upstream`.
    async fn start(upstream: SocketAddr, latency: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            armed: Mutex::new(None),
            fired: AtomicUsize::new(0),
            latency,
        });
        let relays = shared.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // Refused while PostgreSQL is down: the client sees its connection closed.
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, relays.clone()));
            }
        });
        Proxy { addr, shared }
    }

    /// Cuts the next transaction that updates rows and commits, at `cut`.
    fn arm(&self, cut: Cut) {
        *self.shared.armed.lock().expect("lock") = Some(cut);
    }

    /// Cuts performed so far.
    fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }
}

/// Relays one connection both ways, message by message, until either side closes or a cut
/// fires; then both sockets are dropped, with whatever was still on the wire.
async fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    // Small protocol messages must not wait for Nagle's algorithm.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let consume = Arc::new(Consume::default());
    let mut pumps = tokio::task::JoinSet::new();
    pumps.spawn(pump(
        client_read,
        Wire::new(server_write, Duration::ZERO),
        Direction::ToServer,
        consume.clone(),
        shared.clone(),
    ));
    pumps.spawn(pump(
        server_read,
        Wire::new(client_write, shared.latency),
        Direction::ToClient,
        consume,
        shared,
    ));
    let _ = pumps.join_next().await;
    pumps.abort_all();
}

/// The outgoing side of a relay: written at once, or after a latency by a task that dies
/// with the wire (dropping what it still holds).
enum Wire {
    /// No latency: messages are written in order, at once.
    Direct(OwnedWriteHalf),
    /// Messages stamped on entry, written `latency` later, in order.
    Delayed {
        /// Feeds the writer task.
        queue: tokio::sync::mpsc::UnboundedSender<(Instant, Vec<u8>)>,
        /// The writer task, aborted when the wire is dropped.
        writer: tokio::task::JoinHandle<()>,
    },
}

impl Wire {
    /// A wire to `to` with `latency`.
    fn new(mut to: OwnedWriteHalf, latency: Duration) -> Wire {
        if latency.is_zero() {
            return Wire::Direct(to);
        }
        let (queue, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let writer = tokio::spawn(async move {
            while let Some((at, message)) = rx.recv().await {
                tokio::time::sleep_until((at + latency).into()).await;
                if to.write_all(&message).await.is_err() {
                    return;
                }
            }
        });
        Wire::Delayed { queue, writer }
    }

    /// Sends one message; false when the other side is gone.
    async fn send(&mut self, message: Vec<u8>) -> bool {
        match self {
            Wire::Direct(to) => to.write_all(&message).await.is_ok(),
            Wire::Delayed { queue, .. } => queue.send((Instant::now(), message)).is_ok(),
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        if let Wire::Delayed { writer, .. } = self {
            writer.abort();
        }
    }
}

/// Which way a pump forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// provisio → PostgreSQL (the first message is the untyped startup packet).
    ToServer,
    /// PostgreSQL → provisio.
    ToClient,
}

/// Forwards whole protocol messages (type byte, 4-byte length, body) from `from` to `to`,
/// performing an armed cut when its message passes.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: Wire,
    direction: Direction,
    consume: Arc<Consume>,
    shared: Arc<Shared>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut withheld: Vec<Vec<u8>> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut startup = direction == Direction::ToServer;
    loop {
        // Forward every complete message in the buffer.
        loop {
            let header = if startup { 4 } else { 5 };
            if buf.len() < header {
                break;
            }
            let len_at = header - 4;
            let len = u32::from_be_bytes(buf[len_at..header].try_into().expect("4 bytes")) as usize;
            let total = len_at + len;
            if buf.len() < total {
                break;
            }
            let message: Vec<u8> = buf.drain(..total).collect();
            if startup {
                startup = false;
            } else {
                match cut_here(direction, &message, &consume, &shared.armed) {
                    Action::Forward => {}
                    Action::Withhold => {
                        withheld.push(message);
                        continue;
                    }
                    Action::Cut => {
                        shared.fired.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
            for held in withheld.drain(..) {
                if !to.send(held).await {
                    return;
                }
            }
            if !to.send(message).await {
                return;
            }
        }
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Tracks the consume from `message` and says what to do with the message.
fn cut_here(
    direction: Direction,
    message: &[u8],
    consume: &Consume,
    armed: &Mutex<Option<Cut>>,
) -> Action {
    let body = &message[5..];
    // The NUL-terminated strings at the start of a body.
    let strings = |b: &[u8]| -> Vec<String> {
        b.split(|c| *c == 0)
            .take(2)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    let is_armed = |cut: Cut| *armed.lock().expect("lock") == Some(cut);
    let fire = |cut: Cut| {
        let mut armed = armed.lock().expect("lock");
        let fires = *armed == Some(cut);
        if fires {
            *armed = None;
        }
        fires
    };
    let running = consume.running.load(Ordering::SeqCst);
    match (direction, message[0]) {
        // Parse: statement name, then its SQL.
        (Direction::ToServer, b'P') => {
            let parts = strings(body);
            if parts.len() == 2 && parts[1].contains("UPDATE provisioning_tokens SET used_at") {
                consume
                    .statements
                    .lock()
                    .expect("lock")
                    .insert(parts[0].clone());
            }
            Action::Forward
        }
        // Bind: portal name, then statement name.
        (Direction::ToServer, b'B') => {
            let parts = strings(body);
            if parts.len() == 2 && consume.statements.lock().expect("lock").contains(&parts[1]) {
                consume.running.store(true, Ordering::SeqCst);
            }
            Action::Forward
        }
        (Direction::ToServer, b'S') if running && fire(Cut::CommitRequest) => Action::Cut,
        (Direction::ToClient, b'Z') if running => {
            consume.running.store(false, Ordering::SeqCst);
            if fire(Cut::CommitAcknowledgement) {
                Action::Cut
            } else {
                Action::Forward
            }
        }
        (Direction::ToClient, _) if running && is_armed(Cut::CommitAcknowledgement) => {
            Action::Withhold
        }
        _ => Action::Forward,
    }
}

/// The `host:port` a TCP PostgreSQL URL names, and its resolved address.
async fn upstream_of(url: &str) -> (String, SocketAddr) {
    let config: tokio_postgres::Config = url.parse().expect("PostgreSQL URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        other => panic!("the proxy test needs a TCP PostgreSQL URL, got {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let target = format!("{host}:{port}");
    assert!(url.contains(&target), "{url} does not name {target}");
    let addr = tokio::net::lookup_host(&target)
        .await
        .expect("resolve PostgreSQL host")
        .next()
        .expect("an address");
    (target, addr)
}

/// A commit whose acknowledgement is lost, and a `COMMIT` that never arrives: each request is
/// answered 200 with the account's document exactly once, and the token is then spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_commit_acknowledgement_still_serves_the_document() {
    let _serial = SERIAL.lock().await;
    let Some(url) = pg::fresh_postgres_url().await else {
        return;
    };
    // Migrate directly, so the proxy only sees the server's own traffic.
    provisio::store::open(&url, 1)
        .await
        .expect("open")
        .migrate()
        .await
        .expect("migrate");
    let (target, upstream) = upstream_of(&url).await;
    let proxy = Proxy::start(upstream, Duration::ZERO).await;
    let proxied_url = without_tls(url.replacen(&target, &proxy.addr.to_string(), 1));
    let (state, running, _dir) = server(proxied_url, 4).await;
    let base = format!("http://{}", running.addr);
    let store = state.store.clone();
    let space = store
        .create_space(&Space::new("cut.example", "cut.example"))
        .await
        .expect("space");
    let client = reqwest::Client::new();
    let before = metrics().render();

    for (n, cut) in [Cut::CommitAcknowledgement, Cut::CommitRequest]
        .into_iter()
        .enumerate()
    {
        let ids = accounts_named(&store, &space, &format!("cut{n}")).await;
        let token = tokens(&store, &[ids]).await.remove(0);
        proxy.arm(cut);
        let fired = proxy.fired();
        let r = client
            .get(format!("{base}/provisioning/{token}"))
            .header("host", "cut.example")
            .header("x-linphone-provisioning", "1")
            .send()
            .await
            .expect("request");
        assert_eq!(
            proxy.fired(),
            fired + 1,
            "{cut:?}: the proxy cut the consume's connection"
        );
        assert_eq!(r.status(), 200, "{cut:?}: the request that won is served");
        let xml = r.text().await.expect("body");
        let ha1 = independent_ha1(
            Algorithm::Sha256,
            &format!("cut{n}"),
            "cut.example",
            &format!("pw-cut{n}"),
        );
        assert!(
            xml.contains(&ha1),
            "{cut:?}: the account's own document: {xml}"
        );
        let state = store
            .provisioning_token(&hash_secret(&token))
            .await
            .expect("read")
            .expect("token");
        assert!(state.used, "{cut:?}: spent once");
        let again = client
            .get(format!("{base}/provisioning/{token}"))
            .header("host", "cut.example")
            .header("x-linphone-provisioning", "1")
            .send()
            .await
            .expect("request");
        assert_eq!(again.status(), 404, "{cut:?}: never served twice");
    }
    let after = metrics().render();
    assert!(
        settled(&after, "won") >= settled(&before, "won") + 2,
        "both requests settled as winners:\n{after}"
    );
    running.stop().await.expect("stop");
}

/// One account `username@space` with password `pw-{username}`; returns its id.
async fn accounts_named(store: &DynStore, space: &Space, username: &str) -> i64 {
    let new = NewAccount {
        username: username.to_string(),
        domain: space.domain.clone(),
        passwords: vec![hash_password(
            space.password_algorithm,
            username,
            &space.realm,
            &format!("pw-{username}"),
        )],
        ..Default::default()
    };
    store
        .create_account(&new, now_ms())
        .await
        .expect("account")
        .id
}

// ---- PostgreSQL restarted under load -----------------------------------------------------------

/// Tokens per restart.
const TOKENS: usize = 2_000;
/// Concurrent clients.
const CLIENTS: usize = 32;
/// The outage is started once this many tokens have been served.
const STOP_AFTER: usize = 500;
/// How long PostgreSQL stays down.
const OUTAGE: Duration = Duration::from_millis(1500);
/// Delay of PostgreSQL's answers on their way back to provisio.
const WIRE_LATENCY: Duration = Duration::from_millis(5);
/// The bound on recovery once PostgreSQL is back.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// What the clients saw while fetching every token.
#[derive(Default)]
struct Tally {
    /// Tokens answered 200 with a document.
    served: AtomicUsize,
    /// Tokens answered 4xx before any 200: burned without a document.
    burned: Mutex<Vec<(usize, u16)>>,
    /// Retries after a 5xx.
    retries_5xx: AtomicUsize,
    /// Retries after a connection error.
    retries_connection: AtomicUsize,
    /// When each 200 arrived.
    served_at: Mutex<Vec<Instant>>,
}

/// Fetches every token once with `CLIENTS` clients that retry on 5xx and connection errors.
async fn fetch_all(base: String, host: &'static str, tokens: Arc<Vec<String>>, tally: Arc<Tally>) {
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (next, tokens, tally, client) =
            (next.clone(), tokens.clone(), tally.clone(), client.clone());
        let base = base.clone();
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(token) = tokens.get(i) else { break };
                let url = format!("{base}/provisioning/{token}");
                loop {
                    let r = client
                        .get(&url)
                        .header("host", host)
                        .header("x-linphone-provisioning", "1")
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let body = r.text().await.expect("document body");
                            assert!(body.contains("<config"), "a document: {body}");
                            tally.served_at.lock().expect("lock").push(Instant::now());
                            tally.served.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Ok(r) if r.status().is_server_error() => {
                            tally.retries_5xx.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => {
                            tally
                                .burned
                                .lock()
                                .expect("lock")
                                .push((i, r.status().as_u16()));
                            break;
                        }
                        Err(_) => {
                            tally.retries_connection.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }
    set.join_all().await;
}

/// GET `/readyz`: its status, or 0 when the request itself failed.
async fn readyz(client: &reqwest::Client, base: &str) -> u16 {
    match client.get(format!("{base}/readyz")).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// PostgreSQL stopped with `-m fast`, then crashed with `-m immediate`, each time while 2,000
/// distinct tokens are being fetched: every token gets exactly one 200, `/readyz` says 503
/// while PostgreSQL is away, and readiness and documents are back within 5 s of its return.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarts_lose_and_duplicate_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let cluster = Arc::new(cluster);
    // provisio reaches the cluster over a "wire" with some latency back, so acknowledgements
    // in flight when PostgreSQL dies are lost (commits whose outcome provisio must settle).
    let (target, upstream) = upstream_of(&cluster.url()).await;
    let wire = Proxy::start(upstream, WIRE_LATENCY).await;
    let (state, running, _dir) = server(
        without_tls(cluster.url().replacen(&target, &wire.addr.to_string(), 1)),
        16,
    )
    .await;
    let base = format!("http://{}", running.addr);
    drop(state);
    // Set-up goes straight to the cluster, not over the slow wire.
    let store = provisio::store::open(&cluster.url(), 16)
        .await
        .expect("open the cluster");
    let host = "restart.example";
    let space = store
        .create_space(&Space::new(host, host))
        .await
        .expect("space");
    let started = Instant::now();
    let ids = accounts(&store, &space, TOKENS).await;
    eprintln!("{TOKENS} accounts in {:?}", started.elapsed());
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    for mode in [StopMode::Fast, StopMode::Immediate] {
        let tokens = Arc::new(tokens(&store, &ids).await);
        let tally = Arc::new(Tally::default());
        let before = metrics().render();
        let round = Instant::now();
        let load = tokio::spawn(fetch_all(base.clone(), host, tokens.clone(), tally.clone()));

        while tally.served.load(Ordering::SeqCst) < STOP_AFTER {
            assert!(round.elapsed() < Duration::from_secs(120), "load too slow");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.stop_server(mode))
            .await
            .expect("stop");
        let down = Instant::now();
        let served_at_stop = tally.served.load(Ordering::SeqCst);
        let mut outage_probes = Vec::new();
        while down.elapsed() < OUTAGE {
            outage_probes.push(readyz(&probe, &base).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.start_server())
            .await
            .expect("start");
        let back = Instant::now();
        let outage = back - down;
        let ready_after = loop {
            if readyz(&probe, &base).await == 200 {
                break back.elapsed();
            }
            assert!(
                back.elapsed() < RECOVERY_BOUND,
                "{mode:?}: /readyz not 200 within {RECOVERY_BOUND:?} of PostgreSQL's return"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        load.await.expect("load");
        let elapsed = round.elapsed();
        let first_document_after = tally
            .served_at
            .lock()
            .expect("lock")
            .iter()
            .filter(|t| **t >= back)
            .min()
            .map(|t| *t - back);
        let after = metrics().render();
        let (won, lost, failed) = (
            settled(&after, "won") - settled(&before, "won"),
            settled(&after, "lost") - settled(&before, "lost"),
            settled(&after, "failed") - settled(&before, "failed"),
        );
        eprintln!(
            "-m {}: {TOKENS} tokens in {elapsed:?}; outage {outage:?} after {served_at_stop} served; \
             retries: {} after 5xx, {} after connection errors; ambiguous consumes settled: \
             {won} won, {lost} lost, {failed} failed; /readyz during outage {outage_probes:?}; \
             ready {ready_after:?} and first document {first_document_after:?} after PostgreSQL was back",
            mode.as_arg(),
            tally.retries_5xx.load(Ordering::SeqCst),
            tally.retries_connection.load(Ordering::SeqCst),
        );

        let burned = tally.burned.lock().expect("lock").clone();
        assert!(
            burned.is_empty(),
            "{mode:?}: tokens burned without a 200: {burned:?}"
        );
        assert_eq!(
            tally.served.load(Ordering::SeqCst),
            TOKENS,
            "{mode:?}: every token served"
        );
        assert!(
            !outage_probes.is_empty() && outage_probes.iter().all(|s| *s == 503),
            "{mode:?}: /readyz during the outage: {outage_probes:?}"
        );
        assert!(
            served_at_stop < TOKENS,
            "{mode:?}: the outage happened under load"
        );
        let first = first_document_after.expect("documents served after the restart");
        assert!(
            first < RECOVERY_BOUND,
            "{mode:?}: first document {first:?} after PostgreSQL was back"
        );
        assert_eq!(failed, 0, "{mode:?}: no consume outcome left unknown");

        // No token answers 200 twice, and each is spent by exactly one request.
        let again = Arc::new(Tally::default());
        fetch_all(base.clone(), host, tokens.clone(), again.clone()).await;
        assert_eq!(
            again.served.load(Ordering::SeqCst),
            0,
            "{mode:?}: a token served twice"
        );
        assert_eq!(again.burned.lock().expect("lock").len(), TOKENS);
        assert!(
            again
                .burned
                .lock()
                .expect("lock")
                .iter()
                .all(|(_, status)| *status == 404)
        );
        let hashes: Vec<Vec<u8>> = tokens.iter().map(|t| hash_secret(t)).collect();
        let spent = spent_by_one_request(&cluster.url(), &hashes).await;
        assert_eq!(
            spent, TOKENS as i64,
            "{mode:?}: each token spent, with its winner recorded"
        );
    }
    running.stop().await.expect("stop");
}

/// How many of these tokens are used with the winning request's id recorded, read with a
/// connection of our own.
async fn spent_by_one_request(url: &str, hashes: &[Vec<u8>]) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .query_one(
            "SELECT count(*) FROM provisioning_tokens WHERE token_hash = ANY($1) \
             AND used_at IS NOT NULL AND used_by IS NOT NULL",
            &[&hashes],
        )
        .await
        .expect("count")
        .get(0)
}

/// Every pooled connection's backend killed (`pg_terminate_backend`, as a crash or an
/// operator would): each dead connection fails at most one operation (none is handed out
/// twice as healthy), and the pool then serves again on fresh connections by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_pool_connections_are_replaced() {
    let _serial = SERIAL.lock().await;
    let Some(url) = pg::fresh_postgres_url().await else {
        return;
    };
    const POOL: usize = 4;
    let mut tag = [0u8; 8];
    getrandom::fill(&mut tag).expect("random");
    let name = format!("provisio-pool-{}", hex::encode(tag));
    let store = provisio::store::open(&format!("{url}&application_name={name}"), POOL)
        .await
        .expect("open");
    // Fill the pool: POOL operations at once hold POOL connections.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..POOL {
        let store = store.clone();
        set.spawn(async move { store.migrate().await.expect("migrate") });
    }
    set.join_all().await;

    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(killed, POOL as i64, "the pool held {POOL} connections");

    let mut failures = 0;
    for _ in 0..3 * POOL {
        if store.ping().await.is_err() {
            failures += 1;
        }
    }
    assert!(
        failures <= POOL,
        "{failures} failed pings: a dead connection was handed out more than once"
    );
    for _ in 0..POOL {
        store.ping().await.expect("the pool recovered on its own");
    }
    eprintln!("{killed} backends killed; {failures} operations failed on them afterwards");
}

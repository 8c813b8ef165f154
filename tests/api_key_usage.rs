//! API-key uses are batched off the request path (`provisio::auth::usage`): authenticating by
//! key reads and writes nothing, yet idle expiry stays exact for the instance that saw the
//! uses, the uses reach the store at the flush and at shutdown, and housekeeping never deletes
//! a key on a last use it has not written yet. On both stores, against the real databases.

mod common;

use common::server::{Backend, TestApp};
use provisio::auth::usage::KeyUses;
use provisio::config::Settings;
use provisio::housekeeping;
use provisio::model::{Space, now_ms};
use provisio::secret::{hash_secret, new_token};
use provisio::store::{DynStore, NewAccount, NewApiKey};

/// A fixed "now" for the time-travel tests, in unix milliseconds.
const T0: i64 = 1_700_000_000_000;
/// One minute in milliseconds.
const MINUTE: i64 = 60_000;

/// Creates a space, an account and a user key (last used at `at`); returns (key id, clear key).
async fn user_key(store: &DynStore, username: &str, at: i64) -> (i64, String) {
    if store.space_by_domain("k.example").await.unwrap().is_none() {
        store
            .create_space(&Space::new("k.example", "k.example"))
            .await
            .unwrap();
    }
    let account = store
        .create_account(
            &NewAccount {
                username: username.into(),
                domain: "k.example".into(),
                ..NewAccount::default()
            },
            at,
        )
        .await
        .unwrap();
    let clear = new_token();
    let id = store
        .create_api_key(
            &NewApiKey {
                account_id: account.id,
                key_hash: hash_secret(&clear),
                name: None,
                ip: None,
                expires_after_minutes: None,
            },
            at,
        )
        .await
        .unwrap();
    (id, clear)
}

/// (last_used_at, requests) as stored.
async fn stored(store: &DynStore, clear: &str) -> Option<(i64, i64)> {
    store
        .api_key_identity(&hash_secret(clear))
        .await
        .unwrap()
        .map(|(k, _)| (k.last_used_at, k.requests))
}

/// Runs a body against a fresh store of each backend (through a started server's state, so
/// the store is configured as in production).
macro_rules! on_both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app = TestApp::start(Backend::Sqlite).await.expect("sqlite");
                ($body)(app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(app) = TestApp::start(Backend::Postgres).await {
                    ($body)(app).await;
                }
            }
        }
    };
}

on_both_stores!(
    idle_key_refused_although_uses_are_batched,
    |app: TestApp| async move {
        let store = app.state.store.clone();
        let ttl = 60;
        let (id, key) = user_key(&store, "ann", T0).await;
        let hash = hash_secret(&key);
        let uses = KeyUses::new();

        // Used within its lifetime: accepted, recorded in memory only.
        let at = T0 + 50 * MINUTE;
        assert!(
            uses.authenticate(store.as_ref(), &hash, None, at, ttl)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            stored(&store, &key).await,
            Some((T0, 0)),
            "nothing written yet"
        );
        assert_eq!(uses.last_use(id), Some(at));

        // Past the stored last use + TTL, but not past the pending one: still alive.
        let later = T0 + 100 * MINUTE;
        assert!(
            uses.authenticate(store.as_ref(), &hash, None, later, ttl)
                .await
                .unwrap()
                .is_some(),
            "a use not yet written keeps the key alive"
        );
        assert_eq!(uses.flush(store.as_ref()).await.unwrap(), 1);
        assert_eq!(stored(&store, &key).await, Some((later, 2)));
        assert_eq!(uses.last_use(id), None, "written, so no longer pending");

        // Another instance (a fresh record) judges on what was written.
        let other = KeyUses::new();
        assert!(
            other
                .authenticate(store.as_ref(), &hash, None, later + 60 * MINUTE - 1, ttl)
                .await
                .unwrap()
                .is_some()
        );
        let fresh = KeyUses::new();
        assert!(
            fresh
                .authenticate(store.as_ref(), &hash, None, later + 60 * MINUTE, ttl)
                .await
                .unwrap()
                .is_none(),
            "idle for the whole TTL: refused"
        );
        assert_eq!(
            fresh.flush(store.as_ref()).await.unwrap(),
            0,
            "a refusal records nothing"
        );

        // A key idle past its lifetime stays refused whatever other keys do.
        let (_, idle) = user_key(&store, "bob", T0).await;
        assert!(
            uses.authenticate(
                store.as_ref(),
                &hash_secret(&idle),
                None,
                T0 + 60 * MINUTE,
                ttl
            )
            .await
            .unwrap()
            .is_none()
        );
        // The first key's earlier pending use at T0+50 never shortens or lengthens the later one.
        other.flush(store.as_ref()).await.unwrap();
        assert_eq!(
            stored(&store, &key).await,
            Some((later + 60 * MINUTE - 1, 3))
        );
    }
);

on_both_stores!(
    housekeeping_writes_pending_uses_before_judging,
    |app: TestApp| async move {
        let store = app.state.store.clone();
        let settings = Settings {
            api_key_ttl_minutes: 60,
            ..(*app.state.settings).clone()
        };
        let now = now_ms();
        // Both keys were last written 90 minutes ago, and used 30 minutes ago: `kept` by this
        // instance, `lost` by one whose uses never reach the store (say it died unflushed).
        let (kept, kept_clear) = user_key(&store, "kept", now - 90 * MINUTE).await;
        let (lost, lost_clear) = user_key(&store, "lost", now - 90 * MINUTE).await;
        let uses = KeyUses::new();
        uses.record(kept, now - 30 * MINUTE);
        let elsewhere = KeyUses::new();
        elsewhere.record(lost, now - 30 * MINUTE);

        let counts = housekeeping::run_after_flush(&store, &settings, &uses)
            .await
            .unwrap();
        assert_eq!(counts.api_keys, 1, "only the key judged on stale data goes");
        assert_eq!(
            stored(&store, &kept_clear).await,
            Some((now - 30 * MINUTE, 1)),
            "this instance's use was written first"
        );
        assert_eq!(stored(&store, &lost_clear).await, None);
        assert_eq!(uses.pending_keys(), 0);
        assert_eq!(elsewhere.last_use(lost), Some(now - 30 * MINUTE));
    }
);

/// The row versions of the key's and the account's rows (PostgreSQL: `xmin`, changed by any
/// update), or SQLite's `data_version` seen from a separate connection (changed by any commit
/// of another connection).
enum Witness {
    Postgres(tokio_postgres::Client, i64),
    Sqlite(deadpool_sqlite::rusqlite::Connection),
}

impl Witness {
    async fn open(app: &TestApp, key_id: i64) -> Witness {
        let url = &app.state.settings.database;
        if url.starts_with("postgres") {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            Witness::Postgres(client, key_id)
        } else {
            let path = url.strip_prefix("sqlite://").expect("sqlite url");
            Witness::Sqlite(deadpool_sqlite::rusqlite::Connection::open(path).expect("open"))
        }
    }

    async fn read(&self) -> String {
        match self {
            Witness::Postgres(client, id) => {
                let rows = client
                    .query(
                        "SELECT k.xmin::text || '/' || a.xmin::text FROM api_keys k \
                         JOIN accounts a ON a.id = k.account_id WHERE k.id = $1",
                        &[id],
                    )
                    .await
                    .unwrap();
                rows[0].get(0)
            }
            Witness::Sqlite(conn) => conn
                .query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
                .unwrap()
                .to_string(),
        }
    }
}

both_backends!(
    me_with_a_key_writes_nothing_until_the_flush,
    settings = |s: &mut Settings| s.api_key_flush_seconds = 30,
    |app: TestApp| async move {
        let store = app.state.store.clone();
        let (id, key) = user_key(&store, "carol", now_ms()).await;
        // The server reports the hook scripts it serves once at start (a write of its own,
        // not a document's): wait for it, so only the documents are watched.
        for _ in 0..200 {
            if !store.hook_instances().await.unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let witness = Witness::open(&app, id).await;
        let before = witness.read().await;
        for _ in 0..20 {
            let r = app
                .provision("k.example", "/provisioning/me")
                .header("x-api-key", &key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.text().await.unwrap().contains("carol"));
        }
        assert_eq!(witness.read().await, before, "20 documents, not one write");
        assert_eq!(app.state.key_uses.pending_keys(), 1);
        let (_, requests) = stored(&store, &key).await.unwrap();
        assert_eq!(requests, 0);

        // A graceful stop writes the uses.
        app.stop().await;
        assert_ne!(witness.read().await, before, "the shutdown flush wrote");
        let (last, requests) = stored(&store, &key).await.unwrap();
        assert_eq!(requests, 20);
        assert!(last > 0);
    }
);

//! The storage contract, written once and run against both backends: every test below is an
//! `async fn(Db)` over `DynStore`, and `contract_tests!` generates `<name>::sqlite` (a fresh
//! temp file) and `<name>::postgres` (a fresh schema) for it. Both must pass identically.
//!
//! Times are synthetic unix milliseconds around `T0`, so expiry is tested without sleeping.

// Only the PostgreSQL helper is needed here; the rest of `common` drives a whole server.
#[path = "common/pg.rs"]
mod pg;

use provisio::model::{
    Algorithm, HeaderMode, HookFailure, NewPassword, OidcSettings, Space, UiFlags,
};
use provisio::secret::hash_secret;
use provisio::store::{
    self, AccountUpdate, ConsumeId, DynStore, HookInstanceReport, NewAccount, NewApiKey,
    NewHookScript, NewWizard, NonceCheck, PurgeCounts, PurgeRules, StoreError, StoreResult,
    TokenState, WizardToken,
};
use std::collections::BTreeMap;
use std::fmt::Debug;
use tokio::task::JoinSet;

/// A fixed "now" for the suite (2023-11-14), in unix milliseconds.
const T0: i64 = 1_700_000_000_000;
/// One minute in milliseconds.
const MINUTE: i64 = 60_000;

/// A fresh, empty database of one backend; `open` may be called several times (several
/// pools on one database, as several provisio instances would be).
struct Db {
    /// What `provisio::store::open` takes.
    url: String,
    /// Keeps the SQLite file alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    /// A fresh SQLite file in a new temp dir (in a not-yet-existing subdirectory, so `open`
    /// must create it).
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}",
            dir.path().join("data").join("provisio.sqlite3").display()
        );
        Db {
            url,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL schema, or `None` (skip) when PostgreSQL is unavailable outside CI.
    async fn postgres() -> Option<Db> {
        Some(Db {
            url: pg::fresh_postgres_url().await?,
            _dir: None,
        })
    }

    /// A new store (its own pool) on this database, not migrated.
    async fn open(&self) -> DynStore {
        store::open(&self.url, 8).await.expect("open store")
    }

    /// A new store on this database with the schema in place.
    async fn migrated(&self) -> DynStore {
        let store = self.open().await;
        store.migrate().await.expect("migrate");
        store
    }
}

/// Generates, for each contract test `name`, `name::sqlite` and `name::postgres`.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::Db::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = super::Db::postgres().await else { return };
                super::$name(db).await;
            }
        }
    )*};
}

contract_tests!(
    migrate_is_idempotent_and_race_free,
    spaces_crud_conflicts_and_host_lookup,
    accounts_lifecycle,
    account_list_pagination,
    account_delete_tombstone_and_cascade,
    dictionary_round_trip,
    passwords_replace,
    provisioning_token_state_and_current,
    provisioning_token_expiry,
    provisioning_token_consume_resets_and_activates,
    provisioning_token_consumed_once_under_concurrency,
    provisioning_tokens_consumed_once_in_batches,
    auth_token_attach_and_consume,
    auth_token_consumed_once_under_concurrency,
    api_keys_user_admin_ip_and_expiry,
    digest_nonce_checks,
    digest_nonce_concurrent_same_nc,
    purge_expired_removes_only_old_rows,
    consume_is_idempotent_per_request_id,
    purge_deletes_only_what_no_answer_needs,
    purge_passes_from_several_instances_agree,
    upgrade_from_v1_keeps_every_token_answer,
    change_version_follows_space_writes,
    identities_resolve_with_account_and_passwords,
    api_key_uses_are_recorded_in_batches,
    change_feed_notices_other_instances_and_reconnects,
    wizards_round_trip_single_use_and_mint,
    wizard_used_once_under_concurrency,
    hook_scripts_are_versioned_and_bump_their_topic,
    account_identity_update_and_email_lookup,
);

// ---- helpers ------------------------------------------------------------------------------

/// A space with FlexiAPI defaults for `domain`, served on `prov.<domain>`.
fn space(domain: &str) -> Space {
    Space::new(domain, &format!("prov.{domain}"))
}

/// A space with every setting away from its default, so a round trip checks each column.
fn unusual_space(domain: &str) -> Space {
    Space {
        id: 0,
        domain: domain.to_string(),
        host: format!("prov.{domain}"),
        name: format!("Space {domain}"),
        super_space: true,
        realm: format!("realm.{domain}"),
        password_algorithm: Algorithm::Md5,
        base_rc: Some("[sip]\nsip_port=5061\n".into()),
        custom_entries: Some("[misc]\nx=1\n".into()),
        overwrite_all: true,
        ui: UiFlags {
            super_space: true,
            disable_chat_feature: true,
            disable_meetings_feature: true,
            disable_broadcast_feature: false,
            hide_settings: true,
            hide_account_settings: true,
            disable_call_recordings_feature: true,
            only_display_sip_uri_username: true,
            assistant_hide_create_account: true,
            assistant_disable_qr_code: true,
            assistant_hide_third_party_account: true,
            max_account: 3,
        },
        vcard_list_url: Some("https://vcards.example/list".into()),
        public_url: Some("https://prov.example:8443".into()),
        token_lifetime_minutes: 10,
        header_mode: HeaderMode::LinphoneUserAgent,
        hook_failure: HookFailure::Skip,
        max_accounts: 42,
        oidc: Some(OidcSettings {
            server_url: "https://sso.example/".into(),
            realm: "phones".into(),
            public_key: None,
            jwks_url: Some(
                "https://sso.example/realms/phones/protocol/openid-connect/certs".into(),
            ),
            sip_identifier_claim: "sip".into(),
            audience: Some("provisio".into()),
            issuer: Some("https://sso.example/realms/phones".into()),
            required: true,
        }),
        client_certificate_authentication: true,
    }
}

/// A minimal new account `username@domain`.
fn new_account(username: &str, domain: &str) -> NewAccount {
    NewAccount {
        username: username.to_string(),
        domain: domain.to_string(),
        ..NewAccount::default()
    }
}

/// Creates the space `domain` (if needed) and the account `username@domain`; returns its id.
async fn account(store: &DynStore, username: &str, domain: &str) -> i64 {
    if store
        .space_by_domain(domain)
        .await
        .expect("space lookup")
        .is_none()
    {
        store
            .create_space(&space(domain))
            .await
            .expect("create space");
    }
    store
        .create_account(&new_account(username, domain), T0)
        .await
        .expect("create account")
        .id
}

/// A password of `algorithm` with a recognisable HA1.
fn password(algorithm: Algorithm, ha1: &str) -> NewPassword {
    NewPassword {
        algorithm,
        ha1: ha1.to_string(),
    }
}

/// The (algorithm, ha1) pairs stored for an account.
async fn stored_passwords(store: &DynStore, account_id: i64) -> Vec<(Algorithm, String)> {
    store
        .passwords(account_id)
        .await
        .expect("passwords")
        .into_iter()
        .map(|p| {
            assert_eq!(p.account_id, account_id);
            (p.algorithm, p.ha1)
        })
        .collect()
}

/// Asserts a `Conflict` whose client-safe message mentions `needle`.
fn assert_conflict<T: Debug>(result: StoreResult<T>, needle: &str) {
    match result {
        Err(StoreError::Conflict(message)) => {
            assert!(
                message.contains(needle),
                "conflict {message:?} should mention {needle:?}"
            )
        }
        other => panic!("expected a conflict about {needle}, got {other:?}"),
    }
}

/// Asserts `NotFound`.
fn assert_not_found<T: Debug>(result: StoreResult<T>) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "expected NotFound, got {result:?}"
    );
}

// ---- migrations ---------------------------------------------------------------------------

/// Four instances migrating one fresh database together apply each migration exactly once;
/// migrating again applies nothing.
async fn migrate_is_idempotent_and_race_free(db: Db) {
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(db.open().await);
    }
    let expected: Vec<String> = match stores[0].backend() {
        "sqlite" => store::migrations::SQLITE,
        "postgres" => store::migrations::POSTGRES,
        other => panic!("unknown backend {other}"),
    }
    .iter()
    .map(|(name, _)| name.to_string())
    .collect();
    assert!(!expected.is_empty());

    let mut set = JoinSet::new();
    for store in stores.clone() {
        set.spawn(async move { store.migrate().await.expect("concurrent migrate") });
    }
    let mut applied: Vec<String> = set.join_all().await.into_iter().flatten().collect();
    applied.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(
        applied, want,
        "each migration applied exactly once in total"
    );

    for store in &stores {
        assert_eq!(
            store.migrate().await.expect("migrate again"),
            Vec::<String>::new()
        );
        store.ping().await.expect("ping");
    }
    // A brand-new pool sees the schema as complete too.
    assert!(db.open().await.migrate().await.expect("migrate").is_empty());
}

// ---- spaces -------------------------------------------------------------------------------

/// Every field round-trips; domain, host and name are each unique; lookups by domain and host;
/// update replaces everything; delete reports whether it existed.
async fn spaces_crud_conflicts_and_host_lookup(db: Db) {
    let store = db.migrated().await;

    let wanted = unusual_space("a.example");
    let created = store.create_space(&wanted).await.expect("create");
    assert!(created.id > 0);
    assert_eq!(
        created,
        Space {
            id: created.id,
            ..wanted.clone()
        }
    );
    let defaults = store
        .create_space(&space("b.example"))
        .await
        .expect("create b");
    assert_eq!(
        defaults,
        Space {
            id: defaults.id,
            ..space("b.example")
        }
    );
    assert_ne!(created.id, defaults.id);

    assert_eq!(
        store.space_by_domain("a.example").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        store.space_by_host("prov.a.example").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.space_by_host("a.example").await.unwrap(), None);
    assert_eq!(store.space_by_domain("prov.a.example").await.unwrap(), None);

    let mut clash = space("a.example");
    clash.host = "other.host".into();
    clash.name = "other".into();
    assert_conflict(store.create_space(&clash).await, "domain");
    let mut clash = space("c.example");
    clash.host = "prov.a.example".into();
    assert_conflict(store.create_space(&clash).await, "host");
    let mut clash = space("c.example");
    clash.name = "Space a.example".into();
    assert_conflict(store.create_space(&clash).await, "name");
    assert_eq!(
        store.list_spaces().await.unwrap().len(),
        2,
        "failed creates left nothing"
    );

    let mut changed = space("a.example");
    changed.host = "new.a.example".into();
    changed.realm = "new-realm".into();
    changed.token_lifetime_minutes = 5;
    let updated = store.update_space(&changed).await.expect("update");
    assert_eq!(
        updated,
        Space {
            id: created.id,
            ..changed.clone()
        }
    );
    assert_eq!(store.space_by_host("prov.a.example").await.unwrap(), None);
    assert_eq!(
        store.space_by_host("new.a.example").await.unwrap(),
        Some(updated.clone())
    );

    let mut steal = space("b.example");
    steal.host = "new.a.example".into();
    assert_conflict(store.update_space(&steal).await, "host");
    assert_not_found(store.update_space(&space("missing.example")).await);

    let domains: Vec<String> = store
        .list_spaces()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.domain)
        .collect();
    assert_eq!(domains, ["a.example", "b.example"]);

    assert!(store.delete_space("a.example").await.unwrap());
    assert!(!store.delete_space("a.example").await.unwrap());
    assert_eq!(store.space_by_domain("a.example").await.unwrap(), None);
    assert_eq!(store.list_spaces().await.unwrap(), vec![defaults]);
}

// ---- accounts -----------------------------------------------------------------------------

/// Create with every field, read by id and identity, conflicts, partial update.
async fn accounts_lifecycle(db: Db) {
    let store = db.migrated().await;
    assert_not_found(
        store
            .create_account(&new_account("alice", "nowhere.example"), T0)
            .await,
    );
    store.create_space(&space("a.example")).await.unwrap();
    store.create_space(&space("b.example")).await.unwrap();

    let new = NewAccount {
        username: "alice".into(),
        domain: "a.example".into(),
        display_name: Some("Alice A.".into()),
        email: Some("alice@mail.example".into()),
        phone: Some("+33100000000".into()),
        dtmf_protocol: Some("rfc2833".into()),
        activated: false,
        admin: true,
        ip_address: Some("192.0.2.1".into()),
        user_agent: Some("Linphone/5.3".into()),
        dictionary: BTreeMap::from([("team".into(), "blue".into())]),
        passwords: vec![
            password(Algorithm::Md5, "md5ha1"),
            password(Algorithm::Sha256, "sha256ha1"),
        ],
    };
    let alice = store.create_account(&new, T0).await.expect("create");
    assert!(alice.id > 0);
    assert_eq!(
        (alice.username.as_str(), alice.domain.as_str()),
        ("alice", "a.example")
    );
    assert_eq!(alice.display_name.as_deref(), Some("Alice A."));
    assert_eq!(alice.email.as_deref(), Some("alice@mail.example"));
    assert_eq!(alice.phone.as_deref(), Some("+33100000000"));
    assert_eq!(alice.dtmf_protocol.as_deref(), Some("rfc2833"));
    assert_eq!(alice.ip_address.as_deref(), Some("192.0.2.1"));
    assert_eq!(alice.user_agent.as_deref(), Some("Linphone/5.3"));
    assert!(!alice.activated && !alice.blocked && alice.admin);
    assert_eq!((alice.created_at, alice.updated_at), (T0, T0));
    assert_eq!(alice.dictionary, new.dictionary);
    assert_eq!(
        stored_passwords(&store, alice.id).await,
        vec![
            (Algorithm::Md5, "md5ha1".to_string()),
            (Algorithm::Sha256, "sha256ha1".to_string())
        ]
    );

    assert_eq!(store.account(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store
            .account_by_identity("alice", "a.example")
            .await
            .unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store
            .account_by_identity("alice", "b.example")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.account(alice.id + 1000).await.unwrap(), None);

    assert_conflict(
        store
            .create_account(&new_account("alice", "a.example"), T0)
            .await,
        "account",
    );
    let other = store
        .create_account(&new_account("alice", "b.example"), T0)
        .await
        .expect("same user, other domain");
    assert_ne!(other.id, alice.id);
    assert!(!other.admin && other.dictionary.is_empty());
    assert!(stored_passwords(&store, other.id).await.is_empty());

    let update = AccountUpdate {
        display_name: Some(Some("Alice B.".into())),
        email: Some(None),
        blocked: Some(true),
        activated: Some(true),
        ..AccountUpdate::default()
    };
    let updated = store
        .update_account(alice.id, &update, T0 + 5)
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(updated.display_name.as_deref(), Some("Alice B."));
    assert_eq!(updated.email, None);
    assert!(updated.blocked && updated.activated && updated.admin);
    assert_eq!(updated.phone, alice.phone, "untouched field kept");
    assert_eq!(
        updated.dictionary, alice.dictionary,
        "dictionary kept when not in the update"
    );
    assert_eq!((updated.created_at, updated.updated_at), (T0, T0 + 5));
    assert_eq!(
        store.account(alice.id).await.unwrap(),
        Some(updated.clone())
    );
    assert_eq!(
        stored_passwords(&store, alice.id).await.len(),
        2,
        "update leaves passwords"
    );

    assert_eq!(
        store
            .update_account(alice.id + 1000, &update, T0)
            .await
            .unwrap(),
        None
    );
}

/// Pages by id, optionally per domain, with the total count; dictionaries come along.
async fn account_list_pagination(db: Db) {
    let store = db.migrated().await;
    let mut a_ids = Vec::new();
    for i in 0..5 {
        a_ids.push(account(&store, &format!("user{i}"), "a.example").await);
    }
    let b_ids = [
        account(&store, "bob", "b.example").await,
        account(&store, "carol", "b.example").await,
    ];
    let mut dictionary = BTreeMap::new();
    dictionary.insert("k".to_string(), "v".to_string());
    store
        .update_account(
            a_ids[1],
            &AccountUpdate {
                dictionary: Some(dictionary.clone()),
                ..Default::default()
            },
            T0,
        )
        .await
        .unwrap();

    let ids =
        |accounts: &[provisio::model::Account]| accounts.iter().map(|a| a.id).collect::<Vec<_>>();

    let (page, total) = store.list_accounts(Some("a.example"), 0, 2).await.unwrap();
    assert_eq!((ids(&page), total), (a_ids[0..2].to_vec(), 5));
    assert_eq!(page[1].dictionary, dictionary);
    let (page, total) = store.list_accounts(Some("a.example"), 2, 2).await.unwrap();
    assert_eq!((ids(&page), total), (a_ids[2..4].to_vec(), 5));
    let (page, total) = store.list_accounts(Some("a.example"), 4, 10).await.unwrap();
    assert_eq!((ids(&page), total), (a_ids[4..].to_vec(), 5));
    let (page, total) = store
        .list_accounts(Some("a.example"), 50, 10)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (0, 5));

    let (page, total) = store.list_accounts(Some("b.example"), 0, 10).await.unwrap();
    assert_eq!((ids(&page), total), (b_ids.to_vec(), 2));
    let (page, total) = store.list_accounts(None, 0, 100).await.unwrap();
    let mut all = a_ids.clone();
    all.extend(b_ids);
    assert_eq!((ids(&page), total), (all, 7));
    assert_eq!(
        page.iter().find(|a| a.id == a_ids[1]).unwrap().dictionary,
        dictionary
    );
    let (page, total) = store
        .list_accounts(Some("none.example"), 0, 10)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (0, 0));
}

/// Delete cascades to everything the account owns, writes a tombstone that blocks the identity
/// forever, and deleting a space deletes its accounts.
async fn account_delete_tombstone_and_cascade(db: Db) {
    let store = db.migrated().await;
    let id = account(&store, "alice", "a.example").await;
    store
        .replace_passwords(id, &[password(Algorithm::Md5, "h")])
        .await
        .unwrap();
    store
        .create_provisioning_token(id, &hash_secret("ptoken"), T0, None)
        .await
        .unwrap();
    store
        .create_auth_token(&hash_secret("atoken"), None, None, T0)
        .await
        .unwrap();
    assert!(
        store
            .attach_auth_token(&hash_secret("atoken"), id, T0 - 1)
            .await
            .unwrap()
    );
    store
        .create_api_key(
            &NewApiKey {
                account_id: id,
                key_hash: hash_secret("key"),
                name: None,
                ip: None,
                expires_after_minutes: None,
            },
            T0,
        )
        .await
        .unwrap();
    store
        .create_digest_nonce(id, "nonce", "opaque", "192.0.2.1", T0)
        .await
        .unwrap();

    assert!(store.delete_account(id, T0 + 1).await.unwrap());
    assert!(
        !store.delete_account(id, T0 + 2).await.unwrap(),
        "second delete finds nothing"
    );
    assert_eq!(store.account(id).await.unwrap(), None);
    assert_eq!(
        store
            .account_by_identity("alice", "a.example")
            .await
            .unwrap(),
        None
    );
    assert!(store.passwords(id).await.unwrap().is_empty());
    assert_eq!(
        store
            .provisioning_token(&hash_secret("ptoken"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.auth_token(&hash_secret("atoken"), 0).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .authenticate_api_key(&hash_secret("key"), None, T0, 0)
            .await
            .unwrap(),
        None
    );
    assert!(store.api_keys(id).await.unwrap().is_empty());
    assert_eq!(
        store
            .check_digest_nonce(id, "opaque", "nonce", "192.0.2.1", 1, 0)
            .await
            .unwrap(),
        NonceCheck::Unknown
    );
    // The secrets are free again (the rows are really gone), but the identity is not.
    store
        .create_digest_nonce(
            account(&store, "bob", "a.example").await,
            "n",
            "opaque",
            "ip",
            T0,
        )
        .await
        .unwrap();

    assert_conflict(
        store
            .create_account(&new_account("alice", "a.example"), T0 + 3)
            .await,
        "account",
    );
    assert_conflict(
        store
            .create_account(&new_account("alice", "a.example"), T0 + 4)
            .await,
        "account",
    );
    assert_eq!(
        store
            .account_by_identity("alice", "a.example")
            .await
            .unwrap(),
        None,
        "failed create left nothing"
    );
    let (_, total) = store.list_accounts(Some("a.example"), 0, 10).await.unwrap();
    assert_eq!(total, 1, "only bob");

    // Space deletion cascades to its accounts and their rows.
    let carol = account(&store, "carol", "b.example").await;
    store
        .create_provisioning_token(carol, &hash_secret("carol-token"), T0, None)
        .await
        .unwrap();
    assert!(store.delete_space("b.example").await.unwrap());
    assert_eq!(store.account(carol).await.unwrap(), None);
    assert_eq!(
        store
            .provisioning_token(&hash_secret("carol-token"))
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .account_by_identity("bob", "a.example")
            .await
            .unwrap()
            .is_some(),
        "other space untouched"
    );
}

/// Dictionaries keep arbitrary keys and values, are replaced whole, and can be emptied.
async fn dictionary_round_trip(db: Db) {
    let store = db.migrated().await;
    store.create_space(&space("a.example")).await.unwrap();
    let dictionary: BTreeMap<String, String> = [
        ("plain", "value"),
        ("empty", ""),
        ("ünïcødé ☎", "välue with = and ; and \"quotes\""),
        ("multi", "line\nbreak"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let created = store
        .create_account(
            &NewAccount {
                dictionary: dictionary.clone(),
                ..new_account("alice", "a.example")
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(created.dictionary, dictionary);
    assert_eq!(
        store.account(created.id).await.unwrap().unwrap().dictionary,
        dictionary
    );
    assert_eq!(
        store
            .account_by_identity("alice", "a.example")
            .await
            .unwrap()
            .unwrap()
            .dictionary,
        dictionary
    );

    let replacement = BTreeMap::from([("only".to_string(), "one".to_string())]);
    let update = AccountUpdate {
        dictionary: Some(replacement.clone()),
        ..Default::default()
    };
    assert_eq!(
        store
            .update_account(created.id, &update, T0)
            .await
            .unwrap()
            .unwrap()
            .dictionary,
        replacement
    );
    assert_eq!(
        store.account(created.id).await.unwrap().unwrap().dictionary,
        replacement
    );

    let clear = AccountUpdate {
        dictionary: Some(BTreeMap::new()),
        ..Default::default()
    };
    store.update_account(created.id, &clear, T0).await.unwrap();
    assert!(
        store
            .account(created.id)
            .await
            .unwrap()
            .unwrap()
            .dictionary
            .is_empty()
    );
}

/// Replacing passwords swaps the whole set atomically; a bad set changes nothing.
async fn passwords_replace(db: Db) {
    let store = db.migrated().await;
    let id = account(&store, "alice", "a.example").await;
    assert!(stored_passwords(&store, id).await.is_empty());

    store
        .replace_passwords(id, &[password(Algorithm::Md5, "one")])
        .await
        .unwrap();
    assert_eq!(
        stored_passwords(&store, id).await,
        vec![(Algorithm::Md5, "one".to_string())]
    );

    store
        .replace_passwords(
            id,
            &[
                password(Algorithm::Sha256, "two"),
                password(Algorithm::Md5, "three"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        stored_passwords(&store, id).await,
        vec![
            (Algorithm::Sha256, "two".to_string()),
            (Algorithm::Md5, "three".to_string())
        ]
    );

    let duplicate = [password(Algorithm::Md5, "x"), password(Algorithm::Md5, "y")];
    assert_conflict(store.replace_passwords(id, &duplicate).await, "password");
    assert_eq!(
        stored_passwords(&store, id).await.len(),
        2,
        "failed replace rolled back"
    );

    store.replace_passwords(id, &[]).await.unwrap();
    assert!(stored_passwords(&store, id).await.is_empty());

    assert_not_found(
        store
            .replace_passwords(id + 1000, &[password(Algorithm::Md5, "z")])
            .await,
    );
}

// ---- provisioning tokens ------------------------------------------------------------------

/// State is read-only; the account's newest token is the current one and the only consumable
/// one, and a superseded token never comes back (stricter than FlexiAPI).
async fn provisioning_token_state_and_current(db: Db) {
    let store = db.migrated().await;
    let id = account(&store, "alice", "a.example").await;
    let (t1, t2) = (hash_secret("token-1"), hash_secret("token-2"));

    assert_eq!(store.provisioning_token(&t1).await.unwrap(), None);
    assert_eq!(
        store
            .consume_provisioning_token(&t1, T0, None, &ConsumeId::random())
            .await
            .unwrap(),
        None
    );

    store
        .create_provisioning_token(id, &t1, T0, None)
        .await
        .unwrap();
    let state = |created_at, used, current| TokenState {
        account_id: id,
        created_at,
        expires_at: None,
        used,
        current,
    };
    assert_eq!(
        store.provisioning_token(&t1).await.unwrap(),
        Some(state(T0, false, true))
    );
    assert_eq!(
        store.provisioning_token(&t1).await.unwrap(),
        Some(state(T0, false, true)),
        "reading changes nothing"
    );

    store
        .create_provisioning_token(id, &t2, T0 + 1, None)
        .await
        .unwrap();
    assert_eq!(
        store.provisioning_token(&t1).await.unwrap(),
        Some(state(T0, false, false)),
        "superseded"
    );
    assert_eq!(
        store.provisioning_token(&t2).await.unwrap(),
        Some(state(T0 + 1, false, true))
    );
    assert_conflict(
        store.create_provisioning_token(id, &t2, T0 + 2, None).await,
        "token",
    );
    assert_not_found(
        store
            .create_provisioning_token(id + 1000, &hash_secret("x"), T0, None)
            .await,
    );

    assert_eq!(
        store
            .consume_provisioning_token(&t1, T0 + 3, None, &ConsumeId::random())
            .await
            .unwrap(),
        None,
        "superseded token refused"
    );
    assert_eq!(
        store.provisioning_token(&t1).await.unwrap(),
        Some(state(T0, false, false)),
        "refusal consumed nothing"
    );
    assert!(
        !store.account(id).await.unwrap().unwrap().activated,
        "refusal activated nothing"
    );

    assert_eq!(
        store
            .consume_provisioning_token(&t2, T0 + 4, None, &ConsumeId::random())
            .await
            .unwrap(),
        Some(id)
    );
    assert_eq!(
        store.provisioning_token(&t2).await.unwrap(),
        Some(state(T0 + 1, true, false))
    );
    assert_eq!(
        store
            .consume_provisioning_token(&t2, T0 + 5, None, &ConsumeId::random())
            .await
            .unwrap(),
        None,
        "used token refused"
    );
    // FlexiAPI would make the older unused token current again once the newer one is used; a
    // superseded token (say, in an old e-mail) stays dead here.
    assert_eq!(
        store.provisioning_token(&t1).await.unwrap(),
        Some(state(T0, false, false))
    );
    assert_eq!(
        store
            .consume_provisioning_token(&t1, T0 + 5, None, &ConsumeId::random())
            .await
            .unwrap(),
        None,
        "superseded token stays refused"
    );

    // Tokens of another account do not compete.
    let bob = account(&store, "bob", "a.example").await;
    let t3 = hash_secret("token-3");
    store
        .create_provisioning_token(bob, &t3, T0 + 6, None)
        .await
        .unwrap();
    assert!(
        !store
            .provisioning_token(&t1)
            .await
            .unwrap()
            .unwrap()
            .current
    );
    assert!(
        store
            .provisioning_token(&t3)
            .await
            .unwrap()
            .unwrap()
            .current
    );
}

/// A token with an expiry is consumable strictly before it, and its state reports it.
async fn provisioning_token_expiry(db: Db) {
    let store = db.migrated().await;
    let id = account(&store, "alice", "a.example").await;
    let token = hash_secret("expiring");
    let expires_at = T0 + 10 * MINUTE;
    store
        .create_provisioning_token(id, &token, T0, Some(expires_at))
        .await
        .unwrap();
    let state = store.provisioning_token(&token).await.unwrap().unwrap();
    assert_eq!(
        (state.expires_at, state.used, state.current),
        (Some(expires_at), false, true)
    );

    assert_eq!(
        store
            .consume_provisioning_token(&token, expires_at, None, &ConsumeId::random())
            .await
            .unwrap(),
        None,
        "expired at the instant"
    );
    assert_eq!(
        store
            .consume_provisioning_token(&token, expires_at + MINUTE, None, &ConsumeId::random())
            .await
            .unwrap(),
        None
    );
    let state = store.provisioning_token(&token).await.unwrap().unwrap();
    assert!(!state.used, "an expired refusal does not burn the token");
    assert!(!store.account(id).await.unwrap().unwrap().activated);

    assert_eq!(
        store
            .consume_provisioning_token(&token, expires_at - 1, None, &ConsumeId::random())
            .await
            .unwrap(),
        Some(id)
    );
    assert!(
        store
            .provisioning_token(&token)
            .await
            .unwrap()
            .unwrap()
            .used
    );
}

/// Consumption activates the account and, with a reset, replaces all its passwords by the new
/// one; without a reset the passwords stay.
async fn provisioning_token_consume_resets_and_activates(db: Db) {
    let store = db.migrated().await;
    let id = account(&store, "alice", "a.example").await;
    let old = [
        password(Algorithm::Md5, "old-md5"),
        password(Algorithm::Sha256, "old-sha"),
    ];
    store.replace_passwords(id, &old).await.unwrap();

    store
        .create_provisioning_token(id, &hash_secret("plain"), T0, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_provisioning_token(&hash_secret("plain"), T0 + 1, None, &ConsumeId::random())
            .await
            .unwrap(),
        Some(id)
    );
    let account = store.account(id).await.unwrap().unwrap();
    assert!(account.activated);
    assert_eq!(account.updated_at, T0 + 1);
    assert_eq!(
        stored_passwords(&store, id).await.len(),
        2,
        "no reset, no change"
    );

    store
        .create_provisioning_token(id, &hash_secret("reset"), T0 + 2, None)
        .await
        .unwrap();
    let fresh = password(Algorithm::Sha256, "fresh");
    assert_eq!(
        store
            .consume_provisioning_token(
                &hash_secret("reset"),
                T0 + 3,
                Some(&fresh),
                &ConsumeId::random()
            )
            .await
            .unwrap(),
        Some(id)
    );
    assert_eq!(
        stored_passwords(&store, id).await,
        vec![(Algorithm::Sha256, "fresh".to_string())]
    );

    // A reset in another algorithm than the stored one also leaves it alone.
    store
        .create_provisioning_token(id, &hash_secret("reset-md5"), T0 + 2, None)
        .await
        .unwrap();
    let md5 = password(Algorithm::Md5, "fresh-md5");
    assert_eq!(
        store
            .consume_provisioning_token(
                &hash_secret("reset-md5"),
                T0 + 3,
                Some(&md5),
                &ConsumeId::random()
            )
            .await
            .unwrap(),
        Some(id)
    );
    assert_eq!(
        stored_passwords(&store, id).await,
        vec![(Algorithm::Md5, "fresh-md5".to_string())]
    );
    store
        .replace_passwords(id, std::slice::from_ref(&fresh))
        .await
        .unwrap();

    // A refused consumption resets nothing.
    let other = password(Algorithm::Md5, "never");
    assert_eq!(
        store
            .consume_provisioning_token(
                &hash_secret("reset"),
                T0 + 4,
                Some(&other),
                &ConsumeId::random()
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stored_passwords(&store, id).await,
        vec![(Algorithm::Sha256, "fresh".to_string())]
    );
}

/// Fifty concurrent consumers of one token: exactly one gets the account, and the passwords
/// are exactly that winner's reset.
async fn provisioning_token_consumed_once_under_concurrency(db: Db) {
    let store = db.migrated().await;
    let id = account(&store, "alice", "a.example").await;
    let token = hash_secret("contended");
    store
        .create_provisioning_token(id, &token, T0, None)
        .await
        .unwrap();

    let mut set = JoinSet::new();
    for i in 0..50 {
        let (store, token) = (store.clone(), token.clone());
        set.spawn(async move {
            let reset = password(Algorithm::Sha256, &format!("ha1-{i}"));
            let won = store
                .consume_provisioning_token(&token, T0 + 1, Some(&reset), &ConsumeId::random())
                .await
                .expect("consume");
            (i, won)
        });
    }
    let results = set.join_all().await;
    let winners: Vec<_> = results.iter().filter(|(_, won)| won.is_some()).collect();
    assert_eq!(winners.len(), 1, "exactly one consumer wins: {results:?}");
    let (winner, won) = winners[0];
    assert_eq!(*won, Some(id));
    assert_eq!(
        stored_passwords(&store, id).await,
        vec![(Algorithm::Sha256, format!("ha1-{winner}"))]
    );
    assert!(store.account(id).await.unwrap().unwrap().activated);
    assert!(
        store
            .provisioning_token(&token)
            .await
            .unwrap()
            .unwrap()
            .used
    );
}

/// Many tokens consumed at once without a reset (PostgreSQL groups such consumes into shared
/// statements): each of 60 tokens is raced by three consumers and exactly one of them wins it;
/// a superseded and an expired token stay unconsumed however many consume them alongside;
/// every winner's account is activated, and a winner asking again with its own id is told so.
async fn provisioning_tokens_consumed_once_in_batches(db: Db) {
    let store = db.migrated().await;
    let mut tokens = Vec::new();
    for i in 0..60 {
        let id = account(&store, &format!("batch{i}"), "a.example").await;
        let token = hash_secret(&format!("batch-token-{i}"));
        store
            .create_provisioning_token(id, &token, T0, None)
            .await
            .unwrap();
        tokens.push((id, token));
    }
    let old_owner = account(&store, "superseded", "a.example").await;
    let old = hash_secret("superseded-old");
    store
        .create_provisioning_token(old_owner, &old, T0, None)
        .await
        .unwrap();
    store
        .create_provisioning_token(old_owner, &hash_secret("superseded-new"), T0, None)
        .await
        .unwrap();
    let expired_owner = account(&store, "expired", "a.example").await;
    let expired = hash_secret("expired");
    store
        .create_provisioning_token(expired_owner, &expired, T0, Some(T0 + 1))
        .await
        .unwrap();

    // Each of the 60 tokens, and the superseded and the expired one, raced by three consumers.
    let raced = tokens
        .iter()
        .enumerate()
        .map(|(n, (_, token))| (Some(n), token))
        .chain([(None, &old), (None, &expired)]);
    let mut set = JoinSet::new();
    for (n, token) in raced {
        for _ in 0..3 {
            let (store, token) = (store.clone(), token.clone());
            set.spawn(async move {
                let by = ConsumeId::random();
                let won = store
                    .consume_provisioning_token(&token, T0 + 5, None, &by)
                    .await
                    .expect("consume");
                (n, won, token, by)
            });
        }
    }
    let results = set.join_all().await;
    for (n, (id, _)) in tokens.iter().enumerate() {
        let winners: Vec<_> = results
            .iter()
            .filter(|(m, won, ..)| *m == Some(n) && won.is_some())
            .collect();
        assert_eq!(winners.len(), 1, "token {n}: exactly one consumer wins");
        assert_eq!(winners[0].1, Some(*id));
        assert!(store.account(*id).await.unwrap().unwrap().activated);
        // The winner's own retry (an ambiguous commit being settled) is told it holds it.
        let (_, _, token, by) = winners[0];
        assert_eq!(
            store
                .consume_provisioning_token(token, T0 + 6, None, by)
                .await
                .unwrap(),
            Some(*id)
        );
    }
    assert!(
        results
            .iter()
            .filter(|(m, ..)| m.is_none())
            .all(|(_, won, ..)| won.is_none()),
        "a superseded or expired token is never consumed"
    );
    for (owner, token) in [(old_owner, &old), (expired_owner, &expired)] {
        assert!(!store.provisioning_token(token).await.unwrap().unwrap().used);
        assert!(!store.account(owner).await.unwrap().unwrap().activated);
    }
}

// ---- auth tokens --------------------------------------------------------------------------

/// Minted unattached; attached once, only while fresh; consumed once, only when attached and
/// fresh; a reset replaces the passwords.
async fn auth_token_attach_and_consume(db: Db) {
    let store = db.migrated().await;
    let alice = account(&store, "alice", "a.example").await;
    let bob = account(&store, "bob", "a.example").await;
    let token = hash_secret("qr");
    store
        .create_auth_token(&token, Some("192.0.2.1"), Some("Linphone"), T0)
        .await
        .unwrap();
    assert_conflict(
        store.create_auth_token(&token, None, None, T0).await,
        "token",
    );

    let state = store
        .auth_token(&token, T0 - 1)
        .await
        .unwrap()
        .expect("fresh");
    assert_eq!((state.account_id, state.created_at), (None, T0));
    assert_eq!(
        store.auth_token(&token, T0).await.unwrap(),
        None,
        "minted at not_before is stale"
    );
    assert_eq!(
        store.auth_token(&hash_secret("unknown"), 0).await.unwrap(),
        None
    );

    assert_eq!(
        store
            .consume_auth_token(&token, T0 - 1, None)
            .await
            .unwrap(),
        None,
        "unattached"
    );
    assert!(
        store.auth_token(&token, T0 - 1).await.unwrap().is_some(),
        "kept after refusal"
    );

    assert!(
        !store.attach_auth_token(&token, alice, T0).await.unwrap(),
        "stale token not attachable"
    );
    assert!(
        store
            .attach_auth_token(&token, alice, T0 - 1)
            .await
            .unwrap()
    );
    assert!(
        !store.attach_auth_token(&token, bob, T0 - 1).await.unwrap(),
        "attached only once"
    );
    assert!(
        !store
            .attach_auth_token(&token, alice, T0 - 1)
            .await
            .unwrap(),
        "attached only once"
    );
    assert!(
        !store
            .attach_auth_token(&hash_secret("unknown"), alice, 0)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .auth_token(&token, T0 - 1)
            .await
            .unwrap()
            .unwrap()
            .account_id,
        Some(alice)
    );

    assert_eq!(
        store.consume_auth_token(&token, T0, None).await.unwrap(),
        None,
        "stale"
    );
    let reset = password(Algorithm::Md5, "qr-reset");
    assert_eq!(
        store
            .consume_auth_token(&token, T0 - 1, Some(&reset))
            .await
            .unwrap(),
        Some(alice)
    );
    assert_eq!(
        stored_passwords(&store, alice).await,
        vec![(Algorithm::Md5, "qr-reset".to_string())]
    );
    assert_eq!(
        store
            .consume_auth_token(&token, T0 - 1, None)
            .await
            .unwrap(),
        None,
        "consumed once"
    );
    assert_eq!(store.auth_token(&token, 0).await.unwrap(), None, "spent");
    assert!(
        !store.account(alice).await.unwrap().unwrap().activated,
        "auth tokens do not activate"
    );
}

/// Twenty concurrent consumers of one attached auth token: exactly one wins.
async fn auth_token_consumed_once_under_concurrency(db: Db) {
    let store = db.migrated().await;
    let alice = account(&store, "alice", "a.example").await;
    let token = hash_secret("qr-contended");
    store
        .create_auth_token(&token, None, None, T0)
        .await
        .unwrap();
    assert!(
        store
            .attach_auth_token(&token, alice, T0 - 1)
            .await
            .unwrap()
    );

    let mut set = JoinSet::new();
    for i in 0..20 {
        let (store, token) = (store.clone(), token.clone());
        set.spawn(async move {
            let reset = password(Algorithm::Sha256, &format!("qr-{i}"));
            (
                i,
                store
                    .consume_auth_token(&token, T0 - 1, Some(&reset))
                    .await
                    .expect("consume"),
            )
        });
    }
    let results = set.join_all().await;
    let winners: Vec<_> = results.iter().filter(|(_, won)| won.is_some()).collect();
    assert_eq!(winners.len(), 1, "exactly one consumer wins: {results:?}");
    assert_eq!(winners[0].1, Some(alice));
    assert_eq!(
        stored_passwords(&store, alice).await,
        vec![(Algorithm::Sha256, format!("qr-{}", winners[0].0))]
    );
}

// ---- API keys -----------------------------------------------------------------------------

/// A user key replaces the previous one; admin keys accumulate; IP binding; expiry by
/// inactivity (user keys: the server TTL, admin keys: their own, 0 = never); use counting.
async fn api_keys_user_admin_ip_and_expiry(db: Db) {
    let store = db.migrated().await;
    let alice = account(&store, "alice", "a.example").await;
    let key =
        |secret: &str, name: Option<&str>, ip: Option<&str>, expires: Option<i64>| NewApiKey {
            account_id: alice,
            key_hash: hash_secret(secret),
            name: name.map(str::to_string),
            ip: ip.map(str::to_string),
            expires_after_minutes: expires,
        };
    let auth = |secret: &'static str, ip: Option<&'static str>, now: i64, ttl: i64| {
        let store = store.clone();
        async move {
            store
                .authenticate_api_key(&hash_secret(secret), ip, now, ttl)
                .await
                .expect("authenticate")
        }
    };

    let k1 = store
        .create_api_key(&key("user-1", None, None, None), T0)
        .await
        .unwrap();
    assert_eq!(
        auth("user-1", Some("192.0.2.1"), T0 + 1, 60).await,
        Some(alice)
    );
    assert_eq!(
        auth("user-1", None, T0 + 2, 60).await,
        Some(alice),
        "unbound key works without an IP"
    );
    let records = store.api_keys(alice).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].id,
            records[0].account_id,
            records[0].name.clone(),
            records[0].ip.clone()
        ),
        (k1, alice, None, None)
    );
    assert_eq!(
        (
            records[0].expires_after_minutes,
            records[0].last_used_at,
            records[0].requests
        ),
        (None, T0 + 2, 2)
    );

    // A new user key replaces the previous one.
    let k2 = store
        .create_api_key(&key("user-2", None, Some("10.0.0.1"), None), T0 + 3)
        .await
        .unwrap();
    assert_ne!(k1, k2);
    assert_eq!(
        auth("user-1", None, T0 + 4, 60).await,
        None,
        "replaced user key is dead"
    );
    let records = store.api_keys(alice).await.unwrap();
    assert_eq!(records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![k2]);
    assert_eq!(
        (
            records[0].last_used_at,
            records[0].requests,
            records[0].ip.as_deref()
        ),
        (T0 + 3, 0, Some("10.0.0.1"))
    );

    // IP binding.
    assert_eq!(auth("user-2", Some("10.0.0.2"), T0 + 5, 60).await, None);
    assert_eq!(
        auth("user-2", None, T0 + 5, 60).await,
        None,
        "bound key needs the IP"
    );
    assert_eq!(
        auth("user-2", Some("10.0.0.1"), T0 + 5, 60).await,
        Some(alice)
    );

    // Admin keys accumulate next to the user key.
    let never = store
        .create_api_key(&key("admin-never", Some("ci"), None, Some(0)), T0 + 6)
        .await
        .unwrap();
    let ten = store
        .create_api_key(&key("admin-ten", Some("ops"), None, Some(10)), T0 + 6)
        .await
        .unwrap();
    let records = store.api_keys(alice).await.unwrap();
    assert_eq!(
        records.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![k2, never, ten]
    );
    assert_eq!(records[1].name.as_deref(), Some("ci"));
    assert_eq!(records[2].expires_after_minutes, Some(10));
    let k3 = store
        .create_api_key(&key("user-3", None, None, None), T0 + 7)
        .await
        .unwrap();
    let ids: Vec<i64> = store
        .api_keys(alice)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ids,
        vec![never, ten, k3],
        "user key rotation keeps admin keys"
    );

    // User key expiry: dead once unused for the TTL; a refused attempt records nothing.
    let last = T0 + 7;
    assert_eq!(
        auth("user-3", None, last + 60 * MINUTE, 60).await,
        None,
        "dead at last use + TTL"
    );
    assert_eq!(
        auth("user-3", None, last + 60 * MINUTE - 1, 60).await,
        Some(alice)
    );
    assert_eq!(
        auth("user-3", None, last + 60 * MINUTE + 30 * MINUTE, 60).await,
        Some(alice),
        "use extends life"
    );
    assert_eq!(
        auth("user-3", None, T0 + 10 * 365 * 24 * 60 * MINUTE, 0).await,
        Some(alice),
        "TTL 0 = never"
    );

    // Admin key expiry follows its own setting, not the user TTL.
    let last = T0 + 6;
    assert_eq!(auth("admin-ten", None, last + 10 * MINUTE, 0).await, None);
    assert_eq!(
        auth("admin-ten", None, last + 10 * MINUTE - 1, 1).await,
        Some(alice)
    );
    assert_eq!(
        auth("admin-never", None, T0 + 10 * 365 * 24 * 60 * MINUTE, 1).await,
        Some(alice)
    );

    let records = store.api_keys(alice).await.unwrap();
    let requests: Vec<i64> = records.iter().map(|r| r.requests).collect();
    assert_eq!(requests, vec![1, 1, 3]);
    assert_eq!(records[2].last_used_at, T0 + 10 * 365 * 24 * 60 * MINUTE);

    assert_eq!(auth("unknown", None, T0, 0).await, None);
    assert_conflict(
        store
            .create_api_key(&key("admin-ten", Some("dup"), None, Some(1)), T0)
            .await,
        "key",
    );
    let orphan = NewApiKey {
        account_id: alice + 1000,
        ..key("orphan", None, None, None)
    };
    assert_not_found(store.create_api_key(&orphan, T0).await);
    assert!(store.api_keys(alice + 1000).await.unwrap().is_empty());

    // Revoking by id: the key stops authenticating at once, once only, others stay.
    let revoked = store
        .create_api_key(&key("to-revoke", Some("revoke-me"), None, Some(0)), T0)
        .await
        .unwrap();
    assert_eq!(auth("to-revoke", None, T0 + 1, 60).await, Some(alice));
    let before = store.api_keys(alice).await.unwrap().len();
    assert!(store.delete_api_key(revoked).await.unwrap());
    assert!(!store.delete_api_key(revoked).await.unwrap());
    assert_eq!(auth("to-revoke", None, T0 + 2, 60).await, None);
    assert_eq!(store.api_keys(alice).await.unwrap().len(), before - 1);
}

// ---- Digest challenges --------------------------------------------------------------------

/// nc must strictly increase; a replay deletes the challenge; account, opaque, nonce, IP and
/// freshness must all match.
async fn digest_nonce_checks(db: Db) {
    let store = db.migrated().await;
    let alice = account(&store, "alice", "a.example").await;
    let bob = account(&store, "bob", "a.example").await;
    let ip = "192.0.2.1";
    let check =
        |opaque: &'static str, nonce: &'static str, ip: &'static str, nc: i64, not_before: i64| {
            let store = store.clone();
            async move {
                store
                    .check_digest_nonce(alice, opaque, nonce, ip, nc, not_before)
                    .await
                    .expect("check")
            }
        };

    store
        .create_digest_nonce(alice, "n1", "o1", ip, T0)
        .await
        .unwrap();
    assert_eq!(check("o1", "n1", ip, 1, T0 - 1).await, NonceCheck::Accepted);
    assert_eq!(check("o1", "n1", ip, 2, T0 - 1).await, NonceCheck::Accepted);
    assert_eq!(
        check("o1", "n1", ip, 5, T0 - 1).await,
        NonceCheck::Accepted,
        "gaps are fine"
    );
    assert_eq!(
        check("o1", "n1", ip, 5, T0 - 1).await,
        NonceCheck::Replayed,
        "same nc"
    );
    assert_eq!(
        check("o1", "n1", ip, 6, T0 - 1).await,
        NonceCheck::Unknown,
        "a replay deleted it"
    );

    store
        .create_digest_nonce(alice, "n2", "o2", ip, T0)
        .await
        .unwrap();
    assert_eq!(check("o2", "n2", ip, 3, T0 - 1).await, NonceCheck::Accepted);
    assert_eq!(
        check("o2", "n2", ip, 2, T0 - 1).await,
        NonceCheck::Replayed,
        "lower nc"
    );
    assert_eq!(check("o2", "n2", ip, 4, T0 - 1).await, NonceCheck::Unknown);

    store
        .create_digest_nonce(alice, "n3", "o3", ip, T0)
        .await
        .unwrap();
    assert_eq!(
        check("o3", "n3", "192.0.2.2", 1, T0 - 1).await,
        NonceCheck::Unknown,
        "other IP"
    );
    assert_eq!(
        check("o3", "wrong", ip, 1, T0 - 1).await,
        NonceCheck::Unknown,
        "wrong nonce"
    );
    assert_eq!(
        check("o3", "n3", ip, 1, T0).await,
        NonceCheck::Unknown,
        "expired"
    );
    assert_eq!(
        check("unknown", "n3", ip, 1, T0 - 1).await,
        NonceCheck::Unknown,
        "unknown opaque"
    );
    assert_eq!(
        store
            .check_digest_nonce(bob, "o3", "n3", ip, 1, T0 - 1)
            .await
            .unwrap(),
        NonceCheck::Unknown,
        "other account"
    );
    assert_eq!(
        check("o3", "n3", ip, 1, T0 - 1).await,
        NonceCheck::Accepted,
        "mismatches left it intact"
    );

    assert_conflict(
        store.create_digest_nonce(bob, "n4", "o3", ip, T0).await,
        "challenge",
    );
    assert_not_found(
        store
            .create_digest_nonce(alice + 1000, "n5", "o5", ip, T0)
            .await,
    );
}

/// Twenty concurrent checks with the same nc: exactly one is accepted.
async fn digest_nonce_concurrent_same_nc(db: Db) {
    let store = db.migrated().await;
    let alice = account(&store, "alice", "a.example").await;
    store
        .create_digest_nonce(alice, "nonce", "opaque", "192.0.2.1", T0)
        .await
        .unwrap();

    let mut set = JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        set.spawn(async move {
            store
                .check_digest_nonce(alice, "opaque", "nonce", "192.0.2.1", 1, T0 - 1)
                .await
                .expect("check")
        });
    }
    let results = set.join_all().await;
    let accepted = results
        .iter()
        .filter(|r| **r == NonceCheck::Accepted)
        .count();
    assert_eq!(accepted, 1, "exactly one accepted: {results:?}");
    assert!(results.iter().all(|r| matches!(
        r,
        NonceCheck::Accepted | NonceCheck::Replayed | NonceCheck::Unknown
    )));
    assert!(
        results.contains(&NonceCheck::Replayed),
        "the first loser sees a replay: {results:?}"
    );
}

// ---- housekeeping -------------------------------------------------------------------------

/// Purging deletes auth tokens and challenges created at or before the cut-offs, nothing else.
async fn purge_expired_removes_only_old_rows(db: Db) {
    let store = db.migrated().await;
    let alice = account(&store, "alice", "a.example").await;
    for (secret, at) in [("t0", T0), ("t10", T0 + 10), ("t20", T0 + 20)] {
        store
            .create_auth_token(&hash_secret(secret), None, None, at)
            .await
            .unwrap();
    }
    store
        .create_digest_nonce(alice, "n", "old", "ip", T0)
        .await
        .unwrap();
    store
        .create_digest_nonce(alice, "n", "new", "ip", T0 + 10)
        .await
        .unwrap();
    store
        .create_provisioning_token(alice, &hash_secret("prov"), T0, None)
        .await
        .unwrap();

    assert_eq!(store.purge_expired(T0 + 10, T0).await.unwrap(), 3);
    assert_eq!(store.auth_token(&hash_secret("t0"), 0).await.unwrap(), None);
    assert_eq!(
        store.auth_token(&hash_secret("t10"), 0).await.unwrap(),
        None
    );
    assert!(
        store
            .auth_token(&hash_secret("t20"), 0)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store
            .check_digest_nonce(alice, "old", "n", "ip", 1, 0)
            .await
            .unwrap(),
        NonceCheck::Unknown
    );
    assert_eq!(
        store
            .check_digest_nonce(alice, "new", "n", "ip", 1, 0)
            .await
            .unwrap(),
        NonceCheck::Accepted
    );
    assert!(
        store
            .provisioning_token(&hash_secret("prov"))
            .await
            .unwrap()
            .is_some(),
        "tokens are not purged"
    );
    assert_eq!(
        store.purge_expired(T0 + 10, T0).await.unwrap(),
        0,
        "nothing left to purge"
    );
}

/// A consume names itself; repeating it with the same id (as a request does after losing the
/// commit's acknowledgement) answers "won" again without changing anything, any other id
/// loses. Both token kinds.
async fn consume_is_idempotent_per_request_id(db: Db) {
    let store = db.migrated().await;
    let alice = account(&store, "alice", "a.example").await;
    let (first, second) = (ConsumeId::random(), ConsumeId::random());
    let token = hash_secret("idem");
    store
        .create_provisioning_token(alice, &token, T0, None)
        .await
        .unwrap();
    let r1 = password(Algorithm::Sha256, "r1");
    let r2 = password(Algorithm::Sha256, "r2");
    assert_eq!(
        store
            .consume_provisioning_token(&token, T0 + 1, Some(&r1), &first)
            .await
            .unwrap(),
        Some(alice)
    );
    assert_eq!(
        store
            .consume_provisioning_token(&token, T0 + 2, Some(&r2), &first)
            .await
            .unwrap(),
        Some(alice),
        "the same request asking again learns it won"
    );
    assert_eq!(
        stored_passwords(&store, alice).await,
        vec![(Algorithm::Sha256, "r1".to_string())],
        "the repeat changes nothing"
    );
    assert_eq!(
        store
            .consume_provisioning_token(&token, T0 + 3, Some(&r2), &second)
            .await
            .unwrap(),
        None,
        "another request loses"
    );
    // A newer token does not undo the win.
    store
        .create_provisioning_token(alice, &hash_secret("idem-2"), T0 + 4, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_provisioning_token(&token, T0 + 5, None, &first)
            .await
            .unwrap(),
        Some(alice)
    );
    assert_eq!(
        stored_passwords(&store, alice).await,
        vec![(Algorithm::Sha256, "r1".to_string())]
    );

    let qr = hash_secret("idem-qr");
    store.create_auth_token(&qr, None, None, T0).await.unwrap();
    assert!(store.attach_auth_token(&qr, alice, T0 - 1).await.unwrap());
    let q1 = password(Algorithm::Md5, "q1");
    assert_eq!(
        store
            .consume_auth_token_as(&qr, T0 + 1, T0 - 1, Some(&q1), &first)
            .await
            .unwrap(),
        Some(alice)
    );
    assert_eq!(
        store
            .consume_auth_token_as(&qr, T0 + 2, T0 - 1, Some(&r2), &first)
            .await
            .unwrap(),
        Some(alice)
    );
    assert_eq!(
        store
            .consume_auth_token_as(&qr, T0 + 2, T0 - 1, None, &second)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stored_passwords(&store, alice).await,
        vec![(Algorithm::Md5, "q1".to_string())]
    );
    assert_eq!(store.auth_token(&qr, 0).await.unwrap(), None, "spent");
    assert!(
        !store.attach_auth_token(&qr, alice, 0).await.unwrap(),
        "a spent token cannot be attached again"
    );
}

/// 40 days after `T0`: the "now" of the purge tests.
const LATER: i64 = T0 + 40 * DAY;
/// One day in milliseconds.
const DAY: i64 = 24 * 60 * MINUTE;

/// The rules a pass at `LATER` uses with FlexiAPI-like settings: auth tokens 5 min, nonces
/// 300 s, user keys 60 min, 30 days of retention.
fn rules_at_later() -> PurgeRules {
    PurgeRules {
        auth_tokens_before: LATER - 5 * MINUTE,
        nonces_before: LATER - 5 * MINUTE,
        answered_nonces: true,
        user_keys_idle_before: Some(LATER - 60 * MINUTE),
        tokens_retired_before: Some(LATER - 30 * DAY),
        audit_events_before: None,
    }
}

/// Housekeeping deletes exactly the expired, spent and long-retired rows, and every answer the
/// store gives afterwards is the one it gave before: survivors keep their state, deleted
/// tokens were already dead, and above all an account's superseded token never becomes
/// current again when its newer tokens are purged.
async fn purge_deletes_only_what_no_answer_needs(db: Db) {
    let store = db.migrated().await;
    let d = "p.example";
    let mint = |account: i64, secret: &'static str, at: i64, expires: Option<i64>| {
        let store = store.clone();
        async move {
            store
                .create_provisioning_token(account, &hash_secret(secret), at, expires)
                .await
                .unwrap();
        }
    };
    let burn = |secret: &'static str, at: i64| {
        let store = store.clone();
        async move {
            assert!(
                store
                    .consume_provisioning_token(
                        &hash_secret(secret),
                        at,
                        None,
                        &ConsumeId::random()
                    )
                    .await
                    .unwrap()
                    .is_some(),
                "{secret} consumable at setup"
            );
        }
    };
    // A: an old unused token superseded by a newer one that was used, both long ago.
    let a = account(&store, "a", d).await;
    mint(a, "a1", T0, None).await;
    mint(a, "a2", T0 + DAY, None).await;
    burn("a2", T0 + 2 * DAY).await;
    // B: superseded only recently: kept.
    let b = account(&store, "b", d).await;
    mint(b, "b1", T0, None).await;
    mint(b, "b2", T0 + 20 * DAY, None).await;
    // C: used long ago, then a new live token.
    let c = account(&store, "c", d).await;
    mint(c, "c1", T0, None).await;
    burn("c1", T0 + DAY).await;
    mint(c, "c2", T0 + 20 * DAY, None).await;
    // D: expired, never used (answers 410): kept.
    let dd = account(&store, "d", d).await;
    mint(dd, "d1", T0, Some(T0 + 60 * MINUTE)).await;
    // E: used within the retention: kept.
    let e = account(&store, "e", d).await;
    mint(e, "e1", T0 + 20 * DAY, None).await;
    burn("e1", T0 + 25 * DAY).await;
    // F: old but live (never expires, never used): kept.
    let f = account(&store, "f", d).await;
    mint(f, "f1", T0, None).await;
    let secrets = ["a1", "a2", "b1", "b2", "c1", "c2", "d1", "e1", "f1"];
    let mut before = BTreeMap::new();
    for secret in secrets {
        let state = store
            .provisioning_token(&hash_secret(secret))
            .await
            .unwrap();
        before.insert(secret, state.expect("minted"));
    }

    // Auth tokens: expired, fresh, spent long ago, spent just now, and an odd one minted long
    // ago but spent recently (kept until its use is old too).
    let qr = |s: &str| hash_secret(s);
    for (secret, at) in [
        ("x-old", LATER - 10 * MINUTE),
        ("x-fresh", LATER - MINUTE),
        ("x-spent-old", LATER - 20 * MINUTE),
        ("x-spent-now", LATER - 2 * MINUTE),
        ("x-odd", LATER - 10 * MINUTE),
    ] {
        store
            .create_auth_token(&qr(secret), None, None, at)
            .await
            .unwrap();
    }
    for (secret, minted, used) in [
        ("x-spent-old", LATER - 20 * MINUTE, LATER - 18 * MINUTE),
        ("x-spent-now", LATER - 2 * MINUTE, LATER - MINUTE),
        ("x-odd", LATER - 10 * MINUTE, LATER - MINUTE),
    ] {
        assert!(
            store
                .attach_auth_token(&qr(secret), a, minted - 1)
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .consume_auth_token_as(&qr(secret), used, minted - 1, None, &ConsumeId::random())
                .await
                .unwrap(),
            Some(a)
        );
    }

    // Digest challenges: expired, fresh and in use, fresh and spent by a qop-less answer.
    store
        .create_digest_nonce(a, "n", "n-old", "ip", LATER - 10 * MINUTE)
        .await
        .unwrap();
    store
        .create_digest_nonce(a, "n", "n-fresh", "ip", LATER - MINUTE)
        .await
        .unwrap();
    store
        .create_digest_nonce(a, "n", "n-spent", "ip", LATER - MINUTE)
        .await
        .unwrap();
    let check = |opaque: &'static str, nc: i64| {
        let store = store.clone();
        async move {
            store
                .check_digest_nonce(a, opaque, "n", "ip", nc, LATER - 5 * MINUTE)
                .await
                .unwrap()
        }
    };
    assert_eq!(check("n-fresh", 1).await, NonceCheck::Accepted);
    assert_eq!(check("n-spent", i64::MAX).await, NonceCheck::Accepted);

    // API keys: a user key idle past its lifetime, one used recently, an idle admin key.
    let key = |account_id: i64, secret: &str, expires: Option<i64>| NewApiKey {
        account_id,
        key_hash: hash_secret(secret),
        name: expires.map(|_| "ops".to_string()),
        ip: None,
        expires_after_minutes: expires,
    };
    store
        .create_api_key(&key(a, "k-idle", None), LATER - 120 * MINUTE)
        .await
        .unwrap();
    store
        .create_api_key(&key(b, "k-used", None), LATER - 120 * MINUTE)
        .await
        .unwrap();
    store
        .create_api_key(&key(c, "k-admin", Some(1)), LATER - 120 * MINUTE)
        .await
        .unwrap();
    assert_eq!(
        store
            .authenticate_api_key(&hash_secret("k-used"), None, LATER - 10 * MINUTE, 0)
            .await
            .unwrap(),
        Some(b)
    );

    // A pass with only the expiry rules touches nothing else.
    let narrow = PurgeRules {
        answered_nonces: false,
        user_keys_idle_before: None,
        tokens_retired_before: None,
        ..rules_at_later()
    };
    assert_eq!(
        store.purge(&narrow).await.unwrap(),
        PurgeCounts {
            auth_tokens: 2,
            digest_nonces: 1,
            api_keys: 0,
            provisioning_tokens: 0,
            audit_events: 0,
        }
    );
    assert_eq!(
        store.purge(&rules_at_later()).await.unwrap(),
        PurgeCounts {
            auth_tokens: 0,
            digest_nonces: 1,
            api_keys: 1,
            provisioning_tokens: 3,
            audit_events: 0,
        }
    );
    assert_eq!(
        store.purge(&rules_at_later()).await.unwrap(),
        PurgeCounts::default(),
        "a second pass finds nothing"
    );

    // Provisioning tokens: the retired ones are gone and were dead; the rest are unchanged.
    for (secret, was) in &before {
        let now = store
            .provisioning_token(&hash_secret(secret))
            .await
            .unwrap();
        if ["a1", "a2", "c1"].contains(secret) {
            assert_eq!(now, None, "{secret} purged");
            assert!(
                was.used || !was.current,
                "{secret} was already dead: {was:?}"
            );
        } else {
            assert_eq!(now.as_ref(), Some(was), "{secret} unchanged");
        }
    }
    for (secret, wins) in [
        ("a1", false), // the old superseded token stays dead with its successors gone
        ("a2", false),
        ("c1", false),
        ("b1", false),
        ("d1", false), // expired
        ("e1", false),
        ("b2", true),
        ("c2", true),
        ("f1", true),
    ] {
        let won = store
            .consume_provisioning_token(&hash_secret(secret), LATER, None, &ConsumeId::random())
            .await
            .unwrap();
        assert_eq!(won.is_some(), wins, "{secret} after the purge");
    }
    // Minting after a purge still kills the older tokens.
    mint(a, "a3", LATER, None).await;
    assert!(
        store
            .provisioning_token(&hash_secret("a3"))
            .await
            .unwrap()
            .unwrap()
            .current
    );

    // Auth tokens: only the fresh one and the recently spent ones are left; all answer as before.
    assert!(
        store
            .auth_token(&qr("x-fresh"), LATER - 5 * MINUTE)
            .await
            .unwrap()
            .is_some()
    );
    for secret in ["x-old", "x-spent-old", "x-spent-now", "x-odd"] {
        assert_eq!(
            store.auth_token(&qr(secret), 0).await.unwrap(),
            None,
            "{secret}"
        );
    }
    assert!(
        !store.attach_auth_token(&qr("x-old"), a, 0).await.unwrap(),
        "a purged token cannot be attached"
    );

    // Challenges: the expired and the spent one are unknown; the one in use still counts.
    assert_eq!(check("n-old", 1).await, NonceCheck::Unknown);
    assert_eq!(check("n-spent", 1).await, NonceCheck::Unknown);
    assert_eq!(check("n-fresh", 2).await, NonceCheck::Accepted);

    // API keys: the idle user key is gone (it was refused anyway), the others work and list.
    assert_eq!(
        store
            .authenticate_api_key(&hash_secret("k-idle"), None, LATER, 60)
            .await
            .unwrap(),
        None
    );
    assert!(store.api_keys(a).await.unwrap().is_empty());
    assert_eq!(
        store
            .authenticate_api_key(&hash_secret("k-used"), None, LATER, 60)
            .await
            .unwrap(),
        Some(b)
    );
    assert_eq!(
        store.api_keys(c).await.unwrap().len(),
        1,
        "admin keys are kept"
    );
}

/// Several instances purging at once (one pool each) delete each row once in total and leave
/// the same state as a single pass.
async fn purge_passes_from_several_instances_agree(db: Db) {
    let store = db.migrated().await;
    let mut expected = PurgeCounts::default();
    for i in 0..30 {
        let id = account(&store, &format!("u{i}"), "many.example").await;
        for (n, at) in [(1, T0), (2, T0 + DAY), (3, T0 + 2 * DAY)] {
            store
                .create_provisioning_token(id, &hash_secret(&format!("u{i}-{n}")), at, None)
                .await
                .unwrap();
        }
        // Tokens 1 and 2 are superseded long ago; token 3 stays live.
        expected.provisioning_tokens += 2;
        store
            .create_auth_token(&hash_secret(&format!("q{i}")), None, None, T0)
            .await
            .unwrap();
        expected.auth_tokens += 1;
        store
            .create_digest_nonce(id, "n", &format!("o{i}"), "ip", T0)
            .await
            .unwrap();
        expected.digest_nonces += 1;
    }
    let mut set = JoinSet::new();
    for _ in 0..4 {
        let other = db.open().await;
        set.spawn(async move { other.purge(&rules_at_later()).await.expect("purge") });
    }
    let mut total = PurgeCounts::default();
    for counts in set.join_all().await {
        total.auth_tokens += counts.auth_tokens;
        total.digest_nonces += counts.digest_nonces;
        total.api_keys += counts.api_keys;
        total.provisioning_tokens += counts.provisioning_tokens;
    }
    assert_eq!(total, expected);
    assert_eq!(
        store.purge(&rules_at_later()).await.unwrap(),
        PurgeCounts::default()
    );
    for i in 0..30 {
        let live = store
            .provisioning_token(&hash_secret(&format!("u{i}-3")))
            .await
            .unwrap()
            .expect("the live token is kept");
        assert!(live.current && !live.used);
    }
}

/// Runs SQL statements on the raw database (no store), for setting up an older schema.
async fn raw_sql(db: &Db, statements: &[&str]) {
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        std::fs::create_dir_all(std::path::Path::new(path).parent().expect("parent")).unwrap();
        let conn = deadpool_sqlite::rusqlite::Connection::open(path).expect("open SQLite");
        for sql in statements {
            conn.execute_batch(sql).expect(sql);
        }
    } else {
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        for sql in statements {
            client.batch_execute(sql).await.expect(sql);
        }
    }
}

/// A database left at schema version 1 (tokens used, an auth token attached) is upgraded by
/// `migrate`: used tokens stay used, live ones stay live and consumable once, the attached
/// auth token still redeems once.
async fn upgrade_from_v1_keeps_every_token_answer(db: Db) {
    let (list, bookkeeping) = if db.url.starts_with("sqlite://") {
        (
            store::migrations::SQLITE,
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT;",
        )
    } else {
        (
            store::migrations::POSTGRES,
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
    };
    let (name, v1) = list[0];
    assert_eq!(name, "V1__init");
    let used = hex::encode(hash_secret("v1-used"));
    let live = hex::encode(hash_secret("v1-live"));
    let qr = hex::encode(hash_secret("v1-qr"));
    let blob = |h: &str| {
        if db.url.starts_with("sqlite://") {
            format!("X'{h}'")
        } else {
            format!("'\\x{h}'::bytea")
        }
    };
    let rows = format!(
        "INSERT INTO spaces (domain, host, name, realm) VALUES ('old.example', 'old.example', 'old', 'old.example');
         INSERT INTO accounts (username, domain, created_at, updated_at) VALUES ('ann', 'old.example', {T0}, {T0});
         INSERT INTO accounts (username, domain, created_at, updated_at) VALUES ('bob', 'old.example', {T0}, {T0});
         INSERT INTO provisioning_tokens (account_id, token_hash, created_at, used_at) VALUES (1, {}, {T0}, {T0});
         INSERT INTO provisioning_tokens (account_id, token_hash, created_at) VALUES (2, {}, {T0});
         INSERT INTO auth_tokens (token_hash, account_id, created_at) VALUES ({}, 1, {T0});
         INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, 'V1__init', {T0});",
        blob(&used),
        blob(&live),
        blob(&qr)
    );
    raw_sql(&db, &[bookkeeping, v1, &rows]).await;

    let store = db.open().await;
    let applied = store.migrate().await.expect("upgrade");
    assert_eq!(
        applied,
        list[1..]
            .iter()
            .map(|(n, _)| n.to_string())
            .collect::<Vec<_>>()
    );
    let used_state = store
        .provisioning_token(&hash_secret("v1-used"))
        .await
        .unwrap()
        .unwrap();
    assert!(used_state.used && !used_state.current);
    assert_eq!(
        store
            .consume_provisioning_token(&hash_secret("v1-used"), T0 + 1, None, &ConsumeId::random())
            .await
            .unwrap(),
        None
    );
    let live_state = store
        .provisioning_token(&hash_secret("v1-live"))
        .await
        .unwrap()
        .unwrap();
    assert!(!live_state.used && live_state.current);
    let id = ConsumeId::random();
    let bob = live_state.account_id;
    for _ in 0..2 {
        assert_eq!(
            store
                .consume_provisioning_token(&hash_secret("v1-live"), T0 + 1, None, &id)
                .await
                .unwrap(),
            Some(bob)
        );
    }
    assert!(
        store
            .consume_auth_token_as(&hash_secret("v1-qr"), T0 + 1, T0 - 1, None, &id)
            .await
            .unwrap()
            .is_some(),
        "the attached auth token redeems once"
    );
    assert_eq!(
        store
            .consume_auth_token_as(
                &hash_secret("v1-qr"),
                T0 + 2,
                T0 - 1,
                None,
                &ConsumeId::random()
            )
            .await
            .unwrap(),
        None
    );
}

// ---- change feed --------------------------------------------------------------------------

/// Every committed space write, through any store on the database, raises the `spaces`
/// version; reads and failed writes leave it; an unknown topic is at 0.
async fn change_version_follows_space_writes(db: Db) {
    let store = db.migrated().await;
    let other = db.migrated().await;
    let v0 = store.change_version("spaces").await.unwrap();
    assert_eq!(store.change_version("no-such-topic").await.unwrap(), 0);

    store.create_space(&space("a.example")).await.unwrap();
    let v1 = store.change_version("spaces").await.unwrap();
    assert!(v1 > v0, "create: {v0} -> {v1}");
    assert_eq!(other.change_version("spaces").await.unwrap(), v1);

    store.list_spaces().await.unwrap();
    store.space_by_host("prov.a.example").await.unwrap();
    assert_conflict(other.create_space(&space("a.example")).await, "space");
    assert_eq!(
        store.change_version("spaces").await.unwrap(),
        v1,
        "reads and a failed write change nothing"
    );

    let mut changed = space("a.example");
    changed.realm = "other-realm".into();
    other.update_space(&changed).await.unwrap();
    let v2 = store.change_version("spaces").await.unwrap();
    assert!(v2 > v1, "update through another store: {v1} -> {v2}");

    // Accounts are not part of the topic.
    let id = account(&store, "ann", "a.example").await;
    store.delete_account(id, T0).await.unwrap();
    assert_eq!(store.change_version("spaces").await.unwrap(), v2);

    assert!(store.delete_space("a.example").await.unwrap());
    let v3 = store.change_version("spaces").await.unwrap();
    assert!(v3 > v2, "delete: {v2} -> {v3}");
}

/// Waits (bounded) for the next notice that concerns `topic`.
async fn next_notice(
    feed: &mut tokio::sync::broadcast::Receiver<store::Change>,
    topic: &str,
) -> store::Change {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let change = feed.recv().await.expect("feed open");
            if change.topic == topic {
                return change;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {topic:?} notice within 10 s"))
}

/// SQLite has no feed. On PostgreSQL: a new feed first says "reload everything"; a space
/// written through another store (another instance) is noticed with its version; writes in
/// another schema of the same database are not; killing the listener's backend leads to a
/// reconnect, a `*` notice, and notices again.
async fn change_feed_notices_other_instances_and_reconnects(db: Db) {
    let writer = db.migrated().await;
    if writer.backend() == "sqlite" {
        assert!(writer.change_feed().is_none());
        return;
    }
    let listener = store::postgres::PostgresStore::connect(&db.url, 2)
        .await
        .expect("connect");
    use store::Store as _;
    let mut feed = listener.change_feed().expect("a PostgreSQL feed");
    assert_eq!(
        next_notice(&mut feed, "*").await,
        store::Change::reload_all()
    );
    let mut second = listener.change_feed().expect("a second subscriber");

    // Versions of the two schemas must differ for the filter to show.
    let neighbour = Db::postgres().await.expect("PostgreSQL is up");
    let neighbour = neighbour.migrated().await;
    for domain in ["a.example", "b.example", "c.example"] {
        writer.create_space(&space(domain)).await.unwrap();
    }
    let mut wanted = writer.change_version("spaces").await.unwrap();
    neighbour.create_space(&space("n.example")).await.unwrap();
    assert_ne!(neighbour.change_version("spaces").await.unwrap(), wanted);
    // The three creates arrive in order, then nothing from the neighbour.
    let mut seen = Vec::new();
    while seen.last() != Some(&wanted) {
        seen.push(next_notice(&mut feed, "spaces").await.version);
    }
    assert_eq!(seen.len(), 3, "one notice per write: {seen:?}");
    let mut changed = space("a.example");
    changed.realm = "changed".into();
    writer.update_space(&changed).await.unwrap();
    wanted = writer.change_version("spaces").await.unwrap();
    assert_eq!(next_notice(&mut feed, "spaces").await.version, wanted);
    let mut last = 0;
    while last != wanted {
        last = next_notice(&mut second, "spaces").await.version;
    }

    let pid = listener.change_feed_backend_pid().expect("listening");
    let (admin, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    assert_eq!(
        next_notice(&mut feed, "*").await,
        store::Change::reload_all()
    );
    let new_pid = listener.change_feed_backend_pid().expect("listening again");
    assert_ne!(new_pid, pid);
    writer.delete_space("b.example").await.unwrap();
    wanted = writer.change_version("spaces").await.unwrap();
    assert_eq!(next_notice(&mut feed, "spaces").await.version, wanted);
}

// ---- identity in one read -----------------------------------------------------------------

/// A token, an auth token, an API key or an identity resolves to the account with its
/// dictionary and passwords, and to the credential's own state, without changing anything.
async fn identities_resolve_with_account_and_passwords(db: Db) {
    let store = db.migrated().await;
    store.create_space(&space("a.example")).await.unwrap();
    let mut new = new_account("alice", "a.example");
    new.display_name = Some("Alice".into());
    new.dictionary = BTreeMap::from([
        ("b".to_string(), "2".to_string()),
        ("a".to_string(), "1".to_string()),
    ]);
    new.passwords = vec![
        password(Algorithm::Sha256, "ha1-sha"),
        password(Algorithm::Md5, "ha1-md5"),
    ];
    let alice = store.create_account(&new, T0).await.unwrap();
    let bare = account(&store, "bob", "a.example").await;
    let expected_passwords = store.passwords(alice.id).await.unwrap();
    assert_eq!(expected_passwords.len(), 2);
    let check = |bundle: &store::AccountBundle| {
        assert_eq!(bundle.account, alice);
        assert_eq!(bundle.passwords, expected_passwords);
    };

    // Digest: by identity.
    check(
        &store
            .account_bundle_by_identity("alice", "a.example")
            .await
            .unwrap()
            .expect("alice"),
    );
    let bob = store
        .account_bundle_by_identity("bob", "a.example")
        .await
        .unwrap()
        .expect("bob");
    assert_eq!(bob.account.id, bare);
    assert!(bob.passwords.is_empty() && bob.account.dictionary.is_empty());
    assert!(
        store
            .account_bundle_by_identity("alice", "b.example")
            .await
            .unwrap()
            .is_none()
    );

    // Provisioning tokens: the state is reported, not judged.
    store
        .create_provisioning_token(alice.id, &hash_secret("old"), T0, Some(T0 + MINUTE))
        .await
        .unwrap();
    let (state, bundle) = store
        .token_identity(&hash_secret("old"))
        .await
        .unwrap()
        .expect("token");
    check(&bundle);
    assert_eq!(
        state,
        TokenState {
            account_id: alice.id,
            created_at: T0,
            expires_at: Some(T0 + MINUTE),
            used: false,
            current: true,
        }
    );
    store
        .create_provisioning_token(alice.id, &hash_secret("new"), T0 + 1, None)
        .await
        .unwrap();
    let (state, _) = store
        .token_identity(&hash_secret("old"))
        .await
        .unwrap()
        .unwrap();
    assert!(!state.current && !state.used, "superseded");
    assert_eq!(
        store.provisioning_token(&hash_secret("old")).await.unwrap(),
        Some(state)
    );
    store
        .consume_provisioning_token(&hash_secret("new"), T0 + 2, None, &ConsumeId::random())
        .await
        .unwrap()
        .expect("consumed");
    let (state, bundle) = store
        .token_identity(&hash_secret("new"))
        .await
        .unwrap()
        .unwrap();
    assert!(state.used && !state.current);
    assert!(bundle.account.activated, "the account as it is now");
    assert!(
        store
            .token_identity(&hash_secret("nope"))
            .await
            .unwrap()
            .is_none()
    );

    // Auth tokens: only attached, fresh and unspent ones resolve.
    store
        .create_auth_token(&hash_secret("qr"), None, None, T0)
        .await
        .unwrap();
    assert!(
        store
            .auth_token_identity(&hash_secret("qr"), T0 - 1)
            .await
            .unwrap()
            .is_none(),
        "not attached"
    );
    assert!(
        store
            .attach_auth_token(&hash_secret("qr"), alice.id, T0 - 1)
            .await
            .unwrap()
    );
    let (state, bundle) = store
        .auth_token_identity(&hash_secret("qr"), T0 - 1)
        .await
        .unwrap()
        .expect("attached");
    assert_eq!(state.account_id, Some(alice.id));
    assert_eq!(state.created_at, T0);
    assert_eq!(bundle.account.id, alice.id);
    assert_eq!(bundle.passwords, expected_passwords);
    assert!(
        store
            .auth_token_identity(&hash_secret("qr"), T0)
            .await
            .unwrap()
            .is_none(),
        "minted at not_before: too old"
    );
    store
        .consume_auth_token_as(
            &hash_secret("qr"),
            T0 + 1,
            T0 - 1,
            None,
            &ConsumeId::random(),
        )
        .await
        .unwrap()
        .expect("redeemed");
    assert!(
        store
            .auth_token_identity(&hash_secret("qr"), T0 - 1)
            .await
            .unwrap()
            .is_none(),
        "spent"
    );

    // API keys: the record as stored, and reading it records nothing.
    let key_id = store
        .create_api_key(
            &NewApiKey {
                account_id: alice.id,
                key_hash: hash_secret("key"),
                name: Some("ops".into()),
                ip: Some("192.0.2.7".into()),
                expires_after_minutes: Some(5),
            },
            T0,
        )
        .await
        .unwrap();
    for _ in 0..3 {
        let (key, bundle) = store
            .api_key_identity(&hash_secret("key"))
            .await
            .unwrap()
            .expect("key");
        assert_eq!(
            key,
            store::ApiKeyRecord {
                id: key_id,
                account_id: alice.id,
                name: Some("ops".into()),
                ip: Some("192.0.2.7".into()),
                expires_after_minutes: Some(5),
                last_used_at: T0,
                requests: 0,
            }
        );
        assert_eq!(bundle.account.id, alice.id);
        assert_eq!(bundle.passwords, expected_passwords);
    }
    assert!(
        store
            .api_key_identity(&hash_secret("nokey"))
            .await
            .unwrap()
            .is_none()
    );
}

/// Batched uses move `last_used_at` forward only and add up the counts; a deleted key is
/// skipped; `accepts` judges IP binding and idle lifetime from the latest use it is given.
async fn api_key_uses_are_recorded_in_batches(db: Db) {
    let store = db.migrated().await;
    let alice = account(&store, "alice", "a.example").await;
    let bob = account(&store, "bob", "a.example").await;
    let key = |account_id: i64, secret: &str, expires: Option<i64>| NewApiKey {
        account_id,
        key_hash: hash_secret(secret),
        name: expires.map(|_| "admin".to_string()),
        ip: None,
        expires_after_minutes: expires,
    };
    let a = store
        .create_api_key(&key(alice, "a", None), T0)
        .await
        .unwrap();
    let b = store
        .create_api_key(&key(bob, "b", Some(10)), T0)
        .await
        .unwrap();
    let gone = store
        .create_api_key(&key(bob, "gone", None), T0)
        .await
        .unwrap();
    store.delete_account(bob, T0).await.unwrap(); // deletes keys b and gone
    let b2 = store
        .create_api_key(&key(alice, "b2", Some(10)), T0)
        .await
        .unwrap();
    assert!(b != b2 && gone != b2);

    store
        .record_api_key_uses(&[
            store::ApiKeyUse {
                id: a,
                last_used_at: T0 + 5 * MINUTE,
                requests: 3,
            },
            store::ApiKeyUse {
                id: b2,
                last_used_at: T0 + MINUTE,
                requests: 1,
            },
            store::ApiKeyUse {
                id: gone,
                last_used_at: T0 + MINUTE,
                requests: 7,
            },
        ])
        .await
        .unwrap();
    store.record_api_key_uses(&[]).await.unwrap();
    // An older use arriving late (another instance's batch) never moves the instant back.
    store
        .record_api_key_uses(&[store::ApiKeyUse {
            id: a,
            last_used_at: T0 + 2 * MINUTE,
            requests: 2,
        }])
        .await
        .unwrap();
    let (ka, _) = store
        .api_key_identity(&hash_secret("a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ka.last_used_at, ka.requests), (T0 + 5 * MINUTE, 5));
    let (kb, _) = store
        .api_key_identity(&hash_secret("b2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((kb.last_used_at, kb.requests), (T0 + MINUTE, 1));
    assert!(
        store
            .api_key_identity(&hash_secret("gone"))
            .await
            .unwrap()
            .is_none()
    );

    // User key, TTL 60 minutes: alive until stored last use + 60 min, or a later pending use.
    let dies = ka.last_used_at + 60 * MINUTE;
    assert!(ka.accepts(None, ka.last_used_at, dies - 1, 60));
    assert!(!ka.accepts(None, ka.last_used_at, dies, 60));
    assert!(
        ka.accepts(None, dies - 10, dies + 30 * MINUTE, 60),
        "a pending use extends it"
    );
    assert!(
        !ka.accepts(None, T0, dies, 60),
        "an older pending use does not shorten it either"
    );
    assert!(
        ka.accepts(None, T0, T0 + 1_000_000 * MINUTE, 0),
        "TTL 0: never"
    );
    // Admin key: its own lifetime, whatever the user TTL.
    assert!(kb.accepts(None, kb.last_used_at, T0 + 11 * MINUTE - 1, 0));
    assert!(!kb.accepts(None, kb.last_used_at, T0 + 11 * MINUTE, 1000));
    // IP binding.
    let bound = store::ApiKeyRecord {
        ip: Some("10.0.0.1".into()),
        ..ka.clone()
    };
    assert!(bound.accepts(Some("10.0.0.1"), ka.last_used_at, T0 + 6 * MINUTE, 60));
    assert!(!bound.accepts(Some("10.0.0.2"), ka.last_used_at, T0 + 6 * MINUTE, 60));
    assert!(!bound.accepts(None, ka.last_used_at, T0 + 6 * MINUTE, 60));
}

// ---- wizard links -------------------------------------------------------------------------

/// A wizard of space `a.example` with the given token, provisioning `account`.
fn new_wizard(token: &str, created_by: Option<i64>, account: Option<i64>) -> NewWizard {
    NewWizard {
        token_hash: hash_secret(token),
        space: "a.example".to_string(),
        created_by,
        provisioning_account_id: account,
        ..NewWizard::default()
    }
}

/// Every field round-trips; token hashes are unique; the space and accounts must exist; a
/// wizard is used once, and that use (only) stores the token minted for its account, which
/// becomes the account's current one; cascades follow the accounts and the space, but a
/// wizard outlives its author.
async fn wizards_round_trip_single_use_and_mint(db: Db) {
    let store = db.migrated().await;
    let admin = account(&store, "admin", "a.example").await;
    let alice = account(&store, "alice", "a.example").await;
    let new = NewWizard {
        sip: Some("sip:bob@a.example".to_string()),
        linphone_action: Some("call".to_string()),
        linphone_use_sips: Some(false),
        ..new_wizard("w1", Some(admin), Some(alice))
    };
    let created = store.create_wizard(&new, T0).await.unwrap();
    assert_eq!(created.space, "a.example");
    assert_eq!(created.created_by, Some(admin));
    assert_eq!(created.provisioning_account_id, Some(alice));
    assert_eq!(created.sip.as_deref(), Some("sip:bob@a.example"));
    assert_eq!(created.linphone_action.as_deref(), Some("call"));
    assert_eq!(created.linphone_use_sips, Some(false));
    assert_eq!((created.created_at, created.used_at), (T0, None));
    assert_eq!(
        store.wizard(&hash_secret("w1")).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.wizard(&hash_secret("nope")).await.unwrap(), None);
    assert_conflict(store.create_wizard(&new, T0).await, "wizard");
    assert_not_found(
        store
            .create_wizard(&new_wizard("w-ghost", None, Some(alice + 1000)), T0)
            .await,
    );
    assert_not_found(
        store
            .create_wizard(
                &NewWizard {
                    space: "nowhere.example".to_string(),
                    ..new_wizard("w-nowhere", None, None)
                },
                T0,
            )
            .await,
    );

    // The use mints: the new token is Alice's current one, the older one is dead.
    store
        .create_provisioning_token(alice, &hash_secret("older"), T0, None)
        .await
        .unwrap();
    let mint = WizardToken {
        token_hash: hash_secret("minted"),
        expires_at: Some(T0 + 10 * MINUTE),
    };
    let used = store
        .use_wizard(&hash_secret("w1"), T0 + 1, Some(&mint))
        .await
        .unwrap()
        .expect("the first use wins");
    assert_eq!(used.used_at, Some(T0 + 1));
    assert_eq!(used.id, created.id);
    assert_eq!(
        store.provisioning_token(&mint.token_hash).await.unwrap(),
        Some(TokenState {
            account_id: alice,
            created_at: T0 + 1,
            expires_at: Some(T0 + 10 * MINUTE),
            used: false,
            current: true,
        })
    );
    assert!(
        !store
            .provisioning_token(&hash_secret("older"))
            .await
            .unwrap()
            .unwrap()
            .current
    );
    // Used: a second use gets nothing and mints nothing.
    let again = WizardToken {
        token_hash: hash_secret("minted-again"),
        expires_at: None,
    };
    assert_eq!(
        store
            .use_wizard(&hash_secret("w1"), T0 + 2, Some(&again))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.provisioning_token(&again.token_hash).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .wizard(&hash_secret("w1"))
            .await
            .unwrap()
            .unwrap()
            .used_at,
        Some(T0 + 1)
    );
    assert_eq!(
        store
            .use_wizard(&hash_secret("unknown"), T0 + 2, Some(&again))
            .await
            .unwrap(),
        None
    );

    // A wizard naming no account is used without minting, even when offered a token.
    store
        .create_wizard(&new_wizard("w2", Some(admin), None), T0)
        .await
        .unwrap();
    let unused_mint = WizardToken {
        token_hash: hash_secret("not-stored"),
        expires_at: None,
    };
    let used = store
        .use_wizard(&hash_secret("w2"), T0 + 3, Some(&unused_mint))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (used.provisioning_account_id, used.used_at),
        (None, Some(T0 + 3))
    );
    assert_eq!(
        store
            .provisioning_token(&unused_mint.token_hash)
            .await
            .unwrap(),
        None
    );
    // Without a token to store, a wizard naming an account is used all the same.
    store
        .create_wizard(&new_wizard("w3", Some(admin), Some(alice)), T0)
        .await
        .unwrap();
    assert!(
        store
            .use_wizard(&hash_secret("w3"), T0 + 4, None)
            .await
            .unwrap()
            .is_some()
    );

    // Cascades: the author's deletion keeps the link; the account's removes it; the
    // space's removes the rest.
    let bob = account(&store, "bob", "a.example").await;
    store
        .create_wizard(&new_wizard("w-bob", Some(admin), Some(bob)), T0)
        .await
        .unwrap();
    assert!(store.delete_account(admin, T0 + 5).await.unwrap());
    assert_eq!(
        store
            .wizard(&hash_secret("w-bob"))
            .await
            .unwrap()
            .unwrap()
            .created_by,
        None
    );
    assert!(store.delete_account(bob, T0 + 5).await.unwrap());
    assert_eq!(store.wizard(&hash_secret("w-bob")).await.unwrap(), None);
    assert!(store.wizard(&hash_secret("w2")).await.unwrap().is_some());
    assert!(store.delete_space("a.example").await.unwrap());
    assert_eq!(store.wizard(&hash_secret("w2")).await.unwrap(), None);
}

/// Many visits of one link at once: exactly one uses it, and exactly one token is minted.
async fn wizard_used_once_under_concurrency(db: Db) {
    let store = db.migrated().await;
    let alice = account(&store, "alice", "a.example").await;
    store
        .create_wizard(&new_wizard("contended", None, Some(alice)), T0)
        .await
        .unwrap();
    let mut set = JoinSet::new();
    for i in 0..30 {
        let store = store.clone();
        set.spawn(async move {
            let mint = WizardToken {
                token_hash: hash_secret(&format!("minted-{i}")),
                expires_at: None,
            };
            let won = store
                .use_wizard(&hash_secret("contended"), T0 + 1, Some(&mint))
                .await
                .expect("use");
            (i, won.is_some())
        });
    }
    let results = set.join_all().await;
    let winners: Vec<_> = results.iter().filter(|(_, won)| *won).collect();
    assert_eq!(winners.len(), 1, "exactly one visit wins: {results:?}");
    for (i, won) in &results {
        let state = store
            .provisioning_token(&hash_secret(&format!("minted-{i}")))
            .await
            .unwrap();
        assert_eq!(state.is_some(), *won, "visit {i}");
    }
}

// ---- hook scripts -------------------------------------------------------------------------

/// A hook script version by the command line.
fn hook(name: &str, source: Option<&str>) -> NewHookScript {
    NewHookScript {
        name: name.to_string(),
        source: source.map(str::to_string),
        fixtures: None,
        author: "cli".to_string(),
        author_account_id: None,
        comment: None,
    }
}

/// Every save is the next version of its name (concurrent saves through two stores
/// included); a deletion is a version without source, which takes the name out of the live
/// scripts while its history stays; a batch commits together; every write bumps `hooks`;
/// instance reports are replaced, listed and forgotten.
async fn hook_scripts_are_versioned_and_bump_their_topic(db: Db) {
    let store = db.migrated().await;
    let other = db.migrated().await;
    assert!(store.live_hook_scripts().await.unwrap().is_empty());
    assert!(
        store
            .hook_script_versions("default")
            .await
            .unwrap()
            .is_empty()
    );
    let v0 = store.change_version("hooks").await.unwrap();
    assert!(v0 > 0, "the topic exists");
    let spaces = store.change_version("spaces").await.unwrap();

    let mut first = hook("default", Some("fn on_config(c, r, a) {}"));
    first.fixtures = Some("[]".into());
    first.author = "root@root.example".into();
    first.author_account_id = Some(7);
    first.comment = Some("first".into());
    let saved = store
        .save_hook_scripts(&[first, hook("policy", Some("fn x() { 1 }"))], T0)
        .await
        .unwrap();
    assert_eq!(
        saved
            .iter()
            .map(|r| (r.name.as_str(), r.version))
            .collect::<Vec<_>>(),
        [("default", 1), ("policy", 1)]
    );
    assert_eq!(saved[0].author, "root@root.example");
    assert_eq!(saved[0].author_account_id, Some(7));
    assert_eq!(saved[0].comment.as_deref(), Some("first"));
    assert_eq!(saved[0].fixtures.as_deref(), Some("[]"));
    assert_eq!(saved[0].created_at, T0);
    let v1 = other.change_version("hooks").await.unwrap();
    assert!(v1 > v0, "{v0} -> {v1}");
    assert_eq!(store.change_version("spaces").await.unwrap(), spaces);

    // Concurrent saves of one name through two stores: distinct versions, none lost.
    let mut set = JoinSet::new();
    for (i, s) in [store.clone(), other.clone(), store.clone(), other.clone()]
        .into_iter()
        .enumerate()
    {
        set.spawn(async move {
            s.save_hook_scripts(&[hook("default", Some(&format!("// {i}")))], T0 + 1)
                .await
                .unwrap()[0]
                .version
        });
    }
    let mut versions = set.join_all().await;
    versions.sort();
    assert_eq!(versions, [2, 3, 4, 5]);

    let deleted = other
        .save_hook_scripts(&[hook("policy", None)], T0 + 2)
        .await
        .unwrap();
    assert_eq!(
        (deleted[0].version, deleted[0].source.as_deref()),
        (2, None)
    );
    let live = store.live_hook_scripts().await.unwrap();
    assert_eq!(
        live.iter()
            .map(|r| (r.name.as_str(), r.version))
            .collect::<Vec<_>>(),
        [("default", 5)]
    );
    let history = store.hook_script_versions("policy").await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|r| (r.version, r.source.is_some()))
            .collect::<Vec<_>>(),
        [(2, false), (1, true)],
        "newest first"
    );
    let one = store
        .hook_script_version("policy", 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.source.as_deref(), Some("fn x() { 1 }"));
    assert!(
        store
            .hook_script_version("policy", 3)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.change_version("hooks").await.unwrap() > v1);

    // Instance reports: replaced by id, old ones forgotten, deleted on request.
    let report = |instance: &str, seen_at: i64, text: &str| HookInstanceReport {
        instance: instance.to_string(),
        host: "h (pid 1)".to_string(),
        started_at: T0,
        seen_at,
        report: text.to_string(),
    };
    let before = store.change_version("hooks").await.unwrap();
    store
        .report_hook_instance(&report("a", T0, "{}"), T0 - MINUTE)
        .await
        .unwrap();
    other
        .report_hook_instance(&report("b", T0, "{}"), T0 - MINUTE)
        .await
        .unwrap();
    store
        .report_hook_instance(&report("a", T0 + MINUTE, "{\"x\":1}"), T0 - MINUTE)
        .await
        .unwrap();
    let all = other.hook_instances().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].seen_at, all[0].report.as_str()),
        (T0 + MINUTE, "{\"x\":1}")
    );
    other
        .report_hook_instance(&report("c", T0 + 2 * MINUTE, "{}"), T0 + MINUTE / 2)
        .await
        .unwrap();
    let names: Vec<String> = store
        .hook_instances()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.instance)
        .collect();
    assert_eq!(names, ["a", "c"], "b was silent too long");
    store.forget_hook_instance("a").await.unwrap();
    assert_eq!(store.hook_instances().await.unwrap().len(), 1);
    assert_eq!(
        store.change_version("hooks").await.unwrap(),
        before,
        "reports change no script"
    );
}

/// An update may rename an account, move it to another space and replace its passwords in one
/// transaction; a taken or ever-deleted identity is a conflict, an unknown space `NotFound`,
/// and nothing of a refused update is kept. An e-mail names an account of one space only
/// when exactly one has it (ASCII case ignored).
async fn account_identity_update_and_email_lookup(db: Db) {
    let store = db.migrated().await;
    let alice = account(&store, "alice", "a.example").await;
    let bob = account(&store, "bob", "a.example").await;
    let gone = account(&store, "gone", "a.example").await;
    account(&store, "carol", "b.example").await;
    assert!(store.delete_account(gone, T0).await.unwrap());
    store
        .replace_passwords(alice, &[password(Algorithm::Md5, "old")])
        .await
        .unwrap();

    let rename = AccountUpdate {
        username: Some("alicia".into()),
        passwords: Some(vec![password(Algorithm::Sha256, "new")]),
        ..AccountUpdate::default()
    };
    let renamed = store
        .update_account(alice, &rename, T0 + 1)
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(renamed.username, "alicia");
    assert_eq!(
        stored_passwords(&store, alice).await,
        vec![(Algorithm::Sha256, "new".to_string())]
    );
    assert_eq!(
        store
            .account_by_identity("alicia", "a.example")
            .await
            .unwrap()
            .map(|a| a.id),
        Some(alice)
    );
    assert_eq!(
        store
            .account_by_identity("alice", "a.example")
            .await
            .unwrap(),
        None
    );

    for (taken, needle) in [("bob", "account"), ("gone", "account")] {
        let clash = AccountUpdate {
            username: Some(taken.into()),
            display_name: Some(Some("not kept".into())),
            passwords: Some(vec![]),
            ..AccountUpdate::default()
        };
        assert_conflict(store.update_account(alice, &clash, T0 + 2).await, needle);
    }
    let kept = store.account(alice).await.unwrap().expect("exists");
    assert_eq!(
        (kept.username.as_str(), kept.display_name),
        ("alicia", None)
    );
    assert_eq!(stored_passwords(&store, alice).await.len(), 1);

    let nowhere = AccountUpdate {
        domain: Some("nowhere.example".into()),
        ..AccountUpdate::default()
    };
    assert!(matches!(
        store.update_account(alice, &nowhere, T0 + 3).await,
        Err(StoreError::NotFound)
    ));
    let moved = store
        .update_account(
            alice,
            &AccountUpdate {
                domain: Some("b.example".into()),
                ..AccountUpdate::default()
            },
            T0 + 4,
        )
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(moved.domain, "b.example");
    let (in_b, _) = store.list_accounts(Some("b.example"), 0, 10).await.unwrap();
    assert_eq!(in_b.len(), 2);

    // E-mail lookups, within one space.
    let mail = |v: &str| AccountUpdate {
        email: Some(Some(v.to_string())),
        ..AccountUpdate::default()
    };
    store
        .update_account(bob, &mail("Bob@Mail.example"), T0)
        .await
        .unwrap();
    let found = store
        .account_bundle_by_email("a.example", "bob@mail.EXAMPLE")
        .await
        .unwrap()
        .expect("bob");
    assert_eq!(found.account.id, bob);
    assert_eq!(
        store
            .account_bundle_by_email("b.example", "bob@mail.example")
            .await
            .unwrap(),
        None,
        "another space's account is not found"
    );
    let twin = account(&store, "twin", "a.example").await;
    store
        .update_account(twin, &mail("bob@mail.example"), T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .account_bundle_by_email("a.example", "bob@mail.example")
            .await
            .unwrap(),
        None,
        "two accounts with one e-mail name neither"
    );
}

//! `TestApp`: the real provisio server (the library's own accept loop and routes) on
//! 127.0.0.1:0, over a fresh SQLite file or a fresh PostgreSQL schema, plus helpers to create
//! spaces, accounts and tokens directly in its store.

use provisio::app::{self, Running};
use provisio::config::Settings;
use provisio::model::{Account, Algorithm, Space, now_ms};
use provisio::secret::hash_password;
use provisio::state::AppState;
use provisio::store::NewAccount;
use std::path::PathBuf;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temp dir.
    Sqlite,
    /// A fresh schema in the local PostgreSQL.
    Postgres,
}

/// A running server and its state.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The server's state (store, hooks, settings).
    pub state: AppState,
    /// The temp dir holding the SQLite file and the hooks dir.
    pub dir: tempfile::TempDir,
    /// The hooks directory the server uses (empty unless the test fills it).
    pub hooks_dir: PathBuf,
    /// An HTTP client.
    pub client: reqwest::Client,
    running: Option<Running>,
}

impl TestApp {
    /// Starts a server with default test settings; `None` when PostgreSQL is unavailable
    /// outside CI (the skip is printed).
    pub async fn start(backend: Backend) -> Option<TestApp> {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server after letting the test adjust its settings.
    pub async fn start_with(
        backend: Backend,
        adjust: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        let dir = tempfile::tempdir().expect("temp dir");
        let hooks_dir = dir.path().join("hooks");
        std::fs::create_dir_all(&hooks_dir).expect("hooks dir");
        let database = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("test.sqlite3").display()),
            Backend::Postgres => super::pg::fresh_postgres_url().await?,
        };
        let mut settings = Settings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().join("data"),
            database,
            pool_size: 8,
            ..Settings::default()
        };
        settings.hooks.dir = hooks_dir.clone();
        settings.hooks.watch = false;
        adjust(&mut settings);
        let state = app::build_state(settings, false)
            .await
            .expect("build state");
        let running = app::spawn(state.clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("spawn server");
        let base = format!("http://{}", running.addr);
        Some(TestApp {
            base,
            state,
            dir,
            hooks_dir,
            client: reqwest::Client::builder().build().expect("client"),
            running: Some(running),
        })
    }

    /// Creates a space served on host `domain`, after `adjust`; the server serves it at once.
    pub async fn space(&self, domain: &str, adjust: impl FnOnce(&mut Space)) -> Space {
        let mut space = Space::new(domain, domain);
        adjust(&mut space);
        let created = self
            .state
            .store
            .create_space(&space)
            .await
            .expect("create space");
        self.spaces_written().await;
        created
    }

    /// After a test wrote spaces straight into the store (as the API does before it refreshes):
    /// the server's snapshot catches up now rather than within the staleness bound.
    pub async fn spaces_written(&self) {
        self.state
            .spaces
            .refresh(provisio::spaces::Reason::Write)
            .await
            .expect("refresh the space snapshot");
    }

    /// Creates an account with a clear password hashed in the space's realm and algorithm.
    pub async fn account(&self, space: &Space, username: &str, password: &str) -> Account {
        self.account_with(space, username, password, |_| {}).await
    }

    /// Creates an account after letting the test adjust its fields.
    pub async fn account_with(
        &self,
        space: &Space,
        username: &str,
        password: &str,
        adjust: impl FnOnce(&mut NewAccount),
    ) -> Account {
        let mut new = NewAccount {
            username: username.to_string(),
            domain: space.domain.clone(),
            passwords: vec![hash_password(
                space.password_algorithm,
                username,
                &space.realm,
                password,
            )],
            ..Default::default()
        };
        adjust(&mut new);
        self.state
            .store
            .create_account(&new, now_ms())
            .await
            .expect("create account")
    }

    /// Mints a provisioning token (clear value).
    pub async fn token(&self, account: &Account) -> String {
        provisio::tokens::mint_provisioning_token(self.state.store.as_ref(), account)
            .await
            .expect("mint token")
            .token
    }

    /// A GET on `path` with the given Host header.
    pub fn get(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{}", self.base, path))
            .header("host", host)
    }

    /// A provisioning GET with the `x-linphone-provisioning` header.
    pub fn provision(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        self.get(host, path).header("x-linphone-provisioning", "1")
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("stop server");
        }
    }
}

/// HA1 computed independently of provisio's code: coreutils `md5sum` / `sha256sum`.
pub fn independent_ha1(algorithm: Algorithm, user: &str, realm: &str, password: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let tool = match algorithm {
        Algorithm::Md5 => "md5sum",
        Algorithm::Sha256 => "sha256sum",
    };
    let mut child = Command::new(tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("coreutils hash tool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{user}:{realm}:{password}").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("hash tool output");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

/// Runs one async test body on both stores: `both_backends!(name, |app| async move { … })`,
/// or `both_backends!(name, settings = |s| …, |app| …)` to adjust the settings first.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, settings = $adjust:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app = $crate::common::server::TestApp::start_with(
                    $crate::common::server::Backend::Sqlite,
                    $adjust,
                )
                .await
                .expect("sqlite always runs");
                ($body)(app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(app) = $crate::common::server::TestApp::start_with(
                    $crate::common::server::Backend::Postgres,
                    $adjust,
                )
                .await
                {
                    ($body)(app).await;
                }
            }
        }
    };
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app =
                    $crate::common::server::TestApp::start($crate::common::server::Backend::Sqlite)
                        .await
                        .expect("sqlite always runs");
                ($body)(app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(app) = $crate::common::server::TestApp::start(
                    $crate::common::server::Backend::Postgres,
                )
                .await
                {
                    ($body)(app).await;
                }
            }
        }
    };
}

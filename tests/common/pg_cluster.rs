//! A throwaway PostgreSQL cluster for tests that must stop, crash or reconfigure the server
//! (restarts, kills, TLS), which must never happen to the shared one on port 5432.
//!
//! `PgCluster::start()` runs `initdb` into a fresh temp dir, listens on a free port of
//! 127.0.0.1 with a private unix-socket directory, and starts the server with `pg_ctl`; the
//! cluster is stopped (`-m immediate`) and its files removed when the value is dropped. As
//! root (PostgreSQL refuses to run as root), the files belong to the `postgres` user and the
//! tools run through `runuser -u postgres --`; as any other user they run directly.
//!
//! The binaries come from `TEST_PG_BIN`, else `/usr/lib/postgresql/15/bin`, else the
//! newest `/usr/lib/postgresql/*/bin`. Without them the test is skipped with a visible
//! message, except in CI (`CI` set), where that is a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// How `pg_ctl stop` ends the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `-m fast`: backends are terminated (their transactions roll back), then a checkpoint.
    Fast,
    /// `-m immediate`: every process quits at once, as in a crash; the next start recovers
    /// from the WAL.
    Immediate,
}

impl StopMode {
    /// The `-m` argument.
    pub fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A private PostgreSQL server; stopped and deleted on drop.
pub struct PgCluster {
    /// Root of everything (owned by the cluster's user): `data/`, `sock/`, `server.log`.
    dir: tempfile::TempDir,
    /// Directory of `initdb`, `pg_ctl`, `pg_isready`.
    bin: PathBuf,
    /// TCP port on 127.0.0.1.
    port: u16,
    /// (uid, gid) of `postgres` when running as root; `None` runs the tools as ourselves.
    owner: Option<(u32, u32)>,
}

impl PgCluster {
    /// Creates and starts a cluster with the default test settings.
    pub fn start() -> Option<PgCluster> {
        Self::start_with(&[])
    }

    /// Creates and starts a cluster; `settings` are extra `postgresql.conf` lines (e.g.
    /// `ssl = on`). Files they name can be put in place first with [`PgCluster::write_file`]
    /// on a cluster made by [`PgCluster::init`].
    pub fn start_with(settings: &[&str]) -> Option<PgCluster> {
        let cluster = Self::init(settings)?;
        cluster.start_server();
        Some(cluster)
    }

    /// Creates a cluster without starting it (see [`PgCluster::start_server`]).
    pub fn init(settings: &[&str]) -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            let why = "PostgreSQL server binaries (initdb, pg_ctl) not found; set TEST_PG_BIN";
            if std::env::var_os("CI").is_some() {
                panic!("a private PostgreSQL cluster is required when CI is set: {why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let owner = if effective_uid() == 0 {
            Some(postgres_ids())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("provisio-pg-")
            .tempdir()
            .expect("temp dir");
        let cluster = PgCluster {
            dir,
            bin,
            port: free_port(),
            owner,
        };
        std::fs::create_dir(cluster.socket_dir()).expect("socket dir");
        cluster.chown(cluster.dir.path());
        cluster.chown(&cluster.socket_dir());
        let data = cluster.data_dir();
        cluster.tool(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        );
        let mut conf = format!(
            "\n# provisio test cluster\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{}'\nmax_connections = 200\nshared_buffers = 32MB\n\
             fsync = off\nlogging_collector = off\n",
            cluster.port,
            path_str(&cluster.socket_dir()),
        );
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("write postgresql.conf");
        Some(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (`postgresql.conf`, `pg_hba.conf`, certificates).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The private unix-socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Writes `contents` to `name` inside the data directory, owned by the cluster's user with
    /// `mode` (PostgreSQL wants 0600 for a TLS key).
    pub fn write_file(&self, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.data_dir().join(name);
        std::fs::write(&path, contents).expect("write cluster file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("chmod cluster file");
        self.chown(&path);
        path
    }

    /// Starts the server and waits until it accepts connections (`pg_ctl start -w`, after
    /// crash recovery when the last stop was immediate).
    pub fn start_server(&self) {
        let log = self.dir.path().join("server.log");
        self.tool(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data_dir()),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server (`pg_ctl stop -m MODE -w`); returns when it is down.
    pub fn stop_server(&self, mode: StopMode) {
        self.tool(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data_dir()),
                "-m",
                mode.as_arg(),
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
    }

    /// Whether the server accepts connections now (`pg_isready`).
    pub fn is_ready(&self) -> bool {
        self.run(
            "pg_isready",
            &["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()],
        )
        .status
        .success()
    }

    /// The server log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs a tool and panics with its output (and the server log) if it fails.
    fn tool(&self, name: &str, args: &[&str]) {
        let out = self.run(name, args);
        assert!(
            out.status.success(),
            "{name} {args:?} failed ({}):\n{}\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Runs a tool as the cluster's user, from the cluster's directory (which that user can
    /// read, unlike the test's working directory perhaps).
    fn run(&self, name: &str, args: &[&str]) -> Output {
        let tool = self.bin.join(name);
        let mut command = if self.owner.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&tool);
            c
        } else {
            Command::new(&tool)
        };
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()))
    }

    /// Gives `path` to the cluster's user (no-op when not root).
    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Best effort: the server may already be down.
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data_dir()),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

/// The directory holding `initdb` and `pg_ctl` (see the module doc).
fn find_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("TEST_PG_BIN").map(PathBuf::from) {
        return has_tools(&dir).then_some(dir);
    }
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if has_tools(&preferred) {
        return Some(preferred);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The effective user id (`id -u`).
fn effective_uid() -> u32 {
    id(&["-u"])
}

/// (uid, gid) of the `postgres` user.
fn postgres_ids() -> (u32, u32) {
    (id(&["-u", "postgres"]), id(&["-g", "postgres"]))
}

/// Runs `id ARGS` and parses the number it prints.
fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("id {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// A TCP port free on 127.0.0.1 right now (the OS picks it).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A path as the `&str` a command line takes (temp paths are UTF-8).
fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

//! The `provisio` command line: every command runs on the same layered configuration as
//! `serve`, and every command that creates something can answer in JSON (`--json`) for scripts.
//! One file per command group; this one holds the command tree, the dispatch and what the
//! groups share (identities, `KEY=VALUE` pairs, confirmations).

mod account;
mod admin;
mod hooks;
mod ops;
mod password;
mod space;
mod token;

pub use account::{AccountArgs, AccountCommand};
pub use admin::AdminCommand;
pub use hooks::{HooksCommand, RenderArgs, RouteArg};
pub use password::PasswordArgs;
pub use space::{AlgorithmArg, HeaderModeArg, HookFailureArg, SpaceCommand, SpaceSettings};
pub use token::TokenArgs;

use crate::app;
use crate::config::{HooksOverride, Overrides, Settings};
use crate::spaces::Reason;
use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

/// Help heading of the options every command takes (the configuration's layers).
const GLOBAL: &str = "Configuration (every command)";

/// Remote provisioning for Linphone: FlexiAPI-compatible, with per-tenant Rhai hooks.
#[derive(Debug, Parser)]
#[command(name = "provisio", version, about)]
pub struct Cli {
    /// Configuration file (default: provisio.toml when it exists).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PROVISIO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB[?sslmode=verify-full&sslrootcert=CA.pem]
    /// (default: SQLite in --data-dir).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "PROVISIO_DATABASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// Address to listen on (default 127.0.0.1:8318).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PROVISIO_LISTEN", value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// Directory of the embedded SQLite database (default ./provisio-data).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PROVISIO_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory of hook scripts (default ./hooks).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PROVISIO_HOOKS__DIR", value_name = "DIR")]
    pub hooks_dir: Option<PathBuf>,
    /// The server's public base URL used in QR codes and links (default: from the request's
    /// Host). A space's own is `space add|update --space-url`.
    #[arg(long, global = true, help_heading = GLOBAL, env = "PROVISIO_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Whether `--public-url` was typed on this command line (not taken from the environment):
    /// `space add|update` refuse it, since it was their flag for the space's URL before.
    #[arg(skip)]
    pub public_url_typed: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments (exiting with clap's message on a mistake), noting where
    /// `--public-url` came from.
    pub fn parse_args() -> Cli {
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        cli.public_url_typed = typed(&matches, "public_url");
        cli
    }
}

/// Whether a (global) argument was given on the command line, at any subcommand level.
fn typed(matches: &clap::ArgMatches, id: &str) -> bool {
    if matches.value_source(id) == Some(ValueSource::CommandLine) {
        return true;
    }
    matches.subcommand().is_some_and(|(_, sub)| typed(sub, id))
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (migrations are applied first).
    Serve {
        /// Also create a demo space and account and print its provisioning URL and QR code.
        #[arg(long)]
        demo: bool,
    },
    /// Same as `serve --demo`: one command to see provisioning work.
    Demo,
    /// Apply database migrations and exit.
    Migrate,
    /// Run one housekeeping pass (delete expired and spent rows) and print the counts per table.
    Purge {
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage spaces (tenants).
    #[command(subcommand)]
    Space(SpaceCommand),
    /// Manage accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Mint a provisioning token for an account and print its URLs.
    Token(TokenArgs),
    /// Manage API administrators and their keys.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Tools for hook authors, and the scripts stored in the database (push, pull).
    #[command(subcommand)]
    Hooks(HooksCommand),
    /// Print the document an account would receive, without a server.
    Render(RenderArgs),
    /// Probe /readyz of a running server: exit 0 on 200, 1 otherwise (container HEALTHCHECK).
    Healthcheck {
        /// URL to probe (default: /readyz on the listen address, loopback for 0.0.0.0 or ::).
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=300))]
        timeout: u64,
    },
    /// Show the audit trail: documents delivered (when, from where, which user agent) and
    /// changes to accounts, keys and spaces, newest first.
    Audit(crate::audit::cli::AuditArgs),
    /// Copy the embedded SQLite database to FILE (0600) while the server runs; PostgreSQL: pg_dump.
    Backup {
        /// Where to write the copy.
        file: PathBuf,
        /// Replace FILE when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print a completion script for SHELL (e.g. `provisio completions bash >
    /// /etc/bash_completion.d/provisio`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff: `provisio man > provisio.1; man ./provisio.1`).
    Man,
}

/// Loads the settings the command line points at (file, environment, flags).
pub fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    let overrides = Overrides {
        listen: cli.listen.clone(),
        database: cli.database.clone(),
        data_dir: cli.data_dir.clone(),
        public_url: cli.public_url.clone(),
        hooks: cli.hooks_dir.clone().map(|dir| HooksOverride { dir }),
    };
    Ok(Settings::load(cli.config.as_deref(), &overrides)?)
}

/// Runs the commands that need no configuration (`completions`, `man`), so they work even
/// where the configuration does not load; `None` for every other command.
pub fn run_standalone(cli: &Cli) -> Option<anyhow::Result<ExitCode>> {
    match &cli.command {
        Command::Completions { shell } => Some(ops::completions(*shell)),
        Command::Man => Some(ops::man()),
        _ => None,
    }
}

/// Runs a parsed command line with its loaded settings.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<ExitCode> {
    let public_url_typed = cli.public_url_typed;
    match cli.command {
        Command::Serve { demo } => serve(settings, demo).await,
        Command::Demo => serve(settings, true).await,
        Command::Migrate => {
            let store = app::open_store(&settings).await?;
            println!("migrations applied ({})", store.backend());
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge { json } => ops::purge(&settings, json).await,
        Command::Space(cmd) => space::run(&settings, cmd, public_url_typed).await,
        Command::Account(cmd) => account::run(&settings, cmd).await,
        Command::Token(args) => token::run(&settings, args).await,
        Command::Admin(cmd) => admin::run(&settings, cmd).await,
        Command::Hooks(cmd) => hooks::run(&settings, cmd).await,
        Command::Render(args) => hooks::render(&settings, args).await,
        Command::Healthcheck { url, timeout } => ops::healthcheck(&settings, url, timeout).await,
        Command::Audit(args) => crate::audit::cli::command(&settings, args).await,
        Command::Backup { file, force } => ops::backup(&settings, &file, force),
        Command::Completions { shell } => ops::completions(shell),
        Command::Man => ops::man(),
    }
}

/// Domain of the demo space.
pub const DEMO_DOMAIN: &str = crate::demo::DEMO_DOMAIN;
/// User of the demo account.
pub const DEMO_USER: &str = crate::demo::DEMO_USER;

async fn serve(settings: Settings, demo: bool) -> anyhow::Result<ExitCode> {
    let state = app::build_state(settings, true).await?;
    let announce = if demo {
        let token = crate::demo::prepare(&state.store, &state.settings).await?;
        state.spaces.refresh(Reason::Write).await?;
        Some(token)
    } else {
        None
    };
    let settings = state.settings.clone();
    app::serve(state, move |addr| {
        if let Some(token) = announce {
            let base = crate::demo::base_url(&settings, addr);
            print!("{}", crate::demo::announcement(&base, &token));
        }
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// A validation failure as one line: `field: reason, reason; field: …`.
fn describe_validation(e: &crate::error::AppError) -> String {
    match e {
        crate::error::AppError::Validation(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.join(", ")))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// Splits `user@domain`.
pub fn split_identity(identity: &str) -> anyhow::Result<(String, String)> {
    let identity = identity.strip_prefix("sip:").unwrap_or(identity);
    match identity.split_once('@') {
        Some((u, d)) if !u.is_empty() && !d.is_empty() => Ok((u.to_string(), d.to_string())),
        _ => bail!("expected user@domain, got {identity:?}"),
    }
}

/// Parses repeated `KEY<sep>VALUE` arguments.
fn parse_pairs(
    pairs: &[String],
    sep: char,
    what: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once(sep)
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("{what} {p:?}: expected KEY{sep}VALUE"))
        })
        .collect()
}

/// Asks before something that cannot be undone: true with `--yes`; otherwise asks `question`
/// on the terminal (y/N). Without a terminal to ask on (a script, a pipe) it refuses, so a
/// forgotten `--yes` never deletes by default.
fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question} Refusing without --yes: standard input is not a terminal to ask on");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

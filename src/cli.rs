//! The `provisio` command line: every command runs on the same layered configuration as
//! `serve`, and every command that creates something can answer in JSON (`--json`) for scripts.

use crate::app;
use crate::config::{HooksOverride, Overrides, Settings};
use crate::document::{self, RenderInput};
use crate::error::AppError;
use crate::hooks::Hooks;
use crate::lpconfig::ini;
use crate::model::{Algorithm, HeaderMode, HookFailure, Space, iso_time, now_ms};
use crate::request::{RequestInfo, RouteKind};
use crate::secret::{hash_password, new_password};
use crate::spaces::{Reason, Snapshot};
use crate::store::NewAccount;
use crate::tokens;
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Remote provisioning for Linphone: FlexiAPI-compatible, with per-tenant Rhai hooks.
#[derive(Debug, Parser)]
#[command(name = "provisio", version, about)]
pub struct Cli {
    /// Configuration file (default: provisio.toml when it exists; env PROVISIO_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB (default: SQLite in --data-dir).
    #[arg(long, global = true)]
    pub database: Option<String>,
    /// Address to listen on (default 127.0.0.1:8318).
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// Directory of the embedded SQLite database (default ./provisio-data).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Directory of hook scripts (default ./hooks).
    #[arg(long, global = true)]
    pub hooks_dir: Option<PathBuf>,
    /// Public base URL used in QR codes and links (default: from the request's Host).
    #[arg(long, global = true)]
    pub public_url: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
    /// Mint a provisioning token for an account and print its URL.
    Token {
        /// The account, user@domain.
        identity: String,
        /// Print the URL as a QR code too.
        #[arg(long)]
        qr: bool,
        /// Make the URL reset the password when fetched.
        #[arg(long)]
        reset_password: bool,
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage API administrators.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Tools for hook authors.
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
}

/// `provisio space …`
#[derive(Debug, Subcommand)]
pub enum SpaceCommand {
    /// Create a space.
    Add(Box<SpaceArgs>),
    /// List spaces.
    List {
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Settings of a new space.
#[derive(Debug, Args)]
pub struct SpaceArgs {
    /// SIP domain of the space's accounts.
    pub domain: String,
    /// HTTP host that selects this space (default: the domain).
    #[arg(long)]
    pub host: Option<String>,
    /// Display name (default: the domain).
    #[arg(long)]
    pub name: Option<String>,
    /// Digest realm (default: the domain).
    #[arg(long)]
    pub realm: Option<String>,
    /// Password algorithm: MD5 or SHA-256.
    #[arg(long, default_value = "SHA-256")]
    pub algorithm: String,
    /// x-linphone-provisioning guard: required, linphone-user-agent or off.
    #[arg(long, default_value = "required")]
    pub header_mode: String,
    /// What a failing hook does: fail (500) or skip (serve without its changes).
    #[arg(long, default_value = "fail")]
    pub hook_failure: String,
    /// Base linphonerc file (INI).
    #[arg(long)]
    pub base_rc: Option<PathBuf>,
    /// Custom provisioning entries file (INI).
    #[arg(long)]
    pub custom_entries: Option<PathBuf>,
    /// Mark every entry overwrite="true".
    #[arg(long)]
    pub overwrite_all: bool,
    /// URL of the vCard contact list (misc/contacts-vcard-list).
    #[arg(long)]
    pub vcard_list_url: Option<String>,
    /// Public base URL for this space's QR codes and wizard links.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Provisioning token lifetime in minutes (0 = never expires; at most 525600: one year).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(crate::api::validate::limits::TOKEN_LIFETIME_MINUTES))]
    pub token_lifetime: i64,
    /// Make this a super space (its admins manage every space).
    #[arg(long = "super")]
    pub super_space: bool,
    /// Answer in JSON.
    #[arg(long)]
    pub json: bool,
}

/// `provisio account …`
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account in an existing space.
    Add(AccountArgs),
    /// List accounts.
    List {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set or remove entries of an account's dictionary (seen by hooks as `account.dictionary`).
    Dict {
        /// The account, user@domain.
        identity: String,
        /// KEY=VALUE to set (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// KEY to remove (repeatable).
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Fields of a new account.
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// user@domain (the domain must be an existing space).
    pub identity: String,
    /// SIP password (default: a random one, printed once).
    #[arg(long)]
    pub password: Option<String>,
    /// Display name.
    #[arg(long)]
    pub display_name: Option<String>,
    /// E-mail.
    #[arg(long)]
    pub email: Option<String>,
    /// Phone number.
    #[arg(long)]
    pub phone: Option<String>,
    /// Admin of its space.
    #[arg(long)]
    pub admin: bool,
    /// Create it already activated.
    #[arg(long)]
    pub activated: bool,
    /// Dictionary entry KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Answer in JSON.
    #[arg(long)]
    pub json: bool,
}

/// `provisio admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account (and its space if needed) and print an API key once.
    Add {
        /// user@domain.
        identity: String,
        /// SIP password of the admin account.
        #[arg(long)]
        password: String,
        /// Super admin: manages every space (marks the admin's space super).
        #[arg(long = "super")]
        super_admin: bool,
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `provisio hooks …`
#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Compile every script of a directory and list the hooks each defines.
    Check {
        /// Hooks directory (default: the configured one).
        dir: Option<PathBuf>,
    },
    /// Run the fixtures under DIR/fixtures and diff against their expected XML.
    Test {
        /// Hooks directory (default: the configured one).
        dir: Option<PathBuf>,
        /// Rewrite the expected files with what the scripts produce now.
        #[arg(long)]
        bless: bool,
    },
}

/// `provisio render …`
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The account, user@domain (omit with --anonymous).
    pub identity: Option<String>,
    /// Render the anonymous /provisioning document of --host's space.
    #[arg(long)]
    pub anonymous: bool,
    /// Request host (selects the space; default: the account's space host).
    #[arg(long)]
    pub host: Option<String>,
    /// Route the hooks see: token, me, auth_token or anonymous.
    #[arg(long, default_value = "token")]
    pub route: String,
    /// Query parameter KEY=VALUE (repeatable).
    #[arg(long = "query", value_name = "KEY=VALUE")]
    pub query: Vec<String>,
    /// Header NAME:VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub header: Vec<String>,
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

/// Runs a parsed command line with its loaded settings.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { demo } => serve(settings, demo).await,
        Command::Demo => serve(settings, true).await,
        Command::Migrate => {
            let store = app::open_store(&settings).await?;
            println!("migrations applied ({})", store.backend());
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge { json } => purge_command(&settings, json).await,
        Command::Space(cmd) => space_command(&settings, cmd).await,
        Command::Account(cmd) => account_command(&settings, cmd).await,
        Command::Token {
            identity,
            qr,
            reset_password,
            json,
        } => token_command(&settings, &identity, qr, reset_password, json).await,
        Command::Admin(AdminCommand::Add {
            identity,
            password,
            super_admin,
            json,
        }) => {
            let store = app::open_store(&settings).await?;
            let out = crate::api::admin::create_admin(
                &store,
                &settings,
                &identity,
                &password,
                super_admin,
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("admin {identity} created");
                println!(
                    "API key (shown once): {}",
                    out["api_key"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Hooks(HooksCommand::Check { dir }) => {
            let dir = dir.map_or_else(
                || settings.hooks.dir.clone(),
                |d| crate::config::absolute(&d),
            );
            let ok = crate::hooks::tools::check_dir(&dir, &settings.hooks, &mut std::io::stdout())?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Hooks(HooksCommand::Test { dir, bless }) => {
            let dir = dir.map_or_else(
                || settings.hooks.dir.clone(),
                |d| crate::config::absolute(&d),
            );
            let ok = crate::hooks::tools::test_dir(
                &dir,
                &settings.hooks,
                bless,
                &mut std::io::stdout(),
            )?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Render(args) => render_command(&settings, args).await,
        Command::Healthcheck { url, timeout } => {
            let url = url.unwrap_or_else(|| crate::ops::default_probe_url(settings.listen));
            crate::ops::healthcheck(&url, std::time::Duration::from_secs(timeout)).await?;
            println!("{url}: ready");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(args) => crate::audit::cli::command(&settings, args).await,
        Command::Backup { file, force } => {
            println!("{}", crate::ops::backup(&settings, &file, force)?);
            Ok(ExitCode::SUCCESS)
        }
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

/// `provisio purge`: one housekeeping pass, whatever `housekeeping_interval_seconds` says.
async fn purge_command(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let store = app::open_store(settings).await?;
    let counts = crate::housekeeping::run_once(&store, settings).await?;
    if json {
        let tables: serde_json::Map<String, serde_json::Value> = counts
            .by_table()
            .iter()
            .map(|(table, rows)| ((*table).to_string(), json!(rows)))
            .collect();
        println!("{}", serde_json::to_string_pretty(&tables)?);
    } else {
        for (table, rows) in counts.by_table() {
            println!("{table}\t{rows}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_ini(path: &Option<PathBuf>, key: &str) -> anyhow::Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ini::parse(&text).map_err(|e| anyhow::anyhow!("{key} {}: {e}", path.display()))?;
    Ok(Some(text))
}

async fn space_command(settings: &Settings, cmd: SpaceCommand) -> anyhow::Result<ExitCode> {
    let store = app::open_store(settings).await?;
    match cmd {
        SpaceCommand::Add(a) => {
            let a = *a;
            let mut space = Space::new(&a.domain, a.host.as_deref().unwrap_or(&a.domain));
            space.name = a.name.unwrap_or_else(|| a.domain.clone());
            space.realm = a.realm.unwrap_or_else(|| a.domain.clone());
            space.password_algorithm = a
                .algorithm
                .parse::<Algorithm>()
                .map_err(anyhow::Error::msg)?;
            space.header_mode = a
                .header_mode
                .parse::<HeaderMode>()
                .map_err(anyhow::Error::msg)?;
            space.hook_failure = a
                .hook_failure
                .parse::<HookFailure>()
                .map_err(anyhow::Error::msg)?;
            space.base_rc = read_ini(&a.base_rc, "--base-rc")?;
            space.custom_entries = read_ini(&a.custom_entries, "--custom-entries")?;
            space.overwrite_all = a.overwrite_all;
            space.vcard_list_url = a.vcard_list_url;
            space.public_url = a.public_url;
            space.token_lifetime_minutes = a.token_lifetime;
            space.super_space = a.super_space;
            crate::api::validate::space(&space)
                .map_err(|e| anyhow::anyhow!("{}", describe_validation(&e)))?;
            let created = store.create_space(&space).await?;
            crate::audit::record_cli(
                &store,
                crate::audit::action::SPACE_CREATED,
                None,
                &created.domain,
            )
            .await;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&crate::api::json::space(&created))?
                );
            } else {
                println!("space {} created (host {})", created.domain, created.host);
            }
        }
        SpaceCommand::List { json } => {
            let spaces = store.list_spaces().await?;
            if json {
                let list: Vec<_> = spaces.iter().map(crate::api::json::space).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for s in spaces {
                    println!(
                        "{}\thost={}\trealm={}\t{}\theader={}",
                        s.domain,
                        s.host,
                        s.realm,
                        s.password_algorithm,
                        s.header_mode.as_str()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

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

async fn account_command(settings: &Settings, cmd: AccountCommand) -> anyhow::Result<ExitCode> {
    let store = app::open_store(settings).await?;
    match cmd {
        AccountCommand::Add(a) => {
            let (username, domain) = split_identity(&a.identity)?;
            let space = store.space_by_domain(&domain).await?.with_context(|| {
                format!("no space {domain}: create it with `provisio space add {domain}`")
            })?;
            let (password, generated) = match a.password {
                Some(p) => (p, false),
                None => (new_password(), true),
            };
            let new = NewAccount {
                username: username.clone(),
                domain,
                display_name: a.display_name,
                email: a.email,
                phone: a.phone,
                activated: a.activated,
                admin: a.admin,
                dictionary: parse_pairs(&a.set, '=', "--set")?,
                passwords: vec![hash_password(
                    space.password_algorithm,
                    &username,
                    &space.realm,
                    &password,
                )],
                ..Default::default()
            };
            crate::api::validate::new_account(&new, Some(&password), settings.min_password_length)
                .map_err(|e| anyhow::anyhow!("{}", describe_validation(&e)))?;
            let account = store.create_account(&new, now_ms()).await?;
            crate::audit::record_cli(
                &store,
                crate::audit::action::ACCOUNT_CREATED,
                Some(&account),
                "",
            )
            .await;
            if a.json {
                let mut v =
                    crate::api::json::account(&account, &store.passwords(account.id).await?, None);
                if generated {
                    v["password"] = json!(password);
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("account {} created (id {})", account.sip_uri(), account.id);
                if generated {
                    println!("password (shown once): {password}");
                }
            }
        }
        AccountCommand::List { domain, json } => {
            let (accounts, total) = store.list_accounts(domain.as_deref(), 0, i64::MAX).await?;
            if json {
                let list: Vec<_> = accounts
                    .iter()
                    .map(|a| crate::api::json::account(a, &[], None))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"total": total, "data": list}))?
                );
            } else {
                for a in accounts {
                    println!(
                        "{}\t{}\tactivated={}\tblocked={}\tadmin={}",
                        a.id,
                        a.sip_uri(),
                        a.activated,
                        a.blocked,
                        a.admin
                    );
                }
            }
        }
        AccountCommand::Dict {
            identity,
            set,
            unset,
            json,
        } => {
            let (username, domain) = split_identity(&identity)?;
            let account = store
                .account_by_identity(&username, &domain)
                .await?
                .with_context(|| format!("no account {identity}"))?;
            let mut dictionary = account.dictionary.clone();
            dictionary.extend(parse_pairs(&set, '=', "--set")?);
            for key in unset {
                dictionary.remove(&key);
            }
            crate::api::validate::dictionary(&dictionary)
                .map_err(|e| anyhow::anyhow!("{}", describe_validation(&e)))?;
            let update = crate::store::AccountUpdate {
                dictionary: Some(dictionary),
                ..Default::default()
            };
            let account = store
                .update_account(account.id, &update, now_ms())
                .await?
                .with_context(|| format!("no account {identity}"))?;
            crate::audit::record_cli(
                &store,
                crate::audit::action::ACCOUNT_UPDATED,
                Some(&account),
                "",
            )
            .await;
            if json {
                println!("{}", serde_json::to_string_pretty(&account.dictionary)?);
            } else {
                for (k, v) in &account.dictionary {
                    println!("{k}={v}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn token_command(
    settings: &Settings,
    identity: &str,
    qr: bool,
    reset_password: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = app::open_store(settings).await?;
    let (username, domain) = split_identity(identity)?;
    let account = store
        .account_by_identity(&username, &domain)
        .await?
        .with_context(|| format!("no account {identity}"))?;
    let space = store
        .space_by_domain(&domain)
        .await?
        .with_context(|| format!("no space {domain}"))?;
    let minted = tokens::mint(store.as_ref(), &space, &account).await?;
    crate::audit::record_cli(
        &store,
        crate::audit::action::TOKEN_MINTED,
        Some(&account),
        "",
    )
    .await;
    let base = app::public_base(settings, &space);
    let mut url = format!("{base}/provisioning/{}", minted.token);
    if reset_password {
        url.push_str("?reset_password=1");
    }
    let wizard = format!("{base}/wizard/{}", minted.token);
    if json {
        let v = json!({
            "account": account.sip_uri(),
            "provisioning_token": minted.token,
            "provisioning_token_expire_at": minted.expires_at.map(iso_time),
            "provisioning_url": url,
            "qrcode_url": format!("{base}/provisioning/qrcode/{}", minted.token),
            "wizard_url": wizard,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{url}");
        println!("wizard: {wizard}");
    }
    if qr {
        println!("{}", crate::qr::terminal(&url)?);
    }
    Ok(ExitCode::SUCCESS)
}

async fn render_command(settings: &Settings, args: RenderArgs) -> anyhow::Result<ExitCode> {
    let store = app::open_store(settings).await?;
    let hooks = Hooks::load(&settings.hooks)?;
    let route = match args.route.as_str() {
        "token" => RouteKind::Token,
        "me" => RouteKind::Me,
        "auth_token" => RouteKind::AuthToken,
        "anonymous" => RouteKind::Anonymous,
        other => bail!("unknown route {other:?} (token, me, auth_token, anonymous)"),
    };
    let bundle = match (&args.identity, args.anonymous) {
        (Some(identity), false) => {
            let (username, domain) = split_identity(identity)?;
            Some(
                store
                    .account_bundle_by_identity(&username, &domain)
                    .await?
                    .with_context(|| format!("no account {identity}"))?,
            )
        }
        (None, true) => None,
        _ => bail!("give either an account (user@domain) or --anonymous"),
    };
    // The server's own space resolution, on a snapshot loaded for this one render.
    let spaces = Snapshot::load(store.as_ref()).await?;
    let account_space = bundle
        .as_ref()
        .and_then(|b| spaces.by_domain(&b.account.domain).cloned());
    let host = match (&args.host, &account_space) {
        (Some(h), _) => h.clone(),
        (None, Some(s)) => s.space.host.clone(),
        (None, None) => bail!("--anonymous needs --host to select a space"),
    };
    let space = spaces
        .for_host(&host)
        .cloned()
        .ok_or_else(|| AppError::NotFound("Host not configured".to_string()))?;
    let mut request = RequestInfo::synthetic(&host, "/provisioning", route);
    request.query = parse_pairs(&args.query, '=', "--query")?;
    request.headers = parse_pairs(&args.header, ':', "--header")?
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let (account, passwords) =
        bundle.map_or((None, Vec::new()), |b| (Some(b.account), b.passwords));
    let input = RenderInput {
        space,
        account_space,
        account,
        passwords,
        request,
    };
    println!("{}", document::render(input, &hooks)?);
    Ok(ExitCode::SUCCESS)
}

//! `provisio hooks check|test` and `provisio render`: tools for hook authors, which run the
//! server's own code without a server.

use super::{parse_pairs, split_identity};
use crate::app;
use crate::config::Settings;
use crate::document::{self, RenderInput};
use crate::error::AppError;
use crate::hooks::Hooks;
use crate::request::{RequestInfo, RouteKind};
use crate::spaces::Snapshot;
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

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

/// The provisioning route a render pretends to serve (hooks see it as `request.route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RouteArg {
    /// `/provisioning/{token}`.
    #[value(name = "token")]
    Token,
    /// `/provisioning/me` (API key or Digest).
    #[value(name = "me")]
    Me,
    /// `/provisioning/auth_token/{token}`.
    #[value(name = "auth_token")]
    AuthToken,
    /// `/provisioning` without an account.
    #[value(name = "anonymous")]
    Anonymous,
}

impl From<RouteArg> for RouteKind {
    fn from(r: RouteArg) -> Self {
        match r {
            RouteArg::Token => RouteKind::Token,
            RouteArg::Me => RouteKind::Me,
            RouteArg::AuthToken => RouteKind::AuthToken,
            RouteArg::Anonymous => RouteKind::Anonymous,
        }
    }
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
    /// Route the hooks see.
    #[arg(long, value_enum, default_value = "token")]
    pub route: RouteArg,
    /// Query parameter KEY=VALUE (repeatable).
    #[arg(long = "query", value_name = "KEY=VALUE")]
    pub query: Vec<String>,
    /// Header NAME:VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub header: Vec<String>,
}

/// Runs `hooks …`.
pub fn run(settings: &Settings, cmd: HooksCommand) -> anyhow::Result<ExitCode> {
    let ok = match cmd {
        HooksCommand::Check { dir } => crate::hooks::tools::check_dir(
            &hooks_dir(settings, dir),
            &settings.hooks,
            &mut std::io::stdout(),
        )?,
        HooksCommand::Test { dir, bless } => crate::hooks::tools::test_dir(
            &hooks_dir(settings, dir),
            &settings.hooks,
            bless,
            &mut std::io::stdout(),
        )?,
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The directory given, else the configured one.
fn hooks_dir(settings: &Settings, dir: Option<PathBuf>) -> PathBuf {
    dir.map_or_else(
        || settings.hooks.dir.clone(),
        |d| crate::config::absolute(&d),
    )
}

/// Runs `render`.
pub async fn render(settings: &Settings, args: RenderArgs) -> anyhow::Result<ExitCode> {
    let store = app::open_store(settings).await?;
    let hooks = Hooks::load(&settings.hooks)?;
    let route = RouteKind::from(args.route);
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

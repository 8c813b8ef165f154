//! `provisio hooks check|test|push|pull` and `provisio render`: tools for hook authors, which
//! run the server's own code without a server. `push` and `pull` work on the configured
//! database directly, as the other commands do.

use super::{parse_pairs, split_identity};
use crate::app;
use crate::audit::{self, Actor};
use crate::config::Settings;
use crate::document::{self, RenderInput};
use crate::error::AppError;
use crate::hooks::Hooks;
use crate::hooks::db::{self, StoredFixture};
use crate::hooks::set::{self, FileKind};
use crate::hooks::tools;
use crate::model::now_ms;
use crate::request::{RequestInfo, RouteKind};
use crate::spaces::Snapshot;
use crate::store::NewHookScript;
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
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
    /// Store every script of DIR in the database as a new version (those that changed), with
    /// the fixtures under DIR/fixtures, through the API's validation: all go live together on
    /// every instance, or none does.
    Push {
        /// Directory of `*.rhai` scripts (and `fixtures/<case>/`).
        dir: PathBuf,
        /// Why (kept with each version stored).
        #[arg(long)]
        comment: Option<String>,
        /// Validate only; store nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the live scripts of the database into DIR (`<name>.rhai`, and their fixtures as
    /// `fixtures/<case>/`), replacing files of the same names.
    Pull {
        /// Where to write (created when missing).
        dir: PathBuf,
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
pub async fn run(settings: &Settings, cmd: HooksCommand) -> anyhow::Result<ExitCode> {
    let ok = match cmd {
        HooksCommand::Push {
            dir,
            comment,
            dry_run,
        } => push(settings, &crate::config::absolute(&dir), comment, dry_run).await?,
        HooksCommand::Pull { dir } => pull(settings, &crate::config::absolute(&dir)).await?,
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

/// One script of a pushed directory.
struct Pushed {
    /// Its name in the database.
    name: String,
    /// Its source.
    source: String,
    /// The fixtures that go with it.
    fixtures: Vec<StoredFixture>,
}

/// Reads the fixture cases of `dir/fixtures` as stored fixtures, each with the domain of its
/// space.
fn read_cases(dir: &Path) -> anyhow::Result<Vec<(String, StoredFixture)>> {
    let fixtures_dir = dir.join(tools::FIXTURES_DIR);
    let entries = match std::fs::read_dir(&fixtures_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", fixtures_dir.display())),
    };
    let mut cases: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut out = Vec::new();
    for case in cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fixture_path = case.join(tools::FIXTURE_FILE);
        let fixture = std::fs::read_to_string(&fixture_path)
            .with_context(|| format!("reading {}", fixture_path.display()))?;
        let parsed = tools::Fixture::parse(&fixture)
            .map_err(|e| anyhow::anyhow!("{}: {e}", fixture_path.display()))?;
        let expected_path = case.join(tools::EXPECTED_FILE);
        let expected = match std::fs::read_to_string(&expected_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", expected_path.display()));
            }
        };
        out.push((
            parsed.space.domain.to_ascii_lowercase(),
            StoredFixture {
                name,
                fixture,
                expected,
            },
        ));
    }
    Ok(out)
}

/// `hooks push DIR`: validates the directory's scripts with the database's other live
/// scripts (and the configured directory's, per `hooks.source`), runs every fixture of DIR,
/// then stores the scripts that changed in one transaction. A case goes with its space's
/// script when DIR has one, else with `default`. Returns whether it succeeded.
async fn push(
    settings: &Settings,
    dir: &Path,
    comment: Option<String>,
    dry_run: bool,
) -> anyhow::Result<bool> {
    if !settings.hooks.source.reads_database() {
        bail!(
            "hooks.source is \"files\": this deployment serves no script of the database \
             (set it to \"both\" or \"database\" first)"
        );
    }
    if !dir.is_dir() {
        bail!("{}: no such directory", dir.display());
    }
    let sources = set::read_sources(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut scripts = Vec::new();
    for source in sources.files {
        let stem = source.name.trim_end_matches(".rhai");
        let (name, _) = db::parse_name(stem)
            .map_err(|why| anyhow::anyhow!("{}: cannot be pushed: {why}", source.name))?;
        let text = source.text.map_err(|e| anyhow::anyhow!("{e}"))?;
        scripts.push(Pushed {
            name,
            source: text,
            fixtures: Vec::new(),
        });
    }
    if scripts.is_empty() {
        bail!("{}: no *.rhai script to push", dir.display());
    }
    let cases = read_cases(dir)?;
    let all_fixtures: Vec<StoredFixture> = cases.iter().map(|(_, f)| f.clone()).collect();
    db::check_fixtures(&all_fixtures).map_err(|why| anyhow::anyhow!("{why}"))?;
    for (domain, fixture) in cases {
        let owner = scripts
            .iter()
            .position(|s| s.name == domain)
            .or_else(|| scripts.iter().position(|s| s.name == "default"));
        match owner {
            Some(i) => scripts[i].fixtures.push(fixture),
            None => println!(
                "note: fixture {} is run but not stored (no {domain}.rhai or default.rhai in {})",
                fixture.name,
                dir.display()
            ),
        }
    }

    let store = app::open_store(settings).await?;
    let live = db::live_scripts(store.as_ref()).await?;
    let mut candidate = live.clone();
    for s in &scripts {
        candidate = db::with_change(&candidate, &s.name, Some(&s.source));
    }
    let validator = Hooks::validator(&settings.hooks);
    let checked = tokio::task::spawn_blocking(move || {
        validator
            .check_candidate(candidate, &all_fixtures)
            .map(|c| c.warnings)
    })
    .await
    .context("validation task")?;
    let warnings = match checked {
        Ok(warnings) => warnings,
        Err(refused) => {
            println!("refused: nothing was stored");
            for line in refused.lines() {
                println!("  {line}");
            }
            return Ok(false);
        }
    };
    for w in warnings {
        println!("warning: {w}");
    }
    let stored = store.live_hook_scripts().await?;
    let mut changes = Vec::new();
    for s in scripts {
        let fixtures = db::fixtures_column(&s.fixtures);
        let current = stored.iter().find(|r| r.name == s.name);
        if current.is_some_and(|r| r.source.as_deref() == Some(&s.source) && r.fixtures == fixtures)
        {
            println!(
                "unchanged {} (version {})",
                s.name,
                current.map_or(0, |r| r.version)
            );
            continue;
        }
        changes.push(NewHookScript {
            name: s.name,
            source: Some(s.source),
            fixtures,
            author: "cli".to_string(),
            author_account_id: None,
            comment: comment.clone(),
        });
    }
    if dry_run {
        for c in &changes {
            println!("would store {}", c.name);
        }
        println!("valid: nothing stored (--dry-run)");
        return Ok(true);
    }
    if changes.is_empty() {
        return Ok(true);
    }
    let saved = store.save_hook_scripts(&changes, now_ms()).await?;
    let mut events = Vec::new();
    for r in &saved {
        println!("stored {} version {}", r.name, r.version);
        let mut event = audit::event(&Actor::Cli, audit::action::HOOK_SAVED)
            .target(r.name.as_str())
            .detail(format!("version {}", r.version));
        if let Ok((_, FileKind::Space(domain))) = db::parse_name(&r.name) {
            event = event.space(domain);
        }
        events.push(event);
    }
    audit::record_now(store.as_ref(), &events).await;
    Ok(true)
}

/// `hooks pull DIR`: writes every live script of the database as `DIR/<name>.rhai` and its
/// fixtures as `DIR/fixtures/<case>/` (a case name already written by another script is
/// prefixed with that script's name).
async fn pull(settings: &Settings, dir: &Path) -> anyhow::Result<bool> {
    let store = app::open_store(settings).await?;
    let records = store.live_hook_scripts().await?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cases = std::collections::BTreeSet::new();
    for r in &records {
        let (Some(source), Ok(_)) = (&r.source, db::parse_name(&r.name)) else {
            continue;
        };
        let path = dir.join(format!("{}.rhai", r.name));
        std::fs::write(&path, source).with_context(|| format!("writing {}", path.display()))?;
        for f in db::stored_fixtures(r.fixtures.as_deref()) {
            let mut case = f.name.clone();
            if !cases.insert(case.clone()) {
                case = format!("{}-{}", r.name, f.name);
                cases.insert(case.clone());
            }
            let case_dir = dir.join(tools::FIXTURES_DIR).join(&case);
            std::fs::create_dir_all(&case_dir)
                .with_context(|| format!("creating {}", case_dir.display()))?;
            std::fs::write(case_dir.join(tools::FIXTURE_FILE), &f.fixture)?;
            if let Some(expected) = &f.expected {
                std::fs::write(case_dir.join(tools::EXPECTED_FILE), expected)?;
            }
        }
        println!("pulled {} version {}", r.name, r.version);
    }
    if records.is_empty() {
        println!("no hook script in the database");
    }
    Ok(true)
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
    let hooks = app::load_hooks(settings, store.as_ref()).await?;
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

//! `provisio space add|list|update|delete`: tenants, with the settings the API's
//! `/api/spaces` takes (one flag set for add and update).

use super::{confirm, describe_validation};
use crate::app;
use crate::config::Settings;
use crate::lpconfig::ini;
use crate::model::{Algorithm, HeaderMode, HookFailure, Space};
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `provisio space …`
#[derive(Debug, Subcommand)]
pub enum SpaceCommand {
    /// Create a space.
    Add(Box<SpaceTarget>),
    /// List spaces.
    List {
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change settings of a space (only the flags given; an empty value clears an optional one).
    Update(Box<SpaceTarget>),
    /// Delete a space and, with it, every account in it (asks unless --yes).
    Delete {
        /// SIP domain of the space.
        domain: String,
        /// Do not ask (required when standard input is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// A space and settings to give it.
#[derive(Debug, Args)]
pub struct SpaceTarget {
    /// SIP domain of the space's accounts.
    pub domain: String,
    /// The settings.
    #[command(flatten)]
    pub settings: SpaceSettings,
    /// Answer in JSON.
    #[arg(long)]
    pub json: bool,
}

/// Password algorithm of a space's new passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlgorithmArg {
    /// RFC 2617 MD5 (what liblinphone assumes when a credential names no algorithm).
    #[value(name = "MD5")]
    Md5,
    /// RFC 7616 SHA-256 (FlexiAPI's default).
    #[value(name = "SHA-256")]
    Sha256,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(a: AlgorithmArg) -> Self {
        match a {
            AlgorithmArg::Md5 => Algorithm::Md5,
            AlgorithmArg::Sha256 => Algorithm::Sha256,
        }
    }
}

/// The `x-linphone-provisioning` guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HeaderModeArg {
    /// The header must be present (FlexiAPI, liblinphone ≥ 5.3).
    Required,
    /// The header, or a User-Agent naming Linphone (liblinphone < 5.3).
    LinphoneUserAgent,
    /// No check: closed networks and tests only.
    Off,
}

impl From<HeaderModeArg> for HeaderMode {
    fn from(m: HeaderModeArg) -> Self {
        match m {
            HeaderModeArg::Required => HeaderMode::Required,
            HeaderModeArg::LinphoneUserAgent => HeaderMode::LinphoneUserAgent,
            HeaderModeArg::Off => HeaderMode::Off,
        }
    }
}

/// What a failing hook does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HookFailureArg {
    /// Refuse the request with 500: the phone keeps its previous configuration.
    Fail,
    /// Serve the document without the failing script's changes.
    Skip,
}

impl From<HookFailureArg> for HookFailure {
    fn from(f: HookFailureArg) -> Self {
        match f {
            HookFailureArg::Fail => HookFailure::Fail,
            HookFailureArg::Skip => HookFailure::Skip,
        }
    }
}

/// Settings of a space; on `add` an absent flag means the default named, on `update` it
/// leaves the setting as it is.
#[derive(Debug, Default, Args)]
pub struct SpaceSettings {
    /// HTTP host that selects this space (add: default the domain).
    #[arg(long)]
    pub host: Option<String>,
    /// Display name (add: default the domain).
    #[arg(long)]
    pub name: Option<String>,
    /// Digest realm (add: default the domain; cannot change while the space has accounts).
    #[arg(long)]
    pub realm: Option<String>,
    /// Password algorithm (add: default SHA-256).
    #[arg(long, value_enum, ignore_case = true)]
    pub algorithm: Option<AlgorithmArg>,
    /// x-linphone-provisioning guard (add: default required).
    #[arg(long, value_enum)]
    pub header_mode: Option<HeaderModeArg>,
    /// What a failing hook does (add: default fail).
    #[arg(long, value_enum)]
    pub hook_failure: Option<HookFailureArg>,
    /// Base linphonerc file (INI; an empty value removes it).
    #[arg(long, value_name = "FILE")]
    pub base_rc: Option<PathBuf>,
    /// Custom provisioning entries file (INI; an empty value removes it).
    #[arg(long, value_name = "FILE")]
    pub custom_entries: Option<PathBuf>,
    /// Mark every entry overwrite="true" (`--overwrite-all=false` to stop).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub overwrite_all: Option<bool>,
    /// URL of the vCard contact list (misc/contacts-vcard-list; an empty value removes it).
    #[arg(long, value_name = "URL")]
    pub vcard_list_url: Option<String>,
    /// This space's public base URL for QR codes and wizard links (overrides the server's
    /// --public-url for it; an empty value removes it).
    #[arg(long, value_name = "URL")]
    pub space_url: Option<String>,
    /// Provisioning token lifetime in minutes (0 = never expires; at most 525600: one year;
    /// add: default 0).
    #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(i64).range(crate::api::validate::limits::TOKEN_LIFETIME_MINUTES))]
    pub token_lifetime: Option<i64>,
    /// Make this a super space: its admins manage every space (`--super=false` to stop).
    #[arg(long = "super", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub super_space: Option<bool>,
    /// Accept verified client certificates (`CN=sip:user@domain`) on /provisioning/me
    /// (`--client-certificate-authentication=false` to stop; add: default false).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub client_certificate_authentication: Option<bool>,
    /// Base URL of the space's OpenID Connect provider (e.g. https://sso.example.com/): JWT
    /// bearer tokens it signs then authenticate the space's accounts.
    #[arg(long, value_name = "URL")]
    pub oidc_server_url: Option<String>,
    /// The provider's realm (named in the Bearer challenge).
    #[arg(long, value_name = "REALM")]
    pub oidc_realm: Option<String>,
    /// PEM file of the provider's signing public key, RSA or EC P-256 (an empty value removes
    /// it); or --oidc-jwks-url.
    #[arg(long, value_name = "FILE")]
    pub oidc_public_key: Option<String>,
    /// URL of the provider's JWKS, fetched and cached (an empty value removes it); or
    /// --oidc-public-key.
    #[arg(long, value_name = "URL")]
    pub oidc_jwks_url: Option<String>,
    /// Claim holding the account's SIP URI (default sip_identity; `email` is the fallback).
    #[arg(long, value_name = "CLAIM")]
    pub oidc_sip_identifier_claim: Option<String>,
    /// `aud` every token must carry (an empty value stops checking it).
    #[arg(long, value_name = "AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// `iss` every token must carry (an empty value stops checking it).
    #[arg(long, value_name = "ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Make a bearer token the only way in on user routes and /provisioning/me: Digest and API
    /// keys are then refused, as in FlexiAPI (`--oidc-required=false` to stop; default false).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub oidc_required: Option<bool>,
    /// Remove the space's OpenID Connect provider (bearer tokens are no longer accepted).
    #[arg(long, conflicts_with_all = [
        "oidc_server_url", "oidc_realm", "oidc_public_key", "oidc_jwks_url",
        "oidc_sip_identifier_claim", "oidc_audience", "oidc_issuer", "oidc_required",
    ])]
    pub no_oidc: bool,
}

impl SpaceSettings {
    /// Applies the flags given to `space`.
    fn apply(&self, space: &mut Space) -> anyhow::Result<()> {
        if let Some(host) = &self.host {
            space.host = host.to_ascii_lowercase();
        }
        if let Some(name) = &self.name {
            space.name = name.clone();
        }
        if let Some(realm) = &self.realm {
            space.realm = realm.clone();
        }
        if let Some(algorithm) = self.algorithm {
            space.password_algorithm = algorithm.into();
        }
        if let Some(mode) = self.header_mode {
            space.header_mode = mode.into();
        }
        if let Some(failure) = self.hook_failure {
            space.hook_failure = failure.into();
        }
        if let Some(path) = &self.base_rc {
            space.base_rc = read_ini(path, "--base-rc")?;
        }
        if let Some(path) = &self.custom_entries {
            space.custom_entries = read_ini(path, "--custom-entries")?;
        }
        if let Some(all) = self.overwrite_all {
            space.overwrite_all = all;
        }
        if let Some(url) = &self.vcard_list_url {
            space.vcard_list_url = Some(url.clone()).filter(|u| !u.is_empty());
        }
        if let Some(url) = &self.space_url {
            space.public_url = Some(url.clone()).filter(|u| !u.is_empty());
        }
        if let Some(minutes) = self.token_lifetime {
            space.token_lifetime_minutes = minutes;
        }
        if let Some(super_space) = self.super_space {
            space.super_space = super_space;
        }
        if let Some(v) = self.client_certificate_authentication {
            space.client_certificate_authentication = v;
        }
        self.apply_oidc(space)
    }

    /// Applies the `--oidc-*` flags (over the defaults when the space has no provider yet).
    fn apply_oidc(&self, space: &mut Space) -> anyhow::Result<()> {
        if self.no_oidc {
            space.oidc = None;
            return Ok(());
        }
        let given = self.oidc_server_url.is_some()
            || self.oidc_realm.is_some()
            || self.oidc_public_key.is_some()
            || self.oidc_jwks_url.is_some()
            || self.oidc_sip_identifier_claim.is_some()
            || self.oidc_audience.is_some()
            || self.oidc_issuer.is_some()
            || self.oidc_required.is_some();
        if !given {
            return Ok(());
        }
        let mut oidc = space.oidc.clone().unwrap_or_default();
        let non_empty = |v: &String| Some(v.clone()).filter(|v| !v.is_empty());
        if let Some(url) = &self.oidc_server_url {
            oidc.server_url = url.clone();
        }
        if let Some(realm) = &self.oidc_realm {
            oidc.realm = realm.clone();
        }
        if let Some(path) = &self.oidc_public_key {
            // A text flag, not a path one: clap refuses an empty path, and '' removes the key.
            oidc.public_key = if path.is_empty() {
                None
            } else {
                Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("--oidc-public-key: reading {path}"))?,
                )
            };
        }
        if let Some(url) = &self.oidc_jwks_url {
            oidc.jwks_url = non_empty(url);
        }
        if let Some(claim) = &self.oidc_sip_identifier_claim {
            oidc.sip_identifier_claim = claim.clone();
        }
        if let Some(aud) = &self.oidc_audience {
            oidc.audience = non_empty(aud);
        }
        if let Some(iss) = &self.oidc_issuer {
            oidc.issuer = non_empty(iss);
        }
        if let Some(required) = self.oidc_required {
            oidc.required = required;
        }
        space.oidc = Some(oidc);
        Ok(())
    }
}

/// An INI file's text, checked; `None` for an empty path (removes the setting).
fn read_ini(path: &Path, flag: &str) -> anyhow::Result<Option<String>> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ini::parse(&text).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    Ok(Some(text))
}

/// Runs `space …`. `public_url_typed`: the global `--public-url` was on the command line.
pub async fn run(
    settings: &Settings,
    cmd: SpaceCommand,
    public_url_typed: bool,
) -> anyhow::Result<ExitCode> {
    if public_url_typed && matches!(cmd, SpaceCommand::Add(_) | SpaceCommand::Update(_)) {
        bail!("--public-url is the server's base URL; a space's own base URL is --space-url URL");
    }
    let store = app::open_store(settings).await?;
    match cmd {
        SpaceCommand::Add(target) => {
            let SpaceTarget {
                domain,
                settings: flags,
                json,
            } = *target;
            let mut space = Space::new(&domain, &domain);
            flags.apply(&mut space)?;
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
            if json {
                print_json(&created)?;
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
        SpaceCommand::Update(target) => {
            let SpaceTarget {
                domain,
                settings: flags,
                json,
            } = *target;
            let current = store
                .space_by_domain(&domain)
                .await?
                .with_context(|| format!("no space {domain}"))?;
            let mut space = current.clone();
            flags.apply(&mut space)?;
            if space.realm != current.realm {
                let (_, accounts) = store.list_accounts(Some(&current.domain), 0, 0).await?;
                if accounts > 0 {
                    bail!(
                        "the realm cannot change while the space has accounts ({accounts}): \
                         their passwords are hashed with it"
                    );
                }
            }
            crate::api::validate::space(&space)
                .map_err(|e| anyhow::anyhow!("{}", describe_validation(&e)))?;
            let updated = store.update_space(&space).await?;
            crate::audit::record_cli(
                &store,
                crate::audit::action::SPACE_UPDATED,
                None,
                &updated.domain,
            )
            .await;
            if json {
                print_json(&updated)?;
            } else {
                println!("space {} updated (host {})", updated.domain, updated.host);
            }
        }
        SpaceCommand::Delete { domain, yes } => {
            let space = store
                .space_by_domain(&domain)
                .await?
                .with_context(|| format!("no space {domain}"))?;
            let (_, accounts) = store.list_accounts(Some(&space.domain), 0, 0).await?;
            let question = format!(
                "Delete space {} and its {accounts} account(s), with their tokens and keys?",
                space.domain
            );
            if !confirm(&question, yes)? {
                eprintln!("nothing deleted");
                return Ok(ExitCode::FAILURE);
            }
            if !store.delete_space(&space.domain).await? {
                bail!("no space {domain}");
            }
            crate::audit::record_cli(
                &store,
                crate::audit::action::SPACE_DELETED,
                None,
                &space.domain,
            )
            .await;
            println!(
                "space {} deleted ({accounts} account(s) with it)",
                space.domain
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a space as the API shows it.
fn print_json(space: &Space) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&crate::api::json::space(space))?
    );
    Ok(())
}

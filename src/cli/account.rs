//! `provisio account add|list|dict|password|block|unblock|delete`: SIP accounts of existing
//! spaces.

use super::password::PasswordArgs;
use super::{confirm, describe_validation, parse_pairs, split_identity};
use crate::app;
use crate::config::Settings;
use crate::model::{Account, now_ms};
use crate::secret::{hash_password, new_password};
use crate::store::{AccountUpdate, DynStore, NewAccount};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use std::process::ExitCode;

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
    /// Set a new SIP password (from a file, standard input or the terminal; or --random).
    Password {
        /// The account, user@domain.
        identity: String,
        /// Where the password comes from.
        #[command(flatten)]
        password: PasswordArgs,
        /// Generate a random password and print it once.
        #[arg(long, conflicts_with_all = ["password", "password_file", "password_stdin", "password_prompt"])]
        random: bool,
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
    },
    /// Block an account: it is refused everywhere (provisioning, API) until unblocked.
    Block(AccountTarget),
    /// Unblock an account.
    Unblock(AccountTarget),
    /// Delete an account with its passwords, tokens and keys (asks unless --yes).
    Delete {
        /// The account, user@domain.
        identity: String,
        /// Do not ask (required when standard input is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// One account.
#[derive(Debug, Args)]
pub struct AccountTarget {
    /// The account, user@domain.
    pub identity: String,
    /// Answer in JSON.
    #[arg(long)]
    pub json: bool,
}

/// Fields of a new account.
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// user@domain (the domain must be an existing space).
    pub identity: String,
    /// The SIP password (default: a random one, printed once).
    #[command(flatten)]
    pub password: PasswordArgs,
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

/// The account `user@domain`, or an error naming it.
async fn find(store: &DynStore, identity: &str) -> anyhow::Result<Account> {
    let (username, domain) = split_identity(identity)?;
    store
        .account_by_identity(&username, &domain)
        .await?
        .with_context(|| format!("no account {identity}"))
}

/// Prints an account as the API shows it (with `password` when one was generated).
async fn print_json(
    store: &DynStore,
    account: &Account,
    generated: Option<&str>,
) -> anyhow::Result<()> {
    let mut v = crate::api::json::account(account, &store.passwords(account.id).await?, None);
    if let Some(password) = generated {
        v["password"] = json!(password);
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// Runs `account …`.
pub async fn run(settings: &Settings, cmd: AccountCommand) -> anyhow::Result<ExitCode> {
    let store = app::open_store(settings).await?;
    match cmd {
        AccountCommand::Add(a) => add(settings, &store, a).await?,
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
            let account = find(&store, &identity).await?;
            let mut dictionary = account.dictionary.clone();
            dictionary.extend(parse_pairs(&set, '=', "--set")?);
            for key in unset {
                dictionary.remove(&key);
            }
            crate::api::validate::dictionary(&dictionary)
                .map_err(|e| anyhow::anyhow!("{}", describe_validation(&e)))?;
            let update = AccountUpdate {
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
        AccountCommand::Password {
            identity,
            password,
            random,
            json,
        } => {
            let account = find(&store, &identity).await?;
            let space = store
                .space_by_domain(&account.domain)
                .await?
                .with_context(|| format!("no space {}", account.domain))?;
            let (clear, generated) = if random {
                (new_password(), true)
            } else {
                (password.required(&identity)?, false)
            };
            crate::api::validate::password_rule(&clear, settings.min_password_length)
                .map_err(anyhow::Error::msg)?;
            let hashed = hash_password(
                space.password_algorithm,
                &account.username,
                &space.realm,
                &clear,
            );
            store.replace_passwords(account.id, &[hashed]).await?;
            crate::audit::record_cli(
                &store,
                crate::audit::action::PASSWORD_RESET,
                Some(&account),
                "",
            )
            .await;
            if json {
                print_json(&store, &account, generated.then_some(clear.as_str())).await?;
            } else {
                println!("password of {} replaced", account.sip_uri());
                if generated {
                    println!("password (shown once): {clear}");
                }
            }
        }
        AccountCommand::Block(target) => set_blocked(&store, target, true).await?,
        AccountCommand::Unblock(target) => set_blocked(&store, target, false).await?,
        AccountCommand::Delete { identity, yes } => {
            let account = find(&store, &identity).await?;
            let question = format!(
                "Delete account {} with its passwords, tokens and API keys?",
                account.sip_uri()
            );
            if !confirm(&question, yes)? {
                eprintln!("nothing deleted");
                return Ok(ExitCode::FAILURE);
            }
            if !store.delete_account(account.id, now_ms()).await? {
                anyhow::bail!("no account {identity}");
            }
            crate::audit::record_cli(
                &store,
                crate::audit::action::ACCOUNT_DELETED,
                Some(&account),
                "",
            )
            .await;
            println!("account {} deleted", account.sip_uri());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `account add`.
async fn add(settings: &Settings, store: &DynStore, a: AccountArgs) -> anyhow::Result<()> {
    let (username, domain) = split_identity(&a.identity)?;
    let space = store.space_by_domain(&domain).await?.with_context(|| {
        format!("no space {domain}: create it with `provisio space add {domain}`")
    })?;
    let (password, generated) = match a.password.given(&a.identity)? {
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
        store,
        crate::audit::action::ACCOUNT_CREATED,
        Some(&account),
        "",
    )
    .await;
    if a.json {
        print_json(store, &account, generated.then_some(password.as_str())).await?;
    } else {
        println!("account {} created (id {})", account.sip_uri(), account.id);
        if generated {
            println!("password (shown once): {password}");
        }
    }
    Ok(())
}

/// `account block|unblock`.
async fn set_blocked(store: &DynStore, target: AccountTarget, blocked: bool) -> anyhow::Result<()> {
    let account = find(store, &target.identity).await?;
    let update = AccountUpdate {
        blocked: Some(blocked),
        ..Default::default()
    };
    let account = store
        .update_account(account.id, &update, now_ms())
        .await?
        .with_context(|| format!("no account {}", target.identity))?;
    let action = if blocked {
        crate::audit::action::ACCOUNT_BLOCKED
    } else {
        crate::audit::action::ACCOUNT_UNBLOCKED
    };
    crate::audit::record_cli(store, action, Some(&account), "").await;
    if target.json {
        print_json(store, &account, None).await?;
    } else {
        let what = if blocked { "blocked" } else { "unblocked" };
        println!("account {} {what}", account.sip_uri());
    }
    Ok(())
}

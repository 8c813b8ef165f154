//! `provisio admin add|list|revoke`: API administrators and their keys, so an operator can
//! bootstrap the API, see who holds a key and take a leaked one back.

use super::password::PasswordArgs;
use crate::app;
use crate::config::Settings;
use crate::model::iso_time;
use anyhow::bail;
use clap::Subcommand;
use serde_json::json;
use std::process::ExitCode;

/// `provisio admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account (and its space if needed) and print an API key once.
    Add {
        /// user@domain.
        identity: String,
        /// SIP password of the admin account (asked on the terminal when not given).
        #[command(flatten)]
        password: PasswordArgs,
        /// Super admin: manages every space (marks the admin's space super).
        #[arg(long = "super")]
        super_admin: bool,
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
    },
    /// List admin accounts and their API keys (ids for `admin revoke`; never the keys).
    List {
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by id (from `admin list`): it is refused (401) at once.
    Revoke {
        /// The key's id.
        key_id: i64,
    },
}

/// Runs `admin …`.
pub async fn run(settings: &Settings, cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    let store = app::open_store(settings).await?;
    match cmd {
        AdminCommand::Add {
            identity,
            password,
            super_admin,
            json,
        } => {
            let password = password.required(&identity)?;
            let out = crate::api::admin::create_admin(
                &store,
                settings,
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
        }
        AdminCommand::List { json } => {
            let supers: std::collections::HashSet<String> = store
                .list_spaces()
                .await?
                .into_iter()
                .filter(|s| s.super_space)
                .map(|s| s.domain)
                .collect();
            let (accounts, _) = store.list_accounts(None, 0, i64::MAX).await?;
            let mut admins = Vec::new();
            for account in accounts.into_iter().filter(|a| a.admin) {
                let keys = store.api_keys(account.id).await?;
                admins.push((account, keys));
            }
            if json {
                let list: Vec<_> = admins
                    .iter()
                    .map(|(a, keys)| {
                        json!({
                            "account": a.sip_uri(),
                            "account_id": a.id,
                            "super": supers.contains(&a.domain),
                            "blocked": a.blocked,
                            "api_keys": keys.iter().map(|k| json!({
                                "id": k.id,
                                "name": k.name,
                                "ip": k.ip,
                                "admin_key": k.expires_after_minutes.is_some(),
                                "last_used_at": iso_time(k.last_used_at),
                                "requests": k.requests,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for (a, keys) in &admins {
                    let role = if supers.contains(&a.domain) {
                        "super admin"
                    } else {
                        "admin"
                    };
                    println!("{}\t{role}\tblocked={}", a.sip_uri(), a.blocked);
                    for k in keys {
                        println!(
                            "  key {}\tname={}\tlast_used={}\trequests={}",
                            k.id,
                            k.name.as_deref().unwrap_or("-"),
                            iso_time(k.last_used_at),
                            k.requests
                        );
                    }
                }
            }
        }
        AdminCommand::Revoke { key_id } => {
            if !store.delete_api_key(key_id).await? {
                bail!("no API key {key_id} (see `provisio admin list`)");
            }
            crate::audit::record_now(
                store.as_ref(),
                &[crate::audit::event(
                    &crate::audit::Actor::Cli,
                    crate::audit::action::API_KEY_REVOKED,
                )
                .target(key_id.to_string())],
            )
            .await;
            println!("API key {key_id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

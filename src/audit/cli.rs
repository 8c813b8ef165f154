//! `provisio audit`: the audit trail on the command line, for an operator on the server (the
//! database is the authority: whoever can read it sees every space, as the CLI does elsewhere).

use crate::config::Settings;
use crate::model::iso_time;
use crate::store::AuditQuery;
use anyhow::Context;
use clap::Args;
use std::process::ExitCode;

/// `provisio audit [--account USER@DOMAIN] [--action A] [--limit N] [--json]`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only events about this account or by it, user@domain.
    #[arg(long, value_name = "USER@DOMAIN")]
    pub account: Option<String>,
    /// Only this action (document.delivered, token.minted, account.created, …).
    #[arg(long)]
    pub action: Option<String>,
    /// Most events shown, newest first.
    #[arg(long, default_value_t = crate::api::audit::DEFAULT_LIMIT,
          value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub limit: i64,
    /// Answer in JSON (an array, as `GET /api/audit`).
    #[arg(long)]
    pub json: bool,
}

/// Runs `provisio audit`: prints the events as a table (one per line, tab-separated) or JSON.
pub async fn command(settings: &Settings, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let store = crate::app::open_store(settings).await?;
    let account_id = match &args.account {
        Some(identity) => {
            let (username, domain) = identity
                .strip_prefix("sip:")
                .unwrap_or(identity)
                .split_once('@')
                .filter(|(u, d)| !u.is_empty() && !d.is_empty())
                .with_context(|| format!("expected user@domain, got {identity:?}"))?;
            let account = store
                .account_by_identity(username, &domain.to_ascii_lowercase())
                .await?
                .with_context(|| format!("no account {identity}"))?;
            Some(account.id)
        }
        None => None,
    };
    let query = AuditQuery {
        account_id,
        action: args.action,
        space: None,
        since: None,
        limit: args.limit,
    };
    let events = store.audit_events(&query).await?;
    if args.json {
        let list: Vec<_> = events.iter().map(super::json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("at\tactor\taction\ttarget\tspace\tclient\tuser_agent\toutcome\tdetail");
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    for e in &events {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            iso_time(e.at),
            e.actor_label,
            e.action,
            dash(&e.target),
            dash(&e.space),
            dash(&e.client_ip),
            dash(&e.user_agent),
            e.outcome,
            dash(&e.detail),
        );
    }
    Ok(ExitCode::SUCCESS)
}

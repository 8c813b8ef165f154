//! `provisio token USER@DOMAIN`: mints a provisioning token and prints its URLs (provisioning,
//! QR code, wizard), so an operator can hand a phone its configuration.

use super::split_identity;
use crate::app;
use crate::config::Settings;
use crate::model::iso_time;
use crate::tokens;
use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use std::process::ExitCode;

/// `provisio token …`
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The account, user@domain.
    pub identity: String,
    /// Print the URL as a QR code too.
    #[arg(long)]
    pub qr: bool,
    /// Make the URLs reset the password when the phone fetches the document (each carries
    /// `?reset_password=1`; the QR code and wizard then encode a resetting provisioning URL).
    #[arg(long)]
    pub reset_password: bool,
    /// Answer in JSON.
    #[arg(long)]
    pub json: bool,
}

/// `?reset_password=1` when asked for: the server's provisioning route resets on it, and its
/// QR and wizard routes then encode the provisioning URL with it (FlexiAPI's semantics).
fn query(reset_password: bool) -> &'static str {
    if reset_password {
        "?reset_password=1"
    } else {
        ""
    }
}

/// Runs `token`.
pub async fn run(settings: &Settings, args: TokenArgs) -> anyhow::Result<ExitCode> {
    let store = app::open_store(settings).await?;
    let (username, domain) = split_identity(&args.identity)?;
    let account = store
        .account_by_identity(&username, &domain)
        .await?
        .with_context(|| format!("no account {}", args.identity))?;
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
    let query = query(args.reset_password);
    let url = format!("{base}/provisioning/{}{query}", minted.token);
    let qrcode = format!("{base}/provisioning/qrcode/{}{query}", minted.token);
    let wizard = format!("{base}/wizard/{}{query}", minted.token);
    if args.json {
        let v = json!({
            "account": account.sip_uri(),
            "provisioning_token": minted.token,
            "provisioning_token_expire_at": minted.expires_at.map(iso_time),
            "provisioning_url": url,
            "qrcode_url": qrcode,
            "wizard_url": wizard,
            "reset_password": args.reset_password,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{url}");
        println!("wizard: {wizard}");
    }
    if args.qr {
        println!("{}", crate::qr::terminal(&url)?);
    }
    Ok(ExitCode::SUCCESS)
}

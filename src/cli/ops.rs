//! Operator commands around the server: `purge`, `healthcheck`, `backup`, and the shell
//! integration (`completions`, `man`) generated from the command tree itself.

use super::Cli;
use crate::app;
use crate::config::Settings;
use clap::CommandFactory as _;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

/// `provisio purge`: one housekeeping pass, whatever `housekeeping_interval_seconds` says.
pub async fn purge(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
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

/// `provisio healthcheck`.
pub async fn healthcheck(
    settings: &Settings,
    url: Option<String>,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let url =
        url.unwrap_or_else(|| crate::ops::default_probe_url(settings.listen, settings.scheme()));
    let pinned = settings
        .tls
        .enabled()
        .then(|| crate::config::absolute(&settings.tls.cert_file));
    crate::ops::healthcheck(
        &url,
        std::time::Duration::from_secs(timeout),
        pinned.as_deref(),
    )
    .await?;
    println!("{url}: ready");
    Ok(ExitCode::SUCCESS)
}

/// `provisio backup FILE`.
pub fn backup(settings: &Settings, file: &Path, force: bool) -> anyhow::Result<ExitCode> {
    println!("{}", crate::ops::backup(settings, file, force)?);
    Ok(ExitCode::SUCCESS)
}

/// `provisio completions SHELL`: the completion script on standard output.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "provisio",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}

/// `provisio man`: the man page (roff) on standard output.
pub fn man() -> anyhow::Result<ExitCode> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(ExitCode::SUCCESS)
}

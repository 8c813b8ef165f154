//! The `provisio` binary: parse the command line, load the settings, set up logging, hand over
//! to the library.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = provisio::cli::Cli::parse();
    let settings = match provisio::cli::load_settings(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // RUST_LOG wins over the `log` setting; warp/hyper stay capped so request paths (which
    // carry tokens) never reach the log.
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(provisio::app::log_filter(&base))
        .with_writer(std::io::stderr)
        .init();
    match provisio::cli::run(cli, settings).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `provisio` binary: parse the command line, load the settings, set up logging, hand over
//! to the library.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = provisio::cli::Cli::parse_args();
    if let Some(done) = provisio::cli::run_standalone(&cli) {
        return done.unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        });
    }
    let settings = match provisio::cli::load_settings(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    provisio::telemetry::init_logging(&settings);
    for name in provisio::config::unknown_env_vars() {
        tracing::warn!(
            variable = %name,
            "ignoring an environment variable with the PROVISIO_ prefix that names no setting"
        );
    }
    match provisio::cli::run(cli, settings).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

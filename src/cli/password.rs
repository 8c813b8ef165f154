//! Where a command takes a SIP password from, so it never has to be on the command line (where
//! every user sees it in `ps` and the shell keeps it in its history): a file, standard input,
//! or a prompt on the terminal. `--password` still works, for old scripts.

use anyhow::{Context as _, bail};
use clap::Args;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;

/// The ways to give a password (at most one).
#[derive(Debug, Clone, Default, Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of FILE (keep it 0600).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["password_stdin", "password", "password_prompt"])]
    pub password_file: Option<PathBuf>,
    /// Read the password from the first line of standard input (`… | provisio … --password-stdin`).
    #[arg(long, conflicts_with_all = ["password", "password_prompt"])]
    pub password_stdin: bool,
    /// Ask for the password on the terminal (typed twice, not echoed).
    #[arg(long, conflicts_with = "password")]
    pub password_prompt: bool,
    /// The password itself. Avoid it: other users see it in `ps` and the shell keeps it in its
    /// history; prefer --password-file, --password-stdin or the prompt.
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,
}

impl PasswordArgs {
    /// The password given by one of the flags, `None` when none was used.
    pub fn given(&self, for_whom: &str) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--password-file {}", path.display()))?;
            let line = first_line(&text);
            if line.is_empty() {
                bail!(
                    "--password-file {}: the first line is empty",
                    path.display()
                );
            }
            return Ok(Some(line.to_string()));
        }
        if self.password_stdin {
            let mut text = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut text)
                .context("--password-stdin: reading standard input")?;
            let line = first_line(&text);
            if line.is_empty() {
                bail!("--password-stdin: standard input gave an empty first line");
            }
            return Ok(Some(line.to_string()));
        }
        if self.password_prompt {
            return prompt(for_whom).map(Some);
        }
        Ok(self.password.clone())
    }

    /// The password given, else asked for on the terminal; without a terminal, an error that
    /// names the flags.
    pub fn required(&self, for_whom: &str) -> anyhow::Result<String> {
        if let Some(password) = self.given(for_whom)? {
            return Ok(password);
        }
        if std::io::stdin().is_terminal() {
            return prompt(for_whom);
        }
        bail!(
            "a password is needed for {for_whom}: give it with --password-file FILE or \
             --password-stdin (standard input is not a terminal to ask on)"
        )
    }
}

/// The first line of `text`, without its line ending.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim_end_matches('\r')
}

/// Asks twice on the terminal, without echo.
fn prompt(for_whom: &str) -> anyhow::Result<String> {
    let first = rpassword::prompt_password(format!("Password for {for_whom}: "))
        .context("reading the password from the terminal")?;
    if first.is_empty() {
        bail!("empty password");
    }
    let again = rpassword::prompt_password("Same password again: ")
        .context("reading the password from the terminal")?;
    if first != again {
        bail!("the two passwords differ");
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines() {
        assert_eq!(first_line("s3cret\n"), "s3cret");
        assert_eq!(first_line("s3cret\r\nignored\n"), "s3cret");
        assert_eq!(first_line("  spaced pw \n"), "  spaced pw ");
        assert_eq!(first_line(""), "");
    }
}

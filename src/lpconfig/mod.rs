//! Linphone's lpconfig document: the model (Config → Section → Entry), the linphonerc INI
//! parser that feeds it, the value rule that keeps a client's rc file intact, and the XML
//! renderer. Nothing here knows about HTTP or storage.

pub mod ini;
pub mod model;
pub mod xml;

pub use model::{Config, Entry, Section};

/// Why a name or value cannot go into a document.
///
/// **The value rule.** liblinphone writes every entry verbatim into its rc file as
/// `key=value\n`, so a line break in a value (or a name) corrupts the client's configuration,
/// and XML 1.0 cannot even carry most other control characters. provisio therefore refuses any
/// C0 control character (U+0000–U+001F, tab included) and DEL (U+007F) anywhere in a section
/// name, entry name or value. Section names also may not contain `[` or `]`, and entry names
/// may not contain `=` or be empty, since the rc syntax could not read them back. Inputs are
/// checked where they enter (INI load, API, CLI); the finish stage checks the whole document
/// again, so a hook cannot slip one through: such a request fails with a 500 and a log line
/// naming the section and entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A control character (named by its code point).
    #[error("{what} contains the control character U+{code:04X}")]
    ControlCharacter {
        /// What was checked ("value of proxy_0/reg_identity", …).
        what: String,
        /// The offending code point.
        code: u32,
    },
    /// A name that the rc syntax cannot represent.
    #[error("{what} is not a valid name: {why}")]
    BadName {
        /// What was checked.
        what: String,
        /// Why it is refused.
        why: &'static str,
    },
}

/// Checks a value against the value rule.
pub fn check_value(what: &str, value: &str) -> Result<(), ValueError> {
    match value.chars().find(|c| is_forbidden_char(*c)) {
        Some(c) => Err(ValueError::ControlCharacter {
            what: what.to_string(),
            code: c as u32,
        }),
        None => Ok(()),
    }
}

/// Checks a section name.
pub fn check_section_name(name: &str) -> Result<(), ValueError> {
    let what = format!("section name {name:?}");
    if name.trim().is_empty() {
        return Err(ValueError::BadName {
            what,
            why: "it is empty",
        });
    }
    if name.contains('[') || name.contains(']') {
        return Err(ValueError::BadName {
            what,
            why: "it contains '[' or ']'",
        });
    }
    check_value(&what, name)
}

/// Checks an entry name.
pub fn check_entry_name(name: &str) -> Result<(), ValueError> {
    let what = format!("entry name {name:?}");
    if name.trim().is_empty() {
        return Err(ValueError::BadName {
            what,
            why: "it is empty",
        });
    }
    if name.contains('=') {
        return Err(ValueError::BadName {
            what,
            why: "it contains '='",
        });
    }
    check_value(&what, name)
}

/// Whether a character is refused by the value rule.
pub fn is_forbidden_char(c: char) -> bool {
    (c as u32) < 0x20 || c == '\u{7f}'
}

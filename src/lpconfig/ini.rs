//! linphonerc / FlexiAPI custom-entries INI parsing.
//!
//! Rules (documented in the README):
//! - `[name]` opens a section; a repeated section merges into the first, later keys winning
//!   (what liblinphone does with its own rc file);
//! - `key=value`, both trimmed; a value wrapped in double quotes is taken literally between them
//!   (`\"` and `\\` are its only escapes), so `k=" padded "` keeps its spaces;
//! - `#` or `;` starts a comment only at the beginning of a line: `<sip:x;transport=tls>` is a
//!   value, not a value and a comment (the PHP parser FlexiAPI uses cuts it short);
//! - values are literal: no `true`→`1` conversion; an empty value is an empty entry;
//! - a key before any section, a line that is neither, or a control character is an error
//!   naming the line, reported when the INI is loaded (never at request time).

use super::model::Config;
use super::{check_entry_name, check_section_name, check_value};

/// A parse failure with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct IniError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses INI text into a document (every entry without `overwrite`).
pub fn parse(text: &str) -> Result<Config, IniError> {
    let mut config = Config::new();
    let mut current: Option<usize> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let err = |message: String| IniError {
            line: line_no,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| err("a section header must end with ']'".to_string()))?
                .trim();
            check_section_name(name).map_err(|e| err(e.to_string()))?;
            current = Some(config.get_or_create(name));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err(format!("expected key=value or [section], found {line:?}")))?;
        let key = key.trim();
        check_entry_name(key).map_err(|e| err(e.to_string()))?;
        let section = current.ok_or_else(|| {
            err(format!(
                "key {key:?} is outside any section: put a [section] header before it"
            ))
        })?;
        let value = unquote(value.trim()).map_err(err)?;
        check_value(&format!("value of {key}"), &value).map_err(|e| err(e.to_string()))?;
        config.sections[section].set(key, value, false);
    }
    Ok(config)
}

/// Strips one pair of surrounding double quotes, resolving `\"` and `\\` inside them.
fn unquote(value: &str) -> Result<String, String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Ok(value.to_string());
    };
    let Some(inner) = inner.strip_suffix('"') else {
        return Err(format!("unterminated quoted value {value:?}"));
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('"' | '\\')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_comments_quotes_and_empty_values() {
        let c = parse(
            "# comment\n; other\n[sip]\ntransport = tls\n\n[proxy_0]\nreg_proxy=<sip:a;transport=tls>\n\
             quoted=\" spaced; \\\"q\\\" \"\nempty=\n[sip]\nextra=1\r\n",
        )
        .unwrap();
        assert_eq!(c.names(), vec!["sip", "proxy_0"]);
        let sip = c.section("sip").unwrap();
        assert_eq!(sip.get("transport"), Some("tls"));
        assert_eq!(sip.get("extra"), Some("1"));
        let p = c.section("proxy_0").unwrap();
        assert_eq!(p.get("reg_proxy"), Some("<sip:a;transport=tls>"));
        assert_eq!(p.get("quoted"), Some(" spaced; \"q\" "));
        assert_eq!(p.get("empty"), Some(""));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("a=1\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("outside any section"));
        let e = parse("[s]\nno equals here\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("[s\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("[s]\nk=\"open\n").unwrap_err();
        assert!(e.message.contains("unterminated"));
        let e = parse("[s]\nk=a\tb\n").unwrap_err();
        assert!(e.message.contains("U+0009"));
        let e = parse("[s]\n=v\n").unwrap_err();
        assert!(e.message.contains("empty"));
    }

    #[test]
    fn later_keys_win_in_merged_sections() {
        let c = parse("[a]\nk=1\n[b]\n[a]\nk=2\n").unwrap();
        assert_eq!(c.section("a").unwrap().get("k"), Some("2"));
        assert_eq!(c.sections.len(), 2);
    }
}

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

    mod properties {
        use super::super::parse;
        use crate::lpconfig::Config;
        use crate::lpconfig::strategies::{allowed_text, any_text};
        use proptest::prelude::*;

        /// A section name the INI syntax can carry: trimmed, non-empty, no brackets.
        fn section_name() -> impl Strategy<Value = String> {
            allowed_text(12)
                .prop_map(|s| s.replace(['[', ']'], "").trim().to_string())
                .prop_filter("non-empty", |s| !s.is_empty())
        }

        /// A key the INI syntax can carry: trimmed, non-empty, no `=`, not a comment or header.
        fn key() -> impl Strategy<Value = String> {
            allowed_text(12)
                .prop_map(|s| s.replace('=', "").trim().to_string())
                .prop_filter("a key", |s| {
                    !s.is_empty() && !s.starts_with(['#', ';', '['])
                })
        }

        /// Sections with distinct names, each with distinct keys.
        fn document() -> impl Strategy<Value = Config> {
            proptest::collection::vec(
                (
                    section_name(),
                    proptest::collection::vec((key(), allowed_text(20)), 0..5),
                ),
                0..5,
            )
            .prop_map(|sections| {
                let mut config = Config::new();
                for (name, entries) in sections {
                    if config.position(&name).is_some() {
                        continue;
                    }
                    let i = config.push_section(&name);
                    for (k, v) in entries {
                        if config.sections[i].get(&k).is_none() {
                            config.sections[i].set(&k, v, false);
                        }
                    }
                }
                config
            })
        }

        /// Writes a document as INI, every value quoted with `\"` and `\\` escaped.
        fn write_quoted(config: &Config) -> String {
            let mut out = String::new();
            for s in &config.sections {
                out.push_str(&format!("[{}]\n", s.name));
                for e in &s.entries {
                    let v = e.value.replace('\\', "\\\\").replace('"', "\\\"");
                    out.push_str(&format!("{} = \"{v}\"\n", e.name));
                }
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the text, the parser answers (never panics); what it accepts obeys the
            /// value rule, and an error names a line of the text.
            #[test]
            fn any_text_is_answered_and_accepted_text_obeys_the_rule(
                lines in proptest::collection::vec(any_text(24), 0..8)
            ) {
                let text = lines.join("\n");
                match parse(&text) {
                    Ok(config) => {
                        prop_assert!(config.validate().is_ok());
                        let mut names = config.names();
                        names.dedup();
                        prop_assert_eq!(names.len(), config.sections.len());
                    }
                    Err(e) => {
                        prop_assert!(e.line >= 1 && e.line <= text.lines().count().max(1), "{e}");
                    }
                }
            }

            /// Lines shaped like INI (headers, pairs, comments), with any characters inside.
            #[test]
            fn ini_shaped_text_is_answered(
                lines in proptest::collection::vec(
                    (0..4_u8, any_text(10), any_text(10)).prop_map(|(kind, a, b)| match kind {
                        0 => format!("[{a}]"),
                        1 => format!("{a}={b}"),
                        2 => format!("{a}=\"{b}"),
                        _ => format!("#{a}"),
                    }),
                    0..10,
                )
            ) {
                let text = lines.join("\n");
                if let Ok(config) = parse(&text) {
                    prop_assert!(config.validate().is_ok());
                }
            }

            /// Written quoted, any document the rule accepts reads back identically.
            #[test]
            fn quoted_documents_round_trip(config in document()) {
                let text = write_quoted(&config);
                prop_assert_eq!(parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?, config, "{}", text);
            }

            /// Unquoted values read back as themselves, trimmed.
            #[test]
            fn unquoted_values_are_literal_and_trimmed(k in key(), v in allowed_text(20)) {
                prop_assume!(!v.trim_start().starts_with('"'));
                let text = format!("[s]\n{k}={v}\n");
                let config = parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(config.section("s").and_then(|s| s.get(&k)), Some(v.trim()));
            }
        }
    }
}

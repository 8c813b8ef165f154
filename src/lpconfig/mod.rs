//! Linphone's lpconfig document: the model (Config → Section → Entry), the linphonerc INI
//! parser that feeds it, the value rule that keeps a client's rc file intact, and the XML
//! renderer. Nothing here knows about HTTP or storage.

pub mod ini;
pub mod model;
pub mod xml;

pub use model::{Config, Entry, Section};

/// Why a name or value cannot go into a document.
///
/// **The value rule** follows two readers at once:
///
/// * XML 1.0's `Char` production (<https://www.w3.org/TR/xml/#charsets>): libxml2, which
///   liblinphone parses the document with, refuses the whole document when one value holds
///   U+FFFE, U+FFFF or a C0 control other than tab/LF/CR (even as a character reference);
/// * liblinphone's rc file, where every entry is written verbatim as `key=value\n`: a tab, LF
///   or CR, and the Unicode line breaks NEL (U+0085), LINE SEPARATOR (U+2028) and PARAGRAPH
///   SEPARATOR (U+2029), would split or corrupt the line when the file is read back.
///
/// So provisio refuses, anywhere in a section name, entry name or value: every C0 control
/// (U+0000–U+001F, tab included), DEL (U+007F), every C1 control (U+0080–U+009F), U+2028,
/// U+2029, U+FFFE and U+FFFF. Lone surrogates (U+D800–U+DFFF) cannot exist in a Rust string:
/// a JSON body that escapes one (`"\ud800"`) is not valid UTF-8 text and is refused whole
/// (400 `Invalid JSON`). Section names also may not contain `[` or `]`, and entry names may
/// not contain `=` or be empty, since the rc syntax could not read them back. Inputs are
/// checked where they enter (INI load, API, CLI, configuration); the finish stage checks the
/// whole document again, so a hook cannot slip one through: such a request fails with a 500
/// (nothing consumed) and a log line naming the section and entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A character the value rule refuses (named by its code point).
    #[error("{what} contains the character U+{code:04X} ({})", describe_forbidden(*code))]
    ForbiddenCharacter {
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

/// A short reason for a refused code point, for error messages an operator can act on.
pub fn describe_forbidden(code: u32) -> &'static str {
    match code {
        0x09 => "the tab control character",
        0x0A | 0x0D => "a line-break control character",
        0x00..=0x1F => "a control character",
        0x7F => "DEL, a control character",
        0x85 => "NEL, a line-break control character",
        0x80..=0x9F => "a C1 control character",
        0x2028 | 0x2029 => "a Unicode line or paragraph separator",
        0xFFFE | 0xFFFF => "a non-character XML cannot carry",
        _ => "a character the value rule refuses",
    }
}

/// Checks a value against the value rule.
pub fn check_value(what: &str, value: &str) -> Result<(), ValueError> {
    check_value_lazy(|| what.to_string(), value)
}

/// [`check_value`] with the label built only when the value is refused: hooks check every
/// value they set, and formatting a label per call was a measurable share of the hook stage.
pub fn check_value_lazy(what: impl FnOnce() -> String, value: &str) -> Result<(), ValueError> {
    match first_forbidden(value) {
        Some(c) => Err(ValueError::ForbiddenCharacter {
            what: what(),
            code: c as u32,
        }),
        None => Ok(()),
    }
}

/// Checks a section name.
pub fn check_section_name(name: &str) -> Result<(), ValueError> {
    // The label is built only on error (names are checked on every hook `set`).
    let what = || format!("section name {name:?}");
    if name.trim().is_empty() {
        return Err(ValueError::BadName {
            what: what(),
            why: "it is empty",
        });
    }
    if name.contains('[') || name.contains(']') {
        return Err(ValueError::BadName {
            what: what(),
            why: "it contains '[' or ']'",
        });
    }
    check_value_lazy(what, name)
}

/// Checks an entry name.
pub fn check_entry_name(name: &str) -> Result<(), ValueError> {
    // The label is built only on error (names are checked on every hook `set`).
    let what = || format!("entry name {name:?}");
    if name.trim().is_empty() {
        return Err(ValueError::BadName {
            what: what(),
            why: "it is empty",
        });
    }
    if name.contains('=') {
        return Err(ValueError::BadName {
            what: what(),
            why: "it contains '='",
        });
    }
    check_value_lazy(what, name)
}

/// Whether a character is refused by the value rule ([`ValueError`]): C0, DEL, C1, U+2028,
/// U+2029, U+FFFE, U+FFFF.
pub fn is_forbidden_char(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'
    )
}

/// The first character of `value` the value rule refuses, if any.
pub fn first_forbidden(value: &str) -> Option<char> {
    // Fast path: printable ASCII (nearly every value) has no forbidden character.
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    value.chars().find(|c| is_forbidden_char(*c))
}

/// Strategies shared by the property tests of this module's parsers and renderer.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;

    /// Characters that matter to the rule, the INI syntax or XML escaping.
    pub const SPECIAL: &[char] = &[
        '\0',
        '\t',
        '\n',
        '\r',
        '\u{1b}',
        '\u{7f}',
        '\u{80}',
        '\u{85}',
        '\u{9f}',
        '\u{a0}',
        '\u{2028}',
        '\u{2029}',
        '\u{d7ff}',
        '\u{e000}',
        '\u{feff}',
        '\u{fdd0}',
        '\u{fffd}',
        '\u{fffe}',
        '\u{ffff}',
        '\u{10000}',
        '\u{10ffff}',
        '&',
        '<',
        '>',
        '"',
        '\'',
        '\\',
        '=',
        '[',
        ']',
        '#',
        ';',
        ' ',
        ']',
        '?',
        '-',
    ];

    /// One character, often a special one.
    pub fn any_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => proptest::sample::select(SPECIAL),
            3 => proptest::char::range(' ', '~'),
            2 => any::<char>(),
        ]
    }

    /// Any text, often holding special characters.
    pub fn any_text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any_char(), 0..max).prop_map(|v| v.into_iter().collect())
    }

    /// Text the value rule accepts.
    pub fn allowed_text(max: usize) -> impl Strategy<Value = String> {
        any_text(max).prop_map(|s| {
            s.chars()
                .filter(|c| !super::is_forbidden_char(*c))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::any_text;
    use super::*;
    use proptest::prelude::*;

    /// XML 1.0's `Char` production, written from the specification (§2.2), independently of
    /// [`is_forbidden_char`].
    fn xml_char(c: char) -> bool {
        let c = c as u32;
        c == 0x9
            || c == 0xA
            || c == 0xD
            || (0x20..=0xD7FF).contains(&c)
            || (0xE000..=0xFFFD).contains(&c)
            || (0x10000..=0x10FFFF).contains(&c)
    }

    /// What liblinphone's rc file can hold on one line: no Unicode control (general category
    /// Cc: C0, DEL, C1) and no Unicode line/paragraph separator.
    fn rc_line_char(c: char) -> bool {
        !c.is_control() && c != '\u{2028}' && c != '\u{2029}'
    }

    #[test]
    fn the_rule_is_xml_char_and_rc_line_over_every_code_point() {
        let mut refused = 0;
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            let allowed = xml_char(c) && rc_line_char(c);
            assert_eq!(!is_forbidden_char(c), allowed, "U+{:04X}", c as u32);
            refused += usize::from(!allowed);
        }
        // 32 C0 + DEL + 32 C1 + U+2028 + U+2029 + U+FFFE + U+FFFF.
        assert_eq!(refused, 69);
    }

    #[test]
    fn named_characters_are_refused_with_their_code_point() {
        for (c, code) in [
            ('\u{fffe}', "U+FFFE"),
            ('\u{ffff}', "U+FFFF"),
            ('\u{85}', "U+0085"),
            ('\u{2028}', "U+2028"),
            ('\u{2029}', "U+2029"),
            ('\t', "U+0009"),
            ('\u{80}', "U+0080"),
            ('\u{9f}', "U+009F"),
            ('\u{7f}', "U+007F"),
        ] {
            let err = check_value("value of s/k", &format!("a{c}b")).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(code) && text.contains("s/k"), "{text}");
        }
        for fine in [
            "",
            "é ☃ 😀",
            "\u{a0}\u{feff}\u{fdd0}\u{e000}\u{fffd}\u{10ffff}",
            "<&>\"'",
        ] {
            assert_eq!(check_value("v", fine), Ok(()), "{fine:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A string passes exactly when none of its characters is refused, and the error
        /// names the first refused one.
        #[test]
        fn check_value_agrees_with_the_character_rule(s in any_text(24)) {
            match check_value("v", &s) {
                Ok(()) => prop_assert!(s.chars().all(|c| xml_char(c) && rc_line_char(c))),
                Err(ValueError::ForbiddenCharacter { code, .. }) => {
                    let first = s.chars().find(|c| !(xml_char(*c) && rc_line_char(*c)));
                    prop_assert_eq!(Some(code), first.map(|c| c as u32));
                }
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }

        /// Names: the value rule plus the rc syntax; never a panic.
        #[test]
        fn name_checks_never_panic(s in any_text(16)) {
            if check_section_name(&s).is_ok() {
                prop_assert!(!s.trim().is_empty() && !s.contains(['[', ']']));
                prop_assert!(check_value("n", &s).is_ok());
            }
            if check_entry_name(&s).is_ok() {
                prop_assert!(!s.trim().is_empty() && !s.contains('='));
                prop_assert!(check_value("n", &s).is_ok());
            }
        }
    }
}

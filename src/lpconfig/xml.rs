//! Rendering the document as Linphone's lpconfig XML with quick-xml, and reading it back
//! (for tests, fixtures and `provisio render`).
//!
//! Output matches FlexiAPI's shape: no XML declaration, one line, root
//! `<config xmlns="http://www.linphone.org/xsds/lpconfig.xsd">`, empty values as empty
//! elements. Text escapes `&`, `<` and `>` (FlexiAPI forgot `&`, which made it answer 500);
//! attribute values also escape quotes.

use super::model::{Config, Entry, Section};
use quick_xml::Reader;
use quick_xml::Writer;
use quick_xml::escape::partial_escape;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};

/// The lpconfig namespace liblinphone's schema uses (the client does not check it).
pub const NAMESPACE: &str = "http://www.linphone.org/xsds/lpconfig.xsd";

/// Renders a document. Call [`Config::validate`] first: rendering itself never fails.
pub fn render(config: &Config) -> String {
    let mut writer = Writer::new(Vec::with_capacity(256 + config.sections.len() * 128));
    // Writing into a Vec cannot fail; the results are ignored on purpose.
    let mut root = BytesStart::new("config");
    root.push_attribute(("xmlns", NAMESPACE));
    let _ = writer.write_event(Event::Start(root));
    for section in &config.sections {
        let mut start = BytesStart::new("section");
        start.push_attribute(("name", section.name.as_str()));
        if section.entries.is_empty() {
            let _ = writer.write_event(Event::Empty(start));
            continue;
        }
        let _ = writer.write_event(Event::Start(start));
        for entry in &section.entries {
            let mut e = BytesStart::new("entry");
            e.push_attribute(("name", entry.name.as_str()));
            if entry.overwrite {
                e.push_attribute(("overwrite", "true"));
            }
            if entry.value.is_empty() {
                let _ = writer.write_event(Event::Empty(e));
            } else {
                let _ = writer.write_event(Event::Start(e));
                let escaped = partial_escape(entry.value.as_str());
                let _ = writer.write_event(Event::Text(BytesText::from_escaped(escaped)));
                let _ = writer.write_event(Event::End(BytesEnd::new("entry")));
            }
        }
        let _ = writer.write_event(Event::End(BytesEnd::new("section")));
    }
    let _ = writer.write_event(Event::End(BytesEnd::new("config")));
    String::from_utf8_lossy(&writer.into_inner()).into_owned()
}

/// Parses lpconfig XML back into a document (entities resolved, `overwrite="true"` kept).
pub fn parse(xml: &str) -> Result<Config, String> {
    let mut reader = Reader::from_str(xml);
    let mut config = Config::new();
    let mut in_entry: Option<Entry> = None;
    let mut seen_root = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let attr = |key: &str| -> Result<Option<String>, String> {
                    for a in e.attributes() {
                        let a = a.map_err(|err| err.to_string())?;
                        if a.key.as_ref() == key {
                            return a
                                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .map(|v| Some(v.into_owned()))
                                .map_err(|err| err.to_string());
                        }
                    }
                    Ok(None)
                };
                match e.name().as_ref() {
                    "config" => seen_root = true,
                    "section" => {
                        let name = attr("name")?.ok_or("section without name")?;
                        config.sections.push(Section::new(name));
                    }
                    "entry" => {
                        let name = attr("name")?.ok_or("entry without name")?;
                        let overwrite = attr("overwrite")?.as_deref() == Some("true");
                        let entry = Entry {
                            name,
                            value: String::new(),
                            overwrite,
                        };
                        if empty {
                            push_entry(&mut config, entry)?;
                        } else {
                            in_entry = Some(entry);
                        }
                    }
                    other => {
                        return Err(format!("unexpected element <{}>", other));
                    }
                }
            }
            Event::Text(t) => {
                if let Some(entry) = in_entry.as_mut() {
                    let text = t.xml10_content();
                    entry
                        .value
                        .push_str(&quick_xml::escape::unescape(&text).map_err(|e| e.to_string())?);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(entry) = in_entry.as_mut() {
                    let name = r.xml10_content();
                    let reference = format!("&{name};");
                    let text =
                        quick_xml::escape::unescape(&reference).map_err(|e| e.to_string())?;
                    entry.value.push_str(&text);
                }
            }
            Event::CData(c) => {
                if let Some(entry) = in_entry.as_mut() {
                    entry.value.push_str(&c.xml10_content());
                }
            }
            Event::End(e) if e.name().as_ref() == "entry" => {
                if let Some(entry) = in_entry.take() {
                    push_entry(&mut config, entry)?;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_root {
        return Err("root element is not <config>".to_string());
    }
    Ok(config)
}

fn push_entry(config: &mut Config, entry: Entry) -> Result<(), String> {
    config
        .sections
        .last_mut()
        .ok_or("entry outside a section")?
        .entries
        .push(entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_flexiapi_shape() {
        let mut c = Config::new();
        let i = c.get_or_create("proxy_0");
        c.sections[i].push(
            "reg_identity",
            "\"Anna O'Reily\" <sip:anna@sip.example.com>",
        );
        c.sections[i].push("empty", "");
        c.push_section("void");
        assert_eq!(
            render(&c),
            "<config xmlns=\"http://www.linphone.org/xsds/lpconfig.xsd\"><section name=\"proxy_0\">\
             <entry name=\"reg_identity\">\"Anna O'Reily\" &lt;sip:anna@sip.example.com&gt;</entry>\
             <entry name=\"empty\"/></section><section name=\"void\"/></config>"
        );
    }

    #[test]
    fn escaping_round_trips() {
        let nasty = "a&b <c> \"d\" 'e' &amp; é ☃ 😀 ]]> =;#";
        let mut c = Config::new();
        let i = c.get_or_create("s&\"<x>");
        c.sections[i].set("k&\"'", nasty, true);
        c.sections[i].set("plain", "v", false);
        let xml = render(&c);
        assert!(!xml.contains("a&b"), "{xml}");
        assert_eq!(parse(&xml).unwrap(), c);
    }

    #[test]
    fn parse_rejects_other_roots() {
        assert!(parse("<other/>").is_err());
        assert!(parse("<config><section name=\"a\"><entry>x</entry></section></config>").is_err());
    }

    #[test]
    fn roxmltree_is_strict_about_xml_chars() {
        // The property tests below lean on roxmltree refusing what libxml2 refuses. (It reads a
        // surrogate character reference such as `&#xD800;` as U+FFFD; the renderer never
        // writes character references, and the integration tests also run libxml2 itself.)
        for bad in [
            "\u{fffe}", "\u{ffff}", "\u{1}", "&#xFFFE;", "&#xFFFF;", "&#1;",
        ] {
            let doc = format!(
                "<config><section name=\"s\"><entry name=\"k\">{bad}</entry></section></config>"
            );
            assert!(
                roxmltree::Document::parse(&doc).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(roxmltree::Document::parse("<config a=\"\u{fffe}\"/>").is_err());
        assert!(roxmltree::Document::parse("<config>\u{85}\u{2028}\u{fffd}</config>").is_ok());
    }

    mod properties {
        use super::super::{NAMESPACE, parse, render};
        use crate::lpconfig::strategies::{allowed_text, any_text};
        use crate::lpconfig::{Config, Entry, Section, is_forbidden_char};
        use proptest::prelude::*;

        /// A document the value rule accepts: names and values of any allowed characters.
        fn valid_document() -> impl Strategy<Value = Config> {
            let name = || allowed_text(10).prop_filter("non-empty", |s| !s.trim().is_empty());
            let section_name = name().prop_map(|s| s.replace(['[', ']'], "-"));
            let entry_name = name().prop_map(|s| s.replace('=', "-"));
            let entry = (entry_name, allowed_text(24), any::<bool>()).prop_map(
                |(name, value, overwrite)| Entry {
                    name,
                    value,
                    overwrite,
                },
            );
            proptest::collection::vec((section_name, proptest::collection::vec(entry, 0..5)), 0..5)
                .prop_map(|sections| Config {
                    sections: sections
                        .into_iter()
                        .map(|(name, entries)| Section { name, entries })
                        .collect(),
                })
        }

        /// The document as a strict, independent XML parser reads it.
        fn read_with_roxmltree(xml: &str) -> Result<Config, String> {
            let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
            let root = doc.root_element();
            if root.tag_name().name() != "config" || root.tag_name().namespace() != Some(NAMESPACE)
            {
                return Err(format!("root {:?}", root.tag_name()));
            }
            let mut config = Config::new();
            for s in root.children().filter(|n| n.is_element()) {
                let mut section = Section::new(s.attribute("name").ok_or("section name")?);
                for e in s.children().filter(|n| n.is_element()) {
                    let value: String = e
                        .children()
                        .filter_map(|t| t.text())
                        .collect::<Vec<_>>()
                        .concat();
                    section.entries.push(Entry {
                        name: e.attribute("name").ok_or("entry name")?.to_string(),
                        value,
                        overwrite: e.attribute("overwrite") == Some("true"),
                    });
                }
                config.sections.push(section);
            }
            Ok(config)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Render → parse back with roxmltree (strict XML 1.0) and with our own reader:
            /// the same sections, entries, values and flags, and no control character on the
            /// wire.
            #[test]
            fn rendered_documents_parse_back_identically(config in valid_document()) {
                prop_assert!(config.validate().is_ok());
                let xml = render(&config);
                prop_assert!(!xml.chars().any(is_forbidden_char), "{:?}", xml);
                prop_assert_eq!(read_with_roxmltree(&xml).map_err(TestCaseError::fail)?, config.clone());
                prop_assert_eq!(parse(&xml).map_err(TestCaseError::fail)?, config);
            }

            /// A document holding any character is either refused by the value rule, or renders
            /// as XML a strict parser accepts.
            #[test]
            fn what_validates_always_parses(
                section in any_text(8), entry in any_text(8), value in any_text(16)
            ) {
                let mut config = Config::new();
                let i = config.push_section(&section);
                config.sections[i].set(&entry, value, false);
                if config.validate().is_ok() {
                    prop_assert!(roxmltree::Document::parse(&render(&config)).is_ok());
                }
            }

            /// Our own reader answers any text without panicking.
            #[test]
            fn reader_never_panics(text in any_text(64)) {
                let _ = parse(&text);
                let _ = parse(&format!("<config><section name=\"a\"><entry name=\"b\">{text}</entry></section></config>"));
            }
        }
    }
}

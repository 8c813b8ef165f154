//! Finish: overwrite-all when the space asks for it, the value rule
//! ([`crate::lpconfig::ValueError`]: no control character, line separator, U+FFFE or U+FFFF
//! anywhere, since libxml2 would refuse the document and liblinphone's rc file would break),
//! and XML rendering. Reads the document and space; writes the XML. Errors: 500 naming the
//! section and entry in the log (the client sees a generic message) when a value breaks the
//! rule; the token is consumed only after this stage, so such a request burns nothing.

use crate::error::AppError;
use crate::lpconfig::{Config, xml};
use crate::model::Space;

/// Turns the document into the bytes a client receives.
pub fn finish(mut config: Config, space: &Space) -> Result<String, AppError> {
    if space.overwrite_all {
        config.overwrite_all();
    }
    config.validate().map_err(|e| {
        AppError::Internal(format!("document for space {} refused: {e}", space.domain))
    })?;
    Ok(xml::render(&config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_xml_or_the_rc_file_cannot_carry() {
        let space = Space::new("sip.example.com", "sip.example.com");
        for bad in [
            "\u{fffe}", "\u{ffff}", "\u{85}", "\u{2028}", "\u{2029}", "\t", "\u{9f}",
        ] {
            let mut config = Config::new();
            let i = config.get_or_create("proxy_0");
            config.sections[i].set("reg_identity", format!("\"A{bad}\" <sip:a@b>"), false);
            let err = finish(config, &space).unwrap_err();
            assert_eq!(err.status(), 500);
            assert!(err.to_string().contains("proxy_0/reg_identity"), "{err}");
        }
        let mut config = Config::new();
        let i = config.get_or_create("s\u{fffe}");
        config.sections[i].set("k", "v", false);
        assert!(finish(config, &space).is_err());

        let mut config = Config::new();
        let i = config.get_or_create("proxy_0");
        config.sections[i].set("reg_identity", "\"é ☃ \u{a0}\u{feff}\" <sip:a@b>", false);
        let xml = finish(config, &space).unwrap();
        assert!(roxmltree::Document::parse(&xml).is_ok(), "{xml}");
    }
}

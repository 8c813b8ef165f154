//! Stage 7 — finish: overwrite-all when the space asks for it, the value rule (no control
//! character anywhere: liblinphone would write it raw into its rc file), and XML rendering.
//! Reads the document and space; writes the XML. Errors: 500 naming the section and entry in
//! the log (the client sees a generic message) when a value breaks the rule.

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

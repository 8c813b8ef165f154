//! A space prepared for documents: the part of every document that depends on the space
//! alone, built once per snapshot of the spaces instead of once per request.

use crate::error::AppError;
use crate::lpconfig::{Config, Section, ini};
use crate::model::Space;

/// A space with its static document part.
#[derive(Debug, Clone)]
pub struct PreparedSpace {
    /// The space's settings, as stored.
    pub space: Space,
    /// Base rc, then custom entries (merged into the same sections, later keys winning), then
    /// `misc/contacts-vcard-list`; or, when a stored INI no longer parses, why (every document
    /// of the space then fails with 500: spaces are validated when saved, so this means the
    /// database was edited by hand).
    base: Result<Config, String>,
    /// Whether `base` already has a `ui` section (then no `ui` flags are added).
    base_has_ui: bool,
    /// The `ui` section of this space's flags, added when it is an account's home space.
    ui: Section,
}

impl PreparedSpace {
    /// Parses the space's INI texts and builds its static sections.
    pub fn new(space: Space) -> PreparedSpace {
        let base = static_part(&space);
        if let Err(why) = &base {
            tracing::warn!(domain = %space.domain, error = %why, "space cannot be provisioned");
        }
        let base_has_ui = base.as_ref().is_ok_and(|c| c.position("ui").is_some());
        let mut ui = Section::new("ui");
        for (key, value) in space.ui.entries() {
            ui.push(key, value);
        }
        PreparedSpace {
            space,
            base,
            base_has_ui,
            ui,
        }
    }

    /// The static part every document of this space starts from.
    pub fn base(&self) -> Result<&Config, AppError> {
        self.base
            .as_ref()
            .map_err(|why| AppError::Internal(why.clone()))
    }

    /// The `ui` section of this space's flags, for the documents of its accounts.
    pub fn ui(&self) -> &Section {
        &self.ui
    }

    /// Whether the static part already has a `ui` section (then FlexiAPI adds none).
    pub fn has_ui(&self) -> bool {
        self.base_has_ui
    }
}

/// Base rc, custom entries, vCard list URL, in FlexiAPI's order (reference §1.9).
fn static_part(space: &Space) -> Result<Config, String> {
    let mut config = Config::new();
    for (what, ini_text) in [
        ("base_rc", space.base_rc.as_deref()),
        ("custom_entries", space.custom_entries.as_deref()),
    ] {
        let Some(text) = ini_text.filter(|t| !t.trim().is_empty()) else {
            continue;
        };
        let parsed = ini::parse(text)
            .map_err(|e| format!("space {} has an invalid {what}: {e}", space.domain))?;
        for section in parsed.sections {
            let index = config.get_or_create(&section.name);
            for entry in section.entries {
                config.sections[index].set(&entry.name, entry.value, false);
            }
        }
    }
    if let Some(url) = space.vcard_list_url.as_deref().filter(|u| !u.is_empty()) {
        let misc = config.get_or_create("misc");
        config.sections[misc].set("contacts-vcard-list", url, false);
    }
    Ok(config)
}

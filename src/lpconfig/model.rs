//! The document model: an ordered list of sections, each an ordered list of entries, as
//! liblinphone reads them. Order is kept because FlexiAPI's documents have a defined order and
//! golden files compare bytes.

use super::{ValueError, check_entry_name, check_section_name, check_value};

/// One `<entry name="…" [overwrite="true"]>value</entry>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Key in the rc section.
    pub name: String,
    /// Value; empty renders as an empty element (which, with overwrite, deletes the key).
    pub value: String,
    /// `overwrite="true"`: replace what the client already has.
    pub overwrite: bool,
}

/// One `<section name="…">`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// Section name (`proxy_0`, `auth_info_1`, `sip`…).
    pub name: String,
    /// Entries in document order.
    pub entries: Vec<Entry>,
}

impl Section {
    /// An empty section.
    pub fn new(name: impl Into<String>) -> Section {
        Section {
            name: name.into(),
            entries: Vec::new(),
        }
    }

    /// Appends an entry even if one with this name exists (FlexiAPI's `appendChild`).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push(Entry {
            name: name.into(),
            value: value.into(),
            overwrite: false,
        });
    }

    /// Sets an entry: replaces the value (and overwrite flag) of the first entry with this
    /// name, or appends one.
    pub fn set(&mut self, name: &str, value: impl Into<String>, overwrite: bool) {
        let value = value.into();
        match self.entries.iter_mut().find(|e| e.name == name) {
            Some(e) => {
                e.value = value;
                e.overwrite = overwrite;
            }
            None => self.entries.push(Entry {
                name: name.to_string(),
                value,
                overwrite,
            }),
        }
    }

    /// The value of the first entry with this name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }

    /// The first entry with this name.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Removes every entry with this name; returns whether one existed.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.name != name);
        before != self.entries.len()
    }

    /// Entry names in order.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }
}

/// A whole `<config>` document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Sections in document order (names may repeat, as in FlexiAPI's output).
    pub sections: Vec<Section>,
}

impl Config {
    /// An empty document.
    pub fn new() -> Config {
        Config::default()
    }

    /// Index of the first section with this name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.sections.iter().position(|s| s.name == name)
    }

    /// The first section with this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The first section with this name, mutably.
    pub fn section_mut(&mut self, name: &str) -> Option<&mut Section> {
        self.sections.iter_mut().find(|s| s.name == name)
    }

    /// Index of the first section with this name, appending an empty one if there is none.
    pub fn get_or_create(&mut self, name: &str) -> usize {
        match self.position(name) {
            Some(i) => i,
            None => self.push_section(name),
        }
    }

    /// Appends a new section even if one with this name exists; returns its index.
    pub fn push_section(&mut self, name: &str) -> usize {
        self.sections.push(Section::new(name));
        self.sections.len() - 1
    }

    /// Removes every section with this name; returns whether one existed.
    pub fn remove_section(&mut self, name: &str) -> bool {
        let before = self.sections.len();
        self.sections.retain(|s| s.name != name);
        before != self.sections.len()
    }

    /// Section names in order.
    pub fn names(&self) -> Vec<String> {
        self.sections.iter().map(|s| s.name.clone()).collect()
    }

    /// Sets `overwrite="true"` on every entry (the space's overwrite-all flag).
    pub fn overwrite_all(&mut self) {
        for e in self.sections.iter_mut().flat_map(|s| s.entries.iter_mut()) {
            e.overwrite = true;
        }
    }

    /// Appends every section of `other`, merging into nothing (FlexiAPI appends INI sections).
    pub fn extend(&mut self, other: Config) {
        self.sections.extend(other.sections);
    }

    /// Checks every name and value against the value rule ([`super::ValueError`]).
    pub fn validate(&self) -> Result<(), ValueError> {
        for s in &self.sections {
            check_section_name(&s.name)?;
            for e in &s.entries {
                check_entry_name(&e.name).map_err(|err| match err {
                    ValueError::BadName { why, .. } => ValueError::BadName {
                        what: format!("entry name {:?} in section {}", e.name, s.name),
                        why,
                    },
                    other => other,
                })?;
                check_value(&format!("value of {}/{}", s.name, e.name), &e.value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_push_appends() {
        let mut s = Section::new("proxy_0");
        s.set("a", "1", false);
        s.set("a", "2", true);
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.get("a"), Some("2"));
        assert!(s.entry("a").is_some_and(|e| e.overwrite));
        s.push("a", "3");
        assert_eq!(s.entries.len(), 2);
        assert!(s.remove("a"));
        assert!(s.entries.is_empty());
    }

    #[test]
    fn validate_refuses_control_characters() {
        let mut c = Config::new();
        let i = c.get_or_create("proxy_0");
        c.sections[i].set("reg_identity", "\"A\nB\" <sip:a@b>", false);
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("proxy_0/reg_identity"), "{err}");
        c.sections[i].set("reg_identity", "\"A B\" <sip:a@b> é ☃", false);
        assert!(c.validate().is_ok());
        c.push_section("bad]name");
        assert!(c.validate().is_err());
    }
}

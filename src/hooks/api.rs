//! What scripts see: the `Config` and `Section` handles over the document being built, the
//! read-only `request` / `account` / `password` maps, `deny`, and the log functions.
//!
//! **Handles.** During one request the document lives in a [`SharedDoc`] (an
//! `Arc<Mutex<Doc>>`); `Config` and `Section` values in scripts are handles onto it. Every
//! section carries an id that never changes while the scripts run, and a `Section` handle
//! holds that id, not a position: adding or removing other sections cannot make a handle
//! point at the wrong section, and a handle on a removed section fails loudly. The pipeline
//! copies the document back into its `Config` when the hooks are done.
//!
//! **The value rule.** Every name and value is checked where the script sets it
//! ([`crate::lpconfig::check_value`] and friends), so a bad value is a script error at that
//! line rather than a corrupted rc file or a late 500 from the finish stage.

use super::engine::{MAX_DOCUMENT_BYTES, current_script};
use crate::lpconfig::{
    Config, Section, check_entry_name, check_section_name, check_value, check_value_lazy,
};
use crate::model::{Account, Password, Space};
use crate::request::{RequestInfo, RouteKind};
use rhai::{
    Array, Dynamic, Engine, EvalAltResult, INT, ImmutableString, Map, NativeCallContext, Position,
};
use std::sync::{Arc, Mutex, MutexGuard};

/// A script error raised by the host API (position filled in by Rhai at the call site).
type ScriptResult<T> = Result<T, Box<EvalAltResult>>;

fn script_error(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into().into(),
        Position::NONE,
    ))
}

/// One section of the working document, with the id handles refer to.
#[derive(Debug, Clone)]
struct Slot {
    id: usize,
    section: Section,
}

/// The document while scripts run: sections with stable ids, and a running size so a
/// runaway script cannot grow it without bound.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    slots: Vec<Slot>,
    next_id: usize,
    bytes: usize,
}

fn section_bytes(section: &Section) -> usize {
    section.name.len()
        + section
            .entries
            .iter()
            .map(|e| e.name.len() + e.value.len())
            .sum::<usize>()
}

impl Doc {
    /// Takes a document; section `i` gets id `i`, so the pipeline's indices name sections.
    pub fn from_config(config: Config) -> Doc {
        let slots: Vec<Slot> = config
            .sections
            .into_iter()
            .enumerate()
            .map(|(id, section)| Slot { id, section })
            .collect();
        let bytes = slots.iter().map(|s| section_bytes(&s.section)).sum();
        Doc {
            next_id: slots.len(),
            slots,
            bytes,
        }
    }

    /// Gives the document back, in order.
    pub fn into_config(self) -> Config {
        Config {
            sections: self.slots.into_iter().map(|s| s.section).collect(),
        }
    }

    /// Whether the section with this id is still in the document.
    pub fn contains_id(&self, id: usize) -> bool {
        self.slots.iter().any(|s| s.id == id)
    }

    fn slot(&self, id: usize) -> ScriptResult<&Slot> {
        self.slots
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| script_error("this section was removed from the document"))
    }

    fn slot_mut(&mut self, id: usize) -> ScriptResult<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| script_error("this section was removed from the document"))
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .find(|s| s.section.name == name)
            .map(|s| s.id)
    }

    fn grow(&mut self, added: usize, removed: usize) -> ScriptResult<()> {
        let bytes = (self.bytes + added).saturating_sub(removed);
        if bytes > MAX_DOCUMENT_BYTES {
            return Err(Box::new(EvalAltResult::ErrorDataTooLarge(
                format!("Document (over {MAX_DOCUMENT_BYTES} bytes)"),
                Position::NONE,
            )));
        }
        self.bytes = bytes;
        Ok(())
    }

    fn push_section(&mut self, name: &str) -> ScriptResult<usize> {
        check_section_name(name).map_err(|e| script_error(e.to_string()))?;
        self.grow(name.len(), 0)?;
        let id = self.next_id;
        self.next_id += 1;
        self.slots.push(Slot {
            id,
            section: Section::new(name),
        });
        Ok(id)
    }

    fn get_or_create(&mut self, name: &str) -> ScriptResult<usize> {
        match self.find(name) {
            Some(id) => Ok(id),
            None => self.push_section(name),
        }
    }

    fn remove_section(&mut self, name: &str) -> bool {
        let before = self.slots.len();
        let mut freed = 0;
        self.slots.retain(|s| {
            let keep = s.section.name != name;
            if !keep {
                freed += section_bytes(&s.section);
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        before != self.slots.len()
    }

    fn set(&mut self, id: usize, name: &str, value: &Dynamic, overwrite: bool) -> ScriptResult<()> {
        let slot = self.slot(id)?;
        check_entry_name(name).map_err(|e| script_error(e.to_string()))?;
        let value = entry_value(value)?;
        check_value_lazy(|| format!("value of {}/{name}", slot.section.name), &value)
            .map_err(|e| script_error(e.to_string()))?;
        let (added, removed) = match slot.section.entry(name) {
            Some(old) => (value.len(), old.value.len()),
            None => (name.len() + value.len(), 0),
        };
        self.grow(added, removed)?;
        self.slot_mut(id)?.section.set(name, value, overwrite);
        Ok(())
    }

    fn remove(&mut self, id: usize, name: &str) -> ScriptResult<bool> {
        let slot = self.slot_mut(id)?;
        let freed: usize = slot
            .section
            .entries
            .iter()
            .filter(|e| e.name == name)
            .map(|e| e.name.len() + e.value.len())
            .sum();
        let removed = slot.section.remove(name);
        self.bytes = self.bytes.saturating_sub(freed);
        Ok(removed)
    }
}

/// The document shared by the handles of one request.
pub type SharedDoc = Arc<Mutex<Doc>>;

/// Locks the document. A poisoned lock (a panic elsewhere while holding it) still holds a
/// consistent document — every mutation is a single `Vec` operation — so it is recovered.
pub fn lock(doc: &SharedDoc) -> MutexGuard<'_, Doc> {
    doc.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Converts what a script passes as an entry value: strings and characters as they are,
/// numbers in decimal, booleans as `1`/`0` (how liblinphone stores them). `()` and
/// containers are refused: they are almost always a bug (a missing map key), and an empty
/// value must be asked for explicitly with `""`.
fn entry_value(value: &Dynamic) -> ScriptResult<String> {
    if let Ok(s) = value.as_immutable_string_ref() {
        // The common case, without going through `Display`.
        return Ok(s.as_str().to_string());
    }
    if value.is_string() || value.is_char() || value.is_int() || value.is_float() {
        return Ok(value.to_string());
    }
    if let Ok(b) = value.as_bool() {
        return Ok(if b { "1" } else { "0" }.to_string());
    }
    if value.is_unit() {
        return Err(script_error(
            "an entry value cannot be () (a missing key?); use \"\" for an empty value",
        ));
    }
    Err(script_error(format!(
        "an entry value must be a string, number or boolean, not {}",
        value.type_name()
    )))
}

/// The `config` argument of `on_config`: the whole document.
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    doc: SharedDoc,
}

impl ConfigHandle {
    /// A handle on a request's document.
    pub fn new(doc: SharedDoc) -> ConfigHandle {
        ConfigHandle { doc }
    }

    fn handle(&self, id: usize) -> SectionHandle {
        SectionHandle {
            doc: self.doc.clone(),
            id,
        }
    }

    fn sections(&self) -> Vec<SectionHandle> {
        let ids: Vec<usize> = lock(&self.doc).slots.iter().map(|s| s.id).collect();
        ids.into_iter().map(|id| self.handle(id)).collect()
    }
}

impl IntoIterator for ConfigHandle {
    type Item = SectionHandle;
    type IntoIter = std::vec::IntoIter<SectionHandle>;

    fn into_iter(self) -> Self::IntoIter {
        self.sections().into_iter()
    }
}

/// A `section` argument (`on_proxy`, `on_auth_info`) or a section found through `config`.
#[derive(Debug, Clone)]
pub struct SectionHandle {
    doc: SharedDoc,
    id: usize,
}

impl SectionHandle {
    /// A handle on the section with this id (its index when the hooks started).
    pub fn new(doc: SharedDoc, id: usize) -> SectionHandle {
        SectionHandle { doc, id }
    }

    fn read<T>(&self, f: impl FnOnce(&Section) -> T) -> ScriptResult<T> {
        let doc = lock(&self.doc);
        doc.slot(self.id).map(|s| f(&s.section))
    }

    fn entries(&self) -> ScriptResult<Array> {
        self.read(|s| {
            s.entries
                .iter()
                .map(|e| {
                    let mut m = Map::new();
                    m.insert("name".into(), e.name.clone().into());
                    m.insert("value".into(), e.value.clone().into());
                    m.insert("overwrite".into(), e.overwrite.into());
                    Dynamic::from_map(m)
                })
                .collect()
        })
    }
}

impl IntoIterator for SectionHandle {
    type Item = Dynamic;
    type IntoIter = std::vec::IntoIter<Dynamic>;

    fn into_iter(self) -> Self::IntoIter {
        // A removed section iterates as empty; every other access reports the removal.
        self.entries().unwrap_or_default().into_iter()
    }
}

fn opt_string(v: Option<&str>) -> Dynamic {
    v.map_or(Dynamic::UNIT, text)
}

/// A string value for a script, copied once (straight into Rhai's shared string, short
/// strings inline, without an intermediate `String`).
fn text(s: &str) -> Dynamic {
    Dynamic::from(ImmutableString::from(s))
}

fn strings_map<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> Dynamic {
    let map: Map = pairs.map(|(k, v)| (k.as_str().into(), text(v))).collect();
    Dynamic::from_map(map)
}

/// A map handed to scripts read-only (`request`, `account`, `password`): the map behind a
/// reference count, so every hook call and every helper function it is passed to gets it
/// for the cost of that count. A Rhai map cannot be shared that cheaply: passing a shared
/// map to a script function (`policy::refuse_if_needed(request, account)`) copies it whole,
/// and a read-only map still lets `map["new key"] = x` add a key. Scripts read it like a
/// map (`request.method`, `account.dictionary["team"]`, `"x" in request`, `keys()`,
/// `len()`); a missing key reads as `()`; any assignment, to a key or to anything inside
/// one (`request.query.lang = "x"`, `account.dictionary.clear()`), is a script error, so no
/// script ever sees another one's change. A part read from it (`let q = request.query;`) is
/// a copy, the script's own to change.
#[derive(Debug, Clone)]
pub struct FrozenMap(Arc<Map>);

impl FrozenMap {
    fn get(&self, key: &str) -> Dynamic {
        self.0.get(key).cloned().unwrap_or(Dynamic::UNIT)
    }

    /// A write: refused unless it writes back what is there already (see [`register`]).
    fn write_back(&self, key: &str, value: &Dynamic) -> ScriptResult<()> {
        match self.0.get(key) {
            Some(old) if same(old, value) => Ok(()),
            _ => Err(read_only_error(key)),
        }
    }

    /// The map as Rhai prints it.
    fn display(&self, debug: bool) -> String {
        let map = Dynamic::from_map((*self.0).clone());
        if debug {
            format!("{map:?}")
        } else {
            map.to_string()
        }
    }
}

/// Every key of the frozen maps ([`request_map`], [`account_map`], [`password_map`]).
const FROZEN_KEYS: [&str; 26] = [
    "method",
    "path",
    "query_string",
    "route",
    "query",
    "headers",
    "host",
    "client_ip",
    "user_agent",
    "client_certificate_subject",
    "client_certificate_uris",
    "space",
    "id",
    "username",
    "domain",
    "display_name",
    "email",
    "phone",
    "activated",
    "admin",
    "realm",
    "sip_uri",
    "identity",
    "dictionary",
    "algorithm",
    "account",
];

/// Freezes a map for scripts ([`FrozenMap`]).
pub fn frozen(map: Map) -> Dynamic {
    Dynamic::from(FrozenMap(Arc::new(map)))
}

/// Whether two script values are equal (maps and arrays compared deeply; a value of any
/// other type only equals itself by identity, which a copy never is).
fn same(a: &Dynamic, b: &Dynamic) -> bool {
    if let (Some(x), Some(y)) = (a.read_lock::<Map>(), b.read_lock::<Map>()) {
        return x.len() == y.len()
            && x.iter()
                .all(|(k, v)| y.get(k.as_str()).is_some_and(|w| same(v, w)));
    }
    if let (Some(x), Some(y)) = (a.read_lock::<Array>(), b.read_lock::<Array>()) {
        return x.len() == y.len() && x.iter().zip(y.iter()).all(|(v, w)| same(v, w));
    }
    if let (Ok(x), Ok(y)) = (a.as_immutable_string_ref(), b.as_immutable_string_ref()) {
        return *x == *y;
    }
    if let (Some(x), Some(y)) = (a.read_lock::<FrozenMap>(), b.read_lock::<FrozenMap>()) {
        return Arc::ptr_eq(&x.0, &y.0);
    }
    if a.is_unit() || b.is_unit() {
        return a.is_unit() && b.is_unit();
    }
    match (a.as_int(), b.as_int(), a.as_bool(), b.as_bool()) {
        (Ok(x), Ok(y), ..) => x == y,
        (.., Ok(x), Ok(y)) => x == y,
        _ => a.type_id() == b.type_id() && a.to_string() == b.to_string(),
    }
}

fn read_only_error(key: &str) -> Box<EvalAltResult> {
    script_error(format!(
        "cannot change {key:?}: request, account and password are read-only \
         (`let` a copy of a part to change it)"
    ))
}

/// A space as scripts see it (`request.space`, `account.space`).
pub fn space_map(space: &Space) -> Map {
    let mut m = Map::new();
    m.insert("domain".into(), text(&space.domain));
    m.insert("host".into(), text(&space.host));
    m.insert("name".into(), text(&space.name));
    m.insert("realm".into(), text(&space.realm));
    m.insert("super".into(), space.super_space.into());
    m.insert(
        "password_algorithm".into(),
        text(space.password_algorithm.as_str()),
    );
    m.insert("overwrite_all".into(), space.overwrite_all.into());
    m.insert(
        "vcard_list_url".into(),
        opt_string(space.vcard_list_url.as_deref()),
    );
    m.insert("public_url".into(), opt_string(space.public_url.as_deref()));
    m.insert("header_mode".into(), text(space.header_mode.as_str()));
    m.insert("hook_failure".into(), text(space.hook_failure.as_str()));
    m
}

/// Headers scripts never see: credentials, which a script that logs `request.headers`
/// would otherwise write to the log.
pub const HIDDEN_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "cookie",
];

/// The path as scripts see it: the token of a token route is replaced by `{token}`, for the
/// same reason (tokens are credentials and must not reach logs).
fn visible_path(request: &RequestInfo) -> String {
    match request.route {
        RouteKind::Token => "/provisioning/{token}".to_string(),
        RouteKind::AuthToken => "/provisioning/auth_token/{token}".to_string(),
        _ => request.path.clone(),
    }
}

/// The `request` argument: the request as a map (frozen by the caller), without
/// credentials (see [`HIDDEN_HEADERS`]); `space` is the request space's [`space_map`].
pub fn request_map(request: &RequestInfo, space: Map) -> Map {
    let mut m = Map::new();
    m.insert("method".into(), text(&request.method));
    m.insert("path".into(), visible_path(request).into());
    m.insert("query_string".into(), text(&request.raw_query));
    m.insert("route".into(), text(request.route.as_str()));
    m.insert("query".into(), strings_map(request.query.iter()));
    m.insert(
        "headers".into(),
        strings_map(
            request
                .headers
                .iter()
                .filter(|(k, _)| !HIDDEN_HEADERS.contains(&k.as_str())),
        ),
    );
    m.insert("host".into(), text(&request.host));
    m.insert("client_ip".into(), request.client_ip_string().into());
    m.insert("user_agent".into(), text(request.user_agent()));
    let certificate = request.client_certificate.as_ref();
    m.insert(
        "client_certificate_subject".into(),
        opt_string(certificate.map(|c| c.subject.as_str())),
    );
    m.insert(
        "client_certificate_uris".into(),
        Dynamic::from_array(
            certificate
                .map(|c| c.uris.iter().map(|u| text(u)).collect())
                .unwrap_or_default(),
        ),
    );
    m.insert("space".into(), Dynamic::from_map(space));
    m
}

/// The `account` argument: the account as a map (frozen by the caller); `home` is the account's space and
/// `home_map` its [`space_map`] (built by the caller, which can share it with `request.space`).
pub fn account_map(account: &Account, home: &Space, home_map: Map) -> Map {
    let mut m = Map::new();
    m.insert("id".into(), Dynamic::from_int(account.id as INT));
    m.insert("username".into(), text(&account.username));
    m.insert("domain".into(), text(&account.domain));
    m.insert(
        "display_name".into(),
        opt_string(account.display_name.as_deref()),
    );
    m.insert("email".into(), opt_string(account.email.as_deref()));
    m.insert("phone".into(), opt_string(account.phone.as_deref()));
    m.insert("activated".into(), account.activated.into());
    m.insert("admin".into(), account.admin.into());
    m.insert("realm".into(), text(&home.realm));
    m.insert("sip_uri".into(), account.sip_uri().into());
    m.insert("identity".into(), account.full_identifier().into());
    m.insert("dictionary".into(), strings_map(account.dictionary.iter()));
    m.insert("space".into(), Dynamic::from_map(home_map));
    m
}

/// The `password` argument of `on_auth_info` (frozen by the caller; `account` is the frozen
/// account): never the HA1 itself.
pub fn password_map(password: &Password, realm: &str, account: Dynamic) -> Map {
    let mut m = Map::new();
    m.insert("algorithm".into(), text(password.algorithm.as_str()));
    m.insert("realm".into(), text(realm));
    m.insert("account".into(), account);
    m
}

/// A refusal asked for by `deny(status, message)`; travels as Rhai's termination token, so
/// `try`/`catch` in a script cannot swallow it by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyToken {
    /// HTTP status, 400–599.
    pub status: u16,
    /// Message for the client.
    pub message: String,
}

/// Longest `deny` message: it becomes the body of the client's response.
pub const MAX_DENY_MESSAGE: usize = 1024;

fn deny(status: INT, message: &str) -> ScriptResult<()> {
    let status = match u16::try_from(status) {
        Ok(s) if (400..=599).contains(&s) => s,
        _ => {
            return Err(script_error(format!(
                "deny: the status must be between 400 and 599, not {status}"
            )));
        }
    };
    check_value("deny message", message).map_err(|e| script_error(e.to_string()))?;
    if message.len() > MAX_DENY_MESSAGE {
        return Err(script_error(format!(
            "deny: the message is longer than {MAX_DENY_MESSAGE} bytes"
        )));
    }
    Err(Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::from(DenyToken {
            status,
            message: message.to_string(),
        }),
        Position::NONE,
    )))
}

fn log_at(level: tracing::Level, ctx: &NativeCallContext, message: &Dynamic) {
    let script = current_script();
    let line = ctx.call_position().line().unwrap_or(0);
    let text = message.to_string();
    match level {
        tracing::Level::ERROR => {
            tracing::error!(target: "provisio::hooks::script", script = %script, line, "{text}")
        }
        tracing::Level::WARN => {
            tracing::warn!(target: "provisio::hooks::script", script = %script, line, "{text}")
        }
        _ => tracing::info!(target: "provisio::hooks::script", script = %script, line, "{text}"),
    }
}

fn to_text(config: &Config) -> String {
    let mut out = String::new();
    for s in &config.sections {
        out.push_str(&format!("[{}]\n", s.name));
        for e in &s.entries {
            let mark = if e.overwrite { " (overwrite)" } else { "" };
            out.push_str(&format!("{}={}{mark}\n", e.name, e.value));
        }
    }
    out
}

/// Registers the types and functions above on the engine (called once, by
/// [`super::engine::new_engine`]).
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ConfigHandle>("Config");
    engine.register_type_with_name::<SectionHandle>("Section");
    engine.register_type_with_name::<DenyToken>("Deny");
    engine.register_iterator::<ConfigHandle>();
    engine.register_iterator::<SectionHandle>();

    // ---- Config ----
    engine.register_fn(
        "section",
        |c: &mut ConfigHandle, name: &str| -> ScriptResult<SectionHandle> {
            let id = lock(&c.doc).get_or_create(name)?;
            Ok(c.handle(id))
        },
    );
    engine.register_fn("find", |c: &mut ConfigHandle, name: &str| -> Dynamic {
        let id = lock(&c.doc).find(name);
        id.map_or(Dynamic::UNIT, |id| Dynamic::from(c.handle(id)))
    });
    engine.register_fn(
        "add_section",
        |c: &mut ConfigHandle, name: &str| -> ScriptResult<SectionHandle> {
            let id = lock(&c.doc).push_section(name)?;
            Ok(c.handle(id))
        },
    );
    engine.register_fn(
        "remove_section",
        |c: &mut ConfigHandle, name: &str| -> bool { lock(&c.doc).remove_section(name) },
    );
    engine.register_fn("has_section", |c: &mut ConfigHandle, name: &str| -> bool {
        lock(&c.doc).find(name).is_some()
    });
    engine.register_fn("contains", |c: &mut ConfigHandle, name: &str| -> bool {
        lock(&c.doc).find(name).is_some()
    });
    engine.register_fn("names", |c: &mut ConfigHandle| -> Array {
        lock(&c.doc)
            .slots
            .iter()
            .map(|s| Dynamic::from(s.section.name.clone()))
            .collect()
    });
    engine.register_fn("sections", |c: &mut ConfigHandle| -> Array {
        c.sections().into_iter().map(Dynamic::from).collect()
    });
    engine.register_fn("len", |c: &mut ConfigHandle| -> INT {
        lock(&c.doc).slots.len() as INT
    });
    engine.register_fn(
        "set",
        |c: &mut ConfigHandle, section: &str, name: &str, value: Dynamic| -> ScriptResult<()> {
            let mut doc = lock(&c.doc);
            let id = doc.get_or_create(section)?;
            doc.set(id, name, &value, false)
        },
    );
    engine.register_fn(
        "set",
        |c: &mut ConfigHandle,
         section: &str,
         name: &str,
         value: Dynamic,
         overwrite: bool|
         -> ScriptResult<()> {
            let mut doc = lock(&c.doc);
            let id = doc.get_or_create(section)?;
            doc.set(id, name, &value, overwrite)
        },
    );
    engine.register_fn(
        "get",
        |c: &mut ConfigHandle, section: &str, name: &str| -> Dynamic {
            let doc = lock(&c.doc);
            doc.slots
                .iter()
                .find(|s| s.section.name == section)
                .and_then(|s| s.section.get(name))
                .map_or(Dynamic::UNIT, text)
        },
    );
    engine.register_fn("to_string", |c: &mut ConfigHandle| -> String {
        to_text(&lock(&c.doc).clone().into_config())
    });
    engine.register_fn("to_debug", |c: &mut ConfigHandle| -> String {
        to_text(&lock(&c.doc).clone().into_config())
    });

    // ---- Section ----
    engine.register_get("name", |s: &mut SectionHandle| -> ScriptResult<String> {
        s.read(|sec| sec.name.clone())
    });
    engine.register_fn(
        "set",
        |s: &mut SectionHandle, name: &str, value: Dynamic| -> ScriptResult<()> {
            lock(&s.doc).set(s.id, name, &value, false)
        },
    );
    engine.register_fn(
        "set",
        |s: &mut SectionHandle, name: &str, value: Dynamic, overwrite: bool| -> ScriptResult<()> {
            lock(&s.doc).set(s.id, name, &value, overwrite)
        },
    );
    engine.register_fn(
        "get",
        |s: &mut SectionHandle, name: &str| -> ScriptResult<Dynamic> {
            s.read(|sec| sec.get(name).map_or(Dynamic::UNIT, text))
        },
    );
    engine.register_fn(
        "has",
        |s: &mut SectionHandle, name: &str| -> ScriptResult<bool> {
            s.read(|sec| sec.entry(name).is_some())
        },
    );
    engine.register_fn(
        "contains",
        |s: &mut SectionHandle, name: &str| -> ScriptResult<bool> {
            s.read(|sec| sec.entry(name).is_some())
        },
    );
    engine.register_fn(
        "remove",
        |s: &mut SectionHandle, name: &str| -> ScriptResult<bool> {
            lock(&s.doc).remove(s.id, name)
        },
    );
    engine.register_fn("names", |s: &mut SectionHandle| -> ScriptResult<Array> {
        s.read(|sec| sec.names().into_iter().map(Dynamic::from).collect())
    });
    engine.register_fn("entries", |s: &mut SectionHandle| -> ScriptResult<Array> {
        s.entries()
    });
    engine.register_fn("len", |s: &mut SectionHandle| -> ScriptResult<INT> {
        s.read(|sec| sec.entries.len() as INT)
    });
    engine.register_indexer_get(
        |s: &mut SectionHandle, name: ImmutableString| -> ScriptResult<Dynamic> {
            s.read(|sec| sec.get(&name).map_or(Dynamic::UNIT, text))
        },
    );
    engine.register_indexer_set(
        |s: &mut SectionHandle, name: ImmutableString, value: Dynamic| -> ScriptResult<()> {
            lock(&s.doc).set(s.id, &name, &value, false)
        },
    );
    engine.register_fn("to_string", |s: &mut SectionHandle| -> String {
        s.read(|sec| {
            to_text(&Config {
                sections: vec![sec.clone()],
            })
        })
        .unwrap_or_else(|_| "(removed section)".to_string())
    });
    engine.register_fn("to_debug", |s: &mut SectionHandle| -> String {
        s.read(|sec| {
            to_text(&Config {
                sections: vec![sec.clone()],
            })
        })
        .unwrap_or_else(|_| "(removed section)".to_string())
    });

    // ---- request, account, password ----
    // Named "map" so `type_of(request)` reads as it always did.
    engine.register_type_with_name::<FrozenMap>("map");
    engine.register_indexer_get(|m: &mut FrozenMap, key: ImmutableString| m.get(&key));
    // Rhai writes a part back after any method call on it (`request.headers.len()`), so
    // writing back what is there already is not a change.
    engine.register_indexer_set(
        |m: &mut FrozenMap, key: ImmutableString, value: Dynamic| -> ScriptResult<()> {
            m.write_back(&key, &value)
        },
    );
    // Rhai reads `request.method` through a getter when one is registered, and only then
    // falls back to the indexer — after formatting a "no getter" error it throws away. So
    // every key these maps have gets a getter (and a setter, which Rhai calls to write a
    // part back after a method call on it: `request.headers.len()`).
    for key in FROZEN_KEYS {
        engine.register_get(key, move |m: &mut FrozenMap| m.get(key));
        engine.register_set(
            key,
            move |m: &mut FrozenMap, value: Dynamic| -> ScriptResult<()> {
                m.write_back(key, &value)
            },
        );
    }
    engine.register_fn("get", |m: &mut FrozenMap, key: &str| m.get(key));
    engine.register_fn("contains", |m: &mut FrozenMap, key: &str| {
        m.0.contains_key(key)
    });
    engine.register_fn("len", |m: &mut FrozenMap| m.0.len() as INT);
    engine.register_fn("is_empty", |m: &mut FrozenMap| m.0.is_empty());
    engine.register_fn("keys", |m: &mut FrozenMap| -> Array {
        m.0.keys()
            .map(|k| Dynamic::from(ImmutableString::from(k.as_str())))
            .collect()
    });
    engine.register_fn("values", |m: &mut FrozenMap| -> Array {
        m.0.values().cloned().collect()
    });
    engine.register_fn("to_string", |m: &mut FrozenMap| m.display(false));
    engine.register_fn("to_debug", |m: &mut FrozenMap| m.display(true));

    // ---- not in the sandbox ----
    // Rhai's core package has `sleep`, which would block the request thread past the
    // deadline (the progress callback does not run while sleeping). Functions registered
    // here are found before the packages', so these shadow it.
    engine.register_fn("sleep", |_: INT| -> ScriptResult<()> {
        Err(script_error("sleep() is not available in hooks"))
    });
    engine.register_fn("sleep", |_: rhai::FLOAT| -> ScriptResult<()> {
        Err(script_error("sleep() is not available in hooks"))
    });

    // ---- refusing and logging ----
    engine.register_fn("deny", deny);
    engine.register_fn("log_info", |ctx: NativeCallContext, m: Dynamic| {
        log_at(tracing::Level::INFO, &ctx, &m)
    });
    engine.register_fn("log_warn", |ctx: NativeCallContext, m: Dynamic| {
        log_at(tracing::Level::WARN, &ctx, &m)
    });
    engine.register_fn("log_error", |ctx: NativeCallContext, m: Dynamic| {
        log_at(tracing::Level::ERROR, &ctx, &m)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_with(names: &[&str]) -> SharedDoc {
        let mut c = Config::new();
        for n in names {
            c.push_section(n);
        }
        Arc::new(Mutex::new(Doc::from_config(c)))
    }

    #[test]
    fn handles_follow_ids_across_removals() {
        let doc = doc_with(&["sip", "proxy_0", "auth_info_0"]);
        let auth = SectionHandle::new(doc.clone(), 2);
        assert!(lock(&doc).remove_section("sip"));
        lock(&doc)
            .set(auth.id, "userid", &Dynamic::from("anna"), false)
            .unwrap();
        let config = lock(&doc).clone().into_config();
        assert_eq!(config.names(), vec!["proxy_0", "auth_info_0"]);
        assert_eq!(config.sections[1].get("userid"), Some("anna"));
        assert!(lock(&doc).remove_section("auth_info_0"));
        let err = lock(&doc)
            .set(auth.id, "x", &Dynamic::from("y"), false)
            .unwrap_err();
        assert!(err.to_string().contains("removed"), "{err}");
    }

    #[test]
    fn values_are_converted_and_checked() {
        let doc = doc_with(&["s"]);
        let mut d = lock(&doc);
        d.set(0, "b", &Dynamic::from(true), false).unwrap();
        d.set(0, "i", &Dynamic::from_int(42), true).unwrap();
        assert!(d.set(0, "u", &Dynamic::UNIT, false).is_err());
        assert!(d.set(0, "n", &Dynamic::from("a\nb"), false).is_err());
        assert!(d.set(0, "a=b", &Dynamic::from("x"), false).is_err());
        let c = d.clone().into_config();
        assert_eq!(c.sections[0].get("b"), Some("1"));
        assert!(
            c.sections[0]
                .entry("i")
                .is_some_and(|e| e.overwrite && e.value == "42")
        );
        assert_eq!(c.sections[0].entries.len(), 2);
    }

    #[test]
    fn document_size_is_bounded() {
        let doc = doc_with(&["s"]);
        let mut d = lock(&doc);
        let big = Dynamic::from("x".repeat(60_000));
        let mut failed = false;
        for i in 0..100 {
            if d.set(0, &format!("k{i}"), &big, false).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
        assert!(d.bytes <= MAX_DOCUMENT_BYTES);
        // Replacing values and removing entries frees room again.
        d.remove(0, "k0").unwrap();
        assert!(d.set(0, "again", &big, false).is_ok());
    }

    #[test]
    fn deny_checks_its_status() {
        let err = deny(403, "no").unwrap_err();
        match *err {
            EvalAltResult::ErrorTerminated(ref t, _) => {
                let t = t.clone().try_cast::<DenyToken>().unwrap();
                assert_eq!(t.status, 403);
            }
            ref other => panic!("{other:?}"),
        }
        for bad in [200, 399, 600, -1, 70_000] {
            assert!(matches!(
                *deny(bad, "x").unwrap_err(),
                EvalAltResult::ErrorRuntime(..)
            ));
        }
        assert!(matches!(
            *deny(403, "a\nb").unwrap_err(),
            EvalAltResult::ErrorRuntime(..)
        ));
    }
}

//! Tools for hook authors, behind `provisio hooks check`, `provisio hooks test` and fixture
//! rendering: compile a directory and list what each script defines; run golden fixtures
//! (an account and a request in, the expected XML out) through exactly the pipeline's
//! stages — assemble, hooks, finish — and show a readable diff when they disagree.
//!
//! Fixture layout (documented for authors in `hooks/README.md`):
//! `DIR/fixtures/<case>/fixture.toml` + `DIR/fixtures/<case>/expected.xml`.

use super::Hooks;
use super::set::{FileKind, compile_dir};
use crate::config::HookSettings;
use crate::document::{PreparedSpace, RenderInput, render};
use crate::error::AppError;
use crate::lpconfig::{Config, xml};
use crate::model::{Account, Algorithm, HookFailure, Password, Space};
use crate::request::{RequestInfo, RouteKind};
use anyhow::Context as _;
use figment::providers::{Format, Toml};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Directory of fixture cases inside a hooks directory.
pub const FIXTURES_DIR: &str = "fixtures";
/// A case's inputs.
pub const FIXTURE_FILE: &str = "fixture.toml";
/// A case's expected document.
pub const EXPECTED_FILE: &str = "expected.xml";

/// One test case: a space, an optional account with its passwords, a request, and what the
/// client should get (the XML in `expected.xml`, or a status).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// What the case shows (free text, for the reader).
    #[serde(default)]
    pub description: String,
    /// The request's space (also the account's space).
    pub space: FixtureSpace,
    /// The account; omit for anonymous `/provisioning`.
    #[serde(default)]
    pub account: Option<FixtureAccount>,
    /// The account's SIP passwords (HA1 only).
    #[serde(default)]
    pub passwords: Vec<FixturePassword>,
    /// The request.
    #[serde(default)]
    pub request: FixtureRequest,
    /// Expect a refusal with this status instead of a document (`deny`, or 500 for a failing
    /// script).
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// With `expect_status`: the message the client must get.
    #[serde(default)]
    pub expect_message: Option<String>,
}

/// The subset of a space's settings that shapes documents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureSpace {
    /// SIP domain: selects `<domain>.rhai`.
    pub domain: String,
    /// HTTP host (default: the domain).
    #[serde(default)]
    pub host: Option<String>,
    /// Digest realm (default: the domain).
    #[serde(default)]
    pub realm: Option<String>,
    /// `MD5` or `SHA-256` (default).
    #[serde(default)]
    pub password_algorithm: Algorithm,
    /// Base linphonerc (INI).
    #[serde(default)]
    pub base_rc: Option<String>,
    /// FlexiAPI's custom provisioning entries (INI).
    #[serde(default)]
    pub custom_entries: Option<String>,
    /// `overwrite="true"` on every entry.
    #[serde(default)]
    pub overwrite_all: bool,
    /// `misc/contacts-vcard-list`.
    #[serde(default)]
    pub vcard_list_url: Option<String>,
    /// `fail` (default) or `skip`.
    #[serde(default)]
    pub hook_failure: HookFailure,
}

/// The account being provisioned (it belongs to the fixture's space).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureAccount {
    /// Database id (default 1).
    #[serde(default = "one")]
    pub id: i64,
    /// SIP user part.
    pub username: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Activated (default true).
    #[serde(default = "yes")]
    pub activated: bool,
    /// Space admin.
    #[serde(default)]
    pub admin: bool,
    /// Custom key/values (`account.dictionary` in scripts).
    #[serde(default)]
    pub dictionary: BTreeMap<String, String>,
}

fn one() -> i64 {
    1
}

fn yes() -> bool {
    true
}

/// One stored SIP password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixturePassword {
    /// `MD5` or `SHA-256`.
    pub algorithm: Algorithm,
    /// The HA1 (any text: fixtures need no real hash).
    pub ha1: String,
}

/// The route a fixture's request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixtureRoute {
    /// `/provisioning`.
    Anonymous,
    /// `/provisioning/{token}`.
    Token,
    /// `/provisioning/auth_token/{token}`.
    AuthToken,
    /// `/provisioning/me`.
    Me,
    /// `provisio render`.
    Render,
}

/// The request as hooks see it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRequest {
    /// Route (default: `token` with an account, `anonymous` without).
    #[serde(default)]
    pub route: Option<FixtureRoute>,
    /// Method (default `GET`).
    #[serde(default)]
    pub method: Option<String>,
    /// Path (default: the route's usual path).
    #[serde(default)]
    pub path: Option<String>,
    /// Query parameters.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Headers (names are lower-cased).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Client address.
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
}

impl Fixture {
    /// Reads `fixture.toml` from a case directory.
    pub fn load(case_dir: &Path) -> anyhow::Result<Fixture> {
        let path = case_dir.join(FIXTURE_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Fixture::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses the text of a `fixture.toml` (a fixture stored in the database has the same
    /// text); the error names the line and column, or the key, at fault.
    pub fn parse(text: &str) -> Result<Fixture, String> {
        figment::Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| e.to_string())
    }

    /// The space.
    pub fn space(&self) -> Space {
        let s = &self.space;
        let mut space = Space::new(&s.domain, s.host.as_deref().unwrap_or(&s.domain));
        space.id = 1;
        if let Some(realm) = &s.realm {
            space.realm = realm.clone();
        }
        space.password_algorithm = s.password_algorithm;
        space.base_rc = s.base_rc.clone();
        space.custom_entries = s.custom_entries.clone();
        space.overwrite_all = s.overwrite_all;
        space.vcard_list_url = s.vcard_list_url.clone();
        space.hook_failure = s.hook_failure;
        space
    }

    /// The account, in the fixture's space.
    pub fn account(&self) -> Option<Account> {
        self.account.as_ref().map(|a| Account {
            id: a.id,
            username: a.username.clone(),
            domain: self.space.domain.clone(),
            email: a.email.clone(),
            display_name: a.display_name.clone(),
            phone: a.phone.clone(),
            activated: a.activated,
            blocked: false,
            admin: a.admin,
            dtmf_protocol: None,
            ip_address: None,
            user_agent: None,
            created_at: 0,
            updated_at: 0,
            dictionary: a.dictionary.clone(),
        })
    }

    /// The passwords, numbered in order.
    pub fn passwords(&self) -> Vec<Password> {
        let account_id = self.account.as_ref().map_or(0, |a| a.id);
        self.passwords
            .iter()
            .enumerate()
            .map(|(i, p)| Password {
                id: i as i64 + 1,
                account_id,
                algorithm: p.algorithm,
                ha1: p.ha1.clone(),
            })
            .collect()
    }

    /// The request.
    pub fn request(&self) -> RequestInfo {
        let r = &self.request;
        let route = match r.route {
            Some(FixtureRoute::Anonymous) => RouteKind::Anonymous,
            Some(FixtureRoute::Token) => RouteKind::Token,
            Some(FixtureRoute::AuthToken) => RouteKind::AuthToken,
            Some(FixtureRoute::Me) => RouteKind::Me,
            Some(FixtureRoute::Render) => RouteKind::Render,
            None if self.account.is_some() => RouteKind::Token,
            None => RouteKind::Anonymous,
        };
        let default_path = match route {
            RouteKind::Anonymous => "/provisioning",
            RouteKind::Token => "/provisioning/fixture-token",
            RouteKind::AuthToken => "/provisioning/auth_token/fixture-token",
            RouteKind::Me => "/provisioning/me",
            RouteKind::Render => "/provisioning",
        };
        let host = self.space.host.as_deref().unwrap_or(&self.space.domain);
        let mut request =
            RequestInfo::synthetic(host, r.path.as_deref().unwrap_or(default_path), route);
        if let Some(m) = &r.method {
            request.method = m.to_ascii_uppercase();
        }
        request.query = r.query.clone();
        request.raw_query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(r.query.iter())
            .finish();
        request.headers = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        request.client_ip = r.client_ip;
        request
    }
}

/// Renders the document a fixture describes through the server's own render path
/// ([`crate::document::render`]: assemble, [`Hooks::run`], finish). Returns the one-line XML
/// the client would get, or the error it would get.
pub fn render_fixture(fixture: &Fixture, hooks: &Hooks) -> Result<String, AppError> {
    let space = Arc::new(PreparedSpace::new(fixture.space()));
    let account = fixture.account();
    let input = RenderInput {
        account_space: account.as_ref().map(|_| space.clone()),
        space,
        account,
        passwords: fixture.passwords(),
        request: fixture.request(),
    };
    render(input, hooks)
}

/// Compiles every script of `dir` and writes, per file, its kind, the hooks it defines, and
/// its warnings and errors. Returns whether every file compiled.
pub fn check_dir(dir: &Path, settings: &HookSettings, out: &mut dyn Write) -> anyhow::Result<bool> {
    if !dir.is_dir() {
        writeln!(out, "{}: no such directory", dir.display())?;
        return Ok(false);
    }
    let engine = super::engine::new_engine(settings, dir);
    let compiled =
        compile_dir(&engine, dir).with_context(|| format!("reading {}", dir.display()))?;
    writeln!(out, "hooks in {}", dir.display())?;
    if compiled.files.is_empty() {
        writeln!(out, "  (no *.rhai files)")?;
    }
    let width = compiled
        .files
        .iter()
        .map(|f| f.file.len())
        .max()
        .unwrap_or(0);
    for f in &compiled.files {
        let kind = match &f.kind {
            FileKind::Default => "default (every space)".to_string(),
            FileKind::Space(domain) => format!("space {domain}"),
            FileKind::Module => "module".to_string(),
        };
        let status = if f.error.is_some() { "ERROR" } else { "ok" };
        let hooks = if f.hooks.is_empty() {
            String::new()
        } else {
            format!("  {}", f.hooks.join(", "))
        };
        writeln!(out, "  {status:<5} {:<width$}  {kind}{hooks}", f.file)?;
        for w in &f.warnings {
            writeln!(out, "        warning: {w}")?;
        }
        if let Some(e) = &f.error {
            writeln!(out, "        error: {e}")?;
        }
    }
    let errors = compiled.files.iter().filter(|f| f.error.is_some()).count();
    writeln!(
        out,
        "{} file(s), {} with errors",
        compiled.files.len(),
        errors
    )?;
    Ok(errors == 0)
}

/// Runs every fixture under `dir/fixtures` with `dir` as the hooks directory, printing `ok`
/// or a line-per-entry diff for each. With `bless`, rewrites `expected.xml` with what the
/// scripts produce now. Returns whether every case passed (after blessing, when asked).
pub fn test_dir(
    dir: &Path,
    settings: &HookSettings,
    bless: bool,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    // The directory alone, whatever `hooks.source` says: this tests the files.
    let settings = HookSettings {
        dir: dir.to_path_buf(),
        source: crate::config::HookSource::Files,
        ..settings.clone()
    };
    let hooks = match Hooks::load(&settings) {
        Ok(h) => h,
        Err(e) => {
            writeln!(out, "{e:#}")?;
            return Ok(false);
        }
    };
    let cases = list_cases(&dir.join(FIXTURES_DIR))?;
    if cases.is_empty() {
        writeln!(
            out,
            "no fixtures under {}",
            dir.join(FIXTURES_DIR).display()
        )?;
        return Ok(true);
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match run_case(case, &hooks, bless) {
            Ok(CaseResult::Pass) => {
                passed += 1;
                writeln!(out, "ok       {name}")?;
            }
            Ok(CaseResult::Blessed) => {
                passed += 1;
                writeln!(out, "blessed  {name} ({EXPECTED_FILE} rewritten)")?;
            }
            Ok(CaseResult::Fail(why)) => {
                failed += 1;
                writeln!(out, "FAILED   {name}")?;
                for line in why.lines() {
                    writeln!(out, "    {line}")?;
                }
            }
            Err(e) => {
                failed += 1;
                writeln!(out, "FAILED   {name}")?;
                writeln!(out, "    {e:#}")?;
            }
        }
    }
    writeln!(out, "{passed} passed, {failed} failed")?;
    Ok(failed == 0)
}

enum CaseResult {
    Pass,
    Blessed,
    Fail(String),
}

fn list_cases(fixtures: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(fixtures) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", fixtures.display())),
    };
    let mut cases: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    Ok(cases)
}

/// Judges a refusal (or a served document) against a fixture's `expect_status` and
/// `expect_message`; `None` when the fixture expects a document.
fn judge_status(fixture: &Fixture, rendered: &Result<String, AppError>) -> Option<CaseResult> {
    let status = fixture.expect_status?;
    Some(match rendered {
        Ok(_) => CaseResult::Fail(format!(
            "expected status {status}, but the document was served"
        )),
        Err(e) if e.status() != status => {
            CaseResult::Fail(format!("expected status {status}, got {}: {e}", e.status()))
        }
        Err(e) => match &fixture.expect_message {
            Some(m) if *m != e.public_message() => CaseResult::Fail(format!(
                "expected message {m:?}, got {:?}",
                e.public_message()
            )),
            _ => CaseResult::Pass,
        },
    })
}

/// Runs one fixture given as text (a fixture stored in the database: its `fixture.toml` and,
/// unless it expects a status, its `expected.xml`) with `hooks`, as `hooks test` runs a case.
/// `Err` says why it fails (a diff, or the script's error with file, line and column).
pub fn check_fixture(
    fixture: &Fixture,
    expected: Option<&str>,
    hooks: &Hooks,
) -> Result<(), String> {
    let rendered = render_fixture(fixture, hooks);
    if let Some(judged) = judge_status(fixture, &rendered) {
        return match judged {
            CaseResult::Fail(why) => Err(why),
            _ => Ok(()),
        };
    }
    let xml =
        rendered.map_err(|e| format!("expected a document, got status {}: {e}", e.status()))?;
    let actual = xml::parse(&xml).map_err(|e| format!("rendered XML does not parse: {e}"))?;
    let Some(text) = expected else {
        return Err(format!("no {EXPECTED_FILE} to compare the document with"));
    };
    let expected = xml::parse(text).map_err(|e| format!("{EXPECTED_FILE} does not parse: {e}"))?;
    if expected == actual {
        return Ok(());
    }
    Err(format!(
        "document differs from {EXPECTED_FILE} (- expected, + actual; one line per entry):\n{}",
        diff(&lines(&expected), &lines(&actual))
    ))
}

fn run_case(case: &Path, hooks: &Hooks, bless: bool) -> anyhow::Result<CaseResult> {
    let fixture = Fixture::load(case)?;
    let rendered = render_fixture(&fixture, hooks);
    if let Some(judged) = judge_status(&fixture, &rendered) {
        return Ok(judged);
    }
    let xml = match rendered {
        Ok(xml) => xml,
        Err(e) => {
            return Ok(CaseResult::Fail(format!(
                "expected a document, got status {}: {e}",
                e.status()
            )));
        }
    };
    let actual =
        xml::parse(&xml).map_err(|e| anyhow::anyhow!("rendered XML does not parse: {e}"))?;
    let expected_path = case.join(EXPECTED_FILE);
    if bless {
        let current = std::fs::read_to_string(&expected_path).ok();
        let same = current
            .as_deref()
            .and_then(|t| xml::parse(t).ok())
            .is_some_and(|c| c == actual);
        if same {
            return Ok(CaseResult::Pass);
        }
        std::fs::write(&expected_path, pretty(&actual))
            .with_context(|| format!("writing {}", expected_path.display()))?;
        return Ok(CaseResult::Blessed);
    }
    let text = match std::fs::read_to_string(&expected_path) {
        Ok(t) => t,
        Err(e) => {
            return Ok(CaseResult::Fail(format!(
                "cannot read {EXPECTED_FILE}: {e} (run with --bless to create it)"
            )));
        }
    };
    let expected =
        xml::parse(&text).map_err(|e| anyhow::anyhow!("{EXPECTED_FILE} does not parse: {e}"))?;
    if expected == actual {
        return Ok(CaseResult::Pass);
    }
    Ok(CaseResult::Fail(format!(
        "document differs from {EXPECTED_FILE} (- expected, + actual; one line per entry):\n{}",
        diff(&lines(&expected), &lines(&actual))
    )))
}

/// Renders a document with one section and one entry per line, for golden files that read
/// well in a review (parsing ignores the whitespace between elements).
pub fn pretty(config: &Config) -> String {
    let one_line = xml::render(config);
    // Text and attribute values are escaped, so these tags only occur as markup.
    let mut out = one_line
        .replace("<section ", "\n  <section ")
        .replace("<entry ", "\n    <entry ")
        .replace("</section>", "\n  </section>")
        .replace("</config>", "\n</config>");
    out.push('\n');
    out
}

/// The document as `[section] name = value` lines, one per entry.
pub fn lines(config: &Config) -> Vec<String> {
    let mut v = Vec::new();
    for s in &config.sections {
        if s.entries.is_empty() {
            v.push(format!("[{}]", s.name));
        }
        for e in &s.entries {
            let mark = if e.overwrite { "  (overwrite)" } else { "" };
            v.push(format!("[{}] {} = {}{mark}", s.name, e.name, e.value));
        }
    }
    v
}

/// A line diff (longest common subsequence) with two lines of context around changes.
pub fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            ops.push((' ', &expected[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', &expected[i]));
            i += 1;
        } else {
            ops.push(('+', &actual[j]));
            j += 1;
        }
    }
    const CONTEXT: usize = 2;
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, (c, _))| *c != ' ')
        .map(|(k, _)| k)
        .collect();
    let near = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= CONTEXT);
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push_str("  …\n");
                skipped = false;
            }
            out.push_str(&format!("{c} {line}\n"));
        } else {
            skipped = true;
        }
    }
    if skipped {
        out.push_str("  …\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_round_trips() {
        let mut c = Config::new();
        let s = c.push_section("proxy_0");
        c.sections[s].set("reg_identity", "\"A <b>\" <sip:a@b> & c", true);
        c.sections[s].set("empty", "", false);
        c.push_section("bare");
        let text = pretty(&c);
        assert!(text.lines().count() >= 5, "{text}");
        assert_eq!(xml::parse(&text).unwrap(), c);
    }

    #[test]
    fn diff_marks_changes_with_context() {
        let a: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
        let mut b = a.clone();
        b[5] = "changed".into();
        let d = diff(&a, &b);
        assert!(d.contains("- l5\n+ changed\n"), "{d}");
        assert!(
            d.contains("  l3\n") && d.contains("  l7\n") && !d.contains("l0"),
            "{d}"
        );
    }
}

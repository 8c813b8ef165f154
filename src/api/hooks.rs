//! `/api/hooks`: hook scripts stored in the database (`crate::hooks::db`), versioned,
//! validated before they go live, and pushed to every instance; plus `GET /api/hooks/status`,
//! what every instance serves.
//!
//! Roles: a super admin manages every script. A space admin manages only its own space's
//! script (named by the space's domain) and may read, not write, `default` and the shared
//! modules; another space's script is a 403 even to read. Everyone else: 401/403 as for the
//! rest of the admin API. The status is the super admin's (it names every tenant's script).

use crate::api::access::{self, Admin, UNAUTHORIZED_AREA};
use crate::api::input::Input;
use crate::api::{ApiReply, ApiResult};
use crate::audit::{self, Actor};
use crate::document::RenderInput;
use crate::error::AppError;
use crate::hooks::db::{self, StoredFixture};
use crate::hooks::set::{FileKind, Origin};
use crate::model::iso_time;
use crate::request::{RequestInfo, RouteKind};
use crate::state::AppState;
use crate::store::{HookScriptRecord, NewHookScript};
use serde_json::{Value, json};

/// Longest comment kept with a version.
const MAX_COMMENT_CHARS: usize = 1000;

/// `GET /api/hooks/status` (super admin) — this instance's hooks engine, the database's live
/// versions, and what every instance reported serving (whether the fleet agrees).
pub async fn status(state: &AppState, request: &RequestInfo) -> ApiResult {
    access::super_admin(state, request).await?;
    let status = db::fleet_status(&state.hooks, state.store.as_ref()).await?;
    Ok(ApiReply::json(200, status))
}

/// 404 for a script that is not (or no longer) stored.
fn not_found(name: &str) -> AppError {
    AppError::NotFound(format!("No hook script {name}"))
}

/// Whether `admin` may read (`write = false`) or write a script of this kind.
fn allowed(admin: &Admin, kind: &FileKind, write: bool) -> bool {
    if admin.super_admin {
        return true;
    }
    match kind {
        FileKind::Space(domain) => *domain == admin.space.domain,
        FileKind::Default | FileKind::Module => !write,
    }
}

/// The admin calling, the script's canonical name and kind, when the admin may read or write
/// it. An invalid name is a 404 to read and a 422 to write.
async fn authorize(
    state: &AppState,
    request: &RequestInfo,
    name: &str,
    write: bool,
) -> Result<(Admin, String, FileKind), AppError> {
    let admin = access::admin(state, request).await?;
    let (name, kind) = match db::parse_name(name) {
        Ok(parsed) => parsed,
        Err(why) if write => return Err(AppError::field("name", format!("{why}."))),
        Err(_) => return Err(not_found(name)),
    };
    if !allowed(&admin, &kind, write) {
        let what = if write {
            "a space admin may change only its own space's script"
        } else {
            "a space admin may read only its own space's script, `default` and the modules"
        };
        return Err(AppError::Forbidden(format!("{UNAUTHORIZED_AREA}: {what}")));
    }
    Ok((admin, name, kind))
}

/// With `hooks.source = "files"` this instance serves no database script: storing one would
/// change nothing anyone sees.
fn refuse_files_mode(state: &AppState) -> Result<(), AppError> {
    if state.hooks.source().reads_database() {
        return Ok(());
    }
    Err(AppError::Conflict(
        "This server reads hook scripts from its directory only (hooks.source = \"files\"); \
         scripts cannot be stored in the database"
            .to_string(),
    ))
}

/// A version as the API shows it; `full` adds the source and the fixtures.
fn record_json(r: &HookScriptRecord, full: bool) -> Value {
    let kind = db::parse_name(&r.name).map_or("unknown", |(_, k)| db::kind_name(&k));
    let mut v = json!({
        "name": r.name,
        "kind": kind,
        "version": r.version,
        "deleted": r.source.is_none(),
        "author": r.author,
        "author_account_id": r.author_account_id,
        "comment": r.comment,
        "created_at": iso_time(r.created_at),
    });
    if full {
        v["source"] = json!(r.source);
        v["fixtures"] = json!(db::stored_fixtures(r.fixtures.as_deref()));
    }
    v
}

/// What this instance serves under `name`: `{origin, version}` or `null`.
fn serving_json(state: &AppState, name: &str) -> Value {
    match state.hooks.serving(name) {
        Some((origin, version)) => json!({ "origin": origin, "version": version }),
        None => Value::Null,
    }
}

/// `GET /api/hooks` (admin) — the scripts the caller may see: every live script of the
/// database with its live version, and the scripts this instance serves from its hooks
/// directory (`origin: files`).
pub async fn list(state: &AppState, request: &RequestInfo) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let visible =
        |name: &str| db::parse_name(name).is_ok_and(|(_, kind)| allowed(&admin, &kind, false));
    let mut out = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for r in state.store.live_hook_scripts().await? {
        if visible(&r.name) {
            let mut v = record_json(&r, false);
            v["origin"] = json!(Origin::Database);
            v["serving"] = serving_json(state, &r.name);
            names.insert(r.name.clone());
            out.push(v);
        }
    }
    for f in state.hooks.status().scripts {
        let name = f.file.trim_end_matches(".rhai").to_string();
        if f.origin == Origin::Files && !names.contains(&name) && visible(&name) {
            out.push(json!({
                "name": name,
                "kind": db::kind_name(&f.kind),
                "origin": Origin::Files,
                "serving": { "origin": Origin::Files, "version": null },
            }));
        }
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(ApiReply::json(200, Value::Array(out)))
}

/// `GET /api/hooks/{name}` — the live version, with source and fixtures; 404 when the
/// script is not stored or its latest version is a deletion.
pub async fn show(state: &AppState, request: &RequestInfo, name: &str) -> ApiResult {
    let (_, name, _) = authorize(state, request, name, false).await?;
    let latest = state
        .store
        .hook_script_versions(&name)
        .await?
        .into_iter()
        .next()
        .filter(|r| r.source.is_some())
        .ok_or_else(|| not_found(&name))?;
    let mut v = record_json(&latest, true);
    v["serving"] = serving_json(state, &name);
    Ok(ApiReply::json(200, v))
}

/// `GET /api/hooks/{name}/versions` — every version, newest first (without sources).
pub async fn versions(state: &AppState, request: &RequestInfo, name: &str) -> ApiResult {
    let (_, name, _) = authorize(state, request, name, false).await?;
    let versions = state.store.hook_script_versions(&name).await?;
    if versions.is_empty() {
        return Err(not_found(&name));
    }
    Ok(ApiReply::json(
        200,
        Value::Array(versions.iter().map(|r| record_json(r, false)).collect()),
    ))
}

/// A version number from the path (`{version}`): a positive integer, else 404.
fn version_number(name: &str, text: &str) -> Result<i64, AppError> {
    text.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AppError::NotFound(format!("No version {text} of hook script {name}")))
}

/// `GET /api/hooks/{name}/versions/{version}` — one version, with source and fixtures.
pub async fn version(
    state: &AppState,
    request: &RequestInfo,
    name: &str,
    version: &str,
) -> ApiResult {
    let (_, name, _) = authorize(state, request, name, false).await?;
    let n = version_number(&name, version)?;
    let record = state
        .store
        .hook_script_version(&name, n)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("No version {n} of hook script {name}")))?;
    Ok(ApiReply::json(200, record_json(&record, true)))
}

/// Whether the query asks for a dry run (`?dry_run=1` or `true`).
fn dry_run(request: &RequestInfo) -> bool {
    request
        .query
        .get("dry_run")
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes"))
}

/// `PUT /api/hooks/{name}` — body `{source, comment?, fixtures?}`. Validates (compiles the
/// set with the change, runs the fixtures: sent ones, else those stored with the live
/// version) and stores the next version, which this instance serves before it answers and
/// every instance within the staleness bound. 201 for a script's first version, 200 after;
/// 422 with the compiler's or fixture's message when refused (nothing stored). With
/// `?dry_run=1` nothing is stored: 200 with the preview document (`account_id=N` renders
/// that account's, else the anonymous document of the script's space or the request's).
pub async fn save(state: &AppState, request: &RequestInfo, name: &str, body: Value) -> ApiResult {
    let (admin, name, kind) = authorize(state, request, name, true).await?;
    refuse_files_mode(state)?;
    let fixtures_value = body.get("fixtures").cloned();
    let mut input = Input::new(body)?;
    let source = input.required_string("source").unwrap_or_default();
    let comment = read_comment(&mut input);
    let fixtures = match fixtures_value {
        None | Some(Value::Null) => None,
        Some(value) => match db::parse_fixtures(value) {
            Ok(f) => Some(f),
            Err(why) => {
                input.error("fixtures", why);
                None
            }
        },
    };
    input.finish()?;
    let history = state.store.hook_script_versions(&name).await?;
    let latest = history.first();
    // Fixtures not sent: those stored with the live version stay with the script.
    let fixtures: Vec<StoredFixture> = fixtures.unwrap_or_else(|| {
        latest
            .filter(|r| r.source.is_some())
            .map(|r| db::stored_fixtures(r.fixtures.as_deref()))
            .unwrap_or_default()
    });
    let live = db::live_scripts(state.store.as_ref()).await?;
    let candidate = db::with_change(&live, &name, Some(&source));
    if dry_run(request) {
        let input = preview_input(state, &admin, &name, &kind, request).await?;
        let hooks = state.hooks.clone();
        let checked_fixtures = fixtures.len();
        let outcome = blocking(move || {
            let checked = hooks.check_candidate(candidate, &fixtures)?;
            Ok((checked.warnings.clone(), db::preview(&checked.hooks, input)))
        })
        .await?;
        let (warnings, preview) =
            outcome.map_err(|refused| redact(&admin, refused).into_error())?;
        return Ok(ApiReply::json(
            200,
            json!({
                "name": name,
                "dry_run": true,
                "valid": true,
                "warnings": warnings,
                "fixtures_passed": checked_fixtures,
                "preview": preview,
            }),
        ));
    }
    let warnings = validate(state, &admin, candidate, fixtures.clone()).await?;
    let record = store_version(
        state,
        &admin,
        NewHookScript {
            name: name.clone(),
            source: Some(source),
            fixtures: db::fixtures_column(&fixtures),
            author: String::new(),
            author_account_id: None,
            comment,
        },
    )
    .await?;
    record_event(
        state,
        request,
        &admin,
        audit::action::HOOK_SAVED,
        &record,
        &kind,
        None,
    )
    .await;
    let status = if latest.is_none() { 201 } else { 200 };
    let mut v = record_json(&record, false);
    v["warnings"] = json!(warnings);
    v["serving"] = serving_json(state, &name);
    Ok(ApiReply::json(status, v))
}

/// `DELETE /api/hooks/{name}` — records a deletion as the next version (the history stays);
/// refused with 422 when the scripts left would not compile (a module still imported).
pub async fn delete(state: &AppState, request: &RequestInfo, name: &str) -> ApiResult {
    let (admin, name, kind) = authorize(state, request, name, true).await?;
    refuse_files_mode(state)?;
    let live = db::live_scripts(state.store.as_ref()).await?;
    if !live.iter().any(|s| s.name == name) {
        return Err(not_found(&name));
    }
    validate(
        state,
        &admin,
        db::with_change(&live, &name, None),
        Vec::new(),
    )
    .await?;
    let record = store_version(
        state,
        &admin,
        NewHookScript {
            name: name.clone(),
            source: None,
            fixtures: None,
            author: String::new(),
            author_account_id: None,
            comment: None,
        },
    )
    .await?;
    record_event(
        state,
        request,
        &admin,
        audit::action::HOOK_DELETED,
        &record,
        &kind,
        None,
    )
    .await;
    let mut v = record_json(&record, false);
    v["serving"] = serving_json(state, &name);
    Ok(ApiReply::json(200, v))
}

/// `POST /api/hooks/{name}/rollback/{version}` — makes version `n` live again as a new version
/// (its source and fixtures), through the same validation; body `{comment?}`. A deletion
/// cannot be rolled back to (use DELETE): 422.
pub async fn rollback(
    state: &AppState,
    request: &RequestInfo,
    name: &str,
    version: &str,
    body: Value,
) -> ApiResult {
    let (admin, name, kind) = authorize(state, request, name, true).await?;
    refuse_files_mode(state)?;
    let n = version_number(&name, version)?;
    let mut input = Input::new(body)?;
    let comment = read_comment(&mut input);
    input.finish()?;
    let target = state
        .store
        .hook_script_version(&name, n)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("No version {n} of hook script {name}")))?;
    let Some(source) = target.source.clone() else {
        return Err(AppError::field(
            "version",
            format!("Version {n} is a deletion: delete the script instead."),
        ));
    };
    let fixtures = db::stored_fixtures(target.fixtures.as_deref());
    let live = db::live_scripts(state.store.as_ref()).await?;
    validate(
        state,
        &admin,
        db::with_change(&live, &name, Some(&source)),
        fixtures.clone(),
    )
    .await?;
    let record = store_version(
        state,
        &admin,
        NewHookScript {
            name: name.clone(),
            source: Some(source),
            fixtures: db::fixtures_column(&fixtures),
            author: String::new(),
            author_account_id: None,
            comment: comment.or_else(|| Some(format!("rollback to version {n}"))),
        },
    )
    .await?;
    record_event(
        state,
        request,
        &admin,
        audit::action::HOOK_ROLLED_BACK,
        &record,
        &kind,
        Some(n),
    )
    .await;
    let mut v = record_json(&record, false);
    v["serving"] = serving_json(state, &name);
    Ok(ApiReply::json(200, v))
}

/// The optional `comment` of a body (at most [`MAX_COMMENT_CHARS`]).
fn read_comment(input: &mut Input) -> Option<String> {
    let comment = input.string("comment");
    if comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS)
    {
        input.error(
            "comment",
            format!("The comment may not be greater than {MAX_COMMENT_CHARS} characters."),
        );
    }
    comment
}

/// Runs `f` on the blocking pool (compiling and fixtures are CPU-bound, and a runaway
/// fixture runs to the deadline).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(format!("hook validation task: {e}")))
}

/// Validates a candidate set ([`crate::hooks::Hooks::check_candidate`]); 422 when refused.
/// Returns the warnings.
async fn validate(
    state: &AppState,
    admin: &Admin,
    candidate: Vec<crate::hooks::set::StoredScript>,
    fixtures: Vec<StoredFixture>,
) -> Result<Vec<String>, AppError> {
    let hooks = state.hooks.clone();
    blocking(move || {
        hooks
            .check_candidate(candidate, &fixtures)
            .map(|c| c.warnings)
    })
    .await?
    .map_err(|refused| redact(admin, refused).into_error())
}

/// What a space admin may see of a refusal: the errors of its own script, of `default` and of
/// the modules (which it may read); another space's script's errors (a broken file of the
/// hooks directory) are only counted.
fn redact(admin: &Admin, refused: db::Refused) -> db::Refused {
    let db::Refused::Source(lines) = refused else {
        return refused;
    };
    if admin.super_admin {
        return db::Refused::Source(lines);
    }
    let (mut shown, hidden): (Vec<String>, Vec<String>) = lines.into_iter().partition(|line| {
        let file = line.split(':').next().unwrap_or("");
        match crate::hooks::set::classify(file) {
            Some(FileKind::Space(domain)) => domain == admin.space.domain,
            _ => true,
        }
    });
    if !hidden.is_empty() {
        shown.push(format!(
            "{} script(s) of other spaces do not compile: an operator must fix them first",
            hidden.len()
        ));
    }
    db::Refused::Source(shown)
}

/// Stores a version by `admin`, then brings this instance up to date before it answers (a
/// failed refresh is logged; the periodic check retries it).
async fn store_version(
    state: &AppState,
    admin: &Admin,
    mut new: NewHookScript,
) -> Result<HookScriptRecord, AppError> {
    new.author = format!("{}@{}", admin.account.username, admin.account.domain);
    new.author_account_id = Some(admin.account.id);
    let saved = state
        .store
        .save_hook_scripts(&[new], crate::model::now_ms())
        .await?;
    let record = saved
        .into_iter()
        .next()
        .ok_or_else(|| AppError::Internal("the store saved no hook script".to_string()))?;
    if let Err(e) = state
        .hooks
        .refresh_database(state.store.as_ref(), false)
        .await
    {
        tracing::warn!(error = %e, "hook script stored; this instance serves it after the next check");
    }
    tracing::info!(script = %record.name, version = record.version, deleted = record.source.is_none(), "hook script stored");
    Ok(record)
}

/// Queues the audit event of a stored version: the script is the target; a space script's
/// event belongs to that space.
async fn record_event(
    state: &AppState,
    request: &RequestInfo,
    admin: &Admin,
    action: &str,
    record: &HookScriptRecord,
    kind: &FileKind,
    from: Option<i64>,
) {
    let detail = match from {
        Some(n) => format!("version {} (version {n} again)", record.version),
        None => format!("version {}", record.version),
    };
    let mut event = audit::event(&Actor::account(&admin.account), action)
        .target(record.name.as_str())
        .detail(detail)
        .from_request(request);
    if let FileKind::Space(domain) = kind {
        event = event.space(domain.as_str());
    }
    state.audit.record(event).await;
}

/// What a dry run renders: the account of `?account_id=` (a space admin's own space only;
/// a space script's preview needs an account of that space), else the anonymous document of
/// the script's space (a space script) or of the request's space.
async fn preview_input(
    state: &AppState,
    admin: &Admin,
    name: &str,
    kind: &FileKind,
    request: &RequestInfo,
) -> Result<RenderInput, AppError> {
    let account = match request.query.get("account_id") {
        None => None,
        Some(text) => {
            let id: i64 = text
                .parse()
                .map_err(|_| AppError::field("account_id", "The account_id must be an integer."))?;
            let account = state
                .store
                .account(id)
                .await?
                .filter(|a| admin.super_admin || a.domain == admin.space.domain)
                .ok_or_else(|| access::account_not_found(id))?;
            if let FileKind::Space(domain) = kind
                && account.domain != *domain
            {
                return Err(AppError::field(
                    "account_id",
                    format!("The account is not in the space {name}."),
                ));
            }
            Some(account)
        }
    };
    let domain = match (&account, kind) {
        (Some(a), _) => a.domain.clone(),
        (None, FileKind::Space(domain)) => domain.clone(),
        (None, _) => admin.space.domain.clone(),
    };
    let space = state.spaces.by_domain(&domain).ok_or_else(|| {
        AppError::field(
            "name",
            format!("No space {domain} to render a preview in (create it first)."),
        )
    })?;
    let passwords = match &account {
        Some(a) => state.store.passwords(a.id).await?,
        None => Vec::new(),
    };
    let request = RequestInfo::synthetic(&space.space.host, "/provisioning", RouteKind::Render);
    Ok(RenderInput {
        account_space: account.as_ref().map(|_| space.clone()),
        space,
        account,
        passwords,
        request,
    })
}

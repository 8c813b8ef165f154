//! The wizard pages: what a person sees when they open a link on a desktop or phone browser.
//!
//! * `/wizard/{token}` with a **wizard token** (`POST /api/wizard`, a provisioning e-mail;
//!   FlexiAPI §2.1, FLEXIAPI-462): a `sip-linphone:` link in FlexiAPI's exact form that opens
//!   the app (clicked by a script as the page loads) and, when the wizard names an account,
//!   hands it a provisioning URL minted for this visit; the app's download for the visitor's
//!   platform. The link works once: a `GET` uses it (a `HEAD`, as link previewers send,
//!   does not).
//! * `/wizard/{token}` with a **provisioning token** (the older page, FLEXIAPI-324): a
//!   `linphone-config:` link that hands the URL to the app, the QR code for a phone, and a
//!   download link; it consumes nothing. A path token is looked up as a wizard token first.
//! * `/wizard` without a token: the `sip-linphone:` page built from `?sip=` (a SIP URI),
//!   `?linphone-action=` and `?linphone-use-sips`.

use crate::audit::{self, Actor, action as act};
use crate::error::AppError;
use crate::http::provisioning::{png_blocking, provisioning_url};
use crate::http::{edge, reply, request_info, with_state};
use crate::model::{Space, now_ms};
use crate::pipeline::identity::check_provisioning_token;
use crate::pipeline::reset::RESET_PASSWORD;
use crate::pipeline::space;
use crate::request::{RequestInfo, RouteKind};
use crate::secret::{fingerprint, hash_secret, new_token};
use crate::state::AppState;
use crate::store::{Wizard, WizardToken};
use crate::wizard::{ALL_DOWNLOADS, DEFAULT_ACTION, Platform, heading, is_action, is_sip_uri};
use base64::Engine as _;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// Where people get the app.
pub const DOWNLOAD_URL: &str = ALL_DOWNLOADS;

/// `GET`/`HEAD` `/wizard/{token}` and `/wizard` (link checkers and chat apps that preview a
/// link ask for the head first).
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let token = warp::path!("wizard" / String)
        .and(warp::get().or(warp::head()).unify())
        .and(with_state(state.clone()))
        .and(request_info(RouteKind::Token, "/wizard/{token}"))
        .then(wizard);
    let bare = warp::path!("wizard")
        .and(warp::get().or(warp::head()).unify())
        .and(with_state(state))
        .and(request_info(RouteKind::Anonymous, "/wizard"))
        .then(wizard_from_query);
    token.or(bare).unify().boxed()
}

/// `GET /wizard/{token}[?linphone-use-sips][?reset_password]` — a wizard token renders the
/// `sip-linphone:` page (and is used: 404 afterwards); otherwise the token is checked as a
/// provisioning token like the QR route (404 / 410), nothing is consumed, and the
/// `linphone-config:` page is rendered. A refusal is an HTML page for a browser (its `Accept`
/// names `text/html`) and JSON for anything else, with the same status.
async fn wizard(token: String, state: AppState, request: RequestInfo) -> Response {
    let mut served_by = None;
    let mut account_id = None;
    let result = async {
        let space = space::resolve(&state, &request.host).await?;
        served_by = Some(space.space.domain.clone());
        let hash = hash_secret(&token);
        if let Some(found) = state.store.wizard(&hash).await? {
            let (html, account) = open(&state, &space.space, &request, &hash, found).await?;
            account_id = account;
            return Ok::<_, AppError>(html);
        }
        check_provisioning_token(&state, &token, now_ms()).await?;
        let url = provisioning_url(
            &state,
            &space.space,
            &request,
            &token,
            request.has_query(RESET_PASSWORD),
        );
        let png = png_blocking(url.clone()).await?;
        Ok(page(&space.space.name, &url, &png))
    }
    .await;
    let mut response = match result {
        Ok(html) => reply::with_body(200, HTML, html),
        Err(err) if wants_html(&request) => error_response(&err),
        Err(err) => reply::error(&err),
    };
    edge::note(&mut response, served_by.as_deref(), account_id);
    response
}

/// Opens a wizard link of `space`: a `GET` uses it (minting, in the same transaction, a
/// provisioning token for its account) and renders the `sip-linphone:` page; a `HEAD` only
/// checks it. A used link, or one of another space, is a 404. Returns the page and the
/// provisioned account.
async fn open(
    state: &AppState,
    space: &Space,
    request: &RequestInfo,
    hash: &[u8],
    wizard: Wizard,
) -> Result<(String, Option<i64>), AppError> {
    let gone = || {
        AppError::NotFound("This wizard link has already been used: ask for a new one.".to_string())
    };
    if wizard.space != space.domain {
        return Err(AppError::NotFound("Unknown wizard link".to_string()));
    }
    if wizard.used_at.is_some() {
        return Err(gone());
    }
    if request.method.eq_ignore_ascii_case("HEAD") {
        return Ok((String::new(), None));
    }
    let account = match wizard.provisioning_account_id {
        Some(id) => Some(
            state
                .store
                .account(id)
                .await?
                .filter(|a| a.domain == space.domain)
                .ok_or_else(|| AppError::NotFound("Unknown wizard link".to_string()))?,
        ),
        None => None,
    };
    let now = now_ms();
    let minted = account.as_ref().map(|_| new_token());
    let mint = minted.as_ref().map(|token| WizardToken {
        token_hash: hash_secret(token),
        expires_at: crate::tokens::expiry(space, now),
    });
    let used = state
        .store
        .use_wizard(hash, now, mint.as_ref())
        .await?
        .ok_or_else(gone)?;
    let opened = audit::event(&Actor::Anonymous, act::WIZARD_OPENED).from_request(request);
    match &account {
        Some(a) => {
            state.audit.record(opened.about(a)).await;
            state
                .audit
                .record(
                    audit::event(&Actor::Anonymous, act::TOKEN_MINTED)
                        .about(a)
                        .from_request(request)
                        .detail("/wizard/{token}"),
                )
                .await;
            tracing::info!(
                wizard_id = used.id,
                account_id = a.id,
                token = %minted.as_deref().map(fingerprint).unwrap_or_default(),
                "wizard link opened: provisioning token minted"
            );
        }
        None => {
            state
                .audit
                .record(
                    opened
                        .target(space.domain.clone())
                        .space(space.domain.clone()),
                )
                .await;
            tracing::info!(wizard_id = used.id, "wizard link opened");
        }
    }
    let fetch = minted
        .as_deref()
        .map(|token| provisioning_url(state, space, request, token, false));
    let action = used
        .linphone_action
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or(DEFAULT_ACTION);
    let sips = used
        .linphone_use_sips
        .unwrap_or_else(|| request.has_query("linphone-use-sips"));
    let uri = crate::wizard::sip_linphone_uri(
        used.sip.as_deref().unwrap_or(""),
        action,
        fetch.as_deref(),
        sips,
    );
    Ok((
        sip_page(&space.name, &uri, action, request),
        account.map(|a| a.id),
    ))
}

/// `GET /wizard[?sip=…][&linphone-action=…][&linphone-use-sips]` — the `sip-linphone:` page
/// from the query: `sip` when it is a SIP/SIPS URI, the action when it is one of FlexiAPI's,
/// SIPS when the parameter is present (any value); anything else is left out, as FlexiAPI.
async fn wizard_from_query(state: AppState, request: RequestInfo) -> Response {
    let mut served_by = None;
    let result = async {
        let space = space::resolve(&state, &request.host).await?;
        served_by = Some(space.space.domain.clone());
        let sip = request
            .query
            .get("sip")
            .map(String::as_str)
            .filter(|s| is_sip_uri(s))
            .unwrap_or("");
        let action = request
            .query
            .get("linphone-action")
            .map(String::as_str)
            .filter(|a| is_action(a))
            .unwrap_or(DEFAULT_ACTION);
        let uri = crate::wizard::sip_linphone_uri(
            sip,
            action,
            None,
            request.has_query("linphone-use-sips"),
        );
        Ok::<_, AppError>(sip_page(&space.space.name, &uri, action, &request))
    }
    .await;
    let mut response = match result {
        Ok(html) => reply::with_body(200, HTML, html),
        Err(err) if wants_html(&request) => error_response(&err),
        Err(err) => reply::error(&err),
    };
    edge::note(&mut response, served_by.as_deref(), None);
    response
}

/// The `sip-linphone:` page (FlexiAPI's `wizard/show`): the heading of the action, the
/// "Open the app" link (clicked by a script as the page loads), and the download for the
/// visitor's platform, with a link to the others on a desktop.
pub fn sip_page(space_name: &str, uri: &str, action: &str, request: &RequestInfo) -> String {
    let title = heading(action);
    let name = html_escape(space_name);
    let link = html_escape(uri);
    let platform = Platform::from_user_agent(request.user_agent());
    let (download, label) = platform.download();
    let others = if platform.offers_other_platforms() {
        format!(
            "\n<p><a id=\"other_platforms\" target=\"_blank\" rel=\"noopener noreferrer\" href=\"{ALL_DOWNLOADS}\">Download for another platform</a></p>"
        )
    } else {
        String::new()
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><meta name="referrer" content="no-referrer"><title>{title} — {name}</title>
<style>body{{font-family:sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;text-align:center}}
a.btn{{display:inline-block;margin:.5rem;padding:.8rem 1.4rem;border-radius:.4rem;background:#ff5e00;color:#fff;text-decoration:none}}
a.secondary{{background:#555}}</style></head>
<body>
<div id="wizard">
<h3 class="center">{title}</h3>
<p><a id="open_app" class="btn" href="{link}">Open the app</a></p>
<script>document.querySelector('#open_app').click()</script>
<p><a id="download" class="btn secondary" target="_blank" rel="noopener noreferrer" href="{download}">{label}</a></p>{others}
</div>
</body>
</html>
"#
    )
}

/// Content type of the wizard's pages.
const HTML: &str = "text/html; charset=utf-8";

/// Whether the client asked for HTML: a browser's `Accept` names `text/html`; API clients,
/// curl and scripts send `*/*`, `application/json` or nothing and keep getting JSON.
fn wants_html(request: &RequestInfo) -> bool {
    request.header("accept").is_some_and(|accept| {
        accept
            .split(',')
            .any(|item| item.trim().to_ascii_lowercase().starts_with("text/html"))
    })
}

/// A refusal as an HTML page, with the status and headers (`Retry-After`, say) the JSON answer
/// would have had.
fn error_response(err: &AppError) -> Response {
    let json = reply::error(err);
    let status = json.status().as_u16();
    let mut response = reply::with_body(status, HTML, error_page(status, &err.public_message()));
    for (name, value) in json.headers() {
        if !response.headers().contains_key(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// The page a person sees when a link cannot configure the app (self-contained, like
/// [`page`]): what happened, in words, and what to do.
pub fn error_page(status: u16, message: &str) -> String {
    let (title, advice) = match status {
        404 => (
            "This link does not work (any more)",
            "A configuration link works only once, and only the newest one of an account. \
             Ask your administrator or provider for a new link.",
        ),
        410 => (
            "This link has expired",
            "Configuration links are valid for a limited time. Ask your administrator or \
             provider for a new link.",
        ),
        429 => (
            "Too many attempts",
            "Please wait a minute before trying again.",
        ),
        s if s >= 500 => (
            "Something went wrong on our side",
            "Please try again in a moment; if it keeps failing, tell your administrator.",
        ),
        _ => (
            "This link cannot be used",
            "Ask your administrator or provider for a new link.",
        ),
    };
    let message = html_escape(message);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;text-align:center}}
a.btn{{display:inline-block;margin:.5rem;padding:.8rem 1.4rem;border-radius:.4rem;background:#555;color:#fff;text-decoration:none}}</style></head>
<body>
<h3 id="title">{title}</h3>
<p id="advice">{advice}</p>
<p><small id="detail">{status}: {message}</small></p>
<p><a id="download" class="btn" href="{DOWNLOAD_URL}">Get the Linphone app</a></p>
</body>
</html>
"#
    )
}

/// The HTML page (self-contained: no script, no external resource).
pub fn page(space_name: &str, url: &str, png: &[u8]) -> String {
    let link = html_escape(&format!("linphone-config:{url}"));
    let url_text = html_escape(url);
    let name = html_escape(space_name);
    let qr = base64::engine::general_purpose::STANDARD.encode(png);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>Configure Linphone — {name}</title>
<style>body{{font-family:sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;text-align:center}}
a.btn{{display:inline-block;margin:.5rem;padding:.8rem 1.4rem;border-radius:.4rem;background:#ff5e00;color:#fff;text-decoration:none}}
a.secondary{{background:#555}} img{{max-width:100%}} code{{word-break:break-all}}</style></head>
<body>
<h3>Configure your Linphone application</h3>
<p>Your {name} account is ready.</p>
<p><a id="open_app" class="btn" href="{link}">Open the app</a></p>
<p>On a phone? Scan this code with the Linphone app:</p>
<p><img id="qrcode" alt="QR code of the provisioning link" src="data:image/png;base64,{qr}"></p>
<p><a id="download" class="btn secondary" href="{DOWNLOAD_URL}">Download the app</a></p>
<p><small>Provisioning link: <code>{url_text}</code>. It works once.</small></p>
</body>
</html>
"#
    )
}

/// Escapes text for HTML content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

//! The wizard page: what a person sees when they open a provisioning link on a desktop or
//! phone browser — a `linphone-config:` link that hands the URL to the app, the QR code for a
//! phone, and a download link.

use crate::error::AppError;
use crate::http::provisioning::{png_blocking, provisioning_url};
use crate::http::{edge, reply, request_info, with_state};
use crate::model::now_ms;
use crate::pipeline::identity::check_provisioning_token;
use crate::pipeline::reset::RESET_PASSWORD;
use crate::pipeline::space;
use crate::request::{RequestInfo, RouteKind};
use crate::state::AppState;
use base64::Engine as _;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// Where people get the app.
pub const DOWNLOAD_URL: &str = "https://www.linphone.org/en/download/";

/// `GET /wizard/{token}` and `HEAD` (link checkers and chat apps that preview a link ask for
/// the head first).
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    warp::path!("wizard" / String)
        .and(warp::get().or(warp::head()).unify())
        .and(with_state(state))
        .and(request_info(RouteKind::Token, "/wizard/{token}"))
        .then(wizard)
        .boxed()
}

/// `GET /wizard/{token}[?reset_password]` — checks the token like the QR route (404 / 410),
/// consumes nothing, and renders the page. A refusal is an HTML page for a browser (its
/// `Accept` names `text/html`) and JSON for anything else, with the same status.
async fn wizard(token: String, state: AppState, request: RequestInfo) -> Response {
    let mut served_by = None;
    let result = async {
        let space = space::resolve(&state, &request.host).await?;
        served_by = Some(space.space.domain.clone());
        check_provisioning_token(&state, &token, now_ms()).await?;
        let url = provisioning_url(
            &state,
            &space.space,
            &request,
            &token,
            request.has_query(RESET_PASSWORD),
        );
        let png = png_blocking(url.clone()).await?;
        Ok::<_, AppError>(page(&space.space.name, &url, &png))
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

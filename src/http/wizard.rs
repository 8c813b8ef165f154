//! The wizard page: what a person sees when they open a provisioning link on a desktop or
//! phone browser — a `linphone-config:` link that hands the URL to the app, the QR code for a
//! phone, and a download link.

use crate::error::AppError;
use crate::http::provisioning::{png_blocking, provisioning_url};
use crate::http::{reply, request_info, with_state};
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

/// `GET /wizard/{token}`.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    warp::path!("wizard" / String)
        .and(warp::get())
        .and(with_state(state))
        .and(request_info(RouteKind::Token, "/wizard/{token}"))
        .then(wizard)
        .boxed()
}

/// `GET /wizard/{token}[?reset_password]` — checks the token like the QR route (404 / 410),
/// consumes nothing, and renders the page.
async fn wizard(token: String, state: AppState, request: RequestInfo) -> Response {
    let result = async {
        let space = space::resolve(&state, &request.host).await?;
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
    match result {
        Ok(html) => reply::with_body(200, "text/html; charset=utf-8", html),
        Err(err) => reply::error(&err),
    }
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

//! Provisioning routes (FlexiAPI-compatible): the lpconfig document and the QR code.

use crate::audit::{self, Actor};
use crate::auth;
use crate::error::AppError;
use crate::http::{edge, reply};
use crate::http::{request_info, with_state};
use crate::model::now_ms;
use crate::pipeline::identity::check_provisioning_token;
use crate::pipeline::reset::RESET_PASSWORD;
use crate::pipeline::{self, Credential, space};
use crate::request::{RequestInfo, RouteKind};
use crate::state::AppState;
use crate::store::AuditEvent;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::reply::Response;

/// Content type of every document (no charset, as FlexiAPI).
pub const XML_CONTENT_TYPE: &str = "application/xml";

/// The provisioning routes, most specific first (`me`, `auth_token/…`, `qrcode/…`, `{token}`,
/// then the bare path), as FlexiAPI matches them.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let me = warp::path!("provisioning" / "me")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(request_info(RouteKind::Me, "/provisioning/me"))
        .then(provisioning_me);
    let auth_token = warp::path!("provisioning" / "auth_token" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(request_info(
            RouteKind::AuthToken,
            "/provisioning/auth_token/{token}",
        ))
        .then(provisioning_auth_token);
    let qrcode = warp::path!("provisioning" / "qrcode" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(request_info(
            RouteKind::Token,
            "/provisioning/qrcode/{token}",
        ))
        .then(provisioning_qrcode);
    let token = warp::path!("provisioning" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(request_info(RouteKind::Token, "/provisioning/{token}"))
        .then(provisioning_token);
    let anonymous = warp::path!("provisioning")
        .and(warp::get())
        .and(with_state(state))
        .and(request_info(RouteKind::Anonymous, "/provisioning"))
        .then(provisioning_anonymous);
    me.or(auth_token)
        .unify()
        .or(qrcode)
        .unify()
        .or(token)
        .unify()
        .or(anonymous)
        .unify()
        .boxed()
}

/// `GET /provisioning` — the space-level document, no account.
async fn provisioning_anonymous(state: AppState, request: RequestInfo) -> Response {
    document(&state, request, Presented::Nothing, "/provisioning").await
}

/// `GET /provisioning/{token}[?reset_password]` — consumes the token, activates the account.
async fn provisioning_token(token: String, state: AppState, request: RequestInfo) -> Response {
    document(
        &state,
        request,
        Presented::Token(token),
        "/provisioning/{token}",
    )
    .await
}

/// `GET /provisioning/auth_token/{token}[?reset_password]` — redeems an attached auth token.
async fn provisioning_auth_token(token: String, state: AppState, request: RequestInfo) -> Response {
    document(
        &state,
        request,
        Presented::AuthToken(token),
        "/provisioning/auth_token/{token}",
    )
    .await
}

/// `GET /provisioning/me[?reset_password]` — the document of the authenticated account
/// (authentication runs before the header guard, as in FlexiAPI: no credentials → 401).
async fn provisioning_me(state: AppState, request: RequestInfo) -> Response {
    document(
        &state,
        request,
        Presented::Authentication,
        "/provisioning/me",
    )
    .await
}

/// What a document route's URL carries.
enum Presented {
    /// `/provisioning`.
    Nothing,
    /// `/provisioning/{token}`.
    Token(String),
    /// `/provisioning/auth_token/{token}`.
    AuthToken(String),
    /// `/provisioning/me`: the credentials are in the headers, checked in the request's space.
    Authentication,
}

/// Resolves the space, obtains the credential, runs the pipeline and renders the outcome; a
/// delivered document is recorded in the audit trail under its route `template`.
async fn document(
    state: &AppState,
    request: RequestInfo,
    presented: Presented,
    template: &'static str,
) -> Response {
    let mut served_by = None;
    let mut actor = Actor::Anonymous;
    // What the audit trail keeps of the request (the pipeline takes the request itself); the
    // anonymous document names no account and is never recorded, so it builds nothing here.
    let seen = (!matches!(presented, Presented::Nothing)).then(|| {
        audit::event(&Actor::Anonymous, audit::action::DOCUMENT_DELIVERED)
            .from_request(&request)
            .detail(template)
    });
    let result = async {
        let space = space::resolve(state, &request.host).await?;
        served_by = Some(space.space.domain.clone());
        let credential = match presented {
            Presented::Nothing => Credential::Anonymous,
            Presented::Token(token) => Credential::ProvisioningToken(token),
            Presented::AuthToken(token) => Credential::AuthToken(token),
            Presented::Authentication => {
                let bundle = auth::authenticate_provisioning(state, &space.space, &request).await?;
                actor = Actor::account(&bundle.account);
                Credential::Authenticated(Box::new(bundle))
            }
        };
        pipeline::provision(state, &space, request, &credential).await
    }
    .await;
    let (mut response, account) = match result {
        Ok(doc) => {
            // An anonymous document names no account, and recording it would let any client
            // add rows without authenticating: only an account's document is a delivery.
            if let Some(seen) = seen.filter(|_| doc.account_id.is_some()) {
                record_delivery(state, &doc, &actor, seen, served_by.as_deref()).await;
            }
            (
                reply::with_body(200, XML_CONTENT_TYPE, doc.xml),
                doc.account_id,
            )
        }
        Err(err) => (reply::error(&err), None),
    };
    edge::note(&mut response, served_by.as_deref(), account);
    response
}

/// Queues the audit events of a delivered document (`document.delivered`, with the route
/// template as detail, and `password.reset` when it carried a new password), in the account's
/// space. Queued, not written: the request
/// itself performs no write for them.
async fn record_delivery(
    state: &AppState,
    doc: &pipeline::Document,
    actor: &Actor,
    seen: AuditEvent,
    served_by: Option<&str>,
) {
    let mut delivered = seen.by(actor);
    delivered.target = doc.account_id.map(|id| id.to_string());
    delivered.account_id = doc.account_id;
    delivered.space = doc
        .account_domain
        .clone()
        .or_else(|| served_by.map(str::to_string));
    if doc.password_reset {
        let mut reset = delivered.clone();
        reset.action = audit::action::PASSWORD_RESET.to_string();
        state.audit.record(delivered).await;
        state.audit.record(reset).await;
    } else {
        state.audit.record(delivered).await;
    }
}

/// `GET /provisioning/qrcode/{token}[?reset_password]` — a PNG of the provisioning URL, with
/// that URL in `X-Qrcode-URL`. Consumes nothing; refuses used, superseded (404) and expired
/// (410) tokens, where FlexiAPI would draw a code that cannot work.
async fn provisioning_qrcode(token: String, state: AppState, request: RequestInfo) -> Response {
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
        Ok::<_, AppError>((url, png))
    }
    .await;
    let mut response = match result {
        Ok((url, png)) => {
            let mut resp = reply::with_body(200, "image/png", png);
            if let Ok(v) = HeaderValue::from_str(&url) {
                resp.headers_mut().insert("x-qrcode-url", v);
            }
            resp
        }
        Err(err) => reply::error(&err),
    };
    edge::note(&mut response, served_by.as_deref(), None);
    response
}

/// Renders a QR PNG on the blocking pool (~2–3 ms of CPU each).
pub async fn png_blocking(url: String) -> Result<Vec<u8>, AppError> {
    tokio::task::spawn_blocking(move || crate::qr::png(&url))
        .await
        .map_err(|e| AppError::Internal(format!("QR task failed: {e}")))?
        .map_err(|e| AppError::Internal(e.to_string()))
}

pub use crate::links::{base_url, provisioning_url};

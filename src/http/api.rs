//! The account API's HTTP edge (FlexiAPI's `/api` paths, methods and statuses): warp filters
//! that extract a [`RequestInfo`] and, for bodies, a size-capped JSON object, call one handler of
//! [`crate::api`], and render its [`ApiReply`] or error. Handlers attach with `.then(...)` and
//! never reject once a route matched, so warp cannot backtrack into another route.
//!
//! [`ROUTES`] lists every route the server serves (provisioning and operations included); it is
//! the contract `docs/openapi.yaml` is tested against.

use crate::api::{self, ApiReply, ApiResult, Body};
use crate::http::{reply, request_info, with_state};
use crate::request::{RequestInfo, RouteKind};
use crate::state::AppState;
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use std::pin::Pin;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Buf, Filter};

/// Every `(method, path template)` the server answers, in the OpenAPI document's spelling.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/provisioning"),
    ("GET", "/provisioning/me"),
    ("GET", "/provisioning/{provisioning_token}"),
    ("GET", "/provisioning/auth_token/{auth_token}"),
    ("GET", "/provisioning/qrcode/{provisioning_token}"),
    ("GET", "/wizard"),
    ("HEAD", "/wizard"),
    ("GET", "/wizard/{token}"),
    ("HEAD", "/wizard/{token}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/accounts"),
    ("POST", "/api/accounts"),
    ("GET", "/api/accounts/{id}"),
    ("PUT", "/api/accounts/{id}"),
    ("DELETE", "/api/accounts/{id}"),
    ("GET", "/api/accounts/{sip}/search"),
    ("POST", "/api/accounts/{id}/activate"),
    ("POST", "/api/accounts/{id}/deactivate"),
    ("POST", "/api/accounts/{id}/block"),
    ("POST", "/api/accounts/{id}/unblock"),
    ("GET", "/api/accounts/{id}/provision"),
    ("POST", "/api/accounts/{id}/send_provisioning_email"),
    ("GET", "/api/accounts/me"),
    ("DELETE", "/api/accounts/me"),
    ("GET", "/api/accounts/me/provision"),
    ("POST", "/api/accounts/me/password"),
    ("GET", "/api/accounts/me/api_key"),
    ("GET", "/api/accounts/me/api_key/{auth_token}"),
    ("POST", "/api/accounts/auth_token"),
    ("GET", "/api/accounts/auth_token/{auth_token}/attach"),
    ("GET", "/api/spaces"),
    ("POST", "/api/spaces"),
    ("GET", "/api/spaces/{domain}"),
    ("PUT", "/api/spaces/{domain}"),
    ("DELETE", "/api/spaces/{domain}"),
    ("GET", "/api/hooks/status"),
    ("GET", "/api/hooks"),
    ("GET", "/api/hooks/{name}"),
    ("PUT", "/api/hooks/{name}"),
    ("DELETE", "/api/hooks/{name}"),
    ("GET", "/api/hooks/{name}/versions"),
    ("GET", "/api/hooks/{name}/versions/{version}"),
    ("POST", "/api/hooks/{name}/rollback/{version}"),
    ("GET", "/api/audit"),
    ("POST", "/api/wizard"),
];

/// The methods [`ROUTES`] serves on `path` (a trailing slash tolerated, `{id}` numeric as the
/// routes parse it), for the `Allow` header of a 405.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut methods: Vec<&'static str> = Vec::new();
    for (method, template) in ROUTES {
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        let matches = parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(part, seg)| match *part {
                "{id}" => seg.parse::<i64>().is_ok(),
                p if p.starts_with('{') => !seg.is_empty(),
                p => p == *seg,
            });
        if matches && !methods.contains(method) {
            methods.push(method);
        }
    }
    let order = |m: &&str| {
        ["GET", "HEAD", "POST", "PUT", "DELETE"]
            .iter()
            .position(|o| o == m)
    };
    methods.sort_by_key(order);
    methods
}

/// Largest JSON body the API reads (FlexiAPI's bodies are a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body as a stream of owned chunks (read by [`read_body`] under the size cap, so a
/// chunked body cannot exceed it either).
type BodyStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, warp::Error>> + Send>>;

/// Extracts the body stream without reading it.
fn body() -> impl Filter<Extract = (BodyStream,), Error = warp::Rejection> + Clone {
    warp::body::stream().map(boxed_body)
}

/// Boxes warp's body stream as owned chunks.
fn boxed_body<S, B>(stream: S) -> BodyStream
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    Box::pin(stream.map_ok(|mut buf| {
        let mut out = Vec::with_capacity(buf.remaining());
        while buf.has_remaining() {
            let chunk = buf.chunk();
            out.extend_from_slice(chunk);
            let n = chunk.len();
            buf.advance(n);
        }
        out
    }))
}

/// Reads and parses a body: JSON (an empty body is `{}`), or an HTML form. Too large: 413;
/// unparsable: 400 `{"message": "Invalid JSON: …"}` (FlexiAPI's wording).
async fn read_body(mut stream: BodyStream, request: &RequestInfo) -> Result<Value, Response> {
    let refuse = |status: u16, message: String| reply::json(status, &json!({ "message": message }));
    let too_large = || {
        refuse(
            413,
            format!("Payload Too Large: the body may not exceed {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = request
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        drain(&mut stream, 0).await;
        return Err(too_large());
    }
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| refuse(400, format!("Could not read the body: {e}")))?;
        if data.len() + chunk.len() > MAX_BODY_BYTES {
            drain(&mut stream, data.len() + chunk.len()).await;
            return Err(too_large());
        }
        data.extend_from_slice(&chunk);
    }
    let form = request.header("content-type").is_some_and(|ct| {
        ct.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if form {
        let map = form_urlencoded::parse(&data)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        return Ok(Value::Object(map));
    }
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&data).map_err(|e| refuse(400, format!("Invalid JSON: {e}")))
}

/// Most of a refused body read (and dropped) before the 413 is sent, so that a client still
/// sending it receives the answer instead of a connection reset; past it the connection is
/// simply closed.
const DRAIN_BYTES: usize = 1024 * 1024;

/// Longest wait for the rest of a refused body: a client that declared a large body and
/// sends nothing gets its 413 after this long instead of holding the handler.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops the rest of a refused body, up to [`DRAIN_BYTES`] in all and for at most
/// [`DRAIN_WAIT`].
async fn drain(stream: &mut BodyStream, mut seen: usize) {
    let _ = tokio::time::timeout(DRAIN_WAIT, async {
        while seen <= DRAIN_BYTES {
            match stream.next().await {
                Some(Ok(chunk)) => seen += chunk.len(),
                _ => break,
            }
        }
    })
    .await;
}

/// Renders a handler's outcome and counts it by route template and status.
fn render(route: &'static str, result: ApiResult) -> Response {
    let response = match result {
        Ok(ApiReply { status, body }) => match body {
            Body::Json(value) => reply::json(status, &value),
            Body::Text(text) => reply::with_body(status, "text/plain; charset=utf-8", text),
            Body::Empty => reply::with_body(status, "text/plain; charset=utf-8", Vec::new()),
        },
        Err(err) => reply::error(&err),
    };
    metrics::counter!(
        "provisio_api_responses_total",
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

/// The request view every API handler gets (the route kind only matters to provisioning),
/// recording `template` as the matched route.
fn info(
    template: &'static str,
) -> impl Filter<Extract = (RequestInfo,), Error = std::convert::Infallible> + Clone {
    request_info(RouteKind::Me, template)
}

/// Every `/api` route.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    admin_accounts(state.clone())
        .or(me(state.clone()))
        .unify()
        .or(tokens(state.clone()))
        .unify()
        .or(spaces(state.clone()))
        .unify()
        .or(hooks_status(state.clone()))
        .unify()
        .or(audit(state.clone()))
        .unify()
        .or(wizards(state.clone()))
        .unify()
        .or(hooks(state))
        .unify()
        .boxed()
}

/// `POST /api/wizard` and `POST /api/accounts/{id}/send_provisioning_email` (admin).
fn wizards(state: AppState) -> BoxedFilter<(Response,)> {
    let create = warp::path!("api" / "wizard")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(info("/api/wizard"))
        .and(body())
        .then(
            |state: AppState, req: RequestInfo, stream: BodyStream| async move {
                match read_body(stream, &req).await {
                    Ok(body) => render(
                        "/api/wizard",
                        api::wizards::create(&state, &req, body).await,
                    ),
                    Err(resp) => resp,
                }
            },
        );
    let email = warp::path!("api" / "accounts" / i64 / "send_provisioning_email")
        .and(warp::post())
        .and(with_state(state))
        .and(info("/api/accounts/{id}/send_provisioning_email"))
        .then(|id: i64, state: AppState, req: RequestInfo| async move {
            render(
                "/api/accounts/{id}/send_provisioning_email",
                api::wizards::send_provisioning_email(&state, &req, id).await,
            )
        });
    create.or(email).unify().boxed()
}

/// `GET /api/audit` (admin).
fn audit(state: AppState) -> BoxedFilter<(Response,)> {
    warp::path!("api" / "audit")
        .and(warp::get())
        .and(with_state(state))
        .and(info("/api/audit"))
        .then(|state: AppState, req: RequestInfo| async move {
            render("/api/audit", api::audit::list(&state, &req).await)
        })
        .boxed()
}

/// `GET /api/hooks/status` (super admin).
fn hooks_status(state: AppState) -> BoxedFilter<(Response,)> {
    warp::path!("api" / "hooks" / "status")
        .and(warp::get())
        .and(with_state(state))
        .and(info("/api/hooks/status"))
        .then(|state: AppState, req: RequestInfo| async move {
            render("/api/hooks/status", api::hooks::status(&state, &req).await)
        })
        .boxed()
}

/// Hook scripts stored in the database (admins; `GET /api/hooks/status` is matched first).
fn hooks(state: AppState) -> BoxedFilter<(Response,)> {
    // GET /api/hooks
    let list = warp::path!("api" / "hooks")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/hooks"))
        .then(|state: AppState, req: RequestInfo| async move {
            render("/api/hooks", api::hooks::list(&state, &req).await)
        });
    // GET /api/hooks/{name}
    let show = warp::path!("api" / "hooks" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/hooks/{name}"))
        .then(
            |name: String, state: AppState, req: RequestInfo| async move {
                render(
                    "/api/hooks/{name}",
                    api::hooks::show(&state, &req, &name).await,
                )
            },
        );
    // PUT /api/hooks/{name}
    let save = warp::path!("api" / "hooks" / String)
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(info("/api/hooks/{name}"))
        .and(body())
        .then(
            |name: String, state: AppState, req: RequestInfo, stream: BodyStream| async move {
                match read_body(stream, &req).await {
                    Ok(body) => render(
                        "/api/hooks/{name}",
                        api::hooks::save(&state, &req, &name, body).await,
                    ),
                    Err(resp) => resp,
                }
            },
        );
    // DELETE /api/hooks/{name}
    let delete = warp::path!("api" / "hooks" / String)
        .and(warp::delete())
        .and(with_state(state.clone()))
        .and(info("/api/hooks/{name}"))
        .then(
            |name: String, state: AppState, req: RequestInfo| async move {
                render(
                    "/api/hooks/{name}",
                    api::hooks::delete(&state, &req, &name).await,
                )
            },
        );
    // GET /api/hooks/{name}/versions
    let versions = warp::path!("api" / "hooks" / String / "versions")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/hooks/{name}/versions"))
        .then(
            |name: String, state: AppState, req: RequestInfo| async move {
                render(
                    "/api/hooks/{name}/versions",
                    api::hooks::versions(&state, &req, &name).await,
                )
            },
        );
    // GET /api/hooks/{name}/versions/{version}
    let version = warp::path!("api" / "hooks" / String / "versions" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/hooks/{name}/versions/{version}"))
        .then(
            |name: String, version: String, state: AppState, req: RequestInfo| async move {
                render(
                    "/api/hooks/{name}/versions/{version}",
                    api::hooks::version(&state, &req, &name, &version).await,
                )
            },
        );
    // POST /api/hooks/{name}/rollback/{version}
    let rollback = warp::path!("api" / "hooks" / String / "rollback" / String)
        .and(warp::post())
        .and(with_state(state))
        .and(info("/api/hooks/{name}/rollback/{version}"))
        .and(body())
        .then(
            |name: String,
             version: String,
             state: AppState,
             req: RequestInfo,
             stream: BodyStream| async move {
                match read_body(stream, &req).await {
                    Ok(body) => render(
                        "/api/hooks/{name}/rollback/{version}",
                        api::hooks::rollback(&state, &req, &name, &version, body).await,
                    ),
                    Err(resp) => resp,
                }
            },
        );
    list.or(show)
        .unify()
        .or(save)
        .unify()
        .or(delete)
        .unify()
        .or(versions)
        .unify()
        .or(version)
        .unify()
        .or(rollback)
        .unify()
        .boxed()
}

/// The admin's account routes.
fn admin_accounts(state: AppState) -> BoxedFilter<(Response,)> {
    // GET /api/accounts
    let list = warp::path!("api" / "accounts")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/accounts"))
        .then(|state: AppState, req: RequestInfo| async move {
            render("/api/accounts", api::accounts::list(&state, &req).await)
        });
    // POST /api/accounts
    let create = warp::path!("api" / "accounts")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(info("/api/accounts"))
        .and(body())
        .then(
            |state: AppState, req: RequestInfo, stream: BodyStream| async move {
                match read_body(stream, &req).await {
                    Ok(body) => render(
                        "/api/accounts",
                        api::accounts::create(&state, &req, body).await,
                    ),
                    Err(resp) => resp,
                }
            },
        );
    // GET /api/accounts/{id}
    let show = warp::path!("api" / "accounts" / i64)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/{id}"))
        .then(|id: i64, state: AppState, req: RequestInfo| async move {
            render(
                "/api/accounts/{id}",
                api::accounts::show(&state, &req, id).await,
            )
        });
    // PUT /api/accounts/{id}
    let update = warp::path!("api" / "accounts" / i64)
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/{id}"))
        .and(body())
        .then(
            |id: i64, state: AppState, req: RequestInfo, stream: BodyStream| async move {
                match read_body(stream, &req).await {
                    Ok(body) => render(
                        "/api/accounts/{id}",
                        api::accounts::update(&state, &req, id, body).await,
                    ),
                    Err(resp) => resp,
                }
            },
        );
    // GET /api/accounts/{sip}/search
    let search = warp::path!("api" / "accounts" / String / "search")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/{sip}/search"))
        .then(
            |sip: String, state: AppState, req: RequestInfo| async move {
                render(
                    "/api/accounts/{sip}/search",
                    api::accounts::search(&state, &req, &sip).await,
                )
            },
        );
    // DELETE /api/accounts/{id}
    let delete = warp::path!("api" / "accounts" / i64)
        .and(warp::delete())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/{id}"))
        .then(|id: i64, state: AppState, req: RequestInfo| async move {
            render(
                "/api/accounts/{id}",
                api::accounts::delete(&state, &req, id).await,
            )
        });
    // GET /api/accounts/{id}/provision
    let provision = warp::path!("api" / "accounts" / i64 / "provision")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/{id}/provision"))
        .then(|id: i64, state: AppState, req: RequestInfo| async move {
            render(
                "/api/accounts/{id}/provision",
                api::accounts::provision(&state, &req, id).await,
            )
        });
    list.or(create)
        .unify()
        .or(show)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .or(search)
        .unify()
        .or(provision)
        .unify()
        .or(account_action(
            state.clone(),
            api::accounts::Action::Activate,
        ))
        .unify()
        .or(account_action(
            state.clone(),
            api::accounts::Action::Deactivate,
        ))
        .unify()
        .or(account_action(state.clone(), api::accounts::Action::Block))
        .unify()
        .or(account_action(state, api::accounts::Action::Unblock))
        .unify()
        .boxed()
}

/// `POST /api/accounts/{id}/activate|deactivate|block|unblock`.
fn account_action(state: AppState, action: api::accounts::Action) -> BoxedFilter<(Response,)> {
    let template: &'static str = match action {
        api::accounts::Action::Activate => "/api/accounts/{id}/activate",
        api::accounts::Action::Deactivate => "/api/accounts/{id}/deactivate",
        api::accounts::Action::Block => "/api/accounts/{id}/block",
        api::accounts::Action::Unblock => "/api/accounts/{id}/unblock",
    };
    warp::path("api")
        .and(warp::path("accounts"))
        .and(warp::path::param::<i64>())
        .and(warp::path(action.as_str()))
        .and(warp::path::end())
        .and(warp::post())
        .and(with_state(state))
        .and(info(template))
        .then(
            move |id: i64, state: AppState, req: RequestInfo| async move {
                render(
                    template,
                    api::accounts::action(&state, &req, id, action).await,
                )
            },
        )
        .boxed()
}

/// The caller's own account routes.
fn me(state: AppState) -> BoxedFilter<(Response,)> {
    // GET /api/accounts/me
    let show = warp::path!("api" / "accounts" / "me")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/me"))
        .then(|state: AppState, req: RequestInfo| async move {
            render("/api/accounts/me", api::accounts::me(&state, &req).await)
        });
    // DELETE /api/accounts/me
    let delete = warp::path!("api" / "accounts" / "me")
        .and(warp::delete())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/me"))
        .then(|state: AppState, req: RequestInfo| async move {
            render(
                "/api/accounts/me",
                api::accounts::me_delete(&state, &req).await,
            )
        });
    // GET /api/accounts/me/provision
    let provision = warp::path!("api" / "accounts" / "me" / "provision")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/me/provision"))
        .then(|state: AppState, req: RequestInfo| async move {
            render(
                "/api/accounts/me/provision",
                api::accounts::me_provision(&state, &req).await,
            )
        });
    // POST /api/accounts/me/password
    let password = warp::path!("api" / "accounts" / "me" / "password")
        .and(warp::post())
        .and(with_state(state))
        .and(info("/api/accounts/me/password"))
        .and(body())
        .then(
            |state: AppState, req: RequestInfo, stream: BodyStream| async move {
                match read_body(stream, &req).await {
                    Ok(body) => render(
                        "/api/accounts/me/password",
                        api::accounts::me_password(&state, &req, body).await,
                    ),
                    Err(resp) => resp,
                }
            },
        );
    show.or(delete)
        .unify()
        .or(provision)
        .unify()
        .or(password)
        .unify()
        .boxed()
}

/// Auth tokens and user API keys.
fn tokens(state: AppState) -> BoxedFilter<(Response,)> {
    // POST /api/accounts/auth_token
    let create = warp::path!("api" / "accounts" / "auth_token")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/auth_token"))
        .then(|state: AppState, req: RequestInfo| async move {
            render(
                "/api/accounts/auth_token",
                api::tokens::create_auth_token(&state, &req).await,
            )
        });
    // GET /api/accounts/auth_token/{auth_token}/attach
    let attach = warp::path!("api" / "accounts" / "auth_token" / String / "attach")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/auth_token/{auth_token}/attach"))
        .then(
            |token: String, state: AppState, req: RequestInfo| async move {
                render(
                    "/api/accounts/auth_token/{auth_token}/attach",
                    api::tokens::attach_auth_token(&state, &req, &token).await,
                )
            },
        );
    // GET /api/accounts/me/api_key
    let refresh = warp::path!("api" / "accounts" / "me" / "api_key")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/accounts/me/api_key"))
        .then(|state: AppState, req: RequestInfo| async move {
            render(
                "/api/accounts/me/api_key",
                api::tokens::me_api_key(&state, &req).await,
            )
        });
    // GET /api/accounts/me/api_key/{auth_token}
    let redeem = warp::path!("api" / "accounts" / "me" / "api_key" / String)
        .and(warp::get())
        .and(with_state(state))
        .and(info("/api/accounts/me/api_key/{auth_token}"))
        .then(
            |token: String, state: AppState, req: RequestInfo| async move {
                render(
                    "/api/accounts/me/api_key/{auth_token}",
                    api::tokens::api_key_from_auth_token(&state, &req, &token).await,
                )
            },
        );
    create
        .or(attach)
        .unify()
        .or(refresh)
        .unify()
        .or(redeem)
        .unify()
        .boxed()
}

/// Spaces (super admin).
fn spaces(state: AppState) -> BoxedFilter<(Response,)> {
    // GET /api/spaces
    let list = warp::path!("api" / "spaces")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/spaces"))
        .then(|state: AppState, req: RequestInfo| async move {
            render("/api/spaces", api::spaces::list(&state, &req).await)
        });
    // POST /api/spaces
    let create = warp::path!("api" / "spaces")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(info("/api/spaces"))
        .and(body())
        .then(
            |state: AppState, req: RequestInfo, stream: BodyStream| async move {
                match read_body(stream, &req).await {
                    Ok(body) => {
                        render("/api/spaces", api::spaces::create(&state, &req, body).await)
                    }
                    Err(resp) => resp,
                }
            },
        );
    // GET /api/spaces/{domain}
    let show = warp::path!("api" / "spaces" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(info("/api/spaces/{domain}"))
        .then(
            |domain: String, state: AppState, req: RequestInfo| async move {
                render(
                    "/api/spaces/{domain}",
                    api::spaces::show(&state, &req, &domain).await,
                )
            },
        );
    // PUT /api/spaces/{domain}
    let update = warp::path!("api" / "spaces" / String)
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(info("/api/spaces/{domain}"))
        .and(body())
        .then(
            |domain: String, state: AppState, req: RequestInfo, stream: BodyStream| async move {
                match read_body(stream, &req).await {
                    Ok(body) => render(
                        "/api/spaces/{domain}",
                        api::spaces::update(&state, &req, &domain, body).await,
                    ),
                    Err(resp) => resp,
                }
            },
        );
    // DELETE /api/spaces/{domain}
    let delete = warp::path!("api" / "spaces" / String)
        .and(warp::delete())
        .and(with_state(state))
        .and(info("/api/spaces/{domain}"))
        .then(
            |domain: String, state: AppState, req: RequestInfo| async move {
                render(
                    "/api/spaces/{domain}",
                    api::spaces::delete(&state, &req, &domain).await,
                )
            },
        );
    list.or(create)
        .unify()
        .or(show)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::allowed_methods;

    #[test]
    fn allow_lists_the_methods_of_the_path() {
        assert_eq!(allowed_methods("/api/accounts"), ["GET", "POST"]);
        assert_eq!(
            allowed_methods("/api/accounts/12"),
            ["GET", "PUT", "DELETE"]
        );
        assert_eq!(
            allowed_methods("/api/accounts/alice@example.com/search"),
            ["GET"]
        );
        assert_eq!(allowed_methods("/api/accounts/me/"), ["GET", "DELETE"]);
        assert_eq!(
            allowed_methods("/api/spaces/x.example"),
            ["GET", "PUT", "DELETE"]
        );
        assert_eq!(allowed_methods("/provisioning/abc"), ["GET"]);
        assert_eq!(allowed_methods("/api/accounts/12/block"), ["POST"]);
        assert_eq!(allowed_methods("/wizard"), ["GET", "HEAD"]);
        assert_eq!(allowed_methods("/api/wizard"), ["POST"]);
        assert!(allowed_methods("/nowhere").is_empty());
    }
}

//! Stage 6 — hooks: runs the space's Rhai scripts on the assembled document. Reads the
//! request, identity and hook points; writes the document. Scripts are synchronous and
//! CPU-bound, so they run on the blocking pool, never on a tokio worker. Errors: the status a
//! script asked for (`deny`), or 500 when a script fails and the space does not skip it.

use crate::error::AppError;
use crate::hooks::HookContext;
use crate::lpconfig::Config;
use crate::model::Space;
use crate::pipeline::assemble::Assembled;
use crate::pipeline::identity::Identity;
use crate::pipeline::request::RequestInfo;
use crate::state::AppState;

/// Runs the hooks and returns the document they shaped.
pub async fn run(
    state: &AppState,
    space: &Space,
    who: &Identity,
    request: &RequestInfo,
    assembled: Assembled,
) -> Result<Config, AppError> {
    let ctx = HookContext {
        space: space.clone(),
        account_space: who.account_space.clone(),
        request: request.clone(),
        account: who.account.clone(),
        proxy_section: assembled.proxy_section,
        auth_info_sections: assembled.auth_info_sections,
    };
    let hooks = state.hooks.clone();
    let mut config = assembled.config;
    tokio::task::spawn_blocking(move || hooks.run(&ctx, &mut config).map(|()| config))
        .await
        .map_err(|e| AppError::Hook(format!("hook task failed: {e}")))?
}

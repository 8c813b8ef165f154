//! Stages 5–7 — assemble, hooks, finish: the one render path ([`crate::document::render`])
//! that `provisio render` and `provisio hooks test` share, run on the blocking pool because
//! Rhai scripts are synchronous and CPU-bound. This file also plugs the live scripts into that
//! path ([`HookStage`] for [`Hooks`]): the document layer stays below the hooks. Errors: the
//! status a script asked for (`deny`), 500 when a script fails and the space does not skip it,
//! 500 when the document breaks the value rule.

use crate::document::{Assembled, HookStage, RenderInput};
use crate::error::AppError;
use crate::hooks::{HookContext, Hooks};
use crate::lpconfig::Config;
use crate::state::AppState;

impl HookStage for Hooks {
    fn shape(&self, input: RenderInput, assembled: Assembled) -> Result<Config, AppError> {
        let ctx = HookContext {
            space: input.space.space.clone(),
            account_space: input.account_space.map(|s| s.space.clone()),
            request: input.request,
            account: input.account,
            proxy_section: assembled.proxy_section,
            auth_info_sections: assembled.auth_info_sections,
        };
        let mut config = assembled.config;
        self.run(&ctx, &mut config)?;
        Ok(config)
    }
}

/// Renders the document with the live scripts, off the async workers.
pub async fn run(state: &AppState, input: RenderInput) -> Result<String, AppError> {
    let hooks = state.hooks.clone();
    tokio::task::spawn_blocking(move || crate::document::render(input, hooks.as_ref()))
        .await
        .map_err(|e| AppError::Hook(format!("render task failed: {e}")))?
}

//! The provisioning document, built in one path: [`render`] runs [`assemble`] → the hook
//! stage → [`finish`], and the server (`crate::pipeline`), `provisio render` and
//! `provisio hooks test` fixtures all call it, so what a fixture shows is what a client gets.
//!
//! A space's part of every document — base linphonerc, custom entries, vCard list, `ui` — is
//! built once into a [`PreparedSpace`] when the space snapshot is loaded (`crate::spaces`);
//! each request then copies it and adds its account's sections.
//!
//! This module sits below the hooks: the hook stage is a parameter ([`HookStage`]), so
//! `hooks::tools` can render fixtures through it without the hooks and the pipeline importing
//! each other. The live scripts implement it in `pipeline::render`.

pub mod assemble;
pub mod finish;
mod prepared;

pub use assemble::{Assembled, assemble};
pub use finish::finish;
pub use prepared::PreparedSpace;

use crate::error::AppError;
use crate::lpconfig::Config;
use crate::model::{Account, Password};
use crate::request::RequestInfo;
use std::sync::Arc;

/// Everything one document is made of, owned, so a render can move to a blocking thread.
#[derive(Debug, Clone)]
pub struct RenderInput {
    /// The request's space: base rc, custom entries, vCard list, overwrite-all, its scripts.
    pub space: Arc<PreparedSpace>,
    /// The account's own space (realm, `ui` flags), when there is an account; FlexiAPI takes
    /// those from the account's space, not the request's.
    pub account_space: Option<Arc<PreparedSpace>>,
    /// The account provisioned; `None` for the anonymous document.
    pub account: Option<Account>,
    /// Its SIP passwords (HA1 only), in `auth_info_N` order.
    pub passwords: Vec<Password>,
    /// The request, as hooks see it.
    pub request: RequestInfo,
}

/// The hook stage of [`render`]: shapes the assembled document with the request space's
/// scripts (`on_proxy`, `on_auth_info`, `on_config`), or refuses the request.
pub trait HookStage {
    /// Runs the scripts on `assembled`; `input` is what they may read (its passwords are those
    /// of `assembled.auth_info_sections`).
    fn shape(&self, input: RenderInput, assembled: Assembled) -> Result<Config, AppError>;
}

/// A hook stage with no scripts (tests, benchmarks of assembly alone).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl HookStage for NoHooks {
    fn shape(&self, _input: RenderInput, assembled: Assembled) -> Result<Config, AppError> {
        Ok(assembled.config)
    }
}

/// The document a client receives: assembled in FlexiAPI's order, shaped by the hooks,
/// finished (overwrite-all, the value rule, XML). Synchronous and CPU-bound: the server calls
/// it on the blocking pool.
pub fn render(input: RenderInput, hooks: &dyn HookStage) -> Result<String, AppError> {
    let assembled = assemble(
        &input.space,
        input.account_space.as_deref(),
        input.account.as_ref(),
        &input.passwords,
    )?;
    let space = input.space.clone();
    let config = hooks.shape(input, assembled)?;
    finish(config, &space.space)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Space;
    use crate::request::RouteKind;

    /// A hook stage that records what it saw and adds one entry.
    struct Marker;

    impl HookStage for Marker {
        fn shape(&self, input: RenderInput, mut assembled: Assembled) -> Result<Config, AppError> {
            let i = assembled.config.get_or_create("marker");
            let who = input.account.map_or("nobody".to_string(), |a| a.username);
            assembled.config.sections[i].set("who", who, false);
            Ok(assembled.config)
        }
    }

    #[test]
    fn hooks_run_between_assembly_and_finish() {
        let mut space = Space::new("d.example", "h.example");
        space.base_rc = Some("[sip]\nguess_hostname=1\n".into());
        space.overwrite_all = true;
        let input = RenderInput {
            space: Arc::new(PreparedSpace::new(space)),
            account_space: None,
            account: None,
            passwords: Vec::new(),
            request: RequestInfo::synthetic("h.example", "/provisioning", RouteKind::Anonymous),
        };
        let xml = render(input.clone(), &Marker).unwrap();
        // Overwrite-all (finish) applies to what the hook added too.
        assert!(
            xml.contains(r#"<section name="marker"><entry name="who" overwrite="true">nobody</entry></section>"#),
            "{xml}"
        );
        assert!(!render(input, &NoHooks).unwrap().contains("marker"));
    }
}

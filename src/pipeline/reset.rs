//! Stage 4 — password reset: with `?reset_password` (any value, or none) on a route that has an
//! account, a new random password and its HA1 in the account's realm with its space's
//! algorithm. Reads the request and identity; writes nothing (the consume stage stores it in the
//! same transaction that burns the token). The clear password is dropped here: only its HA1
//! ever leaves this function.

use crate::model::{NewPassword, Space};
use crate::pipeline::identity::Identity;
use crate::request::RequestInfo;
use crate::secret::{hash_password, new_password};

/// Query key that asks for a reset (FlexiAPI's spelling).
pub const RESET_PASSWORD: &str = "reset_password";

/// The replacement password, if one was asked for and there is an account.
pub fn prepare(
    request: &RequestInfo,
    who: &Identity,
    request_space: &Space,
) -> Option<NewPassword> {
    let account = who.account.as_ref()?;
    if !request.has_query(RESET_PASSWORD) {
        return None;
    }
    let space = who
        .account_space
        .as_ref()
        .map_or(request_space, |s| &s.space);
    Some(hash_password(
        space.password_algorithm,
        &account.username,
        &space.realm,
        &new_password(),
    ))
}

//! Stage 2 — guard: only a Linphone client may fetch (and burn) a document, so crawlers, link
//! previewers and mail scanners change nothing. Reads the space's header mode and the request
//! headers; writes nothing; fails with 400.

use crate::error::AppError;
use crate::model::{HeaderMode, Space};
use crate::request::RequestInfo;

/// Header every liblinphone ≥ 5.3 sends with its provisioning GET.
pub const PROVISIONING_HEADER: &str = "x-linphone-provisioning";

/// Refuses a request that does not prove it comes from Linphone, per the space's mode.
pub fn check(space: &Space, request: &RequestInfo) -> Result<(), AppError> {
    let has_header = request.header(PROVISIONING_HEADER).is_some();
    let allowed = match space.header_mode {
        HeaderMode::Off => true,
        HeaderMode::Required => has_header,
        HeaderMode::LinphoneUserAgent => has_header || is_linphone_user_agent(request.user_agent()),
    };
    if allowed {
        Ok(())
    } else {
        Err(AppError::BadRequest(
            "x-linphone-provisioning header is missing".to_string(),
        ))
    }
}

/// Whether a User-Agent names a Linphone client (`Linphonec/5.1.65`, `LinphoneAndroid/…`,
/// `Linphone-Desktop/…`, `… LinphoneSDK/5.3.0`).
pub fn is_linphone_user_agent(ua: &str) -> bool {
    ua.to_ascii_lowercase().contains("linphone")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RouteKind;

    fn request(headers: &[(&str, &str)]) -> RequestInfo {
        let mut r = RequestInfo::synthetic("h", "/provisioning/x", RouteKind::Token);
        for (k, v) in headers {
            r.headers.insert(k.to_string(), v.to_string());
        }
        r
    }

    #[test]
    fn modes() {
        let mut space = Space::new("d", "h");
        assert!(check(&space, &request(&[])).is_err());
        assert!(check(&space, &request(&[("x-linphone-provisioning", "")])).is_ok());
        assert!(check(&space, &request(&[("user-agent", "Linphonec/5.1.65")])).is_err());
        space.header_mode = HeaderMode::LinphoneUserAgent;
        assert!(check(&space, &request(&[("user-agent", "Linphonec/5.1.65")])).is_ok());
        assert!(check(&space, &request(&[("user-agent", "curl/8")])).is_err());
        space.header_mode = HeaderMode::Off;
        assert!(check(&space, &request(&[])).is_ok());
    }
}

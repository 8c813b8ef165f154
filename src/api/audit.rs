//! `GET /api/audit`: the audit trail ([`crate::audit`]) for admins. A super admin reads every
//! event; a space admin only its own space's; anyone else gets 403, as every admin route.

use crate::api::access;
use crate::api::validate::Errors;
use crate::api::{ApiReply, ApiResult};
use crate::request::RequestInfo;
use crate::state::AppState;
use crate::store::AuditQuery;
use serde_json::Value;
use std::ops::RangeInclusive;

/// Events answered when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 100;

/// Allowed `limit` values.
pub const LIMIT: RangeInclusive<i64> = 1..=1000;

/// Longest `action` filter (the longest action name is far shorter).
const MAX_ACTION_CHARS: usize = 64;

/// `GET /api/audit?account_id=&action=&since=&limit=` (admin) — events newest first, as a JSON
/// array. `account_id`: events about that account or by it; `action`: one action name;
/// `since`: an RFC 3339 instant (events at or after it); `limit`: 1–1000, default 100. A bad
/// parameter: 422 naming it.
pub async fn list(state: &AppState, request: &RequestInfo) -> ApiResult {
    let admin = access::admin(state, request).await?;
    let query = parse(
        request,
        (!admin.super_admin).then(|| admin.space.domain.clone()),
    )?;
    let events = state.store.audit_events(&query).await?;
    Ok(ApiReply::json(
        200,
        Value::Array(events.iter().map(crate::audit::json).collect()),
    ))
}

/// Reads the query parameters (every bad one reported at once) into a query scoped to `space`.
fn parse(
    request: &RequestInfo,
    space: Option<String>,
) -> Result<AuditQuery, crate::error::AppError> {
    let mut errors = Errors::default();
    let param = |k: &str| {
        request
            .query
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let account_id = param("account_id").and_then(|raw| match raw.parse::<i64>() {
        Ok(id) if id > 0 => Some(id),
        _ => {
            errors.add("account_id", "The account id must be a positive integer.");
            None
        }
    });
    let action = param("action").and_then(|raw| {
        let ok = raw.len() <= MAX_ACTION_CHARS
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_');
        if ok {
            Some(raw.to_string())
        } else {
            errors.add(
                "action",
                "The action must be an action name such as document.delivered.",
            );
            None
        }
    });
    let since = param("since").and_then(|raw| match parse_instant(raw) {
        Some(ms) => Some(ms),
        None => {
            errors.add(
                "since",
                "The since field must be an RFC 3339 date-time, such as 2026-01-31T08:00:00Z.",
            );
            None
        }
    });
    let limit = match param("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if LIMIT.contains(&n) => n,
            _ => {
                errors.add(
                    "limit",
                    crate::api::validate::range_message("limit", &LIMIT),
                );
                DEFAULT_LIMIT
            }
        },
    };
    errors.finish()?;
    Ok(AuditQuery {
        account_id,
        action,
        space,
        since,
        limit,
    })
}

/// Unix milliseconds of an RFC 3339 instant. A `+` offset that arrived unescaped in a query
/// string reads as a space: it is taken back as `+`.
pub fn parse_instant(raw: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(raw, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(&raw.replace(' ', "+"), &Rfc3339))
        .ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_instant;

    #[test]
    fn instants() {
        assert_eq!(parse_instant("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_instant("1970-01-01T01:00:01+01:00"), Some(1000));
        assert_eq!(parse_instant("1970-01-01T01:00:01 01:00"), Some(1000));
        assert_eq!(parse_instant("yesterday"), None);
        assert_eq!(parse_instant("2026-13-01T00:00:00Z"), None);
    }
}

//! `…/{user}/unsubscribe`: `{"endpoint": "…"}` — or `{"subscription":
//! "…"}`, the id `list` reports — sets Active = 'N'.

use serde_json::Value;

use super::list::subscription_id;
use super::{CommandError, ProcessorParts, check_token, command_id, json_object};
use crate::model::{Package, User};
use crate::report::ResultReport;

const EXPECTED: &str = r#"{"endpoint": "https://…"} or {"subscription": "…"}"#;

/// Which subscription to deactivate.
enum Which<'a> {
    Endpoint(&'a str),
    /// The id `list` reports.
    Id(&'a str),
}

fn which(value: &Value) -> Result<Which<'_>, CommandError> {
    let text = |name: &str| match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.as_str())),
        Some(_) => Err(CommandError::Invalid(format!(
            "{name} must be a non-empty string"
        ))),
    };
    match (text("endpoint")?, text("subscription")?) {
        (Some(endpoint), None) => Ok(Which::Endpoint(endpoint)),
        (None, Some(id)) => Ok(Which::Id(id)),
        (Some(_), Some(_)) => Err(CommandError::Invalid(
            "give endpoint or subscription, not both".into(),
        )),
        (None, None) => Err(CommandError::Invalid(format!(
            "endpoint is missing: unsubscribe expects {EXPECTED}"
        ))),
    }
}

pub(super) async fn apply(
    inner: &ProcessorParts,
    package: &Package,
    user: &User,
    payload: &[u8],
) -> Result<ResultReport, CommandError> {
    let value = json_object("unsubscribe", payload, EXPECTED)?;
    let id = command_id(&value)?;
    check_token(inner, &value, package, user)?;
    let changed = match which(&value)? {
        Which::Endpoint(endpoint) => inner.store.deactivate(package, user, endpoint).await?,
        Which::Id(wanted) => {
            let rows = inner.store.subscriptions(user, Some(package)).await?;
            match rows
                .iter()
                .find(|row| row.active && subscription_id(package, &row.endpoint) == wanted)
            {
                Some(row) => inner.store.deactivate(package, user, &row.endpoint).await?,
                None => false,
            }
        }
    };
    tracing::info!(command_id = id, package = %package, user = %user, deactivated = changed, "unsubscribed");
    Ok(ResultReport {
        deactivated: u64::from(changed),
        ..ResultReport::accepted(id, "unsubscribe")
    })
}

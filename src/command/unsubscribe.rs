//! `…/{user}/unsubscribe`: `{"endpoint": "…"}` sets Active = 'N'.

use super::{CommandError, ProcessorParts, check_token, command_id, json_object};
use crate::model::{Package, User};
use crate::report::ResultReport;

const EXPECTED: &str = r#"{"endpoint": "https://…"}"#;

pub(super) async fn apply(
    inner: &ProcessorParts,
    package: &Package,
    user: &User,
    payload: &[u8],
) -> Result<ResultReport, CommandError> {
    let value = json_object("unsubscribe", payload, EXPECTED)?;
    let id = command_id(&value)?;
    check_token(inner, &value, package, user)?;
    let endpoint = match value.get("endpoint") {
        Some(serde_json::Value::String(e)) if !e.is_empty() => e,
        Some(_) => {
            return Err(CommandError::Invalid(
                "endpoint must be a non-empty string".into(),
            ));
        }
        None => {
            return Err(CommandError::Invalid(format!(
                "endpoint is missing: unsubscribe expects {EXPECTED}"
            )));
        }
    };
    let changed = inner.store.deactivate(package, user, endpoint).await?;
    tracing::info!(command_id = id, package = %package, user = %user, deactivated = changed, "unsubscribed");
    Ok(ResultReport {
        deactivated: u64::from(changed),
        ..ResultReport::accepted(id, "unsubscribe")
    })
}

//! `…/{user}/list`: the user's subscriptions in the package, answered in the
//! result report's `items` — endpoint, module, user agent, creation time and
//! state, never the keys. The payload is optional: `{"id": "…"}` to match
//! the answer, `"all": true` to include inactive subscriptions.

use serde_json::Value;

use super::{CommandError, ProcessorParts, command_id, json_object};
use crate::model::{Package, Target};
use crate::report::{ListedSubscription, ResultReport};
use crate::topics::TopicError;

const EXPECTED: &str = r#"nothing, or {"id": "…", "all": true|false}"#;

pub(super) async fn apply(
    inner: &ProcessorParts,
    package: &Package,
    target: &Target,
    payload: &[u8],
) -> Result<ResultReport, CommandError> {
    let Target::User(user) = target else {
        return Err(TopicError::GroupNotAllowed { verb: "list" }.into());
    };
    let value = if payload.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        json_object("list", payload, EXPECTED)?
    };
    let id = command_id(&value)?;
    if let Some(key) = value
        .as_object()
        .and_then(|m| m.keys().find(|k| !matches!(k.as_str(), "id" | "all")))
    {
        return Err(CommandError::Invalid(format!(
            "unknown field `{key}`: list expects {EXPECTED}"
        )));
    }
    let all = match value.get("all") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(all)) => *all,
        Some(_) => return Err(CommandError::Invalid("all must be true or false".into())),
    };
    let rows = inner.store.subscriptions(user, Some(package)).await?;
    let active = rows.iter().filter(|row| row.active).count() as u64;
    let items: Vec<ListedSubscription> = rows
        .into_iter()
        .filter(|row| all || row.active)
        .map(|row| ListedSubscription {
            endpoint: row.endpoint,
            module: row.module,
            user_agent: row.user_agent,
            created_at: row.created_at,
            active: row.active,
        })
        .collect();
    tracing::debug!(command_id = id, package = %package, user = %user, listed = items.len(), "listed");
    Ok(ResultReport {
        subscriptions: active,
        items: Some(items),
        ..ResultReport::accepted(id, "list")
    })
}

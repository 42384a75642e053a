//! `…/@{group}/members`: `{"add": [users], "remove": [users]}` or
//! `{"set": [users]}`.

use serde_json::Value;

use super::{CommandError, ProcessorParts, command_id, json_object};
use crate::model::{Group, Package, User};
use crate::report::ResultReport;
use crate::store::MembersChange;

const EXPECTED: &str = r#"{"add": [users], "remove": [users]} or {"set": [users]}"#;

fn users(value: &Value, key: &str) -> Result<Option<Vec<User>>, CommandError> {
    let Some(list) = value.get(key) else {
        return Ok(None);
    };
    let Value::Array(items) = list else {
        return Err(CommandError::Invalid(format!(
            "{key} must be a list of user names"
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(name) => {
                User::parse(name).map_err(|e| CommandError::Invalid(format!("{key}[{i}]: {e}")))
            }
            _ => Err(CommandError::Invalid(format!(
                "{key}[{i}] must be a user name"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

pub(super) async fn apply(
    inner: &ProcessorParts,
    package: &Package,
    group: &Group,
    payload: &[u8],
) -> Result<ResultReport, CommandError> {
    let value = json_object("members", payload, EXPECTED)?;
    let id = command_id(&value)?;
    if let Some(key) = value.as_object().and_then(|m| {
        m.keys()
            .find(|k| !matches!(k.as_str(), "id" | "add" | "remove" | "set"))
    }) {
        return Err(CommandError::Invalid(format!(
            "unknown field `{key}`: members expects {EXPECTED}"
        )));
    }
    let change = match (
        users(&value, "set")?,
        users(&value, "add")?,
        users(&value, "remove")?,
    ) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(CommandError::Invalid(
                "set replaces the whole group: send it without add or remove".into(),
            ));
        }
        (Some(set), None, None) => MembersChange::Set(set),
        (None, None, None) => {
            return Err(CommandError::Invalid(format!(
                "nothing to change: members expects {EXPECTED}"
            )));
        }
        (None, add, remove) => MembersChange::Edit {
            add: add.unwrap_or_default(),
            remove: remove.unwrap_or_default(),
        },
    };
    let size = inner.store.change_members(package, group, &change).await?;
    tracing::info!(command_id = id, package = %package, group = %group, members = size, "group changed");
    Ok(ResultReport {
        members: Some(size),
        ..ResultReport::accepted(id, "members")
    })
}

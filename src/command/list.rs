//! `…/{user}/list`: the user's subscriptions in the package, answered in the
//! result report's `items` — a stable subscription id, the push service's
//! origin, module, user agent, creation time and state, never the keys. The
//! payload is optional: `{"id": "…"}` to match the answer, `"all": true` to
//! include inactive subscriptions, `"token"` when tokens are required, and
//! `"endpoints": true` for the whole endpoints, which only services may ask
//! for (the embedded broker's gateway refuses it from browsers).

use serde_json::Value;

use super::{CommandError, ProcessorParts, check_token, command_id, json_object};
use crate::model::{Endpoint, Package, Target};
use crate::receipt;
use crate::report::{ListedSubscription, ResultReport};
use crate::topics::TopicError;

const EXPECTED: &str =
    r#"nothing, or {"id": "…", "all": true|false, "endpoints": true|false, "token": "…"}"#;

/// The fields a list payload may have.
const FIELDS: [&str; 4] = ["id", "all", "endpoints", "token"];

/// A subscription's stable id, as `list` shows it and `unsubscribe` takes
/// it (see `receipt::subscription_id`).
pub(super) fn subscription_id(package: &Package, endpoint: &str) -> String {
    receipt::subscription_text(&receipt::subscription_id(package.as_str(), endpoint))
}

/// Reads an optional boolean field.
fn flag(value: &Value, name: &str) -> Result<bool, CommandError> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(on)) => Ok(*on),
        Some(_) => Err(CommandError::Invalid(format!(
            "{name} must be true or false"
        ))),
    }
}

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
        .and_then(|m| m.keys().find(|k| !FIELDS.contains(&k.as_str())))
    {
        return Err(CommandError::Invalid(format!(
            "unknown field `{key}`: list expects {EXPECTED}"
        )));
    }
    let all = flag(&value, "all")?;
    let endpoints = flag(&value, "endpoints")?;
    check_token(inner, &value, package, user)?;
    let rows = inner.store.subscriptions(user, Some(package)).await?;
    let active = rows.iter().filter(|row| row.active).count() as u64;
    let items: Vec<ListedSubscription> = rows
        .into_iter()
        .filter(|row| all || row.active)
        .map(|row| ListedSubscription {
            subscription: subscription_id(package, &row.endpoint),
            // A row written by other software may hold anything.
            origin: Endpoint::parse(&row.endpoint)
                .map(|e| e.origin())
                .unwrap_or_default(),
            endpoint: endpoints.then_some(row.endpoint),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_id_is_stable_and_tells_packages_and_endpoints_apart() {
        let crm = Package::parse("crm").unwrap();
        let hr = Package::parse("hr").unwrap();
        let e = "https://fcm.googleapis.com/fcm/send/abc";
        let id = subscription_id(&crm, e);
        assert_eq!(id.len(), 22);
        assert_eq!(id, subscription_id(&crm, e));
        assert_ne!(id, subscription_id(&hr, e));
        assert_ne!(
            id,
            subscription_id(&crm, "https://fcm.googleapis.com/fcm/send/abd")
        );
        assert!(!id.contains("abc"));
    }
}

//! `…/{user}/subscribe`: a browser's `PushSubscription.toJSON()`, plus an
//! optional `user_agent` and `module`, recorded with Active = 'Y'.
//!
//! Fields other than these (`expirationTime`, whatever a framework adds) are
//! ignored: the payload is produced by browsers and their libraries, not
//! written by hand, so strictness would only break working clients.

use serde_json::Value;

use super::{CommandError, ProcessorParts, check_token, command_id, json_object};
use crate::model::{Endpoint, MAX_NAME_LEN, Package, Subscription, SubscriptionKeys, User};
use crate::report::ResultReport;

const EXPECTED: &str =
    r#"a PushSubscription JSON {"endpoint": …, "keys": {"p256dh": …, "auth": …}}"#;
/// The `UserAgent varchar(512)` column.
const MAX_USER_AGENT: usize = 512;

fn string_field<'a>(value: &'a Value, path: &str, name: &str) -> Result<&'a str, CommandError> {
    match value.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        None | Some(Value::Null) => Err(CommandError::Invalid(format!(
            "{path} is missing: subscribe expects {EXPECTED}"
        ))),
        Some(_) => Err(CommandError::Invalid(format!(
            "{path} must be a non-empty string"
        ))),
    }
}

fn optional_text(value: &Value, name: &str) -> Result<Option<String>, CommandError> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CommandError::Invalid(format!("{name} must be a string"))),
    }
}

/// Reads and checks a subscription; `policy` decides whether its endpoint
/// may ever be pushed to.
pub(super) fn parse(
    inner: &ProcessorParts,
    package: &Package,
    user: &User,
    payload: &[u8],
) -> Result<(String, Subscription), CommandError> {
    let value = json_object("subscribe", payload, EXPECTED)?;
    let id = command_id(&value)?;
    check_token(inner, &value, package, user)?;
    let endpoint = Endpoint::parse(string_field(&value, "endpoint", "endpoint")?)?;
    inner.policy.check(&endpoint)?;
    let keys = match value.get("keys") {
        Some(keys @ Value::Object(_)) => keys,
        None | Some(Value::Null) => {
            return Err(CommandError::Invalid(format!(
                "keys is missing: subscribe expects {EXPECTED}"
            )));
        }
        Some(_) => {
            return Err(CommandError::Invalid(
                "keys must be an object with p256dh and auth".into(),
            ));
        }
    };
    let keys = SubscriptionKeys::parse(
        string_field(keys, "keys.p256dh", "p256dh")?,
        string_field(keys, "keys.auth", "auth")?,
    )?;
    // Informational only: a long user agent is shortened, not refused.
    let user_agent =
        optional_text(&value, "user_agent")?.map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
    let module = optional_text(&value, "module")?;
    if module
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_NAME_LEN)
    {
        return Err(CommandError::Invalid(format!(
            "module is longer than {MAX_NAME_LEN} characters"
        )));
    }
    Ok((
        id,
        Subscription {
            endpoint,
            keys,
            user_agent,
            module,
        },
    ))
}

pub(super) async fn apply(
    inner: &ProcessorParts,
    package: &Package,
    user: &User,
    payload: &[u8],
) -> Result<ResultReport, CommandError> {
    let (id, subscription) = parse(inner, package, user, payload)?;
    let max = inner.max_subscriptions_per_user;
    let recorded = if inner.subscribe_tokens.is_some() {
        // A token proves who the user is, not that the browser is theirs:
        // mallory's own token must not move alice's endpoint to him. A
        // shared browser changing hands makes a new push subscription.
        inner
            .store
            .upsert_subscription_unless_taken(package, user, &subscription, max)
            .await?
            .ok_or(CommandError::EndpointTaken)?
    } else {
        // Nothing is authenticated: the browser belongs to whoever
        // subscribed it last (a shared computer changing hands).
        inner
            .store
            .upsert_subscription(package, user, &subscription, max)
            .await?
    };
    tracing::info!(
        command_id = id,
        package = %package,
        user = %user,
        origin = subscription.endpoint.origin(),
        active = recorded.active,
        taken_from_others = recorded.taken_from_others,
        evicted = recorded.evicted,
        "subscribed"
    );
    Ok(ResultReport {
        subscriptions: recorded.active,
        deactivated: recorded.evicted,
        ..ResultReport::accepted(id, "subscribe")
    })
}

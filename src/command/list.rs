//! `…/{user}/list`: the user's subscriptions in the package, answered in the
//! result report's `items` — a stable subscription id, the push service's
//! origin, module, user agent, creation time and state, never the keys. The
//! payload is optional: `{"id": "…"}` to match the answer, `"all": true` to
//! include inactive subscriptions, `"token"` when tokens are required, and
//! `"endpoints": true` for the whole endpoints, which only services may ask
//! for (the embedded broker's gateway refuses it from browsers).

use serde_json::Value;

use super::{CommandError, ProcessorParts, check_token, command_id, json_object};
use std::collections::HashMap;

use crate::clock::now_ms;
use crate::model::{Endpoint, Package, Target};
use crate::receipt;
use crate::report::{ListedHealth, ListedSubscription, ResultReport};
use crate::store::SubscriptionHealth;
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
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|row| all || row.active)
        .map(|row| (subscription_id(package, &row.endpoint), row))
        .collect();
    let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    let mut health: HashMap<String, SubscriptionHealth> = inner
        .store
        .health(package, &ids)
        .await?
        .into_iter()
        .map(|h| (h.subscription.clone(), h))
        .collect();
    let now = now_ms();
    let items: Vec<ListedSubscription> = rows
        .into_iter()
        .map(|(id, row)| ListedSubscription {
            health: health.remove(&id).map(|h| listed_health(&h, now)),
            subscription: id,
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

/// A subscription's health for `list`, with its words.
pub fn listed_health(h: &SubscriptionHealth, now_ms: u64) -> ListedHealth {
    let secs = |ms: Option<u64>| ms.map(|ms| ms / 1000);
    ListedHealth {
        words: health_words(h, now_ms),
        delivered_at: secs(h.delivered_at),
        receipt: h.receipt.clone(),
        receipt_at: secs(h.receipt_at),
        failure: h.failure.clone(),
        failed_at: secs(h.failed_at),
        failures: h.failures,
        failing_since: secs(h.refused_since),
    }
}

/// A subscription's health in words, as a person asks "does it work?":
/// "delivered 2 h ago, shown 2 h ago", "failing for 9 days: 400 from
/// fcm.googleapis.com", "last push failed 5 min ago: expired".
pub(crate) fn health_words(h: &SubscriptionHealth, now_ms: u64) -> String {
    let host = h.origin.as_deref().map(|o| {
        o.trim_start_matches("https://")
            .trim_start_matches("http://")
    });
    let cause = |failure: &str| match (failure.parse::<u16>(), host) {
        (Ok(_), Some(host)) => format!("{failure} from {host}"),
        _ => failure.to_owned(),
    };
    if let (Some(since), Some(failure)) = (h.refused_since, &h.failure) {
        return format!("failing for {}: {}", age(now_ms, since), cause(failure));
    }
    let mut parts = Vec::new();
    if let Some(at) = h.delivered_at {
        parts.push(format!("delivered {} ago", age(now_ms, at)));
    }
    if let (Some(receipt), Some(at)) = (&h.receipt, h.receipt_at) {
        parts.push(format!("{receipt} {} ago", age(now_ms, at)));
    }
    if h.failures > 0
        && let (Some(failure), Some(at)) = (&h.failure, h.failed_at)
    {
        parts.push(format!(
            "last push failed {} ago: {}",
            age(now_ms, at),
            cause(failure)
        ));
    }
    if parts.is_empty() {
        "nothing recorded yet".to_owned()
    } else {
        parts.join(", ")
    }
}

/// How long ago `then_ms` was, roughly: "30 s", "5 min", "2 h", "9 days".
fn age(now_ms: u64, then_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
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

    fn health() -> SubscriptionHealth {
        SubscriptionHealth {
            subscription: "s".into(),
            origin: Some("https://fcm.googleapis.com".into()),
            ..SubscriptionHealth::default()
        }
    }

    const HOUR: u64 = 3600 * 1000;
    const NOW: u64 = 1_790_000_000_000;

    #[test]
    fn health_in_words_says_when_it_was_delivered_and_shown() {
        let h = SubscriptionHealth {
            delivered_at: Some(NOW - 2 * HOUR),
            receipt: Some("shown".into()),
            receipt_at: Some(NOW - 2 * HOUR + 5000),
            ..health()
        };
        assert_eq!(health_words(&h, NOW), "delivered 2 h ago, shown 1 h ago");
    }

    #[test]
    fn health_in_words_says_how_long_a_subscription_has_been_failing_and_why() {
        let h = SubscriptionHealth {
            delivered_at: Some(NOW - 10 * 24 * HOUR),
            failure: Some("400".into()),
            failed_at: Some(NOW - HOUR),
            failures: 30,
            refused_since: Some(NOW - 9 * 24 * HOUR),
            ..health()
        };
        assert_eq!(
            health_words(&h, NOW),
            "failing for 9 days: 400 from fcm.googleapis.com"
        );
        let expired = SubscriptionHealth {
            failure: Some("expired".into()),
            failed_at: Some(NOW - 5 * 60 * 1000),
            failures: 1,
            ..health()
        };
        assert_eq!(
            health_words(&expired, NOW),
            "last push failed 5 min ago: expired"
        );
        assert_eq!(health_words(&health(), NOW), "nothing recorded yet");
    }
}

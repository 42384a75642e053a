//! Each subscription's health: what the engine and the browser's receipts
//! say about its pushes, recorded in `axion_push_subscription_health`
//! (never in Axion's table). The statements are each backend's
//! `subscription_health.rs`; the values and the merging of a batch are
//! here.

use std::collections::BTreeMap;

use super::to_u64;

/// A run of refusals with no push failing for this long (milliseconds)
/// starts again at the next refusal: the subscription was not tried in
/// between, so nothing says it was refused all that time.
pub const RUN_GAP_MS: u64 = 7 * 24 * 3600 * 1000;

/// What became of one push, for its subscription's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub package: String,
    /// The subscription's stable id (see `receipt::subscription_id`).
    pub subscription: String,
    pub user: String,
    /// The push service's origin, when the endpoint is a usable URL.
    pub origin: Option<String>,
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    pub outcome: HealthOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthOutcome {
    /// A push service took a push.
    Delivered,
    /// A push failed for good, under this cause (`"400"`, `"expired"`, …).
    Failed(String),
}

/// A subscription's health as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionHealth {
    pub subscription: String,
    pub origin: Option<String>,
    pub delivered_at: Option<u64>,
    pub receipt_at: Option<u64>,
    pub receipt: Option<String>,
    pub failed_at: Option<u64>,
    pub failure: Option<String>,
    /// Failures since the last delivery.
    pub failures: u64,
    /// Since when its pushes have been refused for it alone while its push
    /// service delivered to others.
    pub refused_since: Option<u64>,
}

/// One row to write for a batch of events of one subscription: the last
/// delivery and the last failure in it, and the failures after that
/// delivery. A delivery in the batch starts the count of failures again
/// (and ends a run of refusals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthRow<'a> {
    pub package: &'a str,
    pub subscription: &'a str,
    pub user: &'a str,
    pub origin: Option<&'a str>,
    pub delivered_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub failure: Option<&'a str>,
    pub failures: i64,
}

/// The batch as one row per subscription, in key order (so concurrent
/// writers lock rows in one order), events applied in the order given.
pub(crate) fn merge(events: &[HealthEvent]) -> Vec<HealthRow<'_>> {
    let mut rows: BTreeMap<(&str, &str), HealthRow<'_>> = BTreeMap::new();
    for e in events {
        let row = rows
            .entry((e.package.as_str(), e.subscription.as_str()))
            .or_insert(HealthRow {
                package: &e.package,
                subscription: &e.subscription,
                user: &e.user,
                origin: None,
                delivered_at: None,
                failed_at: None,
                failure: None,
                failures: 0,
            });
        row.user = &e.user;
        row.origin = e.origin.as_deref().or(row.origin);
        let at = super::to_i64(e.at_ms);
        match &e.outcome {
            HealthOutcome::Delivered => {
                row.delivered_at = Some(at);
                row.failures = 0;
            }
            HealthOutcome::Failed(cause) => {
                row.failed_at = Some(at);
                row.failure = Some(cause);
                row.failures += 1;
            }
        }
    }
    rows.into_values().collect()
}

/// A health row as every backend's `SELECT` reads it: subscription,
/// origin, delivered at, receipt at, receipt, failed at, failure,
/// failures, refused since.
pub(crate) type HealthColumns = (
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
    Option<i64>,
);

pub(crate) fn from_row(row: HealthColumns) -> SubscriptionHealth {
    let (subscription, origin, delivered, receipt_at, receipt, failed, failure, failures, refused) =
        row;
    SubscriptionHealth {
        subscription,
        origin,
        delivered_at: delivered.map(to_u64),
        receipt_at: receipt_at.map(to_u64),
        receipt,
        failed_at: failed.map(to_u64),
        failure,
        failures: to_u64(failures),
        refused_since: refused.map(to_u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sub: &str, at_ms: u64, outcome: HealthOutcome) -> HealthEvent {
        HealthEvent {
            package: "crm".into(),
            subscription: sub.into(),
            user: "alice".into(),
            origin: Some("https://push.example".into()),
            at_ms,
            outcome,
        }
    }

    #[test]
    fn a_batch_is_one_row_per_subscription_counting_failures_after_the_last_delivery() {
        let failed = || HealthOutcome::Failed("400".into());
        let events = [
            event("a", 1, failed()),
            event("a", 2, HealthOutcome::Delivered),
            event("a", 3, failed()),
            event("a", 4, failed()),
            event("b", 5, failed()),
        ];
        let rows = merge(&events);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].subscription, "a");
        assert_eq!(rows[0].delivered_at, Some(2));
        assert_eq!(rows[0].failed_at, Some(4));
        assert_eq!(rows[0].failures, 2);
        assert_eq!(rows[1].delivered_at, None);
        assert_eq!(rows[1].failures, 1);
    }
}

//! The MariaDB/MySQL statements of each subscription's health.

use sqlx::MySql as Db;

use super::MySql;
use crate::store::subscription_health::{HealthEvent, HealthOutcome, RUN_GAP_MS, merge};
use crate::store::{StoreError, to_i64, to_u64};

/// What a batch row changes on a row already there. A delivery in the
/// batch (`DeliveredAt` set) counts the failures after it only, and ends a
/// run of refusals.
/// (`VALUES(col)` is the row the statement wanted to insert; each
/// assignment reads the new values through it, never a column assigned
/// before it in the list.)
const UPDATE: &str = " ON DUPLICATE KEY UPDATE \
    User = VALUES(User), \
    Origin = COALESCE(VALUES(Origin), Origin), \
    Failures = CASE WHEN VALUES(DeliveredAt) IS NOT NULL THEN VALUES(Failures) \
                    ELSE Failures + VALUES(Failures) END, \
    RefusedSince = CASE WHEN VALUES(DeliveredAt) IS NOT NULL THEN NULL ELSE RefusedSince END, \
    DeliveredAt = COALESCE(VALUES(DeliveredAt), DeliveredAt), \
    FailedAt = COALESCE(VALUES(FailedAt), FailedAt), \
    Failure = COALESCE(VALUES(Failure), Failure)";

/// A refusal: the last value is when the run of refusals would start, or
/// NULL when this refusal says nothing against the subscription alone (its
/// run ends); a run whose last failure is older than the last parameter
/// (`RUN_GAP_MS`) starts again. `RefusedSince` is assigned before
/// `FailedAt`, as MariaDB's assignments read the columns assigned before
/// them. Read back with [`REFUSED_SINCE`] in the same transaction.
const REFUSED: &str = "\
    INSERT INTO axion_push_subscription_health \
        (Package, Subscription, User, Origin, FailedAt, Failure, Failures, RefusedSince) \
    VALUES (?, ?, ?, ?, ?, ?, 1, ?) \
    ON DUPLICATE KEY UPDATE \
        User = VALUES(User), Origin = COALESCE(VALUES(Origin), Origin), \
        RefusedSince = CASE WHEN VALUES(RefusedSince) IS NULL THEN NULL \
                            WHEN FailedAt IS NULL OR FailedAt < VALUES(FailedAt) - ? \
                                THEN VALUES(RefusedSince) \
                            ELSE COALESCE(RefusedSince, VALUES(RefusedSince)) END, \
        FailedAt = VALUES(FailedAt), Failure = VALUES(Failure), Failures = Failures + 1";

const REFUSED_SINCE: &str = "\
    SELECT RefusedSince FROM axion_push_subscription_health WHERE Package = ? AND Subscription = ?";

const RECEIPT: &str = "\
    INSERT INTO axion_push_subscription_health (Package, Subscription, User, ReceiptAt, Receipt) \
    VALUES (?, ?, ?, ?, ?) \
    ON DUPLICATE KEY UPDATE ReceiptAt = VALUES(ReceiptAt), Receipt = VALUES(Receipt)";

const SELECT: &str = "SELECT Subscription, Origin, DeliveredAt, ReceiptAt, Receipt, FailedAt, \
    Failure, Failures, RefusedSince FROM axion_push_subscription_health WHERE Package = ";
/// Follows `SELECT` and its package: the list of subscriptions.
const SUBSCRIPTION_IN: &str = " AND Subscription IN (";

/// The head of a batch of health rows (see `shared::health_upsert`).
const INSERT_HEALTH: &str = "INSERT INTO axion_push_subscription_health \
    (Package, Subscription, User, Origin, DeliveredAt, FailedAt, Failure, Failures) ";

impl MySql {
    super::super::shared::health_reads!();

    pub(in crate::store) async fn record_health(
        &self,
        events: &[HealthEvent],
    ) -> Result<(), StoreError> {
        let rows = merge(events);
        // In chunks of a power of two each (at most 1024 rows): a few shapes
        // of the statement, each staying prepared in the connection's cache,
        // rather than one of every length a batch happens to have (a
        // statement prepared anew costs MariaDB a parse of every row's
        // placeholders). Padding, as the queue's lists are padded, would
        // apply a row twice here.
        let mut rest = rows.as_slice();
        let mut tx = self.pool.begin().await?;
        while !rest.is_empty() {
            let len = if rest.len() >= 1024 {
                1024
            } else {
                1 << rest.len().ilog2()
            };
            let (chunk, after) = rest.split_at(len);
            rest = after;
            let mut q = super::super::shared::health_upsert!(chunk, std::convert::identity);
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn record_refusal(
        &self,
        event: &HealthEvent,
        counted: bool,
    ) -> Result<Option<u64>, StoreError> {
        let cause = match &event.outcome {
            HealthOutcome::Failed(cause) => cause.as_str(),
            HealthOutcome::Delivered => "",
        };
        let at = to_i64(event.at_ms);
        let mut tx = self.pool.begin().await?;
        sqlx::query(REFUSED)
            .bind(&event.package)
            .bind(&event.subscription)
            .bind(&event.user)
            .bind(event.origin.as_deref())
            .bind(at)
            .bind(cause)
            .bind(counted.then_some(at))
            .bind(to_i64(RUN_GAP_MS))
            .execute(&mut *tx)
            .await?;
        let since: Option<i64> = sqlx::query_scalar(REFUSED_SINCE)
            .bind(&event.package)
            .bind(&event.subscription)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(since.map(to_u64))
    }
}

//! The SQLite statements of each subscription's health.

use sqlx::{QueryBuilder, Sqlite as Db};

use super::{Sqlite, classify};
use crate::store::subscription_health::{
    HealthColumns, HealthEvent, HealthOutcome, RUN_GAP_MS, SubscriptionHealth, from_row, merge,
};
use crate::store::{StoreError, to_i64, to_u64};

/// What a batch row changes on a row already there. A delivery in the
/// batch (`DeliveredAt` set) counts the failures after it only, and ends a
/// run of refusals.
const UPDATE: &str = " ON CONFLICT (Package, Subscription) DO UPDATE SET \
    User = excluded.User, \
    Origin = COALESCE(excluded.Origin, Origin), \
    DeliveredAt = COALESCE(excluded.DeliveredAt, DeliveredAt), \
    FailedAt = COALESCE(excluded.FailedAt, FailedAt), \
    Failure = COALESCE(excluded.Failure, Failure), \
    Failures = CASE WHEN excluded.DeliveredAt IS NOT NULL THEN excluded.Failures \
                    ELSE Failures + excluded.Failures END, \
    RefusedSince = CASE WHEN excluded.DeliveredAt IS NOT NULL THEN NULL ELSE RefusedSince END";

/// A refusal: `?7` is when the run of refusals would start, or NULL when
/// this refusal says nothing against the subscription alone (its run
/// ends); a run whose last failure is older than `?8` (`RUN_GAP_MS`)
/// starts again. (The right-hand sides read the row as it was.)
const REFUSED: &str = "\
    INSERT INTO axion_push_subscription_health \
        (Package, Subscription, User, Origin, FailedAt, Failure, Failures, RefusedSince) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7) \
    ON CONFLICT (Package, Subscription) DO UPDATE SET \
        User = excluded.User, Origin = COALESCE(excluded.Origin, Origin), \
        FailedAt = excluded.FailedAt, Failure = excluded.Failure, Failures = Failures + 1, \
        RefusedSince = CASE WHEN excluded.RefusedSince IS NULL THEN NULL \
                            WHEN FailedAt IS NULL OR FailedAt < excluded.FailedAt - ?8 \
                                THEN excluded.RefusedSince \
                            ELSE COALESCE(RefusedSince, excluded.RefusedSince) END \
    RETURNING RefusedSince";

const RECEIPT: &str = "\
    INSERT INTO axion_push_subscription_health (Package, Subscription, User, ReceiptAt, Receipt) \
    VALUES (?, ?, ?, ?, ?) \
    ON CONFLICT (Package, Subscription) DO UPDATE SET \
        ReceiptAt = excluded.ReceiptAt, Receipt = excluded.Receipt";

const SELECT: &str = "SELECT Subscription, Origin, DeliveredAt, ReceiptAt, Receipt, FailedAt, \
    Failure, Failures, RefusedSince FROM axion_push_subscription_health WHERE Package = ";

impl Sqlite {
    pub(in crate::store) async fn record_health(
        &self,
        events: &[HealthEvent],
    ) -> Result<(), StoreError> {
        let rows = merge(events);
        for chunk in rows.chunks(1000) {
            let mut q = QueryBuilder::<Db>::new(
                "INSERT INTO axion_push_subscription_health \
                    (Package, Subscription, User, Origin, DeliveredAt, FailedAt, Failure, Failures) ",
            );
            q.push_values(chunk, |mut b, row| {
                b.push_bind(row.package)
                    .push_bind(row.subscription)
                    .push_bind(row.user)
                    .push_bind(row.origin)
                    .push_bind(row.delivered_at)
                    .push_bind(row.failed_at)
                    .push_bind(row.failure)
                    .push_bind(row.failures);
            });
            q.push(UPDATE);
            q.build().execute(&self.pool).await.map_err(classify)?;
        }
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
        let since: Option<i64> = sqlx::query_scalar(REFUSED)
            .bind(&event.package)
            .bind(&event.subscription)
            .bind(&event.user)
            .bind(event.origin.as_deref())
            .bind(at)
            .bind(cause)
            .bind(counted.then_some(at))
            .bind(to_i64(RUN_GAP_MS))
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(since.map(to_u64))
    }

    pub(in crate::store) async fn record_receipt_health(
        &self,
        package: &str,
        subscription: &str,
        user: &str,
        kind: &str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(RECEIPT)
            .bind(package)
            .bind(subscription)
            .bind(user)
            .bind(to_i64(at_ms))
            .bind(kind)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub(in crate::store) async fn health(
        &self,
        package: &str,
        subscriptions: &[String],
    ) -> Result<Vec<SubscriptionHealth>, StoreError> {
        if subscriptions.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Db>::new(SELECT);
        q.push_bind(package).push(" AND Subscription IN (");
        let mut list = q.separated(", ");
        for s in subscriptions {
            list.push_bind(s);
        }
        q.push(")");
        let rows: Vec<HealthColumns> = q
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        Ok(rows.into_iter().map(from_row).collect())
    }
}

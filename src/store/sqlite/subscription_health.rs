//! The SQLite statements of each subscription's health.

use sqlx::Sqlite as Db;

use super::Sqlite;

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
/// Follows `SELECT` and its package: the list of subscriptions.
const SUBSCRIPTION_IN: &str = " AND Subscription IN (";

/// The head of a batch of health rows (see `shared::health_upsert`).
const INSERT_HEALTH: &str = "INSERT INTO axion_push_subscription_health \
    (Package, Subscription, User, Origin, DeliveredAt, FailedAt, Failure, Failures) ";

impl Sqlite {
    super::super::shared::health_reads!();
    super::super::shared::record_refusal_returning!();
    super::super::shared::record_health_by_thousands!(std::convert::identity);
}

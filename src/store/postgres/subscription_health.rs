//! The PostgreSQL statements of each subscription's health.

use sqlx::Postgres as Db;

use super::Postgres;

/// What a batch row changes on a row already there. A delivery in the
/// batch (`DeliveredAt` set) counts the failures after it only, and ends a
/// run of refusals.
const UPDATE: &str = r#" ON CONFLICT ("Package", "Subscription") DO UPDATE SET
    "User" = excluded."User",
    "Origin" = COALESCE(excluded."Origin", h."Origin"),
    "DeliveredAt" = COALESCE(excluded."DeliveredAt", h."DeliveredAt"),
    "FailedAt" = COALESCE(excluded."FailedAt", h."FailedAt"),
    "Failure" = COALESCE(excluded."Failure", h."Failure"),
    "Failures" = CASE WHEN excluded."DeliveredAt" IS NOT NULL THEN excluded."Failures"
                      ELSE h."Failures" + excluded."Failures" END,
    "RefusedSince" = CASE WHEN excluded."DeliveredAt" IS NOT NULL THEN NULL ELSE h."RefusedSince" END"#;

/// A refusal: `$7` is when the run of refusals would start, or NULL when
/// this refusal says nothing against the subscription alone (its run
/// ends); a run whose last failure is older than `$8` (`RUN_GAP_MS`)
/// starts again. (The right-hand sides read the row as it was.)
const REFUSED: &str = r#"
    INSERT INTO axion_push_subscription_health AS h
        ("Package", "Subscription", "User", "Origin", "FailedAt", "Failure", "Failures", "RefusedSince")
    VALUES ($1, $2, $3, $4, $5, $6, 1, $7)
    ON CONFLICT ("Package", "Subscription") DO UPDATE SET
        "User" = excluded."User", "Origin" = COALESCE(excluded."Origin", h."Origin"),
        "FailedAt" = excluded."FailedAt", "Failure" = excluded."Failure",
        "Failures" = h."Failures" + 1,
        "RefusedSince" = CASE WHEN excluded."RefusedSince" IS NULL THEN NULL
                              WHEN h."FailedAt" IS NULL OR h."FailedAt" < excluded."FailedAt" - $8
                                  THEN excluded."RefusedSince"
                              ELSE COALESCE(h."RefusedSince", excluded."RefusedSince") END
    RETURNING "RefusedSince""#;

const RECEIPT: &str = r#"
    INSERT INTO axion_push_subscription_health ("Package", "Subscription", "User", "ReceiptAt", "Receipt")
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT ("Package", "Subscription") DO UPDATE SET
        "ReceiptAt" = excluded."ReceiptAt", "Receipt" = excluded."Receipt""#;

const SELECT: &str = r#"SELECT "Subscription", "Origin", "DeliveredAt", "ReceiptAt", "Receipt",
    "FailedAt", "Failure", "Failures"::bigint, "RefusedSince"
    FROM axion_push_subscription_health WHERE "Package" = "#;
/// Follows `SELECT` and its package: the list of subscriptions.
const SUBSCRIPTION_IN: &str = r#" AND "Subscription" IN ("#;

/// The head of a batch of health rows (see `shared::health_upsert`).
const INSERT_HEALTH: &str = r#"INSERT INTO axion_push_subscription_health AS h
    ("Package", "Subscription", "User", "Origin", "DeliveredAt", "FailedAt", "Failure", "Failures") "#;

impl Postgres {
    super::super::shared::health_reads!();
    super::super::shared::record_refusal_returning!();
    super::super::shared::record_health_by_thousands!(int4);
}

/// `Failures` is an INT column here.
fn int4(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

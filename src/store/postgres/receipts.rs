//! The PostgreSQL statements of receipts already taken.

use super::Postgres;

/// A new receipt is recorded with no replays; one taken before counts one
/// more and says how many.
const TAKE: &str = r#"
    INSERT INTO axion_push_receipt ("Package", "Tag", "Kind", "SentAt") VALUES ($1, $2, $3, $4)
    ON CONFLICT ("Package", "Tag", "Kind")
    DO UPDATE SET "Replays" = axion_push_receipt."Replays" + 1
    RETURNING "Replays""#;

const PURGE: &str = r#"DELETE FROM axion_push_receipt WHERE "SentAt" < $1"#;

impl Postgres {
    super::super::shared::take_receipt_returning!();
    super::super::shared::purge_receipts!();
}

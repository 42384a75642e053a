//! The PostgreSQL statements of receipts already taken.

use super::Postgres;

/// A new receipt is recorded with no replays and its command; one taken
/// before counts one more and says how many, and which command took it.
const TAKE: &str = r#"
    INSERT INTO axion_push_receipt ("Package", "Tag", "Kind", "SentAt", "CommandId")
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT ("Package", "Tag", "Kind")
    DO UPDATE SET "Replays" = axion_push_receipt."Replays" + 1
    RETURNING "Replays", "CommandId""#;

const PURGE: &str = r#"DELETE FROM axion_push_receipt WHERE "SentAt" < $1"#;

impl Postgres {
    super::super::shared::take_receipt_returning!();
    super::super::shared::purge_receipts!();
}

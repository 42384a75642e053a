//! The SQLite statements of receipts already taken.

use super::Sqlite;

/// A new receipt is recorded with no replays and its command; one taken
/// before counts one more and says how many, and which command took it.
const TAKE: &str = "\
    INSERT INTO axion_push_receipt (Package, Tag, Kind, SentAt, CommandId) \
    VALUES (?, ?, ?, ?, ?) \
    ON CONFLICT (Package, Tag, Kind) DO UPDATE SET Replays = Replays + 1 \
    RETURNING Replays, CommandId";

const PURGE: &str = "DELETE FROM axion_push_receipt WHERE SentAt < ?";

impl Sqlite {
    super::super::shared::take_receipt_returning!();
    super::super::shared::purge_receipts!();
}

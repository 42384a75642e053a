//! The MariaDB/MySQL statements of receipts already taken.

use super::MySql;
use crate::store::{StoreError, Taken, to_i64};

/// A new receipt is recorded with no replays and its command; one taken
/// before counts one more. The connection reports found rather than
/// changed rows, so the count of affected rows tells the two apart: 1 for
/// an insert, 2 for an update of the row already there.
const TAKE: &str = "\
    INSERT INTO axion_push_receipt (Package, Tag, Kind, SentAt, CommandId) \
    VALUES (?, ?, ?, ?, ?) \
    ON DUPLICATE KEY UPDATE Replays = Replays + 1";

/// The command that took a receipt taken before.
const TAKEN_BY: &str =
    "SELECT CommandId FROM axion_push_receipt WHERE Package = ? AND Tag = ? AND Kind = ?";

const PURGE: &str = "DELETE FROM axion_push_receipt WHERE SentAt < ?";

impl MySql {
    super::super::shared::purge_receipts!();

    pub(in crate::store) async fn take_receipt(
        &self,
        package: &str,
        tag: &str,
        kind: &str,
        sent_ms: u64,
        command_id: &str,
    ) -> Result<Taken, StoreError> {
        let affected = sqlx::query(TAKE)
            .bind(package)
            .bind(tag)
            .bind(kind)
            .bind(to_i64(sent_ms))
            .bind(command_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if affected == 1 {
            return Ok(Taken::First);
        }
        // Only for a receipt taken before: the first answer needs no read.
        let taken_by: Option<String> = sqlx::query_scalar(TAKEN_BY)
            .bind(package)
            .bind(tag)
            .bind(kind)
            .fetch_optional(&self.pool)
            .await?
            .flatten();
        Ok(Taken::of(1, taken_by.as_deref(), command_id))
    }
}

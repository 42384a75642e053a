//! The MariaDB/MySQL statements of receipts already taken.

use super::MySql;
use crate::store::{StoreError, to_i64};

/// A new receipt is recorded with no replays; one taken before counts one
/// more. The connection reports found rather than changed rows, so the
/// count of affected rows tells the two apart: 1 for an insert, 2 for an
/// update of the row already there.
const TAKE: &str = "\
    INSERT INTO axion_push_receipt (Package, Tag, Kind, SentAt) VALUES (?, ?, ?, ?) \
    ON DUPLICATE KEY UPDATE Replays = Replays + 1";

const PURGE: &str = "DELETE FROM axion_push_receipt WHERE SentAt < ?";

impl MySql {
    super::super::shared::purge_receipts!();

    pub(in crate::store) async fn take_receipt(
        &self,
        package: &str,
        tag: &str,
        kind: &str,
        sent_ms: u64,
    ) -> Result<bool, StoreError> {
        let affected = sqlx::query(TAKE)
            .bind(package)
            .bind(tag)
            .bind(kind)
            .bind(to_i64(sent_ms))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(affected == 1)
    }
}

//! The SQLite statements of receipts already taken.

use super::{Sqlite, classify};
use crate::store::{StoreError, to_i64};

/// A new receipt is recorded with no replays; one taken before counts one
/// more and says how many.
const TAKE: &str = "\
    INSERT INTO axion_push_receipt (Package, Tag, Kind, SentAt) VALUES (?, ?, ?, ?) \
    ON CONFLICT (Package, Tag, Kind) DO UPDATE SET Replays = Replays + 1 \
    RETURNING Replays";

const PURGE: &str = "DELETE FROM axion_push_receipt WHERE SentAt < ?";

impl Sqlite {
    pub(in crate::store) async fn take_receipt(
        &self,
        package: &str,
        tag: &str,
        kind: &str,
        sent_ms: u64,
    ) -> Result<bool, StoreError> {
        let replays: i64 = sqlx::query_scalar(TAKE)
            .bind(package)
            .bind(tag)
            .bind(kind)
            .bind(to_i64(sent_ms))
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(replays == 0)
    }

    pub(in crate::store) async fn purge_receipts(&self, before_ms: u64) -> Result<u64, StoreError> {
        Ok(sqlx::query(PURGE)
            .bind(to_i64(before_ms))
            .execute(&self.pool)
            .await
            .map_err(classify)?
            .rows_affected())
    }
}

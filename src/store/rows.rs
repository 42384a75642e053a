//! Reading rows into the store's types, the same on every backend: the
//! columns have the same names and decode to the same Rust types.

use std::collections::BTreeMap;

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{Claimed, CommandState, StoreError, StoredSubscription, to_u64};

/// A row of `def_notify_push_subscription`, all columns.
pub(super) fn subscription<R>(row: &R) -> Result<StoredSubscription, StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let get = StoreError::Query;
    let active: Option<String> = row.try_get("Active").map_err(get)?;
    Ok(StoredSubscription {
        user: row.try_get("User").map_err(get)?,
        package: row.try_get("Package").map_err(get)?,
        module: row.try_get("Module").map_err(get)?,
        endpoint: row.try_get("Endpoint").map_err(get)?,
        p256dh: row.try_get("KeysP256dh").map_err(get)?,
        auth: row.try_get("KeysAuth").map_err(get)?,
        user_agent: row.try_get("UserAgent").map_err(get)?,
        created_at: row.try_get("CreatedAt").map_err(get)?,
        active: super::is_active(active.as_deref()),
    })
}

/// A send's progress, from the columns each backend's `STATE_COLUMNS`
/// selects; its failure causes are read apart.
pub(super) fn command_state<R>(row: &R) -> Result<CommandState, StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let get = StoreError::Query;
    let count = |name: &str| -> Result<u64, StoreError> {
        row.try_get::<i64, _>(name).map(to_u64).map_err(get)
    };
    Ok(CommandState {
        package: row.try_get("Package").map_err(get)?,
        id: row.try_get("Id").map_err(get)?,
        target: row.try_get("Target").map_err(get)?,
        members: row
            .try_get::<Option<i64>, _>("Members")
            .map_err(get)?
            .map(to_u64),
        subscriptions: count("Subscriptions")?,
        pending: count("Pending")?,
        delivered: count("Delivered")?,
        failed: count("Failed")?,
        deactivated: count("Deactivated")?,
        expired: count("Expired")?,
        causes: BTreeMap::new(),
    })
}

/// A claimed delivery; `tried` reads the `Tried` flag, which the backends
/// keep as an integer or a boolean.
pub(super) fn claimed<R>(
    row: &R,
    tried: impl FnOnce(&R) -> Result<bool, sqlx::Error>,
) -> Result<Claimed, StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let get = StoreError::Query;
    Ok(Claimed {
        seq: row.try_get("Seq").map_err(get)?,
        package: row.try_get("Package").map_err(get)?,
        command_id: row.try_get("CommandId").map_err(get)?,
        user: row.try_get("User").map_err(get)?,
        endpoint: row.try_get("Endpoint").map_err(get)?,
        p256dh: row.try_get("KeysP256dh").map_err(get)?,
        auth: row.try_get("KeysAuth").map_err(get)?,
        attempts: row
            .try_get::<i64, _>("Attempts")
            .map_err(get)?
            .try_into()
            .unwrap_or_default(),
        tried: tried(row).map_err(get)?,
    })
}

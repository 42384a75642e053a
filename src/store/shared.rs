//! Store methods whose Rust is the same on every backend that has them:
//! the statement differs (each backend's module has its own constant of
//! the same name, in its dialect), the steps around it do not.
//!
//! Written once here as macros that each backend expands inside its own
//! `impl`, so the body binds to that backend's pool, statements and row
//! types. Generic functions over `sqlx::Database` would need half a dozen
//! higher-ranked bounds on each (every bound type's `Encode`/`Decode`, the
//! executor, the arguments) that the compiler does not carry from a trait,
//! and would hide the statement behind a parameter; a macro keeps the body
//! as plain as the backend code it replaces.

/// `members`, `close`: a group's members by name, and closing the pool.
macro_rules! groups {
    () => {
        pub(super) async fn members(
            &self,
            package: &$crate::model::Package,
            group: &$crate::model::Group,
        ) -> Result<Vec<$crate::model::User>, $crate::store::StoreError> {
            let names: Vec<String> = sqlx::query_scalar(MEMBERS)
                .bind(package.as_str())
                .bind(group.as_str())
                .fetch_all(&self.pool)
                .await?;
            // Names were validated when added; one that no longer parses (a
            // table edited by hand) is skipped rather than failing the group.
            Ok(names
                .iter()
                .filter_map(|n| $crate::model::User::parse(n).ok())
                .collect())
        }

        pub(super) async fn close(&self) {
            self.pool.close().await;
        }
    };
}
pub(super) use groups;

/// `change_members`: a `set` clears the group first, then members are
/// removed and added (each backend's `edit_members` applies a list with
/// its statement) and counted, in one transaction.
macro_rules! change_members {
    () => {
        pub(super) async fn change_members(
            &self,
            package: &$crate::model::Package,
            group: &$crate::model::Group,
            change: &$crate::store::MembersChange,
        ) -> Result<u64, $crate::store::StoreError> {
            use $crate::model::User;
            use $crate::store::MembersChange;
            let mut tx = self.pool.begin().await?;
            let (add, remove): (&[User], &[User]) = match change {
                MembersChange::Edit { add, remove } => (add, remove),
                MembersChange::Set(users) => {
                    sqlx::query(CLEAR_GROUP)
                        .bind(package.as_str())
                        .bind(group.as_str())
                        .execute(&mut *tx)
                        .await?;
                    (users, &[])
                }
            };
            edit_members(&mut tx, REMOVE_MEMBERS, package, group, remove).await?;
            edit_members(&mut tx, ADD_MEMBERS, package, group, add).await?;
            let count: i64 = sqlx::query_scalar(COUNT_MEMBERS)
                .bind(package.as_str())
                .bind(group.as_str())
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(count.try_into().unwrap_or_default())
        }
    };
}
pub(super) use change_members;

/// `edit_members` for backends without arrays: `statement` (which names
/// one member) once per member, on `$conn`.
macro_rules! edit_members_one_by_one {
    ($conn:ty) => {
        async fn edit_members(
            conn: &mut $conn,
            statement: &'static str,
            package: &$crate::model::Package,
            group: &$crate::model::Group,
            users: &[$crate::model::User],
        ) -> Result<(), $crate::store::StoreError> {
            for user in users {
                sqlx::query(statement)
                    .bind(package.as_str())
                    .bind(group.as_str())
                    .bind(user.as_str())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }
    };
}
pub(super) use edit_members_one_by_one;

/// `deactivate`: one user's row for an endpoint (backends whose plain
/// comparison is already exact).
macro_rules! deactivate {
    () => {
        pub(super) async fn deactivate(
            &self,
            package: &$crate::model::Package,
            user: &$crate::model::User,
            endpoint: &str,
        ) -> Result<bool, $crate::store::StoreError> {
            let done = sqlx::query(DEACTIVATE)
                .bind(user.as_str())
                .bind(package.as_str())
                .bind(endpoint)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() > 0)
        }
    };
}
pub(super) use deactivate;

/// The queue's upkeep: when the next delivery is due, how many wait,
/// handing back one's leases at stop, and purging old commands.
macro_rules! queue_upkeep {
    () => {
        pub(in crate::store) async fn pending_deliveries(
            &self,
        ) -> Result<u64, $crate::store::StoreError> {
            let count: i64 = sqlx::query_scalar(PENDING).fetch_one(&self.pool).await?;
            Ok($crate::store::to_u64(count))
        }

        pub(in crate::store) async fn release(
            &self,
            owner: &str,
        ) -> Result<u64, $crate::store::StoreError> {
            Ok(sqlx::query(RELEASE)
                .bind(owner)
                .bind(held_by(owner))
                .execute(&self.pool)
                .await?
                .rows_affected())
        }

        pub(in crate::store) async fn purge_commands(
            &self,
            before_ms: u64,
        ) -> Result<u64, $crate::store::StoreError> {
            let before = $crate::store::to_i64(before_ms);
            let mut tx = self.pool.begin().await?;
            sqlx::query(PURGE_FAILURES)
                .bind(before)
                .execute(&mut *tx)
                .await?;
            let purged = sqlx::query(PURGE_COMMANDS)
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(purged)
        }
    };
}
pub(super) use queue_upkeep;

/// `next_due` for backends where any daemon may claim any due row.
macro_rules! next_due {
    () => {
        pub(in crate::store) async fn next_due(
            &self,
            _owner: &str,
        ) -> Result<Option<std::time::Duration>, $crate::store::StoreError> {
            let next: Option<i64> = sqlx::query_scalar(NEXT_DUE).fetch_one(&self.pool).await?;
            Ok(next.map(|ms| std::time::Duration::from_millis($crate::store::to_u64(ms))))
        }
    };
}
pub(super) use next_due;

/// `take_unpublished` where one statement both takes and marks the rows
/// (`UPDATE … RETURNING`).
macro_rules! take_unpublished_returning {
    () => {
        pub(in crate::store) async fn take_unpublished(
            &self,
            before_ms: u64,
            now_ms: u64,
        ) -> Result<
            (
                Vec<$crate::store::CommandState>,
                Vec<$crate::store::UnpublishedEvent>,
            ),
            $crate::store::StoreError,
        > {
            use $crate::store::{UnpublishedEvent, to_i64};
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(TAKE_UNPUBLISHED_REPORTS)
                .bind(to_i64(now_ms))
                .bind(to_i64(before_ms))
                .fetch_all(&mut *tx)
                .await?;
            let mut reports = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut state = $crate::store::rows::command_state(row)?;
                state.causes = failures(&mut tx, &state.package, &state.id).await?;
                reports.push(state);
            }
            let events = sqlx::query_as(TAKE_UNPUBLISHED_EVENTS)
                .bind(to_i64(now_ms))
                .bind(to_i64(before_ms))
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|(package, id, target, event)| UnpublishedEvent {
                    package,
                    id,
                    target,
                    event,
                })
                .collect();
            tx.commit().await?;
            Ok((reports, events))
        }
    };
}
pub(super) use take_unpublished_returning;

/// `purge_receipts`: forgetting receipts of sends past the replay window.
macro_rules! purge_receipts {
    () => {
        pub(in crate::store) async fn purge_receipts(
            &self,
            before_ms: u64,
        ) -> Result<u64, $crate::store::StoreError> {
            Ok(sqlx::query(PURGE)
                .bind($crate::store::to_i64(before_ms))
                .execute(&self.pool)
                .await?
                .rows_affected())
        }
    };
}
pub(super) use purge_receipts;

/// A browser's receipt recorded in a subscription's health, and the health
/// of a package's subscriptions read back.
macro_rules! health_reads {
    () => {
        pub(in crate::store) async fn record_receipt_health(
            &self,
            package: &str,
            subscription: &str,
            user: &str,
            kind: &str,
            at_ms: u64,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(RECEIPT)
                .bind(package)
                .bind(subscription)
                .bind(user)
                .bind($crate::store::to_i64(at_ms))
                .bind(kind)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        pub(in crate::store) async fn health(
            &self,
            package: &str,
            subscriptions: &[String],
        ) -> Result<Vec<$crate::store::SubscriptionHealth>, $crate::store::StoreError> {
            use $crate::store::subscription_health::{HealthColumns, from_row};
            if subscriptions.is_empty() {
                return Ok(Vec::new());
            }
            let mut q = sqlx::QueryBuilder::<Db>::new(SELECT);
            q.push_bind(package).push(SUBSCRIPTION_IN);
            let mut list = q.separated(", ");
            for s in subscriptions {
                list.push_bind(s);
            }
            q.push(")");
            let rows: Vec<HealthColumns> = q.build_query_as().fetch_all(&self.pool).await?;
            Ok(rows.into_iter().map(from_row).collect())
        }
    };
}
pub(super) use health_reads;

/// `record_refusal` where one statement records the refusal and answers
/// since when the subscription has been refused (`RETURNING`).
macro_rules! record_refusal_returning {
    () => {
        pub(in crate::store) async fn record_refusal(
            &self,
            event: &$crate::store::HealthEvent,
            counted: bool,
        ) -> Result<Option<u64>, $crate::store::StoreError> {
            use $crate::store::{HealthOutcome, RUN_GAP_MS, to_i64, to_u64};
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
                .await?;
            Ok(since.map(to_u64))
        }
    };
}
pub(super) use record_refusal_returning;

/// `claim` where one statement both picks and leases the due rows
/// (`UPDATE … RETURNING`); `tried` is the backend's reading of `Tried`.
macro_rules! claim_returning {
    () => {
        pub(in crate::store) async fn claim(
            &self,
            owner: &str,
            limit: usize,
        ) -> Result<Vec<$crate::store::Claimed>, $crate::store::StoreError> {
            use $crate::store::{LEASE, held_by, millis};
            let rows = sqlx::query(CLAIM)
                .bind(millis(LEASE))
                .bind(owner)
                .bind(held_by(owner))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
            let mut claimed = rows
                .iter()
                .map(|row| $crate::store::rows::claimed(row, tried))
                .collect::<Result<Vec<_>, _>>()?;
            // RETURNING gives no order; keep the queue's.
            claimed.sort_by_key(|c| c.seq);
            Ok(claimed)
        }
    };
}
pub(super) use claim_returning;

/// `take_receipt` where the statement answers how often the receipt was
/// seen before (`RETURNING`).
macro_rules! take_receipt_returning {
    () => {
        pub(in crate::store) async fn take_receipt(
            &self,
            package: &str,
            tag: &str,
            kind: &str,
            sent_ms: u64,
            command_id: &str,
        ) -> Result<$crate::store::Taken, $crate::store::StoreError> {
            let (replays, taken_by): (i32, Option<String>) = sqlx::query_as(TAKE)
                .bind(package)
                .bind(tag)
                .bind(kind)
                .bind($crate::store::to_i64(sent_ms))
                .bind(command_id)
                .fetch_one(&self.pool)
                .await?;
            Ok($crate::store::Taken::of(
                i64::from(replays),
                taken_by.as_deref(),
                command_id,
            ))
        }
    };
}
pub(super) use take_receipt_returning;

/// `failures`: a send's causes and their counts (failures for good, and
/// retried attempts under `retry:`), on `$conn`.
macro_rules! failures {
    ($conn:ty) => {
        async fn failures(
            conn: &mut $conn,
            package: &str,
            id: &str,
        ) -> Result<std::collections::BTreeMap<String, u64>, $crate::store::StoreError> {
            let rows: Vec<(String, i64)> = sqlx::query_as(FAILURES)
                .bind(package)
                .bind(id)
                .fetch_all(&mut *conn)
                .await?;
            Ok(rows
                .into_iter()
                .map(|(c, n)| (c, $crate::store::to_u64(n)))
                .collect())
        }
    };
}
pub(super) use failures;

/// `endpoint_active_for_others`: whether another user of the package has
/// the endpoint active, on `$conn` (backends whose plain comparison is
/// already exact).
macro_rules! endpoint_active_for_others {
    ($conn:ty) => {
        async fn endpoint_active_for_others(
            conn: &mut $conn,
            package: &$crate::model::Package,
            user: &$crate::model::User,
            endpoint: &str,
        ) -> Result<bool, $crate::store::StoreError> {
            Ok(sqlx::query_scalar(ENDPOINT_ACTIVE_FOR_OTHERS)
                .bind(package.as_str())
                .bind(endpoint)
                .bind(user.as_str())
                .fetch_one(conn)
                .await?)
        }
    };
}
pub(super) use endpoint_active_for_others;

/// One statement writing `$chunk` of merged health rows: the backend's
/// `INSERT_HEALTH` head, a row of values each, its `UPDATE` tail;
/// `$failures` turns a row's count into the column's type.
macro_rules! health_upsert {
    ($chunk:expr, $failures:expr) => {{
        let mut q = sqlx::QueryBuilder::<Db>::new(INSERT_HEALTH);
        q.push_values($chunk, |mut b, row| {
            b.push_bind(row.package)
                .push_bind(row.subscription)
                .push_bind(row.user)
                .push_bind(row.origin)
                .push_bind(row.delivered_at)
                .push_bind(row.failed_at)
                .push_bind(row.failure)
                .push_bind($failures(row.failures));
        });
        q.push(UPDATE);
        q
    }};
}
pub(super) use health_upsert;

/// `record_health` in statements of at most 1,000 rows, each on its own
/// (a batch is a record for people to read: no transaction needed).
macro_rules! record_health_by_thousands {
    ($failures:expr) => {
        pub(in crate::store) async fn record_health(
            &self,
            events: &[$crate::store::HealthEvent],
        ) -> Result<(), $crate::store::StoreError> {
            let rows = $crate::store::subscription_health::merge(events);
            for chunk in rows.chunks(1000) {
                let mut q = super::super::shared::health_upsert!(chunk, $failures);
                q.build().execute(&self.pool).await?;
            }
            Ok(())
        }
    };
}
pub(super) use record_health_by_thousands;

//! The MariaDB/MySQL statements of the delivery queue.
//!
//! Neither server has `UPDATE … RETURNING`, so a claim is a transaction:
//! lock the rows to take (`FOR UPDATE SKIP LOCKED`: rows another daemon is
//! claiming are passed over, not waited for), then move their `NextAt` a
//! lease ahead on the database's clock and mark them as ours. Settling locks
//! the batch's rows still ours in `Seq` order, then removes or reschedules
//! them with one statement each, and updates the commands in key order, so
//! two daemons settling at once take their locks in the same order.
//!
//! Round trips are what a stream of small sends pays for here, so a batch
//! of sends is recorded, and a batch of settlements counted and reported,
//! with a few statements for the whole batch rather than a few per send;
//! and statements built from a list come in a few padded shapes that stay
//! prepared (see `shape`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::mysql::MySqlRow;
use sqlx::{MySql as Db, MySqlConnection, QueryBuilder, Row};

use super::{DUPLICATE_KEY, MySql, active, error_number, exact};
use crate::store::queue::{
    Claimed, CommandState, Enqueued, MessageRow, NewSend, Published, QueuedMessage, Recipients,
    Settled, Settlement, Tally, UnpublishedEvent, tally,
};
use crate::store::{HOLD, LEASE, StoreError, held_by, millis, to_i64, to_u64};

/// Milliseconds since the epoch on the database's clock, whatever the
/// session's time zone (`UNIX_TIMESTAMP(NOW())` would read a local time
/// twice in the hour a clock goes back).
macro_rules! now_ms {
    () => {
        "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(3)) DIV 1000 AS SIGNED)"
    };
}

/// Removes a command with the same id that is older than the
/// de-duplication window and finished, so the new one can take its place; a
/// command that is not is left alone, and the insert below then finds it.
const REMOVE_REPLACEABLE: &str = "\
    DELETE FROM axion_push_command WHERE Package = ? AND Id = ? AND AcceptedAt < ? \
        AND Pending = 0";

const CLEAR_FAILURES: &str =
    "DELETE FROM axion_push_command_failure WHERE Package = ? AND CommandId = ?";

/// Fails with a duplicate key (1062) when the id is taken: by a command
/// within the window, or by another daemon recording the same send this
/// very moment (the insert waits for its transaction, then fails).
const INSERT_COMMAND: &str = "\
    INSERT INTO axion_push_command \
        (Package, Id, Target, AcceptedAt, ExpiresAt, Payload, Ttl, Urgency, Topic, Members, \
         Digest, Event, EventAt) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The event of an earlier command, while the broker has not acknowledged it.
const UNPUBLISHED_EVENT: &str =
    "SELECT Event FROM axion_push_command WHERE Package = ? AND Id = ? AND Event IS NOT NULL";

/// The send a redelivered message without an id was recorded as, if any.
const SAME_DIGEST: &str = "\
    SELECT Id FROM axion_push_command \
    WHERE Package = ? AND Digest = ? AND AcceptedAt >= ? \
    ORDER BY AcceptedAt DESC LIMIT 1";

/// One delivery per active subscription, held for the recording daemon.
const ENQUEUE_USER: &str = concat!(
    "INSERT INTO axion_push_delivery \
        (Package, CommandId, User, Endpoint, KeysP256dh, KeysAuth, NextAt, LeasedBy) \
     SELECT ?, ?, ?, Endpoint, KeysP256dh, KeysAuth, ",
    now_ms!(),
    " + ?, ? FROM def_notify_push_subscription WHERE ",
    exact!("Package"),
    " AND ",
    exact!("User"),
    " AND ",
    active!()
);

/// The same for every member of a group. `s.User = m.User` compares under
/// the member table's `utf8mb4_bin` (a binary collation wins over the
/// other column's), so a member reaches their own rows only.
const ENQUEUE_GROUP: &str = concat!(
    "INSERT INTO axion_push_delivery \
        (Package, CommandId, User, Endpoint, KeysP256dh, KeysAuth, NextAt, LeasedBy) \
     SELECT ?, ?, m.User, s.Endpoint, s.KeysP256dh, s.KeysAuth, ",
    now_ms!(),
    " + ?, ? \
     FROM axion_push_group_member m \
     JOIN def_notify_push_subscription s ON s.User = m.User AND s.Package = m.Package \
     WHERE m.Package = ? AND m.GroupName = ? AND (s.Active IS NULL OR CAST(s.Active AS BINARY) = 'Y')"
);

/// With no delivery, the final report is due at once. (MySQL assigns left
/// to right; none of these reads a column assigned before it.)
const SET_COUNTS: &str = "\
    UPDATE axion_push_command SET Subscriptions = ?, Untried = ?, Pending = ?, \
        Reported = CASE WHEN ? = 0 THEN 2 ELSE 0 END, \
        ReportedAt = CASE WHEN ? = 0 THEN AcceptedAt END \
    WHERE Package = ? AND Id = ?";

const STATE: &str = "\
    SELECT Package, Id, Target, Members, Subscriptions, Pending, Delivered, Failed, \
        Deactivated, Expired \
    FROM axion_push_command WHERE Package = ? AND Id = ?";

const FAILURES: &str = "\
    SELECT Cause, Count FROM axion_push_command_failure WHERE Package = ? AND CommandId = ? \
    ORDER BY Cause";

/// A claim's rows, oldest first: those due, straight from the `(NextAt)`
/// index, and those held for the claiming daemon and not due yet, from the
/// `(LeasedBy, NextAt)` index, after the last it took (see
/// [`ClaimCursors`]). Reading in index order with a `LIMIT` locks only the
/// rows taken.
macro_rules! claim {
    ($where:expr, $lock:literal) => {
        concat!(
            "SELECT Seq, Package, CommandId, User, Endpoint, KeysP256dh, KeysAuth, Attempts, Tried, \
                NextAt \
             FROM axion_push_delivery WHERE ",
            $where,
            " ORDER BY NextAt, Seq LIMIT ? ",
            $lock
        )
    };
}
/// Held rows after `(NextAt, Seq)` = `(?, ?)`: the key is the index's own
/// (InnoDB appends the primary key), so the scan starts there.
macro_rules! held_after {
    () => {
        concat!(
            "LeasedBy = ? AND NextAt > ",
            now_ms!(),
            " AND (NextAt > ? OR (NextAt = ? AND Seq > ?))"
        )
    };
}
const CLAIM_DUE: &str = claim!(concat!("NextAt <= ", now_ms!()), "FOR UPDATE SKIP LOCKED");
const CLAIM_HELD: &str = claim!(held_after!(), "FOR UPDATE SKIP LOCKED");
/// The same on a server without `SKIP LOCKED`: claims wait for each other.
const CLAIM_DUE_WAITING: &str = claim!(concat!("NextAt <= ", now_ms!()), "FOR UPDATE");
const CLAIM_HELD_WAITING: &str = claim!(held_after!(), "FOR UPDATE");

const NEXT_DUE: &str = concat!(
    "SELECT MIN(NextAt) - ",
    now_ms!(),
    " FROM axion_push_delivery"
);
const PENDING: &str = "SELECT COUNT(*) FROM axion_push_delivery";

const RELEASE: &str = concat!(
    "UPDATE axion_push_delivery SET NextAt = ",
    now_ms!(),
    ", LeasedBy = NULL WHERE LeasedBy IN (?, ?)"
);

const DEACTIVATE_GONE: &str = concat!(
    "UPDATE def_notify_push_subscription SET Active = 'N' WHERE ",
    exact!("User"),
    " AND ",
    exact!("Package"),
    " AND ",
    exact!("Endpoint"),
    " AND ",
    active!()
);

/// (The count twice: `VALUES()` is deprecated in MySQL.)
const COUNT_FAILURE: &str = "\
    INSERT INTO axion_push_command_failure (Package, CommandId, Cause, Count) \
    VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE Count = Count + ?";

/// The commands whose next result is due: every delivery tried once (the
/// first result), or none left in the queue (the final one). Followed by
/// the (package, id) list and the condition.
const DUE_REPORTS: &str = "\
    SELECT Package, Id, Target, Members, Subscriptions, Pending, Delivered, Failed, \
        Deactivated, Expired \
    FROM axion_push_command WHERE ";

/// The broker acknowledged report `?` (1 first, 2 final); once every due
/// report is acknowledged nothing is left to publish again. `ReportedAt`
/// first: MySQL assigns left to right.
/// Reports handed to the broker before `?` and still not acknowledged,
/// locked to be marked as handed again now: another daemon taking them at
/// the same moment skips them (or, without `SKIP LOCKED`, waits and then
/// finds them taken), so they are not republished twice.
const UNPUBLISHED_REPORTS: &str = "\
    SELECT Package, Id, Target, Members, Subscriptions, Pending, Delivered, Failed, \
        Deactivated, Expired \
    FROM axion_push_command WHERE ReportedAt < ? ORDER BY Package, Id FOR UPDATE SKIP LOCKED";
const UNPUBLISHED_REPORTS_WAITING: &str = "\
    SELECT Package, Id, Target, Members, Subscriptions, Pending, Delivered, Failed, \
        Deactivated, Expired \
    FROM axion_push_command WHERE ReportedAt < ? ORDER BY Package, Id FOR UPDATE";
const UNPUBLISHED_EVENTS: &str = "\
    SELECT Package, Id, Target, Event FROM axion_push_command \
    WHERE EventAt < ? ORDER BY Package, Id FOR UPDATE SKIP LOCKED";
const UNPUBLISHED_EVENTS_WAITING: &str = "\
    SELECT Package, Id, Target, Event FROM axion_push_command \
    WHERE EventAt < ? ORDER BY Package, Id FOR UPDATE";

/// Finished and published: these only keep their ids for the
/// de-duplication window.
const PURGE_FAILURES: &str = "\
    DELETE f FROM axion_push_command_failure f \
    JOIN axion_push_command c ON c.Package = f.Package AND c.Id = f.CommandId \
    WHERE c.AcceptedAt < ? AND c.Pending <= 0 AND c.ReportedAt IS NULL AND c.EventAt IS NULL";

const PURGE_COMMANDS: &str = "\
    DELETE FROM axion_push_command WHERE AcceptedAt < ? AND Pending <= 0 \
        AND ReportedAt IS NULL AND EventAt IS NULL";

/// Rows per statement built from a list: a prepared statement takes at
/// most 65,535 parameters. Such statements are not cached per connection,
/// their text changes with the list's length.
const CHUNK: usize = 1000;

impl MySql {
    super::super::shared::queue_upkeep!();
    super::super::shared::next_due!();

    /// Records `sends` (see `Store::enqueue_many`): together, a few
    /// statements for the whole batch, when each is a send to a user under
    /// a fresh id; otherwise one after the other.
    pub(in crate::store) async fn enqueue_many(
        &self,
        sends: &[NewSend<'_>],
        owner: &str,
    ) -> Result<Vec<Enqueued>, StoreError> {
        // One transaction, one commit (and one redo log flush) for the
        // batch.
        let mut tx = self.pool.begin().await?;
        match record_together(&mut tx, sends, owner).await {
            Ok(Some(enqueued)) => {
                tx.commit().await?;
                return Ok(enqueued);
            }
            // Nothing written yet.
            Ok(None) => {}
            // Another daemon recorded one of these ids since they were
            // looked up: start again, one by one.
            Err(e) if error_number(&e) == Some(DUPLICATE_KEY) => {
                tx.rollback().await?;
                tx = self.pool.begin().await?;
            }
            Err(e) => return Err(e.into()),
        }
        // A duplicate id fails its own insert only, which leaves the
        // transaction going.
        let mut enqueued = Vec::with_capacity(sends.len());
        for send in sends {
            enqueued.push(record_in(&mut tx, send, owner).await?);
        }
        tx.commit().await?;
        Ok(enqueued)
    }

    /// Records a send. The id is checked by inserting it: a duplicate key
    /// means the id is taken, and leaves the transaction open to read the
    /// earlier command. Two daemons recording the same id at once end with
    /// one command: the second insert waits for the first transaction and
    /// then fails on its key.
    pub(in crate::store) async fn enqueue(
        &self,
        send: &NewSend<'_>,
        owner: &str,
    ) -> Result<Enqueued, StoreError> {
        self.record(send, owner).await.map_err(StoreError::from)
    }

    async fn record(&self, send: &NewSend<'_>, owner: &str) -> Result<Enqueued, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let enqueued = record_in(&mut tx, send, owner).await?;
        // A duplicate changed nothing: rolling back says so.
        match enqueued {
            Enqueued::New { .. } => tx.commit().await?,
            Enqueued::Duplicate { .. } => tx.rollback().await?,
        }
        Ok(enqueued)
    }

    /// The messages of the sends `keys` names (package, id), in one
    /// statement; a send that is gone is missing from the answer.
    pub(in crate::store) async fn queued_messages(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<(String, String, QueuedMessage)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Db>::new(
            "SELECT Package, Id, Payload, Ttl, Urgency, Topic, ExpiresAt FROM axion_push_command \
             WHERE ",
        );
        let keys: Vec<(&str, &str)> = keys.iter().map(|(p, i)| (p.as_str(), i.as_str())).collect();
        push_keys(&mut q, "Id", &keys);
        let rows: Vec<MessageRow> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(QueuedMessage::from_row).collect())
    }

    /// Due rows first, so that the oldest go out first; then the rows held
    /// for `owner`. Except while the held rows alone fill claim after claim
    /// (a large fan-out, a burst of sends): the search for due rows is
    /// then made once every [`DUE_EVERY`] only. InnoDB keeps the index
    /// entry a claim moves, and a row's entry once it is deleted, until its
    /// purge removes them, and a scan of the due range walks over every
    /// such entry not yet purged — under load, most of a fan-out's rows:
    /// over one send to 10,000 subscriptions a search that found nothing
    /// due went from 0.1 to 15 ms, and the claims were the server's
    /// largest cost. Held rows are searched from where the last claim
    /// stopped for the same reason. A held row it steps over (one recorded
    /// out of order) is due within `HOLD`, and taken then.
    pub(in crate::store) async fn claim(
        &self,
        owner: &str,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (due, held) = if self.skip_locked {
            (CLAIM_DUE, CLAIM_HELD)
        } else {
            (CLAIM_DUE_WAITING, CLAIM_HELD_WAITING)
        };
        let cursor = self.claim_cursors.get(owner);
        let due_first = cursor
            .due_searched
            .is_none_or(|at| at.elapsed() >= DUE_EVERY);
        let mut tx = self.pool.begin().await?;
        let mut rows = Vec::with_capacity(limit);
        if due_first {
            rows = sqlx::query(due)
                .bind(to_i64(limit as u64))
                .fetch_all(&mut *tx)
                .await?;
        }
        let mut held_after = cursor.held_after;
        if rows.len() < limit {
            let (next_at, seq) = cursor.held_after;
            let more = sqlx::query(held)
                .bind(held_by(owner))
                .bind(next_at)
                .bind(next_at)
                .bind(seq)
                .bind(to_i64((limit - rows.len()) as u64))
                .fetch_all(&mut *tx)
                .await?;
            if let Some(last) = more.last() {
                held_after = (last.try_get("NextAt")?, last.try_get("Seq")?);
            }
            rows.extend(more);
        }
        let due_searched = due_first || rows.len() < limit;
        if !due_first && rows.len() < limit {
            let more = sqlx::query(due)
                .bind(to_i64((limit - rows.len()) as u64))
                .fetch_all(&mut *tx)
                .await?;
            rows.extend(more);
        }
        let mut claimed = rows
            .iter()
            .map(|row| crate::store::rows::claimed(row, tried))
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|c| c.seq);
        // A held row due by the time the second statement ran is in both.
        claimed.dedup_by_key(|c| c.seq);
        if claimed.is_empty() {
            tx.rollback().await?;
        } else {
            for chunk in claimed.chunks(CHUNK) {
                let mut q = QueryBuilder::<Db>::new(concat!(
                    "UPDATE axion_push_delivery SET NextAt = ",
                    now_ms!(),
                    " + "
                ));
                q.push_bind(millis(LEASE))
                    .push(", LeasedBy = ")
                    .push_bind(owner)
                    .push(" WHERE Seq IN (");
                push_seqs(&mut q, chunk.iter().map(|c| c.seq));
                q.push(")");
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        self.claim_cursors.set(
            owner,
            ClaimCursor {
                held_after,
                due_searched: if due_searched {
                    Some(std::time::Instant::now())
                } else {
                    cursor.due_searched
                },
            },
        );
        Ok(claimed)
    }

    pub(in crate::store) async fn renew(
        &self,
        owner: &str,
        seqs: &[i64],
    ) -> Result<u64, StoreError> {
        let mut renewed = 0;
        for chunk in seqs.chunks(CHUNK) {
            let mut q = QueryBuilder::<Db>::new(concat!(
                "UPDATE axion_push_delivery SET NextAt = ",
                now_ms!(),
                " + "
            ));
            q.push_bind(millis(LEASE))
                .push(" WHERE LeasedBy = ")
                .push_bind(owner)
                .push(" AND Seq IN (");
            push_seqs(&mut q, chunk.iter().copied());
            q.push(")");
            renewed += q.build().execute(&self.pool).await?.rows_affected();
        }
        Ok(renewed)
    }

    pub(in crate::store) async fn settle(
        &self,
        owner: &str,
        batch: &[Settlement],
        now_ms: u64,
    ) -> Result<Vec<CommandState>, StoreError> {
        let mut seqs: Vec<i64> = batch.iter().map(|s| s.claimed.seq).collect();
        // Rows in one order for every daemon.
        seqs.sort_unstable();
        seqs.dedup();
        let mut tx = self.pool.begin().await?;
        // Locked through the primary key, so in `Seq` order.
        let mut ours: HashSet<i64> = HashSet::with_capacity(batch.len());
        for chunk in seqs.chunks(CHUNK) {
            let mut q = QueryBuilder::<Db>::new(
                "SELECT Seq FROM axion_push_delivery FORCE INDEX (PRIMARY) WHERE LeasedBy = ",
            );
            q.push_bind(owner).push(" AND Seq IN (");
            push_seqs(&mut q, chunk.iter().copied());
            q.push(") ORDER BY Seq FOR UPDATE");
            let locked: Vec<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?;
            ours.extend(locked);
        }
        let mut finished: Vec<i64> = Vec::new();
        // (Seq, delay in ms, 1 if a request was made)
        let mut again: Vec<(i64, i64, i64)> = Vec::new();
        for s in batch.iter().filter(|s| ours.contains(&s.claimed.seq)) {
            match s.settled {
                Settled::Retry { after, .. } => again.push((s.claimed.seq, millis(after), 1)),
                Settled::Deferred { after, .. } => again.push((s.claimed.seq, millis(after), 0)),
                _ => finished.push(s.claimed.seq),
            }
        }
        finished.sort_unstable();
        again.sort_unstable();
        for chunk in finished.chunks(CHUNK) {
            let mut q = QueryBuilder::<Db>::new("DELETE FROM axion_push_delivery WHERE Seq IN (");
            push_seqs(&mut q, chunk.iter().copied());
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        for chunk in again.chunks(CHUNK) {
            // A derived table of (Seq, Delay, Attempted), one row each,
            // cast so that every server types the parameters as integers.
            // Padded with rows of `Seq` 0, which no delivery has (see
            // `shape`).
            let mut q = QueryBuilder::<Db>::new("UPDATE axion_push_delivery d JOIN (");
            let padding = std::iter::repeat_n((0, 0, 0), shape(chunk.len()) - chunk.len());
            for (n, (seq, after, attempted)) in chunk.iter().copied().chain(padding).enumerate() {
                let (seq_as, delay_as, attempted_as) = if n == 0 {
                    (" AS Seq", " AS Delay", " AS Attempted")
                } else {
                    ("", "", "")
                };
                q.push(if n == 0 {
                    "SELECT CAST("
                } else {
                    " UNION ALL SELECT CAST("
                });
                q.push_bind(seq)
                    .push(" AS SIGNED)")
                    .push(seq_as)
                    .push(", CAST(");
                q.push_bind(after)
                    .push(" AS SIGNED)")
                    .push(delay_as)
                    .push(", CAST(");
                q.push_bind(attempted)
                    .push(" AS SIGNED)")
                    .push(attempted_as);
            }
            q.push(concat!(
                ") v ON d.Seq = v.Seq SET d.NextAt = ",
                now_ms!(),
                " + v.Delay, d.LeasedBy = NULL, d.Tried = 1, \
                 d.Attempts = d.Attempts + v.Attempted"
            ));
            q.build().execute(&mut *tx).await?;
        }
        let (tallies, mut gone) = tally(batch, &ours);
        // Axion's rows in key order too: two daemons may settle deliveries
        // to the same browsers.
        gone.sort_by(|a, b| {
            (&a.user, &a.package, &a.endpoint).cmp(&(&b.user, &b.package, &b.endpoint))
        });
        for claimed in gone {
            sqlx::query(DEACTIVATE_GONE)
                .bind(&claimed.user)
                .bind(&claimed.user)
                .bind(&claimed.package)
                .bind(&claimed.package)
                .bind(&claimed.endpoint)
                .bind(&claimed.endpoint)
                .execute(&mut *tx)
                .await?;
        }
        let tallies: Vec<((&str, &str), Tally)> = tallies.into_iter().collect();
        // Each step one statement for the whole batch, not one per send: a
        // stream of small sends settles a few of them at a time, and each
        // statement is a round trip.
        for chunk in tallies.chunks(CHUNK) {
            count_settled(&mut tx, chunk).await?;
        }
        for ((package, id), tally) in &tallies {
            for (cause, count) in &tally.causes {
                sqlx::query(COUNT_FAILURE)
                    .bind(*package)
                    .bind(*id)
                    .bind(cause)
                    .bind(*count)
                    .bind(*count)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let keys: Vec<(&str, &str)> = tallies.iter().map(|(key, _)| *key).collect();
        let mut due = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let mut q = QueryBuilder::<Db>::new(DUE_REPORTS);
            push_keys(&mut q, "Id", chunk);
            q.push(
                " AND ((Untried <= 0 AND Reported = 0) OR (Pending <= 0 AND Reported < 2)) \
                 ORDER BY Package, Id",
            );
            let rows = q.build().fetch_all(&mut *tx).await?;
            for row in &rows {
                due.push(crate::store::rows::command_state(row)?);
            }
        }
        let due_keys: Vec<(&str, &str)> = due
            .iter()
            .map(|d| (d.package.as_str(), d.id.as_str()))
            .collect();
        // Causes only of the sends with something not delivered: most
        // reports have none, and this is a round trip.
        let with_causes: Vec<(&str, &str)> = due
            .iter()
            .filter(|d| d.may_have_causes())
            .map(|d| (d.package.as_str(), d.id.as_str()))
            .collect();
        let mut causes = failures_of(&mut tx, &with_causes).await?;
        drop(with_causes);
        for chunk in due_keys.chunks(CHUNK) {
            let mut q = QueryBuilder::<Db>::new(
                "UPDATE axion_push_command SET Reported = CASE WHEN Pending <= 0 THEN 2 ELSE 1 END, \
                 ReportedAt = ",
            );
            q.push_bind(to_i64(now_ms)).push(" WHERE ");
            push_keys(&mut q, "Id", chunk);
            q.build().execute(&mut *tx).await?;
        }
        drop(due_keys);
        for state in &mut due {
            if let Some(failures) = causes.remove(&(state.package.clone(), state.id.clone())) {
                state.causes = failures;
            }
        }
        tx.commit().await?;
        Ok(due)
    }

    /// Three statements at most for a whole batch: the reports first
    /// acknowledged, those acknowledged as final (each command at its
    /// highest level), the events.
    pub(in crate::store) async fn mark_published(
        &self,
        published: &[Published],
    ) -> Result<(), StoreError> {
        let (reports, events) = crate::store::queue::published_by_send(published);
        let mut tx = self.pool.begin().await?;
        for level in [1_u8, 2] {
            let keys: Vec<(&str, &str)> = reports
                .iter()
                .filter(|(_, l)| **l == level)
                .map(|(key, _)| *key)
                .collect();
            if keys.is_empty() {
                continue;
            }
            let mut q = QueryBuilder::<Db>::new(
                "UPDATE axion_push_command \
                 SET ReportedAt = CASE WHEN GREATEST(Published, ",
            );
            q.push_bind(i64::from(level))
                .push(
                    ") >= Reported THEN NULL ELSE ReportedAt END, Published = GREATEST(Published, ",
                )
                .push_bind(i64::from(level))
                .push(") WHERE ");
            push_keys(&mut q, "Id", &keys);
            q.build().execute(&mut *tx).await?;
        }
        if !events.is_empty() {
            let keys: Vec<(&str, &str)> = events.into_iter().collect();
            let mut q = QueryBuilder::<Db>::new(
                "UPDATE axion_push_command SET Event = NULL, EventAt = NULL WHERE ",
            );
            push_keys(&mut q, "Id", &keys);
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await.map_err(StoreError::from)
    }

    pub(in crate::store) async fn take_unpublished(
        &self,
        before_ms: u64,
        now_ms: u64,
    ) -> Result<(Vec<CommandState>, Vec<UnpublishedEvent>), StoreError> {
        let (reports_sql, events_sql) = if self.skip_locked {
            (UNPUBLISHED_REPORTS, UNPUBLISHED_EVENTS)
        } else {
            (UNPUBLISHED_REPORTS_WAITING, UNPUBLISHED_EVENTS_WAITING)
        };
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(reports_sql)
            .bind(to_i64(before_ms))
            .fetch_all(&mut *tx)
            .await?;
        let mut reports = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut state = crate::store::rows::command_state(row)?;
            state.causes = failures(&mut tx, &state.package, &state.id).await?;
            reports.push(state);
        }
        let keys: Vec<(&str, &str)> = reports
            .iter()
            .map(|r| (r.package.as_str(), r.id.as_str()))
            .collect();
        mark_handed(&mut tx, "ReportedAt", &keys, now_ms).await?;
        let events: Vec<UnpublishedEvent> = sqlx::query_as(events_sql)
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
        let keys: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.package.as_str(), e.id.as_str()))
            .collect();
        mark_handed(&mut tx, "EventAt", &keys, now_ms).await?;
        tx.commit().await?;
        Ok((reports, events))
    }
}

/// Sets `column` (`ReportedAt` or `EventAt`) to `now_ms` for the commands
/// `keys` names, which the transaction has locked.
async fn mark_handed(
    conn: &mut MySqlConnection,
    column: &'static str,
    keys: &[(&str, &str)],
    now_ms: u64,
) -> Result<(), StoreError> {
    for chunk in keys.chunks(CHUNK) {
        let mut q = QueryBuilder::<Db>::new(format!("UPDATE axion_push_command SET {column} = "));
        q.push_bind(to_i64(now_ms)).push(" WHERE ");
        push_keys(&mut q, "Id", chunk);
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The answer for a send seen before: the earlier one's progress, and its
/// event if the broker has not acknowledged that yet.
async fn duplicate(
    conn: &mut MySqlConnection,
    package: &str,
    id: &str,
) -> Result<Enqueued, sqlx::Error> {
    let earlier = match sqlx::query(STATE)
        .bind(package)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    {
        Some(row) => {
            let mut state = crate::store::rows::command_state(&row)
                .map_err(|e| sqlx::Error::Decode(e.into()))?;
            state.causes = failures(&mut *conn, package, id).await?;
            state
        }
        None => CommandState::default(),
    };
    let unpublished_event = sqlx::query_scalar(UNPUBLISHED_EVENT)
        .bind(package)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(Enqueued::Duplicate {
        earlier,
        unpublished_event,
    })
}

async fn failures(
    conn: &mut MySqlConnection,
    package: &str,
    id: &str,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(FAILURES)
        .bind(package)
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(|(c, n)| (c, to_u64(n))).collect())
}

/// Adds what a batch of settlements counted to its commands, in one
/// statement: a derived table of (package, id, counts), joined on the key.
async fn count_settled(
    conn: &mut MySqlConnection,
    tallies: &[((&str, &str), Tally)],
) -> Result<(), StoreError> {
    // Padded with rows of an empty package, which no command has (see
    // `shape`).
    let empty = Tally::default();
    let padding = std::iter::repeat_n((("", ""), &empty), shape(tallies.len()) - tallies.len());
    let mut q = QueryBuilder::<Db>::new("UPDATE axion_push_command c JOIN (");
    let rows = tallies.iter().map(|(key, t)| (*key, t)).chain(padding);
    for (n, ((package, id), t)) in rows.enumerate() {
        q.push(if n == 0 {
            "SELECT "
        } else {
            " UNION ALL SELECT "
        });
        q.push_bind(package);
        if n == 0 {
            q.push(" AS Package");
        }
        q.push(", ").push_bind(id);
        if n == 0 {
            q.push(" AS Id");
        }
        for (value, name) in [
            (t.tried, "Tried"),
            (t.settled, "Settled"),
            (t.delivered, "Delivered"),
            (t.failed, "Failed"),
            (t.deactivated, "Deactivated"),
            (t.expired, "Expired"),
        ] {
            // Cast, so that every server types the parameters as integers;
            // named in the first row, which names the derived table's
            // columns.
            q.push(", CAST(").push_bind(value).push(" AS SIGNED)");
            if n == 0 {
                q.push(" AS ").push(name);
            }
        }
    }
    q.push(
        ") v ON c.Package = v.Package AND c.Id = v.Id \
         SET c.Untried = c.Untried - v.Tried, c.Pending = c.Pending - v.Settled, \
             c.Delivered = c.Delivered + v.Delivered, c.Failed = c.Failed + v.Failed, \
             c.Deactivated = c.Deactivated + v.Deactivated, c.Expired = c.Expired + v.Expired",
    );
    q.build().execute(&mut *conn).await?;
    Ok(())
}

/// How often a claim searches for due rows first while the rows held for
/// its daemon fill every claim: retries and the rows of a daemon that died
/// wait this long at most behind a large fan-out.
const DUE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Where each claiming daemon of this process stands (see [`MySql::claim`]).
#[derive(Debug, Clone, Default)]
pub(super) struct ClaimCursors(Arc<Mutex<HashMap<String, ClaimCursor>>>);

#[derive(Debug, Clone, Copy)]
struct ClaimCursor {
    /// The key `(NextAt, Seq)` of the last held row taken.
    held_after: (i64, i64),
    /// When a claim last searched for due rows.
    due_searched: Option<std::time::Instant>,
}

impl Default for ClaimCursor {
    fn default() -> Self {
        ClaimCursor {
            held_after: (i64::MIN, i64::MIN),
            due_searched: None,
        }
    }
}

impl ClaimCursors {
    fn get(&self, owner: &str) -> ClaimCursor {
        let cursors = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cursors.get(owner).copied().unwrap_or_default()
    }

    fn set(&self, owner: &str, cursor: ClaimCursor) {
        let mut cursors = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cursors.insert(owner.to_owned(), cursor);
    }
}

/// The causes (failures, and retried attempts under `retry:`) of the
/// commands `keys` names, by command.
async fn failures_of(
    conn: &mut MySqlConnection,
    keys: &[(&str, &str)],
) -> Result<HashMap<(String, String), BTreeMap<String, u64>>, StoreError> {
    let mut causes: HashMap<(String, String), BTreeMap<String, u64>> = HashMap::new();
    for chunk in keys.chunks(CHUNK) {
        let mut q = QueryBuilder::<Db>::new(
            "SELECT Package, CommandId, Cause, Count FROM axion_push_command_failure \
             WHERE ",
        );
        push_keys(&mut q, "CommandId", chunk);
        let rows: Vec<(String, String, String, i64)> =
            q.build_query_as().fetch_all(&mut *conn).await?;
        for (package, id, cause, count) in rows {
            causes
                .entry((package, id))
                .or_default()
                .insert(cause, to_u64(count));
        }
    }
    Ok(causes)
}

/// How many entries a statement built from a list is written for: the
/// list's length rounded up to a power of two, at least 8; the rest is
/// padding that matches nothing more. So each such statement comes in a
/// few shapes, and every shape stays prepared in the connection's cache
/// (see `STATEMENT_CACHE`): a statement prepared anew costs a round trip
/// and a parse, and one closed a packet the server does not answer — which,
/// while the socket had Nagle's algorithm on (sqlx 0.9.0; see
/// `vendor/sqlx-core`), held the next statement back 40 ms, five times in
/// every settle.
fn shape(len: usize) -> usize {
    len.max(8).next_power_of_two()
}

/// `?, ?, …`: `seqs`, then the last again up to the list's `shape`.
fn push_seqs(q: &mut QueryBuilder<Db>, seqs: impl ExactSizeIterator<Item = i64>) {
    let len = seqs.len();
    let mut last = 0;
    let mut list = q.separated(", ");
    for seq in seqs {
        list.push_bind(seq);
        last = seq;
    }
    for _ in len..shape(len) {
        list.push_bind(last);
    }
}

/// `((Package = ? AND Id IN (?, …)) OR …)`: a condition matching the
/// (package, id) `keys`, grouped by package, with `id` naming the id
/// column. Not `(Package, Id) IN ((?, ?), …)`: MariaDB plans a list of row
/// constructors slowly (counting 256 commands by key took 27 ms that way,
/// 1.4 ms this way), and a batch's sends are nearly always of one package.
/// Each package's ids are padded to a `shape`, with the last id again.
fn push_keys(q: &mut QueryBuilder<Db>, id: &str, keys: &[(&str, &str)]) {
    let mut by_package: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (package, id) in keys {
        by_package.entry(package).or_default().push(id);
    }
    q.push("(");
    for (n, (package, ids)) in by_package.into_iter().enumerate() {
        if n > 0 {
            q.push(" OR ");
        }
        q.push("(Package = ")
            .push_bind(package.to_owned())
            .push(" AND ")
            .push(id)
            .push(" IN (");
        let padding = shape(ids.len()) - ids.len();
        let last = ids.last().copied().unwrap_or_default();
        let mut list = q.separated(", ");
        for id in ids.into_iter().chain(std::iter::repeat_n(last, padding)) {
            list.push_bind(id.to_owned());
        }
        q.push("))");
    }
    q.push(")");
}

/// Sends recorded together at most (the command stage's batch): their
/// statements stay far below the 65,535 parameters a prepared statement
/// takes.
const TOGETHER: usize = 256;

/// Records `sends` in four statements — whether any id is taken, every
/// delivery, how many each send got, every command — when they are sends
/// to users under ids not seen before and not redeliveries; `None`, having
/// written nothing, when one of them is not. A duplicate key error means
/// another daemon took one of the ids meanwhile: roll back.
async fn record_together(
    tx: &mut MySqlConnection,
    sends: &[NewSend<'_>],
    owner: &str,
) -> Result<Option<Vec<Enqueued>>, sqlx::Error> {
    let users: Option<Vec<&str>> = sends
        .iter()
        .map(|s| match s.recipients {
            Recipients::User(user) if !(s.redelivered && s.digest.is_some()) => Some(user.as_str()),
            _ => None,
        })
        .collect();
    let keys: Vec<(&str, &str)> = sends.iter().map(|s| (s.package.as_str(), s.id)).collect();
    let distinct: HashSet<&(&str, &str)> = keys.iter().collect();
    let Some(users) = users else {
        return Ok(None);
    };
    if sends.len() < 2 || sends.len() > TOGETHER || distinct.len() != keys.len() {
        return Ok(None);
    }
    // Taken ids (a duplicate, or a finished command to replace) are the
    // one-by-one path's business.
    let mut q = QueryBuilder::<Db>::new("SELECT COUNT(*) FROM axion_push_command WHERE ");
    push_keys(&mut q, "Id", &keys);
    let taken: i64 = q.build_query_scalar().fetch_one(&mut *tx).await?;
    if taken > 0 {
        return Ok(None);
    }
    let held = held_by(owner);
    // Deliveries in the order of the sends, as one by one: a user's sends
    // are tried in the order they came.
    let mut q = QueryBuilder::<Db>::new(
        "INSERT INTO axion_push_delivery \
            (Package, CommandId, User, Endpoint, KeysP256dh, KeysAuth, NextAt, LeasedBy) \
         SELECT v.Package, v.Id, v.User, s.Endpoint, s.KeysP256dh, s.KeysAuth, ",
    );
    q.push(now_ms!())
        .push(" + ")
        .push_bind(millis(HOLD))
        .push(", ")
        .push_bind(held.as_str())
        .push(" FROM (");
    // Padded (see `shape`) with rows numbered -1, left out below.
    let rows = sends
        .iter()
        .zip(&users)
        .enumerate()
        .map(|(n, (send, user))| (to_i64(n as u64), send.package.as_str(), send.id, *user))
        .chain(std::iter::repeat_n(
            (-1, "", "", ""),
            shape(sends.len()) - sends.len(),
        ));
    for (n, (number, package, id, user)) in rows.enumerate() {
        q.push(if n == 0 {
            "SELECT "
        } else {
            " UNION ALL SELECT "
        });
        q.push("CAST(").push_bind(number).push(" AS SIGNED)");
        q.push(if n == 0 { " AS N, " } else { ", " });
        q.push_bind(package);
        q.push(if n == 0 { " AS Package, " } else { ", " });
        q.push_bind(id);
        q.push(if n == 0 { " AS Id, " } else { ", " });
        q.push_bind(user);
        if n == 0 {
            q.push(" AS User");
        }
    }
    // The first comparisons find the rows through Axion's key, whatever
    // its collation; the binary ones make them exact.
    q.push(
        ") v JOIN def_notify_push_subscription s ON s.User = v.User AND s.Package = v.Package \
         WHERE v.N >= 0 \
           AND s.User = v.User COLLATE utf8mb4_bin AND s.Package = v.Package COLLATE utf8mb4_bin \
           AND (s.Active IS NULL OR CAST(s.Active AS BINARY) = 'Y') \
         ORDER BY v.N, s.Endpoint",
    );
    q.build().execute(&mut *tx).await?;
    // Counted through the lease index: these rows are held for this
    // daemon, like the few others it has recorded and not yet claimed.
    let mut q = QueryBuilder::<Db>::new(
        "SELECT Package, CommandId, COUNT(*) FROM axion_push_delivery WHERE LeasedBy = ",
    );
    q.push_bind(held.as_str()).push(" AND ");
    push_keys(&mut q, "CommandId", &keys);
    q.push(" GROUP BY Package, CommandId");
    let counted: Vec<(String, String, i64)> = q.build_query_as().fetch_all(&mut *tx).await?;
    let counts: HashMap<(String, String), i64> = counted
        .into_iter()
        .map(|(package, id, n)| ((package, id), n))
        .collect();
    let count_of = |send: &NewSend<'_>| -> i64 {
        counts
            .get(&(send.package.as_str().to_owned(), send.id.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    // With no delivery, the final report is due at once. From a derived
    // table rather than `VALUES`, so that it can be padded (see `shape`):
    // rows numbered -1 are left out.
    let mut q = QueryBuilder::<Db>::new(
        "INSERT INTO axion_push_command \
            (Package, Id, Target, AcceptedAt, ExpiresAt, Payload, Ttl, Urgency, Topic, Members, \
             Digest, Event, EventAt, Subscriptions, Untried, Pending, Reported, ReportedAt) \
         SELECT Package, Id, Target, AcceptedAt, ExpiresAt, Payload, Ttl, Urgency, Topic, \
             Members, Digest, Event, EventAt, Subscriptions, Untried, Pending, Reported, \
             ReportedAt \
         FROM (",
    );
    for n in 0..shape(sends.len()) {
        let first = n == 0;
        let name = |column: &'static str| if first { column } else { "" };
        q.push(if first {
            "SELECT "
        } else {
            " UNION ALL SELECT "
        });
        let Some(send) = sends.get(n) else {
            q.push("-1, '', '', '', 0, 0, '', 0, '', NULL, NULL, NULL, '', 0, 0, 0, 0, 0, NULL");
            continue;
        };
        let accepted = to_i64(send.accepted_ms);
        let queued = count_of(send);
        let int = |q: &mut QueryBuilder<Db>, value: i64, column: &'static str| {
            q.push(", CAST(")
                .push_bind(value)
                .push(" AS SIGNED)")
                .push(name(column));
        };
        q.push("CAST(")
            .push_bind(to_i64(n as u64))
            .push(" AS SIGNED)")
            .push(name(" AS N"));
        q.push(", ")
            .push_bind(send.package.as_str())
            .push(name(" AS Package"));
        q.push(", ").push_bind(send.id).push(name(" AS Id"));
        q.push(", ").push_bind(send.target).push(name(" AS Target"));
        int(&mut q, accepted, " AS AcceptedAt");
        int(
            &mut q,
            accepted.saturating_add(i64::from(send.ttl) * 1000),
            " AS ExpiresAt",
        );
        q.push(", ")
            .push_bind(send.payload)
            .push(name(" AS Payload"));
        int(&mut q, i64::from(send.ttl), " AS Ttl");
        q.push(", ")
            .push_bind(send.urgency)
            .push(name(" AS Urgency"));
        q.push(", ").push_bind(send.topic).push(name(" AS Topic"));
        q.push(", CAST(")
            .push_bind(send.members.map(to_i64))
            .push(" AS SIGNED)")
            .push(name(" AS Members"));
        q.push(", ").push_bind(send.digest).push(name(" AS Digest"));
        q.push(", ").push_bind(send.event).push(name(" AS Event"));
        int(&mut q, accepted, " AS EventAt");
        int(&mut q, queued, " AS Subscriptions");
        int(&mut q, queued, " AS Untried");
        int(&mut q, queued, " AS Pending");
        int(&mut q, if queued == 0 { 2 } else { 0 }, " AS Reported");
        q.push(", CAST(")
            .push_bind((queued == 0).then_some(accepted))
            .push(" AS SIGNED)")
            .push(name(" AS ReportedAt"));
    }
    q.push(") v WHERE N >= 0");
    q.build().execute(&mut *tx).await?;
    Ok(Some(
        sends
            .iter()
            .map(|send| Enqueued::New {
                subscriptions: to_u64(count_of(send)),
            })
            .collect(),
    ))
}

/// Records one send in `tx`, which the caller commits: a duplicate id
/// changes nothing.
async fn record_in(
    tx: &mut MySqlConnection,
    send: &NewSend<'_>,
    owner: &str,
) -> Result<Enqueued, sqlx::Error> {
    let package = send.package.as_str();
    let cutoff = to_i64(send.duplicate_after_ms);
    if let (true, Some(digest)) = (send.redelivered, send.digest) {
        let earlier: Option<String> = sqlx::query_scalar(SAME_DIGEST)
            .bind(package)
            .bind(digest)
            .bind(cutoff)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(id) = earlier {
            return duplicate(tx, package, &id).await;
        }
    }
    let replaced = sqlx::query(REMOVE_REPLACEABLE)
        .bind(package)
        .bind(send.id)
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if replaced > 0 {
        sqlx::query(CLEAR_FAILURES)
            .bind(package)
            .bind(send.id)
            .execute(&mut *tx)
            .await?;
    }
    let accepted = to_i64(send.accepted_ms);
    let expires = accepted.saturating_add(i64::from(send.ttl) * 1000);
    let inserted = sqlx::query(INSERT_COMMAND)
        .bind(package)
        .bind(send.id)
        .bind(send.target)
        .bind(accepted)
        .bind(expires)
        .bind(send.payload)
        .bind(i64::from(send.ttl))
        .bind(send.urgency)
        .bind(send.topic)
        .bind(send.members.map(to_i64))
        .bind(send.digest)
        .bind(send.event)
        .bind(accepted)
        .execute(&mut *tx)
        .await;
    match inserted {
        Err(e) if error_number(&e) == Some(DUPLICATE_KEY) => {
            // Only this statement failed; the transaction reads on.
            return duplicate(tx, package, send.id).await;
        }
        inserted => inserted?,
    };
    let hold = millis(HOLD);
    let held = held_by(owner);
    let queued = match send.recipients {
        Recipients::User(user) => sqlx::query(ENQUEUE_USER)
            .bind(package)
            .bind(send.id)
            .bind(user.as_str())
            .bind(hold)
            .bind(&held)
            .bind(package)
            .bind(package)
            .bind(user.as_str())
            .bind(user.as_str()),
        Recipients::Group(group) => sqlx::query(ENQUEUE_GROUP)
            .bind(package)
            .bind(send.id)
            .bind(hold)
            .bind(&held)
            .bind(package)
            .bind(group.as_str()),
    }
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let queued_i64 = to_i64(queued);
    sqlx::query(SET_COUNTS)
        .bind(queued_i64)
        .bind(queued_i64)
        .bind(queued_i64)
        .bind(queued_i64)
        .bind(queued_i64)
        .bind(package)
        .bind(send.id)
        .execute(&mut *tx)
        .await?;
    Ok(Enqueued::New {
        subscriptions: queued,
    })
}

/// `Tried` is an integer.
fn tried(row: &MySqlRow) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>("Tried")? != 0)
}

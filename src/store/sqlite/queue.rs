//! The SQLite statements of the delivery queue.
//!
//! A claim is one `UPDATE … RETURNING` that moves the rows' `NextAt` a lease
//! ahead on the database's clock and marks them as ours, so a row whose
//! daemon died becomes due again by itself. SQLite lets one writer in at a
//! time, so two claims never take the same row. Settling removes or
//! reschedules only rows still ours, so a delivery whose lease ran out is
//! counted once, by whoever settled it.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite as Db, SqliteConnection};

use super::Sqlite;
use crate::store::queue::{
    CommandState, Enqueued, MessageRow, NewSend, Published, QueuedMessage, Recipients, Settlement,
    tally,
};
use crate::store::{HOLD, LEASE, StoreError, held_by, millis, to_i64, to_u64};

/// Milliseconds since the epoch on the database's clock.
macro_rules! now_ms {
    () => {
        "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
    };
}

const CLEAR_OLD_FAILURES: &str = "\
    DELETE FROM axion_push_command_failure WHERE Package = ? AND CommandId = ? \
    AND EXISTS (SELECT 1 FROM axion_push_command c WHERE c.Package = ? AND c.Id = ? \
                AND c.AcceptedAt < ? AND c.Pending = 0)";

/// Inserts the command, or replaces one with the same id that is older than
/// the de-duplication window and finished; otherwise changes nothing. (What
/// the old one left unacknowledged by the broker after a whole window is
/// given up with it.)
const INSERT_COMMAND: &str = "\
    INSERT INTO axion_push_command \
        (Package, Id, Target, AcceptedAt, ExpiresAt, Payload, Ttl, Urgency, Topic, Members, \
         Digest, Event, EventAt) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
    ON CONFLICT (Package, Id) DO UPDATE SET \
        Target = excluded.Target, AcceptedAt = excluded.AcceptedAt, \
        ExpiresAt = excluded.ExpiresAt, Payload = excluded.Payload, Ttl = excluded.Ttl, \
        Urgency = excluded.Urgency, Topic = excluded.Topic, Members = excluded.Members, \
        Digest = excluded.Digest, Event = excluded.Event, EventAt = excluded.EventAt, \
        Subscriptions = 0, Untried = 0, Pending = 0, Delivered = 0, Failed = 0, \
        Deactivated = 0, Expired = 0, Reported = 0, Published = 0, ReportedAt = NULL \
    WHERE axion_push_command.AcceptedAt < ? AND axion_push_command.Pending = 0";

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
     SELECT Package, ?1, User, Endpoint, KeysP256dh, KeysAuth, ",
    now_ms!(),
    " + ?2, ?3 \
     FROM def_notify_push_subscription \
     WHERE Package = ?4 AND User = ?5 AND (Active = 'Y' OR Active IS NULL)"
);

const ENQUEUE_GROUP: &str = concat!(
    "INSERT INTO axion_push_delivery \
        (Package, CommandId, User, Endpoint, KeysP256dh, KeysAuth, NextAt, LeasedBy) \
     SELECT s.Package, ?1, s.User, s.Endpoint, s.KeysP256dh, s.KeysAuth, ",
    now_ms!(),
    " + ?2, ?3 \
     FROM def_notify_push_subscription s \
     JOIN axion_push_group_member m ON m.Package = s.Package AND m.User = s.User \
     WHERE s.Package = ?4 AND m.GroupName = ?5 AND (s.Active = 'Y' OR s.Active IS NULL)"
);

/// With no delivery, the final report is due at once.
const SET_COUNTS: &str = "\
    UPDATE axion_push_command SET Subscriptions = ?1, Untried = ?1, Pending = ?1, \
        Reported = CASE WHEN ?1 = 0 THEN 2 ELSE 0 END, \
        ReportedAt = CASE WHEN ?1 = 0 THEN AcceptedAt END \
    WHERE Package = ?2 AND Id = ?3";

const STATE_COLUMNS: &str = "\
    Package, Id, Target, Members, Subscriptions, Pending, Delivered, Failed, \
    Deactivated, Expired";

const FAILURES: &str = "\
    SELECT Cause, Count FROM axion_push_command_failure WHERE Package = ? AND CommandId = ?";

/// Due rows, and rows held for the claiming daemon, oldest first.
const CLAIM: &str = concat!(
    "UPDATE axion_push_delivery SET NextAt = ",
    now_ms!(),
    " + ?1, LeasedBy = ?2 \
     WHERE Seq IN (SELECT Seq FROM axion_push_delivery \
                   WHERE NextAt <= ",
    now_ms!(),
    " OR LeasedBy = ?3 \
                   ORDER BY NextAt, Seq LIMIT ?4) \
     RETURNING Seq, Package, CommandId, User, Endpoint, KeysP256dh, KeysAuth, Attempts, Tried"
);

const NEXT_DUE: &str = concat!(
    "SELECT MIN(NextAt) - ",
    now_ms!(),
    " FROM axion_push_delivery"
);
const PENDING: &str = "SELECT COUNT(*) FROM axion_push_delivery";

const RELEASE: &str = concat!(
    "UPDATE axion_push_delivery SET NextAt = ",
    now_ms!(),
    ", LeasedBy = NULL WHERE LeasedBy IN (?1, ?2)"
);

const DEACTIVATE_GONE: &str = "\
    UPDATE def_notify_push_subscription SET Active = 'N' \
    WHERE User = ? AND Package = ? AND Endpoint = ? AND (Active = 'Y' OR Active IS NULL)";

/// Reports handed to the broker before `?2` and still not acknowledged:
/// taken to be handed again now (`?1`), so two daemons do not both
/// republish them.
const TAKE_UNPUBLISHED_REPORTS: &str = "\
    UPDATE axion_push_command SET ReportedAt = ?1 WHERE ReportedAt < ?2 \
    RETURNING Package, Id, Target, Members, Subscriptions, Pending, Delivered, Failed, \
        Deactivated, Expired";

const TAKE_UNPUBLISHED_EVENTS: &str = "\
    UPDATE axion_push_command SET EventAt = ?1 WHERE EventAt < ?2 \
    RETURNING Package, Id, Target, Event";

/// Finished and published: these only keep their ids for the
/// de-duplication window.
const PURGE_FAILURES: &str = "\
    DELETE FROM axion_push_command_failure WHERE (Package, CommandId) IN \
        (SELECT Package, Id FROM axion_push_command WHERE AcceptedAt < ? AND Pending <= 0 \
         AND ReportedAt IS NULL AND EventAt IS NULL)";

const PURGE_COMMANDS: &str = "\
    DELETE FROM axion_push_command WHERE AcceptedAt < ? AND Pending <= 0 \
        AND ReportedAt IS NULL AND EventAt IS NULL";

/// Rows settled or renewed per statement: SQLite binds at most 32766
/// values.
const ROWS_PER_STATEMENT: usize = 1000;

impl Sqlite {
    super::super::shared::claim_returning!();
    super::super::shared::queue_upkeep!();
    super::super::shared::next_due!();
    super::super::shared::take_unpublished_returning!();

    pub(in crate::store) async fn enqueue(
        &self,
        send: &NewSend<'_>,
        owner: &str,
    ) -> Result<Enqueued, StoreError> {
        let cutoff = to_i64(send.duplicate_after_ms);
        let mut tx = self.pool.begin().await?;
        if let (true, Some(digest)) = (send.redelivered, send.digest) {
            let earlier: Option<String> = sqlx::query_scalar(SAME_DIGEST)
                .bind(send.package.as_str())
                .bind(digest)
                .bind(cutoff)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(id) = earlier {
                let duplicate = duplicate(&mut tx, send.package.as_str(), &id).await?;
                tx.rollback().await?;
                return Ok(duplicate);
            }
        }
        sqlx::query(CLEAR_OLD_FAILURES)
            .bind(send.package.as_str())
            .bind(send.id)
            .bind(send.package.as_str())
            .bind(send.id)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        let accepted = to_i64(send.accepted_ms);
        let expires = accepted.saturating_add(i64::from(send.ttl) * 1000);
        let inserted = sqlx::query(INSERT_COMMAND)
            .bind(send.package.as_str())
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
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            let duplicate = duplicate(&mut tx, send.package.as_str(), send.id).await?;
            tx.rollback().await?;
            return Ok(duplicate);
        }
        let (sql, to) = match send.recipients {
            Recipients::User(user) => (ENQUEUE_USER, user.as_str()),
            Recipients::Group(group) => (ENQUEUE_GROUP, group.as_str()),
        };
        let queued = sqlx::query(sql)
            .bind(send.id)
            .bind(millis(HOLD))
            .bind(held_by(owner))
            .bind(send.package.as_str())
            .bind(to)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(SET_COUNTS)
            .bind(to_i64(queued))
            .bind(send.package.as_str())
            .bind(send.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Enqueued::New {
            subscriptions: queued,
        })
    }

    /// Records `sends` — each to one user, their ids distinct, none a
    /// redelivery without an id of its own — in one transaction, with a
    /// handful of statements for the whole batch: the commands, the old
    /// failures of ids reused after the window, the deliveries, the counts.
    pub(in crate::store) async fn enqueue_many(
        &self,
        sends: &[NewSend<'_>],
        owner: &str,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let Some(first) = sends.first() else {
            return Ok(Vec::new());
        };
        let window = to_i64(first.accepted_ms.saturating_sub(first.duplicate_after_ms));
        let mut tx = self.pool.begin().await?;

        let mut commands = QueryBuilder::<Db>::new(
            "INSERT INTO axion_push_command \
                (Package, Id, Target, AcceptedAt, ExpiresAt, Payload, Ttl, Urgency, Topic, \
                 Members, Digest, Event, EventAt) ",
        );
        commands.push_values(sends, |mut row, send| {
            let accepted = to_i64(send.accepted_ms);
            row.push_bind(send.package.as_str())
                .push_bind(send.id)
                .push_bind(send.target)
                .push_bind(accepted)
                .push_bind(accepted.saturating_add(i64::from(send.ttl) * 1000))
                .push_bind(send.payload)
                .push_bind(i64::from(send.ttl))
                .push_bind(send.urgency)
                .push_bind(send.topic)
                .push_bind(send.members.map(to_i64))
                .push_bind(send.digest)
                .push_bind(send.event)
                .push_bind(accepted);
        });
        commands.push(
            " ON CONFLICT (Package, Id) DO UPDATE SET \
                Target = excluded.Target, AcceptedAt = excluded.AcceptedAt, \
                ExpiresAt = excluded.ExpiresAt, Payload = excluded.Payload, Ttl = excluded.Ttl, \
                Urgency = excluded.Urgency, Topic = excluded.Topic, Members = excluded.Members, \
                Digest = excluded.Digest, Event = excluded.Event, EventAt = excluded.EventAt, \
                Subscriptions = 0, Untried = 0, Pending = 0, Delivered = 0, Failed = 0, \
                Deactivated = 0, Expired = 0, Reported = 0, Published = 0, ReportedAt = NULL \
             WHERE axion_push_command.AcceptedAt < excluded.AcceptedAt - ",
        );
        commands
            .push_bind(window)
            .push(" AND axion_push_command.Pending = 0 RETURNING Package, Id");
        let recorded: HashSet<(String, String)> = commands
            .build_query_as::<(String, String)>()
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let new: Vec<&NewSend<'_>> = sends
            .iter()
            .filter(|s| recorded.contains(&(s.package.as_str().to_owned(), s.id.to_owned())))
            .collect();

        let mut counts: HashMap<(String, String), u64> = HashMap::new();
        if !new.is_empty() {
            // An id reused after the window: the old send's failures go.
            let mut cleared = QueryBuilder::<Db>::new(
                "DELETE FROM axion_push_command_failure WHERE (Package, CommandId) IN (VALUES ",
            );
            let mut list = cleared.separated(", ");
            for send in &new {
                list.push("(")
                    .push_bind_unseparated(send.package.as_str())
                    .push_unseparated(", ")
                    .push_bind_unseparated(send.id)
                    .push_unseparated(")");
            }
            cleared.push(")");
            cleared.build().execute(&mut *tx).await?;

            let mut deliveries = QueryBuilder::<Db>::new(concat!(
                "INSERT INTO axion_push_delivery \
                    (Package, CommandId, User, Endpoint, KeysP256dh, KeysAuth, NextAt, LeasedBy) \
                 SELECT s.Package, v.column2, s.User, s.Endpoint, s.KeysP256dh, s.KeysAuth, ",
                now_ms!(),
                " + "
            ));
            deliveries
                .push_bind(millis(HOLD))
                .push(", ")
                .push_bind(held_by(owner))
                .push(" FROM (VALUES ");
            let mut list = deliveries.separated(", ");
            for send in &new {
                let Recipients::User(user) = send.recipients else {
                    unreachable!("enqueue_many takes sends to one user")
                };
                list.push("(")
                    .push_bind_unseparated(send.package.as_str())
                    .push_unseparated(", ")
                    .push_bind_unseparated(send.id)
                    .push_unseparated(", ")
                    .push_bind_unseparated(user.as_str())
                    .push_unseparated(")");
            }
            deliveries.push(
                ") AS v JOIN def_notify_push_subscription s \
                 ON s.User = v.column3 AND s.Package = v.column1 \
                 AND (s.Active = 'Y' OR s.Active IS NULL) \
                 RETURNING Package, CommandId",
            );
            for key in deliveries
                .build_query_as::<(String, String)>()
                .fetch_all(&mut *tx)
                .await?
            {
                *counts.entry(key).or_default() += 1;
            }

            let mut set = QueryBuilder::<Db>::new(
                "UPDATE axion_push_command SET Subscriptions = v.column3, \
                    Untried = v.column3, Pending = v.column3, \
                    Reported = CASE WHEN v.column3 = 0 THEN 2 ELSE 0 END, \
                    ReportedAt = CASE WHEN v.column3 = 0 THEN AcceptedAt END \
                 FROM (VALUES ",
            );
            let mut list = set.separated(", ");
            for send in &new {
                let n = counts
                    .get(&(send.package.as_str().to_owned(), send.id.to_owned()))
                    .copied()
                    .unwrap_or_default();
                list.push("(")
                    .push_bind_unseparated(send.package.as_str())
                    .push_unseparated(", ")
                    .push_bind_unseparated(send.id)
                    .push_unseparated(", ")
                    .push_bind_unseparated(to_i64(n))
                    .push_unseparated(")");
            }
            set.push(") AS v WHERE Package = v.column1 AND Id = v.column2");
            set.build().execute(&mut *tx).await?;
        }

        let mut enqueued = Vec::with_capacity(sends.len());
        for send in sends {
            let key = (send.package.as_str().to_owned(), send.id.to_owned());
            enqueued.push(if recorded.contains(&key) {
                Enqueued::New {
                    subscriptions: counts.get(&key).copied().unwrap_or_default(),
                }
            } else {
                duplicate(&mut tx, send.package.as_str(), send.id).await?
            });
        }
        tx.commit().await?;
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
             WHERE (Package, Id) IN (VALUES ",
        );
        let mut list = q.separated(", ");
        for (package, id) in keys {
            list.push("(")
                .push_bind_unseparated(package.as_str())
                .push_unseparated(", ")
                .push_bind_unseparated(id.as_str())
                .push_unseparated(")");
        }
        q.push(")");
        let rows: Vec<MessageRow> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(QueuedMessage::from_row).collect())
    }

    pub(in crate::store) async fn renew(
        &self,
        owner: &str,
        seqs: &[i64],
    ) -> Result<u64, StoreError> {
        let mut renewed = 0;
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Db>::new(concat!(
                "UPDATE axion_push_delivery SET NextAt = ",
                now_ms!(),
                " + "
            ));
            q.push_bind(millis(LEASE))
                .push(" WHERE LeasedBy = ")
                .push_bind(owner)
                .push(" AND Seq IN (");
            let mut list = q.separated(", ");
            for seq in chunk {
                list.push_bind(*seq);
            }
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
        let mut finished: Vec<i64> = Vec::new();
        let mut again: Vec<(i64, i64, i64)> = Vec::new();
        for s in batch {
            match s.settled {
                crate::store::Settled::Retry { after, .. } => {
                    again.push((s.claimed.seq, millis(after), 1));
                }
                crate::store::Settled::Deferred { after, .. } => {
                    again.push((s.claimed.seq, millis(after), 0));
                }
                _ => finished.push(s.claimed.seq),
            }
        }
        // Rows in one order for every daemon.
        finished.sort_unstable();
        again.sort_unstable();
        let mut tx = self.pool.begin().await?;
        let mut ours: HashSet<i64> = HashSet::with_capacity(batch.len());
        for chunk in finished.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                QueryBuilder::<Db>::new("DELETE FROM axion_push_delivery WHERE LeasedBy = ");
            q.push_bind(owner).push(" AND Seq IN (");
            let mut list = q.separated(", ");
            for seq in chunk {
                list.push_bind(*seq);
            }
            q.push(") RETURNING Seq");
            let seqs: Vec<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?;
            ours.extend(seqs);
        }
        for chunk in again.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Db>::new(concat!(
                "UPDATE axion_push_delivery SET NextAt = ",
                now_ms!(),
                " + v.column2, LeasedBy = NULL, Tried = 1, Attempts = Attempts + v.column3 \
                 FROM (VALUES "
            ));
            let mut rows = q.separated(", ");
            for (seq, after, attempted) in chunk {
                rows.push("(")
                    .push_bind_unseparated(*seq)
                    .push_unseparated(", ")
                    .push_bind_unseparated(*after)
                    .push_unseparated(", ")
                    .push_bind_unseparated(*attempted)
                    .push_unseparated(")");
            }
            q.push(") AS v WHERE axion_push_delivery.Seq = v.column1 AND LeasedBy = ");
            q.push_bind(owner).push(" RETURNING Seq");
            let seqs: Vec<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?;
            ours.extend(seqs);
        }
        let get = StoreError::Query;
        let (tallies, gone) = tally(batch, &ours);
        for claimed in gone {
            sqlx::query(DEACTIVATE_GONE)
                .bind(&claimed.user)
                .bind(&claimed.package)
                .bind(&claimed.endpoint)
                .execute(&mut *tx)
                .await?;
        }
        let mut due = Vec::new();
        if !tallies.is_empty() {
            // Every command's counts in one statement, which returns them.
            let mut counted = QueryBuilder::<Db>::new(
                "UPDATE axion_push_command SET Untried = Untried - v.column3, \
                    Pending = Pending - v.column4, Delivered = Delivered + v.column5, \
                    Failed = Failed + v.column6, Deactivated = Deactivated + v.column7, \
                    Expired = Expired + v.column8 \
                 FROM (VALUES ",
            );
            let mut list = counted.separated(", ");
            for ((package, id), t) in &tallies {
                list.push("(")
                    .push_bind_unseparated(*package)
                    .push_unseparated(", ")
                    .push_bind_unseparated(*id);
                for n in [
                    t.tried,
                    t.settled,
                    t.delivered,
                    t.failed,
                    t.deactivated,
                    t.expired,
                ] {
                    list.push_unseparated(", ").push_bind_unseparated(n);
                }
                list.push_unseparated(")");
            }
            counted.push(
                ") AS v WHERE Package = v.column1 AND Id = v.column2 \
                 RETURNING Package, Id, Target, Members, Subscriptions, Pending, Delivered, \
                    Failed, Deactivated, Expired, Untried, Reported",
            );
            let rows = counted.build().fetch_all(&mut *tx).await?;
            let failures_counted: Vec<(&str, &str, &String, i64)> = tallies
                .iter()
                .flat_map(|((package, id), t)| {
                    t.causes
                        .iter()
                        .map(move |(cause, n)| (*package, *id, cause, *n))
                })
                .collect();
            if !failures_counted.is_empty() {
                let mut upsert = QueryBuilder::<Db>::new(
                    "INSERT INTO axion_push_command_failure (Package, CommandId, Cause, Count) ",
                );
                upsert.push_values(&failures_counted, |mut row, (package, id, cause, n)| {
                    row.push_bind(*package)
                        .push_bind(*id)
                        .push_bind(*cause)
                        .push_bind(*n);
                });
                upsert.push(
                    " ON CONFLICT (Package, CommandId, Cause) \
                     DO UPDATE SET Count = Count + excluded.Count",
                );
                upsert.build().execute(&mut *tx).await?;
            }
            // Whose next report is due: every delivery tried once (the
            // first report), or none left in the queue (the final one).
            for row in &rows {
                let untried: i64 = row.try_get("Untried").map_err(get)?;
                let pending: i64 = row.try_get("Pending").map_err(get)?;
                let reported: i64 = row.try_get("Reported").map_err(get)?;
                if (untried <= 0 && reported == 0) || (pending <= 0 && reported < 2) {
                    due.push(crate::store::rows::command_state(row)?);
                }
            }
            due.sort_by(|a, b| (&a.package, &a.id).cmp(&(&b.package, &b.id)));
            if !due.is_empty() {
                let keys = |q: &mut QueryBuilder<Db>| {
                    let mut list = q.separated(", ");
                    for state in &due {
                        list.push("(")
                            .push_bind_unseparated(state.package.clone())
                            .push_unseparated(", ")
                            .push_bind_unseparated(state.id.clone())
                            .push_unseparated(")");
                    }
                };
                let mut marked = QueryBuilder::<Db>::new(
                    "UPDATE axion_push_command \
                     SET Reported = CASE WHEN Pending <= 0 THEN 2 ELSE 1 END, ReportedAt = ",
                );
                marked
                    .push_bind(to_i64(now_ms))
                    .push(" WHERE (Package, Id) IN (VALUES ");
                keys(&mut marked);
                marked.push(")");
                marked.build().execute(&mut *tx).await?;
                if due.iter().any(CommandState::may_have_causes) {
                    let mut read = QueryBuilder::<Db>::new(
                        "SELECT Package, CommandId, Cause, Count FROM axion_push_command_failure \
                         WHERE (Package, CommandId) IN (VALUES ",
                    );
                    keys(&mut read);
                    read.push(")");
                    let causes: Vec<(String, String, String, i64)> =
                        read.build_query_as().fetch_all(&mut *tx).await?;
                    for (package, id, cause, n) in causes {
                        if let Some(state) =
                            due.iter_mut().find(|s| s.package == package && s.id == id)
                        {
                            state.causes.insert(cause, to_u64(n));
                        }
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(due)
    }

    /// One statement for a whole batch: each send's highest acknowledged
    /// report and its event together, so a send whose event and report
    /// were acknowledged in the same batch has its row written once.
    pub(in crate::store) async fn mark_published(
        &self,
        published: &[Published],
    ) -> Result<(), StoreError> {
        let (reports, events) = crate::store::queue::published_by_send(published);
        let mut sends: BTreeMap<(&str, &str), (u8, bool)> = BTreeMap::new();
        for (key, level) in reports {
            sends.entry(key).or_default().0 = level;
        }
        for key in events {
            sends.entry(key).or_default().1 = true;
        }
        if sends.is_empty() {
            return Ok(());
        }
        let mut q = QueryBuilder::<Db>::new(
            "UPDATE axion_push_command SET Published = MAX(Published, v.column3), \
                ReportedAt = CASE WHEN v.column3 > 0 AND MAX(Published, v.column3) >= Reported \
                             THEN NULL ELSE ReportedAt END, \
                Event = CASE WHEN v.column4 = 1 THEN NULL ELSE Event END, \
                EventAt = CASE WHEN v.column4 = 1 THEN NULL ELSE EventAt END \
             FROM (VALUES ",
        );
        let mut list = q.separated(", ");
        for ((package, id), (level, event)) in &sends {
            list.push("(")
                .push_bind_unseparated(*package)
                .push_unseparated(", ")
                .push_bind_unseparated(*id)
                .push_unseparated(", ")
                .push_bind_unseparated(i64::from(*level))
                .push_unseparated(", ")
                .push_bind_unseparated(i64::from(*event))
                .push_unseparated(")");
        }
        q.push(") AS v WHERE Package = v.column1 AND Id = v.column2");
        q.build().execute(&self.pool).await?;
        Ok(())
    }
}

/// The answer for a send seen before: the earlier one's progress, and its
/// event if the broker has not acknowledged that yet.
async fn duplicate(
    conn: &mut SqliteConnection,
    package: &str,
    id: &str,
) -> Result<Enqueued, StoreError> {
    let earlier = state(&mut *conn, package, id).await?.unwrap_or_default();
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

async fn state(
    conn: &mut SqliteConnection,
    package: &str,
    id: &str,
) -> Result<Option<CommandState>, StoreError> {
    let sql =
        format!("SELECT {STATE_COLUMNS} FROM axion_push_command WHERE Package = ? AND Id = ?");
    let Some(row) = sqlx::query(AssertSqlSafe(sql))
        .bind(package)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut state = crate::store::rows::command_state(&row)?;
    state.causes = failures(conn, package, id).await?;
    Ok(Some(state))
}

super::super::shared::failures!(SqliteConnection);

/// `Tried` is an integer.
fn tried(row: &sqlx::sqlite::SqliteRow) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>("Tried")? != 0)
}

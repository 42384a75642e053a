//! The PostgreSQL statements of the delivery queue.
//!
//! A claim is one `UPDATE … WHERE "Seq" = ANY(ARRAY(SELECT … FOR UPDATE
//! SKIP LOCKED)) RETURNING`: it moves the rows' `NextAt` a lease ahead on
//! the database's clock and marks them as ours, skipping rows another
//! daemon is claiming at that moment rather than waiting for them. A row
//! another claim took since the statement began is locked in its new
//! version, which no longer matches, so two daemons never hold the same
//! delivery.
//!
//! Every other statement that touches several deliveries (renewing,
//! releasing, settling) locks them first in `Seq` order, and settling then
//! updates commands in key order, so daemons working at once wait for each
//! other instead of deadlocking. Settling removes or reschedules only rows
//! still ours, so a delivery whose lease ran out is counted once, by
//! whoever settled it.

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::{PgConnection, Row};

use super::Postgres;
use crate::store::queue::{
    CommandState, Enqueued, MessageRow, NewSend, Published, QueuedMessage, Recipients, Settled,
    Settlement, tally,
};
use crate::store::{HOLD, LEASE, StoreError, held_by, millis, to_i64, to_u64};

/// Milliseconds since the epoch on the database's clock. The statement's
/// start rather than `now()`, the transaction's: a long transaction does
/// not make a lease shorter or a hold run out early. And not
/// `clock_timestamp()`: that changes row by row and, being volatile, keeps
/// the `NextAt` index out of a claim.
macro_rules! now_ms {
    () => {
        "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::bigint"
    };
}

/// The columns a recorded send writes, in the order both recording
/// statements select them.
macro_rules! command_columns {
    () => {
        "(\"Package\", \"Id\", \"Target\", \"AcceptedAt\", \"ExpiresAt\", \"Payload\", \
          \"Ttl\", \"Urgency\", \"Topic\", \"Members\", \"Digest\", \"Event\", \
          \"EventAt\", \"Subscriptions\", \"Untried\", \"Pending\", \"Reported\", \
          \"ReportedAt\")"
    };
}

/// How a finished send older than the window is replaced by a new one
/// with its id: every column anew, the counts back to zero.
macro_rules! command_replaced {
    () => {
        "\"Target\" = EXCLUDED.\"Target\", \"AcceptedAt\" = EXCLUDED.\"AcceptedAt\", \
         \"ExpiresAt\" = EXCLUDED.\"ExpiresAt\", \"Payload\" = EXCLUDED.\"Payload\", \
         \"Ttl\" = EXCLUDED.\"Ttl\", \"Urgency\" = EXCLUDED.\"Urgency\", \
         \"Topic\" = EXCLUDED.\"Topic\", \"Members\" = EXCLUDED.\"Members\", \
         \"Digest\" = EXCLUDED.\"Digest\", \"Event\" = EXCLUDED.\"Event\", \
         \"EventAt\" = EXCLUDED.\"EventAt\", \"Subscriptions\" = EXCLUDED.\"Subscriptions\", \
         \"Untried\" = EXCLUDED.\"Untried\", \"Pending\" = EXCLUDED.\"Pending\", \
         \"Delivered\" = 0, \"Failed\" = 0, \"Deactivated\" = 0, \"Expired\" = 0, \
         \"Reported\" = EXCLUDED.\"Reported\", \"Published\" = 0, \
         \"ReportedAt\" = EXCLUDED.\"ReportedAt\""
    };
}

/// Records a send in one statement (one round trip, one commit: the
/// command's hot path). Given the subscriptions it reaches (`recipients`,
/// below), it inserts the command with their count, or replaces one with
/// the same id that is older than the de-duplication window (`$13`),
/// finished and published — dropping that one's failure counts — and
/// queues one delivery per subscription, held for the recording daemon.
/// It answers with the count when the send was recorded, nothing when its
/// id is a duplicate. A daemon recording the same id at the same moment
/// waits for the first to commit, then finds it too recent to replace.
///
/// `$1` package, `$2` id, `$3` target, `$4` accepted at, `$5` expires at,
/// `$6` payload, `$7` TTL, `$8` urgency, `$9` topic, `$10` members, `$11`
/// digest, `$12` event, `$13` duplicates after, `$14` hold in ms, `$15`
/// held for, `$16` the user or group. With no subscription, the final
/// report is due at once.
macro_rules! enqueue {
    ($recipients:expr) => {
        concat!(
            "WITH recipients AS (",
            $recipients,
            "), \
             cleared AS ( \
                DELETE FROM axion_push_command_failure \
                WHERE \"Package\" = $1 AND \"CommandId\" = $2 \
                AND EXISTS (SELECT 1 FROM axion_push_command c \
                            WHERE c.\"Package\" = $1 AND c.\"Id\" = $2 \
                            AND c.\"AcceptedAt\" < $13 AND c.\"Pending\" = 0)), \
             command AS ( \
                INSERT INTO axion_push_command ",
            command_columns!(),
            " \
                SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $4, n, n, n, \
                    CASE WHEN n = 0 THEN 2 ELSE 0 END, CASE WHEN n = 0 THEN $4 END \
                FROM (SELECT COUNT(*) AS n FROM recipients) counted \
                ON CONFLICT (\"Package\", \"Id\") DO UPDATE SET ",
            command_replaced!(),
            " \
                WHERE axion_push_command.\"AcceptedAt\" < $13 \
                    AND axion_push_command.\"Pending\" = 0 \
                RETURNING \"Subscriptions\"), \
             queued AS ( \
                INSERT INTO axion_push_delivery \
                    (\"Package\", \"CommandId\", \"User\", \"Endpoint\", \"KeysP256dh\", \
                     \"KeysAuth\", \"NextAt\", \"LeasedBy\") \
                SELECT r.\"Package\", $2, r.\"User\", r.\"Endpoint\", r.\"KeysP256dh\", \
                    r.\"KeysAuth\", ",
            now_ms!(),
            " + $14, $15 \
                FROM recipients r WHERE EXISTS (SELECT 1 FROM command)) \
             SELECT \"Subscriptions\" FROM command"
        )
    };
}

/// Records a batch of sends to users in one statement, as [`enqueue!`]
/// records one: the sends come as arrays (`$1` packages, `$2` ids, `$3`
/// targets, `$4` accepted at, `$5` expires at, `$6` payloads, `$7` TTLs,
/// `$8` urgencies, `$9` topics, `$10` members, `$11` digests, `$12` events,
/// `$13` users), with `$14` the de-duplication window, `$15` the hold in ms
/// and `$16` the daemon they are held for. It answers with a row per send
/// recorded; a send missing from the answer is a duplicate.
const ENQUEUE_USERS: &str = concat!(
    "WITH s AS ( \
        SELECT * FROM UNNEST($1::varchar[], $2::varchar[], $3::varchar[], $4::int8[], \
            $5::int8[], $6::bytea[], $7::int8[], $8::varchar[], $9::varchar[], $10::int8[], \
            $11::varchar[], $12::bytea[], $13::varchar[]) \
        AS s(package, id, target, accepted, expires, payload, ttl, urgency, topic, members, \
             digest, event, recipient)), \
     recipients AS ( \
        SELECT s.package AS send_package, s.id, d.\"Package\", d.\"User\", d.\"Endpoint\", \
            d.\"KeysP256dh\", d.\"KeysAuth\" \
        FROM s JOIN def_notify_push_subscription d \
            ON d.\"Package\" = s.package::bpchar AND d.\"User\" = s.recipient::bpchar \
            AND (d.\"Active\" = 'Y' OR d.\"Active\" IS NULL)), \
     counted AS ( \
        SELECT s.*, (SELECT COUNT(*) FROM recipients r \
                     WHERE r.send_package = s.package AND r.id = s.id) AS n \
        FROM s), \
     cleared AS ( \
        DELETE FROM axion_push_command_failure f USING counted c \
        WHERE f.\"Package\" = c.package AND f.\"CommandId\" = c.id \
        AND EXISTS (SELECT 1 FROM axion_push_command x \
                    WHERE x.\"Package\" = c.package AND x.\"Id\" = c.id \
                    AND x.\"AcceptedAt\" < c.accepted - $14 AND x.\"Pending\" = 0)), \
     command AS ( \
        INSERT INTO axion_push_command ",
    command_columns!(),
    " \
        SELECT package, id, target, accepted, expires, payload, ttl, urgency, topic, members, \
            digest, event, accepted, n, n, n, CASE WHEN n = 0 THEN 2 ELSE 0 END, \
            CASE WHEN n = 0 THEN accepted END \
        FROM counted \
        ON CONFLICT (\"Package\", \"Id\") DO UPDATE SET ",
    command_replaced!(),
    " \
        WHERE axion_push_command.\"AcceptedAt\" < EXCLUDED.\"AcceptedAt\" - $14 \
            AND axion_push_command.\"Pending\" = 0 \
        RETURNING \"Package\", \"Id\", \"Subscriptions\"), \
     queued AS ( \
        INSERT INTO axion_push_delivery \
            (\"Package\", \"CommandId\", \"User\", \"Endpoint\", \"KeysP256dh\", \
             \"KeysAuth\", \"NextAt\", \"LeasedBy\") \
        SELECT r.\"Package\", r.id, r.\"User\", r.\"Endpoint\", r.\"KeysP256dh\", \
            r.\"KeysAuth\", ",
    now_ms!(),
    " + $15, $16 \
        FROM recipients r JOIN command c ON c.\"Package\" = r.send_package AND c.\"Id\" = r.id) \
     SELECT \"Package\", \"Id\", \"Subscriptions\" FROM command"
);

/// A user's active subscriptions. Axion's `char(255)` values lose their
/// padding on the way into our `varchar` columns.
const ENQUEUE_USER: &str = enqueue!(
    "SELECT \"Package\", \"User\", \"Endpoint\", \"KeysP256dh\", \"KeysAuth\" \
     FROM def_notify_push_subscription \
     WHERE \"Package\" = $1::bpchar AND \"User\" = $16::bpchar \
        AND (\"Active\" = 'Y' OR \"Active\" IS NULL)"
);

/// The active subscriptions of a group's members.
const ENQUEUE_GROUP: &str = enqueue!(
    "SELECT s.\"Package\", s.\"User\", s.\"Endpoint\", s.\"KeysP256dh\", s.\"KeysAuth\" \
     FROM axion_push_group_member m \
     JOIN def_notify_push_subscription s \
        ON s.\"Package\" = m.\"Package\"::bpchar AND s.\"User\" = m.\"User\"::bpchar \
     WHERE m.\"Package\" = $1 AND m.\"GroupName\" = $16 \
        AND (s.\"Active\" = 'Y' OR s.\"Active\" IS NULL)"
);

/// The event of an earlier command, while the broker has not acknowledged it.
const UNPUBLISHED_EVENT: &str = "\
    SELECT \"Event\" FROM axion_push_command \
    WHERE \"Package\" = $1 AND \"Id\" = $2 AND \"Event\" IS NOT NULL";

/// The send a redelivered message without an id was recorded as, if any.
const SAME_DIGEST: &str = "\
    SELECT \"Id\" FROM axion_push_command \
    WHERE \"Package\" = $1 AND \"Digest\" = $2 AND \"AcceptedAt\" >= $3 \
    ORDER BY \"AcceptedAt\" DESC LIMIT 1";

macro_rules! state_columns {
    () => {
        "\"Package\", \"Id\", \"Target\", \"Members\", \"Subscriptions\", \"Pending\", \
         \"Delivered\", \"Failed\", \"Deactivated\", \"Expired\""
    };
}

const STATE: &str = concat!(
    "SELECT ",
    state_columns!(),
    " FROM axion_push_command WHERE \"Package\" = $1 AND \"Id\" = $2"
);

const FAILURES: &str = "\
    SELECT \"Cause\", \"Count\" FROM axion_push_command_failure \
    WHERE \"Package\" = $1 AND \"CommandId\" = $2";

const MESSAGES: &str = "\
    SELECT c.\"Package\", c.\"Id\", c.\"Payload\", c.\"Ttl\", c.\"Urgency\", c.\"Topic\", \
        c.\"ExpiresAt\" \
    FROM axion_push_command c \
    WHERE c.\"Package\" = ANY($1::text[]) AND c.\"Id\" = ANY($2::text[])";

/// Due rows, and rows held for the claiming daemon, oldest first; rows
/// another transaction has locked are skipped, not waited for. The rows
/// are chosen and locked first, as one array (`= ANY(ARRAY(…))`), so the
/// update finds them by primary key however large the queue.
const CLAIM: &str = concat!(
    "UPDATE axion_push_delivery SET \"NextAt\" = ",
    now_ms!(),
    " + $1, \"LeasedBy\" = $2 \
     WHERE \"Seq\" = ANY(ARRAY( \
        SELECT \"Seq\" FROM axion_push_delivery \
        WHERE \"NextAt\" <= ",
    now_ms!(),
    " OR \"LeasedBy\" = $3 \
        ORDER BY \"NextAt\", \"Seq\" LIMIT $4 FOR UPDATE SKIP LOCKED)) \
     RETURNING \"Seq\", \"Package\", \"CommandId\", \"User\", \"Endpoint\", \"KeysP256dh\", \
        \"KeysAuth\", \"Attempts\", \"Tried\""
);

const NEXT_DUE: &str = concat!(
    "SELECT MIN(\"NextAt\") - ",
    now_ms!(),
    " FROM axion_push_delivery"
);
const PENDING: &str = "SELECT COUNT(*) FROM axion_push_delivery";

const RENEW: &str = concat!(
    "UPDATE axion_push_delivery d SET \"NextAt\" = ",
    now_ms!(),
    " + $1 \
     FROM (SELECT \"Seq\" FROM axion_push_delivery \
           WHERE \"LeasedBy\" = $2 AND \"Seq\" = ANY($3) \
           ORDER BY \"Seq\" FOR UPDATE) l \
     WHERE d.\"Seq\" = l.\"Seq\""
);

const RELEASE: &str = concat!(
    "UPDATE axion_push_delivery d SET \"NextAt\" = ",
    now_ms!(),
    ", \"LeasedBy\" = NULL \
     FROM (SELECT \"Seq\" FROM axion_push_delivery WHERE \"LeasedBy\" IN ($1, $2) \
           ORDER BY \"Seq\" FOR UPDATE) l \
     WHERE d.\"Seq\" = l.\"Seq\""
);

/// Deliveries that left the queue, among `$2`, still leased by `$1`.
const DELETE_FINISHED: &str = "\
    DELETE FROM axion_push_delivery d \
    USING (SELECT \"Seq\" FROM axion_push_delivery WHERE \"LeasedBy\" = $1 AND \"Seq\" = ANY($2) \
           ORDER BY \"Seq\" FOR UPDATE) l \
    WHERE d.\"Seq\" = l.\"Seq\" \
    RETURNING d.\"Seq\"";

/// Deliveries to try again: `Seq` `$2`, due `$3` ms from now, `$4` requests
/// more made for it; only those still leased by `$1`.
const RESCHEDULE: &str = concat!(
    "UPDATE axion_push_delivery d SET \"NextAt\" = ",
    now_ms!(),
    " + v.after, \"LeasedBy\" = NULL, \"Tried\" = true, \
        \"Attempts\" = d.\"Attempts\" + v.attempted \
     FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS v(seq, after, attempted), \
          (SELECT \"Seq\" FROM axion_push_delivery \
           WHERE \"LeasedBy\" = $1 AND \"Seq\" = ANY($2) ORDER BY \"Seq\" FOR UPDATE) l \
     WHERE d.\"Seq\" = v.seq AND d.\"Seq\" = l.\"Seq\" \
     RETURNING d.\"Seq\""
);

const DEACTIVATE_GONE: &str = "\
    UPDATE def_notify_push_subscription SET \"Active\" = 'N' \
    WHERE \"User\" = $1::bpchar AND \"Package\" = $2::bpchar AND \"Endpoint\" = $3 \
        AND (\"Active\" = 'Y' OR \"Active\" IS NULL)";

/// Counts what a batch settled for its commands — (package, id, tried,
/// settled, delivered, failed, deactivated, expired) arrays, in key order —
/// and answers with each command's progress and whether its next result
/// report is due: every delivery tried once (the first result), or none
/// left in the queue (the final one).
const COUNT_SETTLED: &str = concat!(
    "UPDATE axion_push_command c SET \"Untried\" = c.\"Untried\" - v.tried, \
        \"Pending\" = c.\"Pending\" - v.settled, \"Delivered\" = c.\"Delivered\" + v.delivered, \
        \"Failed\" = c.\"Failed\" + v.failed, \"Deactivated\" = c.\"Deactivated\" + v.deactivated, \
        \"Expired\" = c.\"Expired\" + v.expired \
     FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], \
                 $7::int8[], $8::int8[]) \
          AS v(package, id, tried, settled, delivered, failed, deactivated, expired) \
     WHERE c.\"Package\" = v.package AND c.\"Id\" = v.id \
     RETURNING ",
    state_columns!(),
    ", (\"Untried\" <= 0 AND \"Reported\" = 0) OR (\"Pending\" <= 0 AND \"Reported\" < 2) \
        AS \"Due\""
);

/// A command's failures by cause (`$3`), counts `$4`, in one statement.
const COUNT_FAILURES: &str = "\
    INSERT INTO axion_push_command_failure (\"Package\", \"CommandId\", \"Cause\", \"Count\") \
    SELECT $1, $2, f.cause, f.count FROM unnest($3::text[], $4::bigint[]) AS f(cause, count) \
    ON CONFLICT (\"Package\", \"CommandId\", \"Cause\") \
    DO UPDATE SET \"Count\" = axion_push_command_failure.\"Count\" + EXCLUDED.\"Count\"";

/// The reports of commands (`$2`, `$3` arrays) are due and handed to the
/// broker at `$1`.
const MARK_REPORTED: &str = "\
    UPDATE axion_push_command c SET \"Reported\" = CASE WHEN c.\"Pending\" <= 0 THEN 2 ELSE 1 END, \
        \"ReportedAt\" = $1 \
    FROM unnest($2::text[], $3::text[]) AS v(package, id) \
    WHERE c.\"Package\" = v.package AND c.\"Id\" = v.id";

/// The broker acknowledged a batch of reports — (package, id, level)
/// arrays, level 1 the first report, 2 the final one; once every due report
/// of a command is acknowledged nothing is left to publish again.
const MARK_REPORTS_PUBLISHED: &str = "\
    UPDATE axion_push_command c SET \"Published\" = GREATEST(c.\"Published\", v.level), \
        \"ReportedAt\" = CASE WHEN GREATEST(c.\"Published\", v.level) >= c.\"Reported\" THEN NULL \
                              ELSE c.\"ReportedAt\" END \
    FROM unnest($1::text[], $2::text[], $3::int8[]) AS v(package, id, level) \
    WHERE c.\"Package\" = v.package AND c.\"Id\" = v.id";

/// A batch of acknowledged events: (package, id) arrays.
const MARK_EVENTS_PUBLISHED: &str = "\
    UPDATE axion_push_command c SET \"Event\" = NULL, \"EventAt\" = NULL \
    FROM unnest($1::text[], $2::text[]) AS v(package, id) \
    WHERE c.\"Package\" = v.package AND c.\"Id\" = v.id";

/// Reports handed to the broker before `$2` and still not acknowledged:
/// taken to be handed again now (`$1`). A daemon taking them at the same
/// moment waits for the row, then finds it handed after `$2`: two daemons
/// do not both republish them.
const TAKE_UNPUBLISHED_REPORTS: &str = "\
    UPDATE axion_push_command c SET \"ReportedAt\" = $1 \
    FROM (SELECT \"Package\", \"Id\" FROM axion_push_command WHERE \"ReportedAt\" < $2 \
          ORDER BY \"Package\", \"Id\" FOR UPDATE) t \
    WHERE c.\"Package\" = t.\"Package\" AND c.\"Id\" = t.\"Id\" \
    RETURNING c.\"Package\", c.\"Id\", c.\"Target\", c.\"Members\", c.\"Subscriptions\", \
        c.\"Pending\", c.\"Delivered\", c.\"Failed\", c.\"Deactivated\", c.\"Expired\"";

const TAKE_UNPUBLISHED_EVENTS: &str = "\
    UPDATE axion_push_command c SET \"EventAt\" = $1 \
    FROM (SELECT \"Package\", \"Id\" FROM axion_push_command WHERE \"EventAt\" < $2 \
          ORDER BY \"Package\", \"Id\" FOR UPDATE) t \
    WHERE c.\"Package\" = t.\"Package\" AND c.\"Id\" = t.\"Id\" \
    RETURNING c.\"Package\", c.\"Id\", c.\"Target\", c.\"Event\"";

/// Finished and published: these only keep their ids for the
/// de-duplication window.
const PURGE_FAILURES: &str = "\
    DELETE FROM axion_push_command_failure WHERE (\"Package\", \"CommandId\") IN \
        (SELECT \"Package\", \"Id\" FROM axion_push_command WHERE \"AcceptedAt\" < $1 \
         AND \"Pending\" <= 0 AND \"ReportedAt\" IS NULL AND \"EventAt\" IS NULL)";

const PURGE_COMMANDS: &str = "\
    DELETE FROM axion_push_command WHERE \"AcceptedAt\" < $1 AND \"Pending\" <= 0 \
        AND \"ReportedAt\" IS NULL AND \"EventAt\" IS NULL";

impl Postgres {
    super::super::shared::claim_returning!();
    super::super::shared::queue_upkeep!();
    super::super::shared::next_due!();
    super::super::shared::take_unpublished_returning!();

    /// Records `sends` (see `Store::enqueue_many`): with one statement when
    /// they are what a batch nearly always is, else one after the other.
    pub(in crate::store) async fn enqueue_many(
        &self,
        sends: &[NewSend<'_>],
        owner: &str,
    ) -> Result<Vec<Enqueued>, StoreError> {
        // One transaction, one commit (and one WAL flush) for the batch.
        let mut tx = self.pool.begin().await?;
        let enqueued = match together(sends) {
            Some(together) => enqueue_users(&mut tx, sends, together, owner).await?,
            None => {
                let mut enqueued = Vec::with_capacity(sends.len());
                for send in sends {
                    enqueued.push(enqueue_on(&mut tx, send, owner).await?);
                }
                enqueued
            }
        };
        tx.commit().await?;
        Ok(enqueued)
    }

    pub(in crate::store) async fn enqueue(
        &self,
        send: &NewSend<'_>,
        owner: &str,
    ) -> Result<Enqueued, StoreError> {
        let mut conn = self.pool.acquire().await?;
        enqueue_on(&mut conn, send, owner).await
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
        // Each list once; the statement's answer is every package with
        // every id (a claim's sends are nearly always of one package),
        // narrowed to the pairs asked for here.
        let packages: BTreeSet<&str> = keys.iter().map(|(p, _)| p.as_str()).collect();
        let ids: BTreeSet<&str> = keys.iter().map(|(_, i)| i.as_str()).collect();
        let wanted: HashSet<(&str, &str)> =
            keys.iter().map(|(p, i)| (p.as_str(), i.as_str())).collect();
        let rows: Vec<MessageRow> = sqlx::query_as(MESSAGES)
            .bind(packages.into_iter().collect::<Vec<_>>())
            .bind(ids.into_iter().collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await?;
        let rows: Vec<MessageRow> = rows
            .into_iter()
            .filter(|r| wanted.contains(&(r.0.as_str(), r.1.as_str())))
            .collect();
        Ok(rows.into_iter().map(QueuedMessage::from_row).collect())
    }

    pub(in crate::store) async fn renew(
        &self,
        owner: &str,
        seqs: &[i64],
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(RENEW)
            .bind(millis(LEASE))
            .bind(owner)
            .bind(seqs)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub(in crate::store) async fn settle(
        &self,
        owner: &str,
        batch: &[Settlement],
        now_ms: u64,
    ) -> Result<Vec<CommandState>, StoreError> {
        let mut finished: Vec<i64> = Vec::new();
        // Seq, delay in ms, requests made (1) or not (0), as three arrays.
        let mut again: Vec<(i64, i64, i64)> = Vec::new();
        for s in batch {
            match s.settled {
                Settled::Retry { after, .. } => again.push((s.claimed.seq, millis(after), 1)),
                Settled::Deferred { after, .. } => again.push((s.claimed.seq, millis(after), 0)),
                _ => finished.push(s.claimed.seq),
            }
        }
        again.sort_unstable();
        let (again_seq, again_after, again_attempted): (Vec<i64>, Vec<i64>, Vec<i64>) =
            again.into_iter().fold(
                Default::default(),
                |(mut s, mut a, mut n), (seq, after, attempted)| {
                    s.push(seq);
                    a.push(after);
                    n.push(attempted);
                    (s, a, n)
                },
            );
        let mut tx = self.pool.begin().await?;
        let mut ours: HashSet<i64> = HashSet::with_capacity(batch.len());
        if !finished.is_empty() {
            let seqs: Vec<i64> = sqlx::query_scalar(DELETE_FINISHED)
                .bind(owner)
                .bind(&finished)
                .fetch_all(&mut *tx)
                .await?;
            ours.extend(seqs);
        }
        if !again_seq.is_empty() {
            let seqs: Vec<i64> = sqlx::query_scalar(RESCHEDULE)
                .bind(owner)
                .bind(&again_seq)
                .bind(&again_after)
                .bind(&again_attempted)
                .fetch_all(&mut *tx)
                .await?;
            ours.extend(seqs);
        }
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
            let mut columns: [Vec<i64>; 6] = Default::default();
            let (mut packages, mut ids) = (Vec::new(), Vec::new());
            for ((package, id), t) in &tallies {
                packages.push(*package);
                ids.push(*id);
                let counts = [
                    t.tried,
                    t.settled,
                    t.delivered,
                    t.failed,
                    t.deactivated,
                    t.expired,
                ];
                for (column, n) in columns.iter_mut().zip(counts) {
                    column.push(n);
                }
            }
            let [tried, settled, delivered, failed, deactivated, expired] = columns;
            let rows = sqlx::query(COUNT_SETTLED)
                .bind(&packages)
                .bind(&ids)
                .bind(tried)
                .bind(settled)
                .bind(delivered)
                .bind(failed)
                .bind(deactivated)
                .bind(expired)
                .fetch_all(&mut *tx)
                .await?;
            for ((package, id), tally) in &tallies {
                if tally.causes.is_empty() {
                    continue;
                }
                let (causes, counts): (Vec<&str>, Vec<i64>) = tally
                    .causes
                    .iter()
                    .map(|(cause, count)| (cause.as_str(), *count))
                    .unzip();
                sqlx::query(COUNT_FAILURES)
                    .bind(*package)
                    .bind(*id)
                    .bind(causes)
                    .bind(counts)
                    .execute(&mut *tx)
                    .await?;
            }
            for row in &rows {
                let is_due: bool = row.try_get("Due").map_err(StoreError::Query)?;
                if is_due {
                    due.push(crate::store::rows::command_state(row)?);
                }
            }
            due.sort_by(|a, b| (&a.package, &a.id).cmp(&(&b.package, &b.id)));
            if !due.is_empty() {
                for state in due.iter_mut().filter(|state| state.may_have_causes()) {
                    state.causes = failures(&mut tx, &state.package, &state.id).await?;
                }
                let (packages, ids): (Vec<&str>, Vec<&str>) = due
                    .iter()
                    .map(|state| (state.package.as_str(), state.id.as_str()))
                    .unzip();
                sqlx::query(MARK_REPORTED)
                    .bind(to_i64(now_ms))
                    .bind(packages)
                    .bind(ids)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(due)
    }

    /// Two statements for a whole batch: the reports (each command's
    /// highest acknowledged), the events.
    pub(in crate::store) async fn mark_published(
        &self,
        published: &[Published],
    ) -> Result<(), StoreError> {
        let (reports, events) = crate::store::queue::published_by_send(published);
        let mut tx = self.pool.begin().await?;
        if !reports.is_empty() {
            let mut packages = Vec::with_capacity(reports.len());
            let mut ids = Vec::with_capacity(reports.len());
            let mut levels = Vec::with_capacity(reports.len());
            for ((package, id), level) in &reports {
                packages.push(*package);
                ids.push(*id);
                levels.push(i64::from(*level));
            }
            sqlx::query(MARK_REPORTS_PUBLISHED)
                .bind(packages)
                .bind(ids)
                .bind(levels)
                .execute(&mut *tx)
                .await?;
        }
        if !events.is_empty() {
            let (packages, ids): (Vec<&str>, Vec<&str>) = events.iter().copied().unzip();
            sqlx::query(MARK_EVENTS_PUBLISHED)
                .bind(packages)
                .bind(ids)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await.map_err(StoreError::from)
    }
}

async fn state(
    conn: &mut PgConnection,
    package: &str,
    id: &str,
) -> Result<Option<CommandState>, StoreError> {
    let Some(row) = sqlx::query(STATE)
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

/// Records one send on `conn` (a transaction of a batch, or a connection of
/// its own): one statement, which records nothing for an id already taken.
async fn enqueue_on(
    conn: &mut PgConnection,
    send: &NewSend<'_>,
    owner: &str,
) -> Result<Enqueued, StoreError> {
    let cutoff = to_i64(send.duplicate_after_ms);
    if let (true, Some(digest)) = (send.redelivered, send.digest) {
        let earlier: Option<String> = sqlx::query_scalar(SAME_DIGEST)
            .bind(send.package.as_str())
            .bind(digest)
            .bind(cutoff)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(id) = earlier {
            return duplicate(conn, send.package.as_str(), &id).await;
        }
    }
    let accepted = to_i64(send.accepted_ms);
    let expires = accepted.saturating_add(i64::from(send.ttl) * 1000);
    let (sql, to) = match send.recipients {
        Recipients::User(user) => (ENQUEUE_USER, user.as_str()),
        Recipients::Group(group) => (ENQUEUE_GROUP, group.as_str()),
    };
    let queued: Option<i64> = sqlx::query_scalar(sql)
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
        .bind(cutoff)
        .bind(millis(HOLD))
        .bind(held_by(owner))
        .bind(to)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(queued) = queued else {
        return duplicate(conn, send.package.as_str(), send.id).await;
    };
    Ok(Enqueued::New {
        subscriptions: to_u64(queued),
    })
}

/// The de-duplication window of `sends` and the user each is to, when one
/// statement can record them all ([`ENQUEUE_USERS`]): each to a user, none
/// a redelivery to be matched by its digest, all with the same window.
fn together<'a>(sends: &[NewSend<'a>]) -> Option<(i64, Vec<&'a str>)> {
    let window = |s: &NewSend<'_>| s.accepted_ms.saturating_sub(s.duplicate_after_ms);
    let first = window(sends.first()?);
    let users = sends
        .iter()
        .map(|s| match s.recipients {
            Recipients::User(user) if !(s.redelivered && s.digest.is_some()) => {
                (window(s) == first).then_some(user.as_str())
            }
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((to_i64(first), users))
}

/// Records `sends` with one statement; the answer for each, in order.
async fn enqueue_users(
    conn: &mut PgConnection,
    sends: &[NewSend<'_>],
    (window, users): (i64, Vec<&str>),
    owner: &str,
) -> Result<Vec<Enqueued>, StoreError> {
    let column = |f: &dyn Fn(&NewSend<'_>) -> i64| sends.iter().map(f).collect::<Vec<i64>>();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(ENQUEUE_USERS)
        .bind(sends.iter().map(|s| s.package.as_str()).collect::<Vec<_>>())
        .bind(sends.iter().map(|s| s.id).collect::<Vec<_>>())
        .bind(sends.iter().map(|s| s.target).collect::<Vec<_>>())
        .bind(column(&|s| to_i64(s.accepted_ms)))
        .bind(column(&|s| {
            to_i64(s.accepted_ms).saturating_add(i64::from(s.ttl) * 1000)
        }))
        .bind(sends.iter().map(|s| s.payload).collect::<Vec<_>>())
        .bind(column(&|s| i64::from(s.ttl)))
        .bind(sends.iter().map(|s| s.urgency).collect::<Vec<_>>())
        .bind(sends.iter().map(|s| s.topic).collect::<Vec<_>>())
        .bind(
            sends
                .iter()
                .map(|s| s.members.map(to_i64))
                .collect::<Vec<_>>(),
        )
        .bind(sends.iter().map(|s| s.digest).collect::<Vec<_>>())
        .bind(sends.iter().map(|s| s.event).collect::<Vec<_>>())
        .bind(users)
        .bind(window)
        .bind(millis(HOLD))
        .bind(held_by(owner))
        .fetch_all(&mut *conn)
        .await?;
    let recorded: HashMap<(String, String), i64> = rows
        .into_iter()
        .map(|(package, id, n)| ((package, id), n))
        .collect();
    let mut enqueued = Vec::with_capacity(sends.len());
    for send in sends {
        let key = (send.package.as_str().to_owned(), send.id.to_owned());
        enqueued.push(match recorded.get(&key) {
            Some(n) => Enqueued::New {
                subscriptions: to_u64(*n),
            },
            None => duplicate(conn, send.package.as_str(), send.id).await?,
        });
    }
    Ok(enqueued)
}

/// The answer for a send seen before: the earlier one's progress, and
/// its event if the broker has not acknowledged that yet.
async fn duplicate(
    conn: &mut PgConnection,
    package: &str,
    id: &str,
) -> Result<Enqueued, StoreError> {
    let earlier = state(conn, package, id).await?.unwrap_or_default();
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

super::super::shared::failures!(PgConnection);

/// `Tried` is a boolean.
fn tried(row: &sqlx::postgres::PgRow) -> Result<bool, sqlx::Error> {
    row.try_get("Tried")
}

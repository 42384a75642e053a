//! The delivery queue's records: what a send leaves in the database, what a
//! claim hands out, and what settling a claimed delivery writes back.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{Group, Package, User};

/// Who a recorded send reaches.
#[derive(Debug, Clone, Copy)]
pub enum Recipients<'a> {
    User(&'a User),
    Group(&'a Group),
}

/// A send to record, with its message rendered once for every subscription.
#[derive(Debug, Clone, Copy)]
pub struct NewSend<'a> {
    pub package: &'a Package,
    pub id: &'a str,
    /// The topic level it addressed (`alice`, `@ops`): where results go.
    pub target: &'a str,
    pub recipients: Recipients<'a>,
    pub members: Option<u64>,
    pub accepted_ms: u64,
    pub payload: &'a [u8],
    pub ttl: u32,
    pub urgency: &'a str,
    pub topic: Option<&'a str>,
    /// A command with the same id accepted after this is a duplicate.
    pub duplicate_after_ms: u64,
    /// For a send without an `id` of its own: its topic and payload hashed.
    pub digest: Option<&'a str>,
    /// The broker says it is delivering this message again (MQTT DUP): a
    /// send with the same digest accepted after `duplicate_after_ms` is
    /// this one.
    pub redelivered: bool,
    /// The real-time event, kept until the broker has acknowledged it.
    pub event: &'a [u8],
}

/// What recording a send did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Recorded with this many deliveries.
    New { subscriptions: u64 },
    /// Its id was seen within the window; nothing was recorded.
    Duplicate {
        /// The earlier command's progress.
        earlier: CommandState,
        /// The earlier command's event, when the broker has not
        /// acknowledged it yet (the daemon that recorded it may have died).
        unpublished_event: Option<Vec<u8>>,
    },
}

/// A recorded send's progress: what its result reports say. A report with
/// `pending == 0` is the final one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandState {
    pub package: String,
    pub id: String,
    pub target: String,
    pub members: Option<u64>,
    pub subscriptions: u64,
    /// Deliveries still in the queue (waiting for a retry or in flight).
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub deactivated: u64,
    pub expired: u64,
    /// Causes as the send's causes table holds them: failures for good,
    /// and under [`RETRY_CAUSE`] the causes of attempts retried (a report
    /// shows them apart: [`CommandState::failures`] and
    /// [`CommandState::retries`]). Read only when
    /// [`CommandState::may_have_causes`].
    pub causes: BTreeMap<String, u64>,
}

impl CommandState {
    /// Whether anything was not (yet) delivered, so that the report names
    /// causes: a delivery failed, expired or waits for a retry. A send whose
    /// pushes all went out needs no read of its causes.
    pub fn may_have_causes(&self) -> bool {
        self.failed > 0 || self.expired > 0 || self.pending > 0
    }

    /// Failures for good, by cause.
    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.causes
            .iter()
            .filter(|(cause, _)| !cause.starts_with(RETRY_CAUSE))
            .map(|(cause, n)| (cause.clone(), *n))
            .collect()
    }

    /// Attempts that failed for a while and were (or are to be) retried,
    /// by cause.
    pub fn retries(&self) -> BTreeMap<String, u64> {
        self.causes
            .iter()
            .filter_map(|(cause, n)| Some((cause.strip_prefix(RETRY_CAUSE)?.to_owned(), *n)))
            .collect()
    }
}

/// The message of a recorded send, loaded once per command by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub payload: Vec<u8>,
    pub ttl: u32,
    pub urgency: String,
    pub topic: Option<String>,
    pub expires_ms: u64,
}

/// A message's row as every backend selects it: Package, Id, Payload, Ttl,
/// Urgency, Topic, ExpiresAt.
pub(crate) type MessageRow = (String, String, Vec<u8>, i64, String, Option<String>, i64);

impl QueuedMessage {
    /// (package, id, message) from a selected row.
    pub(crate) fn from_row(row: MessageRow) -> (String, String, QueuedMessage) {
        let (package, id, payload, ttl, urgency, topic, expires) = row;
        (
            package,
            id,
            QueuedMessage {
                payload,
                ttl: ttl.try_into().unwrap_or_default(),
                urgency,
                topic,
                expires_ms: super::to_u64(expires),
            },
        )
    }
}

/// A delivery claimed by this daemon: nobody else takes it until it is
/// settled or its lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub seq: i64,
    pub package: String,
    pub command_id: String,
    pub user: String,
    pub endpoint: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    /// Requests already made for it.
    pub attempts: u32,
    /// Whether it was tried (or put off) once already.
    pub tried: bool,
}

/// What became of one claimed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// 404/410: the subscription is deactivated.
    Gone,
    /// Refused for good, under this cause (`"413"`, `"403"`, `"keys"`, …).
    Failed(String),
    /// The message's TTL ran out before a push service took it.
    Expired,
    /// Try again `after` this long (on the database's clock); the attempt
    /// failed under `cause` (`"503"`, `"timeout"`, `"connection"`, …).
    Retry {
        after: Duration,
        cause: String,
    },
    /// Not attempted, under `cause` ([`PAUSED`]: its push service is
    /// paused; [`UNREADABLE`]: its message could not be read from the
    /// database); claim it again `after` this long. Unlike a retry, it
    /// does not count as an attempt.
    Deferred {
        after: Duration,
        cause: &'static str,
    },
    /// Refused for the subscription alone, while its push service took
    /// others' pushes, for `subscriptions.expire_after`: the subscription
    /// is deactivated, and the push counts as failed under `stale`.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub claimed: Claimed,
    pub settled: Settled,
}

/// Something the broker has acknowledged, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// A send's result report: its first (`is_final: false`) or final one.
    Report {
        package: String,
        id: String,
        is_final: bool,
    },
    /// A send's real-time event (to every member, for a group send).
    Event { package: String, id: String },
}

/// A real-time event recorded but not acknowledged by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpublishedEvent {
    pub package: String,
    pub id: String,
    /// The user or `@group` the send addressed.
    pub target: String,
    pub event: Vec<u8>,
}

/// Per command, what one batch of settlements adds to its counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Deliveries tried for the first time.
    pub tried: i64,
    /// Deliveries that left the queue.
    pub settled: i64,
    pub delivered: i64,
    pub failed: i64,
    pub deactivated: i64,
    pub expired: i64,
    /// Failures for good by cause, and the causes of attempts to be
    /// retried under [`RETRY_CAUSE`].
    pub causes: BTreeMap<String, i64>,
}

/// The prefix under which a send's causes table keeps the causes of
/// attempts that will be retried (`retry:503`), beside the causes of
/// deliveries that failed for good (`503`): both are counts of causes per
/// send, so one table holds them, and a report tells them apart
/// ([`CommandState::retries`]).
pub const RETRY_CAUSE: &str = "retry:";

/// The cause counted for a delivery whose first attempt was not made
/// because its push service is paused (see the delivery's breakers).
pub const PAUSED: &str = "paused";

/// The cause counted for a delivery whose first attempt was not made
/// because the daemon could not read its message from the database.
pub const UNREADABLE: &str = "database";

/// What a batch of settlements changes, counting only the rows still held
/// (`ours`: a row whose lease ran out was taken over by another daemon,
/// which counts it). Commands in key order, so every backend updates them
/// in the same order and concurrent settles cannot deadlock on them.
pub(crate) fn tally<'a>(
    batch: &'a [Settlement],
    ours: &std::collections::HashSet<i64>,
) -> (BTreeMap<(&'a str, &'a str), Tally>, Vec<&'a Claimed>) {
    let mut tallies: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
    let mut gone = Vec::new();
    for Settlement { claimed, settled } in batch {
        if !ours.contains(&claimed.seq) {
            continue;
        }
        let tally = tallies
            .entry((claimed.package.as_str(), claimed.command_id.as_str()))
            .or_default();
        tally.tried += i64::from(!claimed.tried);
        match settled {
            Settled::Retry { cause, .. } => {
                *tally
                    .causes
                    .entry(format!("{RETRY_CAUSE}{cause}"))
                    .or_default() += 1;
                continue;
            }
            Settled::Deferred { cause, .. } => {
                if !claimed.tried {
                    *tally
                        .causes
                        .entry(format!("{RETRY_CAUSE}{cause}"))
                        .or_default() += 1;
                }
                continue;
            }
            Settled::Delivered => tally.delivered += 1,
            Settled::Gone => {
                gone.push(claimed);
                tally.deactivated += 1;
            }
            Settled::Failed(cause) => {
                tally.failed += 1;
                *tally.causes.entry(cause.clone()).or_default() += 1;
            }
            Settled::Stale => {
                gone.push(claimed);
                tally.failed += 1;
                *tally.causes.entry("stale".to_owned()).or_default() += 1;
            }
            Settled::Expired => tally.expired += 1,
        }
        tally.settled += 1;
    }
    (tallies, gone)
}

impl Settled {
    /// Whether the delivery leaves the queue.
    pub fn is_final(&self) -> bool {
        !matches!(self, Settled::Retry { .. } | Settled::Deferred { .. })
    }
}

/// A batch of acknowledgements by send: for reports, the highest level (1
/// first, 2 final) per send; for events, each send once. In key order.
#[allow(clippy::type_complexity)]
pub(crate) fn published_by_send(
    published: &[Published],
) -> (
    BTreeMap<(&str, &str), u8>,
    std::collections::BTreeSet<(&str, &str)>,
) {
    let mut reports: BTreeMap<(&str, &str), u8> = BTreeMap::new();
    let mut events = std::collections::BTreeSet::new();
    for p in published {
        match p {
            Published::Report {
                package,
                id,
                is_final,
            } => {
                let level = reports.entry((package.as_str(), id.as_str())).or_default();
                *level = (*level).max(if *is_final { 2 } else { 1 });
            }
            Published::Event { package, id } => {
                events.insert((package.as_str(), id.as_str()));
            }
        }
    }
    (reports, events)
}

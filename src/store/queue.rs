//! The delivery queue's records: what a send leaves in the database, what a
//! claim hands out, and what settling a claimed delivery writes back.

use std::collections::BTreeMap;

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
    pub failures: BTreeMap<String, u64>,
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
    /// Try again at `next_at` (milliseconds since the epoch).
    Retry {
        next_at: u64,
    },
    /// Not attempted (its push service is paused); claim it again at
    /// `next_at`.
    Deferred {
        next_at: u64,
    },
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

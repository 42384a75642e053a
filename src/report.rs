//! What the daemon says back: result reports and real-time events as values,
//! their JSON, and the bounded egress channel that carries them to the MQTT
//! client. Nothing here knows who publishes or how.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::notification::Notification;

/// The answer to one command, published on its `…/result` topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResultReport {
    /// The command's `id`, or the one the daemon generated.
    pub id: String,
    /// The verb (`send`, `subscribe`, …) as it appeared in the topic.
    pub command: String,
    /// True when the command was valid and applied. Delivery failures of a
    /// valid send are counted below, not turned into `ok: false`.
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Beside some `error`s, what a client can act on: `endpoint-taken`
    /// (the browser's endpoint is another user's; make a new one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Active subscriptions the command concerned (for subscribe: the
    /// user's active subscriptions afterwards).
    pub subscriptions: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Subscriptions set to Active = 'N' because the push service answered
    /// 404/410 (or, for unsubscribe, because the browser asked).
    pub deactivated: u64,
    /// Deliveries whose message expired (its TTL ran out) before a push
    /// service took it, after retries.
    pub expired: u64,
    /// Deliveries still in the queue, waiting for a retry, when the report
    /// was written. A send's first report comes once every delivery has
    /// been tried once; when it says `queued > 0`, another report follows
    /// when the queue is done with the command, with `queued: 0`.
    pub queued: u64,
    /// The send's `id` was seen within `delivery.dedup_window`: nothing was
    /// delivered again; the counts are the earlier command's so far.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Failed deliveries by cause: an HTTP status (`"503"`), `timeout`,
    /// `connection`, `policy` or `keys`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, u64>,
    /// Beside `queued`, `failed` or `expired`: attempts that met a
    /// temporary failure and were retried (or are waiting to be), by cause
    /// — an HTTP status (`"503"`, `"429"`), `timeout`, `connection`,
    /// `paused` for a push service paused after repeated failures, or
    /// `database` for a message the daemon could not read. So a
    /// report with `queued: 1` says why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, u64>,
    /// For group commands: the members the command reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<u64>,
    /// For `list`: the user's subscriptions in the package, without keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ListedSubscription>>,
    /// For `receipt`: the send the receipt is about. (Its `id` is the
    /// receipt's own, so that a service waiting for the send's result
    /// never takes a receipt for it.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_id: Option<String>,
    /// For `receipt`: what the browser did — `shown`, `failed`, `clicked`
    /// or `closed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// For `receipt`: the subscription the push went to, by the id `list`
    /// reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// For a `clicked` receipt: the notification action clicked, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// For a `failed` receipt: why the browser did not show it, in its
    /// words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One subscription as `list` reports it: the row of
/// `def_notify_push_subscription` without `KeysP256dh` and `KeysAuth`,
/// which never go on the bus, and without the endpoint unless a service
/// asked for it (an endpoint is a capability: whoever holds it can wake
/// that browser).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListedSubscription {
    /// A stable id of the subscription, derived from its package and
    /// endpoint; `unsubscribe` takes it instead of the endpoint.
    pub subscription: String,
    /// The push service's origin, e.g. `https://fcm.googleapis.com`.
    pub origin: String,
    /// The whole endpoint, only when the command asked with
    /// `"endpoints": true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub module: Option<String>,
    pub user_agent: Option<String>,
    /// As stored (`CreatedAt`), e.g. `2026-11-27 23:05:21`.
    pub created_at: Option<String>,
    pub active: bool,
    /// What became of its pushes lately, when anything was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<ListedHealth>,
}

/// A subscription's health as `list` reports it: times in seconds since
/// the epoch, and the whole in words.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListedHealth {
    /// E.g. "delivered 2 h ago, shown 2 h ago", or "failing for 9 days:
    /// 400 from fcm.googleapis.com".
    pub words: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<u64>,
    /// The last receipt: shown, failed, clicked or closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_at: Option<u64>,
    /// The cause of the last push that failed for good: an HTTP status,
    /// `expired`, `policy`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<u64>,
    /// Failures since the last delivery.
    pub failures: u64,
    /// Since when its push service has refused its pushes, for it alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<u64>,
}

impl ResultReport {
    pub fn accepted(id: impl Into<String>, command: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            command: command.into(),
            ok: true,
            ..Self::default()
        }
    }

    pub fn rejected(
        id: impl Into<String>,
        command: impl Into<String>,
        error: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            command: command.into(),
            ok: false,
            error: Some(error.into()),
            ..Self::default()
        }
    }

    pub fn to_json(&self) -> Bytes {
        serde_json::to_vec(self)
            .expect("a report of strings and numbers serialises")
            .into()
    }
}

/// The real-time event: the normalised notification, its `id` and `ts`
/// (seconds since the epoch, with milliseconds, as Python's `time.time()`).
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    #[serde(flatten)]
    pub notification: &'a Notification,
    pub ts: f64,
    /// Set when the notification was sent to a group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'a str>,
}

impl Event<'_> {
    pub fn to_json(&self) -> Bytes {
        serde_json::to_vec(self)
            .expect("an event of strings and numbers serialises")
            .into()
    }
}

/// One message for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

/// Called once the broker has acknowledged a message (its QoS 1 PUBACK).
///
/// A receipt dropped unconfirmed means the message may never have reached
/// the broker — the daemon stopped or died first — so whatever confirming
/// would have recorded stays undone, and the message goes out again later
/// (at least once, never at most once).
pub struct Receipt(Box<dyn FnOnce() + Send>);

impl Receipt {
    pub fn new(on_confirmed: impl FnOnce() + Send + 'static) -> Self {
        Self(Box::new(on_confirmed))
    }

    /// A receipt that records nothing.
    pub fn none() -> Self {
        Self::new(|| {})
    }

    pub fn confirm(self) {
        (self.0)();
    }

    /// `n` receipts that confirm this one when the last of them is
    /// confirmed: one message sent to several topics (a group's events).
    pub fn split(self, n: usize) -> Vec<Receipt> {
        use std::sync::Arc;
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicUsize, Ordering};
        if n == 0 {
            self.confirm();
            return Vec::new();
        }
        let left = Arc::new(AtomicUsize::new(n));
        let inner = Arc::new(Mutex::new(Some(self)));
        (0..n)
            .map(|_| {
                let (left, inner) = (left.clone(), inner.clone());
                Receipt::new(move || {
                    if left.fetch_sub(1, Ordering::AcqRel) == 1
                        && let Some(receipt) = inner.lock().expect("receipt lock").take()
                    {
                        receipt.confirm();
                    }
                })
            })
            .collect()
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

/// A message on the egress channel, with what to tell when the broker has
/// it.
#[derive(Debug)]
pub struct Publication {
    pub out: Outgoing,
    pub receipt: Option<Receipt>,
}

/// The egress channel was closed: the daemon is stopping.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the egress channel is closed")]
pub struct EgressClosed;

/// The sending side of the egress channel. Bounded, so a broker that cannot
/// keep up slows the command stage down instead of filling memory.
#[derive(Debug, Clone)]
pub struct Egress {
    tx: mpsc::Sender<Publication>,
}

impl Egress {
    pub fn channel(capacity: usize) -> (Egress, mpsc::Receiver<Publication>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Egress { tx }, rx)
    }

    /// Hands `out` to the MQTT client; nobody is told when it arrives.
    pub async fn publish(&self, out: Outgoing) -> Result<(), EgressClosed> {
        self.send(Publication { out, receipt: None }).await
    }

    /// Hands `out` to the MQTT client; `receipt` is confirmed once the
    /// broker has acknowledged it.
    pub async fn publish_confirmed(
        &self,
        out: Outgoing,
        receipt: Receipt,
    ) -> Result<(), EgressClosed> {
        self.send(Publication {
            out,
            receipt: Some(receipt),
        })
        .await
    }

    async fn send(&self, publication: Publication) -> Result<(), EgressClosed> {
        self.tx.send(publication).await.map_err(|_| EgressClosed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_report_carries_its_error_and_zero_counts() {
        let r = ResultReport::rejected("c1", "send", "title is empty");
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":"c1","command":"send","ok":false,"error":"title is empty",
                "subscriptions":0,"delivered":0,"failed":0,"deactivated":0,"expired":0,"queued":0})
        );
    }

    #[test]
    fn the_event_is_the_notification_with_its_timestamp() {
        let n = Notification::parse(br#"{"title":"T","id":"e1"}"#, 60, || unreachable!()).unwrap();
        let e = Event {
            notification: &n,
            ts: 1_700_000_000.5,
            group: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["id"], "e1");
        assert_eq!(v["title"], "T");
        assert_eq!(v["url"], "/");
        assert_eq!(v["ts"], 1_700_000_000.5);
        assert!(v.get("group").is_none());
    }

    #[test]
    fn a_split_receipt_confirms_once_every_part_is_confirmed() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let confirmed = Arc::new(AtomicUsize::new(0));
        let counter = confirmed.clone();
        let mut parts = Receipt::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .split(3);
        parts.pop().unwrap().confirm();
        parts.pop().unwrap().confirm();
        assert_eq!(confirmed.load(Ordering::SeqCst), 0);
        parts.pop().unwrap().confirm();
        assert_eq!(confirmed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_split_receipt_with_a_part_dropped_never_confirms() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let confirmed = Arc::new(AtomicBool::new(false));
        let flag = confirmed.clone();
        let mut parts = Receipt::new(move || flag.store(true, Ordering::SeqCst)).split(2);
        parts.pop().unwrap().confirm();
        drop(parts);
        assert!(!confirmed.load(Ordering::SeqCst));
    }
}

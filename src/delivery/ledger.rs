//! What the broker has acknowledged, written to the database.
//!
//! A send's result reports and its real-time event are kept in the
//! database until the broker acknowledges them (QoS 1 PUBACK), so that
//! those handed to a broker that never took them — the daemon stopped or
//! died first — are published again by the next run, or by another daemon
//! on the same database (the engine's adopter): at least once, never lost.
//! Marks are written in batches, off the path of any command.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::{self};
use crate::model::{Package, User};
use crate::report::{Egress, Outgoing, Receipt};
use crate::store::{Health, Published, Store};
use crate::topics::Topics;

/// Marks waiting to be written. A mark that does not fit is dropped: its
/// report or event is then published once more — by the adopter once it
/// looks orphaned, or at the next start — which is allowed (listeners
/// de-duplicate by id).
const CAPACITY: usize = 4096;
/// Marks written per transaction.
const BATCH: usize = 1024;
/// How long a batch waits for more marks: a send's event and its report
/// are acknowledged a few milliseconds apart, and a mark only matters at
/// the next start, so a trickle of sends is written in a few transactions
/// rather than two per send (each a round trip to SQLite's thread, or to
/// the server).
const LINGER: Duration = Duration::from_millis(20);

/// Hands out receipts that record what the broker acknowledged.
#[derive(Debug, Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Published>,
}

impl Ledger {
    /// Starts the writer on `tracker`. It runs until every `Ledger` and
    /// receipt is gone (or `abandon`, with the database away at a stop).
    pub fn spawn(
        store: Store,
        health: Health,
        tracker: &TaskTracker,
        abandon: CancellationToken,
    ) -> Ledger {
        let (tx, rx) = mpsc::channel(CAPACITY);
        tracker.spawn(write(store, health, rx, abandon));
        Ledger { tx }
    }

    /// A receipt that records `published` once confirmed.
    pub fn receipt(&self, published: Published) -> Receipt {
        let tx = self.tx.clone();
        Receipt::new(move || {
            let _ = tx.try_send(published);
        })
    }
}

async fn write(
    store: Store,
    health: Health,
    mut marks: mpsc::Receiver<Published>,
    abandon: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = marks.recv().await {
        batch.push(first);
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(until, marks.recv()).await {
                Ok(Some(more)) => batch.push(more),
                // Every sender gone (written, then the loop ends) or
                // lingered long enough.
                Ok(None) | Err(_) => break,
            }
        }
        let mut outage: u32 = 0;
        loop {
            match store.mark_published(&batch).await {
                Ok(()) => {
                    health.ok();
                    break;
                }
                Err(e) => {
                    health.failed(&e, "recording what the broker acknowledged");
                    tokio::select! {
                        () = abandon.cancelled() => return,
                        () = tokio::time::sleep(backoff::DATABASE_RETRY.delay(outage)) => {}
                    }
                    outage = outage.saturating_add(1);
                }
            }
        }
        batch.clear();
    }
}

/// Hands a send's real-time event to egress for each of `users`; the
/// ledger records it once the broker has acknowledged every copy.
pub async fn publish_event(
    egress: &Egress,
    topics: &Topics,
    ledger: &Ledger,
    package: &Package,
    id: &str,
    users: &[User],
    event: bytes::Bytes,
) {
    let published = Published::Event {
        package: package.as_str().to_owned(),
        id: id.to_owned(),
    };
    let receipts = ledger.receipt(published).split(users.len());
    for (user, receipt) in users.iter().zip(receipts) {
        let out = Outgoing {
            topic: topics.event(package, user),
            payload: event.clone(),
            retain: false,
        };
        if egress.publish_confirmed(out, receipt).await.is_err() {
            tracing::warn!(
                command_id = id,
                user = %user,
                "real-time event not handed to the broker: the daemon is stopping; the next run publishes it"
            );
            return;
        }
    }
}

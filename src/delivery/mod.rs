//! The delivery engine: works the durable queue until it is empty.
//!
//! A send command only records its deliveries (see `command::send`); this
//! engine claims due ones from the store, at most `delivery.concurrency` in
//! flight over every push service, sends them, and writes back what became
//! of each. So a delivery survives a crash (it is claimed again), a retry
//! waits in the database rather than in memory, and a queue of any length
//! costs one batch of rows at a time.
//!
//! Two tasks: the *claimer* takes due rows, checks the message's expiry and
//! its push service's breaker, and spawns one request per row; the
//! *recorder* settles finished rows in batches (one transaction each) and
//! publishes the result reports they make due. A database outage stops
//! both until it ends; nothing is dropped meanwhile, because unsettled rows
//! stay leased to this daemon. Beside them, a renewer keeps the leases of
//! rows in flight, a purger forgets old sends, and an adopter publishes
//! what a daemon that died left unpublished.

mod breaker;
mod hand_off;
mod ledger;
mod messages;
mod tracker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::{self, Backoff};
use crate::clock::{ms, now_ms};
use crate::model::{Endpoint, Package, SubscriptionKeys, Target, User};
use crate::push::{Message, Outcome, PushClient, PushError, VapidSigners, payload};
use crate::receipt::{self, Receipts};
use crate::report::{Egress, Outgoing, ResultReport};
use crate::stats::Stats;
use crate::store::{
    Claimed, CommandState, Health, HealthEvent, HealthOutcome, Published, Settled, Settlement,
    Store, UnpublishedEvent,
};
use crate::topics::Topics;
pub use breaker::{Admit, Breakers, THRESHOLD};
pub use hand_off::{HandOff, Marked};
pub use ledger::{Ledger, publish_event};
pub use messages::{Messages, Prepared};
use tracker::Tracker;

/// Rows claimed per query.
const CLAIM_BATCH: usize = 256;
/// Settlements written per transaction.
const SETTLE_BATCH: usize = 1024;
/// How long the recorder waits for more settlements before writing a
/// batch: far below any push's latency, far above a SQLite commit's.
const SETTLE_LINGER: Duration = Duration::from_millis(2);
/// Idle, the queue is looked at this often anyway: another daemon may have
/// died holding deliveries whose lease has run out.
const IDLE_POLL: Duration = Duration::from_secs(2);
/// How often finished sends past the de-duplication window are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// A result report or event handed to a broker and not acknowledged for
/// this long is presumed orphaned: the daemon that handed it died before
/// its broker took it. A connected broker acknowledges in milliseconds, and
/// a daemon still alive hands its own again when it reconnects; so, like a
/// delivery's lease, this only runs out for a daemon that is gone.
const ORPHANED_AFTER: Duration = crate::store::LEASE;
/// How often the store is asked for orphaned reports and events.
const ADOPT_EVERY: Duration = crate::store::RENEW_EVERY;

/// Everything the engine is built from.
pub struct EngineParts {
    pub store: Store,
    pub health: Health,
    pub client: Arc<PushClient>,
    pub signers: Arc<VapidSigners>,
    pub topics: Topics,
    pub egress: Egress,
    /// Records what the broker acknowledged.
    pub ledger: Ledger,
    /// Sends whose event is not handed to egress yet: their pushes wait.
    pub hand_off: HandOff,
    /// The messages of recent sends, as the command stage rendered them.
    pub messages: Messages,
    /// Whose leases are whose: unique to this process (see
    /// `daemon::lease_owner`).
    pub owner: String,
    pub concurrency: usize,
    pub retry: Backoff,
    /// The longest a struggling push service is paused.
    pub pause_max: Duration,
    /// How long finished sends are remembered for de-duplication.
    pub dedup_window: Duration,
    /// True while the MQTT client is connected and subscribed: orphaned
    /// reports are only adopted while this daemon can publish them.
    pub broker: watch::Receiver<bool>,
    /// Set when each push carries a receipt token (`receipts.enabled`).
    pub receipts: Option<Arc<Receipts>>,
    /// How long a subscription's pushes must be refused for it alone
    /// before it is deactivated as `stale` (`subscriptions.expire_after`).
    pub expire_after: Duration,
    pub stats: Arc<Stats>,
}

/// Wakes the engine when a send has been queued.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// The running engine's stop signals.
#[derive(Clone, Default)]
pub struct Stop {
    /// Claim nothing more; let requests in flight finish.
    pub claiming: CancellationToken,
    /// Abandon requests still in flight: their deliveries stay in the queue.
    pub abandon: CancellationToken,
}

/// Starts the engine on `tracker`; it runs until `stop` and then until its
/// last settlement is written.
pub fn spawn(parts: EngineParts, wake: Wake, stop: Stop, tracker: &TaskTracker) {
    // What a previous run left unpublished was handed over before now; the
    // sends of this run come after.
    let started_ms = now_ms();
    let (settled_tx, settled_rx) = mpsc::unbounded_channel();
    let parts = Arc::new(parts);
    let slots = Arc::new(Semaphore::new(parts.concurrency));
    let working = Working::default();
    let subscriptions = Arc::new(Tracker::default());
    tracker.spawn(record(
        parts.clone(),
        subscriptions.clone(),
        settled_rx,
        slots.clone(),
        working.clone(),
        stop.abandon.clone(),
    ));
    tracker.spawn(purge(parts.clone(), stop.claiming.clone()));
    tracker.spawn(adopt(parts.clone(), stop.claiming.clone()));
    // Renewing ends when the claimer does, its last request answered.
    let claimer_done = CancellationToken::new();
    tracker.spawn(renew(parts.clone(), working.clone(), claimer_done.clone()));
    let claimer = Claimer {
        breakers: Arc::new(Breakers::new(parts.retry, parts.pause_max)),
        parts,
        tracker: subscriptions,
        permits: slots,
        working,
        wake,
        stop,
        settled: settled_tx,
        requests: JoinSet::new(),
        outage: 0,
    };
    tracker.spawn(async move {
        claim(claimer, started_ms).await;
        claimer_done.cancel();
    });
}

/// The deliveries this engine has claimed and not yet settled: the leases
/// it renews.
#[derive(Clone, Default)]
struct Working(Arc<std::sync::Mutex<std::collections::HashSet<i64>>>);

impl Working {
    fn add(&self, seqs: impl IntoIterator<Item = i64>) {
        self.0.lock().expect("working set lock").extend(seqs);
    }

    fn remove(&self, seqs: impl IntoIterator<Item = i64>) {
        let mut set = self.0.lock().expect("working set lock");
        for seq in seqs {
            set.remove(&seq);
        }
    }

    fn seqs(&self) -> Vec<i64> {
        self.0
            .lock()
            .expect("working set lock")
            .iter()
            .copied()
            .collect()
    }
}

/// A settlement on its way to the recorder, with the slot its row held: the
/// slot is freed only once the settlement is written, so requests in flight
/// plus settlements not yet written never exceed `concurrency`. That is the
/// most a crash can make the next run send again.
type ToRecord = (Settlement, OwnedSemaphorePermit);

async fn sleep_or(stop: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

/// Claims due deliveries and sends them: first what a previous run left
/// unpublished, then round after round of [`Claimer::round`] until told
/// to stop, then waits for the requests in flight.
async fn claim(mut claimer: Claimer, started_ms: u64) {
    if !claimer.resume(started_ms).await {
        return;
    }
    while !claimer.stop.claiming.is_cancelled() {
        claimer.round().await;
    }
    // Stopping: requests in flight finish (or are abandoned); the recorder
    // ends once the last sender of settlements is gone.
    while claimer.requests.join_next().await.is_some() {}
}

/// The claimer's state between rounds.
struct Claimer {
    parts: Arc<EngineParts>,
    /// Which push services delivered lately (see `refused`).
    tracker: Arc<Tracker>,
    /// One per request in flight or settlement not yet written.
    permits: Arc<Semaphore>,
    working: Working,
    wake: Wake,
    stop: Stop,
    settled: mpsc::UnboundedSender<ToRecord>,
    breakers: Arc<Breakers>,
    requests: JoinSet<()>,
    /// Database failures in a row, for the retry's backoff.
    outage: u32,
}

/// What becomes of a claimed row: sent now, or settled without a request.
enum Verdict {
    Send(Cleared),
    Settle(Claimed, Settled),
}

/// A claimed row cleared to go: its message, endpoint and breaker verdict.
struct Cleared {
    row: Claimed,
    message: Arc<Prepared>,
    endpoint: Option<Endpoint>,
    origin: Option<String>,
    /// The first request after a pause: its answer closes the breaker or
    /// opens it again.
    probe: bool,
}

impl Claimer {
    /// Results and events a previous run handed to a broker that never
    /// acknowledged them, published again; retried until the database
    /// answers. (Deliveries it left in flight come due again when their
    /// lease runs out.) False when told to stop meanwhile.
    async fn resume(&mut self, started_ms: u64) -> bool {
        loop {
            match republish_unacknowledged(&self.parts, started_ms).await {
                Ok(()) => {
                    self.parts.health.ok();
                    self.outage = 0;
                    return true;
                }
                Err(e) => {
                    self.parts.health.failed(&e, "resuming the delivery queue");
                    self.wait_out_outage().await;
                    if self.stop.claiming.is_cancelled() {
                        return false;
                    }
                }
            }
        }
    }

    /// One round: wait for free request slots, claim up to that many due
    /// rows, read their messages, and dispatch each row; idle when nothing
    /// more is due.
    async fn round(&mut self) {
        while self.requests.try_join_next().is_some() {}
        let Some(free) = self.free_slots().await else {
            return;
        };
        let claimed = match self.parts.store.claim(&self.parts.owner, free).await {
            Ok(claimed) => {
                self.parts.health.ok();
                self.outage = 0;
                claimed
            }
            Err(e) => {
                self.parts.health.failed(&e, "claiming deliveries");
                self.wait_out_outage().await;
                return;
            }
        };
        if claimed.is_empty() {
            idle(&self.parts, &self.wake, &self.stop.claiming).await;
            return;
        }
        // Fewer than asked for: nothing more was due. Claiming again at once
        // would only find nothing; wait for the next send or retry instead.
        let drained = claimed.len() < free;
        self.working.add(claimed.iter().map(|c| c.seq));
        let messages = match messages_for(&self.parts, &claimed).await {
            Ok(messages) => Some(messages),
            Err(e) => {
                // Put them back; the next claim waits out the outage.
                self.parts.health.failed(&e, "reading queued messages");
                None
            }
        };
        for row in claimed {
            // Every claimed row holds a slot until its settlement is
            // written, whether it is sent or put off: memory stays bounded
            // however long the queue is.
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("the request semaphore is never closed");
            match self.clear(row, messages.as_ref()) {
                Verdict::Send(cleared) => self.start_request(cleared, permit),
                Verdict::Settle(row, settled) => self.put_back(row, settled, permit),
            }
        }
        if drained {
            idle(&self.parts, &self.wake, &self.stop.claiming).await;
        }
    }

    /// Waits for a free request slot; how many rows to claim (at least
    /// one, at most a batch), or None when told to stop.
    async fn free_slots(&self) -> Option<usize> {
        tokio::select! {
            () = self.stop.claiming.cancelled() => None,
            permit = self.permits.clone().acquire_owned() => {
                drop(permit.expect("the request semaphore is never closed"));
                Some(self.permits.available_permits().clamp(1, CLAIM_BATCH))
            }
        }
    }

    async fn wait_out_outage(&mut self) {
        sleep_or(
            &self.stop.claiming,
            backoff::DATABASE_RETRY.delay(self.outage),
        )
        .await;
        self.outage = self.outage.saturating_add(1);
    }

    /// Whether `row` may be sent now, or how it settles without a request:
    /// put off while its message cannot be read or its push service is
    /// paused, failed when its send is gone, expired past its TTL.
    fn clear(
        &self,
        row: Claimed,
        messages: Option<&HashMap<(String, String), Arc<Prepared>>>,
    ) -> Verdict {
        let Some(messages) = messages else {
            let after = backoff::DATABASE_RETRY.max;
            return Verdict::Settle(
                row,
                Settled::Deferred {
                    after,
                    cause: crate::store::UNREADABLE,
                },
            );
        };
        let key = (row.package.clone(), row.command_id.clone());
        let Some(message) = messages.get(&key).cloned() else {
            tracing::error!(
                command_id = row.command_id,
                package = row.package,
                "a queued delivery has no command; dropping it"
            );
            return Verdict::Settle(row, Settled::Failed("lost".into()));
        };
        let now = now_ms();
        if now >= message.expires_ms {
            return Verdict::Settle(row, Settled::Expired);
        }
        let endpoint = Endpoint::parse(&row.endpoint).ok();
        let origin = endpoint.as_ref().map(Endpoint::origin);
        let admitted = origin
            .as_deref()
            .map_or(Admit::Go, |origin| self.breakers.admit(origin, now));
        if let Admit::Wait(until) = admitted {
            let settled = if until >= message.expires_ms {
                Settled::Expired
            } else {
                Settled::Deferred {
                    after: Duration::from_millis(until.saturating_sub(now)),
                    cause: crate::store::PAUSED,
                }
            };
            return Verdict::Settle(row, settled);
        }
        Verdict::Send(Cleared {
            row,
            message,
            endpoint,
            origin,
            probe: admitted == Admit::Probe,
        })
    }

    fn put_back(&self, row: Claimed, settled: Settled, permit: OwnedSemaphorePermit) {
        let settlement = Settlement {
            claimed: row,
            settled,
        };
        let _ = self.settled.send((settlement, permit));
    }

    /// Spawns the request of a cleared row; it settles the row when done.
    /// A request abandoned at stop settles nothing: its row stays leased
    /// and comes due again.
    fn start_request(&mut self, cleared: Cleared, permit: OwnedSemaphorePermit) {
        let request = Request {
            parts: self.parts.clone(),
            tracker: self.tracker.clone(),
            breakers: self.breakers.clone(),
            settled: self.settled.clone(),
        };
        let abandon = self.stop.abandon.clone();
        self.requests.spawn(async move {
            let attempt = tokio::select! {
                () = abandon.cancelled() => return,
                attempt = request.send(&cleared) => attempt,
            };
            request.settle(cleared, attempt, permit).await;
        });
    }
}

/// What one request needs of the engine.
struct Request {
    parts: Arc<EngineParts>,
    tracker: Arc<Tracker>,
    breakers: Arc<Breakers>,
    settled: mpsc::UnboundedSender<ToRecord>,
}

impl Request {
    /// Sends one push once its send's event is out.
    async fn send(&self, cleared: &Cleared) -> Attempt {
        let parts = &self.parts;
        // Live listeners hear of a notification first.
        parts
            .hand_off
            .wait(&cleared.row.package, &cleared.row.command_id)
            .await;
        let started = std::time::Instant::now();
        let attempt = send_one(
            &parts.client,
            cleared.endpoint.as_ref(),
            &cleared.row,
            &cleared.message,
            parts.receipts.as_deref(),
        )
        .await;
        parts.stats.latency.observe(started.elapsed());
        attempt
    }

    /// Tells the metrics, the breaker and the tracker how the attempt
    /// went, and hands the row's settlement to the recorder.
    async fn settle(self, cleared: Cleared, attempt: Attempt, permit: OwnedSemaphorePermit) {
        let Cleared {
            row,
            message,
            endpoint,
            origin,
            probe,
        } = cleared;
        let parts = &self.parts;
        // The host only, for the metrics: the endpoint is a capability.
        let host = endpoint
            .as_ref()
            .and_then(|e| e.url().host_str())
            .unwrap_or("unknown");
        parts.stats.pushes.add(host, push_class(&attempt));
        if let Some(origin) = origin.as_deref() {
            self.breakers
                .record(origin, health(&attempt), probe, now_ms());
            if let Ok(Outcome::Delivered) = &attempt {
                self.tracker.delivered_by(&row.package, origin, now_ms());
            }
        }
        let settled = match settle_as(&parts.retry, &row, &message, attempt) {
            Settled::Failed(cause) if is_refusal(&cause) => {
                refused(parts, &self.tracker, &row, origin.as_deref(), cause).await
            }
            other => other,
        };
        let settlement = Settlement {
            claimed: row,
            settled,
        };
        let _ = self.settled.send((settlement, permit));
    }
}

/// Forgets finished sends older than the de-duplication window, and
/// receipts older than their tokens, every `PURGE_EVERY`.
async fn purge(parts: Arc<EngineParts>, stop: CancellationToken) {
    loop {
        let before = now_ms().saturating_sub(ms(parts.dedup_window));
        match parts.store.purge_commands(before).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(
                purged,
                "forgot finished sends past the de-duplication window"
            ),
            Err(e) => parts.health.failed(&e, "forgetting old sends"),
        }
        // Receipts of pushes whose tokens are no longer taken at all (a day
        // past their age: daemons' clocks may differ).
        let before = now_ms().saturating_sub((receipt::MAX_AGE_SECS + 24 * 3600) * 1000);
        if let Err(e) = parts.store.purge_receipts(before).await {
            parts.health.failed(&e, "forgetting old receipts");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PURGE_EVERY) => {}
        }
    }
}

/// Publishes the result reports and events that a daemon which died left
/// handed to its broker and never acknowledged. The next start of that
/// daemon would publish them too, but with several daemons sharing the work
/// it may never start again, and a send it finished would then never be
/// reported; a report published twice carries its send's id.
///
/// Only while this daemon's own connection has been up since the last look:
/// right after a reconnect its own reports handed during the outage are
/// still on their way, and a daemon cut off from the broker cannot publish
/// anything anyway.
async fn adopt(parts: Arc<EngineParts>, stop: CancellationToken) {
    let mut broker = parts.broker.clone();
    let mut was_up = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ADOPT_EVERY) => {}
        }
        // A change since the last look, even down and up again, starts over.
        let steady = matches!(broker.has_changed(), Ok(false));
        let up = *broker.borrow_and_update();
        let connected_throughout = was_up && up && steady;
        was_up = up;
        if !connected_throughout {
            continue;
        }
        let before = now_ms().saturating_sub(ms(ORPHANED_AFTER));
        if let Err(e) = republish_unacknowledged(&parts, before).await {
            parts
                .health
                .failed(&e, "publishing what a daemon that died left unacknowledged");
        }
    }
}

/// Keeps the leases of this daemon's deliveries from running out while
/// their requests are in flight: a lease ends only when its daemon does.
async fn renew(parts: Arc<EngineParts>, working: Working, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(crate::store::RENEW_EVERY) => {}
        }
        if let Err(e) = parts.store.renew(&parts.owner, &working.seqs()).await {
            parts
                .health
                .failed(&e, "renewing the leases of deliveries in flight");
        }
    }
}

/// Waits for a new send, the next due retry, or the idle poll.
async fn idle(parts: &EngineParts, wake: &Wake, stop: &CancellationToken) {
    let delay = match parts.store.next_due(&parts.owner).await {
        Ok(Some(after)) => after.min(IDLE_POLL),
        Ok(None) | Err(_) => IDLE_POLL,
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = wake.0.notified() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

/// The messages of a claim's rows: from the hand-over cache, and those it
/// does not hold (see `messages`) from the database, in one statement for
/// the whole claim. A send missing from the answer is gone.
async fn messages_for(
    parts: &EngineParts,
    rows: &[Claimed],
) -> Result<HashMap<(String, String), Arc<Prepared>>, crate::store::StoreError> {
    let mut claimed_per_send: HashMap<(String, String), u64> = HashMap::new();
    for row in rows {
        *claimed_per_send
            .entry((row.package.clone(), row.command_id.clone()))
            .or_default() += 1;
    }
    let mut found: HashMap<(String, String), Arc<Prepared>> = HashMap::new();
    let mut missing: Vec<(String, String)> = Vec::new();
    for (key, claimed) in claimed_per_send {
        // Every claimed row counts towards its message leaving the cache.
        match parts.messages.take(&key.0, &key.1, claimed) {
            Some(message) => {
                found.insert(key, message);
            }
            None => missing.push(key),
        }
    }
    for (package, id, m) in parts.store.queued_messages(&missing).await? {
        let signer = match Package::parse(&package) {
            Ok(package) => parts.signers.for_package(&package).clone(),
            Err(_) => parts.signers.default_signer().clone(),
        };
        let prepared = Arc::new(Prepared {
            payload: Arc::from(m.payload),
            ttl: m.ttl,
            urgency: serde_json::from_value(serde_json::Value::String(m.urgency))
                .unwrap_or_default(),
            topic: m.topic.map(Arc::from),
            expires_ms: m.expires_ms,
            signer,
        });
        found.insert((package, id), prepared);
    }
    Ok(found)
}

/// Why an attempt never reached the push service.
#[derive(Debug, thiserror::Error)]
pub enum NotSent {
    #[error("the stored endpoint is not a usable URL")]
    Endpoint,
    #[error("the stored keys cannot be used")]
    Keys,
    #[error(transparent)]
    Push(#[from] PushError),
}

impl NotSent {
    /// The key a result report counts this failure under.
    pub fn failure_key(&self) -> &'static str {
        match self {
            NotSent::Endpoint => "endpoint",
            NotSent::Keys => "keys",
            NotSent::Push(e) => e.failure_key(),
        }
    }
}

/// One attempt: the push service's answer, or why no request went out.
pub type Attempt = Result<Outcome, NotSent>;

/// Rows written by older software are decoded here, at their first use; a
/// row that cannot be used is a failed delivery, never a crash.
async fn send_one(
    client: &PushClient,
    endpoint: Option<&Endpoint>,
    row: &Claimed,
    message: &Prepared,
    receipts: Option<&Receipts>,
) -> Attempt {
    let endpoint = endpoint.ok_or(NotSent::Endpoint)?;
    let keys = SubscriptionKeys::parse(
        row.p256dh.as_deref().unwrap_or_default(),
        row.auth.as_deref().unwrap_or_default(),
    )
    .map_err(|_| NotSent::Keys)?;
    let with_receipt = receipts.and_then(|r| with_receipt(r, row, message));
    client
        .send(
            endpoint,
            &keys,
            Message {
                payload: with_receipt.as_deref().unwrap_or(&message.payload),
                // A retry asks the push service to keep the message only
                // for what is left of its TTL.
                ttl: remaining_ttl(message.ttl, message.expires_ms, now_ms()),
                urgency: message.urgency,
                topic: message.topic.as_deref(),
            },
            &message.signer,
        )
        .await
        .map_err(|e| {
            tracing::warn!(origin = endpoint.origin(), error = %e, "push not sent");
            NotSent::Push(e)
        })
}

/// This push's payload with its receipt token. `None` for a send recorded
/// while receipts were off, whose payload has no room left for one: it
/// goes without.
fn with_receipt(receipts: &Receipts, row: &Claimed, message: &Prepared) -> Option<Vec<u8>> {
    let token = receipts.key.issue(
        &row.package,
        &row.user,
        &row.command_id,
        &receipt::subscription_id(&row.package, &row.endpoint),
        message.accepted_ms() / 1000,
    );
    let clicks = receipts.interactions;
    let len = message.payload.len() + payload::receipt_len(token.len(), clicks);
    (len <= crate::push::ece::MAX_PLAINTEXT)
        .then(|| payload::with_receipt(&message.payload, &token, clicks))
}

/// An attempt's outcome as a metrics class (see `stats::PUSH_CLASSES`).
fn push_class(attempt: &Attempt) -> &'static str {
    use crate::push::RetryCause;
    match attempt {
        Ok(Outcome::Delivered) => "2xx",
        Ok(Outcome::Gone(_)) => "gone",
        Ok(Outcome::Retry { cause, .. }) => match cause {
            RetryCause::Status(429) => "429",
            RetryCause::Status(_) => "5xx",
            RetryCause::Timeout => "timeout",
            RetryCause::Connection => "connection",
        },
        Ok(Outcome::TooLarge) => "413",
        Ok(Outcome::Rejected(_)) => "4xx",
        Err(not_sent) => match not_sent.failure_key() {
            "413" => "413",
            "policy" => "policy",
            _ => "other",
        },
    }
}

/// What an attempt says about its push service, for the breaker. Every
/// attempt has an answer here, so none can leave a probe unrecorded.
fn health(attempt: &Attempt) -> breaker::Health {
    match attempt {
        Ok(Outcome::Retry { cause, after }) => breaker::Health::Struggling {
            cause: *cause,
            retry_after: *after,
        },
        Ok(Outcome::Delivered | Outcome::Gone(_) | Outcome::TooLarge | Outcome::Rejected(_)) => {
            breaker::Health::Answering
        }
        Err(_) => breaker::Health::NotAsked,
    }
}

/// What an attempt means for the queue.
fn settle_as(retry: &Backoff, row: &Claimed, message: &Prepared, attempt: Attempt) -> Settled {
    match attempt {
        Ok(Outcome::Delivered) => Settled::Delivered,
        Ok(Outcome::Gone(_)) => Settled::Gone,
        Ok(outcome @ Outcome::Retry { after, .. }) => {
            match next_attempt(retry, row.attempts, after, now_ms(), message.expires_ms) {
                Some(after) => Settled::Retry {
                    after,
                    cause: outcome.failure_key().unwrap_or_else(|| "other".into()),
                },
                None => Settled::Expired,
            }
        }
        Ok(other) => Settled::Failed(other.failure_key().unwrap_or_else(|| "other".into())),
        Err(not_sent) => Settled::Failed(not_sent.failure_key().to_owned()),
    }
}

/// A push service's answer that refuses a push for good for a reason that
/// may be the subscription's own: a 4xx status other than 404/410 (gone),
/// 413 (our payload) and 429 (come back later).
fn is_refusal(cause: &str) -> bool {
    cause
        .parse::<u16>()
        .is_ok_and(|status| (400..500).contains(&status) && status != 413 && status != 429)
}

/// The subscription's stable id (`list` shows it as text, health is keyed
/// by it).
fn subscription_of(row: &Claimed) -> [u8; 16] {
    receipt::subscription_id(&row.package, &row.endpoint)
}

/// Records a refusal in the subscription's health and decides whether the
/// subscription is now stale: refused for it alone (its push service took
/// others' pushes lately), in a run that started `expire_after` ago or
/// more. A wrong VAPID key (refused for everyone), an outage, our endpoint
/// policy or a push service that only answers 429/5xx never starts a run,
/// and a refusal that does not count ends one.
async fn refused(
    parts: &EngineParts,
    tracker: &Tracker,
    row: &Claimed,
    origin: Option<&str>,
    cause: String,
) -> Settled {
    let now = now_ms();
    let id = subscription_of(row);
    tracker.forget(id);
    let counted = origin.is_some_and(|origin| tracker.others_delivered(&row.package, origin, now));
    let event = HealthEvent {
        package: row.package.clone(),
        subscription: receipt::subscription_text(&id),
        user: row.user.clone(),
        origin: origin.map(str::to_owned),
        at_ms: now,
        outcome: HealthOutcome::Failed(cause.clone()),
    };
    match parts.store.record_refusal(&event, counted).await {
        Ok(Some(since)) if counted && now.saturating_sub(since) >= ms(parts.expire_after) => {
            tracing::info!(
                package = row.package,
                user = row.user,
                subscription = event.subscription,
                origin,
                cause,
                refused_for = %humantime::format_duration(Duration::from_secs(now.saturating_sub(since) / 1000)),
                "subscription deactivated as stale: its push service refuses its pushes and takes others'"
            );
            Settled::Stale
        }
        Ok(_) => Settled::Failed(cause),
        Err(e) => {
            // Health is a record, not the delivery: the push still counts.
            tracing::warn!(error = %e, "could not record a refused push in its subscription's health");
            Settled::Failed(cause)
        }
    }
}

/// The health events of a written batch: deliveries (once in a while per
/// subscription, see `Tracker`) and failures other than refusals, which
/// `refused` recorded as they came.
fn health_events(tracker: &Tracker, batch: &[Settlement], now: u64) -> Vec<HealthEvent> {
    let mut events = Vec::new();
    for Settlement { claimed, settled } in batch {
        let outcome = match settled {
            Settled::Delivered => HealthOutcome::Delivered,
            Settled::Failed(cause) if !is_refusal(cause) => HealthOutcome::Failed(cause.clone()),
            Settled::Expired => HealthOutcome::Failed("expired".into()),
            Settled::Gone => HealthOutcome::Failed("gone".into()),
            _ => continue,
        };
        let id = subscription_of(claimed);
        match outcome {
            HealthOutcome::Delivered => {
                if !tracker.write_delivery(id, now) {
                    continue;
                }
            }
            HealthOutcome::Failed(_) => tracker.forget(id),
        }
        events.push(HealthEvent {
            package: claimed.package.clone(),
            subscription: receipt::subscription_text(&id),
            user: claimed.user.clone(),
            origin: Endpoint::parse(&claimed.endpoint).ok().map(|e| e.origin()),
            at_ms: now,
            outcome,
        });
    }
    events
}

/// How long to wait before trying again after the `previous + 1`-th failed
/// request: the backoff, and never less than the service's `Retry-After`.
/// `None` when that ends past the message's expiry.
pub fn next_attempt(
    retry: &Backoff,
    previous: u32,
    retry_after: Option<Duration>,
    now_ms: u64,
    expires_ms: u64,
) -> Option<Duration> {
    let delay = retry.delay(previous).max(retry_after.unwrap_or_default());
    (now_ms.saturating_add(ms(delay)) < expires_ms).then_some(delay)
}

/// Seconds of `ttl` left at `now_ms` for a message expiring at `expires_ms`,
/// rounded up: a first attempt, moments after the send, carries it whole.
fn remaining_ttl(ttl: u32, expires_ms: u64, now_ms: u64) -> u32 {
    let left = expires_ms.saturating_sub(now_ms).div_ceil(1000);
    ttl.min(u32::try_from(left).unwrap_or(u32::MAX))
}

/// Writes settlements back in batches and publishes the reports they make
/// due. Runs until every claimer and request is gone, then drains. Each
/// round: [`collect`] a batch, [`write`] it (retrying while the database
/// is away), count it and record the subscriptions' health, free its
/// slots, and [`follow_up`] with the reports it made due.
async fn record(
    parts: Arc<EngineParts>,
    tracker: Arc<Tracker>,
    mut settled: mpsc::UnboundedReceiver<ToRecord>,
    permits: Arc<Semaphore>,
    working: Working,
    abandon: CancellationToken,
) {
    let mut batch = Vec::with_capacity(SETTLE_BATCH);
    let mut slots = Vec::with_capacity(SETTLE_BATCH);
    while let Some(first) = settled.recv().await {
        collect(
            &parts,
            &permits,
            &mut settled,
            first,
            &mut batch,
            &mut slots,
        )
        .await;
        let Some((due, failed_at)) = write(&parts, &batch, &abandon).await else {
            // Stopping past the grace period with the database still
            // away: these rows stay leased, and the next run sends them
            // again.
            return;
        };
        count(&parts.stats, &batch);
        let events = health_events(&tracker, &batch, now_ms());
        if let Err(e) = parts.store.record_health(&events).await {
            // A record for people to read, not the delivery: not retried.
            tracing::warn!(error = %e, pushes = events.len(), "could not record subscriptions' health");
        }
        working.remove(batch.iter().map(|s| s.claimed.seq));
        batch.clear();
        slots.clear();
        follow_up(&parts, &due, failed_at).await;
    }
}

/// Takes `first` and whatever else has arrived, up to a batch; with other
/// requests in flight, more answers are on their way, and a moment's wait
/// turns many small transactions into one.
async fn collect(
    parts: &EngineParts,
    permits: &Semaphore,
    settled: &mut mpsc::UnboundedReceiver<ToRecord>,
    first: ToRecord,
    batch: &mut Vec<Settlement>,
    slots: &mut Vec<OwnedSemaphorePermit>,
) {
    let mut next = Some(first);
    let mut lingered = false;
    loop {
        while let Some((settlement, slot)) = next.take() {
            batch.push(settlement);
            slots.push(slot);
            if batch.len() < SETTLE_BATCH {
                next = settled.try_recv().ok();
            }
        }
        let elsewhere = parts
            .concurrency
            .saturating_sub(permits.available_permits() + slots.len());
        if lingered || batch.len() >= SETTLE_BATCH || elsewhere == 0 {
            return;
        }
        lingered = true;
        tokio::time::sleep(SETTLE_LINGER).await;
        next = settled.try_recv().ok();
    }
}

/// Settles `batch` in the store, retrying while the database is
/// unavailable: the commands it made due, and when the first failed try
/// was (see `follow_up`). `None` when abandoned meanwhile.
async fn write(
    parts: &EngineParts,
    batch: &[Settlement],
    abandon: &CancellationToken,
) -> Option<(Vec<CommandState>, Option<u64>)> {
    let mut outage: u32 = 0;
    let mut failed_at = None;
    loop {
        let at = now_ms();
        match parts.store.settle(&parts.owner, batch, at).await {
            Ok(due) => {
                parts.health.ok();
                return Some((due, failed_at));
            }
            // Kept, not dropped: until they are written these rows stay
            // leased to us and nobody sends them again.
            Err(e) => {
                failed_at = Some(at);
                parts.health.failed(&e, "recording deliveries");
                tokio::select! {
                    () = abandon.cancelled() => return None,
                    () = tokio::time::sleep(backoff::DATABASE_RETRY.delay(outage)) => {}
                }
                outage = outage.saturating_add(1);
            }
        }
    }
}

/// Publishes the reports a settled batch made due; after a settle that
/// failed first (at `failed_at`), also what may have been lost with it.
async fn follow_up(parts: &EngineParts, due: &[CommandState], failed_at: Option<u64>) {
    for state in due {
        publish_report(parts, state).await;
    }
    if let Some(at) = failed_at {
        // A settle that failed may have failed only to say that it
        // committed (the connection dropped with the COMMIT on its
        // way): its rows are gone, and so is its answer — the reports
        // it made due and marked as handed to the broker at `at`,
        // which nobody then hands. Whatever was handed by then and
        // never acknowledged goes out again; a report published twice
        // carries its send's id.
        if let Err(e) = republish_unacknowledged(parts, at + 1).await {
            // Left for the next run's start, which publishes them.
            parts
                .health
                .failed(&e, "publishing again what the broker never acknowledged");
        }
    }
}

/// Publishes again the results and events handed to the broker before
/// `before_ms` and never acknowledged.
async fn republish_unacknowledged(
    parts: &EngineParts,
    before_ms: u64,
) -> Result<(), crate::store::StoreError> {
    let (reports, events) = parts.store.take_unpublished(before_ms, now_ms()).await?;
    if !reports.is_empty() || !events.is_empty() {
        tracing::info!(
            reports = reports.len(),
            events = events.len(),
            "publishing again what the broker never acknowledged"
        );
    }
    for event in events {
        republish_event(parts, event).await;
    }
    for state in &reports {
        publish_report(parts, state).await;
    }
    Ok(())
}

fn count(stats: &Stats, batch: &[Settlement]) {
    for s in batch {
        let counter = match s.settled {
            Settled::Delivered => &stats.delivered,
            Settled::Gone => &stats.deactivated,
            Settled::Failed(_) => &stats.failed,
            Settled::Stale => {
                Stats::add(&stats.stale, 1);
                &stats.failed
            }
            Settled::Expired => &stats.expired,
            Settled::Retry { .. } => &stats.retried,
            Settled::Deferred { .. } => continue,
        };
        Stats::add(counter, 1);
    }
}

/// The result report of a recorded send.
pub fn report(state: &CommandState) -> ResultReport {
    ResultReport {
        subscriptions: state.subscriptions,
        delivered: state.delivered,
        failed: state.failed,
        deactivated: state.deactivated,
        expired: state.expired,
        queued: state.pending,
        failures: state.failures(),
        retries: state.retries(),
        members: state.members,
        ..ResultReport::accepted(state.id.clone(), "send")
    }
}

/// The package and target of a recorded send, parsed again; `None`, and
/// logged, when either no longer parses (a table edited by hand): its
/// `what` (result or event) is then not published.
fn recorded_route(id: &str, package: &str, target: &str, what: &str) -> Option<(Package, Target)> {
    match (Package::parse(package), Target::parse(target)) {
        (Ok(package), Ok(target)) => Some((package, target)),
        _ => {
            tracing::error!(
                command_id = id,
                package,
                target,
                "a recorded send has a package or target that no longer parses; its {what} is not published"
            );
            None
        }
    }
}

/// Hands a send's result report to egress; the ledger records it once the
/// broker has acknowledged it.
async fn publish_report(parts: &EngineParts, state: &CommandState) {
    let Some((package, target)) =
        recorded_route(&state.id, &state.package, &state.target, "result")
    else {
        return;
    };
    let report = report(state);
    tracing::info!(
        command_id = report.id,
        package = %package,
        target = %target,
        delivered = report.delivered,
        failed = report.failed,
        deactivated = report.deactivated,
        expired = report.expired,
        queued = report.queued,
        "send {}",
        if report.queued == 0 { "finished" } else { "tried once; retries queued" }
    );
    let out = Outgoing {
        topic: parts.topics.result(&package, &target),
        payload: report.to_json(),
        retain: false,
    };
    let receipt = parts.ledger.receipt(Published::Report {
        package: state.package.clone(),
        id: state.id.clone(),
        is_final: state.pending == 0,
    });
    if parts.egress.publish_confirmed(out, receipt).await.is_err() {
        tracing::warn!(
            command_id = report.id,
            "result not handed to the broker: the daemon is stopping; the next run publishes it"
        );
    }
}

/// Publishes again an event a previous run recorded but the broker never
/// acknowledged; a group's event goes to its members as they are now.
async fn republish_event(parts: &EngineParts, unpublished: UnpublishedEvent) {
    let Some((package, target)) = recorded_route(
        &unpublished.id,
        &unpublished.package,
        &unpublished.target,
        "event",
    ) else {
        return;
    };
    let users: Vec<User> = match &target {
        Target::User(user) => vec![user.clone()],
        Target::Group(group) => match parts.store.members(&package, group).await {
            Ok(users) => users,
            Err(e) => {
                // Taken again by a later start.
                parts
                    .health
                    .failed(&e, "reading a group to publish its event");
                return;
            }
        },
    };
    publish_event(
        &parts.egress,
        &parts.topics,
        &parts.ledger,
        &package,
        &unpublished.id,
        &users,
        unpublished.event.into(),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_4xx_refusal_of_the_subscription_can_make_it_stale() {
        for cause in ["400", "401", "403", "406", "451"] {
            assert!(is_refusal(cause), "{cause}");
        }
        // Our payload (413), come back later (429), the push service's
        // trouble (5xx, timeouts, connections), our policy, unusable rows
        // and lost leases say nothing about the subscription.
        for cause in [
            "413",
            "429",
            "500",
            "503",
            "timeout",
            "connection",
            "policy",
            "keys",
            "endpoint",
            "lost",
            "paused",
        ] {
            assert!(!is_refusal(cause), "{cause}");
        }
    }

    const RETRY: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn a_retry_is_never_sooner_than_retry_after() {
        let after = next_attempt(&RETRY, 0, Some(Duration::from_secs(30)), 0, u64::MAX).unwrap();
        assert!(after >= Duration::from_secs(30), "{after:?}");
    }

    #[test]
    fn retries_back_off_exponentially() {
        let after = next_attempt(&RETRY, 4, None, 0, u64::MAX).unwrap();
        assert!(
            (Duration::from_secs(8)..=Duration::from_secs(24)).contains(&after),
            "{after:?}"
        );
    }

    #[test]
    fn a_retry_carries_what_is_left_of_the_ttl() {
        assert_eq!(remaining_ttl(60, 60_000, 0), 60);
        assert_eq!(remaining_ttl(60, 60_000, 45_500), 15);
        assert_eq!(remaining_ttl(60, 60_000, 7), 60);
        assert_eq!(remaining_ttl(60, 60_000, 61_000), 0);
    }

    #[test]
    fn no_retry_past_the_messages_expiry() {
        assert_eq!(next_attempt(&RETRY, 0, None, 0, 400), None);
        assert_eq!(
            next_attempt(&RETRY, 0, Some(Duration::from_secs(3600)), 0, 60_000),
            None
        );
    }
}

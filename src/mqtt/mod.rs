//! The daemon's MQTT client: connection, intake, acknowledgements, egress.
//!
//! Three tasks share one rumqttc client:
//! - the *event loop* drives the connection: it reconnects with exponential
//!   backoff and jitter (rumqttc alone retries at once, forever),
//!   (re)subscribes and republishes the retained topics on every connect,
//!   passes commands on without ever waiting for the stages behind it, and
//!   publishes results and events from the egress channel through the
//!   `outbox::Outbox`, which tells each publication's receipt when
//!   the broker has acknowledged it; on stop it publishes what is left,
//!   says goodbye on the status topic and disconnects;
//! - the *dispatcher* hands each command to [`Processor::handle_message`]
//!   in arrival order (a send is recorded in the delivery queue, not
//!   delivered, there);
//! - the *acker* acknowledges each command once it is handled — recorded,
//!   and its answer acknowledged by the broker (on the embedded broker:
//!   applied, see `ProcessorParts::ack_once_applied`) — in arrival order
//!   (manual acks: a command the daemon has not finished is redelivered
//!   after a crash).
//!
//! Backpressure reaches the broker, not memory: unacknowledged commands are
//! bounded by the broker's in-flight window, and publications wait in the
//! bounded egress channel while the outbox is full.

mod ack;
mod outbox;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions,
    NetworkOptions, QoS, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::{self, Backoff};
use crate::command::{self, Processor};
use crate::config::MqttSettings;
use crate::report::{Outgoing, Publication, Receipt};
use crate::stats::Stats;
use ack::AckEvent;
use outbox::Outbox;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Requests queued towards rumqttc's event loop: the outbox's window of
/// publishes, plus acks and subscriptions.
const REQUEST_CAPACITY: usize = 1024;
/// rumqttc's limit on unacknowledged publishes. Twice the outbox's window:
/// rumqttc reuses packet ids modulo this limit, so with half of them in use
/// at most, an id is never needed again while still unacknowledged.
const INFLIGHT: u16 = 2 * outbox::WINDOW as u16;
/// MQTT's own maximum packet size. The client accepts anything the broker
/// forwards: refusing a packet would drop the connection, the broker would
/// redeliver it, and one oversized command would wedge the daemon. Commands
/// over `limits.max_command_bytes` are answered with an error instead.
const MAX_INCOMING_PACKET: usize = 268_435_455;
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// QoS 0 commands read from the broker and not yet handled, at most, by
/// count and by bytes. Beyond, they are dropped (counted, and warned about
/// once a minute): QoS 0 promises nothing, and the alternative — to stop
/// reading from the broker — would also stop the pings, acks and publishes
/// that share the connection. QoS 1 commands need no such bound: the
/// broker sends no more than its in-flight window until the daemon
/// acknowledges them.
const QOS0_BACKLOG: usize = 10_000;
const QOS0_BACKLOG_BYTES: usize = 16 << 20;
const DROP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Commands taken from the intake at once, at most.
const DISPATCH_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The URL is not repeated: without a host, its password (if any) is
    /// not where `store::redact_url` looks for one. Config loading refuses
    /// such a URL first, masked.
    #[error("axion_push.mqtt.url has no host")]
    NoHost,
    #[error("cannot read axion_push.mqtt.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// Client options for the configured broker. `embedded` is the embedded
/// broker's address, used when no URL is configured.
pub fn options(
    settings: &MqttSettings,
    embedded: Option<SocketAddr>,
    client_id: &str,
) -> Result<MqttOptions, MqttError> {
    let mut options = match &settings.url {
        Some(url) => {
            let host = url
                .host_str()
                .ok_or(MqttError::NoHost)?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let tls = matches!(url.scheme(), "mqtts" | "ssl");
            let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
            let mut options = MqttOptions::new(client_id, host, port);
            if tls {
                options.set_transport(match &settings.ca_file {
                    Some(path) => {
                        let ca = std::fs::read(path).map_err(|e| MqttError::CaFile {
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        })?;
                        Transport::tls(ca, None, None)
                    }
                    None => Transport::tls_with_default_config(),
                });
            }
            options
        }
        None => {
            let addr = embedded.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1883)));
            // A broker listening on every interface is reached on loopback.
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                addr.ip().to_string()
            };
            MqttOptions::new(client_id, host, addr.port())
        }
    };
    options
        .set_keep_alive(settings.keep_alive.max(Duration::from_secs(5)))
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_INCOMING_PACKET)
        .set_inflight(INFLIGHT)
        .set_request_channel_capacity(REQUEST_CAPACITY);
    if let Some(user) = &settings.username {
        let password = settings.password.as_ref().map_or("", |p| p.expose());
        options.set_credentials(user.clone(), password.to_owned());
    }
    Ok(options)
}

/// TCP options for every connection to the broker. Nagle's algorithm would
/// hold a small publish (an event, a result) back until the previous one is
/// acknowledged — up to the peer's delayed-ACK timer, tens of milliseconds.
pub fn network_options() -> NetworkOptions {
    let mut options = NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
}

/// What the daemon's session publishes besides results.
pub struct Session {
    pub options: MqttOptions,
    /// The ingress filters, subscribed on every connect.
    pub ingress_filters: Vec<String>,
    /// Retained messages published on every connect (VAPID keys, status).
    pub announcements: Vec<Outgoing>,
    /// The status published on a clean stop, also set as the Last Will.
    pub farewell: Outgoing,
}

/// Handles to the running client.
pub struct Client {
    /// True while connected and subscribed.
    pub subscribed: watch::Receiver<bool>,
    /// The dispatcher.
    pub commands: TaskTracker,
}

/// The client's stop signals, in the order the daemon gives them.
#[derive(Clone, Default)]
pub struct Lifecycle {
    /// Stop taking commands; what arrives afterwards stays unacked and is
    /// redelivered to the next run.
    pub intake: CancellationToken,
    /// Every command stage is done: flush results and acks, publish the
    /// offline status and disconnect.
    pub finish: CancellationToken,
    /// End every task now.
    pub hard_stop: CancellationToken,
}

/// Starts the client's tasks on `tracker`. `subscribed_tx` is told whenever
/// the client is connected and subscribed, and whenever it no longer is.
pub fn spawn(
    mut session: Session,
    processor: Processor,
    egress: mpsc::Receiver<Publication>,
    subscribed_tx: watch::Sender<bool>,
    stats: Arc<Stats>,
    tracker: &TaskTracker,
    lifecycle: Lifecycle,
) -> Client {
    session.options.set_clean_session(false);
    session.options.set_manual_acks(true);
    session.options.set_last_will(LastWill::new(
        session.farewell.topic.clone(),
        session.farewell.payload.clone(),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(session.options.clone(), REQUEST_CAPACITY);
    eventloop.set_network_options(network_options());
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let subscribed = subscribed_tx.subscribe();
    let commands = TaskTracker::new();

    tracker.spawn(ack::run(client.clone(), acks_rx));
    let backlog = Arc::new(Backlog::default());
    commands.spawn(dispatch(
        processor,
        commands_rx,
        acks_tx.clone(),
        backlog.clone(),
        lifecycle.intake.clone(),
    ));
    tracker.spawn(drive(
        eventloop,
        client,
        Arc::new(session),
        Intake {
            commands: commands_tx,
            acks: acks_tx,
            open: lifecycle.intake,
            backlog,
            stats,
        },
        egress,
        subscribed_tx,
        lifecycle.finish,
        lifecycle.hard_stop,
    ));
    Client {
        subscribed,
        commands,
    }
}

struct Inbound {
    seq: Option<u64>,
    /// MQTT DUP: the broker delivers this message again.
    redelivered: bool,
    topic: String,
    payload: bytes::Bytes,
}

struct Intake {
    commands: mpsc::UnboundedSender<Inbound>,
    acks: mpsc::UnboundedSender<AckEvent>,
    open: CancellationToken,
    backlog: Arc<Backlog>,
    stats: Arc<Stats>,
}

/// QoS 0 commands between the event loop and the dispatcher.
#[derive(Debug, Default)]
struct Backlog {
    count: AtomicUsize,
    bytes: AtomicUsize,
}

impl Backlog {
    /// Takes room for a command of `len` bytes; false when there is none.
    fn admit(&self, len: usize) -> bool {
        if self.count.load(Ordering::Acquire) >= QOS0_BACKLOG
            || self.bytes.load(Ordering::Acquire).saturating_add(len) > QOS0_BACKLOG_BYTES
        {
            return false;
        }
        self.count.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(len, Ordering::AcqRel);
        true
    }

    fn release(&self, len: usize) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }
}

/// Counts dropped QoS 0 commands and warns at most once a minute.
#[derive(Default)]
struct Drops {
    since_warning: u64,
    warned_at: Option<tokio::time::Instant>,
}

impl Drops {
    /// Counts a command dropped at `now`; warns when the last warning is
    /// a minute old or there was none. Returns the number the warning gave
    /// (the drops since the previous one), `None` when it kept quiet.
    fn drop_one(&mut self, stats: &Stats, now: tokio::time::Instant) -> Option<u64> {
        Stats::add(&stats.dropped, 1);
        self.since_warning += 1;
        if self
            .warned_at
            .is_some_and(|at| now.duration_since(at) < DROP_WARNING_EVERY)
        {
            return None;
        }
        let dropped = self.since_warning;
        tracing::warn!(
            dropped,
            backlog = QOS0_BACKLOG,
            "QoS 0 commands dropped: the daemon's intake is full (the database is slow or away); publish commands with QoS 1 to have the broker hold them instead"
        );
        self.since_warning = 0;
        self.warned_at = Some(now);
        Some(dropped)
    }
}

/// Reconnect delays: a broken broker is not hammered, and a fleet of
/// daemons does not reconnect in lockstep after a broker restart.
const RECONNECT: Backoff = Backoff {
    initial: BACKOFF_START,
    max: BACKOFF_MAX,
};

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!(
            "the broker refused the connection ({code:?}); check axion_push.mqtt.username, password and client_id"
        ),
        other => other.to_string(),
    }
}

/// Where the event loop is in stopping.
enum Stopping {
    /// Running.
    No,
    /// Publishing what is left and waiting for the broker to acknowledge it.
    Flushing,
    /// Waiting for the acker to hand over the last command acks.
    Acks(tokio::sync::oneshot::Receiver<()>),
    /// Waiting for the broker to acknowledge the offline status.
    Farewell(tokio::sync::oneshot::Receiver<()>),
    /// `DISCONNECT` requested.
    Disconnecting,
}

/// The event loop: connection, subscription, intake, egress.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    session: Arc<Session>,
    intake: Intake,
    mut egress: mpsc::Receiver<Publication>,
    subscribed: watch::Sender<bool>,
    finish: CancellationToken,
    hard_stop: CancellationToken,
) {
    let broker = format!(
        "{}:{}",
        session.options.broker_address().0,
        session.options.broker_address().1
    );
    let mut outbox = Outbox::default();
    let mut connected = false;
    let mut egress_open = true;
    let mut stopping = Stopping::No;
    let mut failures: u32 = 0;
    let mut seq: u64 = 0;
    let mut drops = Drops::default();
    loop {
        // Handed only here, between two polls: see the outbox's notes.
        if connected {
            let handing = outbox.hand();
            let count = handing.len();
            for (i, out) in handing.into_iter().enumerate() {
                if client
                    .try_publish(
                        out.topic,
                        QoS::AtLeastOnce,
                        out.retain,
                        out.payload.to_vec(),
                    )
                    .is_err()
                {
                    // The request channel is full (acks share it; this task
                    // owns the event loop, so it is never closed): what did
                    // not fit goes back, and is handed after the next event.
                    outbox.give_back(count - i);
                    break;
                }
            }
        }
        if let Stopping::Flushing = stopping
            && outbox.is_empty()
        {
            let (flushed_tx, flushed_rx) = tokio::sync::oneshot::channel();
            if intake.acks.send(AckEvent::Flush(flushed_tx)).is_err() {
                return;
            }
            stopping = Stopping::Acks(flushed_rx);
        }
        let take = connected && egress_open && outbox.has_room();
        let event = tokio::select! {
            biased;
            () = hard_stop.cancelled() => return,
            () = finish.cancelled(), if matches!(stopping, Stopping::No) => {
                // No command stage runs any more: what is queued is all
                // there is.
                while let Ok(publication) = egress.try_recv() {
                    outbox.push(publication);
                }
                egress_open = false;
                stopping = Stopping::Flushing;
                continue;
            }
            _ = async {
                match &mut stopping {
                    Stopping::Acks(rx) | Stopping::Farewell(rx) => rx.await,
                    _ => std::future::pending().await,
                }
            } => {
                stopping = match stopping {
                    Stopping::Acks(_) => {
                        let (said_tx, said_rx) = tokio::sync::oneshot::channel();
                        outbox.push(Publication {
                            out: session.farewell.clone(),
                            receipt: Some(Receipt::new(move || {
                                let _ = said_tx.send(());
                            })),
                        });
                        Stopping::Farewell(said_rx)
                    }
                    _ => {
                        let _ = client.try_disconnect();
                        Stopping::Disconnecting
                    }
                };
                continue;
            }
            publication = egress.recv(), if take => {
                match publication {
                    Some(publication) => outbox.push(publication),
                    None => egress_open = false,
                }
                continue;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                if failures > 0 {
                    tracing::info!(
                        broker,
                        attempts = failures,
                        "reconnected to the MQTT broker"
                    );
                } else {
                    tracing::info!(
                        broker,
                        session_present = ack.session_present,
                        "connected to the MQTT broker"
                    );
                }
                failures = 0;
                connected = true;
                outbox.connected(ack.session_present);
                let _ = intake.acks.send(AckEvent::Reset);
                // Subscribing again when the broker kept the session is
                // harmless, and covers a filter changed since the last run.
                // Queued on the event loop itself, ahead of everything: the
                // request channel may be full of acks at this moment.
                eventloop.pending.push_front(rumqttc::Request::Subscribe(
                    rumqttc::Subscribe::new_many(
                        session
                            .ingress_filters
                            .iter()
                            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
                    ),
                ));
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if granted {
                    tracing::info!(filters = ?session.ingress_filters, "subscribed to commands");
                    subscribed.send_replace(true);
                    // "online" once commands can reach the daemon.
                    for out in session.announcements.iter().rev() {
                        outbox.push_first(out.clone());
                    }
                } else {
                    tracing::error!(
                        filters = ?session.ingress_filters,
                        "the broker refused the subscription to commands (check its ACLs)"
                    );
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Some(receipt) = outbox.acknowledged(ack.pkid) {
                    receipt.confirm();
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => outbox.written(pkid),
            Ok(Event::Outgoing(rumqttc::Outgoing::AwaitAck(pkid))) => outbox.held_back(pkid),
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                if intake.open.is_cancelled() {
                    // Stopping: leave it unacked; the broker redelivers it.
                    continue;
                }
                let tracked = if publish.qos == QoS::AtMostOnce {
                    if !intake.backlog.admit(publish.payload.len()) {
                        drops.drop_one(&intake.stats, tokio::time::Instant::now());
                        continue;
                    }
                    None
                } else {
                    seq += 1;
                    let _ = intake.acks.send(AckEvent::Track(seq, publish.clone()));
                    Some(seq)
                };
                let _ = intake.commands.send(Inbound {
                    seq: tracked,
                    redelivered: publish.dup,
                    topic: publish.topic,
                    payload: publish.payload,
                });
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                connected = false;
                subscribed.send_replace(false);
                if !matches!(stopping, Stopping::No) && failures > 0 {
                    // Stopping and the broker is gone: what is left stays
                    // in the database for the next run.
                    return;
                }
                if failures == 0 {
                    tracing::warn!(broker, error = %describe(&e), "MQTT connection lost; reconnecting with backoff");
                } else {
                    tracing::debug!(broker, error = %describe(&e), attempt = failures, "MQTT reconnect failed");
                }
                let delay = RECONNECT.delay(failures);
                failures = failures.saturating_add(1);
                tokio::select! {
                    () = hard_stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Hands commands to the processor in arrival order and acknowledges each
/// once handled. While the database is unavailable it holds the command
/// (unacknowledged) and tries it again with backoff: the commands behind it
/// wait in the broker, bounded by its in-flight window.
async fn dispatch(
    processor: Processor,
    mut commands: mpsc::UnboundedReceiver<Inbound>,
    acks: mpsc::UnboundedSender<AckEvent>,
    backlog: Arc<Backlog>,
    intake: CancellationToken,
) {
    // Whatever has arrived is handled together: consecutive sends are then
    // recorded in one transaction (see `Processor::handle_many`).
    let mut pending: Vec<Inbound> = Vec::new();
    let mut attempt: u32 = 0;
    loop {
        if pending.is_empty() {
            tokio::select! {
                () = intake.cancelled() => break,
                inbound = commands.recv() => match inbound {
                    Some(inbound) => pending.push(inbound),
                    None => break,
                },
            }
        }
        while pending.len() < DISPATCH_BATCH
            && let Ok(inbound) = commands.try_recv()
        {
            pending.push(inbound);
        }
        let messages: Vec<command::Inbound<'_>> = pending
            .iter()
            .map(|m| command::Inbound {
                topic: &m.topic,
                payload: &m.payload,
                redelivered: m.redelivered,
            })
            .collect();
        // Acknowledged once its answer is: a crash before that and the
        // broker delivers the command again.
        let answered = |k: usize| match pending[k].seq {
            Some(seq) => {
                let acks = acks.clone();
                Receipt::new(move || {
                    let _ = acks.send(AckEvent::Done(seq));
                })
            }
            None => Receipt::none(),
        };
        let handled = processor.handle_many(&messages, answered).await;
        drop(messages);
        for done in pending.drain(..handled) {
            if done.seq.is_none() {
                backlog.release(done.payload.len());
            }
        }
        if pending.is_empty() {
            attempt = 0;
        } else {
            // The database is unavailable: the rest stay unacknowledged
            // and are handled again (when stopping, by the next run).
            tokio::select! {
                () = intake.cancelled() => return,
                () = tokio::time::sleep(backoff::DATABASE_RETRY.delay(attempt)) => {}
            }
            attempt = attempt.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_broker_is_reached_on_loopback() {
        let settings = MqttSettings::default();
        let o = options(&settings, Some("0.0.0.0:1999".parse().unwrap()), "id").unwrap();
        assert_eq!(o.broker_address(), ("127.0.0.1".to_owned(), 1999));
    }

    #[test]
    fn a_url_without_a_host_is_refused_without_repeating_it() {
        let settings = MqttSettings {
            url: Some("mqtt:svc:hunter2@broker".parse().unwrap()),
            ..MqttSettings::default()
        };
        let error = options(&settings, None, "id").unwrap_err().to_string();
        assert!(error.contains("axion_push.mqtt.url"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn an_external_url_sets_host_port_and_credentials() {
        let settings = MqttSettings {
            url: Some("mqtt://broker.example:1884".parse().unwrap()),
            username: Some("svc".into()),
            password: Some(crate::config::Secret::new("pw")),
            ..MqttSettings::default()
        };
        let o = options(&settings, None, "id").unwrap();
        assert_eq!(o.broker_address(), ("broker.example".to_owned(), 1884));
        assert_eq!(o.credentials().map(|l| l.username), Some("svc".to_owned()));
    }

    #[test]
    fn dropped_qos0_commands_are_warned_about_at_most_once_a_minute() {
        let stats = Stats::default();
        let mut drops = Drops::default();
        let start = tokio::time::Instant::now();
        let at = |secs: f64| start + Duration::from_secs_f64(secs);
        assert_eq!(drops.drop_one(&stats, at(0.0)), Some(1), "the first drop");
        assert_eq!(drops.drop_one(&stats, at(1.0)), None);
        assert_eq!(drops.drop_one(&stats, at(59.9)), None);
        assert_eq!(
            drops.drop_one(&stats, at(60.0)),
            Some(3),
            "a minute on: the drops since the last warning"
        );
        assert_eq!(drops.drop_one(&stats, at(119.9)), None);
        assert_eq!(drops.drop_one(&stats, at(120.0)), Some(2));
        assert_eq!(drops.drop_one(&stats, at(500.0)), Some(1));
        assert_eq!(
            stats.dropped.load(Ordering::Relaxed),
            7,
            "every drop counts"
        );
    }
}

//! The daemon's MQTT client: connection, intake, acknowledgements, egress.
//!
//! Four tasks share one rumqttc client:
//! - the *event loop* drives the connection: it reconnects with exponential
//!   backoff and jitter (rumqttc alone retries at once, forever),
//!   (re)subscribes and republishes the retained topics on every connect, and
//!   passes commands on without ever waiting for the stages behind it;
//! - the *dispatcher* hands each command to [`Processor::handle`] in arrival
//!   order (a send is recorded in the delivery queue, not delivered, there);
//! - the *acker* acknowledges each command once handled, in arrival order
//!   (manual acks: a command the daemon has not handled is redelivered after a
//!   crash);
//! - the *forwarder* publishes results and events from the egress channel,
//!   and on stop says goodbye on the status topic and disconnects.
//!
//! Backpressure reaches the broker, not memory: unacknowledged commands are
//! bounded by the broker's in-flight window.

mod ack;

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

use crate::backoff::Backoff;
use crate::command::{Handled, Processor};
use crate::config::MqttSettings;
use crate::report::Outgoing;
use ack::AckEvent;

/// Requests queued towards rumqttc's event loop.
const REQUEST_CAPACITY: usize = 1024;
/// MQTT's own maximum packet size. The client accepts anything the broker
/// forwards: refusing a packet would drop the connection, the broker would
/// redeliver it, and one oversized command would wedge the daemon. Commands
/// over `limits.max_command_bytes` are answered with an error instead.
const MAX_INCOMING_PACKET: usize = 268_435_455;
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Handling a command again while the database is unavailable.
const DATABASE_RETRY: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("axion_push.mqtt.url '{0}' has no host")]
    NoHost(String),
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
                .ok_or_else(|| MqttError::NoHost(url.to_string()))?
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
    /// The ingress filter, subscribed on every connect.
    pub ingress_filter: String,
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

/// Starts the client's tasks on `tracker`.
pub fn spawn(
    mut session: Session,
    processor: Processor,
    egress: mpsc::Receiver<Outgoing>,
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
    let (subscribed_tx, subscribed) = watch::channel(false);
    let commands = TaskTracker::new();

    tracker.spawn(ack::run(client.clone(), acks_rx));
    commands.spawn(dispatch(
        processor,
        commands_rx,
        acks_tx.clone(),
        lifecycle.intake.clone(),
    ));
    tracker.spawn(forward(
        client.clone(),
        subscribed.clone(),
        egress,
        session.farewell.clone(),
        acks_tx.clone(),
        lifecycle.finish.clone(),
        lifecycle.hard_stop.clone(),
    ));
    tracker.spawn(drive(
        eventloop,
        client,
        Arc::new(session),
        Intake {
            commands: commands_tx,
            acks: acks_tx,
            open: lifecycle.intake,
        },
        subscribed_tx,
        tracker.clone(),
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

/// The event loop: connection, subscription, intake.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    session: Arc<Session>,
    intake: Intake,
    subscribed: watch::Sender<bool>,
    tracker: TaskTracker,
    hard_stop: CancellationToken,
) {
    let broker = format!(
        "{}:{}",
        session.options.broker_address().0,
        session.options.broker_address().1
    );
    let mut failures: u32 = 0;
    let mut seq: u64 = 0;
    loop {
        let event = tokio::select! {
            () = hard_stop.cancelled() => return,
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
                let _ = intake.acks.send(AckEvent::Reset);
                // Subscribing again when the broker kept the session is
                // harmless, and covers a filter changed since the last run.
                let client = client.clone();
                let session = session.clone();
                tracker.spawn(async move {
                    let _ = client
                        .subscribe(session.ingress_filter.clone(), QoS::AtLeastOnce)
                        .await;
                    for out in &session.announcements {
                        let _ = client
                            .publish_bytes(
                                out.topic.clone(),
                                QoS::AtLeastOnce,
                                out.retain,
                                out.payload.clone(),
                            )
                            .await;
                    }
                });
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if granted {
                    tracing::info!(filter = session.ingress_filter, "subscribed to commands");
                    subscribed.send_replace(true);
                } else {
                    tracing::error!(
                        filter = session.ingress_filter,
                        "the broker refused the subscription to commands (check its ACLs)"
                    );
                }
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                if intake.open.is_cancelled() {
                    // Stopping: leave it unacked; the broker redelivers it.
                    continue;
                }
                let tracked = if publish.qos == QoS::AtMostOnce {
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
                subscribed.send_replace(false);
                if intake.open.is_cancelled() && failures > 0 {
                    // Stopping and the broker is gone: nothing left to flush.
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
    intake: CancellationToken,
) {
    loop {
        let inbound = tokio::select! {
            () = intake.cancelled() => break,
            inbound = commands.recv() => match inbound {
                Some(inbound) => inbound,
                None => break,
            },
        };
        let mut attempt: u32 = 0;
        loop {
            match processor
                .handle_message(&inbound.topic, &inbound.payload, inbound.redelivered)
                .await
            {
                Handled::Done => {
                    if let Some(seq) = inbound.seq {
                        let _ = acks.send(AckEvent::Done(seq));
                    }
                    break;
                }
                Handled::Unavailable(_) => {
                    // Stopping: it stays unacknowledged for the next run.
                    tokio::select! {
                        () = intake.cancelled() => return,
                        () = tokio::time::sleep(DATABASE_RETRY.delay(attempt)) => {}
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }
}

/// Publishes egress; once told to finish, publishes what is left, waits for
/// the acks to go out, says goodbye and disconnects.
async fn forward(
    client: AsyncClient,
    connected: watch::Receiver<bool>,
    mut egress: mpsc::Receiver<Outgoing>,
    farewell: Outgoing,
    acks: mpsc::UnboundedSender<AckEvent>,
    finish: CancellationToken,
    hard_stop: CancellationToken,
) {
    // While the broker is away, results and events wait here, in order,
    // rather than in rumqttc's queue: rumqttc drops what it holds when the
    // broker comes back without our session.
    let publish = |out: Outgoing| {
        let client = client.clone();
        let mut connected = connected.clone();
        async move {
            // Err: the event loop is gone, the daemon is stopping.
            connected.wait_for(|up| *up).await.map_err(drop)?;
            client
                .publish_bytes(out.topic, QoS::AtLeastOnce, out.retain, out.payload)
                .await
                .map_err(drop)
        }
    };
    let run = async {
        loop {
            tokio::select! {
                biased;
                out = egress.recv() => match out {
                    Some(out) => {
                        if publish(out).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
                () = finish.cancelled() => break,
            }
        }
        // No command stage runs any more: what is queued is all there is.
        while let Ok(out) = egress.try_recv() {
            if publish(out).await.is_err() {
                return;
            }
        }
        let (flushed_tx, flushed_rx) = tokio::sync::oneshot::channel();
        if acks.send(AckEvent::Flush(flushed_tx)).is_ok() {
            let _ = flushed_rx.await;
        }
        let _ = publish(farewell).await;
        let _ = client.disconnect().await;
    };
    tokio::select! {
        () = hard_stop.cancelled() => {}
        () = run => {}
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
}

//! The load generator: one MQTT client of the benchmark's own that
//! publishes the send commands (QoS 1, as Axion's services do) in a burst
//! or at a steady rate, and watches the daemon's retained status topic to
//! learn when a daemon it started is online.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::{Notify, watch};

use crate::push_service::now_ns;

/// Where every daemon announces itself (`axion_push.mqtt.topic_prefix` is
/// empty here).
const STATUS: &str = "axion/push/daemon/status";

/// How the sends of a run are published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// All at once, as fast as the broker takes them.
    Burst,
    /// `per_second` sends a second, evenly spaced.
    Steady { per_second: u32 },
}

pub struct LoadGenerator {
    client: AsyncClient,
    /// The last `state` each daemon instance announced.
    states: Arc<Mutex<HashMap<String, String>>>,
    announced: Arc<Notify>,
}

fn options(broker: SocketAddr, client_id: String, clean: bool) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
    options
        .set_clean_session(clean)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000)
        .set_request_channel_capacity(4096)
        .set_max_packet_size(1 << 20, 1 << 20);
    options
}

impl LoadGenerator {
    /// Connects, subscribes to the status topic, and returns once the
    /// broker has granted it.
    pub async fn connect(broker: SocketAddr) -> LoadGenerator {
        let id = format!("load-generator-{}", uuid::Uuid::new_v4().simple());
        let (client, mut eventloop) = AsyncClient::new(options(broker, id, true), 4096);
        eventloop.set_network_options(axion_push::mqtt::network_options());
        let states = Arc::new(Mutex::new(HashMap::new()));
        let announced = Arc::new(Notify::new());
        let (subscribed_tx, mut subscribed) = watch::channel(false);
        {
            let client = client.clone();
            let states = states.clone();
            let announced = announced.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                            let _ = client.try_subscribe(STATUS, QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Incoming::SubAck(_))) => {
                            subscribed_tx.send_replace(true);
                        }
                        Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == STATUS => {
                            let status: serde_json::Value =
                                serde_json::from_slice(&p.payload).unwrap_or_default();
                            if let (Some(instance), Some(state)) =
                                (status["instance"].as_str(), status["state"].as_str())
                            {
                                states
                                    .lock()
                                    .unwrap()
                                    .insert(instance.to_owned(), state.to_owned());
                                announced.notify_waiters();
                            }
                        }
                        Ok(_) => {}
                        // Lives as long as the benchmark's runtime.
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
        }
        tokio::time::timeout(Duration::from_secs(10), subscribed.wait_for(|s| *s))
            .await
            .expect("the load generator subscribes within 10 s")
            .unwrap();
        LoadGenerator {
            client,
            states,
            announced,
        }
    }

    /// Waits until daemon `instance` announces `state`; false after
    /// `timeout`.
    pub async fn wait_for_state(&self, instance: &str, state: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let announced = self.announced.notified();
            if self
                .states
                .lock()
                .unwrap()
                .get(instance)
                .map(String::as_str)
                == Some(state)
            {
                return true;
            }
            if tokio::time::timeout_at(deadline, announced).await.is_err() {
                return false;
            }
        }
    }

    /// Publishes `messages` (topic, payload) at `pace`; returns when each
    /// was handed to the client, in nanoseconds since the Unix epoch.
    pub async fn publish(&self, messages: &[(String, Bytes)], pace: Pace) -> Vec<u64> {
        let mut published = Vec::with_capacity(messages.len());
        let start = tokio::time::Instant::now();
        let period = match pace {
            Pace::Burst => Duration::ZERO,
            Pace::Steady { per_second } => Duration::from_secs(1) / per_second,
        };
        for (i, (topic, payload)) in messages.iter().enumerate() {
            if !period.is_zero() {
                tokio::time::sleep_until(start + period * i as u32).await;
            }
            published.push(now_ns());
            self.client
                .publish_bytes(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("the load generator publishes");
        }
        published
    }
}

/// Ends the broker's session of `client_id` (a daemon connects with
/// `clean_session = false`): a session left behind would queue every later
/// command, the baselines' included, for the next daemon to deliver.
pub async fn forget_session(broker: SocketAddr, client_id: &str) {
    let (client, mut eventloop) = AsyncClient::new(options(broker, client_id.to_owned(), true), 4);
    let forget = async {
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Incoming::ConnAck(_)) => {
                    let _ = client.try_disconnect();
                }
                Event::Outgoing(Outgoing::Disconnect) => return,
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), forget).await;
}

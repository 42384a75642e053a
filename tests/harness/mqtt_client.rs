//! A test's own MQTT client: publishes commands and records everything it
//! receives, so a test can await a message instead of sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::sync::{Notify, watch};

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{} carries no JSON ({e}): {:?}", self.topic, self.payload))
    }
}

/// Sees topics without the run's prefix (`axion_push.mqtt.topic_prefix`),
/// so tests read the same whether the broker is their own or shared.
#[derive(Clone)]
pub struct TestClient {
    client: AsyncClient,
    prefix: String,
    seen: Arc<Mutex<Vec<Message>>>,
    arrived: Arc<Notify>,
}

impl TestClient {
    /// Connects and subscribes to `filters`; returns once the broker has
    /// confirmed the subscription. Reconnects (and resubscribes) by itself.
    pub async fn connect(host: &str, port: u16, filters: &[String]) -> TestClient {
        Self::connect_under(host, port, "", filters).await
    }

    /// Like [`TestClient::connect`], with every topic under `prefix`.
    pub async fn connect_under(
        host: &str,
        port: u16,
        prefix: &str,
        filters: &[String],
    ) -> TestClient {
        Self::connect_with(host, port, prefix, filters, None, None).await
    }

    /// Like [`TestClient::connect`], logging in as `user`.
    pub async fn connect_as(
        host: &str,
        port: u16,
        (user, password): (&str, &str),
        filters: &[String],
    ) -> TestClient {
        Self::connect_with(host, port, "", filters, None, Some((user, password))).await
    }

    /// A client whose session the broker keeps (`clean_session = false`
    /// under `session` as its client id): what it publishes is sent again
    /// after a reconnect until acknowledged, and what is published for it
    /// while it is away is queued by a persistent broker.
    pub async fn connect_persistent(
        host: &str,
        port: u16,
        session: &str,
        filters: &[String],
    ) -> TestClient {
        Self::connect_with(host, port, "", filters, Some(session), None).await
    }

    pub async fn connect_with(
        host: &str,
        port: u16,
        prefix: &str,
        filters: &[String],
        session: Option<&str>,
        login: Option<(&str, &str)>,
    ) -> TestClient {
        let id = session.map_or_else(|| format!("test-{}", uuid::Uuid::new_v4()), str::to_owned);
        let mut options = MqttOptions::new(id, host, port);
        options.set_clean_session(session.is_none());
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        options.set_max_packet_size(16 << 20, 16 << 20);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        eventloop.set_network_options(axion_push::mqtt::network_options());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (subscribed_tx, mut subscribed) = watch::channel(false);
        {
            let client = client.clone();
            let seen = seen.clone();
            let arrived = arrived.clone();
            let filters: Vec<String> = filters.iter().map(|f| format!("{prefix}{f}")).collect();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                            for f in &filters {
                                let _ = client.try_subscribe(f.as_str(), QoS::AtLeastOnce);
                            }
                        }
                        Ok(Event::Incoming(Incoming::SubAck(_))) => {
                            subscribed_tx.send_replace(true);
                        }
                        Ok(Event::Incoming(Incoming::Publish(p))) => {
                            let topic = p.topic.strip_prefix(prefix.as_str()).unwrap_or(&p.topic);
                            seen.lock().unwrap().push(Message {
                                topic: topic.to_owned(),
                                payload: p.payload.clone(),
                                retain: p.retain,
                            });
                            arrived.notify_waiters();
                        }
                        Ok(_) => {}
                        // The task lives as long as the test's runtime.
                        Err(_) => {
                            subscribed_tx.send_replace(false);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        tokio::time::timeout(Duration::from_secs(10), subscribed.wait_for(|s| *s))
            .await
            .expect("the test client subscribes within 10 s")
            .unwrap();
        TestClient {
            client,
            prefix: prefix.to_owned(),
            seen,
            arrived,
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(
                format!("{}{topic}", self.prefix),
                QoS::AtLeastOnce,
                false,
                payload.into(),
            )
            .await
            .expect("the test client publishes");
    }

    /// Removes the broker's retained message on `topic`.
    pub async fn clear_retained(&self, topic: &str) {
        self.client
            .publish(
                format!("{}{topic}", self.prefix),
                QoS::AtLeastOnce,
                true,
                Vec::new(),
            )
            .await
            .expect("the test client publishes");
    }

    /// Returns once the broker has handled everything published before:
    /// a marker published now comes back after all of it (MQTT keeps one
    /// client's messages in order). Needs a subscription covering `axion/#`.
    pub async fn flush(&self) {
        let marker = format!("axion/harness-flush/{}", uuid::Uuid::new_v4());
        let from = self.count();
        self.publish(&marker, Vec::new()).await;
        self.wait_for(from, "the flush marker", Duration::from_secs(15), |m| {
            m.topic == marker
        })
        .await;
    }

    pub fn messages(&self) -> Vec<Message> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The first message from index `from` on that matches; fails showing
    /// every topic seen when none arrives within `timeout`.
    pub async fn wait_for(
        &self,
        from: usize,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Message) -> bool,
    ) -> Message {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            if let Some(found) = self.messages().into_iter().skip(from).find(|m| matches(m)) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen: Vec<String> = self
                    .messages()
                    .iter()
                    .skip(from)
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
                    .collect();
                panic!("no {what} within {timeout:?}; seen since: {seen:#?}");
            }
        }
    }
}

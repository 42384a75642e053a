//! Everything an integration test needs, on loopback, with nothing installed:
//! a daemon on a temporary SQLite database and the embedded broker (port 0),
//! a push service that decrypts what it receives, simulated browsers with
//! real P-256 keys, and an MQTT client recording every message.
#![allow(dead_code)]

pub mod alone;
pub mod browser_login;
pub mod database;
pub mod mosquitto;
pub mod mqtt_client;
pub mod proxy;
pub mod push_service;

use std::path::PathBuf;
use std::time::Duration;

use axion_push::config::{Config, Secret};
use axion_push::daemon::Daemon;
use axion_push::model::{Package, Target, User};
use axion_push::store::Store;
use axion_push::topics::{Topics, Verb};
use serde_json::Value;

#[allow(unused_imports)]
pub use mqtt_client::{Message, TestClient};
#[allow(unused_imports)]
pub use push_service::{Browser, PushService, Received, Reply};

/// How long a test waits for anything the daemon does.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| format!("warn,{}", axion_push::cli::QUIET_BROKER).into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    /// The daemon's database, on the backend the tests run on.
    pub database: database::TestDatabase,
    pub push: PushService,
    pub mqtt: TestClient,
    pub config: Config,
    pub topics: Topics,
    daemon: Option<Daemon>,
}

/// A config for tests: temporary files, port 0, the loopback push service
/// allowed explicitly (https with its own root, private addresses, any
/// port).
pub fn test_config(dir: &std::path::Path, push: &PushService) -> Config {
    let ca = dir.join("push-service-ca.pem");
    if !ca.exists() {
        std::fs::write(&ca, &push.ca_pem).unwrap();
    }
    let mut config = Config::default();
    config.push.email = Some("mailto:tests@example.com".into());
    let s = &mut config.settings;
    s.broker.listen = "127.0.0.1:0".parse().unwrap();
    s.database.url = format!("sqlite://{}", dir.join("axion-push.db").display());
    s.vapid_key_file = dir.join("vapid.pem");
    s.mqtt.client_id = format!("axion-push-{}", uuid::Uuid::new_v4());
    s.delivery.extra_root_ca = Some(ca);
    s.delivery.request_timeout = Duration::from_secs(5);
    // Retries within a test's patience; the backoff's shape is unit-tested.
    s.delivery.retry_initial = Duration::from_millis(100);
    s.delivery.retry_max = Duration::from_secs(1);
    s.endpoints.allow_hosts.push("127.0.0.1".into());
    // Every port: tests start more push services, each on a random port.
    s.endpoints.allow_ports = (1..=u16::MAX).collect();
    s.endpoints.allow_private_addresses = true;
    config
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test config changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Harness {
        Self::start_observed_at(None, tweak).await
    }

    /// Like [`Harness::start_with`]; the test's MQTT client connects to
    /// `observer` (plain, anonymous) instead of the daemon's broker address.
    pub async fn start_observed_at(
        observer: Option<std::net::SocketAddr>,
        tweak: impl FnOnce(&mut Config),
    ) -> Harness {
        let database = database::TestDatabase::create().await;
        Self::start_on(database, observer, tweak).await
    }

    /// Like [`Harness::start_observed_at`], on `database`.
    pub async fn start_on(
        database: database::TestDatabase,
        observer: Option<std::net::SocketAddr>,
        tweak: impl FnOnce(&mut Config),
    ) -> Harness {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let push = PushService::start().await;
        let mut config = test_config(dir.path(), &push);
        config.settings.database.url = database.url.clone();
        if let Some(url) = shared_broker() {
            // A broker shared with other runs: this test's own topic prefix.
            config.settings.mqtt.url = Some(url);
            config.settings.mqtt.topic_prefix =
                format!("axion-push-test/{}/", uuid::Uuid::new_v4());
        }
        tweak(&mut config);
        let broker = config
            .settings
            .mqtt
            .url
            .as_ref()
            .map_or("the embedded broker".to_owned(), |u| u.to_string());
        let daemon = tokio::time::timeout(WAIT, Daemon::start(config.clone()))
            .await
            .unwrap_or_else(|_| {
                panic!("the daemon did not subscribe within {WAIT:?}: is {broker} reachable?")
            })
            .expect("the daemon starts");
        let (host, port) = match observer {
            Some(addr) => (addr.ip().to_string(), addr.port()),
            None => broker_address(&config, &daemon),
        };
        let prefix = &config.settings.mqtt.topic_prefix;
        // The daemon's own login, when it has one (a broker may require it).
        let login = config.settings.mqtt.username.as_deref().map(|user| {
            let password = config
                .settings
                .mqtt
                .password
                .as_ref()
                .map_or("", |p| p.expose());
            (user, password)
        });
        let mqtt = TestClient::connect_with(
            &host,
            port,
            prefix,
            &["axion/#".into()],
            None,
            if observer.is_some() { None } else { login },
        )
        .await;
        // The test client strips and adds the prefix: tests name topics
        // without it.
        let topics = Topics::default();
        Harness {
            dir,
            database,
            push,
            mqtt,
            config,
            topics,
            daemon: Some(daemon),
        }
    }

    pub fn browser(&self, name: &str) -> Browser {
        self.push.browser(name)
    }

    /// Publishes a command and waits for its result report: the one with
    /// the command's `id` when it has one, else the next on the reply topic.
    pub async fn command(&self, topic: &str, payload: &[u8]) -> Value {
        let id = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
        let reply_topic = match topic.rsplit_once('/') {
            Some((base, _)) => format!("{base}/result"),
            None => panic!("{topic} has no verb"),
        };
        let from = self.mqtt.count();
        self.mqtt.publish(topic, payload.to_vec()).await;
        let result = self
            .mqtt
            .wait_for(from, &format!("result on {reply_topic}"), WAIT, |m| {
                m.topic == reply_topic
                    && id
                        .as_deref()
                        .is_none_or(|id| m.json()["id"].as_str() == Some(id))
            })
            .await;
        result.json()
    }

    pub fn command_topic(&self, package: &str, target: &str, verb: Verb) -> String {
        self.topics.command(
            &Package::parse(package).unwrap(),
            &Target::parse(target).unwrap(),
            verb,
        )
    }

    pub async fn subscribe(&self, package: &str, user: &str, browser: &Browser) -> Value {
        let result = self
            .command(
                &self.command_topic(package, user, Verb::Subscribe),
                browser.subscription().to_string().as_bytes(),
            )
            .await;
        assert_eq!(result["ok"], true, "subscribe failed: {result}");
        result
    }

    /// Sends `notification` (an `id` is added when it has none).
    pub async fn send(&self, package: &str, target: &str, mut notification: Value) -> Value {
        if notification.get("id").is_none() {
            notification["id"] = Value::String(uuid::Uuid::new_v4().to_string());
        }
        self.command(
            &self.command_topic(package, target, Verb::Send),
            notification.to_string().as_bytes(),
        )
        .await
    }

    /// Waits for the final result of send `id` (the one with `queued: 0`),
    /// however many came before it.
    pub async fn final_result(&self, package: &str, target: &str, id: &str) -> Value {
        let topic = format!(
            "{}/result",
            self.command_topic(package, target, Verb::Send)
                .rsplit_once('/')
                .unwrap()
                .0
        );
        self.mqtt
            .wait_for(0, &format!("the final result of {id}"), WAIT, |m| {
                m.topic == topic && m.json()["id"] == id && m.json()["queued"] == 0
            })
            .await
            .json()
    }

    /// A second handle on the daemon's database, for assertions.
    pub async fn store(&self) -> Store {
        Store::open(&self.config.settings.database).await.unwrap()
    }

    pub async fn subscription_rows(
        &self,
        user: &str,
    ) -> Vec<axion_push::store::StoredSubscription> {
        let store = self.store().await;
        let rows = store
            .subscriptions(&User::parse(user).unwrap(), None)
            .await
            .unwrap();
        store.close().await;
        rows
    }

    /// Writes a row straight into Axion's table, as other software (the
    /// Python module, an administrator) may have: nothing is validated.
    pub async fn insert_row_written_elsewhere(
        &self,
        package: &str,
        user: &str,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) {
        self.database
            .insert_rows(&[database::AxionRow {
                user,
                package,
                endpoint,
                p256dh: Some(p256dh),
                auth: Some(auth),
                created_at: Some("2025-01-01 00:00:00"),
                active: Some("Y"),
                ..database::AxionRow::default()
            }])
            .await;
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon is running")
    }

    /// Stops the daemon; what it returns keeps its files (key, database)
    /// until it is dropped.
    pub async fn stop(mut self) -> (tempfile::TempDir, database::TestDatabase) {
        if let Some(daemon) = self.daemon.take() {
            tokio::time::timeout(WAIT, daemon.shutdown())
                .await
                .expect("the daemon stops within the wait");
        }
        if shared_broker().is_some() {
            forget_session(&self.config).await;
            self.clear_retained().await;
        }
        (self.dir, self.database)
    }

    /// Leaves no retained messages of this test on a shared broker.
    async fn clear_retained(&self) {
        let mut topics = vec![self.topics.status(), self.topics.vapid(None)];
        topics.extend(
            self.config
                .packages
                .keys()
                .map(|p| self.topics.vapid(Some(p))),
        );
        for topic in topics {
            self.mqtt.clear_retained(&topic).await;
        }
        self.mqtt.flush().await;
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `AXION_PUSH_TEST_BROKER=mqtt://127.0.0.1:1883` runs the daemon tests
/// against that broker (the machine's Mosquitto in CI) instead of the
/// embedded one.
pub fn shared_broker() -> Option<url::Url> {
    let url = std::env::var("AXION_PUSH_TEST_BROKER").ok()?;
    Some(
        url.parse()
            .unwrap_or_else(|e| panic!("AXION_PUSH_TEST_BROKER={url}: {e}")),
    )
}

/// Ends the daemon's persistent session on a shared broker, so test runs
/// leave no sessions behind.
async fn forget_session(config: &Config) {
    let url = config.settings.mqtt.url.as_ref().expect("a shared broker");
    let mut options = rumqttc::MqttOptions::new(
        config.settings.mqtt.client_id.clone(),
        url.host_str().unwrap(),
        url.port().unwrap_or(1883),
    );
    options.set_clean_session(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 4);
    let forget = async {
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_)) = event {
                let _ = client.try_disconnect();
            }
            if let rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect) = event {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(WAIT, forget).await;
}

fn broker_address(config: &Config, daemon: &Daemon) -> (String, u16) {
    match (&config.settings.mqtt.url, daemon.embedded_broker()) {
        (Some(url), _) => (
            url.host_str().unwrap().to_owned(),
            url.port().unwrap_or(1883),
        ),
        (None, Some(broker)) => ("127.0.0.1".to_owned(), broker.listen.port()),
        (None, None) => unreachable!("no url means an embedded broker"),
    }
}

/// Credentials in a config are secrets; a helper for tests that set them.
pub fn secret(text: &str) -> Secret {
    Secret::new(text)
}

//! The command stage and the delivery engine without any MQTT: for tests
//! that drive [`axion_push::command::Processor`] directly (a closed egress,
//! MQTT flags such as DUP, properties over arbitrary commands).

/// The command stage and the delivery engine alone, on a temporary
/// database, with an egress nobody reads (no MQTT side at all).
pub struct Alone {
    pub processor: axion_push::command::Processor,
    pub push: super::PushService,
    pub stop: axion_push::delivery::Stop,
    pub engine: tokio_util::task::TaskTracker,
    /// What the stages hand to the MQTT side, when the test reads it (see
    /// [`Alone::with_egress`]).
    pub egress: Option<tokio::sync::mpsc::Receiver<axion_push::report::Publication>>,
    /// A sender on the same egress channel.
    pub egress_tx: axion_push::report::Egress,
    pub wake: axion_push::delivery::Wake,
    pub store: axion_push::store::Store,
    pub database: super::database::TestDatabase,
    _dir: tempfile::TempDir,
}

impl Alone {
    pub async fn start() -> Alone {
        let mut alone = Self::with_egress(4).await;
        alone.egress = None;
        alone
    }

    /// Like [`Alone::start`], with an egress channel of `capacity` that the
    /// test reads from `egress`.
    pub async fn with_egress(capacity: usize) -> Alone {
        use std::sync::Arc;
        use std::time::Duration;

        use axion_push::backoff::Backoff;
        use axion_push::command::{Processor, ProcessorParts};
        use axion_push::delivery::{self, EngineParts, Wake};
        use axion_push::push::{EndpointPolicy, PushClient, VapidSigners};
        use axion_push::report::Egress;
        use axion_push::store::{Health, Store};
        use axion_push::topics::Topics;

        super::init_logging();
        let dir = tempfile::tempdir().unwrap();
        let push = super::PushService::start().await;
        let mut config = super::test_config(dir.path(), &push);
        let database = super::database::TestDatabase::create().await;
        config.settings.database.url = database.url.clone();
        let s = &config.settings;
        let store = Store::open(&s.database).await.unwrap();
        store.migrate().await.unwrap();
        let policy = EndpointPolicy::new(&s.endpoints);
        let client = Arc::new(PushClient::new(&s.delivery, policy.clone()).unwrap());
        let vapid = axion_push::daemon::resolve_vapid(&config).unwrap();
        let (egress, receiver) = Egress::channel(capacity);
        let signers = Arc::new(VapidSigners::new(&vapid));
        let wake = Wake::default();
        let ledger = delivery::Ledger::spawn(
            store.clone(),
            Health::default(),
            &tokio_util::task::TaskTracker::new(),
            tokio_util::sync::CancellationToken::new(),
        );
        let hand_off = delivery::HandOff::default();
        let messages = delivery::Messages::default();
        let engine = tokio_util::task::TaskTracker::new();
        let stop = delivery::Stop::default();
        delivery::spawn(
            EngineParts {
                store: store.clone(),
                health: Health::default(),
                client,
                signers: signers.clone(),
                topics: Topics::default(),
                egress: egress.clone(),
                ledger: ledger.clone(),
                hand_off: hand_off.clone(),
                messages: messages.clone(),
                owner: "engine-alone".into(),
                concurrency: 8,
                retry: Backoff {
                    initial: Duration::from_millis(50),
                    max: Duration::from_secs(1),
                },
                pause_max: Duration::from_secs(60),
                dedup_window: Duration::from_secs(60),
                // No broker: nothing orphaned is adopted.
                broker: tokio::sync::watch::channel(false).1,
                receipts: None,
                expire_after: Duration::from_secs(60 * 24 * 3600),
                stats: Default::default(),
            },
            wake.clone(),
            stop.clone(),
            &engine,
        );
        let processor = Processor::new(ProcessorParts {
            store: store.clone(),
            topics: Topics::default(),
            egress: egress.clone(),
            wake: wake.clone(),
            ledger,
            hand_off,
            messages,
            owner: "engine-alone".into(),
            health: Health::default(),
            stats: Default::default(),
            signers,
            policy,
            max_command_bytes: 65536,
            max_subscriptions_per_user: 50,
            subscribe_tokens: None,
            receipts: None,
            default_ttl: 60,
            dedup_window: Duration::from_secs(60),
            ack_once_applied: false,
        });
        Alone {
            processor,
            push,
            stop,
            engine,
            egress: Some(receiver),
            egress_tx: egress,
            wake,
            store,
            database,
            _dir: dir,
        }
    }

    pub async fn subscribe(&self, name: &str) -> super::Browser {
        let b = self.push.browser(name);
        let subscribed = self
            .processor
            .handle(
                "axion/crm/push/alice/subscribe",
                b.subscription().to_string().as_bytes(),
            )
            .await;
        assert!(matches!(subscribed, axion_push::command::Handled::Done));
        b
    }

    pub async fn send(&self, payload: &[u8], redelivered: bool) {
        let sent = self
            .processor
            .handle_message(
                "axion/crm/push/alice/send",
                payload,
                redelivered,
                axion_push::report::Receipt::none(),
            )
            .await;
        assert!(
            matches!(sent, axion_push::command::Handled::Done),
            "{sent:?}"
        );
    }

    pub async fn stop(self) {
        self.stop.claiming.cancel();
        self.engine.close();
        self.engine.wait().await;
    }
}

//! Wiring: builds the running daemon from a [`Config`] in start order and
//! takes it down in stop order. It decides nothing a command depends on.
//!
//! Start: VAPID keys → store and migrations → embedded broker (unless an
//! external one is configured) → push client → delivery engine (resuming
//! the queue) → MQTT connected and subscribed.
//! Stop: stop taking commands → stop claiming deliveries and let requests
//! in flight finish within `shutdown_grace` (the rest stay in the queue for
//! the next run) → flush results → publish the offline status → disconnect
//! → close the database.
//! The caller owns the signal: `serve` wires SIGTERM/SIGINT to
//! [`Daemon::shutdown`], tests call it directly.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::broker::{self, EmbeddedBroker};
use crate::command::{Processor, ProcessorParts};
use crate::config::{Config, VapidPrivateKey, VapidRegistry};
use crate::delivery::{self, EngineParts, HandOff, Ledger, Messages, Wake};
use crate::mqtt::{self, Lifecycle, Session};
use crate::push::{EndpointPolicy, PushClient, VapidSigners};
use crate::report::{Egress, Outgoing};
use crate::stats::Stats;
use crate::store::{Health, Store};
use crate::topics::Topics;

/// Results and events waiting for the MQTT client.
const EGRESS_CAPACITY: usize = 4096;
/// After the grace period, how long flushing and disconnecting may take.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running daemon.
pub struct Daemon {
    broker: Option<EmbeddedBroker>,
    vapid: VapidRegistry,
    store: Store,
    tracker: TaskTracker,
    commands: TaskTracker,
    engine: TaskTracker,
    engine_stop: delivery::Stop,
    lifecycle: Lifecycle,
    grace: Duration,
    /// Whose leases this process's are (see [`lease_owner`]).
    owner: String,
    health: Health,
    stats: Arc<Stats>,
    /// True while connected to the broker and subscribed.
    broker_state: tokio::sync::watch::Receiver<bool>,
    /// The Prometheus endpoint's address, when `metrics.listen` is set.
    metrics_addr: Option<SocketAddr>,
    metrics_stop: tokio_util::sync::CancellationToken,
    /// The endpoint's task; it closes its open connections when stopped.
    metrics_task: Option<tokio::task::JoinHandle<()>>,
}

/// A cheap handle for watching a running daemon from outside (systemd's
/// watchdog and status line).
#[derive(Clone)]
pub struct Monitor {
    tracker: TaskTracker,
    commands: TaskTracker,
    engine: TaskTracker,
    health: Health,
    stats: Arc<Stats>,
    broker: tokio::sync::watch::Receiver<bool>,
}

impl Monitor {
    /// Every long-running task still runs: the MQTT event loop, acker,
    /// status publisher and the ledger of what the broker acknowledged; the
    /// dispatcher; the engine's claimer, recorder, purger and lease renewer.
    /// A task that panicked is gone.
    pub fn is_alive(&self) -> bool {
        self.tracker.len() >= 4 && !self.commands.is_empty() && self.engine.len() >= 4
    }

    pub fn status_line(&self) -> String {
        let database = if self.health.is_available() {
            "ok"
        } else {
            "unavailable"
        };
        let broker = if self.is_broker_connected() {
            "connected"
        } else {
            "disconnected"
        };
        format!(
            "{}; database {database}; broker {broker}",
            self.stats.summary()
        )
    }

    /// Connected to the broker and subscribed to commands.
    pub fn is_broker_connected(&self) -> bool {
        *self.broker.borrow()
    }
}

/// The name this process's delivery leases carry: its MQTT client id, for
/// whoever reads the queue, and a random part, because the default client
/// id is shared — two daemons left on defaults must never take each other's
/// deliveries for their own.
pub fn lease_owner(client_id: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{client_id}/{}", &random[..12])
}

/// Reads the first-run key, or creates it (mode 0600: it signs every push).
pub fn load_or_create_key_file(path: &Path) -> Result<VapidPrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => VapidPrivateKey::decode(&text)
            .map_err(|e| anyhow::anyhow!("the VAPID key file {} {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = VapidPrivateKey::generate();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).with_context(|| {
                format!(
                    "cannot create the VAPID key file {} (axion_push.vapid_key_file)",
                    path.display()
                )
            })?;
            file.write_all(key.to_pem().as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(
                file = %path.display(),
                public_key = key.public_key(),
                "generated a VAPID key pair; browsers subscribe with this public key"
            );
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot read the VAPID key file {} (axion_push.vapid_key_file)",
                path.display()
            )
        }),
    }
}

/// Warns about each file holding a secret that users other than the
/// daemon's may read: whoever reads the VAPID key can push to every
/// subscribed browser, the database's endpoints and auth secrets do the
/// same, and the config's passwords open the broker.
fn warn_about_readable_secrets(config: &Config) {
    for (path, what) in secret_files(config) {
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(&path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if readable_by_others(mode) {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "{what} holds secrets and is readable by other users: chmod 600 it"
                );
            }
        }
        #[cfg(not(unix))]
        let _ = (path, what);
    }
}

/// Every file holding a secret, with what it is: the config file when a
/// secret is written in it (a VAPID private key, the MQTT password or a
/// broker URL with one, the subscribe token secret, broker accounts), the
/// VAPID key files (named in the config, or the first-run one), and the
/// SQLite database.
fn secret_files(config: &Config) -> Vec<(std::path::PathBuf, &'static str)> {
    let s = &config.settings;
    let keys = || std::iter::once(&config.push).chain(config.packages.values());
    let in_config = keys().any(|k| {
        k.private_key
            .as_ref()
            .is_some_and(|key| key.file().is_none())
    }) || s.mqtt.password.is_some()
        || s.mqtt
            .url
            .as_ref()
            .is_some_and(|url| url.password().is_some())
        || s.subscribe_token_secret.is_some()
        || !s.broker.users.is_empty();
    let mut files = Vec::new();
    if in_config && let Some(source) = &config.source {
        files.push((source.clone(), "the config file"));
    }
    for key in keys().filter_map(|k| k.private_key.as_ref()) {
        if let Some(file) = key.file()
            && !files.iter().any(|(f, _)| f == file)
        {
            files.push((file.to_owned(), "the VAPID key file"));
        }
    }
    if config.push.private_key.is_none() {
        files.push((s.vapid_key_file.clone(), "the VAPID key file"));
    }
    // The file name as the store reads it from the URL.
    if let Ok(options) =
        <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&s.database.url)
    {
        files.push((options.get_filename().to_owned(), "the database"));
    }
    files
}

/// Makes the process non-dumpable as the daemon starts, before the VAPID
/// key file and the database are opened (the configuration, and any
/// password written inline in it, was read moments before): no core dump
/// (which would hold the VAPID private key and the database's auth secrets)
/// is written, and other processes of the same user cannot attach to it or
/// read its memory. Under systemd (`INVOCATION_ID` set) the unit's
/// `LimitCORE=0` does the first, and the process stays dumpable: a
/// non-dumpable process's `/proc/self` files belong to root, whom the
/// unit's `PrivateUsers=` leaves unmapped.
fn drop_dumpability() {
    if std::env::var_os("INVOCATION_ID").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(error = %e, "could not make the process non-dumpable: a core dump would hold secrets");
    }
}

/// Group or world may read a file of this mode.
fn readable_by_others(mode: u32) -> bool {
    mode & 0o044 != 0
}

/// The VAPID identities: `base.push`, or the key file when it has none.
pub fn resolve_vapid(config: &Config) -> Result<VapidRegistry> {
    let fallback = match &config.push.private_key {
        Some(_) => None,
        None => Some(load_or_create_key_file(&config.settings.vapid_key_file)?),
    };
    Ok(config.vapid_registry(fallback)?)
}

/// The retained status. While online it also says whether the database
/// answers: during an outage commands wait unacknowledged, and this is where
/// an operator (or a test) sees why.
fn status(state: &str, instance: &str, database: Option<bool>) -> bytes::Bytes {
    let mut status =
        json!({"state": state, "version": env!("CARGO_PKG_VERSION"), "instance": instance});
    if let Some(available) = database {
        status["database"] = json!(if available { "ok" } else { "unavailable" });
    }
    status.to_string().into()
}

/// Republishes the status whenever the database's availability changes.
async fn publish_database_state(
    mut available: tokio::sync::watch::Receiver<bool>,
    out: Egress,
    topic: String,
    instance: String,
    finish: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = finish.cancelled() => return,
            changed = available.changed() => if changed.is_err() { return },
        }
        let now = *available.borrow_and_update();
        let status = Outgoing {
            topic: topic.clone(),
            payload: status("online", &instance, Some(now)),
            retain: true,
        };
        if out.publish(status).await.is_err() {
            return;
        }
    }
}

fn announcements(topics: &Topics, vapid: &VapidRegistry, instance: &str) -> Vec<Outgoing> {
    let key =
        |public_key: &str| -> bytes::Bytes { json!({"public_key": public_key}).to_string().into() };
    let mut out = vec![Outgoing {
        topic: topics.vapid(None),
        payload: key(vapid.default.key.public_key()),
        retain: true,
    }];
    for (package, identity) in vapid.packages_with_own_key() {
        out.push(Outgoing {
            topic: topics.vapid(Some(package)),
            payload: key(identity.key.public_key()),
            retain: true,
        });
    }
    out.push(Outgoing {
        topic: topics.status(),
        payload: status("online", instance, Some(true)),
        retain: true,
    });
    out
}

/// Opens the database, brings its tables up to date and says what it is.
async fn open_store(settings: &crate::config::DatabaseSettings) -> Result<Store> {
    let store = Store::open(settings).await?;
    store.migrate().await?;
    let database = store.info().await?;
    tracing::info!(
        backend = database.backend.name(),
        version = database.version,
        url = crate::store::redact_url(&settings.url),
        "database ready"
    );
    if !database.skip_locked {
        tracing::warn!(
            backend = database.backend.name(),
            version = database.version,
            "this database has no FOR UPDATE SKIP LOCKED (MariaDB 10.6 and MySQL 8 have it): only one daemon may use it"
        );
    }
    Ok(store)
}

/// The embedded broker behind our gateway, which checks logins against
/// `broker.users`, the daemon's own account and subscribe tokens.
async fn start_embedded_broker(
    settings: &crate::config::Settings,
    stats: &Arc<Stats>,
    tokens: Option<Arc<crate::token::TokenKey>>,
) -> Result<broker::EmbeddedBroker> {
    let own = settings
        .mqtt
        .username
        .as_deref()
        .zip(settings.mqtt.password.as_ref());
    let gate = broker::Gate {
        logins: broker::Logins {
            accounts: broker::accounts(&settings.broker, own),
            tokens,
        },
        topics: Topics::new(settings.mqtt.topic_prefix.clone()),
        stats: stats.clone(),
    };
    Ok(broker::start(&settings.broker, gate).await?)
}

impl Daemon {
    /// Starts every part and returns once the daemon is subscribed to its
    /// commands. With an external broker that is down, it keeps retrying.
    pub async fn start(config: Config) -> Result<Daemon> {
        let settings = &config.settings;
        drop_dumpability();
        warn_about_readable_secrets(&config);
        let vapid = resolve_vapid(&config)?;
        tracing::info!(
            public_key = vapid.default.key.public_key(),
            "VAPID key loaded"
        );

        let store = open_store(&settings.database).await?;
        // Bound before anything else listens, so a taken port fails the
        // start at once, naming the key.
        let metrics_listener = match settings.metrics.listen {
            Some(addr) => Some(crate::metrics::bind(addr).await?),
            None => None,
        };

        for note in config.notes() {
            tracing::warn!(key = note.path, "{}", note.message);
        }
        let stats = Arc::new(Stats::default());
        let subscribe_tokens = settings
            .subscribe_token_secret
            .as_ref()
            .map(|secret| Arc::new(crate::token::TokenKey::new(secret.expose())));
        let broker = match settings.mqtt.url {
            Some(_) => None,
            None => Some(start_embedded_broker(settings, &stats, subscribe_tokens.clone()).await?),
        };

        // Derived from the default VAPID key: every daemon of the
        // installation shares it with no setting of its own.
        let receipts = settings.receipts.enabled.then(|| {
            Arc::new(crate::receipt::Receipts::new(
                crate::receipt::ReceiptKey::derive(&vapid.default.key.scalar()),
                settings.receipts.clicks,
            ))
        });
        let policy = EndpointPolicy::new(&settings.endpoints);
        let client = Arc::new(PushClient::new(&settings.delivery, policy.clone())?);
        let topics = Topics::new(settings.mqtt.topic_prefix.clone());
        let (egress, egress_rx) = Egress::channel(EGRESS_CAPACITY);
        let health = Health::default();
        let signers = Arc::new(VapidSigners::new(&vapid));
        let instance = settings.mqtt.client_id.clone();
        let owner = lease_owner(&instance);
        let wake = Wake::default();
        let tracker = TaskTracker::new();
        let lifecycle = Lifecycle::default();
        let ledger = Ledger::spawn(
            store.clone(),
            health.clone(),
            &tracker,
            lifecycle.hard_stop.clone(),
        );
        let hand_off = HandOff::default();
        let messages = Messages::default();
        let engine = TaskTracker::new();
        let engine_stop = delivery::Stop::default();
        // The MQTT client starts after the engine, which needs to know when
        // the broker is there (see `EngineParts::broker`).
        let (subscribed_tx, subscribed) = tokio::sync::watch::channel(false);
        delivery::spawn(
            EngineParts {
                store: store.clone(),
                health: health.clone(),
                client,
                signers: signers.clone(),
                topics: topics.clone(),
                egress: egress.clone(),
                ledger: ledger.clone(),
                hand_off: hand_off.clone(),
                messages: messages.clone(),
                owner: owner.clone(),
                concurrency: settings.delivery.concurrency,
                retry: Backoff {
                    initial: settings.delivery.retry_initial,
                    max: settings.delivery.retry_max,
                },
                pause_max: settings.delivery.pause_max,
                dedup_window: settings.delivery.dedup_window,
                broker: subscribed,
                receipts: receipts.clone(),
                expire_after: settings.subscriptions.expire_after,
                stats: stats.clone(),
            },
            wake.clone(),
            engine_stop.clone(),
            &engine,
        );
        // Watched from here on: a change while the rest starts is published.
        let database_changes = health.watch();
        let processor = Processor::new(ProcessorParts {
            store: store.clone(),
            topics: topics.clone(),
            egress: egress.clone(),
            wake,
            ledger,
            hand_off,
            messages,
            owner: owner.clone(),
            health: health.clone(),
            stats: stats.clone(),
            signers,
            policy,
            max_command_bytes: settings.limits.max_command_bytes,
            max_subscriptions_per_user: settings.limits.max_subscriptions_per_user,
            subscribe_tokens,
            receipts,
            default_ttl: settings.delivery.default_ttl,
            dedup_window: settings.delivery.dedup_window,
            ack_once_applied: broker.is_some(),
        });

        // On the embedded broker the daemon talks to rumqttd directly, with
        // the internal login: no client can crowd it out of the gateway.
        let own_mqtt = match &broker {
            Some(embedded) => crate::config::MqttSettings {
                username: Some(embedded.internal_login.username.clone()),
                password: Some(embedded.internal_login.password.clone()),
                ..settings.mqtt.clone()
            },
            None => settings.mqtt.clone(),
        };
        let session = Session {
            options: mqtt::options(
                &own_mqtt,
                broker.as_ref().map(|b| b.internal),
                &settings.mqtt.client_id,
            )?,
            ingress_filters: topics.ingress_filters(settings.mqtt.shared_group.as_deref()),
            announcements: announcements(&topics, &vapid, &instance),
            farewell: Outgoing {
                topic: topics.status(),
                payload: status("offline", &instance, None),
                retain: true,
            },
        };
        let mut client = mqtt::spawn(
            session,
            processor,
            egress_rx,
            subscribed_tx,
            stats.clone(),
            &tracker,
            lifecycle.clone(),
        );
        tracker.spawn(publish_database_state(
            database_changes,
            egress,
            topics.status(),
            instance.clone(),
            lifecycle.finish.clone(),
        ));
        client
            .subscribed
            .wait_for(|subscribed| *subscribed)
            .await
            .context("the MQTT client stopped before subscribing")?;
        let metrics_stop = tokio_util::sync::CancellationToken::new();
        let mut metrics_task = None;
        let metrics_addr = match metrics_listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                metrics_task = Some(tokio::spawn(crate::metrics::serve(
                    listener,
                    crate::metrics::Sources {
                        stats: stats.clone(),
                        store: store.clone(),
                        health: health.clone(),
                        broker: client.subscribed.clone(),
                    },
                    metrics_stop.clone(),
                )));
                tracing::info!(%addr, "serving Prometheus metrics on http://{addr}/metrics");
                Some(addr)
            }
            None => None,
        };
        tracing::info!("axion-push is running");
        Ok(Daemon {
            broker,
            vapid,
            store,
            tracker,
            commands: client.commands,
            engine,
            engine_stop,
            lifecycle,
            grace: settings.delivery.shutdown_grace,
            owner,
            health,
            stats,
            broker_state: client.subscribed,
            metrics_addr,
            metrics_stop,
            metrics_task,
        })
    }

    pub fn monitor(&self) -> Monitor {
        Monitor {
            tracker: self.tracker.clone(),
            commands: self.commands.clone(),
            engine: self.engine.clone(),
            health: self.health.clone(),
            stats: self.stats.clone(),
            broker: self.broker_state.clone(),
        }
    }

    /// Where `GET /metrics` is served (the bound port when `metrics.listen`
    /// asked for port 0); `None` when metrics are off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The embedded broker, if this daemon runs one.
    pub fn embedded_broker(&self) -> Option<&EmbeddedBroker> {
        self.broker.as_ref()
    }

    pub fn vapid(&self) -> &VapidRegistry {
        &self.vapid
    }

    /// Stops in order (see the module docs); requests still running after
    /// the grace period are abandoned and their deliveries stay queued.
    pub async fn shutdown(self) {
        tracing::info!("stopping: no new commands");
        self.lifecycle.intake.cancel();
        self.commands.close();
        self.commands.wait().await;
        self.engine_stop.claiming.cancel();
        self.engine.close();
        if tokio::time::timeout(self.grace, self.engine.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?self.grace,
                "pushes still in flight after the grace period are abandoned; they stay queued for the next run"
            );
            self.engine_stop.abandon.cancel();
            self.engine.wait().await;
        }
        // Let another daemon (or the next run) take them at once.
        if let Err(e) = self.store.release(&self.owner).await {
            tracing::warn!(error = %e, "abandoned deliveries stay leased until their lease runs out");
        }
        self.lifecycle.finish.cancel();
        self.tracker.close();
        if tokio::time::timeout(DISCONNECT_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("the broker did not take the last messages in time");
            self.lifecycle.hard_stop.cancel();
            self.tracker.wait().await;
        }
        self.metrics_stop.cancel();
        if let Some(task) = self.metrics_task {
            let _ = task.await;
        }
        self.store.close().await;
        tracing::info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monitor over trackers holding the daemon's long-running tasks,
    /// each of which ends when `end` is cancelled — as a panicking one does.
    fn monitor_of_running_tasks() -> (Monitor, tokio_util::sync::CancellationToken) {
        let end = tokio_util::sync::CancellationToken::new();
        let (tracker, commands, engine) =
            (TaskTracker::new(), TaskTracker::new(), TaskTracker::new());
        for (on, count) in [(&tracker, 3), (&commands, 1), (&engine, 4)] {
            for _ in 0..count {
                on.spawn(std::future::pending::<()>());
            }
        }
        let last = end.clone();
        tracker.spawn(async move { last.cancelled().await });
        let (_, broker) = tokio::sync::watch::channel(true);
        let monitor = Monitor {
            tracker,
            commands,
            engine,
            health: Health::default(),
            stats: Arc::default(),
            broker,
        };
        (monitor, end)
    }

    #[tokio::test]
    async fn the_watchdog_is_fed_only_while_every_task_runs() {
        let (monitor, end) = monitor_of_running_tasks();
        assert!(monitor.is_alive());
        end.cancel();
        while monitor.tracker.len() == 4 {
            tokio::task::yield_now().await;
        }
        assert!(!monitor.is_alive(), "a task of the event loop has ended");
    }

    #[test]
    fn a_file_group_or_world_may_read_is_flagged() {
        assert!(readable_by_others(0o100644));
        assert!(readable_by_others(0o100640));
        assert!(readable_by_others(0o100604));
        assert!(!readable_by_others(0o100600));
        assert!(!readable_by_others(0o100400));
    }

    #[test]
    fn any_secret_written_in_the_config_puts_the_config_file_on_the_list() {
        let config_file = |yaml: &str| {
            let mut config = Config::from_yaml(yaml, "config.yaml").unwrap();
            config.source = Some("config.yaml".into());
            secret_files(&config)
                .iter()
                .any(|(path, _)| path.as_path() == Path::new("config.yaml"))
        };
        let key = VapidPrivateKey::generate().to_raw_base64url();
        for yaml in [
            format!("base:\n  push: {{vapid_private_key: {key}}}\n"),
            format!("crm:\n  push: {{vapid_private_key: {key}}}\n"),
            "axion_push:\n  mqtt: {url: 'mqtt://svc:pw@broker:1883'}\n".to_owned(),
            "axion_push:\n  mqtt: {username: svc, password: pw}\n".to_owned(),
            "axion_push:\n  subscribe_token_secret: 0123456789abcdef0123456789abcdef\n".to_owned(),
            "axion_push:\n  mqtt: {username: axion, password: pw}\n  broker: {users: {svc: pw2}}\n"
                .to_owned(),
        ] {
            assert!(config_file(&yaml), "{yaml}");
        }
        assert!(!config_file(
            "axion_push:\n  mqtt: {url: 'mqtt://svc@broker:1883'}\n"
        ));
    }
}

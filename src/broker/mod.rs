//! The embedded MQTT broker: the zero-setup default when
//! `axion_push.mqtt.url` is null.
//!
//! rumqttd keeps everything in memory and listens only on an internal
//! loopback port (picked at start) where nothing but our own gateway and
//! the daemon can log in: they hold a random password made at start. The
//! public listeners — `broker.listen` for services, `broker.websocket_listen`
//! for browsers — are the gateway's (see `gateway.rs` for why), which checks
//! every login, confines each browser to its own user's topics, and bounds
//! connections and the time they take to log in. Its commit-log segments
//! are small: each subscription filter holds at most `SEGMENT_SIZE ×
//! SEGMENT_COUNT` bytes. rumqttd runs on threads of its own with its own
//! runtimes, the gateway on the daemon's; neither has a stop call, so the
//! broker lives as long as the process. Production setups use an external
//! broker.

mod confine;
mod gateway;
mod login;
mod websocket;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::{BrokerSettings, Secret};
use crate::stats::Stats;
use crate::topics::Topics;
use gateway::Gateway;
pub use login::{Access, Browser, Listener, Logins};

const SEGMENT_SIZE: usize = 1024 * 1024;
const SEGMENT_COUNT: usize = 8;
/// How long a started broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "the embedded broker cannot listen on {addr}: the address is already in use. Set {key} to a free address, or set axion_push.mqtt.url to use the broker already running there"
    )]
    AddressInUse { addr: SocketAddr, key: &'static str },
    #[error("the embedded broker cannot listen on {addr} ({key}): {reason}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        reason: String,
    },
    #[error("the embedded broker did not start: {0}")]
    Start(String),
}

/// A running embedded broker and the addresses it listens on (port 0 in the
/// settings is resolved to the port actually used).
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    /// The gateway's MQTT listener, for services.
    pub listen: SocketAddr,
    /// The gateway's WebSocket listener, for browsers.
    pub websocket: Option<SocketAddr>,
    /// rumqttd itself, on loopback, for the daemon's own connection: it
    /// does not compete with clients for `max_connections`.
    pub internal: SocketAddr,
    /// The only login rumqttd accepts.
    pub internal_login: InternalLogin,
}

/// What the gateway checks logins and topics against.
pub struct Gate {
    pub logins: Logins,
    /// The daemon's topics (its `topic_prefix`).
    pub topics: Topics,
    pub stats: Arc<Stats>,
}

/// The name of the internal login.
const INTERNAL_USER: &str = "axion-push-gateway";
/// Connections beyond `max_connections` rumqttd admits: the daemon and the
/// start probe.
const OWN_CONNECTIONS: usize = 8;

/// Checks that `addr` is free (and picks a port for port 0), so a taken port
/// is reported with the key to change instead of failing inside rumqttd,
/// which only logs it.
fn reserve(addr: SocketAddr, key: &'static str) -> Result<SocketAddr, BrokerError> {
    match TcpListener::bind(addr) {
        Ok(listener) => listener.local_addr().map_err(|e| BrokerError::Bind {
            addr,
            key,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(BrokerError::AddressInUse { addr, key })
        }
        Err(e) => Err(BrokerError::Bind {
            addr,
            key,
            reason: e.to_string(),
        }),
    }
}

fn server(listen: SocketAddr, settings: &BrokerSettings, login: &InternalLogin) -> ServerSettings {
    ServerSettings {
        name: "axion-push-internal".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            // Only the gateway (which has the CONNECT in hand) and the
            // daemon connect here; a local process that does not know the
            // password is dropped after this.
            connection_timeout_ms: u16::try_from(settings.connect_timeout.as_millis())
                .unwrap_or(u16::MAX),
            max_payload_size: settings.max_payload_bytes,
            max_inflight_count: 256,
            auth: Some(HashMap::from([(
                login.username.clone(),
                login.password.expose().to_owned(),
            )])),
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// The one account rumqttd accepts: the gateway's and the daemon's own.
#[derive(Debug, Clone)]
pub struct InternalLogin {
    pub username: String,
    pub password: Secret,
}

/// A password nobody else knows, made at each start.
fn internal_login() -> InternalLogin {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random generator works");
    InternalLogin {
        username: INTERNAL_USER.to_owned(),
        password: Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)),
    }
}

/// Attempts for a listener on port 0, whose port is picked before rumqttd
/// binds it and may be taken by another socket in between.
const PORT_ZERO_ATTEMPTS: usize = 5;

/// The service accounts the gateway accepts: `broker.users` plus the
/// daemon's own `mqtt` login (the command line uses it too). None: the
/// MQTT listener lets anyone in.
pub fn accounts(
    settings: &BrokerSettings,
    own: Option<(&str, &Secret)>,
) -> HashMap<String, Secret> {
    let mut accounts: HashMap<String, Secret> = settings
        .users
        .iter()
        .map(|(user, password)| (user.clone(), password.clone()))
        .collect();
    if let Some((user, password)) = own {
        accounts.insert(user.to_owned(), password.clone());
    }
    accounts
}

/// Binds a public listener, naming the key to change when it cannot.
fn bind(addr: SocketAddr, key: &'static str) -> Result<tokio::net::TcpListener, BrokerError> {
    let listener = TcpListener::bind(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => BrokerError::AddressInUse { addr, key },
        _ => BrokerError::Bind {
            addr,
            key,
            reason: e.to_string(),
        },
    })?;
    let fail = |e: std::io::Error| BrokerError::Bind {
        addr,
        key,
        reason: e.to_string(),
    };
    listener.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(listener).map_err(fail)
}

/// File descriptors a connection takes: the client's socket, the
/// gateway's link to rumqttd and rumqttd's end of that link.
const DESCRIPTORS_PER_CONNECTION: u64 = 3;
/// Descriptors the rest of the daemon may hold: the database, push
/// services, the log.
const DESCRIPTORS_BESIDES: u64 = 512;

/// The soft limit on open files, from `/proc/self/limits` (Linux; `None`
/// elsewhere or when unlimited).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The open files the daemon may need with the embedded broker at
/// `max_connections`: below this limit it warns at start.
pub fn descriptors_needed(settings: &BrokerSettings) -> u64 {
    settings.max_connections as u64 * DESCRIPTORS_PER_CONNECTION + DESCRIPTORS_BESIDES
}

/// Says so when `max_connections` could run the process out of file
/// descriptors before the cap is reached (the gateway then pauses
/// accepting, and other work may fail to open files).
fn check_descriptors(settings: &BrokerSettings) {
    let needed = descriptors_needed(settings);
    if let Some(limit) = open_files_limit().filter(|limit| *limit < needed) {
        tracing::warn!(
            limit,
            needed,
            max_connections = settings.max_connections,
            "the open-files limit is below what axion_push.broker.max_connections may need: raise it (LimitNOFILE=, ulimit -n) or lower max_connections"
        );
    }
}

/// Starts rumqttd and the gateway's listeners; returns once they accept
/// connections.
pub async fn start(settings: &BrokerSettings, gate: Gate) -> Result<EmbeddedBroker, BrokerError> {
    check_descriptors(settings);
    let mqtt = bind(settings.listen, "axion_push.broker.listen")?;
    let websocket = settings
        .websocket_listen
        .map(|addr| bind(addr, "axion_push.broker.websocket_listen"))
        .transpose()?;
    let login = internal_login();
    let mut attempt = 1;
    let internal = loop {
        match start_rumqttd(settings, &login).await {
            // The internal port is picked before rumqttd binds it and may
            // be taken by another socket in between.
            Err(BrokerError::Start(reason)) if attempt < PORT_ZERO_ATTEMPTS => {
                tracing::debug!(
                    reason,
                    attempt,
                    "the picked port was taken; picking another"
                );
                attempt += 1;
            }
            result => break result?,
        }
    };
    let listen = mqtt
        .local_addr()
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let websocket_addr = websocket
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let gateway = Arc::new(Gateway {
        upstream: internal,
        internal_login: login.clone(),
        logins: gate.logins,
        topics: gate.topics,
        origins: settings.websocket_origins.clone(),
        connect_timeout: settings.connect_timeout,
        max_payload: settings.max_payload_bytes,
        max_per_address: settings.websocket_max_per_address,
        stats: gate.stats,
        slots: Arc::new(tokio::sync::Semaphore::new(settings.max_connections)),
        per_address: Mutex::new(HashMap::new()),
    });
    gateway::spawn(gateway.clone(), mqtt, Listener::Mqtt);
    if let Some(listener) = websocket {
        gateway::spawn(gateway, listener, Listener::WebSocket);
    }
    tracing::info!(%listen, websocket = ?websocket_addr, "embedded MQTT broker listening");
    Ok(EmbeddedBroker {
        listen,
        websocket: websocket_addr,
        internal,
        internal_login: login,
    })
}

/// Starts rumqttd on an internal loopback port; returns it once rumqttd
/// answers there.
async fn start_rumqttd(
    settings: &BrokerSettings,
    login: &InternalLogin,
) -> Result<SocketAddr, BrokerError> {
    let internal = reserve(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        "axion_push.broker.listen",
    )?;
    let max_payload = settings.max_payload_bytes;
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: settings.max_connections + OWN_CONNECTIONS,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT_SIZE.max(max_payload),
            max_segment_count: SEGMENT_COUNT,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([(
            "internal".to_owned(),
            server(internal, settings, login),
        )])),
        ..Config::default()
    };

    let (stopped_tx, mut stopped_rx) = tokio::sync::oneshot::channel::<String>();
    std::thread::Builder::new()
        .name("axion-push-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            let reason = match broker.start() {
                Ok(()) => "its listeners stopped (see the log above)".to_owned(),
                Err(e) => e.to_string(),
            };
            let _ = stopped_tx.send(reason);
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;

    // rumqttd binds inside its own threads; it is ready once an MQTT
    // handshake succeeds (a bare TCP probe would make it log an error).
    let probe_login = Some((login.username.clone(), login.password.expose().to_owned()));
    let ready = async {
        while !handshake(internal, probe_login.clone()).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        biased;
        reason = &mut stopped_rx => {
            return Err(BrokerError::Start(reason.unwrap_or_else(|_| "its thread ended".into())));
        }
        () = ready => {}
        () = tokio::time::sleep(START_TIMEOUT) => {
            return Err(BrokerError::Start(format!("not accepting connections on {internal} after {START_TIMEOUT:?}")));
        }
    }
    // A broker answering while ours has already given up is someone else's.
    if let Ok(reason) = stopped_rx.try_recv() {
        return Err(BrokerError::Start(reason));
    }
    Ok(internal)
}

/// Connects (with `login` when the broker requires one), waits for CONNACK
/// and disconnects politely.
async fn handshake(listen: SocketAddr, login: Option<(String, String)>) -> bool {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        listen.ip().to_string()
    };
    let client_id = format!("axion-push-probe-{}", uuid::Uuid::new_v4());
    let mut options = rumqttc::MqttOptions::new(client_id, host, listen.port());
    options.set_clean_session(true);
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 4);
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_))) => {
                let _ = client.try_disconnect();
                let _ = eventloop.poll().await;
                return true;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_address_names_the_key_to_change() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = reserve(addr, "axion_push.broker.listen").unwrap_err();
        assert!(matches!(e, BrokerError::AddressInUse { .. }));
        let text = e.to_string();
        assert!(text.contains("axion_push.broker.listen"), "{text}");
        assert!(text.contains(&addr.to_string()), "{text}");
    }

    #[test]
    fn the_open_files_limit_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn port_zero_is_resolved_to_a_free_port() {
        let addr = reserve("127.0.0.1:0".parse().unwrap(), "k").unwrap();
        assert_ne!(addr.port(), 0);
    }
}

//! The embedded MQTT broker (rumqttd): the zero-setup default when
//! `axion_push.mqtt.url` is null.
//!
//! rumqttd keeps everything in memory and has no ACLs, so it listens on
//! loopback by default and its commit-log segments are small: each
//! subscription filter holds at most `SEGMENT_SIZE × SEGMENT_COUNT` bytes.
//! It runs on threads of its own with its own runtimes; it has no stop call,
//! so it lives as long as the process. Production setups use an external
//! broker.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::BrokerSettings;

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
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    pub listen: SocketAddr,
    pub websocket: Option<SocketAddr>,
}

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

fn server(
    name: &str,
    listen: SocketAddr,
    max_payload: usize,
    accounts: Option<HashMap<String, String>>,
) -> ServerSettings {
    ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload,
            max_inflight_count: 256,
            auth: accounts,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// Attempts for a listener on port 0, whose port is picked before rumqttd
/// binds it and may be taken by another socket in between.
const PORT_ZERO_ATTEMPTS: usize = 5;

/// Starts the broker and returns once it accepts connections.
/// The accounts the broker accepts: `broker.users` plus the daemon's own
/// `mqtt` login; `None` (anyone may connect) when there are none.
pub fn accounts(
    settings: &BrokerSettings,
    own: Option<(&str, &str)>,
) -> Option<HashMap<String, String>> {
    let mut accounts: HashMap<String, String> = settings
        .users
        .iter()
        .map(|(user, password)| (user.clone(), password.expose().to_owned()))
        .collect();
    if let Some((user, password)) = own {
        accounts.insert(user.to_owned(), password.to_owned());
    }
    (!accounts.is_empty()).then_some(accounts)
}

/// Starts the broker and returns once it accepts connections. `accounts`
/// (see [`accounts`]) are the only logins it accepts, when given.
pub async fn start(
    settings: &BrokerSettings,
    accounts: Option<HashMap<String, String>>,
) -> Result<EmbeddedBroker, BrokerError> {
    let any_port =
        settings.listen.port() == 0 && settings.websocket_listen.is_none_or(|ws| ws.port() == 0);
    let mut attempt = 1;
    loop {
        match start_once(settings, accounts.clone()).await {
            Err(BrokerError::Start(reason)) if any_port && attempt < PORT_ZERO_ATTEMPTS => {
                tracing::debug!(
                    reason,
                    attempt,
                    "the picked port was taken; picking another"
                );
                attempt += 1;
            }
            result => return result,
        }
    }
}

async fn start_once(
    settings: &BrokerSettings,
    accounts: Option<HashMap<String, String>>,
) -> Result<EmbeddedBroker, BrokerError> {
    let listen = reserve(settings.listen, "axion_push.broker.listen")?;
    let websocket = settings
        .websocket_listen
        .map(|addr| reserve(addr, "axion_push.broker.websocket_listen"))
        .transpose()?;

    let max_payload = settings.max_payload_bytes;
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT_SIZE.max(max_payload),
            max_segment_count: SEGMENT_COUNT,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([(
            "tcp".to_owned(),
            server("axion-push-mqtt", listen, max_payload, accounts.clone()),
        )])),
        ws: websocket.map(|addr| {
            HashMap::from([(
                "ws".to_owned(),
                server("axion-push-ws", addr, max_payload, accounts.clone()),
            )])
        }),
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
    let probe_login = accounts
        .as_ref()
        .and_then(|a| a.iter().next())
        .map(|(user, password)| (user.clone(), password.clone()));
    let ready = async {
        while !handshake(listen, probe_login.clone()).await {
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
            return Err(BrokerError::Start(format!("not accepting connections on {listen} after {START_TIMEOUT:?}")));
        }
    }
    // A broker answering while ours has already given up is someone else's.
    if let Ok(reason) = stopped_rx.try_recv() {
        return Err(BrokerError::Start(reason));
    }
    tracing::info!(%listen, websocket = ?websocket, "embedded MQTT broker listening");
    Ok(EmbeddedBroker { listen, websocket })
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
    fn port_zero_is_resolved_to_a_free_port() {
        let addr = reserve("127.0.0.1:0".parse().unwrap(), "k").unwrap();
        assert_ne!(addr.port(), 0);
    }
}

//! A browser's MQTT-over-WebSocket connection, as a page's mqtt.js makes
//! it: a WebSocket handshake (with an `Origin`, when given), then MQTT 3.1.1
//! packets in binary messages, read and written with rumqttc's `mqttbytes`.
//! Low level on purpose: tests send exactly the packets an attacker would.

use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, LastWill, Packet, Publish, Subscribe, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::net::TcpStream;

use super::WAIT;

type Socket = WebSocketStream<TokioAdapter<TcpStream>>;

pub struct BrowserLogin {
    socket: Socket,
    buf: BytesMut,
    next_pkid: u16,
}

/// How a WebSocket handshake ended when it did not open.
#[derive(Debug)]
pub struct Refused(pub String);

impl BrowserLogin {
    /// The WebSocket handshake alone.
    pub async fn open(addr: SocketAddr, origin: Option<&str>) -> Result<BrowserLogin, Refused> {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", HeaderValue::from_str(origin).unwrap());
        }
        let handshake = async_tungstenite::tokio::client_async(request, stream);
        match tokio::time::timeout(WAIT, handshake).await {
            Err(_) => Err(Refused("no answer to the handshake".into())),
            Ok(Err(e)) => Err(Refused(e.to_string())),
            Ok(Ok((socket, _))) => Ok(BrowserLogin {
                socket,
                buf: BytesMut::new(),
                next_pkid: 1,
            }),
        }
    }

    /// Opens and logs in as `username` with `password`; the CONNACK's code.
    pub async fn login(
        addr: SocketAddr,
        origin: Option<&str>,
        username: &str,
        password: &str,
    ) -> (BrowserLogin, ConnectReturnCode) {
        Self::connect(addr, origin, username, password, None).await
    }

    /// Like [`BrowserLogin::login`], leaving a Last Will.
    pub async fn connect(
        addr: SocketAddr,
        origin: Option<&str>,
        username: &str,
        password: &str,
        will: Option<LastWill>,
    ) -> (BrowserLogin, ConnectReturnCode) {
        let mut login = Self::open(addr, origin)
            .await
            .expect("the handshake succeeds");
        let mut connect = Connect::new(format!("page-{}", uuid::Uuid::new_v4()));
        connect.set_login(username, password);
        connect.keep_alive = 60;
        connect.last_will = will;
        login.send(Packet::Connect(connect)).await;
        match login.next().await {
            Some(Packet::ConnAck(ack)) => (login, ack.code),
            other => panic!("no CONNACK but {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        // The server may already have closed: the test reads that next.
        let _ = self.socket.send(Message::Binary(out.to_vec())).await;
    }

    /// The next packet; `None` once the server closed the connection.
    /// Fails the test when nothing comes within the wait.
    pub async fn next(&mut self) -> Option<Packet> {
        self.next_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("no packet and no close within {WAIT:?}"))
    }

    /// The next packet, `Some(None)` when closed, `None` when `within` passed.
    pub async fn next_within(&mut self, within: Duration) -> Option<Option<Packet>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(packet) = Packet::read(&mut self.buf, 1 << 24) {
                return Some(Some(packet));
            }
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Binary(data)))) => self.buf.extend_from_slice(&data),
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                    return Some(None);
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Waits until the server closes the connection, skipping packets.
    pub async fn closed(&mut self) {
        while self.next().await.is_some() {}
    }

    fn pkid(&mut self) -> u16 {
        let id = self.next_pkid;
        self.next_pkid += 1;
        id
    }

    /// Subscribes to `filters` (QoS 1); the SUBACK's codes, or `None` when
    /// the server closed the connection instead.
    pub async fn subscribe(&mut self, filters: &[&str]) -> Option<Vec<SubscribeReasonCode>> {
        let pkid = self.pkid();
        let subscribe = Subscribe {
            pkid,
            filters: filters
                .iter()
                .map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce))
                .collect(),
        };
        self.send(Packet::Subscribe(subscribe)).await;
        loop {
            match self.next().await? {
                Packet::SubAck(ack) if ack.pkid == pkid => return Some(ack.return_codes),
                _ => {}
            }
        }
    }

    /// Publishes with QoS 1; true when it was acknowledged, false when the
    /// server closed the connection instead.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], retain: bool) -> bool {
        let pkid = self.pkid();
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
        publish.pkid = pkid;
        publish.retain = retain;
        self.send(Packet::Publish(publish)).await;
        loop {
            match self.next().await {
                Some(Packet::PubAck(ack)) if ack.pkid == pkid => return true,
                Some(_) => {}
                None => return false,
            }
        }
    }

    /// The next PUBLISH the server sends on `topic`, skipping others.
    pub async fn message_on(&mut self, topic: &str) -> serde_json::Value {
        loop {
            match self.next().await {
                Some(Packet::Publish(p)) if p.topic == topic => {
                    return serde_json::from_slice(&p.payload).unwrap();
                }
                Some(_) => {}
                None => panic!("closed while waiting for a message on {topic}"),
            }
        }
    }

    /// The next PUBLISH's topic.
    pub async fn next_topic(&mut self) -> String {
        loop {
            match self.next().await {
                Some(Packet::Publish(p)) => return p.topic,
                Some(_) => {}
                None => panic!("closed while waiting for a message"),
            }
        }
    }
}

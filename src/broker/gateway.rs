//! The gateway: the embedded broker's two public listeners, in front of
//! rumqttd, which listens only on an internal loopback port.
//!
//! Why a gateway of ours: rumqttd 0.20 has a login hook but no topic
//! permissions (an upstream pull request adding ACL hooks is unreleased),
//! runs each WebSocket handshake inside its accept loop with no timeout
//! (one idle socket stops every later browser), accepts any `Origin`,
//! retries a failing `accept` at once (a core spins while file descriptors
//! are exhausted) and gives every connection 60 s to log in. Patching
//! rumqttd would mean carrying a fork; a gateway is ordinary tokio code.
//! Both listeners sit behind it, because the accept-loop, timeout and
//! connection-cap fixes matter as much for the MQTT listener, and because
//! then nothing but the gateway and the daemon — which hold a random
//! internal password made at start — can log in to rumqttd at all.
//!
//! Per connection: the login (CONNECT) must arrive within
//! `connect_timeout` (for WebSockets, the handshake included) and is
//! checked (`login`); the gateway then opens its own connection to
//! rumqttd, forwards the CONNECT with the internal login, and relays:
//! - a **service** connection byte for byte (services are trusted);
//! - a **browser** connection packet by packet, each checked against its
//!   user's [`Scope`] before it reaches rumqttd: a refused publish is
//!   dropped (still acknowledged, so the client does not resend it), a
//!   refused subscription gets a failure code in its SUBACK, the first
//!   refusal is logged and each one counted in `/metrics`, and a second
//!   one closes the connection. Its token's expiry closes it too.
//!
//! MQTT packets are read and written with rumqttc's `mqttbytes` (the v4
//! codec of the daemon's own client), not a parser of ours.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt as _};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, PubAck, PubComp, PubRec, SubAck, Subscribe,
    SubscribeReasonCode,
};
use rumqttc::mqttbytes::{self, PacketType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::confine::Scope;
use super::login::{Access, Browser, Listener, Logins};
use super::websocket::{self, HandshakeError, Socket};
use crate::stats::{Refusal, Stats};
use crate::topics::Topics;

/// Refused packets a browser connection may send before it is closed: the
/// first is answered, the second ends the connection.
const MAX_REFUSALS: u32 = 2;
/// A browser's publish rate limit: a burst of this many…
const PUBLISH_BURST: f64 = 10.0;
/// …refilled at this many per second. A page subscribes, lists or
/// unsubscribes a few times per visit.
const PUBLISH_PER_SECOND: f64 = 1.0;
/// The first pause after `accept` fails (file descriptors exhausted); it
/// doubles up to [`ACCEPT_PAUSE_MAX`] while the failures go on.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Room for the packet headers around the largest payload.
const HEADER_ROOM: usize = 64 * 1024;

/// Everything the listeners share.
pub struct Gateway {
    /// rumqttd's internal listener, and the login it accepts.
    pub upstream: SocketAddr,
    pub internal_login: super::InternalLogin,
    pub logins: Logins,
    pub topics: Topics,
    /// `websocket_origins`, normalised.
    pub origins: Vec<String>,
    pub connect_timeout: Duration,
    pub max_payload: usize,
    pub max_per_address: usize,
    pub stats: Arc<Stats>,
    /// One permit per open connection (`max_connections`).
    pub slots: Arc<Semaphore>,
    /// Open WebSocket connections by peer address.
    pub per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// Serves `listener` for as long as the runtime runs (like rumqttd, the
/// embedded broker has no stop).
pub fn spawn(gateway: Arc<Gateway>, listener: TcpListener, kind: Listener) {
    tokio::spawn(accept_loop(gateway, listener, kind));
}

async fn accept_loop(gateway: Arc<Gateway>, listener: TcpListener, kind: Listener) {
    let mut pause = ACCEPT_PAUSE_MIN;
    let mut failing_since: Option<(tokio::time::Instant, u64)> = None;
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's
        // backlog until one closes (idle ones do after `connect_timeout`).
        let permit = gateway
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Some((since, failures)) = failing_since.take() {
                    tracing::warn!(
                        listener = ?kind,
                        failures,
                        after = ?since.elapsed(),
                        "the embedded broker accepts connections again"
                    );
                }
                pause = ACCEPT_PAUSE_MIN;
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    connection(&gateway, kind, stream, peer).await;
                    drop(permit);
                });
            }
            Err(error) => {
                drop(permit);
                // Out of file descriptors (or memory): retrying at once
                // would spin a core until one frees, so pause, longer
                // each time; log the start of the streak once.
                match &mut failing_since {
                    Some((_, failures)) => *failures += 1,
                    None => {
                        tracing::warn!(
                            listener = ?kind,
                            %error,
                            "the embedded broker cannot accept connections (too many open files? see LimitNOFILE and broker.max_connections); retrying with a pause"
                        );
                        failing_since = Some((tokio::time::Instant::now(), 1));
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
            }
        }
    }
}

/// Counts an open connection on a listener while it lives.
struct Open<'a> {
    stats: &'a Stats,
    listener: usize,
}

impl<'a> Open<'a> {
    fn new(stats: &'a Stats, kind: Listener) -> Self {
        stats.gateway.opened(kind.index());
        Self {
            stats,
            listener: kind.index(),
        }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.stats.gateway.closed(self.listener);
    }
}

/// One WebSocket connection of a peer address while it lives.
struct AddressSlot<'a> {
    gateway: &'a Gateway,
    ip: IpAddr,
}

impl<'a> AddressSlot<'a> {
    fn take(gateway: &'a Gateway, ip: IpAddr) -> Option<Self> {
        let mut open = gateway
            .per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= gateway.max_per_address {
            return None;
        }
        *count += 1;
        Some(Self { gateway, ip })
    }
}

impl Drop for AddressSlot<'_> {
    fn drop(&mut self) {
        let mut open = self
            .gateway
            .per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The client's side of a connection.
enum Client {
    Tcp(TcpStream),
    WebSocket(Box<Socket>),
}

impl Client {
    /// Reads more bytes into `buf`; `Ok(false)` when the client is gone.
    async fn read_into(&mut self, buf: &mut BytesMut) -> Result<bool, String> {
        match self {
            Client::Tcp(stream) => match stream.read_buf(buf).await {
                Ok(0) => Ok(false),
                Ok(_) => Ok(true),
                Err(e) => Err(e.to_string()),
            },
            Client::WebSocket(socket) => loop {
                match socket.next().await {
                    Some(Ok(Message::Binary(data))) => {
                        buf.extend_from_slice(&data);
                        return Ok(true);
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Text(_))) => {
                        return Err("a text message: MQTT travels in binary messages".into());
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(false),
                    Some(Err(e)) => return Err(e.to_string()),
                }
            },
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Client::Tcp(stream) => stream.write_all(bytes).await.map_err(|e| e.to_string()),
            Client::WebSocket(socket) => socket
                .send(Message::Binary(bytes.to_vec()))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    async fn close(self) {
        match self {
            Client::Tcp(mut stream) => {
                let _ = stream.shutdown().await;
            }
            Client::WebSocket(mut socket) => {
                let _ = SinkExt::close(&mut socket).await;
            }
        }
    }
}

/// Splits the next whole packet off `buf`; `Ok(None)` until one is there.
fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, mqttbytes::Error> {
    match mqttbytes::check(buf.iter(), max) {
        Ok(header) => Ok(Some(buf.split_to(header.frame_length()))),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Decodes one frame (split by [`next_frame`]).
fn decode(frame: &BytesMut, max: usize) -> Result<Packet, mqttbytes::Error> {
    Packet::read(&mut frame.clone(), max)
}

fn encode(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    // Our own packets are small and well formed.
    let _ = packet.write(&mut out, usize::MAX);
    out
}

async fn connection(gateway: &Gateway, kind: Listener, stream: TcpStream, peer: SocketAddr) {
    let _open = Open::new(&gateway.stats, kind);
    let _ = stream.set_nodelay(true);
    let _slot = match kind {
        Listener::Mqtt => None,
        Listener::WebSocket => match AddressSlot::take(gateway, peer.ip()) {
            Some(slot) => Some(slot),
            None => {
                gateway.stats.gateway.refused(Refusal::AddressCap);
                tracing::debug!(%peer, "too many WebSocket connections from this address: closed");
                return;
            }
        },
    };
    let greeting = tokio::time::timeout(gateway.connect_timeout, greet(gateway, kind, stream));
    let (mut client, connect, leftover) = match greeting.await {
        Err(_) => {
            gateway.stats.gateway.refused(Refusal::Timeout);
            tracing::debug!(%peer, listener = ?kind, "no login within the connect timeout: closed");
            return;
        }
        Ok(Err(Greeting::Origin(origin))) => {
            gateway.stats.gateway.refused(Refusal::Origin);
            tracing::info!(%peer, origin = origin.escape_debug().to_string(), "a page of another web origin was refused (broker.websocket_origins)");
            return;
        }
        Ok(Err(Greeting::Broken(reason))) => {
            gateway.stats.gateway.refused(Refusal::Protocol);
            tracing::debug!(%peer, listener = ?kind, reason, "closed before logging in");
            return;
        }
        Ok(Ok(greeted)) => greeted,
    };
    let now = crate::clock::now_ms() / 1000;
    let access = match gateway.logins.check(kind, &connect, now) {
        Ok(access) => access,
        Err(refused) => {
            gateway.stats.gateway.refused(refused.counted);
            tracing::info!(%peer, listener = ?kind, reason = refused.reason, "login refused");
            let _ = client
                .write(&encode(&Packet::ConnAck(ConnAck::new(refused.code, false))))
                .await;
            client.close().await;
            return;
        }
    };
    let mut upstream = match TcpStream::connect(gateway.upstream).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::warn!(%error, "the gateway cannot reach the embedded broker");
            let unavailable = ConnAck::new(ConnectReturnCode::ServiceUnavailable, false);
            let _ = client.write(&encode(&Packet::ConnAck(unavailable))).await;
            client.close().await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let forwarded = forwarded_connect(gateway, connect, &access);
    if let Err(error) = upstream
        .write_all(&encode(&Packet::Connect(forwarded)))
        .await
    {
        tracing::warn!(%error, "the gateway cannot reach the embedded broker");
        return;
    }
    match (access, client) {
        (Access::Service, Client::Tcp(mut stream)) => {
            if upstream.write_all(&leftover).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
            }
        }
        (Access::Browser(browser), client) => {
            let session = Session::new(gateway, browser, peer);
            session.relay(client, upstream, leftover).await;
        }
        // `Logins::check` gives a service only on the MQTT listener.
        (Access::Service, client) => client.close().await,
    }
}

enum Greeting {
    Origin(String),
    Broken(String),
}

/// The WebSocket handshake, if any, and the CONNECT with whatever followed
/// it.
async fn greet(
    gateway: &Gateway,
    kind: Listener,
    stream: TcpStream,
) -> Result<(Client, Connect, BytesMut), Greeting> {
    let max = gateway.max_payload + HEADER_ROOM;
    let mut client = match kind {
        Listener::Mqtt => Client::Tcp(stream),
        Listener::WebSocket => match websocket::accept(stream, &gateway.origins, max).await {
            Ok(socket) => Client::WebSocket(Box::new(socket)),
            Err(HandshakeError::Origin(origin)) => return Err(Greeting::Origin(origin)),
            Err(HandshakeError::Broken(reason)) => return Err(Greeting::Broken(reason)),
        },
    };
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match next_frame(&mut buf, max) {
            Ok(Some(frame)) => {
                return match decode(&frame, max) {
                    Ok(Packet::Connect(connect)) => Ok((client, connect, buf)),
                    Ok(_) => Err(Greeting::Broken("the first packet is not CONNECT".into())),
                    Err(e) => Err(Greeting::Broken(e.to_string())),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(Greeting::Broken(e.to_string())),
        }
        match client.read_into(&mut buf).await {
            Ok(true) => {}
            Ok(false) => return Err(Greeting::Broken("closed".into())),
            Err(reason) => return Err(Greeting::Broken(reason)),
        }
    }
}

/// The CONNECT rumqttd sees: the internal login instead of the client's;
/// for a browser, a client id derived from its package, user and own id
/// (so it can never take over a service's or another user's session, and
/// holds none of the characters rumqttd refuses in ids), a clean session
/// and no Will.
fn forwarded_connect(gateway: &Gateway, mut connect: Connect, access: &Access) -> Connect {
    let internal = &gateway.internal_login;
    connect.login = Some(Login::new(
        internal.username.clone(),
        internal.password.expose(),
    ));
    if let Access::Browser(browser) = access {
        let own = if connect.client_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            connect.client_id.clone()
        };
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [
            browser.package.as_str(),
            browser.user.as_str(),
            own.as_str(),
        ] {
            digest.update(part.as_bytes());
            digest.update(b"\0");
        }
        let id = URL_SAFE_NO_PAD.encode(&digest.finish().as_ref()[..16]);
        connect.client_id = format!("browser-{id}");
        connect.clean_session = true;
        connect.last_will = None;
    }
    connect
}

/// A token bucket for a browser's publishes.
struct Rate {
    tokens: f64,
    at: tokio::time::Instant,
}

impl Rate {
    fn new(now: tokio::time::Instant) -> Self {
        Self {
            tokens: PUBLISH_BURST,
            at: now,
        }
    }

    /// Takes a token at `now`, if one is left.
    fn take(&mut self, now: tokio::time::Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * PUBLISH_PER_SECOND;
        self.tokens = (self.tokens + refill).min(PUBLISH_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Resolves when a browser's token expires (seconds since the epoch);
/// never without one.
async fn expiry(expires: Option<u64>) {
    match expires {
        Some(expires) => {
            let now = crate::clock::now_ms() / 1000;
            tokio::time::sleep(Duration::from_secs(expires.saturating_sub(now))).await;
        }
        None => std::future::pending().await,
    }
}

/// What to do after a client packet.
enum Step {
    Continue,
    Close,
}

/// One browser connection after its login.
struct Session<'a> {
    gateway: &'a Gateway,
    browser: Browser,
    scope: Scope,
    peer: SocketAddr,
    refusals: u32,
    rate: Rate,
    /// QoS 2 publishes dropped but acknowledged with PUBREC: their PUBREL
    /// is answered here, rumqttd never saw them.
    dropped_exactly_once: HashSet<u16>,
    /// SUBSCRIBEs forwarded with some filters removed: for each packet id,
    /// which of the original filters were kept, so rumqttd's SUBACK can be
    /// widened back with failure codes.
    narrowed: HashMap<u16, Vec<bool>>,
}

impl<'a> Session<'a> {
    fn new(gateway: &'a Gateway, browser: Browser, peer: SocketAddr) -> Self {
        let scope = Scope::new(&gateway.topics, &browser.package, &browser.user);
        Self {
            gateway,
            browser,
            scope,
            peer,
            refusals: 0,
            rate: Rate::new(tokio::time::Instant::now()),
            dropped_exactly_once: HashSet::new(),
            narrowed: HashMap::new(),
        }
    }

    async fn relay(mut self, mut client: Client, mut upstream: TcpStream, leftover: BytesMut) {
        let max_in = self.gateway.max_payload + HEADER_ROOM;
        let max_out = usize::MAX;
        let mut from_client = leftover;
        let mut from_broker = BytesMut::with_capacity(4096);
        let expiry = expiry(self.browser.expires);
        tokio::pin!(expiry);
        'relay: loop {
            // Whatever the client sent that is complete, checked one packet
            // at a time.
            loop {
                let frame = match next_frame(&mut from_client, max_in) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        self.refuse(Refusal::Protocol, &e.to_string());
                        break 'relay;
                    }
                };
                match self
                    .on_client_packet(frame, max_in, &mut client, &mut upstream)
                    .await
                {
                    Ok(Step::Continue) => {}
                    Ok(Step::Close) | Err(_) => break 'relay,
                }
            }
            tokio::select! {
                more = client.read_into(&mut from_client) => match more {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(reason) => {
                        tracing::debug!(peer = %self.peer, reason, "browser connection broken");
                        break;
                    }
                },
                read = upstream.read_buf(&mut from_broker) => match read {
                    Ok(n) if n > 0 => {
                        let mut out = BytesMut::new();
                        loop {
                            match next_frame(&mut from_broker, max_out) {
                                Ok(Some(frame)) => self.on_broker_packet(frame, &mut out),
                                Ok(None) => break,
                                Err(_) => break 'relay,
                            }
                        }
                        if !out.is_empty() && client.write(&out).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                },
                () = &mut expiry => {
                    tracing::info!(
                        package = %self.browser.package,
                        user = %self.browser.user,
                        "the browser's token expired: connection closed (it needs a fresh token to reconnect)"
                    );
                    break;
                }
            }
        }
        client.close().await;
        let _ = upstream.shutdown().await;
    }

    /// Counts a refusal, logs the first of the connection, and says whether
    /// the connection may go on.
    fn refuse(&mut self, why: Refusal, what: &str) -> Step {
        self.gateway.stats.gateway.refused(why);
        self.refusals += 1;
        if self.refusals == 1 {
            tracing::warn!(
                peer = %self.peer,
                package = %self.browser.package,
                user = %self.browser.user,
                refused = why.as_str(),
                what = what.escape_debug().to_string(),
                "a browser's packet was refused (only the first refusal of a connection is logged)"
            );
        }
        if self.refusals >= MAX_REFUSALS || why == Refusal::Protocol {
            Step::Close
        } else {
            Step::Continue
        }
    }

    async fn on_client_packet(
        &mut self,
        frame: BytesMut,
        max: usize,
        client: &mut Client,
        upstream: &mut TcpStream,
    ) -> Result<Step, String> {
        let packet = match decode(&frame, max) {
            Ok(packet) => packet,
            Err(e) => return Ok(self.refuse(Refusal::Protocol, &e.to_string())),
        };
        let forward = match packet {
            Packet::Publish(publish) => {
                let verdict = if self.rate.take(tokio::time::Instant::now()) {
                    self.scope
                        .check_publish(&publish.topic, publish.retain, &publish.payload)
                } else {
                    Err(Refusal::Rate)
                };
                match verdict {
                    Ok(()) => true,
                    Err(why) => {
                        let step = self.refuse(why, &publish.topic);
                        if matches!(step, Step::Close) {
                            return Ok(step);
                        }
                        // Acknowledge what was dropped, so the client does
                        // not send it again and again.
                        let ack = match publish.qos {
                            mqttbytes::QoS::AtMostOnce => None,
                            mqttbytes::QoS::AtLeastOnce => {
                                Some(Packet::PubAck(PubAck::new(publish.pkid)))
                            }
                            mqttbytes::QoS::ExactlyOnce => {
                                self.dropped_exactly_once.insert(publish.pkid);
                                Some(Packet::PubRec(PubRec::new(publish.pkid)))
                            }
                        };
                        if let Some(ack) = ack {
                            client.write(&encode(&ack)).await?;
                        }
                        return Ok(step);
                    }
                }
            }
            Packet::PubRel(release) if self.dropped_exactly_once.remove(&release.pkid) => {
                client
                    .write(&encode(&Packet::PubComp(PubComp::new(release.pkid))))
                    .await?;
                false
            }
            Packet::Subscribe(subscribe) => {
                return self.subscribe(subscribe, client, upstream).await;
            }
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => {
                return Ok(self.refuse(Refusal::Protocol, "a packet only a server sends"));
            }
            Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => true,
            Packet::Disconnect => {
                let _ = upstream.write_all(&frame).await;
                return Ok(Step::Close);
            }
        };
        if forward {
            upstream
                .write_all(&frame)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Step::Continue)
    }

    async fn subscribe(
        &mut self,
        subscribe: Subscribe,
        client: &mut Client,
        upstream: &mut TcpStream,
    ) -> Result<Step, String> {
        let kept: Vec<bool> = subscribe
            .filters
            .iter()
            .map(|f| self.scope.check_filter(&f.path).is_ok())
            .collect();
        if kept.iter().all(|k| *k) {
            let frame = encode(&Packet::Subscribe(subscribe));
            upstream
                .write_all(&frame)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Step::Continue);
        }
        let refused: Vec<&str> = subscribe
            .filters
            .iter()
            .zip(&kept)
            .filter(|(_, k)| !**k)
            .map(|(f, _)| f.path.as_str())
            .collect();
        let step = self.refuse(Refusal::Subscribe, &refused.join(" "));
        if matches!(step, Step::Close) {
            return Ok(step);
        }
        if kept.iter().any(|k| *k) {
            let narrower = Subscribe {
                pkid: subscribe.pkid,
                filters: subscribe
                    .filters
                    .into_iter()
                    .zip(&kept)
                    .filter(|(_, k)| **k)
                    .map(|(f, _)| f)
                    .collect(),
            };
            self.narrowed.insert(subscribe.pkid, kept);
            upstream
                .write_all(&encode(&Packet::Subscribe(narrower)))
                .await
                .map_err(|e| e.to_string())?;
        } else {
            let failures = vec![SubscribeReasonCode::Failure; kept.len()];
            client
                .write(&encode(&Packet::SubAck(SubAck::new(
                    subscribe.pkid,
                    failures,
                ))))
                .await?;
        }
        Ok(step)
    }

    /// Adds a packet from rumqttd to `out`: as it came, but a SUBACK of a
    /// narrowed SUBSCRIBE widened back to the filters the browser asked for.
    fn on_broker_packet(&mut self, frame: BytesMut, out: &mut BytesMut) {
        let is_suback = mqttbytes::check(frame.iter(), usize::MAX)
            .ok()
            .and_then(|h| h.packet_type().ok())
            == Some(PacketType::SubAck);
        if is_suback
            && let Ok(Packet::SubAck(ack)) = decode(&frame, usize::MAX)
            && let Some(kept) = self.narrowed.remove(&ack.pkid)
        {
            let mut granted = ack.return_codes.into_iter();
            let codes = kept
                .iter()
                .map(|k| {
                    if *k {
                        granted.next().unwrap_or(SubscribeReasonCode::Failure)
                    } else {
                        SubscribeReasonCode::Failure
                    }
                })
                .collect();
            out.extend_from_slice(&encode(&Packet::SubAck(SubAck::new(ack.pkid, codes))));
            return;
        }
        out.extend_from_slice(&frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_may_burst_then_publish_at_the_refill_rate() {
        let start = tokio::time::Instant::now();
        let mut rate = Rate::new(start);
        for _ in 0..10 {
            assert!(rate.take(start));
        }
        assert!(!rate.take(start));
        let later = start + Duration::from_secs(1);
        assert!(rate.take(later));
        assert!(!rate.take(later));
    }

    #[test]
    fn frames_are_split_only_when_whole() {
        let mut buf = BytesMut::new();
        let ping = encode(&Packet::PingReq);
        buf.extend_from_slice(&ping[..1]);
        assert!(next_frame(&mut buf, 100).unwrap().is_none());
        buf.extend_from_slice(&ping[1..]);
        buf.extend_from_slice(&ping);
        assert_eq!(next_frame(&mut buf, 100).unwrap().unwrap(), ping);
        assert_eq!(next_frame(&mut buf, 100).unwrap().unwrap(), ping);
        assert!(buf.is_empty());
    }
}

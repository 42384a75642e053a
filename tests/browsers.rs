//! Browsers on the embedded broker's WebSocket listener see and do only
//! their own user's things: they log in as `{package}/{user}` with their
//! subscribe token, may publish only their own subscribe, unsubscribe and
//! list, and read only the VAPID keys and their own events and results.
//! The listener itself survives the open web: it caps connections per
//! address, gives each `broker.connect_timeout` to log in, and holds each
//! browser to a publish rate. Each attack below succeeded before the
//! gateway.

mod harness;
#[path = "harness/process.rs"]
mod process;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axion_push::metrics::sample;
use axion_push::model::{Package, User};
use axion_push::token::TokenKey;
use harness::browser_login::BrowserLogin;
use harness::{Harness, WAIT};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, LastWill, Packet, Publish, SubscribeReasonCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "a-shared-secret-of-at-least-32-characters";
const ORIGIN: &str = "http://app.test:8080";

fn token_until(package: &str, user: &str, expires: u64) -> String {
    TokenKey::new(SECRET).issue(
        &Package::parse(package).unwrap(),
        &User::parse(user).unwrap(),
        expires,
    )
}

fn token(package: &str, user: &str) -> String {
    token_until(package, user, axion_push::clock::now_ms() / 1000 + 600)
}

/// A daemon whose embedded broker has the WebSocket listener on, tokens
/// required, the test's page origin allowed and metrics on.
async fn start() -> (Harness, SocketAddr) {
    start_with(|_| {}).await
}

/// Like [`start`], with the broker's settings changed by `tweak`.
async fn start_with(
    tweak: impl FnOnce(&mut axion_push::config::BrokerSettings),
) -> (Harness, SocketAddr) {
    let h = Harness::start_with(|c| {
        let b = &mut c.settings.broker;
        b.websocket_listen = Some("127.0.0.1:0".parse().unwrap());
        b.websocket_origins = vec![ORIGIN.into()];
        tweak(b);
        c.settings.subscribe_token_secret = Some(harness::secret(SECRET));
        c.settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let ws = h.daemon().embedded_broker().unwrap().websocket.unwrap();
    (h, ws)
}

async fn login(ws: SocketAddr, package: &str, user: &str) -> BrowserLogin {
    let (page, code) = BrowserLogin::login(
        ws,
        Some(ORIGIN),
        &format!("{package}/{user}"),
        &token(package, user),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success);
    page
}

const GRANTED: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);
const FAILED: SubscribeReasonCode = SubscribeReasonCode::Failure;

async fn metric(h: &Harness, key: &str) -> f64 {
    let addr = h.daemon().metrics_addr().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    sample(&text, key).unwrap_or_else(|| panic!("no {key} in {text}"))
}

/// Waits until the metric `key` reads `want`, failing after the wait.
async fn metric_reaches(h: &Harness, key: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = metric(h, key).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} is {got}, not {want}, after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn refusals(reason: &str) -> String {
    format!(r#"axion_push_broker_refusals_total{{reason="{reason}"}}"#)
}

/// The `id`s of the `list` commands that reached the broker, in order, as
/// the test's service client saw them.
fn lists_on_the_broker(h: &Harness, user: &str) -> Vec<String> {
    let topic = format!("axion/crm/push/{user}/list");
    h.mqtt
        .messages()
        .into_iter()
        .filter(|m| m.topic == topic)
        .map(|m| m.json()["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The first attack of the report: the page login subscribed to `axion/#`
/// and read every user's sends, events and results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_reads_none_of_another_users_topics() {
    let (h, ws) = start().await;
    let mut alice = login(ws, "crm", "alice").await;
    let codes = alice
        .subscribe(&["axion/#", "axion/crm/push/alice", "axion/crm/push/bob"])
        .await
        .expect("one refused subscription is answered");
    assert_eq!(codes, [FAILED, GRANTED, FAILED]);

    // Bob's event is published before alice's: had she been subscribed to
    // it, it would reach her first.
    h.send("crm", "bob", json!({"title": "for bob"})).await;
    h.send("crm", "alice", json!({"title": "for alice"})).await;
    assert_eq!(alice.next_topic().await, "axion/crm/push/alice");

    // Refused again: the connection is closed.
    assert_eq!(alice.subscribe(&["axion/crm/push/+/result"]).await, None);
    assert_eq!(
        metric(
            &h,
            r#"axion_push_broker_refusals_total{reason="subscribe"}"#
        )
        .await,
        2.0
    );
    h.stop().await;
}

/// The second attack: the page login published a send with a phishing
/// title to bob, and the daemon pushed it to bob's browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_cannot_publish_a_send_nor_other_users_commands() {
    let (h, ws) = start().await;
    let bobs_browser = h.browser("bob");
    let mut subscription = bobs_browser.subscription();
    subscription["token"] = json!(token("crm", "bob"));
    let r = h
        .command(
            "axion/crm/push/bob/subscribe",
            subscription.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let mut alice = login(ws, "crm", "alice").await;
    assert_eq!(
        alice.subscribe(&["axion/crm/push/alice/result"]).await,
        Some(vec![GRANTED])
    );

    let phishing = json!({"title": "Your password expired", "url": "https://evil.example"});
    assert!(
        alice
            .publish(
                "axion/crm/push/bob/send",
                phishing.to_string().as_bytes(),
                false
            )
            .await,
        "a dropped publish is still acknowledged, so it is not sent again"
    );
    // What alice may do still works, and comes after the send in order.
    let list = json!({"id": "mine", "token": token("crm", "alice")});
    assert!(
        alice
            .publish(
                "axion/crm/push/alice/list",
                list.to_string().as_bytes(),
                false
            )
            .await
    );
    let result = alice.message_on("axion/crm/push/alice/result").await;
    assert_eq!(
        (result["id"].as_str(), result["ok"].as_bool()),
        (Some("mine"), Some(true)),
        "{result}"
    );
    h.mqtt.flush().await;
    let reached: Vec<_> = h
        .mqtt
        .messages()
        .into_iter()
        .filter(|m| m.topic.starts_with("axion/crm/push/bob"))
        .map(|m| m.topic)
        .collect();
    assert_eq!(
        reached,
        ["axion/crm/push/bob/subscribe", "axion/crm/push/bob/result"]
    );
    assert!(h.push.received_by(&bobs_browser).is_empty());

    // Another user's subscribe: refused a second time, the connection ends.
    assert!(
        !alice
            .publish("axion/crm/push/bob/subscribe", b"{}", false)
            .await
    );
    assert_eq!(
        metric(&h, r#"axion_push_broker_refusals_total{reason="publish"}"#).await,
        2.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_may_not_retain_nor_leave_a_will() {
    let (h, ws) = start().await;
    let will = LastWill::new(
        "axion/crm/push/bob/send",
        r#"{"title":"x"}"#,
        QoS::AtLeastOnce,
        false,
    );
    let (_, code) = BrowserLogin::connect(
        ws,
        Some(ORIGIN),
        "crm/alice",
        &token("crm", "alice"),
        Some(will),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);

    let mut alice = login(ws, "crm", "alice").await;
    let retained = json!({"token": token("crm", "alice")});
    alice
        .publish(
            "axion/crm/push/alice/list",
            retained.to_string().as_bytes(),
            true,
        )
        .await;
    assert!(alice.publish("axion/crm/push/alice/list", b"", false).await);
    h.mqtt
        .wait_for(0, "alice's plain list", WAIT, |m| {
            m.topic == "axion/crm/push/alice/list" && m.payload.is_empty()
        })
        .await;
    let lists = h
        .mqtt
        .messages()
        .into_iter()
        .filter(|m| m.topic == "axion/crm/push/alice/list")
        .count();
    assert_eq!(lists, 1, "the retained one was dropped");
    assert_eq!(
        metric(&h, r#"axion_push_broker_refusals_total{reason="retain"}"#).await,
        1.0
    );
    assert_eq!(
        metric(&h, r#"axion_push_broker_refusals_total{reason="will"}"#).await,
        1.0
    );
    h.stop().await;
}

/// A page logged in as alice still does all a page needs: reads the key,
/// subscribes, lists, receives its results and events, unsubscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_logged_in_as_alice_subscribes_lists_and_unsubscribes() {
    let (h, ws) = start().await;
    let mut alice = login(ws, "crm", "alice").await;
    let codes = alice
        .subscribe(&[
            "axion/crm/push/vapid",
            "axion/push/vapid",
            "axion/crm/push/alice/result",
            "axion/crm/push/alice",
        ])
        .await
        .unwrap();
    assert_eq!(codes, [GRANTED; 4]);
    let key = alice.message_on("axion/push/vapid").await;
    assert_eq!(
        key["public_key"],
        h.daemon().vapid().default.key.public_key()
    );

    let browser = h.browser("alice");
    let mut subscribe = browser.subscription();
    subscribe["id"] = json!("s-1");
    subscribe["token"] = json!(token("crm", "alice"));
    assert!(
        alice
            .publish(
                "axion/crm/push/alice/subscribe",
                subscribe.to_string().as_bytes(),
                false
            )
            .await
    );
    let result = alice.message_on("axion/crm/push/alice/result").await;
    assert_eq!(result["ok"], true, "{result}");

    let list = json!({"id": "l-1", "token": token("crm", "alice")});
    assert!(
        alice
            .publish(
                "axion/crm/push/alice/list",
                list.to_string().as_bytes(),
                false
            )
            .await
    );
    let listed = alice.message_on("axion/crm/push/alice/result").await;
    assert_eq!(listed["id"], "l-1", "{listed}");
    let item = &listed["items"][0];
    assert!(item.get("endpoint").is_none(), "{listed}");
    let id = item["subscription"].clone();

    h.send("crm", "alice", json!({"title": "hello alice"}))
        .await;
    let event = alice.message_on("axion/crm/push/alice").await;
    assert_eq!(event["title"], "hello alice");

    let unsubscribe = json!({"id": "u-1", "subscription": id, "token": token("crm", "alice")});
    assert!(
        alice
            .publish(
                "axion/crm/push/alice/unsubscribe",
                unsubscribe.to_string().as_bytes(),
                false
            )
            .await
    );
    let result = alice.message_on("axion/crm/push/alice/result").await;
    assert_eq!(
        (result["id"].as_str(), result["deactivated"].as_u64()),
        (Some("u-1"), Some(1)),
        "{result}"
    );
    h.stop().await;
}

/// Browsers log in only on the WebSocket listener, services only on the
/// MQTT listener; a browser's password is its own user's valid token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_takes_only_its_own_kind_of_login() {
    let h = Harness::start_with(|c| {
        let b = &mut c.settings.broker;
        b.websocket_listen = Some("127.0.0.1:0".parse().unwrap());
        b.websocket_origins = vec![ORIGIN.into()];
        b.users
            .insert("svc".into(), harness::secret("service-password"));
        c.settings.mqtt.username = Some("axion-push".into());
        c.settings.mqtt.password = Some(harness::secret("daemon-password"));
        c.settings.subscribe_token_secret = Some(harness::secret(SECRET));
    })
    .await;
    let broker = h.daemon().embedded_broker().unwrap();
    let (ws, tcp) = (broker.websocket.unwrap(), broker.listen);
    let now = axion_push::clock::now_ms() / 1000;
    for (user, password, code) in [
        (
            "svc",
            "service-password".to_owned(),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "crm/alice",
            token("crm", "bob"),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "crm/alice",
            token_until("crm", "alice", now - 1),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "crm/alice",
            String::new(),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "crm/alice",
            token("crm", "alice"),
            ConnectReturnCode::Success,
        ),
    ] {
        let (_, got) = BrowserLogin::login(ws, Some(ORIGIN), user, &password).await;
        assert_eq!(got, code, "{user} on the WebSocket listener");
    }
    for (user, password, admitted) in [
        ("crm/alice", token("crm", "alice"), false),
        ("svc", "service-password".to_owned(), true),
    ] {
        let mut options = rumqttc::MqttOptions::new("probe", "127.0.0.1", tcp.port());
        options.set_credentials(user, password);
        let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
        let first = tokio::time::timeout(WAIT, eventloop.poll()).await.unwrap();
        let connected = matches!(
            first,
            Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_)))
        );
        assert_eq!(
            connected, admitted,
            "{user} on the MQTT listener: {first:?}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ends_when_its_token_expires() {
    let (h, ws) = start().await;
    let expires = axion_push::clock::now_ms() / 1000 + 2;
    let (mut alice, code) = BrowserLogin::login(
        ws,
        Some(ORIGIN),
        "crm/alice",
        &token_until("crm", "alice", expires),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success);
    alice.closed().await;
    assert!(
        axion_push::clock::now_ms() / 1000 >= expires,
        "closed before it expired"
    );
    h.stop().await;
}

/// Any web site a person visits could open the loopback listener from
/// that person's browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_is_refused() {
    let (h, ws) = start().await;
    let refused = BrowserLogin::open(ws, Some("https://evil.example"))
        .await
        .err();
    let refusal = refused
        .expect("the handshake of another origin is refused")
        .0;
    assert!(refusal.contains("403"), "{refusal}");
    assert!(BrowserLogin::open(ws, Some(ORIGIN)).await.is_ok());
    assert!(
        BrowserLogin::open(ws, None).await.is_ok(),
        "not a browser: it logs in like one"
    );
    assert_eq!(
        metric(&h, r#"axion_push_broker_refusals_total{reason="origin"}"#).await,
        1.0
    );
    h.stop().await;
}

/// rumqttd ran each WebSocket handshake in its accept loop: one idle TCP
/// connection stopped every later browser from connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_socket_does_not_hold_up_a_login() {
    let h = Harness::start_with(|c| {
        let b = &mut c.settings.broker;
        b.websocket_listen = Some("127.0.0.1:0".parse().unwrap());
        b.websocket_origins = vec![ORIGIN.into()];
        // Long, so the login below cannot be waiting for the idle one to
        // time out.
        b.connect_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let ws = h.daemon().embedded_broker().unwrap().websocket.unwrap();
    let _idle = tokio::net::TcpStream::connect(ws).await.unwrap();
    let started = std::time::Instant::now();
    let (_, code) = BrowserLogin::login(ws, Some(ORIGIN), "crm/alice", "").await;
    assert_eq!(code, ConnectReturnCode::Success);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    h.stop().await;
}

/// v1 joined package, user and expiry with newlines while names could
/// contain them: a token for (`crm`, `a\nb`) was accepted for (`crm\na`,
/// `b`). Names with control characters are refused now, and v2 tokens
/// length-prefix their fields (see `token.rs`). Here, not with the other
/// token tests in `subscribe.rs`: those also run on Mosquitto, which
/// refuses such a topic itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_split_of_names_does_not_pass_for_another() {
    let h = Harness::start_with(|c| {
        c.settings.subscribe_token_secret = Some(harness::secret(SECRET));
    })
    .await;
    let expires = axion_push::clock::now_ms() / 1000 + 3600;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let signed = format!("axion-push subscribe v1\ncrm\na\nb\n{expires}");
    let tag = aws_lc_rs::hmac::sign(&key, signed.as_bytes());
    use base64::Engine as _;
    let v1 = format!(
        "{expires}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    );
    let b = h.browser("b");
    let mut sub = b.subscription();
    sub["token"] = json!(v1);
    let r = h
        .command("axion/crm\na/push/b/subscribe", sub.to_string().as_bytes())
        .await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("control character"),
        "{r}"
    );
    h.mqtt.flush().await;
    assert!(
        h.subscription_rows("b").await.is_empty(),
        "nothing recorded"
    );
    h.stop().await;
}

/// One address may hold `broker.websocket_max_per_address` WebSocket
/// connections at once: one more is closed before its handshake, and
/// counted; once one of them has closed, the address may connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_websocket_max_per_address_connections() {
    let (h, ws) = start_with(|b| b.websocket_max_per_address = 2).await;
    let alice = login(ws, "crm", "alice").await;
    let _bob = login(ws, "crm", "bob").await;

    assert!(
        BrowserLogin::open(ws, Some(ORIGIN)).await.is_err(),
        "a third connection from 127.0.0.1 is closed"
    );
    assert_eq!(metric(&h, &refusals("address_cap")).await, 1.0);

    drop(alice);
    metric_reaches(
        &h,
        r#"axion_push_broker_connections{listener="websocket"}"#,
        1.0,
    )
    .await;
    let (_carol, code) =
        BrowserLogin::login(ws, Some(ORIGIN), "crm/carol", &token("crm", "carol")).await;
    assert_eq!(code, ConnectReturnCode::Success, "the freed place is taken");
    assert_eq!(metric(&h, &refusals("address_cap")).await, 1.0);
    h.stop().await;
}

/// A browser may publish 10 commands at once, then 1 a second. Beyond
/// that, a publish is dropped (still acknowledged, so the page does not
/// send it again and again) and counted: it never reaches the daemon,
/// which answers the others only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_publishing_faster_than_its_allowance_has_the_excess_dropped_unanswered() {
    let (h, ws) = start().await;
    let mut alice = login(ws, "crm", "alice").await;
    assert_eq!(
        alice.subscribe(&["axion/crm/push/alice/result"]).await,
        Some(vec![GRANTED])
    );
    let token = token("crm", "alice");
    let list = |id: &str| json!({"id": id, "token": token}).to_string();

    // Eleven at once, without waiting for acknowledgements between them:
    // the eleventh is beyond the burst however slow the machine.
    let ids: Vec<String> = (1..=11).map(|n| format!("l-{n}")).collect();
    for (pkid, id) in (100..).zip(&ids) {
        let mut publish = Publish::new("axion/crm/push/alice/list", QoS::AtLeastOnce, list(id));
        publish.pkid = pkid;
        alice.send(Packet::Publish(publish)).await;
    }
    let mut acknowledged = BTreeSet::new();
    let mut answered = Vec::new();
    while acknowledged.len() < ids.len() {
        match alice.next().await {
            Some(Packet::PubAck(ack)) => {
                acknowledged.insert(ack.pkid);
            }
            Some(Packet::Publish(result)) => {
                let result: serde_json::Value = serde_json::from_slice(&result.payload).unwrap();
                answered.push(result["id"].as_str().unwrap().to_owned());
            }
            other => panic!("{other:?} before every publish was acknowledged"),
        }
    }
    assert_eq!(acknowledged, (100..111).collect());
    assert_eq!(metric(&h, &refusals("rate")).await, 1.0);

    // Not a wait for an event: the allowance refills at 1 a second. The
    // list after it is answered, and comes after all the others.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut late = Publish::new("axion/crm/push/alice/list", QoS::AtLeastOnce, list("late"));
    late.pkid = 111;
    alice.send(Packet::Publish(late)).await;
    while !answered.iter().any(|id| id == "late") {
        match alice.next().await {
            Some(Packet::Publish(result)) => {
                let result: serde_json::Value = serde_json::from_slice(&result.payload).unwrap();
                answered.push(result["id"].as_str().unwrap().to_owned());
            }
            Some(Packet::PubAck(ack)) => assert_eq!(ack.pkid, 111),
            other => panic!("{other:?} while waiting for the answers"),
        }
    }
    let mut expected: Vec<String> = ids[..10].to_vec();
    expected.push("late".into());
    h.mqtt
        .wait_for(0, "the late list", WAIT, |m| {
            m.topic == "axion/crm/push/alice/list" && m.json()["id"] == "late"
        })
        .await;
    assert_eq!(lists_on_the_broker(&h, "alice"), expected);
    answered.sort_by_key(|id| expected.iter().position(|e| e == id));
    assert_eq!(answered, expected, "no answer for l-11");
    assert_eq!(metric(&h, &refusals("rate")).await, 1.0);
    h.stop().await;
}

/// An endpoint is a capability (whoever holds it can wake that browser):
/// `list` with `"endpoints": true` is for services. From a browser it is
/// dropped and counted, and no endpoint reaches the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_asking_list_for_whole_endpoints_is_refused_and_sees_none() {
    let (h, ws) = start().await;
    let browser = h.browser("alice");
    let mut subscription = browser.subscription();
    subscription["token"] = json!(token("crm", "alice"));
    let r = h
        .command(
            "axion/crm/push/alice/subscribe",
            subscription.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let endpoint = subscription["endpoint"].as_str().unwrap().to_owned();

    let mut alice = login(ws, "crm", "alice").await;
    assert_eq!(
        alice.subscribe(&["axion/crm/push/alice/result"]).await,
        Some(vec![GRANTED])
    );
    let whole = json!({"id": "whole", "endpoints": true, "token": token("crm", "alice")});
    assert!(
        alice
            .publish(
                "axion/crm/push/alice/list",
                whole.to_string().as_bytes(),
                false
            )
            .await,
        "a dropped publish is still acknowledged"
    );
    let plain = json!({"id": "plain", "token": token("crm", "alice")});
    assert!(
        alice
            .publish(
                "axion/crm/push/alice/list",
                plain.to_string().as_bytes(),
                false
            )
            .await
    );
    let listed = alice.message_on("axion/crm/push/alice/result").await;
    assert_eq!(listed["id"], "plain", "{listed}");
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert!(!listed.to_string().contains(&endpoint), "{listed}");

    // The plain list reached the broker after the other would have.
    h.mqtt
        .wait_for(0, "the plain list", WAIT, |m| {
            m.topic == "axion/crm/push/alice/list" && m.json()["id"] == "plain"
        })
        .await;
    assert_eq!(lists_on_the_broker(&h, "alice"), ["plain"]);
    assert_eq!(metric(&h, &refusals("endpoints")).await, 1.0);
    h.stop().await;
}

/// A connection to the WebSocket listener has `broker.connect_timeout` to
/// log in, its handshake included: one that never finishes its handshake,
/// and one that finishes it and never sends CONNECT, are both closed then
/// and counted, and neither holds up a browser logging in meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_connection_that_does_not_log_in_is_closed_after_the_connect_timeout() {
    let connect_timeout = Duration::from_secs(2);
    let (h, ws) = start_with(|b| b.connect_timeout = connect_timeout).await;
    let opened = Instant::now();
    let mut half_handshake = tokio::net::TcpStream::connect(ws).await.unwrap();
    half_handshake
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut no_connect = BrowserLogin::open(ws, Some(ORIGIN))
        .await
        .expect("the handshake succeeds");

    let _alice = login(ws, "crm", "alice").await;
    assert_eq!(
        metric(&h, &refusals("timeout")).await,
        0.0,
        "alice logged in while both idle connections were open"
    );

    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, half_handshake.read_to_end(&mut rest))
        .await
        .expect("the half handshake is closed within the wait");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}: {rest:?}");
    no_connect.closed().await;
    let tolerance = Duration::from_millis(100);
    assert!(
        opened.elapsed() >= connect_timeout - tolerance,
        "closed after {:?}",
        opened.elapsed()
    );
    assert_eq!(metric(&h, &refusals("timeout")).await, 2.0);
    h.stop().await;
}

/// A browser's refusals are counted each, but only the first of a
/// connection is logged (with what was refused): a page cannot flood the
/// log. The next connection's first refusal is logged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_first_refusal_of_a_connection_is_logged() {
    harness::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let push = harness::PushService::start().await;
    let (config, port) = process::write_config(dir.path(), &push, "");
    let listen = format!("    listen: 127.0.0.1:{port}\n");
    let yaml = std::fs::read_to_string(&config).unwrap().replace(
        &listen,
        &format!("{listen}    websocket_listen: 127.0.0.1:0\n"),
    );
    std::fs::write(&config, yaml).unwrap();
    let mut serve = process::Serve::start(&config);
    let listening = serve.wait_for("embedded MQTT broker listening");
    let ws: SocketAddr = listening
        .split("websocket=Some(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no WebSocket address in {listening:?}"));

    // Without a token secret, on loopback: a browser login needs no token.
    let (mut first, code) = BrowserLogin::login(ws, None, "crm/alice", "").await;
    assert_eq!(code, ConnectReturnCode::Success);
    assert!(first.publish("axion/crm/push/bob/send", b"{}", false).await);
    assert!(
        !first
            .publish("axion/crm/push/bob/subscribe", b"{}", false)
            .await,
        "the second refusal closes the connection"
    );
    let (mut second, code) = BrowserLogin::login(ws, None, "crm/alice", "").await;
    assert_eq!(code, ConnectReturnCode::Success);
    assert!(
        second
            .publish("axion/crm/push/carol/send", b"{}", false)
            .await
    );

    // The log is in the order things happened: the first connection's
    // second refusal, had it been logged, would come before the second
    // connection's first.
    let needle = "a browser's packet was refused";
    let logged = [serve.wait_for(needle), serve.wait_for(needle)];
    assert!(logged[0].contains("axion/crm/push/bob/send"), "{logged:#?}");
    assert!(
        logged[1].contains("axion/crm/push/carol/send"),
        "{logged:#?}"
    );
}

//! The broker side: the embedded broker's addresses, the retained status and
//! VAPID topics, and an external Mosquitto that restarts under the daemon.

mod harness;

use std::time::Duration;

use axion_push::daemon::Daemon;
use harness::mosquitto::{Mosquitto, Secured};
use harness::{Harness, TestClient, WAIT, test_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_vapid_key_are_retained_and_the_status_turns_offline_on_stop() {
    let h = Harness::start().await;
    let port = h.daemon().embedded_broker().unwrap().listen.port();
    let late = TestClient::connect("127.0.0.1", port, &["axion/push/#".into()]).await;
    let status = late
        .wait_for(0, "retained status", WAIT, |m| {
            m.topic == "axion/push/daemon/status"
        })
        .await;
    assert!(status.retain, "the status is retained");
    let status = status.json();
    assert_eq!(status["state"], "online");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        status["instance"],
        h.config.settings.mqtt.client_id.as_str()
    );
    let key = late
        .wait_for(0, "retained key", WAIT, |m| m.topic == "axion/push/vapid")
        .await;
    assert!(key.retain);
    assert_eq!(
        key.json()["public_key"],
        h.daemon().vapid().default.key.public_key()
    );

    let from = late.count();
    let _files = h.stop().await;
    // The embedded broker outlives the daemon within this process.
    let offline = late
        .wait_for(from, "offline status", WAIT, |m| {
            m.topic == "axion/push/daemon/status"
        })
        .await;
    assert_eq!(offline.json()["state"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_broker_port_is_a_clear_error_naming_the_key() {
    harness::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let push = harness::PushService::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config(dir.path(), &push);
    config.settings.broker.listen = taken.local_addr().unwrap();
    let err = match Daemon::start(config).await {
        Ok(_) => panic!("started on a taken port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("already in use"), "{err}");
    assert!(err.contains("axion_push.broker.listen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_works_against_an_external_broker() {
    let broker = Mosquitto::start(false).await;
    let url = broker.url();
    let h = Harness::start_with(|c| c.settings.mqtt.url = Some(url.parse().unwrap())).await;
    assert!(
        h.daemon().embedded_broker().is_none(),
        "no embedded broker with a url"
    );
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let r = h
        .send("crm", "alice", json!({"title": "via mosquitto"}))
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_that_lost_the_session_the_daemon_reconnects_and_resubscribes() {
    let mut broker = Mosquitto::start(false).await;
    let url = broker.url();
    let h = Harness::start_with(|c| {
        c.settings.mqtt.url = Some(url.parse().unwrap());
        c.settings.mqtt.keep_alive = Duration::from_secs(5);
    })
    .await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;

    let from = h.mqtt.count();
    broker.restart().await;
    // The daemon announces itself again once it is back.
    h.mqtt
        .wait_for(
            from,
            "the daemon back online",
            Duration::from_secs(30),
            |m| m.topic == "axion/push/daemon/status" && m.json()["state"] == "online",
        )
        .await;
    // The broker forgot every subscription: commands only arrive if the
    // daemon subscribed again.
    let r = h
        .send("crm", "alice", json!({"title": "after restart"}))
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_published_while_the_daemon_is_away_is_handled_when_it_returns() {
    let broker = Mosquitto::start(true).await;
    let url = broker.url();
    let h = Harness::start_with(|c| c.settings.mqtt.url = Some(url.parse().unwrap())).await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let (mqtt, push, config) = (h.mqtt.clone(), h.push.clone(), h.config.clone());
    let _files = h.stop().await;

    // Published while no daemon runs; the broker keeps it for the daemon's
    // persistent session.
    let from = mqtt.count();
    mqtt.publish(
        "axion/crm/push/alice/send",
        json!({"id": "while-away", "title": "kept by the broker"}).to_string(),
    )
    .await;
    let daemon = Daemon::start(config).await.expect("the daemon restarts");
    let r = mqtt
        .wait_for(from, "the result", WAIT, |m| {
            m.topic == "axion/crm/push/alice/result" && m.json()["id"] == "while-away"
        })
        .await
        .json();
    assert_eq!(r["delivered"], 1, "{r}");
    assert_eq!(push.received_by(&b).len(), 1);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_connects_over_mqtts_with_credentials() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let broker = Mosquitto::start_with(
        false,
        Some(Secured {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            user: "axion".into(),
            password: "s3cret-pw".into(),
        }),
    )
    .await;
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), certified.cert.pem()).unwrap();
    let tls = broker.tls_addr.unwrap();
    let plain = broker.addr;
    // The test's own client uses the anonymous plain listener.
    let h = Harness::start_observed_at(Some(plain), |c| {
        let s = &mut c.settings.mqtt;
        s.url = Some(format!("mqtts://{tls}").parse().unwrap());
        s.ca_file = Some(ca.path().to_owned());
        s.username = Some("axion".into());
        s.password = Some(harness::secret("s3cret-pw"));
    })
    .await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let r = h.send("crm", "alice", json!({"title": "over TLS"})).await;
    assert_eq!(r["delivered"], 1, "{r}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_in_a_shared_group_split_the_commands_without_doubling_them() {
    let broker = Mosquitto::start(false).await;
    let url = broker.url();
    let h = Harness::start_with(|c| {
        c.settings.mqtt.url = Some(url.parse().unwrap());
        c.settings.mqtt.shared_group = Some("axion-push".into());
    })
    .await;
    let mut second = h.config.clone();
    second.settings.mqtt.client_id = format!("{}-second", second.settings.mqtt.client_id);
    let other = Daemon::start(second)
        .await
        .expect("a second instance starts");

    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let from = h.mqtt.count();
    for i in 0..20 {
        h.mqtt
            .publish(
                "axion/crm/push/alice/send",
                json!({"id": format!("s-{i}"), "title": "T"}).to_string(),
            )
            .await;
    }
    for i in 0..20 {
        let id = format!("s-{i}");
        h.mqtt
            .wait_for(from, &format!("result {id}"), WAIT, |m| {
                m.topic == "axion/crm/push/alice/result" && m.json()["id"] == id.as_str()
            })
            .await;
    }
    // Both stop: whatever either still had in flight is published before
    // its offline status, so after both goodbyes every result is in.
    let (mqtt, push) = (h.mqtt.clone(), h.push.clone());
    other.shutdown().await;
    let _files = h.stop().await;
    let offline = |m: &harness::Message| {
        m.topic == "axion/push/daemon/status" && m.json()["state"] == "offline"
    };
    let first = mqtt
        .wait_for(from, "an offline status", WAIT, offline)
        .await;
    let after_first = mqtt
        .messages()
        .iter()
        .position(|m| m.payload == first.payload && offline(m))
        .unwrap()
        + 1;
    mqtt.wait_for(after_first, "the second offline status", WAIT, offline)
        .await;
    let results = mqtt
        .messages()
        .iter()
        .skip(from)
        .filter(|m| m.topic == "axion/crm/push/alice/result")
        .count();
    assert_eq!(results, 20, "each command handled once");
    assert_eq!(
        push.received_by(&b).len(),
        20,
        "each notification pushed once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_listener_speaks_mqtt_over_websocket_when_enabled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let h = Harness::start_with(|c| {
        c.settings.broker.websocket_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let ws = h
        .daemon()
        .embedded_broker()
        .unwrap()
        .websocket
        .expect("the WebSocket listener's address is reported");
    let mut stream = tokio::net::TcpStream::connect(ws).await.unwrap();
    let request = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(WAIT, stream.read(&mut answer))
        .await
        .expect("the listener answers")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("sec-websocket-protocol: mqtt"),
        "{answer}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_listener_is_off_by_default() {
    let h = Harness::start().await;
    assert!(h.daemon().embedded_broker().unwrap().websocket.is_none());
    h.stop().await;
}

/// `broker.users`: only listed accounts (and the daemon's own login) may
/// connect to the embedded broker; an anonymous client is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_admits_only_its_accounts_when_it_has_any() {
    let (user, password) = ("service", "service-password");
    let h = Harness::start_with(|c| {
        c.settings.mqtt.username = Some("axion-push".into());
        c.settings.mqtt.password = Some(harness::secret("daemon-password"));
        c.settings
            .broker
            .users
            .insert(user.into(), harness::secret(password));
    })
    .await;
    let addr = h.daemon().embedded_broker().unwrap().listen;
    for (login, admitted) in [
        (None, false),
        (Some((user, "wrong")), false),
        (Some((user, password)), true),
    ] {
        let mut options = rumqttc::MqttOptions::new("probe", "127.0.0.1", addr.port());
        if let Some((u, p)) = login {
            options.set_credentials(u, p);
        }
        let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
        let first = tokio::time::timeout(WAIT, eventloop.poll())
            .await
            .expect("the broker answers");
        let connected = matches!(
            first,
            Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_)))
        );
        assert_eq!(connected, admitted, "{login:?}: {first:?}");
    }
    h.stop().await;
}

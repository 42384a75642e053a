//! The shipped Mosquitto settings (`deploy/mosquitto/`), proved on a real
//! Mosquitto with the daemon behind it: a browser account reads none of
//! another user's events and cannot publish a send; a service account can.

mod harness;

use std::path::Path;

use harness::mosquitto::Mosquitto;
use harness::{Harness, TestClient, WAIT};
use serde_json::json;

const DAEMON: (&str, &str) = ("axion-push", "daemon-password");
const SERVICE: (&str, &str) = ("axion-app", "service-password");
const ALICE: (&str, &str) = ("alice", "alice-password");
const BOB: (&str, &str) = ("bob", "bob-password");

/// Mosquitto with the shipped `axion-push.conf` and `axion-push.acl`, only
/// their paths and port changed, and a password file for the accounts
/// above.
async fn shipped_mosquitto() -> Mosquitto {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mosquitto");
    let acl = dir.path().join("axion-push.acl");
    std::fs::copy(shipped.join("axion-push.acl"), &acl).unwrap();
    let passwd = dir.path().join("axion-push.passwd");
    Mosquitto::password_file(&passwd, &[DAEMON, SERVICE, ALICE, BOB]);
    let addr = Mosquitto::free_addr();
    let conf = std::fs::read_to_string(shipped.join("axion-push.conf"))
        .unwrap()
        .replace("/etc/mosquitto/axion-push.passwd", passwd.to_str().unwrap())
        .replace(
            "/etc/mosquitto/conf.d/axion-push.acl",
            acl.to_str().unwrap(),
        )
        .replace(
            "listener 1883 127.0.0.1",
            &format!("listener {} 127.0.0.1", addr.port()),
        );
    Mosquitto::start_configured(dir, &conf, addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_shipped_acl_a_browser_account_sees_and_does_only_its_own_users_things() {
    let broker = shipped_mosquitto().await;
    let url = broker.url();
    let h = Harness::start_with(|c| {
        c.settings.mqtt.url = Some(url.parse().unwrap());
        c.settings.mqtt.topic_prefix = String::new();
        c.settings.mqtt.username = Some(DAEMON.0.into());
        c.settings.mqtt.password = Some(harness::secret(DAEMON.1));
    })
    .await;
    let port = broker.addr.port();
    let service = TestClient::connect_as("127.0.0.1", port, SERVICE, &["axion/#".into()]).await;
    let alice = TestClient::connect_as(
        "127.0.0.1",
        port,
        ALICE,
        &[
            "axion/#".into(),
            "axion/crm/push/bob".into(),
            "axion/crm/push/alice".into(),
            "axion/crm/push/alice/result".into(),
        ],
    )
    .await;

    // A service account subscribes bob's browser and sends to him.
    let bobs_browser = h.browser("bob");
    h.subscribe("crm", "bob", &bobs_browser).await;
    let for_bob = h.send("crm", "bob", json!({"title": "for bob"})).await;
    assert_eq!(for_bob["delivered"], 1, "{for_bob}");
    h.send("crm", "alice", json!({"title": "for alice"})).await;
    alice
        .wait_for(0, "alice's own event", WAIT, |m| {
            m.topic == "axion/crm/push/alice"
        })
        .await;

    // Alice's account publishes a send to bob, then a command of her own.
    let from = service.count();
    let phishing = json!({"title": "Your password expired", "url": "https://evil.example"});
    alice
        .publish("axion/crm/push/bob/send", phishing.to_string())
        .await;
    alice
        .publish("axion/crm/push/alice/send", phishing.to_string())
        .await;
    alice.publish("axion/crm/push/bob/subscribe", "{}").await;
    alice.publish("axion/crm/push/bob/receipt", "{}").await;
    alice.publish("axion/crm/push/alice/receipt", "{}").await;
    alice
        .publish(
            "axion/crm/push/alice/list",
            json!({"id": "mine"}).to_string(),
        )
        .await;
    alice
        .wait_for(0, "alice's list result", WAIT, |m| {
            m.topic == "axion/crm/push/alice/result" && m.json()["id"] == "mine"
        })
        .await;
    service
        .wait_for(0, "alice's list", WAIT, |m| {
            m.topic == "axion/crm/push/alice/list"
        })
        .await;

    let alice_read: Vec<String> = alice
        .messages()
        .into_iter()
        .map(|m| m.topic)
        .filter(|t| t.contains("/bob"))
        .collect();
    assert_eq!(alice_read, Vec::<String>::new(), "alice read bob's topics");
    let reached: Vec<String> = service
        .messages()
        .into_iter()
        .skip(from)
        .map(|m| m.topic)
        .filter(|t| !t.ends_with("/result"))
        .collect();
    assert_eq!(
        reached,
        ["axion/crm/push/alice/receipt", "axion/crm/push/alice/list"],
        "of alice's publishes only her receipt and list reached the broker's subscribers"
    );
    assert_eq!(
        h.push.received_by(&bobs_browser).len(),
        1,
        "only the service's push"
    );
    h.stop().await;
}

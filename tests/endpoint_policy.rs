//! The endpoint policy at send time: what the allow-list let through is
//! still refused when its name resolves to a private address.

mod harness;

use axion_push::config::{DeliverySettings, EndpointSettings};
use axion_push::model::{Endpoint, SubscriptionKeys};
use axion_push::notification::Urgency;
use axion_push::push::{EndpointPolicy, Message, PolicyError, PushClient, PushError, VapidSigner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_resolving_to_loopback_is_refused_when_dialing() {
    let dir = tempfile::tempdir().unwrap();
    let push = harness::PushService::start().await;
    let config = harness::test_config(dir.path(), &push);
    // "localhost" is on the allow-list, private addresses are not allowed.
    let policy = EndpointPolicy::new(&EndpointSettings {
        allow_hosts: vec!["localhost".into()],
        allow_ports: vec![push.addr.port()],
        allow_http: false,
        allow_private_addresses: false,
    });
    let settings = DeliverySettings {
        extra_root_ca: config.settings.delivery.extra_root_ca.clone(),
        ..DeliverySettings::default()
    };
    let client = PushClient::new(&settings, policy).unwrap();
    let browser = push.browser("b");
    let endpoint =
        Endpoint::parse(&format!("https://localhost:{}/push/b", push.addr.port())).unwrap();
    let keys = SubscriptionKeys::parse(&browser.p256dh, &browser.auth).unwrap();
    let vapid = axion_push::daemon::resolve_vapid(&config).unwrap();
    let signer = VapidSigner::new(&vapid.default);
    let message = Message {
        payload: b"{}",
        ttl: 60,
        urgency: Urgency::Normal,
        topic: None,
    };
    match client.send(&endpoint, &keys, message, &signer).await {
        Err(PushError::Policy(PolicyError::PrivateAddress(ip))) => assert!(ip.is_loopback()),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        push.received().is_empty(),
        "nothing reached the loopback service"
    );
}

/// Subscribes `endpoint` (with a simulated browser's keys) and returns the
/// result report.
async fn subscribe_endpoint(h: &harness::Harness, endpoint: &str) -> serde_json::Value {
    let mut subscription = h.browser("b").subscription();
    subscription["endpoint"] = serde_json::json!(endpoint);
    h.command(
        &h.command_topic("crm", "alice", axion_push::topics::Verb::Subscribe),
        subscription.to_string().as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_purpose_addresses_are_refused_even_when_listed() {
    // Each wraps or is an address no push service has: local-use NAT64 and
    // IPv4-translated forms of 127.0.0.1, Teredo with 127.0.0.1 as its
    // client, 6to4 relay anycast, and one of each other special-purpose kind.
    let hosts = [
        "[64:ff9b:1::7f00:1]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        "[::ffff:0:7f00:1]",
        "192.88.99.1",
        "[2002:7f00:1::1]",
        "[3fff::1]",
        "[5f00::1]",
        "[100:0:0:1::1]",
        "192.0.0.9",
        "192.31.196.1",
        "224.0.0.1",
    ];
    let h = harness::Harness::start_with(|c| {
        let e = &mut c.settings.endpoints;
        e.allow_private_addresses = false;
        e.allow_hosts.extend(hosts.iter().map(|h| h.to_string()));
    })
    .await;
    for host in hosts {
        let result = subscribe_endpoint(&h, &format!("https://{host}/push/x")).await;
        assert_eq!(result["ok"], false, "{host}: {result}");
        let error = result["error"].as_str().unwrap();
        assert!(
            error.contains("is not globally reachable"),
            "{host}: {error}"
        );
    }
    assert!(h.subscription_rows("alice").await.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_ports_and_user_info_are_refused_without_repeating_the_password() {
    // The default ports (the test config allows every one).
    let h = harness::Harness::start_with(|c| {
        c.settings.endpoints.allow_ports = EndpointSettings::default().allow_ports;
    })
    .await;
    let cases = [
        (
            "https://fcm.googleapis.com:22/fcm/send/x",
            "port 22 is not allowed",
        ),
        (
            "https://svc:hunter2@fcm.googleapis.com/fcm/send/x",
            "must not carry a user name or password",
        ),
        (
            "https://svc@fcm.googleapis.com/fcm/send/x",
            "must not carry a user name or password",
        ),
    ];
    for (endpoint, expected) in cases {
        let result = subscribe_endpoint(&h, endpoint).await;
        assert_eq!(result["ok"], false, "{endpoint}: {result}");
        let error = result["error"].as_str().unwrap();
        assert!(error.contains(expected), "{endpoint}: {error}");
        assert!(!error.contains("hunter2"), "{endpoint}: {error}");
    }
    // The standard port, written out, is the standard port.
    let result = subscribe_endpoint(&h, "https://fcm.googleapis.com:443/fcm/send/x").await;
    assert_eq!(result["ok"], true, "{result}");
    h.stop().await;
}

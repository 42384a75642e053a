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

//! Each subscription's health: `list` says what became of its pushes, and
//! a subscription its push service refuses — for it alone, while taking
//! others' pushes — for `subscriptions.expire_after` is deactivated as
//! `stale`. Nothing else expires anyone.

mod harness;

use std::time::Duration;

use harness::{Harness, Reply, WAIT};
use serde_json::{Value, json};

async fn list(h: &Harness, user: &str) -> Vec<Value> {
    let listed = h
        .command(
            &format!("axion/crm/push/{user}/list"),
            json!({"id": uuid::Uuid::new_v4().to_string(), "all": true})
                .to_string()
                .as_bytes(),
        )
        .await;
    listed["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_says_when_a_subscription_was_delivered_to_and_shown() {
    let h = Harness::start().await;
    let laptop = h.browser("laptop");
    h.subscribe("crm", "alice", &laptop).await;
    let sent = h.send("crm", "alice", json!({"title": "Hello"})).await;
    assert_eq!(sent["delivered"], 1, "{sent}");
    let token = h.push.wait_for(1, WAIT).await[0].payload.as_ref().unwrap()["receipt"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = h
        .command(
            "axion/crm/push/alice/receipt",
            json!({"id": "r-1", "token": token, "receipt": "shown"})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(shown["ok"], true, "{shown}");

    let items = list(&h, "alice").await;
    let health = &items[0]["health"];
    assert_eq!(health["receipt"], "shown", "{health}");
    assert!(health["delivered_at"].as_u64().is_some(), "{health}");
    let words = health["words"].as_str().unwrap();
    assert!(
        words.starts_with("delivered ") && words.contains(", shown "),
        "{words}"
    );
}

/// A push service that takes one browser's pushes and refuses another's.
async fn refused_beside_a_delivered_one(h: &Harness) -> (Value, harness::Browser) {
    let good = h.browser("good");
    let refused = h.browser("refused");
    h.subscribe("crm", "bob", &good).await;
    h.subscribe("crm", "alice", &refused).await;
    h.push.script(&refused, [Reply::status(400)]);
    // The push service takes a push first: evidence that it works.
    let delivered = h.send("crm", "bob", json!({"title": "for bob"})).await;
    assert_eq!(delivered["delivered"], 1, "{delivered}");
    let result = h.send("crm", "alice", json!({"title": "for alice"})).await;
    (result, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_refused_alone_for_expire_after_is_deactivated_as_stale() {
    let h = Harness::start_with(|c| c.settings.subscriptions.expire_after = Duration::ZERO).await;
    let (result, _) = refused_beside_a_delivered_one(&h).await;

    assert_eq!(result["failed"], 1, "{result}");
    assert_eq!(result["failures"]["stale"], 1, "{result}");
    let items = list(&h, "alice").await;
    assert_eq!(items[0]["active"], false, "deactivated: {items:?}");
    let again = h.send("crm", "alice", json!({"title": "again"})).await;
    assert_eq!(again["subscriptions"], 0, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_is_kept_until_expire_after_and_list_says_since_when() {
    let h = Harness::start().await;
    let (result, _) = refused_beside_a_delivered_one(&h).await;

    assert_eq!(result["failures"]["400"], 1, "{result}");
    let items = list(&h, "alice").await;
    assert_eq!(items[0]["active"], true, "{items:?}");
    let words = items[0]["health"]["words"].as_str().unwrap();
    assert!(
        words.starts_with("failing for ") && words.ends_with(&format!("400 from {}", h.push.addr)),
        "{words}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_while_the_push_service_delivers_to_nobody_never_expires_anyone() {
    // As a wrong VAPID key looks: every push refused (403), none delivered.
    let h = Harness::start_with(|c| c.settings.subscriptions.expire_after = Duration::ZERO).await;
    let laptop = h.browser("laptop");
    h.subscribe("crm", "alice", &laptop).await;
    h.push
        .script(&laptop, [Reply::status(403), Reply::status(403)]);

    for _ in 0..2 {
        let result = h.send("crm", "alice", json!({"title": "refused"})).await;
        assert_eq!(result["failures"]["403"], 1, "{result}");
    }
    let items = list(&h, "alice").await;
    assert_eq!(items[0]["active"], true, "{items:?}");
    assert_eq!(items[0]["health"]["failures"], 2);
    assert!(items[0]["health"].get("failing_since").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_service_in_trouble_for_a_subscription_never_expires_it() {
    // 503 and 429 for alice while bob's pushes are taken: temporary
    // trouble, retried, not a refusal of her subscription.
    let h = Harness::start_with(|c| c.settings.subscriptions.expire_after = Duration::ZERO).await;
    let good = h.browser("good");
    let busy = h.browser("busy");
    h.subscribe("crm", "bob", &good).await;
    h.subscribe("crm", "alice", &busy).await;
    h.push
        .script(&busy, [Reply::status(503), Reply::status(429)]);
    let delivered = h.send("crm", "bob", json!({"title": "for bob"})).await;
    assert_eq!(delivered["delivered"], 1, "{delivered}");

    let first = h
        .send(
            "crm",
            "alice",
            json!({"id": "busy-1", "title": "for alice"}),
        )
        .await;
    assert_eq!(first["queued"], 1, "{first}");
    let last = h.final_result("crm", "alice", "busy-1").await;
    assert_eq!(
        (&last["delivered"], &last["failed"]),
        (&json!(1), &json!(0)),
        "{last}"
    );
    let items = list(&h, "alice").await;
    assert_eq!(items[0]["active"], true, "{items:?}");
    assert!(
        items[0]["health"].get("failing_since").is_none(),
        "{items:?}"
    );
}

//! Groups: membership commands and sends to `@group`.

mod harness;

use axion_push::topics::Verb;
use harness::{Harness, WAIT};
use serde_json::json;

async fn members(h: &Harness, group: &str, change: serde_json::Value) -> serde_json::Value {
    h.command(
        &h.command_topic("crm", group, Verb::Members),
        change.to_string().as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_added_removed_and_replaced() {
    let h = Harness::start().await;
    let r = members(&h, "@ops", json!({"add": ["alice", "bob", "carol"]})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["command"], "members");
    assert_eq!(r["members"], 3);
    let r = members(&h, "@ops", json!({"remove": ["bob"], "add": ["alice"]})).await;
    assert_eq!(r["members"], 2, "adding a member twice changes nothing");
    let r = members(&h, "@ops", json!({"set": ["dave"]})).await;
    assert_eq!(r["members"], 1);
    let r = members(&h, "@ops", json!({"set": []})).await;
    assert_eq!(r["members"], 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_send_reaches_every_member_and_each_gets_the_event() {
    let h = Harness::start().await;
    let alice = h.browser("alice-laptop");
    let bob1 = h.browser("bob-phone");
    let bob2 = h.browser("bob-laptop");
    let outsider = h.browser("outsider");
    h.subscribe("crm", "alice", &alice).await;
    h.subscribe("crm", "bob", &bob1).await;
    h.subscribe("crm", "bob", &bob2).await;
    h.subscribe("crm", "eve", &outsider).await;
    members(&h, "@ops", json!({"add": ["alice", "bob", "carol"]})).await;

    let from = h.mqtt.count();
    let result = h
        .send("crm", "@ops", json!({"id": "g-1", "title": "Deploy at 5"}))
        .await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["members"], 3);
    assert_eq!(result["subscriptions"], 3);
    assert_eq!(result["delivered"], 3);
    for user in ["alice", "bob", "carol"] {
        let topic = format!("axion/crm/push/{user}");
        let event = h
            .mqtt
            .wait_for(from, &format!("{user}'s event"), WAIT, |m| m.topic == topic)
            .await
            .json();
        assert_eq!(event["id"], "g-1");
        assert_eq!(event["group"], "ops");
    }
    assert!(
        h.mqtt
            .messages()
            .iter()
            .any(|m| m.topic == "axion/crm/push/@ops/result")
    );
    assert!(h.push.received_by(&outsider).is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_group_is_answered_with_nothing_sent() {
    let h = Harness::start().await;
    let result = h
        .send("crm", "@nobody-here", json!({"title": "Hello?"}))
        .await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["members"], 0);
    assert_eq!(result["subscriptions"], 0);
    assert!(h.push.received().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_belong_to_their_package() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("hr", "alice", &b).await;
    members(&h, "@ops", json!({"add": ["alice"]})).await;
    let result = h.send("hr", "@ops", json!({"title": "T"})).await;
    assert_eq!(result["members"], 0, "@ops was only defined in crm");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_membership_changes_are_refused() {
    let h = Harness::start().await;
    let cases = [
        (
            json!({"set": ["a"], "add": ["b"]}),
            "set replaces the whole group",
        ),
        (json!({}), "nothing to change"),
        (json!({"add": "alice"}), "add must be a list"),
        (json!({"add": ["a/b"]}), "add[0]: user 'a/b' contains '/'"),
        (json!({"add": [42]}), "add[0] must be a user name"),
        (json!({"replace": ["a"]}), "unknown field `replace`"),
    ];
    for (change, expected) in cases {
        let r = members(&h, "@ops", change.clone()).await;
        assert_eq!(r["ok"], false, "{change}");
        assert!(
            r["error"].as_str().unwrap().contains(expected),
            "{change}: {r}"
        );
    }
    let r = h
        .command(
            &h.command_topic("crm", "alice", Verb::Members),
            b"{\"add\":[]}",
        )
        .await;
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("address it as @{group}"),
        "{r}"
    );
    h.stop().await;
}

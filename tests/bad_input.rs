//! Bad input gets a clear error on its result topic, and loses nothing: the
//! commands around it are still handled.

mod harness;

use harness::{Harness, WAIT};
use serde_json::json;

async fn raw(h: &Harness, topic: &str, payload: &[u8]) -> serde_json::Value {
    h.command(topic, payload).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sends_are_answered_with_the_reason() {
    let h = Harness::start().await;
    let topic = "axion/crm/push/alice/send";
    let cases: [(&[u8], &str); 7] = [
        (b"{\"title\":", "payload is not a valid notification"),
        (b"", "payload is not a valid notification"),
        (br#"{"id":"x1","body":"no title"}"#, "missing field `title`"),
        (br#"{"title":"   "}"#, "title is empty"),
        (
            br#"{"title":"T","requireInteraction":true}"#,
            "unknown field `requireInteraction`",
        ),
        (
            br#"{"title":"T","urgency":"asap"}"#,
            "unknown variant `asap`",
        ),
        (
            br#"{"title":"T","topic":"not a valid topic!"}"#,
            "topic must be 1 to 32 base64url",
        ),
    ];
    for (payload, expected) in cases {
        let r = raw(&h, topic, payload).await;
        assert_eq!(r["ok"], false, "{}", String::from_utf8_lossy(payload));
        assert_eq!(r["command"], "send");
        let error = r["error"].as_str().unwrap();
        assert!(
            error.contains(expected),
            "{}: {error}",
            String::from_utf8_lossy(payload)
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_command_keeps_the_id_it_was_sent_with() {
    let h = Harness::start().await;
    let r = raw(
        &h,
        "axion/crm/push/alice/send",
        br#"{"id":"mine-7","body":"x"}"#,
    )
    .await;
    assert_eq!(r["id"], "mine-7");
    assert_eq!(r["ok"], false);
    h.stop().await;
}

/// The daemon subscribes to each verb it knows (not to `…/+`, which would
/// bring its own result reports back to it): a command with another verb
/// reaches no daemon and is not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_verb_is_not_answered() {
    let h = Harness::start().await;
    let from = h.mqtt.count();
    h.mqtt
        .publish("axion/crm/push/alice/frobnicate", b"{}".to_vec())
        .await;
    // A command behind it, on the same connection, is answered: had the
    // first reached the daemon, its answer would have come first.
    let r = raw(&h, "axion/crm/push/alice/list", b"{}").await;
    assert_eq!(r["ok"], true, "{r}");
    let answers: Vec<_> = h.mqtt.messages()[from..]
        .iter()
        .filter(|m| m.topic == "axion/crm/push/alice/result")
        .map(|m| m.json())
        .collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    h.stop().await;
}

/// Should one reach it anyway (another subscription, a broker of its own),
/// it is answered, naming the verbs there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_verb_that_reaches_the_command_stage_is_answered() {
    let mut alone = harness::alone::Alone::with_egress(8).await;
    let mut egress = alone.egress.take().unwrap();
    alone
        .processor
        .handle("axion/crm/push/alice/frobnicate", b"{}")
        .await;
    let answer = egress.recv().await.unwrap().out;
    assert_eq!(answer.topic, "axion/crm/push/alice/result");
    let r: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(r["command"], "frobnicate");
    assert_eq!(
        r["error"],
        "unknown verb 'frobnicate' (expected send, subscribe, unsubscribe, members, list or receipt)"
    );
    alone.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_levels_are_answered_on_their_own_result_topic() {
    let h = Harness::start().await;
    let r = raw(&h, "axion/crm/push/vapid/send", br#"{"title":"T"}"#).await;
    assert!(r["error"].as_str().unwrap().contains("reserved"), "{r}");
    let r = raw(&h, "axion/crm/push/@/send", br#"{"title":"T"}"#).await;
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("group name is missing"),
        "{r}"
    );
    let r = raw(&h, "axion/crm/push/@ops/subscribe", b"{}").await;
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("addresses a single user"),
        "{r}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_command_is_refused_before_it_is_parsed() {
    let h = Harness::start_with(|c| c.settings.limits.max_command_bytes = 1024).await;
    let big = json!({"id": "big", "title": "T", "body": "x".repeat(2000)}).to_string();
    let r = raw(&h, "axion/crm/push/alice/send", big.as_bytes()).await;
    assert_eq!(r["ok"], false);
    assert_eq!(r["id"], "big");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("commands are limited to 1024 (axion_push.limits.max_command_bytes)"),
        "{r}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_too_large_for_one_push_record_is_refused_not_truncated() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let r = h
        .send(
            "crm",
            "alice",
            json!({"title": "T", "body": "x".repeat(5000)}),
        )
        .await;
    assert_eq!(r["ok"], false);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("at most 3993 fit one 4096-byte"),
        "{r}"
    );
    assert!(
        h.push.received().is_empty(),
        "nothing sent, not even a truncated part"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_around_a_bad_one_are_still_delivered() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let from = h.mqtt.count();
    // Published back to back, without waiting in between.
    h.mqtt
        .publish(
            "axion/crm/push/alice/send",
            json!({"id": "before", "title": "1"}).to_string(),
        )
        .await;
    h.mqtt
        .publish("axion/crm/push/alice/send", &b"\xff\xfe not json"[..])
        .await;
    h.mqtt
        .publish("axion/crm/push/alice/subscribe", &b"{}"[..])
        .await;
    h.mqtt
        .publish(
            "axion/crm/push/alice/send",
            json!({"id": "after", "title": "2"}).to_string(),
        )
        .await;
    for id in ["before", "after"] {
        let r = h
            .mqtt
            .wait_for(from, &format!("result {id}"), WAIT, |m| {
                m.topic == "axion/crm/push/alice/result" && m.json()["id"] == id
            })
            .await
            .json();
        assert_eq!(r["delivered"], 1, "{r}");
    }
    let errors = h
        .mqtt
        .messages()
        .iter()
        .skip(from)
        .filter(|m| m.topic == "axion/crm/push/alice/result" && m.json()["ok"] == false)
        .count();
    assert_eq!(errors, 2);
    let titles: Vec<_> = h
        .push
        .received_by(&b)
        .iter()
        .map(|r| r.payload.as_ref().unwrap()["notification"]["title"].clone())
        .collect();
    assert_eq!(titles.len(), 2);
    h.stop().await;
}

/// JSON nested deeper than serde_json's recursion limit (128) is refused
/// with a reason, for every verb, before it can exhaust the stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_with_a_reason() {
    let h = Harness::start().await;
    let deep = format!(
        r#"{{"title":"T","data":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    for verb in ["send", "subscribe", "unsubscribe", "list"] {
        let r = raw(&h, &format!("axion/crm/push/alice/{verb}"), deep.as_bytes()).await;
        assert_eq!(r["ok"], false, "{verb}: {r}");
        assert!(
            r["error"].as_str().unwrap().contains("recursion limit"),
            "{verb}: {r}"
        );
    }
    let r = raw(&h, "axion/crm/push/@ops/members", deep.as_bytes()).await;
    assert_eq!(r["ok"], false, "{r}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_urls_that_are_not_https_or_relative_are_refused_and_nothing_is_sent() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let cases = [
        (
            json!({"title": "T", "url": "javascript:alert(1)"}),
            "url must be",
        ),
        (
            json!({"title": "T", "url": "data:text/html,<script>alert(1)</script>"}),
            "url must be",
        ),
        (
            json!({"title": "T", "url": "http://app.example/x"}),
            "url must be",
        ),
        (
            json!({"title": "T", "url": "//evil.example/x"}),
            "url must be",
        ),
        (
            json!({"title": "T", "url": "\\\\evil.example/x"}),
            "url must be",
        ),
        (
            json!({"title": "T", "url": "java\tscript:alert(1)"}),
            "url must be",
        ),
        (
            json!({"title": "T", "actions": [
                {"action": "ok", "title": "OK", "url": "/fine"},
                {"action": "x", "title": "X", "url": "javascript:alert(1)"}
            ]}),
            "actions[1].url must be",
        ),
    ];
    for (notification, expected) in cases {
        let r = h.send("crm", "alice", notification.clone()).await;
        assert_eq!(r["ok"], false, "{notification}: {r}");
        let error = r["error"].as_str().unwrap();
        assert!(error.contains(expected), "{notification}: {error}");
    }
    assert!(
        h.push.received().is_empty(),
        "a refused send reached the push service"
    );
    // What stays allowed: https anywhere, and URLs relative to the app.
    for url in [
        "https://other.example/page",
        "/inbox?x=1",
        "inbox#top",
        "?tab=2",
    ] {
        let r = h
            .send("crm", "alice", json!({"title": "T", "url": url}))
            .await;
        assert_eq!(r["ok"], true, "{url}: {r}");
    }
    h.stop().await;
}

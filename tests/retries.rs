//! Retries that respect push services: what is retryable is tried again
//! with backoff, never sooner than `Retry-After`, until the message's TTL
//! runs out; one struggling push service does not slow the others; a send
//! id seen within the window is not delivered twice.

mod harness;

use std::time::Duration;

use harness::{Harness, PushService, Reply, WAIT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_answers_are_retried_until_delivered() {
    let h =
        Harness::start_with(|c| c.settings.delivery.request_timeout = Duration::from_millis(500))
            .await;
    let cases: Vec<(&str, Vec<Reply>)> = vec![
        ("500-500-201", vec![Reply::status(500), Reply::status(500)]),
        ("429", vec![Reply::status(429)]),
        ("502", vec![Reply::status(502)]),
        ("503", vec![Reply::status(503)]),
        ("504", vec![Reply::status(504)]),
        ("timeout", vec![Reply::slow(201, Duration::from_secs(2))]),
        ("dropped", vec![Reply::dropped()]),
    ];
    let mut browsers = Vec::new();
    for (name, script) in &cases {
        let b = h.browser(name);
        h.subscribe("crm", "erin", &b).await;
        h.push.script(&b, script.clone());
        browsers.push(b);
    }
    let first = h
        .send("crm", "erin", json!({"id": "flaky", "title": "T"}))
        .await;
    assert_eq!(first["ok"], true);
    // The first report comes once every delivery was tried once — the
    // timed-out one last, so quick retries of the others may be in already.
    assert_eq!(first["failed"], 0, "none refused: {first}");
    assert_eq!(first["deactivated"], 0, "none gone: {first}");
    assert!(first["queued"].as_u64() > Some(0), "a retry waits: {first}");

    let last = h.final_result("crm", "erin", "flaky").await;
    assert_eq!(last["delivered"], cases.len(), "{last}");
    assert_eq!(last["failed"], 0, "{last}");
    assert_eq!(last["deactivated"], 0, "{last}");
    // Each first answer was a failure (a timed-out request is only
    // recorded once its delayed answer is written): the delivery counted
    // for each came from a retry that decrypted.
    for ((name, _), b) in cases.iter().zip(&browsers) {
        let received = h.push.received_by(b);
        assert!(
            received
                .iter()
                .any(|r| r.answered == 201 && r.payload.is_ok()),
            "{name}: {received:#?}"
        );
    }
    assert!(h.subscription_rows("erin").await.iter().all(|r| r.active));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_an_endpoint_before_its_retry_after_in_seconds() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    h.push.script(&b, [Reply::retry_after(429, "2")]);
    h.send("crm", "alice", json!({"id": "later", "title": "T"}))
        .await;
    let last = h.final_result("crm", "alice", "later").await;
    assert_eq!(last["delivered"], 1, "{last}");
    let received = h.push.received_by(&b);
    assert_eq!(received.len(), 2);
    let waited = received[1].arrived_at - received[0].arrived_at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_an_endpoint_before_its_retry_after_as_an_http_date() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    // HTTP dates have whole seconds: 3 s ahead is at least 2 s ahead.
    let at = std::time::SystemTime::now() + Duration::from_secs(3);
    h.push
        .script(&b, [Reply::retry_after(503, httpdate::fmt_http_date(at))]);
    h.send("crm", "alice", json!({"id": "dated", "title": "T"}))
        .await;
    let last = h.final_result("crm", "alice", "dated").await;
    assert_eq!(last["delivered"], 1, "{last}");
    let received = h.push.received_by(&b);
    let waited = received[1].arrived_at - received[0].arrived_at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_be_delivered_within_its_ttl_is_reported_expired() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    h.push
        .script(&b, std::iter::repeat_n(Reply::status(503), 1000));
    let first = h
        .send(
            "crm",
            "alice",
            json!({"id": "doomed", "title": "T", "ttl": 2}),
        )
        .await;
    assert_eq!(first["queued"], 1, "{first}");
    let last = h.final_result("crm", "alice", "doomed").await;
    assert_eq!(last["expired"], 1, "{last}");
    assert_eq!(last["delivered"], 0, "{last}");
    assert_eq!(last["deactivated"], 0, "{last}");
    assert!(
        h.subscription_rows("alice").await[0].active,
        "never deactivated"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_ttl_expires_the_message_without_another_request() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    h.push.script(&b, [Reply::retry_after(429, "3600")]);
    h.send(
        "crm",
        "alice",
        json!({"id": "too-late", "title": "T", "ttl": 60}),
    )
    .await;
    let last = h.final_result("crm", "alice", "too-late").await;
    assert_eq!(last["expired"], 1, "{last}");
    assert_eq!(h.push.received_by(&b).len(), 1, "not asked again");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_push_service_does_not_delay_a_healthy_one() {
    let slow = PushService::start().await;
    let slow_ca = slow.ca_pem.clone();
    let h = Harness::start_with(move |c| trust_also(c, &slow_ca)).await;
    let (mqtt, push) = (h.mqtt.clone(), h.push.clone());

    let mut slow_ones = Vec::new();
    for i in 0..10 {
        let b = slow.browser(&format!("slow-{i}"));
        slow.script(&b, [Reply::slow(201, Duration::from_secs(4))]);
        subscribe(&mqtt, "frank", &b).await;
        slow_ones.push(b);
    }
    let mut healthy = Vec::new();
    for i in 0..30 {
        let b = push.browser(&format!("healthy-{i}"));
        subscribe(&mqtt, "frank", &b).await;
        healthy.push(b);
    }
    let from = mqtt.count();
    mqtt.publish(
        "axion/crm/push/frank/send",
        json!({"id": "mixed", "title": "T"}).to_string(),
    )
    .await;
    push.wait_for(healthy.len(), WAIT).await;
    assert_eq!(
        slow.received_count(),
        0,
        "every healthy push arrived while the slow service was still answering its first"
    );
    let result = mqtt
        .wait_for(from, "the result", WAIT, |m| {
            m.topic == "axion/crm/push/frank/result" && m.json()["id"] == "mixed"
        })
        .await
        .json();
    assert_eq!(result["delivered"], 40, "{result}");
    h.stop().await;
}

/// Makes the daemon trust a second push service besides the harness's.
fn trust_also(c: &mut axion_push::config::Config, pem: &str) {
    let own = c.settings.delivery.extra_root_ca.clone().unwrap();
    let mut both = std::fs::read_to_string(&own).unwrap();
    both.push_str(pem);
    let path = own.with_file_name("both-ca.pem");
    std::fs::write(&path, both).unwrap();
    c.settings.delivery.extra_root_ca = Some(path);
}

async fn subscribe(mqtt: &harness::TestClient, user: &str, b: &harness::Browser) {
    let from = mqtt.count();
    mqtt.publish(
        &format!("axion/crm/push/{user}/subscribe"),
        b.subscription().to_string(),
    )
    .await;
    let r = mqtt
        .wait_for(from, "subscribe result", WAIT, |m| {
            m.topic == format!("axion/crm/push/{user}/result")
        })
        .await
        .json();
    assert_eq!(r["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_service_failing_repeatedly_is_paused_while_others_flow() {
    let failing = PushService::start().await;
    let failing_ca = failing.ca_pem.clone();
    let h = Harness::start_with(move |c| {
        trust_also(c, &failing_ca);
        // Long enough that a paused origin is visibly left alone.
        c.settings.delivery.retry_initial = Duration::from_secs(3);
        c.settings.delivery.retry_max = Duration::from_secs(3);
    })
    .await;
    let (mqtt, push) = (h.mqtt.clone(), h.push.clone());

    let n = 3 * axion_push::delivery::THRESHOLD as usize;
    let probe_answer = Duration::from_millis(500);
    for i in 0..n {
        let b = failing.browser(&format!("down-{i}"));
        failing.script(&b, [Reply::status(503), Reply::slow(201, probe_answer)]);
        subscribe(&mqtt, "gina", &b).await;
    }
    let ok = push.browser("up");
    subscribe(&mqtt, "gina", &ok).await;
    let from = mqtt.count();
    mqtt.publish(
        "axion/crm/push/gina/send",
        json!({"id": "paused", "title": "T"}).to_string(),
    )
    .await;
    let first = mqtt
        .wait_for(from, "the first result", WAIT, |m| {
            m.topic == "axion/crm/push/gina/result" && m.json()["id"] == "paused"
        })
        .await
        .json();
    assert_eq!(
        first["delivered"], 1,
        "the healthy service is not held up: {first}"
    );
    assert_eq!(first["queued"], n, "{first}");
    let last = mqtt
        .wait_for(from, "the final result", Duration::from_secs(30), |m| {
            m.topic == "axion/crm/push/gina/result"
                && m.json()["id"] == "paused"
                && m.json()["queued"] == 0
        })
        .await
        .json();
    assert_eq!(last["delivered"], n + 1, "{last}");
    // The retries: one probe first; nothing else while it is answered.
    let mut retries: Vec<_> = failing.received()[n..]
        .iter()
        .map(|r| r.arrived_at)
        .collect();
    retries.sort();
    assert_eq!(retries.len(), n, "one retry each");
    let probe = retries[0];
    assert!(
        retries[1..].iter().all(|&t| t >= probe + probe_answer),
        "a retry reached the paused service while its probe was out: {:?}",
        retries.iter().map(|t| *t - probe).collect::<Vec<_>>()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_id_seen_within_the_window_is_answered_duplicate_and_not_delivered() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let first = h
        .send("crm", "alice", json!({"id": "once", "title": "T"}))
        .await;
    assert_eq!(first["delivered"], 1);
    assert!(first.get("duplicate").is_none(), "{first}");
    let from = h.mqtt.count();
    let again = h
        .send("crm", "alice", json!({"id": "once", "title": "T"}))
        .await;
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["delivered"], 1, "the earlier send's counts: {again}");
    assert_eq!(h.push.received_by(&b).len(), 1, "delivered once");
    assert!(
        !h.mqtt.messages()[from..]
            .iter()
            .any(|m| m.topic == "axion/crm/push/alice"),
        "no second real-time event"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_after_the_window_is_a_new_send() {
    let h = Harness::start_with(|c| c.settings.delivery.dedup_window = Duration::ZERO).await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    h.send("crm", "alice", json!({"id": "daily", "title": "T"}))
        .await;
    let again = h
        .send("crm", "alice", json!({"id": "daily", "title": "T"}))
        .await;
    assert!(again.get("duplicate").is_none(), "{again}");
    assert_eq!(again["delivered"], 1, "{again}");
    assert_eq!(h.push.received_by(&b).len(), 2);
    h.stop().await;
}

/// The breaker's probe is one delivery let through to a paused push
/// service; whatever becomes of it must close or re-open the breaker —
/// also when it never reaches the service (here: a row other software
/// wrote, with keys that cannot be used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_could_not_be_sent_does_not_leave_the_push_service_paused() {
    let h = Harness::start().await;
    // THRESHOLD failures in a row pause the push service for the 2 s its
    // Retry-After asks; with a TTL of 1 s none of these is tried again, so
    // none of them becomes the probe.
    for i in 0..axion_push::delivery::THRESHOLD {
        let b = h.browser(&format!("opener-{i}"));
        h.subscribe("crm", "opener", &b).await;
        h.push.script(&b, [Reply::retry_after(503, "2")]);
    }
    h.send(
        "crm",
        "opener",
        json!({"id": "open", "title": "T", "ttl": 1}),
    )
    .await;
    let opened = h.final_result("crm", "opener", "open").await;
    assert_eq!(
        opened["expired"],
        axion_push::delivery::THRESHOLD,
        "{opened}"
    );

    // The next delivery to that push service is the probe, and it cannot be
    // encrypted.
    let unusable = h.browser("unusable");
    h.insert_row_written_elsewhere("crm", "broken", &unusable.endpoint, "not-a-key", "x")
        .await;
    h.send("crm", "broken", json!({"id": "probe", "title": "T"}))
        .await;
    let probe = h.final_result("crm", "broken", "probe").await;
    assert_eq!(probe["failures"]["keys"], 1, "{probe}");

    // The push service answers again: a later push gets through.
    let later = h.browser("later");
    h.subscribe("crm", "later", &later).await;
    h.send("crm", "later", json!({"id": "after", "title": "T"}))
        .await;
    let after = h.final_result("crm", "later", "after").await;
    assert_eq!(after["delivered"], 1, "{after}");
    h.stop().await;
}

/// A push service may ask for any `Retry-After`; the deliveries that got
/// it honour it (here: they expire), but the service as a whole is paused
/// no longer than `delivery.pause_max`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_service_is_paused_no_longer_than_pause_max_whatever_it_asks() {
    let h = Harness::start_with(|c| c.settings.delivery.pause_max = Duration::from_secs(1)).await;
    for i in 0..axion_push::delivery::THRESHOLD {
        let b = h.browser(&format!("opener-{i}"));
        h.subscribe("crm", "opener", &b).await;
        h.push.script(&b, [Reply::retry_after(503, "999999999")]);
    }
    h.send("crm", "opener", json!({"id": "open", "title": "T"}))
        .await;
    let opened = h.final_result("crm", "opener", "open").await;
    assert_eq!(
        opened["expired"],
        axion_push::delivery::THRESHOLD,
        "{opened}"
    );

    let later = h.browser("later");
    h.subscribe("crm", "later", &later).await;
    h.send("crm", "later", json!({"id": "after", "title": "T"}))
        .await;
    let after = h.final_result("crm", "later", "after").await;
    assert_eq!(after["delivered"], 1, "{after}");
    h.stop().await;
}

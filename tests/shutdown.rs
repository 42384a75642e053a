//! Stopping: pushes in flight finish within the grace period and their
//! results go out before the offline status; what cannot finish stays in
//! the delivery queue and is delivered by the next run.

mod harness;

use std::time::Duration;

use axion_push::daemon::Daemon;
use harness::mosquitto::Mosquitto;
use harness::{Harness, Reply, WAIT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_flight_at_stop_finishes_and_reports_before_going_offline() {
    let h = Harness::start().await;
    let slow = h.browser("slow");
    h.subscribe("crm", "alice", &slow).await;
    h.push.script(
        &slow,
        [Reply {
            delay: Some(Duration::from_millis(500)),
            ..Reply::status(201)
        }],
    );
    let from = h.mqtt.count();
    h.mqtt
        .publish(
            "axion/crm/push/alice/send",
            json!({"id": "in-flight", "title": "T"}).to_string(),
        )
        .await;
    h.mqtt
        .wait_for(from, "the event", WAIT, |m| {
            m.topic == "axion/crm/push/alice"
        })
        .await;
    let mqtt = h.mqtt.clone();
    let _files = h.stop().await;

    let messages = mqtt.messages();
    let result = messages
        .iter()
        .position(|m| m.topic == "axion/crm/push/alice/result" && m.json()["id"] == "in-flight")
        .expect("the result was published before the daemon stopped");
    assert_eq!(messages[result].json()["delivered"], 1);
    let offline = messages
        .iter()
        .position(|m| m.topic == "axion/push/daemon/status" && m.json()["state"] == "offline")
        .expect("the offline status was published");
    assert!(result < offline, "the result goes out before the goodbye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_still_running_after_the_grace_period_is_delivered_by_the_next_run() {
    let broker = Mosquitto::start(true).await;
    let url = broker.url();
    let h = Harness::start_with(|c| {
        c.settings.mqtt.url = Some(url.parse().unwrap());
        c.settings.delivery.shutdown_grace = Duration::from_millis(200);
    })
    .await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    // The first attempt hangs past the grace period; the next is answered.
    h.push.script(
        &b,
        [Reply {
            delay: Some(Duration::from_secs(3)),
            ..Reply::status(201)
        }],
    );
    let from = h.mqtt.count();
    h.mqtt
        .publish(
            "axion/crm/push/alice/send",
            json!({"id": "abandoned", "title": "T"}).to_string(),
        )
        .await;
    h.mqtt
        .wait_for(from, "the event", WAIT, |m| {
            m.topic == "axion/crm/push/alice"
        })
        .await;
    let (mqtt, push, config) = (h.mqtt.clone(), h.push.clone(), h.config.clone());
    let _files = h.stop().await;
    assert!(
        !mqtt
            .messages()
            .iter()
            .any(|m| m.topic == "axion/crm/push/alice/result" && m.json()["id"] == "abandoned"),
        "an abandoned send has no result"
    );

    let daemon = Daemon::start(config).await.expect("the daemon restarts");
    let result = mqtt
        .wait_for(from, "the redelivered send's result", WAIT, |m| {
            m.topic == "axion/crm/push/alice/result" && m.json()["id"] == "abandoned"
        })
        .await
        .json();
    assert_eq!(result["delivered"], 1, "{result}");
    assert!(push.received_by(&b).iter().any(|r| r.answered == 201));
    daemon.shutdown().await;
}

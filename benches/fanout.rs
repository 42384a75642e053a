//! End-to-end fan-out: one send command to a user with many subscriptions,
//! from the MQTT publish to the result report, through the embedded broker,
//! the daemon and an HTTPS/HTTP-2 push service on loopback.
//!
//! The baseline, run in the same invocation, is the same daemon sending one
//! push at a time (`delivery.concurrency: 1`) — how the Python module (and
//! ntfy, and pywebpush callers) deliver. Two push services: one answering at
//! once (the daemon's CPU is the limit), one answering after 20 ms (a
//! network round trip, where sending one at a time is the limit). The push
//! service does not decrypt here, so it does not compete for the CPU being
//! measured; the tests check every byte. Each configuration makes one
//! unmeasured send first (connections to the push service), then reports
//! the median of its measured sends.
//!
//! Run: `cargo bench --bench fanout`.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::Harness;
use serde_json::json;

struct Case {
    name: &'static str,
    subscriptions: usize,
    latency: Option<Duration>,
    sends: usize,
}

/// Pushes per second for `case` at `concurrency`: the median of its sends.
async fn pushes_per_second(case: &Case, concurrency: usize) -> f64 {
    let h = Harness::start_with(|c| c.settings.delivery.concurrency = concurrency).await;
    h.push.accept_unchecked(case.latency);
    for i in 0..case.subscriptions {
        let browser = h.browser(&format!("b{i}"));
        h.mqtt
            .publish(
                "axion/bench/push/alice/subscribe",
                browser.subscription().to_string(),
            )
            .await;
    }
    // Subscribes are handled in order: the last result means all are in.
    let from = 0;
    h.mqtt
        .wait_for(from, "the last subscribe", Duration::from_secs(120), |m| {
            m.topic == "axion/bench/push/alice/result"
                && m.json()["subscriptions"] == case.subscriptions
        })
        .await;

    // One unmeasured send opens the connections to the push service.
    h.send("bench", "alice", json!({"title": "Warm-up"})).await;
    let mut rates = Vec::new();
    for _ in 0..case.sends {
        let started = Instant::now();
        let result = h
            .send(
                "bench",
                "alice",
                json!({"title": "Benchmark", "body": "fan-out"}),
            )
            .await;
        let elapsed = started.elapsed();
        assert_eq!(result["delivered"], case.subscriptions, "{result}");
        rates.push(case.subscriptions as f64 / elapsed.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    h.stop().await;
    rates[rates.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = [
        Case {
            name: "2000 subscriptions, instant answers",
            subscriptions: 2000,
            latency: None,
            sends: 5,
        },
        Case {
            name: "200 subscriptions, 20 ms answers",
            subscriptions: 200,
            latency: Some(Duration::from_millis(20)),
            sends: 5,
        },
    ];
    println!("axion-push fan-out, one send to one user, median pushes/s");
    for case in &cases {
        let ours = runtime.block_on(pushes_per_second(case, 256));
        let baseline = runtime.block_on(pushes_per_second(case, 1));
        println!(
            "{:<38} concurrency 256: {:>8.0}/s   one at a time: {:>7.0}/s   ratio {:>6.1}×",
            case.name,
            ours,
            baseline,
            ours / baseline
        );
    }
}

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
//! A workload is a row of [`workloads`]; [`configure`] holds every setting
//! a run needs beyond the tests' defaults.
//!
//! Run: `cargo bench --bench fanout`; `cargo bench --bench fanout -- --smoke`
//! is a run of seconds that only proves the benchmark works (`.ci/run`).

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use axion_push::config::Config;
use harness::Harness;
use serde_json::json;

/// How much a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    /// The figures the README quotes.
    Full,
    /// A few sends, each still above the default per-user subscription
    /// limit, so that a setting the benchmark depends on cannot go stale
    /// unnoticed.
    Smoke,
}

impl Scale {
    fn from_args() -> Scale {
        if std::env::args().any(|a| a == "--smoke") {
            Scale::Smoke
        } else {
            Scale::Full
        }
    }
}

/// One send to one user holding `subscriptions` subscriptions.
struct Workload {
    /// How the push service answers, for the printed row.
    answers: &'static str,
    subscriptions: usize,
    latency: Option<Duration>,
    /// Measured sends; the median is reported.
    sends: usize,
}

/// Subscriptions per user in a smoke run: above the default
/// `limits.max_subscriptions_per_user` (50).
const SMOKE_SUBSCRIPTIONS: usize = 60;

fn workloads(scale: Scale) -> Vec<Workload> {
    let full = [
        Workload {
            answers: "instant answers",
            subscriptions: 2000,
            latency: None,
            sends: 5,
        },
        Workload {
            answers: "20 ms answers",
            subscriptions: 200,
            latency: Some(Duration::from_millis(20)),
            sends: 5,
        },
    ];
    match scale {
        Scale::Full => full.into(),
        Scale::Smoke => full
            .into_iter()
            .map(|w| Workload {
                subscriptions: SMOKE_SUBSCRIPTIONS,
                sends: 1,
                ..w
            })
            .collect(),
    }
}

/// The daemon's settings for a run of `workload`, beyond the tests' own.
fn configure(config: &mut Config, workload: &Workload, concurrency: usize) {
    config.settings.delivery.concurrency = concurrency;
    // One user holds every subscription: at the default limit the daemon
    // would deactivate the oldest as the newest arrive.
    let limits = &mut config.settings.limits;
    limits.max_subscriptions_per_user = limits
        .max_subscriptions_per_user
        .max(workload.subscriptions);
}

/// Pushes per second for `workload` at `concurrency`: the median of its sends.
async fn pushes_per_second(workload: &Workload, concurrency: usize) -> f64 {
    let h = Harness::start_with(|c| configure(c, workload, concurrency)).await;
    h.push.accept_unchecked(workload.latency);
    for i in 0..workload.subscriptions {
        let browser = h.browser(&format!("b{i}"));
        h.mqtt
            .publish(
                "axion/bench/push/alice/subscribe",
                browser.subscription().to_string(),
            )
            .await;
    }
    // Subscribes are handled in order: the last result means all are in,
    // and one that let an older subscription go means the setup is wrong.
    let last = h
        .mqtt
        .wait_for(0, "the last subscribe", Duration::from_secs(120), |m| {
            m.topic == "axion/bench/push/alice/result"
                && (m.json()["subscriptions"] == workload.subscriptions
                    || m.json()["deactivated"] != 0)
        })
        .await;
    assert_eq!(
        last.json()["deactivated"],
        0,
        "a subscribe deactivated an older subscription: {}",
        last.json()
    );

    // One unmeasured send opens the connections to the push service.
    h.send("bench", "alice", json!({"title": "Warm-up"})).await;
    let mut rates = Vec::new();
    for _ in 0..workload.sends {
        let started = Instant::now();
        let result = h
            .send(
                "bench",
                "alice",
                json!({"title": "Benchmark", "body": "fan-out"}),
            )
            .await;
        let elapsed = started.elapsed();
        assert_eq!(result["delivered"], workload.subscriptions, "{result}");
        rates.push(workload.subscriptions as f64 / elapsed.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    h.stop().await;
    rates[rates.len() / 2]
}

fn main() {
    let scale = Scale::from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "axion-push fan-out, one send to one user, median pushes/s{}",
        if scale == Scale::Smoke {
            " (smoke run: the figures mean nothing)"
        } else {
            ""
        }
    );
    for workload in workloads(scale) {
        let ours = runtime.block_on(pushes_per_second(&workload, 256));
        let baseline = runtime.block_on(pushes_per_second(&workload, 1));
        println!(
            "{:<38} concurrency 256: {:>8.0}/s   one at a time: {:>7.0}/s   ratio {:>6.1}×",
            format!(
                "{} subscriptions, {}",
                workload.subscriptions, workload.answers
            ),
            ours,
            baseline,
            ours / baseline
        );
    }
}

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
//! Then the same fan-out on each database of `--backends` (default: SQLite
//! only), e.g. `--backends sqlite,mysql://root@127.0.0.1:3306,postgres://postgres@127.0.0.1:5432`:
//! one send to 10,000 subscriptions written straight into Axion's table,
//! as pushes/s and as the ratio to SQLite's figure of the same run
//! (`--backends-only` skips the workloads above and runs just this).
//!
//! Run: `cargo bench --bench fanout`; `cargo bench --bench fanout -- --smoke`
//! is a run of seconds that only proves the benchmark works (`.ci/run`).

#[path = "../tests/harness/mod.rs"]
mod harness;

/// The daemon's allocator (see `src/main.rs`): the daemon measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use axion_push::config::Config;
use harness::Harness;
use harness::database::{AxionRow, TestDatabase};
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

/// The databases to compare, from `--backends a,b,c`: `sqlite` or a server
/// URL without a database name.
fn backends() -> Vec<Option<String>> {
    let args: Vec<String> = std::env::args().collect();
    let list = args
        .iter()
        .position(|a| a == "--backends")
        .and_then(|i| args.get(i + 1))
        .map_or("sqlite", String::as_str);
    list.split(',')
        .map(|b| (b != "sqlite").then(|| b.to_owned()))
        .collect()
}

/// Pushes per second of one send to `subscriptions` subscriptions on the
/// database at `server` (SQLite when `None`): the median of `sends`.
async fn fan_out_on(server: Option<&str>, subscriptions: usize, sends: usize) -> (String, f64) {
    let database = TestDatabase::create_on(server).await;
    let name = database.backend.name().to_owned();
    let workload = Workload {
        answers: "instant answers",
        subscriptions,
        latency: None,
        sends,
    };
    // Straight to the server, not through the tests' proxy.
    let direct = database.direct_url.clone();
    let h = Harness::start_on(database, None, |c| {
        configure(c, &workload, 256);
        c.settings.database.url = direct;
    })
    .await;
    h.push.accept_unchecked(None);
    let browsers: Vec<_> = (0..subscriptions)
        .map(|i| h.browser(&format!("b{i}")))
        .collect();
    let rows: Vec<AxionRow> = browsers
        .iter()
        .map(|b| AxionRow {
            user: "alice",
            package: "bench",
            endpoint: &b.endpoint,
            p256dh: Some(&b.p256dh),
            auth: Some(&b.auth),
            created_at: Some("2025-01-01 00:00:00"),
            active: Some("Y"),
            ..AxionRow::default()
        })
        .collect();
    h.database.insert_rows(&rows).await;
    h.send("bench", "alice", json!({"title": "Warm-up"})).await;
    let mut rates = Vec::new();
    for _ in 0..sends {
        let started = Instant::now();
        let result = h
            .send("bench", "alice", json!({"title": "Benchmark"}))
            .await;
        let elapsed = started.elapsed();
        assert_eq!(result["delivered"], subscriptions, "{result}");
        rates.push(subscriptions as f64 / elapsed.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    h.stop().await;
    (name, rates[rates.len() / 2])
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
    // `--backends-only`: only the comparison of databases below.
    let workloads = if std::env::args().any(|a| a == "--backends-only") {
        Vec::new()
    } else {
        workloads(scale)
    };
    for workload in workloads {
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
    let (subscriptions, sends) = match scale {
        Scale::Full => (10_000, 3),
        Scale::Smoke => (SMOKE_SUBSCRIPTIONS, 1),
    };
    println!("one send to {subscriptions} subscriptions, by database, median pushes/s");
    let mut sqlite = None;
    for server in backends() {
        let (name, rate) = runtime.block_on(fan_out_on(server.as_deref(), subscriptions, sends));
        let per_push = 1e6 / rate;
        let against = match sqlite {
            None => {
                sqlite = Some(rate);
                String::new()
            }
            Some(first) => format!(
                "   {:.2}× the first, {:+.0} µs per push",
                rate / first,
                per_push - 1e6 / first
            ),
        };
        println!("{name:<16} {rate:>8.0}/s   {per_push:>6.0} µs per push{against}");
    }
}

//! One measured run: publish a workload's sends, wait until every push has
//! reached the push service, wait until the system under test is idle
//! again, and read what it cost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::Setup;
use crate::mqtt::Pace;
use crate::population::{Group, PACKAGE};
use crate::procfs;
use crate::push_service::now_ns;
use crate::systems::Running;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Pushes over the time from the first publish to the last push's
    /// arrival.
    pub pushes_per_second: f64,
    /// The system's own CPU (daemon or baseline process), per push.
    pub cpu_ms_per_push: f64,
    /// The broker's, the push service's and the load generator's CPU, per
    /// push.
    pub others_ms_per_push: f64,
    /// The system's peak resident memory during the run.
    pub peak_rss_mb: Option<f64>,
    /// Publish → push, for steady runs.
    pub latency: Option<Latency>,
}

/// Publish → push arrival, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The sends of a run: send `i` goes to user `i % users`, with the topic
/// (`Topic` header) `r{run}s{i}` that names it at the push service.
fn sends(group: &Group, count: usize, run: usize) -> Vec<(String, Bytes)> {
    (0..count)
        .map(|i| {
            let user = &group.users[i % group.users.len()];
            let payload = serde_json::json!({
                "id": format!("bench-r{run}-{i}"),
                "title": "Load",
                "body": "a send of the load benchmark",
                "url": "/",
                "ttl": 3600,
                "topic": format!("r{run}s{i}"),
            });
            (
                format!("axion/{PACKAGE}/push/{user}/send"),
                Bytes::from(payload.to_string()),
            )
        })
        .collect()
}

/// CPU seconds of the system under test, and of the other processes (the
/// broker, the push service, this process: the load generator).
fn cpu(setup: &Setup, sut: &Running) -> Result<(f64, f64), String> {
    let read = |pid: u32| procfs::cpu_seconds(pid).ok_or(format!("process {pid} is gone"));
    let own = read(sut.pid).map_err(|e| format!("{e}: {}", sut.log_tail()))?;
    let others = read(setup.broker.pid)? + read(setup.push.pid)? + read(std::process::id())?;
    Ok((own, others))
}

/// Waits until neither the system nor the broker used any CPU for 200 ms
/// (what follows the last push — recording outcomes, result reports — is
/// part of the cost), at most 10 s.
fn settle(setup: &Setup, sut: &Running) {
    let read = || {
        (
            procfs::cpu_seconds(sut.pid),
            procfs::cpu_seconds(setup.broker.pid),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = read();
    let mut quiet = 0;
    while quiet < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = read();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
}

/// How long a run may go without a push arriving before it fails.
const STALL: Duration = Duration::from_secs(60);

/// Waits until `expected` pushes have arrived, as long as they keep coming;
/// returns when the last one arrived.
fn wait_for_pushes(setup: &mut Setup, sut: &Running, expected: usize) -> Result<u64, String> {
    let mut progress = (0, Instant::now());
    loop {
        let (arrived, last) = setup.push.wait(expected, Duration::from_secs(5));
        if arrived >= expected {
            return Ok(last);
        }
        if arrived > progress.0 {
            progress = (arrived, Instant::now());
        } else if progress.1.elapsed() > STALL {
            return Err(format!(
                "{arrived} of {expected} pushes arrived, then none for {STALL:?}; {}",
                sut.log_tail()
            ));
        }
    }
}

/// Runs `count` sends to `group` against `sut` and measures it.
pub fn run(
    setup: &mut Setup,
    sut: &Running,
    group: &Group,
    count: usize,
    pace: Pace,
) -> Result<Figures, String> {
    let run = setup.next_run();
    let messages = sends(group, count, run);
    let expected = count * group.per_user();
    setup.push.reset();
    procfs::reset_peak_rss(sut.pid);
    let before = cpu(setup, sut)?;
    let started = now_ns();
    let published = setup.rt.block_on(setup.generator.publish(&messages, pace));
    let last = wait_for_pushes(setup, sut, expected)?;
    settle(setup, sut);
    let after = cpu(setup, sut)?;
    let peak_rss_mb = procfs::peak_rss(sut.pid).map(|b| b as f64 / (1 << 20) as f64);
    let arrivals = setup.push.arrivals();

    // Every push once: one per subscription and send, none twice.
    let prefix = format!("r{run}s");
    let mut seen = HashSet::with_capacity(arrivals.len());
    let mut latencies = Vec::with_capacity(arrivals.len());
    for a in &arrivals {
        let send: Option<usize> = a.topic.strip_prefix(&prefix).and_then(|s| s.parse().ok());
        let Some(send) = send.filter(|s| *s < count) else {
            return Err(format!(
                "a push of another run arrived (topic {:?})",
                a.topic
            ));
        };
        if !seen.insert((a.subscription, send)) {
            return Err(format!(
                "subscription {} received send {send} twice",
                a.subscription
            ));
        }
        latencies.push(a.at_ns.saturating_sub(published[send]) as f64 / 1e6);
    }
    if seen.len() != expected {
        return Err(format!(
            "{} pushes arrived, {expected} expected",
            seen.len()
        ));
    }
    let seconds = (last.saturating_sub(started)) as f64 / 1e9;
    let per_push = |cpu: f64| cpu * 1e3 / expected as f64;
    Ok(Figures {
        pushes_per_second: expected as f64 / seconds,
        cpu_ms_per_push: per_push(after.0 - before.0),
        others_ms_per_push: per_push(after.1 - before.1),
        peak_rss_mb,
        latency: matches!(pace, Pace::Steady { .. }).then(|| percentiles(latencies)),
    })
}

fn percentiles(mut latencies: Vec<f64>) -> Latency {
    latencies.sort_by(f64::total_cmp);
    // Nearest rank: the smallest value at or above the fraction.
    let at = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).max(1);
        latencies[rank.min(latencies.len()) - 1]
    };
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: *latencies.last().unwrap_or(&0.0),
    }
}

/// Median, min and max of the runs' values.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut values: Vec<f64> = values.into_iter().collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
        })
    }
}

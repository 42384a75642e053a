//! The report: the summary table (the baselines beside axion-push, with
//! ratios), memory and speed by fan-out size, every series in detail, the
//! database servers against SQLite, and the performance targets.

use std::fmt::Write as _;

use crate::measure::{Figures, Spread};
use crate::systems::System;
use crate::{Outcome, Sizes};

pub struct Context<'a> {
    pub sizes: &'a Sizes,
    pub smoke: bool,
    pub broker_inflight: u16,
    pub broker_settings: &'a str,
    pub baselines: Option<&'a str>,
    pub load_at_start: &'a str,
    pub load_at_end: &'a str,
    pub outcomes: &'a [Outcome],
}

/// A figure of one run, when the run has it.
type Measure = fn(&Figures) -> Option<f64>;

const PUSHES: Measure = |f| Some(f.pushes_per_second);
const CPU: Measure = |f| Some(f.cpu_ms_per_push);
const OTHERS: Measure = |f| Some(f.others_ms_per_push);
const RSS: Measure = |f| f.peak_rss_mb;
const P50: Measure = |f| f.latency.map(|l| l.p50);
const P99: Measure = |f| f.latency.map(|l| l.p99);
const P999: Measure = |f| f.latency.map(|l| l.p999);
const MAX: Measure = |f| f.latency.map(|l| l.max);

/// Whether more of a measure is better (pushes/s) or worse (CPU, latency).
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

/// The series of `workload` by `system` on `database`, if it ran.
fn series<'a>(
    outcomes: &'a [Outcome],
    workload: &str,
    system: System,
    database: Option<&str>,
) -> Option<&'a Outcome> {
    outcomes
        .iter()
        .find(|o| o.workload == workload && o.system == system && o.database.as_deref() == database)
}

/// A measure over a series' runs: not run (`None`), no run measured
/// (`Err`), or the spread of the runs that were.
fn spread(
    outcomes: &[Outcome],
    workload: &str,
    system: System,
    database: Option<&str>,
    measure: Measure,
) -> Option<Result<Spread, ()>> {
    series(outcomes, workload, system, database)
        .map(|o| Spread::of(o.runs.iter().filter_map(measure)).ok_or(()))
}

/// `12,345`.
fn count(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `12,345` for large numbers, a few significant digits for small ones.
fn number(value: f64) -> String {
    if value >= 100.0 {
        count(value.round() as usize)
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn cell(spread: Option<Result<Spread, ()>>) -> String {
    match spread {
        None => "—".into(),
        Some(Err(())) => "failed".into(),
        Some(Ok(s)) if s.min == s.max => number(s.median),
        Some(Ok(s)) => format!("{} ({}–{})", number(s.median), number(s.min), number(s.max)),
    }
}

/// How many times axion-push is better than `baseline`, medians.
fn ratio(
    ours: Option<Result<Spread, ()>>,
    baseline: Option<Result<Spread, ()>>,
    better: Better,
) -> String {
    match (ours, baseline) {
        (Some(Ok(ours)), Some(Ok(base))) if ours.median > 0.0 && base.median > 0.0 => {
            let r = match better {
                Better::Higher => ours.median / base.median,
                Better::Lower => base.median / ours.median,
            };
            format!("{r:.1}×")
        }
        _ => "—".into(),
    }
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        "cargo bench --bench load".into()
    } else {
        format!("cargo bench --bench load -- {}", args.join(" "))
    }
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn render(c: &Context) -> String {
    let s = c.sizes;
    let o = c.outcomes;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "## axion-push load benchmark{}\n",
        if c.smoke {
            " (smoke run: its figures mean nothing)"
        } else {
            ""
        }
    );
    let _ = writeln!(w, "`{}`, {}", command_line(), today());
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "- machine: {}; load average {} at the start, {} at the end",
        crate::procfs::machine(),
        c.load_at_start,
        c.load_at_end
    );
    let _ = writeln!(
        w,
        "- broker: {}, in its own process: {}",
        crate::broker::version(),
        c.broker_settings.trim().replace('\n', ", ")
    );
    let _ = writeln!(
        w,
        "- axion-push: `axion-push serve` as built by cargo, SQLite, the shipped defaults \
         (delivery.concurrency 256, log level info, to a file)"
    );
    if let Some(versions) = c.baselines {
        let _ = writeln!(w, "- baselines: {versions}");
    }
    let _ = writeln!(
        w,
        "- push service: HTTPS on loopback in its own process (HTTP/2; HTTP/1.1 for the \
         baselines, which speak nothing else), 201 at once, nothing decrypted"
    );
    let _ = writeln!(
        w,
        "- each figure: the median of the runs (min–max); CPU from /proc/PID/stat, \
         memory from VmHWM; \"others\" is the broker, the push service and the load generator"
    );
    let _ = writeln!(
        w,
        "- \"vs\": how many times better axion-push's median is (more pushes/s; less CPU, \
         memory or latency); below 1, worse"
    );
    if c.broker_inflight != crate::broker::MOSQUITTO_DEFAULT_INFLIGHT {
        let _ = writeln!(
            w,
            "- the broker lets a client have {} unacknowledged commands (Mosquitto's default: {})",
            c.broker_inflight,
            crate::broker::MOSQUITTO_DEFAULT_INFLIGHT
        );
    }

    // The summary.
    use System::{AxionPush, Node, Python};
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "| workload | {} | {} | {} | vs Python | vs node |",
        Python.name(),
        Node.name(),
        AxionPush.name()
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    let mut row = |label: String, workload: &str, measure: Measure, better: Better| {
        let get = |system| spread(o, workload, system, None, measure);
        // A series that failed part way shows the runs before, marked.
        let shown = |system| {
            let failed = series(o, workload, system, None).is_some_and(|s| s.failure.is_some());
            match get(system) {
                Some(Ok(_)) if failed => format!("{} (failed after)", cell(get(system))),
                _ => cell(get(system)),
            }
        };
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} | {} | {} |",
            shown(Python),
            shown(Node),
            shown(AxionPush),
            ratio(get(AxionPush), get(Python), better),
            ratio(get(AxionPush), get(Node), better),
        );
    };
    let many = format!("{} sends → {} users", count(s.many_sends), count(s.users));
    let each = format!("{} sends → {} users", count(s.users), count(s.users));
    row(
        format!("one send → {} subscriptions, pushes/s", count(s.fan_out)),
        "fan-out",
        PUSHES,
        Better::Higher,
    );
    row(
        format!("{many} × 1 subscription, pushes/s"),
        "many-sends",
        PUSHES,
        Better::Higher,
    );
    row(
        format!("{each}, pushes/s"),
        "one-each",
        PUSHES,
        Better::Higher,
    );
    row(
        "CPU per push of the daemon (or baseline), ms: fan-out".into(),
        "fan-out",
        CPU,
        Better::Lower,
    );
    row(format!("… {many}"), "many-sends", CPU, Better::Lower);
    row(format!("… {each}"), "one-each", CPU, Better::Lower);
    row(
        format!("CPU of broker + push service + load generator per send, ms: {many}"),
        "many-sends",
        OTHERS,
        Better::Lower,
    );
    row(format!("… {each}"), "one-each", OTHERS, Better::Lower);
    row(
        format!("peak RSS, MB: {many}"),
        "many-sends",
        RSS,
        Better::Lower,
    );
    for (key, rate) in [("steady-slow", s.slow_rate), ("steady-fast", s.fast_rate)] {
        let at = format!(
            "{} sends/s for {} s",
            count(rate as usize),
            s.steady_seconds
        );
        row(
            format!("publish → push p99, ms, at {at}"),
            key,
            P99,
            Better::Lower,
        );
        row(
            format!("publish → push p99.9, ms, at {at}"),
            key,
            P999,
            Better::Lower,
        );
    }

    // By fan-out size.
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "| one send to | pushes/s | peak RSS, MB | CPU per push, ms |"
    );
    let _ = writeln!(w, "|---|---|---|---|");
    for (key, size) in [
        ("scale-small", s.scale_small),
        ("fan-out", s.fan_out),
        ("scale-large", s.scale_large),
    ] {
        if series(o, key, AxionPush, None).is_none() {
            continue;
        }
        let get = |measure| cell(spread(o, key, AxionPush, None, measure));
        let _ = writeln!(
            w,
            "| {} subscriptions | {} | {} | {} |",
            count(size),
            get(PUSHES),
            get(RSS),
            get(CPU)
        );
    }

    // Every series.
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "| workload | system | runs | pushes/s | CPU per push, ms | others per push, ms | peak RSS, MB | p50, ms | p99, ms | p99.9, ms | max, ms |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|");
    for outcome in o {
        let system = match &outcome.database {
            Some(database) => format!("{} on {database}", outcome.system.name()),
            None => outcome.system.name().to_owned(),
        };
        let runs = &outcome.runs;
        let get = |measure: Measure| match Spread::of(runs.iter().filter_map(measure)) {
            Some(spread) => cell(Some(Ok(spread))),
            None => "—".into(),
        };
        let count = match outcome.failure {
            Some(_) => format!("{} of {}, failed", runs.len(), outcome.planned),
            None => runs.len().to_string(),
        };
        let _ = writeln!(
            w,
            "| {} | {system} | {count} | {} | {} | {} | {} | {} | {} | {} | {} |",
            outcome.workload,
            get(PUSHES),
            get(CPU),
            get(OTHERS),
            get(RSS),
            get(P50),
            get(P99),
            get(P999),
            get(MAX),
        );
    }
    let failures: Vec<&Outcome> = o.iter().filter(|x| x.failure.is_some()).collect();
    if !failures.is_empty() {
        let _ = writeln!(w);
        let _ = writeln!(w, "Failed (figures above are of the runs before):");
        for f in failures {
            let why = f.failure.as_deref().unwrap_or_default();
            let _ = writeln!(
                w,
                "- {} · {}: {}",
                f.workload,
                f.system.name(),
                why.lines().next().unwrap_or_default()
            );
        }
    }

    // The database servers against SQLite.
    let servers: Vec<&str> = o.iter().filter_map(|x| x.database.as_deref()).collect();
    if !servers.is_empty() {
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "| {many} × 1 subscription on | pushes/s | CPU per push, ms | pushes/s vs SQLite |"
        );
        let _ = writeln!(w, "|---|---|---|---|");
        let sqlite = spread(o, "many-sends", AxionPush, None, PUSHES);
        for database in std::iter::once(None).chain(servers.iter().map(|s| Some(*s))) {
            let pushes = spread(o, "many-sends", AxionPush, database, PUSHES);
            let vs = match (&pushes, &sqlite) {
                (Some(Ok(p)), Some(Ok(q))) => format!("{:.2}", p.median / q.median),
                _ => "—".into(),
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {vs} |",
                database.unwrap_or("SQLite"),
                cell(pushes),
                cell(spread(o, "many-sends", AxionPush, database, CPU)),
            );
        }
    }

    // The targets.
    let _ = writeln!(w);
    let _ = writeln!(w, "Targets (medians):");
    let median = |workload, system, database, measure| match spread(
        o, workload, system, database, measure,
    ) {
        Some(Ok(s)) => Some(s.median),
        _ => None,
    };
    let mut target = |what: String, value: Option<f64>, holds: &dyn Fn(f64) -> bool| {
        let verdict = match value {
            None => "not measured".to_owned(),
            Some(v) if holds(v) => format!("met ({})", number(v)),
            Some(v) => format!("NOT met ({})", number(v)),
        };
        let _ = writeln!(w, "- {what}: {verdict}");
    };
    target(
        format!("daemon CPU per single-push send ≤ 0.2 ms ({many})"),
        median("many-sends", AxionPush, None, CPU),
        &|v| v <= 0.2,
    );
    target(
        format!("{many} ≥ 3,000 pushes/s"),
        median("many-sends", AxionPush, None, PUSHES),
        &|v| v >= 3000.0,
    );
    let against_node = median("many-sends", AxionPush, None, PUSHES)
        .zip(median("many-sends", Node, None, PUSHES))
        .map(|(a, n)| a / n);
    target(
        format!("{many} ≥ 2.5× node web-push, ×"),
        against_node,
        &|v| v >= 2.5,
    );
    let slow = format!("{} sends/s", count(s.slow_rate as usize));
    target(
        format!("p99 ≤ 20 ms at {slow}"),
        median("steady-slow", AxionPush, None, P99),
        &|v| v <= 20.0,
    );
    target(
        format!("p99.9 ≤ 100 ms at {slow}"),
        median("steady-slow", AxionPush, None, P999),
        &|v| v <= 100.0,
    );
    target(
        format!("p99 ≤ 100 ms at {} sends/s", count(s.fast_rate as usize)),
        median("steady-fast", AxionPush, None, P99),
        &|v| v <= 100.0,
    );
    target(
        format!(
            "fan-out to {} subscriptions ≥ 11,000 pushes/s",
            count(s.fan_out)
        ),
        median("fan-out", AxionPush, None, PUSHES),
        &|v| v >= 11_000.0,
    );
    for server in servers {
        let vs = median("many-sends", AxionPush, Some(server), PUSHES)
            .zip(median("many-sends", AxionPush, None, PUSHES))
            .map(|(a, b)| a / b);
        target(
            format!("{server} within a factor of two of SQLite, pushes/s ratio"),
            vs,
            &|v| v >= 0.5,
        );
    }
    out
}

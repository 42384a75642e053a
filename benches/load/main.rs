//! The load benchmark: axion-push against the design it replaces, each a
//! process of its own, on one external broker (Mosquitto), one HTTPS/HTTP-2
//! push service in another process and the same subscriptions.
//!
//! Workloads ([`workloads`]):
//! - fan-out: one send to a user with 10,000 subscriptions;
//! - many sends: 20,000 sends to 2,000 users with one subscription each,
//!   published in a burst;
//! - one each: 2,000 sends, one to each of those users;
//! - steady: 500 sends a second for 20 s, then 2,000 a second, publish →
//!   push latency (p50, p99, p99.9, max);
//! - scale: one send to 1,000 and 100,000 subscriptions (with the fan-out's
//!   10,000: pushes/s and peak memory by size).
//!
//! Each run measures pushes/s (first publish to last push arrival), the
//! system's CPU per push and its peak RSS (`/proc/PID/stat`, `VmHWM`), and
//! the CPU of everything else per push: broker, push service and load
//! generator (this process). Every figure is the median of several runs with
//! their min–max; the axion-push daemon and each baseline process run once
//! per workload, warmed up by an unmeasured run. The baselines
//! (`benches/baselines/`, installed into `target/load-baselines/` by the
//! benchmark itself): the Python module's design, paho-mqtt + pywebpush one
//! push at a time, and node's `web-push` with 64 requests in flight.
//!
//! Run: `cargo bench --bench load` (about 25 minutes on 2 cores). Options:
//! `--smoke` (a run of seconds that proves everything still works; `.ci/run`;
//! without the baselines unless `--baselines` is given too),
//! `--skip-100k`, `--no-baselines`, `--runs N`, `--only KEY,…` (workload
//! keys: fan-out, many-sends, one-each, steady-slow, steady-fast,
//! scale-small, scale-large), `--broker-inflight N` (Mosquitto's
//! `max_inflight_messages`, default 100), `--backends
//! sqlite,mysql://root@127.0.0.1:3306,postgres://postgres@127.0.0.1:5432`
//! (the many-sends workload again on each database server). The report is
//! printed and written to `target/load-report.md`.

#[path = "../../tests/harness/mod.rs"]
mod harness;

mod baselines;
mod broker;
mod measure;
mod mqtt;
mod population;
mod procfs;
mod push_service;
mod report;
mod systems;

use std::cell::Cell;
use std::path::Path;

use measure::Figures;
use mqtt::{LoadGenerator, Pace};
use population::{Endpoints, Group};
use systems::System;

/// How much a run measures.
struct Options {
    smoke: bool,
    runs: Option<usize>,
    skip_large: bool,
    baselines: bool,
    only: Option<Vec<String>>,
    broker_inflight: u16,
    /// Database servers for the many-sends workload, besides SQLite.
    servers: Vec<String>,
}

impl Options {
    fn parse() -> Options {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let value = |name: &str| {
            args.iter().position(|a| a == name).map(|i| {
                args.get(i + 1)
                    .cloned()
                    .unwrap_or_else(|| panic!("{name} needs a value"))
            })
        };
        let number = |name: &str| {
            value(name).map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} {v}: not a number"))
            })
        };
        Options {
            smoke: args.iter().any(|a| a == "--smoke"),
            runs: number("--runs").map(|n: u64| n.max(1) as usize),
            skip_large: args.iter().any(|a| a == "--skip-100k"),
            // Off in a smoke run (installing them takes a minute), unless
            // asked for.
            baselines: if args.iter().any(|a| a == "--no-baselines") {
                false
            } else {
                args.iter().any(|a| a == "--baselines") || !args.iter().any(|a| a == "--smoke")
            },
            only: value("--only").map(|v| v.split(',').map(str::to_owned).collect()),
            broker_inflight: number("--broker-inflight")
                .map_or(broker::DEFAULT_INFLIGHT, |n: u64| n as u16),
            servers: value("--backends")
                .map(|v| {
                    v.split(',')
                        .filter(|b| *b != "sqlite")
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// The sizes of a run.
pub struct Sizes {
    pub fan_out: usize,
    pub users: usize,
    pub many_sends: usize,
    pub steady_seconds: u32,
    pub slow_rate: u32,
    pub fast_rate: u32,
    pub scale_small: usize,
    pub scale_large: usize,
}

impl Sizes {
    fn of(smoke: bool) -> Sizes {
        if smoke {
            Sizes {
                fan_out: 20,
                users: 10,
                many_sends: 50,
                steady_seconds: 1,
                slow_rate: 50,
                fast_rate: 200,
                scale_small: 5,
                scale_large: 50,
            }
        } else {
            Sizes {
                fan_out: 10_000,
                users: 2_000,
                many_sends: 20_000,
                steady_seconds: 20,
                slow_rate: 500,
                fast_rate: 2_000,
                scale_small: 1_000,
                scale_large: 100_000,
            }
        }
    }
}

/// Which subscriptions a workload sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// One user with `fan_out` subscriptions.
    FanOut,
    /// `users` users with one subscription each.
    Singles,
    ScaleSmall,
    ScaleLarge,
}

pub struct Workload {
    pub key: &'static str,
    pub audience: Audience,
    pub sends: usize,
    pub pace: Pace,
    /// Sends of the unmeasured run that starts each system's series.
    pub warm_up: usize,
    pub runs: usize,
    pub baseline_runs: usize,
    pub systems: Vec<System>,
}

/// A number of runs: `n` unless the options say otherwise.
fn runs(options: &Options, n: usize) -> usize {
    match (options.smoke, options.runs) {
        (_, Some(runs)) => runs,
        (true, None) => 1,
        (false, None) => n,
    }
}

/// The many-sends workload, measured by `systems`.
fn many_sends(sizes: &Sizes, options: &Options, systems: Vec<System>) -> Workload {
    Workload {
        key: "many-sends",
        audience: Audience::Singles,
        sends: sizes.many_sends,
        pace: Pace::Burst,
        warm_up: sizes.users.min(200),
        runs: runs(options, 3),
        baseline_runs: runs(options, 3),
        systems,
    }
}

fn workloads(sizes: &Sizes, options: &Options) -> Vec<Workload> {
    use System::{AxionPush, Node, Python};
    let warm = sizes.users.min(200);
    let steady = |key, rate: u32, systems| Workload {
        key,
        audience: Audience::Singles,
        sends: (rate * sizes.steady_seconds) as usize,
        pace: Pace::Steady { per_second: rate },
        warm_up: warm,
        runs: runs(options, 3),
        baseline_runs: runs(options, 3),
        systems,
    };
    let fan_out = |key, audience, systems| Workload {
        key,
        audience,
        sends: 1,
        pace: Pace::Burst,
        warm_up: 1,
        runs: runs(options, 5),
        baseline_runs: runs(options, 3),
        systems,
    };
    let with = |baselines: &[System]| {
        let mut systems = vec![AxionPush];
        if options.baselines {
            systems.extend(baselines);
        }
        systems
    };
    // A smoke run proves the baselines on one small workload only.
    let node: &[System] = if options.smoke { &[] } else { &[Node] };
    let mut all = vec![
        fan_out("fan-out", Audience::FanOut, with(node)),
        many_sends(sizes, options, with(node)),
        Workload {
            key: "one-each",
            audience: Audience::Singles,
            sends: sizes.users,
            pace: Pace::Burst,
            warm_up: warm,
            runs: runs(options, 5),
            baseline_runs: runs(options, 3),
            systems: with(&[Node, Python]),
        },
        steady("steady-slow", sizes.slow_rate, with(node)),
        steady("steady-fast", sizes.fast_rate, with(&[])),
        fan_out("scale-small", Audience::ScaleSmall, with(&[])),
    ];
    if !options.skip_large {
        all.push(fan_out("scale-large", Audience::ScaleLarge, with(&[])));
    }
    if let Some(only) = &options.only {
        all.retain(|w| only.iter().any(|k| k == w.key));
    }
    all
}

/// What every run shares.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub broker: broker::Broker,
    pub push: push_service::PushService,
    pub generator: LoadGenerator,
    pub rt: tokio::runtime::Runtime,
    pub vapid: systems::Vapid,
    pub baselines: Option<baselines::Baselines>,
    starts: Cell<usize>,
    runs: Cell<usize>,
}

impl Setup {
    /// A number for each system started (file names, client ids).
    pub fn next_start(&self) -> usize {
        self.starts.replace(self.starts.get() + 1)
    }

    /// A number for each run (send ids and topics).
    pub fn next_run(&self) -> usize {
        self.runs.replace(self.runs.get() + 1)
    }
}

/// Every system's series of runs on one workload, on one database.
pub struct Outcome {
    pub workload: &'static str,
    pub system: System,
    /// `None`: SQLite.
    pub database: Option<String>,
    /// The runs measured: all those planned, unless it failed.
    pub runs: Vec<Figures>,
    pub planned: usize,
    pub failure: Option<String>,
}

/// Starts `system`, warms it up, measures the workload's runs and stops
/// it; a failure keeps the runs measured before it.
fn series(
    setup: &mut Setup,
    workload: &Workload,
    system: System,
    group: &Group,
    database: Option<&str>,
) -> Outcome {
    eprintln!(
        "{} · {}{}",
        workload.key,
        system.name(),
        database.map_or(String::new(), |d| format!(" · {d}"))
    );
    let planned = if system.is_baseline() {
        workload.baseline_runs
    } else {
        workload.runs
    };
    let mut outcome = Outcome {
        workload: workload.key,
        system,
        database: database.map(str::to_owned),
        runs: Vec::new(),
        planned,
        failure: None,
    };
    let sut = match systems::start(setup, system, group, database) {
        Ok(sut) => sut,
        Err(e) => {
            eprintln!("  failed: {e}");
            outcome.failure = Some(e);
            return outcome;
        }
    };
    let measured = (|| {
        measure::run(setup, &sut, group, workload.warm_up, Pace::Burst)?;
        for n in 1..=planned {
            let figures = measure::run(setup, &sut, group, workload.sends, workload.pace)?;
            eprintln!(
                "  run {n}/{planned}: {:.0} pushes/s, {:.3} ms CPU per push{}",
                figures.pushes_per_second,
                figures.cpu_ms_per_push,
                figures.latency.map_or(String::new(), |l| format!(
                    ", p99 {:.1} ms, p99.9 {:.1} ms",
                    l.p99, l.p999
                )),
            );
            outcome.runs.push(figures);
        }
        Ok(())
    })();
    if let Err(e) = measured {
        eprintln!("  failed: {e}");
        outcome.failure = Some(e);
    }
    systems::stop(setup, sut);
    outcome
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(push_service::FLAG) {
        push_service::serve(Path::new(
            args.get(2).expect("the push service's directory"),
        ));
    }
    let options = Options::parse();
    let sizes = Sizes::of(options.smoke);
    let workloads = workloads(&sizes, &options);
    let started_load = procfs::load_average();

    let wants_baselines = workloads
        .iter()
        .any(|w| w.systems.iter().any(|s| s.is_baseline()));
    let baselines = if wants_baselines {
        Some(baselines::install().unwrap_or_else(|e| panic!("the baselines do not install: {e}")))
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = broker::Broker::start(options.broker_inflight);
    let push = push_service::PushService::start(dir.path());
    let generator = rt.block_on(LoadGenerator::connect(broker.addr));
    let mut setup = Setup {
        broker,
        push,
        generator,
        rt,
        vapid: systems::Vapid::generate(),
        baselines,
        starts: Cell::new(0),
        runs: Cell::new(0),
        dir,
    };

    let mut endpoints = Endpoints::at(format!("https://{}", setup.push.addr));
    let needs = |audience| workloads.iter().any(|w| w.audience == audience);
    let d = setup.dir.path().to_owned();
    let mut group = |needed: bool, name, prefix: &str, users, each| {
        needed.then(|| Group::new(name, prefix, users, each, &mut endpoints, &d))
    };
    let fan_out = group(needs(Audience::FanOut), "fan-out", "fan", 1, sizes.fan_out);
    let singles = group(
        needs(Audience::Singles) || !options.servers.is_empty(),
        "singles",
        "u",
        sizes.users,
        1,
    );
    let small = group(
        needs(Audience::ScaleSmall),
        "scale-small",
        "small",
        1,
        sizes.scale_small,
    );
    let large = group(
        needs(Audience::ScaleLarge),
        "scale-large",
        "large",
        1,
        sizes.scale_large,
    );
    let group_of = |audience| {
        match audience {
            Audience::FanOut => &fan_out,
            Audience::Singles => &singles,
            Audience::ScaleSmall => &small,
            Audience::ScaleLarge => &large,
        }
        .as_ref()
        .expect("the audience's subscriptions were made")
    };

    let mut outcomes = Vec::new();
    for workload in &workloads {
        for &system in &workload.systems {
            let group = group_of(workload.audience);
            outcomes.push(series(&mut setup, workload, system, group, None));
        }
    }
    if !options.servers.is_empty() {
        let many = many_sends(&sizes, &options, vec![System::AxionPush]);
        let group = singles.as_ref().expect("the singles were made");
        for server in &options.servers {
            outcomes.push(series(
                &mut setup,
                &many,
                System::AxionPush,
                group,
                Some(server),
            ));
        }
    }

    let text = report::render(&report::Context {
        sizes: &sizes,
        smoke: options.smoke,
        broker_inflight: options.broker_inflight,
        broker_settings: &setup.broker.settings,
        baselines: setup.baselines.as_ref().map(|b| b.versions.as_str()),
        load_at_start: &started_load,
        load_at_end: &procfs::load_average(),
        outcomes: &outcomes,
    });
    println!("{text}");
    let report_file = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("load-report.md");
    if let Err(e) = std::fs::write(&report_file, &text) {
        eprintln!("could not write {}: {e}", report_file.display());
    }
    if outcomes.iter().any(|o| o.failure.is_some()) {
        eprintln!("some runs failed (see above)");
        std::process::exit(1);
    }
}

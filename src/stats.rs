//! Live counters since start: what `axion-push serve` reports to systemd in
//! its `STATUS=` line and, when `metrics.listen` is set, on its Prometheus
//! endpoint (see `metrics`). Cheap atomics, bumped where things happen; the
//! only lock is taken to add a push service host seen for the first time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::topics::Verb;

#[derive(Debug, Default)]
pub struct Stats {
    /// Commands applied (a send: recorded in the queue).
    pub commands: AtomicU64,
    /// Commands refused with an error.
    pub rejected: AtomicU64,
    pub delivered: AtomicU64,
    /// Refused for good by a push service, or unusable (policy, keys).
    pub failed: AtomicU64,
    pub deactivated: AtomicU64,
    /// Subscriptions deactivated as stale (see `subscriptions.expire_after`).
    pub stale: AtomicU64,
    pub expired: AtomicU64,
    /// Attempts put back for a retry.
    pub retried: AtomicU64,
    /// QoS 0 commands dropped unread because the intake was full.
    pub dropped: AtomicU64,
    /// Commands answered (applied or refused), by verb.
    pub by_verb: VerbCounters,
    /// Commands refused, by verb.
    pub rejected_by_verb: VerbCounters,
    /// Push requests by push service host and answer class.
    pub pushes: PushCounters,
    /// From a push request's start to its answer (or its failure).
    pub latency: Histogram,
    /// What the embedded broker's gateway refused, and its open
    /// connections.
    pub gateway: GatewayCounters,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One line for a human: `12 commands (1 rejected), 30 pushes delivered, …`.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} commands ({} rejected); pushes: {} delivered, {} failed, {} deactivated, {} expired, {} retries",
            get(&self.commands),
            get(&self.rejected),
            get(&self.delivered),
            get(&self.failed),
            get(&self.deactivated),
            get(&self.expired),
            get(&self.retried),
        )
    }
}

/// The verb label of a command: one of [`Verb::ALL`], or `other` for a verb
/// level the daemon does not know (kept apart so a stray topic cannot grow
/// the label set).
pub const VERB_LABELS: [&str; Verb::ALL.len() + 1] = {
    let mut labels = ["other"; Verb::ALL.len() + 1];
    let mut i = 0;
    while i < Verb::ALL.len() {
        labels[i] = Verb::ALL[i].as_str();
        i += 1;
    }
    labels
};

/// One counter per [`VERB_LABELS`] entry.
#[derive(Debug, Default)]
pub struct VerbCounters([AtomicU64; VERB_LABELS.len()]);

impl VerbCounters {
    /// Counts one command whose topic's verb level is `verb`.
    pub fn add(&self, verb: &str) {
        let index = Verb::ALL
            .iter()
            .position(|v| v.as_str() == verb)
            .unwrap_or(VERB_LABELS.len() - 1);
        self.0[index].fetch_add(1, Ordering::Relaxed);
    }

    /// `(label, count)` for every verb.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        VERB_LABELS
            .iter()
            .zip(&self.0)
            .map(|(label, c)| (*label, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// How a push service answered, as a metrics label.
pub const PUSH_CLASSES: [&str; 10] = [
    "2xx",
    "gone",
    "429",
    "5xx",
    "413",
    "4xx",
    "timeout",
    "connection",
    "policy",
    "other",
];

/// Push service hosts counted apart; any further host counts as `other`,
/// so subscriptions pointing at many hosts cannot grow the label set
/// without bound.
pub const MAX_HOSTS: usize = 64;

type ClassCounters = [AtomicU64; PUSH_CLASSES.len()];

/// Push requests by push-service host (never the endpoint: it is a
/// capability) and answer class.
#[derive(Debug, Default)]
pub struct PushCounters {
    hosts: RwLock<HashMap<String, Arc<ClassCounters>>>,
}

impl PushCounters {
    /// Counts one request to `host` answered as `class` (one of
    /// [`PUSH_CLASSES`]; anything else counts as `other`).
    pub fn add(&self, host: &str, class: &str) {
        let index = PUSH_CLASSES
            .iter()
            .position(|c| *c == class)
            .unwrap_or(PUSH_CLASSES.len() - 1);
        let found = self
            .hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned();
        let counters = match found {
            Some(counters) => counters,
            None => {
                let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
                let key = if hosts.len() >= MAX_HOSTS && !hosts.contains_key(host) {
                    "other"
                } else {
                    host
                };
                hosts.entry(key.to_owned()).or_default().clone()
            }
        };
        counters[index].fetch_add(1, Ordering::Relaxed);
    }

    /// `(host, class, count)` for every non-zero pair, sorted.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (host, counters) in hosts.iter() {
            for (class, c) in PUSH_CLASSES.iter().zip(counters.iter()) {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((host.clone(), *class, n));
                }
            }
        }
        out.sort();
        out
    }
}

/// Why the embedded broker's gateway refused a connection or a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A login that is not an account, not a valid token, or of the wrong
    /// kind for the listener.
    Login,
    /// A WebSocket handshake from a web origin not in `websocket_origins`.
    Origin,
    /// More WebSocket connections from one address than allowed.
    AddressCap,
    /// No login within `connect_timeout`.
    Timeout,
    /// Not MQTT 3.1.1, or a broken packet.
    Protocol,
    /// A browser's CONNECT with a Last Will.
    Will,
    /// A browser publishing outside its own subscribe, unsubscribe and list.
    Publish,
    /// A browser's retained publish.
    Retain,
    /// A browser subscribing beyond its own topics.
    Subscribe,
    /// A browser asking `list` for whole endpoints.
    Endpoints,
    /// A browser publishing faster than its rate limit.
    Rate,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Refusal::Login,
        Refusal::Origin,
        Refusal::AddressCap,
        Refusal::Timeout,
        Refusal::Protocol,
        Refusal::Will,
        Refusal::Publish,
        Refusal::Retain,
        Refusal::Subscribe,
        Refusal::Endpoints,
        Refusal::Rate,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Login => "login",
            Refusal::Origin => "origin",
            Refusal::AddressCap => "address_cap",
            Refusal::Timeout => "timeout",
            Refusal::Protocol => "protocol",
            Refusal::Will => "will",
            Refusal::Publish => "publish",
            Refusal::Retain => "retain",
            Refusal::Subscribe => "subscribe",
            Refusal::Endpoints => "endpoints",
            Refusal::Rate => "rate",
        }
    }
}

/// The embedded broker's listeners, as a metrics label.
pub const LISTENER_LABELS: [&str; 2] = ["mqtt", "websocket"];

/// The gateway's counters: refusals by reason, open connections by
/// listener (see [`LISTENER_LABELS`]).
#[derive(Debug, Default)]
pub struct GatewayCounters {
    refused: [AtomicU64; Refusal::ALL.len()],
    open: [AtomicU64; LISTENER_LABELS.len()],
}

impl GatewayCounters {
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `listener` indexes [`LISTENER_LABELS`].
    pub fn opened(&self, listener: usize) {
        self.open[listener].fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self, listener: usize) {
        self.open[listener].fetch_sub(1, Ordering::Relaxed);
    }

    /// `(reason, count)` for every reason.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str(),
                    self.refused[*r as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// `(listener, open connections)`.
    pub fn connections(&self) -> Vec<(&'static str, u64)> {
        LISTENER_LABELS
            .iter()
            .zip(&self.open)
            .map(|(l, c)| (*l, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram over fixed buckets (not cumulative here: the
/// exposition adds them up).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, c)| {
                cumulative += c.load(Ordering::Relaxed);
                (*bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            // Read after the buckets: `+Inf` is never below the last bucket.
            count: self.count.load(Ordering::Relaxed).max(cumulative),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_verbs_count_as_other() {
        let c = VerbCounters::default();
        c.add("send");
        c.add("frobnicate");
        let snap = c.snapshot();
        assert!(snap.contains(&("send", 1)));
        assert!(snap.contains(&("other", 1)));
    }

    #[test]
    fn every_verb_counts_under_its_own_label() {
        let c = VerbCounters::default();
        for verb in Verb::ALL {
            c.add(verb.as_str());
        }
        for verb in Verb::ALL {
            assert!(c.snapshot().contains(&(verb.as_str(), 1)), "{verb:?}");
        }
    }

    #[test]
    fn hosts_beyond_the_cap_count_as_other() {
        let p = PushCounters::default();
        for i in 0..MAX_HOSTS + 3 {
            p.add(&format!("h{i}.example"), "2xx");
        }
        let snap = p.snapshot();
        assert_eq!(snap.len(), MAX_HOSTS + 1);
        assert!(snap.contains(&("other".into(), "2xx", 3)));
    }

    #[test]
    fn the_histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(70));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], (0.005, 1));
        assert_eq!(s.buckets[4], (0.1, 2));
        assert_eq!(s.buckets.last().unwrap().1, 2);
        assert_eq!(s.count, 3);
    }
}

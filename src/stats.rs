//! Live counters since start: what `axion-push serve` reports to systemd in
//! its `STATUS=` line. Cheap atomics, bumped where things happen.

use std::sync::atomic::{AtomicU64, Ordering};

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
    pub expired: AtomicU64,
    /// Attempts put back for a retry.
    pub retried: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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

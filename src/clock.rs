//! Milliseconds: the unit of every time the daemon stores, compares and
//! reports (the queue's columns, report timestamps, breaker pauses).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms)
}

/// `d` in whole milliseconds, saturating (a `Duration` can hold more).
pub fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

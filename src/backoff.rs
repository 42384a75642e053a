//! Exponential backoff with jitter, shared by MQTT reconnects, delivery
//! retries and paused push services.
//!
//! The ±50 % jitter keeps a fleet of daemons (or a queue of deliveries that
//! failed together) from coming back in lockstep.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// Trying a statement again while the database is unavailable (a restart,
/// a lost connection, a lock): soon at first, then every few seconds, the
/// same for every part of the daemon that waits on it.
pub const DATABASE_RETRY: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

impl Backoff {
    /// The delay before attempt `attempt + 1`, counting from 0: `initial`
    /// doubled `attempt` times, capped at `max`, then jittered by ±50 %.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(24)).unwrap_or(u32::MAX))
            .min(self.max);
        let mut random = [0u8; 2];
        let _ = aws_lc_rs::rand::fill(&mut random);
        let factor = 0.5 + f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX);
        base.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter() {
        let b = Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        };
        let first = b.delay(0);
        assert!(
            first >= b.initial / 2 && first <= b.initial * 3 / 2,
            "{first:?}"
        );
        let third = b.delay(2);
        assert!(
            third >= Duration::from_millis(500) && third <= Duration::from_millis(1500),
            "{third:?}"
        );
        for attempt in [10, 20, 100, u32::MAX] {
            let d = b.delay(attempt);
            assert!(d >= b.max / 2 && d <= b.max * 3 / 2, "{attempt}: {d:?}");
        }
    }
}

//! Per push-service circuit breakers: one origin in trouble is paused alone.
//!
//! After `THRESHOLD` consecutive retryable failures (429, 5xx, timeouts,
//! broken connections) an origin is *open*: its deliveries are put off, not
//! attempted, for a cool-down that doubles with each opening and is never
//! shorter than the service's `Retry-After`. When it ends one delivery goes
//! through as a probe (*half-open*); its success closes the breaker, its
//! failure opens it again. Every other push service keeps full speed.
//!
//! It is also the one place that tells the operator about a push service
//! in trouble: once when its failures start, once when it is paused, once
//! when it answers again — not for every push in between.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::clock::ms;
use crate::push::RetryCause;

/// Consecutive retryable failures that pause an origin.
pub const THRESHOLD: u32 = 5;
/// While a probe is out, how soon the origin's other deliveries are looked
/// at again.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// What an attempt says about a push service's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answered as a working service does (2xx, 404/410, a 4xx refusal).
    Answering,
    /// 429, 5xx, a timeout or a broken connection.
    Struggling {
        cause: RetryCause,
        retry_after: Option<Duration>,
    },
    /// The request never went out (keys that cannot be used, the endpoint
    /// policy, a payload too large): it says nothing about the service.
    NotAsked,
}

/// Whether a delivery to an origin may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// Go, as the one request that tells whether a paused origin has
    /// recovered: its outcome must be recorded with `probe: true`.
    Probe,
    /// Paused: look again at this time (milliseconds since the epoch).
    Wait(u64),
}

#[derive(Debug, Default)]
struct Origin {
    failures: u32,
    openings: u32,
    open_until: Option<u64>,
    probing: bool,
    /// It asked for a pause past `pause_max` (logged once, until it recovers).
    asked_too_much: bool,
}

#[derive(Debug)]
pub struct Breakers {
    cool_down: Backoff,
    /// The longest pause, whatever a push service asks: one answer must
    /// not silence a whole push service (all of FCM, say) for years.
    pause_max: Duration,
    origins: Mutex<HashMap<String, Origin>>,
}

impl Breakers {
    pub fn new(cool_down: Backoff, pause_max: Duration) -> Self {
        Self {
            cool_down,
            pause_max,
            origins: Mutex::new(HashMap::new()),
        }
    }

    pub fn admit(&self, origin: &str, now_ms: u64) -> Admit {
        let mut origins = self.origins.lock().expect("breaker lock");
        let Some(state) = origins.get_mut(origin) else {
            return Admit::Go;
        };
        match state.open_until {
            None => Admit::Go,
            Some(until) if now_ms < until => Admit::Wait(until),
            Some(_) if state.probing => Admit::Wait(now_ms + ms(PROBE_WAIT)),
            Some(_) => {
                state.probing = true;
                Admit::Probe
            }
        }
    }

    /// Records an attempt on `origin`; `probe` when [`Breakers::admit`]
    /// let it through as the probe. Every outcome of a probe closes the
    /// breaker, opens it again, or (when the request never went out) lets
    /// the next delivery probe instead — a probe left unanswered would
    /// keep the origin paused for good.
    pub fn record(&self, origin: &str, health: Health, probe: bool, now_ms: u64) {
        let mut origins = self.origins.lock().expect("breaker lock");
        match health {
            Health::Answering => match origins.remove(origin) {
                Some(state) if state.open_until.is_some() => {
                    tracing::info!(origin, "push service answering again; deliveries resume");
                }
                Some(_) => tracing::info!(origin, "push service recovered"),
                None => {}
            },
            Health::NotAsked => {
                if probe && let Some(state) = origins.get_mut(origin) {
                    state.probing = false;
                }
            }
            Health::Struggling { cause, retry_after } => {
                let state = match origins.entry(origin.to_owned()) {
                    Entry::Occupied(known) => known.into_mut(),
                    Entry::Vacant(new) => {
                        tracing::warn!(
                            origin,
                            trouble = %cause,
                            "push service failing; counting failures until it recovers"
                        );
                        new.insert(Origin::default())
                    }
                };
                if !probe && state.open_until.is_some() {
                    // Paused: an answer to a request sent before the pause
                    // began; only the probe decides what comes next.
                    return;
                }
                state.failures += 1;
                if probe || state.failures >= THRESHOLD {
                    let asked = retry_after.unwrap_or_default();
                    if asked > self.pause_max && !state.asked_too_much {
                        state.asked_too_much = true;
                        tracing::warn!(
                            origin,
                            retry_after = ?asked,
                            pause = ?self.pause_max,
                            "push service asks for a longer pause than delivery.pause_max allows; pausing it for pause_max"
                        );
                    }
                    let pause = self
                        .cool_down
                        .delay(state.openings)
                        .max(asked)
                        .min(self.pause_max);
                    if state.openings == 0 {
                        tracing::warn!(
                            origin,
                            failures = state.failures,
                            pause = ?pause,
                            "push service struggling: pausing deliveries to it; others continue"
                        );
                    }
                    state.openings = state.openings.saturating_add(1);
                    state.open_until = Some(now_ms.saturating_add(ms(pause)));
                    state.probing = false;
                    state.failures = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "https://push.example";

    fn breakers() -> Breakers {
        Breakers::new(
            Backoff {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(60),
            },
            Duration::from_secs(7200),
        )
    }

    /// A 503, with the push service's `Retry-After` if any.
    fn struggling(retry_after: Option<Duration>) -> Health {
        Health::Struggling {
            cause: RetryCause::Status(503),
            retry_after,
        }
    }

    fn struggle(b: &Breakers, times: u32, now: u64) {
        for _ in 0..times {
            b.record(ORIGIN, struggling(None), false, now);
        }
    }

    #[test]
    fn an_origin_stays_open_below_the_threshold() {
        let b = breakers();
        struggle(&b, THRESHOLD - 1, 0);
        assert_eq!(b.admit(ORIGIN, 0), Admit::Go);
    }

    #[test]
    fn repeated_trouble_pauses_only_that_origin() {
        let b = breakers();
        struggle(&b, THRESHOLD, 1_000);
        assert!(matches!(b.admit(ORIGIN, 1_001), Admit::Wait(t) if t >= 6_000));
        assert_eq!(b.admit("https://other.example", 1_001), Admit::Go);
    }

    #[test]
    fn a_successful_answer_resets_the_count() {
        let b = breakers();
        struggle(&b, THRESHOLD - 1, 0);
        b.record(ORIGIN, Health::Answering, false, 0);
        struggle(&b, THRESHOLD - 1, 0);
        assert_eq!(b.admit(ORIGIN, 0), Admit::Go);
    }

    #[test]
    fn after_the_pause_one_probe_goes_and_the_rest_wait() {
        let b = breakers();
        struggle(&b, THRESHOLD, 0);
        let later = 100_000;
        assert_eq!(b.admit(ORIGIN, later), Admit::Probe);
        assert!(matches!(b.admit(ORIGIN, later), Admit::Wait(_)));
        b.record(ORIGIN, Health::Answering, true, later);
        assert_eq!(b.admit(ORIGIN, later), Admit::Go, "closed again");
    }

    #[test]
    fn a_failed_probe_pauses_again_for_longer() {
        let b = breakers();
        struggle(&b, THRESHOLD, 0);
        let later = 100_000;
        assert_eq!(b.admit(ORIGIN, later), Admit::Probe);
        b.record(ORIGIN, struggling(None), true, later);
        // Second opening: 20 s ± 50 %.
        assert!(matches!(b.admit(ORIGIN, later + 1), Admit::Wait(t) if t >= later + 10_000));
    }

    #[test]
    fn answers_to_requests_sent_before_the_pause_do_not_lengthen_it() {
        let b = breakers();
        struggle(&b, THRESHOLD, 0);
        let Admit::Wait(until) = b.admit(ORIGIN, 1) else {
            panic!("paused")
        };
        struggle(&b, 3 * THRESHOLD, 2);
        assert_eq!(b.admit(ORIGIN, 3), Admit::Wait(until));
    }

    #[test]
    fn the_pause_is_never_shorter_than_retry_after() {
        let b = breakers();
        for _ in 0..THRESHOLD {
            b.record(
                ORIGIN,
                struggling(Some(Duration::from_secs(3600))),
                false,
                0,
            );
        }
        assert!(matches!(b.admit(ORIGIN, 1), Admit::Wait(t) if t >= 3_600_000));
    }

    #[test]
    fn a_probe_that_never_went_out_lets_the_next_delivery_probe() {
        let b = breakers();
        struggle(&b, THRESHOLD, 0);
        let later = 100_000;
        assert_eq!(b.admit(ORIGIN, later), Admit::Probe);
        b.record(ORIGIN, Health::NotAsked, true, later);
        assert_eq!(b.admit(ORIGIN, later), Admit::Probe);
    }

    #[test]
    fn only_the_probe_decides_while_paused() {
        let b = breakers();
        struggle(&b, THRESHOLD, 0);
        let later = 100_000;
        assert_eq!(b.admit(ORIGIN, later), Admit::Probe);
        // A late answer to a request sent before the pause, and one that
        // never went out, change nothing: the probe is still out.
        struggle(&b, THRESHOLD, later);
        b.record(ORIGIN, Health::NotAsked, false, later);
        assert!(matches!(b.admit(ORIGIN, later), Admit::Wait(t) if t == later + 1_000));
    }

    #[test]
    fn the_pause_is_capped_at_pause_max_whatever_retry_after_asks() {
        let b = breakers();
        for _ in 0..THRESHOLD {
            b.record(
                ORIGIN,
                struggling(Some(Duration::from_secs(999_999_999))),
                false,
                0,
            );
        }
        assert!(matches!(b.admit(ORIGIN, 1), Admit::Wait(t) if t == 7_200_000));
    }

    /// The log lines `f` writes on this thread, as the daemon prints them.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = lines.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_retry_after_past_pause_max_is_logged_once_until_the_service_recovers() {
        const TOO_LONG: &str = "longer pause than delivery.pause_max";
        let b = breakers();
        let asks_too_much = || struggling(Some(Duration::from_secs(999_999)));
        let pause = 7_200_000;
        let log = logged(|| {
            for _ in 0..THRESHOLD {
                b.record(ORIGIN, asks_too_much(), false, 0);
            }
            // Its probes keep asking: paused for pause_max again, silently.
            for n in 1..=3 {
                assert_eq!(b.admit(ORIGIN, n * pause), Admit::Probe);
                b.record(ORIGIN, asks_too_much(), true, n * pause);
            }
        });
        assert_eq!(log.matches(TOO_LONG).count(), 1, "{log}");

        let log = logged(|| {
            let later = 4 * pause;
            assert_eq!(b.admit(ORIGIN, later), Admit::Probe);
            b.record(ORIGIN, Health::Answering, true, later);
            // Recovered, then in trouble again and asking too much again.
            for _ in 0..THRESHOLD {
                b.record(ORIGIN, asks_too_much(), false, later);
            }
        });
        assert_eq!(log.matches(TOO_LONG).count(), 1, "{log}");
    }
}

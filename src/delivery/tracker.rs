//! What the engine keeps in memory about subscriptions' health between
//! writes: when each push service last took a push — the evidence that a
//! refusal was for one subscription alone — and which subscriptions'
//! deliveries were written lately, so that a stream of pushes to one
//! browser writes its health once in a while rather than once per push.

use std::collections::HashMap;
use std::sync::Mutex;

/// A delivery is written to a subscription's health at most this often
/// (milliseconds) while nothing fails for it: "delivered 2 h ago" needs no
/// finer grain, and a fan-out repeated every minute writes nothing more.
const REWRITE_AFTER_MS: u64 = 10 * 60 * 1000;
/// Subscriptions whose last written delivery is remembered; past it the
/// memory starts afresh (costing one write per subscription).
const MAX_REMEMBERED: usize = 65_536;
/// A refusal counts against the subscription alone only when its push
/// service took another push within this long (milliseconds).
const EVIDENCE_MS: u64 = 24 * 3600 * 1000;

#[derive(Default)]
pub struct Tracker {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (package, push-service origin) → when it last took a push of the
    /// package. Per package: a package may sign with a VAPID key of its
    /// own, and a wrong key is refused for all of that package only.
    delivered_by_origin: HashMap<String, HashMap<String, u64>>,
    /// Subscription (its stable id, which the package and endpoint
    /// decide) → when its delivery was last written.
    written: HashMap<[u8; 16], u64>,
}

impl Tracker {
    /// A push service took a push of `package` at `now_ms`.
    pub fn delivered_by(&self, package: &str, origin: &str, now_ms: u64) {
        let mut inner = self.inner.lock().expect("tracker lock");
        // Looked up by reference first: a push allocates nothing here.
        if let Some(at) = inner
            .delivered_by_origin
            .get_mut(package)
            .and_then(|origins| origins.get_mut(origin))
        {
            *at = (*at).max(now_ms);
            return;
        }
        inner
            .delivered_by_origin
            .entry(package.to_owned())
            .or_default()
            .insert(origin.to_owned(), now_ms);
    }

    /// Whether the push service at `origin` took a push of `package`
    /// lately: a refusal from it then says something about the
    /// subscription, not about us (a wrong VAPID key is refused for the
    /// whole package) or about it (an outage).
    pub fn others_delivered(&self, package: &str, origin: &str, now_ms: u64) -> bool {
        let inner = self.inner.lock().expect("tracker lock");
        inner
            .delivered_by_origin
            .get(package)
            .and_then(|origins| origins.get(origin))
            .is_some_and(|at| now_ms.saturating_sub(*at) <= EVIDENCE_MS)
    }

    /// Whether a delivery to this subscription at `now_ms` is to be
    /// written; remembers it when it is.
    pub fn write_delivery(&self, subscription: [u8; 16], now_ms: u64) -> bool {
        let mut inner = self.inner.lock().expect("tracker lock");
        if let Some(at) = inner.written.get(&subscription)
            && now_ms.saturating_sub(*at) < REWRITE_AFTER_MS
        {
            return false;
        }
        if inner.written.len() >= MAX_REMEMBERED {
            inner.written.clear();
        }
        inner.written.insert(subscription, now_ms);
        true
    }

    /// Something failed for this subscription: its next delivery is
    /// written whenever it comes.
    pub fn forget(&self, subscription: [u8; 16]) {
        self.inner
            .lock()
            .expect("tracker lock")
            .written
            .remove(&subscription);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_written_once_in_a_while_and_again_after_a_failure() {
        let t = Tracker::default();
        let (s, other) = ([1; 16], [2; 16]);
        assert!(t.write_delivery(s, 0));
        assert!(!t.write_delivery(s, 1_000));
        assert!(t.write_delivery(other, 1_000));
        t.forget(s);
        assert!(t.write_delivery(s, 2_000));
        assert!(t.write_delivery(s, 2_000 + REWRITE_AFTER_MS));
    }

    #[test]
    fn a_push_service_counts_as_delivering_for_a_package_for_a_day_after_its_last_delivery() {
        let t = Tracker::default();
        let fcm = "https://fcm.googleapis.com";
        assert!(!t.others_delivered("crm", fcm, 0), "never delivered");
        t.delivered_by("crm", fcm, 1_000);
        assert!(t.others_delivered("crm", fcm, 1_000 + EVIDENCE_MS));
        assert!(!t.others_delivered("crm", fcm, 1_001 + EVIDENCE_MS));
        assert!(!t.others_delivered("crm", "https://web.push.apple.com", 1_000));
        assert!(
            !t.others_delivered("hr", fcm, 1_000),
            "another package may sign with another (wrong) key"
        );
    }
}

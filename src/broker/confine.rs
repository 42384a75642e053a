//! What a browser's connection may do: the topic rules the gateway checks
//! every packet against.
//!
//! A browser logged in as alice of crm may publish only `subscribe`,
//! `unsubscribe`, `list` and `receipt` on `axion/crm/push/alice/…`, never
//! retained,
//! and `list` never asking for whole endpoints; it may subscribe only to
//! the VAPID key topics (`axion/push/vapid`, `axion/crm/push/vapid`) and
//! its own event and result topics (`axion/crm/push/alice`,
//! `…/alice/result`), by their exact names: no wildcard, no `$share`.

use crate::model::{Package, Target, User};
use crate::stats::Refusal;
use crate::topics::{Topics, Verb};

/// The verbs a browser may publish.
const BROWSER_VERBS: [Verb; 4] = [
    Verb::Subscribe,
    Verb::Unsubscribe,
    Verb::List,
    Verb::Receipt,
];

/// One browser connection's topics.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Exact topic filters it may subscribe to.
    readable: Vec<String>,
    /// Exact topics it may publish to, with their verb.
    writable: Vec<(String, Verb)>,
}

impl Scope {
    pub fn new(topics: &Topics, package: &Package, user: &User) -> Self {
        let target = Target::User(user.clone());
        Self {
            readable: vec![
                topics.vapid(None),
                topics.vapid(Some(package)),
                topics.event(package, user),
                topics.result(package, &target),
            ],
            writable: BROWSER_VERBS
                .iter()
                .map(|verb| (topics.command(package, &target, *verb), *verb))
                .collect(),
        }
    }

    /// May the browser subscribe to `filter`?
    pub fn check_filter(&self, filter: &str) -> Result<(), Refusal> {
        if self.readable.iter().any(|t| t == filter) {
            Ok(())
        } else {
            Err(Refusal::Subscribe)
        }
    }

    /// May the browser publish `payload` on `topic`?
    pub fn check_publish(&self, topic: &str, retain: bool, payload: &[u8]) -> Result<(), Refusal> {
        let Some((_, verb)) = self.writable.iter().find(|(t, _)| t == topic) else {
            return Err(Refusal::Publish);
        };
        if retain {
            return Err(Refusal::Retain);
        }
        if *verb == Verb::List && asks_for_endpoints(payload) {
            return Err(Refusal::Endpoints);
        }
        Ok(())
    }
}

/// A `list` payload with `"endpoints"` set to anything but false: whole
/// endpoints are for services. A payload that is not JSON is the daemon's
/// to refuse, with a reason in the result.
fn asks_for_endpoints(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("endpoints").cloned())
        .is_some_and(|e| !matches!(e, serde_json::Value::Bool(false) | serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(prefix: &str) -> Scope {
        Scope::new(
            &Topics::new(prefix),
            &Package::parse("crm").unwrap(),
            &User::parse("alice").unwrap(),
        )
    }

    #[test]
    fn a_browser_reads_only_the_keys_and_its_own_events_and_results() {
        let s = alice("");
        for ok in [
            "axion/push/vapid",
            "axion/crm/push/vapid",
            "axion/crm/push/alice",
            "axion/crm/push/alice/result",
        ] {
            assert_eq!(s.check_filter(ok), Ok(()), "{ok}");
        }
        for refused in [
            "axion/#",
            "#",
            "axion/crm/push/+",
            "axion/crm/push/alice/#",
            "axion/crm/push/alice/+",
            "axion/crm/push/bob",
            "axion/crm/push/bob/result",
            "axion/hr/push/alice",
            "axion/hr/push/vapid",
            "axion/crm/push/alice/send",
            "axion/crm/push/alice/subscribe",
            "$share/g/axion/crm/push/alice",
            "$SYS/#",
            "axion/push/daemon/status",
        ] {
            assert_eq!(
                s.check_filter(refused),
                Err(Refusal::Subscribe),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_browser_publishes_only_its_own_subscribe_unsubscribe_list_and_receipt() {
        let s = alice("");
        for ok in [
            "axion/crm/push/alice/subscribe",
            "axion/crm/push/alice/unsubscribe",
            "axion/crm/push/alice/list",
            "axion/crm/push/alice/receipt",
        ] {
            assert_eq!(s.check_publish(ok, false, b"{}"), Ok(()), "{ok}");
        }
        for refused in [
            "axion/crm/push/alice/send",
            "axion/crm/push/bob/send",
            "axion/crm/push/bob/subscribe",
            "axion/crm/push/bob/receipt",
            "axion/crm/push/@ops/send",
            "axion/crm/push/@ops/members",
            "axion/crm/push/alice/members",
            "axion/crm/push/alice/result",
            "axion/crm/push/alice",
            "axion/hr/push/alice/subscribe",
            "axion/push/vapid",
        ] {
            assert_eq!(
                s.check_publish(refused, false, b"{}"),
                Err(Refusal::Publish),
                "{refused}"
            );
        }
        assert_eq!(
            s.check_publish("axion/crm/push/alice/subscribe", true, b"{}"),
            Err(Refusal::Retain)
        );
    }

    #[test]
    fn whole_endpoints_are_for_services() {
        let s = alice("");
        let list = "axion/crm/push/alice/list";
        assert_eq!(s.check_publish(list, false, b""), Ok(()));
        assert_eq!(s.check_publish(list, false, br#"{"all": true}"#), Ok(()));
        assert_eq!(
            s.check_publish(list, false, br#"{"endpoints": false}"#),
            Ok(())
        );
        for asking in [&br#"{"endpoints": true}"#[..], br#"{"endpoints": 1}"#] {
            assert_eq!(
                s.check_publish(list, false, asking),
                Err(Refusal::Endpoints)
            );
        }
    }

    #[test]
    fn the_topic_prefix_applies() {
        let s = alice("staging/");
        assert_eq!(s.check_filter("staging/axion/crm/push/alice"), Ok(()));
        assert!(s.check_filter("axion/crm/push/alice").is_err());
        assert_eq!(
            s.check_publish("staging/axion/crm/push/alice/list", false, b""),
            Ok(())
        );
    }
}

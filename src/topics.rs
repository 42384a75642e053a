//! The topic grammar of DESIGN §2, both ways: an ingress topic string into a
//! typed [`Route`], and typed names into every egress topic.
//!
//! No other module builds or splits a topic string. An optional prefix
//! (`axion_push.mqtt.topic_prefix`) is prepended to every topic so several
//! installations — or test runs — can share one broker without seeing each
//! other's commands.

use crate::model::{ModelError, Package, Target, User};

/// The last level of an ingress topic: what the command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Send,
    Subscribe,
    Unsubscribe,
    Members,
    /// A user's subscriptions, answered in the result report (no keys).
    List,
    /// What a browser did with a push (see `receipt`).
    Receipt,
}

impl Verb {
    pub const ALL: [Verb; 6] = [
        Verb::Send,
        Verb::Subscribe,
        Verb::Unsubscribe,
        Verb::Members,
        Verb::List,
        Verb::Receipt,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Verb::Send => "send",
            Verb::Subscribe => "subscribe",
            Verb::Unsubscribe => "unsubscribe",
            Verb::Members => "members",
            Verb::List => "list",
            Verb::Receipt => "receipt",
        }
    }

    fn parse(level: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == level)
    }
}

/// The level the daemon's own result reports end with; the ingress filter
/// matches them too (MQTT 3.1.1 cannot exclude one level), so they are
/// recognised and skipped before anything else.
const RESULT_LEVEL: &str = "result";

/// Why an ingress topic could not be routed. The text goes into the result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("unknown verb '{0}' (expected send, subscribe, unsubscribe, members, list or receipt)")]
    UnknownVerb(String),
    #[error("{0}")]
    Level(#[from] ModelError),
    #[error("{verb} addresses a single user; groups take only send and members")]
    GroupNotAllowed { verb: &'static str },
    #[error("members changes a group: address it as @{{group}}")]
    UserNotAllowed,
}

/// A command's address: package, target and verb, each already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub package: Package,
    pub target: Target,
    pub verb: Verb,
}

/// The raw levels of a topic of the ingress shape, before validation; what a
/// rejected command is answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels<'a> {
    pub package: &'a str,
    pub target: &'a str,
    pub verb: &'a str,
}

impl Levels<'_> {
    /// True for `…/result`: a report (ours or another instance's), not a command.
    pub fn is_result(&self) -> bool {
        self.verb == RESULT_LEVEL
    }

    pub fn route(&self) -> Result<Route, TopicError> {
        let verb =
            Verb::parse(self.verb).ok_or_else(|| TopicError::UnknownVerb(self.verb.into()))?;
        let package = Package::parse(self.package)?;
        let target = Target::parse(self.target)?;
        match (&target, verb) {
            (
                Target::Group(_),
                Verb::Subscribe | Verb::Unsubscribe | Verb::List | Verb::Receipt,
            ) => {
                return Err(TopicError::GroupNotAllowed {
                    verb: verb.as_str(),
                });
            }
            (Target::User(_), Verb::Members) => return Err(TopicError::UserNotAllowed),
            _ => {}
        }
        Ok(Route {
            package,
            target,
            verb,
        })
    }
}

/// Builds and reads topics under one prefix.
#[derive(Debug, Clone, Default)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// `prefix` is prepended verbatim; end it with `/` to make it a level.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The filters the daemon subscribes to: one per verb, for every package
    /// and target. Not `axion/+/push/+/+`: MQTT 3.1.1 has no "no local",
    /// and that filter would bring every result report the daemon publishes
    /// back to it — on a stream of sends, a third of its broker traffic.
    /// The price: a command with a verb the daemon does not know reaches no
    /// one and is not answered.
    pub fn ingress_filters(&self, shared_group: Option<&str>) -> Vec<String> {
        Verb::ALL
            .iter()
            .map(|verb| {
                let filter = format!("{}axion/+/push/+/{}", self.prefix, verb.as_str());
                match shared_group {
                    Some(group) => format!("$share/{group}/{filter}"),
                    None => filter,
                }
            })
            .collect()
    }

    /// Splits a topic of the ingress shape; `None` for anything else.
    pub fn levels<'a>(&self, topic: &'a str) -> Option<Levels<'a>> {
        let rest = topic.strip_prefix(self.prefix.as_str())?;
        let mut parts = rest.split('/');
        let (Some("axion"), Some(package), Some("push"), Some(target), Some(verb), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        Some(Levels {
            package,
            target,
            verb,
        })
    }

    /// Where the answer to a command on `levels` goes, even when its package
    /// or target did not validate.
    pub fn reply_topic(&self, levels: &Levels<'_>) -> String {
        format!(
            "{}axion/{}/push/{}/{RESULT_LEVEL}",
            self.prefix, levels.package, levels.target
        )
    }

    /// `axion/{package}/push/{target}/result`.
    pub fn result(&self, package: &Package, target: &Target) -> String {
        format!(
            "{}axion/{package}/push/{target}/{RESULT_LEVEL}",
            self.prefix
        )
    }

    /// Every result topic of `package`: `axion/{package}/push/+/result`.
    pub fn all_results(&self, package: &Package) -> String {
        format!("{}axion/{package}/push/+/{RESULT_LEVEL}", self.prefix)
    }

    /// `axion/{package}/push/{user}`: the real-time event, the topic the
    /// Python module published and listeners already use.
    pub fn event(&self, package: &Package, user: &User) -> String {
        format!("{}axion/{package}/push/{user}", self.prefix)
    }

    /// The filter a listener uses for events; `None` means any.
    pub fn event_filter(&self, package: Option<&Package>, user: Option<&User>) -> String {
        let package = package.map_or("+", Package::as_str);
        let user = user.map_or("+", User::as_str);
        format!("{}axion/{package}/push/{user}", self.prefix)
    }

    /// Where a service publishes a command.
    pub fn command(&self, package: &Package, target: &Target, verb: Verb) -> String {
        format!(
            "{}axion/{package}/push/{target}/{}",
            self.prefix,
            verb.as_str()
        )
    }

    /// The retained VAPID public key: `axion/push/vapid` for the default key,
    /// `axion/{package}/push/vapid` for a package with keys of its own.
    pub fn vapid(&self, package: Option<&Package>) -> String {
        match package {
            Some(package) => format!("{}axion/{package}/push/vapid", self.prefix),
            None => format!("{}axion/push/vapid", self.prefix),
        }
    }

    /// The retained daemon status, also the Last Will topic.
    pub fn status(&self) -> String {
        format!("{}axion/push/daemon/status", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Group;

    fn route(topic: &str) -> Result<Route, TopicError> {
        Topics::default()
            .levels(topic)
            .expect("ingress shape")
            .route()
    }

    #[test]
    fn every_verb_routes_to_its_target() {
        let r = route("axion/crm/push/alice/send").unwrap();
        assert_eq!(r.package.as_str(), "crm");
        assert_eq!(r.target, Target::User(User::parse("alice").unwrap()));
        assert_eq!(r.verb, Verb::Send);
        assert_eq!(
            route("axion/crm/push/@ops/send").unwrap().target,
            Target::Group(Group::parse("ops").unwrap())
        );
        assert_eq!(
            route("axion/crm/push/alice/subscribe").unwrap().verb,
            Verb::Subscribe
        );
        assert_eq!(
            route("axion/crm/push/alice/unsubscribe").unwrap().verb,
            Verb::Unsubscribe
        );
        assert_eq!(
            route("axion/crm/push/@ops/members").unwrap().verb,
            Verb::Members
        );
        assert_eq!(route("axion/crm/push/alice/list").unwrap().verb, Verb::List);
        assert_eq!(
            route("axion/crm/push/alice/receipt").unwrap().verb,
            Verb::Receipt
        );
        assert_eq!(
            route("axion/crm/push/@ops/receipt"),
            Err(TopicError::GroupNotAllowed { verb: "receipt" })
        );
    }

    #[test]
    fn unknown_verbs_are_named_in_the_error() {
        assert_eq!(
            route("axion/crm/push/alice/frobnicate"),
            Err(TopicError::UnknownVerb("frobnicate".into()))
        );
    }

    #[test]
    fn verbs_are_checked_against_their_target_kind() {
        assert_eq!(
            route("axion/crm/push/@ops/subscribe"),
            Err(TopicError::GroupNotAllowed { verb: "subscribe" })
        );
        assert_eq!(
            route("axion/crm/push/@ops/list"),
            Err(TopicError::GroupNotAllowed { verb: "list" })
        );
        assert_eq!(
            route("axion/crm/push/alice/members"),
            Err(TopicError::UserNotAllowed)
        );
    }

    #[test]
    fn empty_levels_are_refused() {
        assert!(matches!(
            route("axion//push/alice/send"),
            Err(TopicError::Level(ModelError::EmptyName { kind: "package" }))
        ));
    }

    #[test]
    fn topics_of_another_shape_are_not_ingress() {
        let t = Topics::default();
        for other in [
            "axion/crm/push/alice",
            "axion/push/vapid",
            "axion/push/daemon/status",
            "axion/crm/push/alice/send/extra",
            "other/crm/push/alice/send",
            "axion/crm/pull/alice/send",
        ] {
            assert_eq!(t.levels(other), None, "{other}");
        }
    }

    #[test]
    fn result_topics_are_recognised_as_reports() {
        let t = Topics::default();
        assert!(t.levels("axion/crm/push/alice/result").unwrap().is_result());
        assert!(!t.levels("axion/crm/push/alice/send").unwrap().is_result());
    }

    #[test]
    fn egress_topics_follow_the_contract() {
        let t = Topics::default();
        let crm = Package::parse("crm").unwrap();
        let alice = User::parse("alice").unwrap();
        let ops = Target::Group(Group::parse("ops").unwrap());
        assert_eq!(t.event(&crm, &alice), "axion/crm/push/alice");
        assert_eq!(
            t.result(&crm, &Target::User(alice.clone())),
            "axion/crm/push/alice/result"
        );
        assert_eq!(t.result(&crm, &ops), "axion/crm/push/@ops/result");
        assert_eq!(t.vapid(None), "axion/push/vapid");
        assert_eq!(t.vapid(Some(&crm)), "axion/crm/push/vapid");
        assert_eq!(t.status(), "axion/push/daemon/status");
        assert_eq!(
            t.command(&crm, &ops, Verb::Send),
            "axion/crm/push/@ops/send"
        );
        assert_eq!(t.event_filter(None, None), "axion/+/push/+");
    }

    #[test]
    fn a_prefix_applies_to_every_topic_both_ways() {
        let t = Topics::new("test-7/");
        assert_eq!(t.ingress_filters(None)[0], "test-7/axion/+/push/+/send");
        assert_eq!(
            t.ingress_filters(Some("axion-push"))[0],
            "$share/axion-push/test-7/axion/+/push/+/send"
        );
        assert!(t.levels("axion/crm/push/alice/send").is_none());
        let levels = t.levels("test-7/axion/crm/push/alice/send").unwrap();
        assert_eq!(t.reply_topic(&levels), "test-7/axion/crm/push/alice/result");
        assert_eq!(t.status(), "test-7/axion/push/daemon/status");
    }

    #[test]
    fn invalid_levels_are_still_answered_on_their_own_result_topic() {
        let t = Topics::default();
        let levels = t.levels("axion/crm/push/vapid/send").unwrap();
        assert!(levels.route().is_err());
        assert_eq!(t.reply_topic(&levels), "axion/crm/push/vapid/result");
    }

    #[test]
    fn the_daemon_subscribes_to_each_verb_and_never_to_its_own_results() {
        let filters = Topics::default().ingress_filters(None);
        assert_eq!(
            filters,
            [
                "axion/+/push/+/send",
                "axion/+/push/+/subscribe",
                "axion/+/push/+/unsubscribe",
                "axion/+/push/+/members",
                "axion/+/push/+/list",
                "axion/+/push/+/receipt",
            ]
        );
        assert!(
            filters
                .iter()
                .all(|f| !f.ends_with("/result") && !f.ends_with('+'))
        );
    }
}

//! Properties over everything the daemon reads from input it does not
//! control — topics, send payloads, subscriptions, whole commands: nothing
//! panics, every refusal says why, valid input round-trips.
//!
//! proptest stores each failing case it finds in
//! `tests/properties.proptest-regressions` (commit it): those cases run
//! first on every later run, so a crash once found stays a test. The case
//! counts keep this within seconds, so CI runs it on every change.

mod harness;

use axion_push::command::Handled;
use axion_push::model::{Endpoint, Group, Package, SubscriptionKeys, Target, User};
use axion_push::notification::Notification;
use axion_push::topics::{Topics, Verb};
use proptest::prelude::*;
use serde_json::Value;

/// Names a topic level may hold, and some it may not.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.-]{1,16}",
        "@[a-zA-Z0-9_.-]{0,16}",
        ".{0,12}",
        Just(String::new()),
        Just("+".into()),
        Just("#".into()),
    ]
}

/// Field names the daemon knows, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "title",
            "body",
            "url",
            "icon",
            "badge",
            "image",
            "tag",
            "renotify",
            "require_interaction",
            "silent",
            "lang",
            "dir",
            "actions",
            "action",
            "data",
            "ttl",
            "urgency",
            "topic",
            "endpoint",
            "keys",
            "p256dh",
            "auth",
            "user_agent",
            "module",
            "add",
            "remove",
            "set",
            "all",
        ])
        .prop_map(str::to_owned),
        ".{0,8}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_topic_is_routed_or_refused_with_a_reason(
        package in level(), target in level(), verb in level(), extra in ".{0,30}",
    ) {
        let topics = Topics::default();
        for topic in [
            format!("axion/{package}/push/{target}/{verb}"),
            format!("axion/{package}/push/{target}/{verb}/{extra}"),
            extra.clone(),
        ] {
            if let Some(levels) = topics.levels(&topic)
                && let Err(e) = levels.route()
            {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn a_command_topic_routes_back_to_what_made_it(
        package in "[a-z][a-z0-9_-]{0,15}",
        name in "[a-zA-Z0-9._-]{1,20}",
        group in any::<bool>(),
        verb in prop::sample::select(Verb::ALL.to_vec()),
    ) {
        let package = Package::parse(&package).unwrap();
        let target = if group {
            Target::Group(Group::parse(&name).unwrap())
        } else {
            Target::User(User::parse(&name).unwrap())
        };
        let topics = Topics::new("prefix/");
        let topic = topics.command(&package, &target, verb);
        let levels = topics.levels(&topic).expect("our own topic is an ingress topic");
        match levels.route() {
            Ok(route) => {
                prop_assert_eq!(route.package, package);
                prop_assert_eq!(route.target, target);
                prop_assert_eq!(route.verb, verb);
            }
            // Group-only and user-only verbs refuse the other kind.
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn any_send_payload_is_parsed_or_refused_with_a_reason(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        value in json(),
    ) {
        for payload in [bytes, serde_json::to_vec(&value).unwrap()] {
            if let Err(e) = Notification::parse(&payload, 86_400, || "generated".into()) {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn any_endpoint_is_parsed_or_refused_and_an_accepted_one_fits_the_column(text in ".{0,300}") {
        for candidate in [text.clone(), format!("https://{text}"), format!("https://push.example/{text}")] {
            match Endpoint::parse(&candidate) {
                Ok(endpoint) => prop_assert!(endpoint.as_str().len() <= 2048),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn any_key_pair_is_parsed_or_refused_with_a_reason(p256dh in ".{0,100}", auth in ".{0,30}") {
        if let Err(e) = SubscriptionKeys::parse(&p256dh, &auth) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

proptest! {
    // Each case is a command through the real command stage and database.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_command_is_answered_and_never_crashes_the_daemon(
        target in level(),
        verb in prop_oneof![
            prop::sample::select(vec!["send", "subscribe", "unsubscribe", "members", "list"])
                .prop_map(str::to_owned),
            level(),
        ],
        body in prop_oneof![
            json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            prop::collection::vec(any::<u8>(), 0..128),
        ],
    ) {
        RUNTIME.block_on(async {
            let alone = ALONE.get_or_init(harness::alone::Alone::start).await;
            let handled = alone
                .processor
                .handle(&format!("axion/crm/push/{target}/{verb}"), &body)
                .await;
            assert!(matches!(handled, Handled::Done), "{handled:?}");
        });
    }
}

/// One runtime and one command stage for every case of the property above:
/// starting them per case would spend the time on setup, not on input.
static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});
static ALONE: tokio::sync::OnceCell<harness::alone::Alone> = tokio::sync::OnceCell::const_new();

//! Browser subscriptions arriving over MQTT: recorded, refused with a reason,
//! updated, and unsubscribed.

mod harness;

use std::time::Duration;

use axion_push::topics::Verb;
use harness::{Harness, WAIT};
use serde_json::json;

async fn subscribe_raw(h: &Harness, user: &str, payload: &str) -> serde_json::Value {
    h.command(
        &h.command_topic("crm", user, Verb::Subscribe),
        payload.as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_subscription_is_stored_active_with_its_details() {
    let h = Harness::start().await;
    let b = h.browser("firefox");
    let mut sub = b.subscription();
    sub["user_agent"] = json!("Firefox/140");
    sub["module"] = json!("tickets");
    sub["id"] = json!("s-1");
    let result = subscribe_raw(&h, "alice", &sub.to_string()).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["id"], "s-1");
    assert_eq!(result["command"], "subscribe");
    assert_eq!(result["subscriptions"], 1);

    let rows = h.subscription_rows("alice").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.package, "crm");
    assert_eq!(row.endpoint, b.endpoint);
    assert_eq!(row.p256dh.as_deref(), Some(b.p256dh.as_str()));
    assert_eq!(row.auth.as_deref(), Some(b.auth.as_str()));
    assert_eq!(row.user_agent.as_deref(), Some("Firefox/140"));
    assert_eq!(row.module.as_deref(), Some("tickets"));
    assert!(row.active);
    assert!(row.created_at.is_some());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_subscriptions_per_user_are_stored_and_all_sent_to() {
    let h = Harness::start().await;
    let browsers: Vec<_> = ["a", "b", "c"].iter().map(|n| h.browser(n)).collect();
    for (i, b) in browsers.iter().enumerate() {
        let r = h.subscribe("crm", "alice", b).await;
        assert_eq!(r["subscriptions"], i + 1);
    }
    assert_eq!(h.subscription_rows("alice").await.len(), 3);
    let result = h.send("crm", "alice", json!({"title": "To all"})).await;
    assert_eq!(result["delivered"], 3);
    for b in &browsers {
        assert_eq!(h.push.received_by(b).len(), 1);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_updates_the_keys_instead_of_adding_a_row() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let renewed = h.browser("b"); // same endpoint, new keys
    let result = h.subscribe("crm", "alice", &renewed).await;
    assert_eq!(result["subscriptions"], 1);
    let rows = h.subscription_rows("alice").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].p256dh.as_deref(), Some(renewed.p256dh.as_str()));
    h.stop().await;
}

/// Without subscribe tokens nothing is authenticated: whoever may publish
/// a subscribe may name any user, and the browser goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_belongs_to_the_user_who_subscribed_it_last() {
    let h = Harness::start().await;
    let shared = h.browser("shared-pc");
    h.subscribe("crm", "alice", &shared).await;
    h.subscribe("crm", "bob", &shared).await;
    let alice = h.send("crm", "alice", json!({"title": "For alice"})).await;
    assert_eq!(
        alice["subscriptions"], 0,
        "alice's notifications must not reach bob's session"
    );
    let bob = h.send("crm", "bob", json!({"title": "For bob"})).await;
    assert_eq!(bob["delivered"], 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_subscriptions_are_refused_with_a_reason() {
    let h = Harness::start().await;
    let b = h.browser("b");
    let without_endpoint = json!({"keys": {"p256dh": b.p256dh, "auth": b.auth}});
    let without_keys = json!({"endpoint": b.endpoint});
    let without_auth = json!({"endpoint": b.endpoint, "keys": {"p256dh": b.p256dh}});
    let bad_point = json!({"endpoint": b.endpoint, "keys": {"p256dh": "BAAA", "auth": b.auth}});
    let short_auth = json!({"endpoint": b.endpoint, "keys": {"p256dh": b.p256dh, "auth": "AAAA"}});
    let cases = [
        ("{not json", "payload is not valid JSON"),
        ("", "payload is empty"),
        ("[1,2]", "payload is not a JSON object"),
        (&without_endpoint.to_string(), "endpoint is missing"),
        (&without_keys.to_string(), "keys is missing"),
        (&without_auth.to_string(), "keys.auth is missing"),
        (
            &bad_point.to_string(),
            "keys.p256dh must be a 65-byte uncompressed P-256 point",
        ),
        (&short_auth.to_string(), "keys.auth must be 16 bytes"),
    ];
    for (payload, expected) in cases {
        let result = subscribe_raw(&h, "alice", payload).await;
        assert_eq!(result["ok"], false, "{payload}: {result}");
        let error = result["error"].as_str().unwrap();
        assert!(error.contains(expected), "{payload}: {error}");
    }
    assert!(h.subscription_rows("alice").await.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_outside_the_policy_are_refused() {
    let h = Harness::start().await;
    let b = h.browser("b");
    let mut http = b.subscription();
    http["endpoint"] = json!(b.endpoint.replace("https://", "http://"));
    let result = subscribe_raw(&h, "alice", &http.to_string()).await;
    assert!(
        result["error"].as_str().unwrap().contains("must use https"),
        "{result}"
    );

    let mut elsewhere = b.subscription();
    elsewhere["endpoint"] = json!("https://push.evil.example/x");
    let result = subscribe_raw(&h, "alice", &elsewhere.to_string()).await;
    assert!(
        result["error"].as_str().unwrap().contains("is not allowed"),
        "{result}"
    );
    assert!(h.subscription_rows("alice").await.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_during_a_database_outage_is_applied_when_it_ends() {
    let h = Harness::start_with(|c| c.settings.database.busy_timeout = Duration::from_millis(200))
        .await;
    let b = h.browser("b");
    let from = h.mqtt.count();
    let lock = h.database.outage().await;
    let topic = h.command_topic("crm", "alice", Verb::Subscribe);
    h.mqtt.publish(&topic, b.subscription().to_string()).await;
    h.mqtt
        .wait_for(from, "the database reported down", WAIT, |m| {
            m.topic == "axion/push/daemon/status" && m.json()["database"] == "unavailable"
        })
        .await;
    let released_at = h.mqtt.count();
    lock.end().await;
    let result = h
        .mqtt
        .wait_for(from, "the subscribe's result", WAIT, |m| {
            m.topic == "axion/crm/push/alice/result"
        })
        .await
        .json();
    assert_eq!(result["ok"], true, "held, not refused: {result}");
    assert_eq!(result["subscriptions"], 1);
    let answered = h
        .mqtt
        .messages()
        .iter()
        .position(|m| m.topic == "axion/crm/push/alice/result")
        .unwrap();
    assert!(
        answered >= released_at,
        "answered only once the database was back"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_deactivates_only_that_endpoint() {
    let h = Harness::start().await;
    let keep = h.browser("keep");
    let drop = h.browser("drop");
    h.subscribe("crm", "alice", &keep).await;
    h.subscribe("crm", "alice", &drop).await;
    let topic = h.command_topic("crm", "alice", Verb::Unsubscribe);
    let result = h
        .command(
            &topic,
            json!({"endpoint": drop.endpoint}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["command"], "unsubscribe");
    assert_eq!(result["deactivated"], 1);
    let rows = h.subscription_rows("alice").await;
    assert!(
        rows.iter()
            .find(|r| r.endpoint == keep.endpoint)
            .unwrap()
            .active
    );
    assert!(
        !rows
            .iter()
            .find(|r| r.endpoint == drop.endpoint)
            .unwrap()
            .active
    );

    let again = h
        .command(
            &topic,
            json!({"endpoint": drop.endpoint}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(again["ok"], true);
    assert_eq!(
        again["deactivated"], 0,
        "unsubscribing twice changes nothing"
    );
    let send = h.send("crm", "alice", json!({"title": "T"})).await;
    assert_eq!(send["subscriptions"], 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_during_a_database_outage_is_applied_when_it_ends() {
    let h = Harness::start_with(|c| c.settings.database.busy_timeout = Duration::from_millis(200))
        .await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let from = h.mqtt.count();
    let lock = h.database.outage().await;
    let topic = h.command_topic("crm", "alice", Verb::Unsubscribe);
    h.mqtt
        .publish(&topic, json!({"endpoint": b.endpoint}).to_string())
        .await;
    h.mqtt
        .wait_for(from, "the database reported down", WAIT, |m| {
            m.topic == "axion/push/daemon/status" && m.json()["database"] == "unavailable"
        })
        .await;
    lock.end().await;
    let result = h
        .mqtt
        .wait_for(from, "the unsubscribe's result", WAIT, |m| {
            m.topic == "axion/crm/push/alice/result"
        })
        .await
        .json();
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["deactivated"], 1, "{result}");
    assert!(!h.subscription_rows("alice").await[0].active);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_without_an_endpoint_is_refused() {
    let h = Harness::start().await;
    let topic = h.command_topic("crm", "alice", Verb::Unsubscribe);
    let result = h.command(&topic, b"{}").await;
    assert_eq!(result["ok"], false);
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("endpoint is missing"),
        "{result}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_subscriptions_shows_none_then_every_one() {
    let h = Harness::start().await;
    assert!(h.subscription_rows("alice").await.is_empty());
    let a = h.browser("a");
    let b = h.browser("b");
    h.subscribe("crm", "alice", &a).await;
    h.subscribe("hr", "alice", &b).await;
    let rows = h.subscription_rows("alice").await;
    let mut packages: Vec<_> = rows.iter().map(|r| r.package.as_str()).collect();
    packages.sort();
    assert_eq!(packages, ["crm", "hr"]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_beyond_the_per_user_limit_deactivates_the_oldest() {
    let h = Harness::start_with(|c| c.settings.limits.max_subscriptions_per_user = 2).await;
    let oldest = h.browser("oldest");
    let middle = h.browser("middle");
    let newest = h.browser("newest");
    h.subscribe("crm", "alice", &oldest).await;
    h.subscribe("crm", "alice", &middle).await;
    let third = h.subscribe("crm", "alice", &newest).await;
    assert_eq!(third["subscriptions"], 2, "{third}");
    assert_eq!(third["deactivated"], 1, "{third}");
    let rows = h.subscription_rows("alice").await;
    let active = |b: &harness::Browser| {
        rows.iter()
            .find(|r| r.endpoint == b.endpoint)
            .unwrap()
            .active
    };
    assert!(!active(&oldest));
    assert!(active(&middle));
    assert!(active(&newest));
    // Subscribing an endpoint the user already has evicts nobody.
    let again = h.subscribe("crm", "alice", &newest).await;
    assert_eq!(again["deactivated"], 0, "{again}");
    h.stop().await;
}

const TOKEN_SECRET: &str = "a long secret shared with the host application";

fn token_for(package: &str, user: &str) -> String {
    let key = axion_push::token::TokenKey::new(TOKEN_SECRET);
    let expires = axion_push::clock::now_ms() / 1000 + 3600;
    key.issue(
        &axion_push::model::Package::parse(package).unwrap(),
        &axion_push::model::User::parse(user).unwrap(),
        expires,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_secret_only_a_token_for_that_user_subscribes() {
    let h = Harness::start_with(|c| {
        c.settings.subscribe_token_secret = Some(harness::secret(TOKEN_SECRET));
    })
    .await;
    let b = h.browser("b");
    let with_token = |token: Option<String>| {
        let mut sub = b.subscription();
        if let Some(token) = token {
            sub["token"] = json!(token);
        }
        sub.to_string()
    };
    for (token, expected) in [
        (None, "token is missing"),
        (Some(token_for("crm", "bob")), "not valid for this user"),
        (Some(token_for("hr", "alice")), "not valid for this user"),
        (
            Some(format!("v2.99999999999.{}", "A".repeat(43))),
            "not valid for this user",
        ),
        (
            Some(format!("99999999999.{}", "A".repeat(43))),
            "older v1 format",
        ),
        (Some("v2.12.forged!".into()), "not of the form"),
    ] {
        let r = subscribe_raw(&h, "alice", &with_token(token)).await;
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"].as_str().unwrap().contains(expected), "{r}");
    }
    assert!(
        h.subscription_rows("alice").await.is_empty(),
        "nothing recorded"
    );
    let r = subscribe_raw(&h, "alice", &with_token(Some(token_for("crm", "alice")))).await;
    assert_eq!(r["ok"], true, "{r}");

    let unsubscribe = h.command_topic("crm", "alice", Verb::Unsubscribe);
    let r = h
        .command(
            &unsubscribe,
            json!({"endpoint": b.endpoint}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(r["ok"], false, "unsubscribe needs one too: {r}");
    let r = h
        .command(
            &unsubscribe,
            json!({"endpoint": b.endpoint, "token": token_for("crm", "alice")})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r["deactivated"], 1, "{r}");
    h.stop().await;
}

/// A token valid until 2343 was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_valid_for_centuries_is_refused() {
    let h = Harness::start_with(|c| {
        c.settings.subscribe_token_secret = Some(harness::secret(TOKEN_SECRET));
    })
    .await;
    let key = axion_push::token::TokenKey::new(TOKEN_SECRET);
    let year_2343 = 11_661_000_000;
    let token = key.issue(
        &axion_push::model::Package::parse("crm").unwrap(),
        &axion_push::model::User::parse("alice").unwrap(),
        year_2343,
    );
    let b = h.browser("b");
    let mut sub = b.subscription();
    sub["token"] = json!(token);
    let r = subscribe_raw(&h, "alice", &sub.to_string()).await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("longer than 7 days"),
        "{r}"
    );
    h.stop().await;
}

/// A subscribe with `token` added, as a page that logged in as `user` sends it.
async fn subscribe_with_token(
    h: &Harness,
    user: &str,
    browser: &harness::Browser,
) -> serde_json::Value {
    let mut sub = browser.subscription();
    sub["token"] = json!(token_for("crm", user));
    subscribe_raw(h, user, &sub.to_string()).await
}

fn with_tokens(c: &mut axion_push::config::Config) {
    c.settings.subscribe_token_secret = Some(harness::secret(TOKEN_SECRET));
}

/// The endpoint's rows, `(user, active)`, in the package.
async fn holders(h: &Harness, users: &[&str], endpoint: &str) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    for user in users {
        for row in h.subscription_rows(user).await {
            if row.endpoint == endpoint && row.package == "crm" {
                found.push((row.user.trim_end().to_owned(), row.active));
            }
        }
    }
    found
}

/// Mallory learned alice's endpoint and subscribes it with his own valid
/// token: today's takeover would move it to him and deactivate hers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_a_users_own_token_does_not_take_another_users_browser() {
    let h = Harness::start_with(with_tokens).await;
    let alices = h.browser("alices-laptop");
    let r = subscribe_with_token(&h, "alice", &alices).await;
    assert_eq!(r["ok"], true, "{r}");

    let r = subscribe_with_token(&h, "mallory", &alices).await;
    assert_eq!(r["ok"], false, "mallory took alice's browser: {r}");
    assert_eq!(r["code"], "endpoint-taken", "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("active for another user of the package")
            && error.contains("pushManager.subscribe()"),
        "{r}"
    );
    assert!(!error.contains("alice"), "the refusal names the owner: {r}");
    assert_eq!(
        holders(&h, &["alice", "mallory"], &alices.endpoint).await,
        [("alice".to_owned(), true)],
        "nothing changed"
    );

    let sent = h
        .send("crm", "alice", json!({"title": "Still yours"}))
        .await;
    assert_eq!(sent["delivered"], 1, "{sent}");
    assert_eq!(h.push.received_by(&alices).len(), 1);
    let sent = h.send("crm", "mallory", json!({"title": "Stolen"})).await;
    assert_eq!(sent["subscriptions"], 0, "{sent}");

    // Alice herself subscribes it again as before (new keys, say).
    let r = subscribe_with_token(&h, "alice", &h.browser("alices-laptop")).await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(r.get("code").is_none(), "{r}");
    h.stop().await;
}

/// A shared computer changing hands with tokens on: bob's page is refused
/// alice's endpoint, makes a fresh push subscription and subscribes that.
/// Alice's row stays until her push service says the endpoint is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_a_shared_browser_changes_hands_with_a_new_subscription() {
    let h = Harness::start_with(with_tokens).await;
    let shared = h.browser("shared-pc");
    assert_eq!(subscribe_with_token(&h, "alice", &shared).await["ok"], true);

    let r = subscribe_with_token(&h, "bob", &shared).await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["code"], "endpoint-taken", "{r}");
    assert_eq!(
        holders(&h, &["alice", "bob"], &shared.endpoint).await,
        [("alice".to_owned(), true)],
        "alice keeps it"
    );

    // PushSubscription.unsubscribe(), then pushManager.subscribe(): a new endpoint.
    let fresh = h.browser("shared-pc-again");
    let r = subscribe_with_token(&h, "bob", &fresh).await;
    assert_eq!(
        (&r["ok"], &r["subscriptions"]),
        (&json!(true), &json!(1)),
        "{r}"
    );
    let sent = h.send("crm", "bob", json!({"title": "For bob"})).await;
    assert_eq!(sent["delivered"], 1, "{sent}");
    assert_eq!(h.push.received_by(&fresh).len(), 1);

    // The browser dropped alice's subscription: her push service answers 410.
    h.push.script(&shared, [harness::Reply::status(410)]);
    let sent = h.send("crm", "alice", json!({"title": "For alice"})).await;
    assert_eq!(
        (&sent["delivered"], &sent["deactivated"]),
        (&json!(0), &json!(1)),
        "{sent}"
    );
    assert_eq!(
        holders(&h, &["alice", "bob"], &shared.endpoint).await,
        [("alice".to_owned(), false)]
    );
    h.stop().await;
}

/// rumqttd holds its acknowledgements to a client behind a full in-flight
/// window towards it: a daemon that acknowledged these only once their
/// answers were acknowledged stalled after about a hundred, its pings
/// unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_400_subscribes_from_one_client_is_answered_in_full() {
    const BURST: usize = 400;
    let h = Harness::start_with(|c| c.settings.limits.max_subscriptions_per_user = BURST).await;
    let topic = h.command_topic("crm", "alice", Verb::Subscribe);
    for i in 0..BURST {
        let browser = h.browser(&format!("b{i}"));
        h.mqtt
            .publish(&topic, browser.subscription().to_string())
            .await;
    }
    let result_topic = format!("{}/result", topic.rsplit_once('/').unwrap().0);
    let last = h
        .mqtt
        .wait_for(0, "the last subscribe", Duration::from_secs(60), |m| {
            m.topic == result_topic && m.json()["subscriptions"] == BURST
        })
        .await;
    assert_eq!(last.json()["ok"], true, "{}", last.json());
}

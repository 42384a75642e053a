//! `…/{user}/list`: a user's subscriptions answered over MQTT, without keys,
//! and without endpoints unless a service asks for them.

mod harness;

use axion_push::topics::Verb;
use harness::Harness;
use serde_json::{Value, json};

async fn list(h: &Harness, package: &str, target: &str, payload: &str) -> Value {
    h.command(
        &h.command_topic(package, target, Verb::List),
        payload.as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_returns_a_users_subscriptions_without_keys() {
    let h = Harness::start().await;
    let b = h.browser("laptop");
    let mut sub = b.subscription();
    sub["user_agent"] = json!("Firefox/140");
    sub["module"] = json!("tickets");
    h.command(
        &h.command_topic("crm", "alice", Verb::Subscribe),
        sub.to_string().as_bytes(),
    )
    .await;
    let result = list(&h, "crm", "alice", r#"{"id": "l-1"}"#).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["id"], "l-1");
    assert_eq!(result["command"], "list");
    assert_eq!(result["subscriptions"], 1);
    let items = result["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert!(
        item.get("endpoint").is_none(),
        "an endpoint is a capability: {item}"
    );
    let origin = url::Url::parse(&b.endpoint)
        .unwrap()
        .origin()
        .ascii_serialization();
    assert_eq!(item["origin"], origin.as_str());
    let id = item["subscription"].as_str().unwrap();
    assert_eq!(id.len(), 22, "{item}");
    assert_eq!(item["module"], "tickets");
    assert_eq!(item["user_agent"], "Firefox/140");
    assert_eq!(item["active"], true);
    assert!(item["created_at"].is_string(), "{item}");
    let text = result.to_string();
    assert!(
        !text.contains(&b.auth),
        "the auth secret is on the bus: {text}"
    );
    assert!(
        !text.contains(&b.p256dh),
        "the p256dh key is on the bus: {text}"
    );
    assert!(
        !text.contains(&b.endpoint),
        "the endpoint is on the bus: {text}"
    );

    // A service asks for whole endpoints; the id stays the same.
    let full = list(&h, "crm", "alice", r#"{"endpoints": true}"#).await;
    assert_eq!(full["items"][0]["endpoint"], b.endpoint.as_str(), "{full}");
    assert_eq!(full["items"][0]["subscription"], id);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_unsubscribed_by_the_id_list_reports() {
    let h = Harness::start().await;
    let keep = h.browser("keep");
    let drop = h.browser("drop");
    h.subscribe("crm", "alice", &keep).await;
    h.subscribe("crm", "alice", &drop).await;
    let listed = list(&h, "crm", "alice", r#"{"endpoints": true}"#).await;
    let id = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["endpoint"] == drop.endpoint.as_str())
        .unwrap()["subscription"]
        .clone();
    let r = h
        .command(
            &h.command_topic("crm", "alice", Verb::Unsubscribe),
            json!({"subscription": id}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(r["deactivated"], 1, "{r}");
    let after = list(&h, "crm", "alice", r#"{"endpoints": true}"#).await;
    let endpoints: Vec<_> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(endpoints, [keep.endpoint.as_str()]);
    h.stop().await;
}

const TOKEN_SECRET: &str = "a-shared-secret-of-at-least-32-characters";

/// Before, `list` needed no token even when subscribe did, and answered
/// with whole endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_needs_the_token_like_subscribe() {
    let h = Harness::start_with(|c| {
        c.settings.subscribe_token_secret = Some(harness::secret(TOKEN_SECRET));
    })
    .await;
    let key = axion_push::token::TokenKey::new(TOKEN_SECRET);
    let token = |user: &str| {
        key.issue(
            &axion_push::model::Package::parse("crm").unwrap(),
            &axion_push::model::User::parse(user).unwrap(),
            axion_push::clock::now_ms() / 1000 + 300,
        )
    };
    let refused = list(&h, "crm", "alice", "").await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("token is missing"),
        "{refused}"
    );
    let wrong = list(
        &h,
        "crm",
        "alice",
        &json!({"token": token("bob")}).to_string(),
    )
    .await;
    assert_eq!(wrong["ok"], false, "{wrong}");
    let mine = list(
        &h,
        "crm",
        "alice",
        &json!({"token": token("alice")}).to_string(),
    )
    .await;
    assert_eq!(mine["ok"], true, "{mine}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_only_the_package_asked_for() {
    let h = Harness::start().await;
    let crm = h.browser("crm");
    let hr = h.browser("hr");
    h.subscribe("crm", "alice", &crm).await;
    h.subscribe("hr", "alice", &hr).await;
    let result = list(&h, "crm", "alice", r#"{"endpoints": true}"#).await;
    let endpoints: Vec<_> = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(endpoints, [crm.endpoint.as_str()]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_leaves_out_inactive_subscriptions_unless_all_is_asked_for() {
    let h = Harness::start().await;
    let keep = h.browser("keep");
    let gone = h.browser("gone");
    h.subscribe("crm", "alice", &keep).await;
    h.subscribe("crm", "alice", &gone).await;
    h.command(
        &h.command_topic("crm", "alice", Verb::Unsubscribe),
        json!({"endpoint": gone.endpoint}).to_string().as_bytes(),
    )
    .await;

    let active = list(&h, "crm", "alice", "").await;
    assert_eq!(
        active["ok"], true,
        "an empty payload is a plain list: {active}"
    );
    assert_eq!(active["subscriptions"], 1);
    assert_eq!(active["items"].as_array().unwrap().len(), 1);
    let active = list(&h, "crm", "alice", r#"{"endpoints": true}"#).await;
    assert_eq!(active["items"][0]["endpoint"], keep.endpoint.as_str());

    let all = list(
        &h,
        "crm",
        "alice",
        r#"{"id": "l-all", "all": true, "endpoints": true}"#,
    )
    .await;
    assert_eq!(all["subscriptions"], 1, "subscriptions counts active ones");
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let inactive = items
        .iter()
        .find(|i| i["endpoint"] == gone.endpoint.as_str())
        .unwrap();
    assert_eq!(inactive["active"], false);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_of_a_user_without_subscriptions_is_empty() {
    let h = Harness::start().await;
    let result = list(&h, "crm", "nobody", r#"{"id": "l-0"}"#).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["subscriptions"], 0);
    assert_eq!(result["items"], json!([]));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_for_a_group_is_refused() {
    let h = Harness::start().await;
    let result = list(&h, "crm", "@ops", r#"{"id": "l-g"}"#).await;
    assert_eq!(result["ok"], false);
    assert_eq!(
        result["error"],
        "list addresses a single user; groups take only send and members"
    );
    assert!(result.get("items").is_none(), "{result}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_an_unknown_field_is_refused() {
    let h = Harness::start().await;
    let result = list(&h, "crm", "alice", r#"{"id": "l-x", "active": false}"#).await;
    assert_eq!(result["ok"], false);
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `active`"),
        "{result}"
    );
    h.stop().await;
}

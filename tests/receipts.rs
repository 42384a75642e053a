//! Receipts: each push carries a token; the browser's service worker sends
//! it back on `…/{user}/receipt` with what it did, and the daemon publishes
//! that on the user's result topic — once, for the right user only.

mod harness;

use axion_push::topics::Verb;
use harness::{Harness, WAIT};
use serde_json::{Value, json};

/// Sends one notification to alice's only browser and returns the send's
/// id and the push's decrypted payload.
async fn push_to_alice(h: &Harness) -> (String, Value) {
    let browser = h.browser("laptop");
    h.subscribe("crm", "alice", &browser).await;
    let id = uuid::Uuid::new_v4().to_string();
    let result = h
        .send("crm", "alice", json!({"id": id, "title": "Disk full"}))
        .await;
    assert_eq!(result["delivered"], 1, "{result}");
    h.push.wait_for(1, WAIT).await;
    let got = h.push.received_by(&browser);
    let payload = got[0].payload.clone().expect("the push decrypts");
    (id, payload)
}

fn token(payload: &Value) -> String {
    payload["receipt"]["token"]
        .as_str()
        .expect("the push carries a receipt token")
        .to_owned()
}

async fn receipt(h: &Harness, user: &str, body: Value) -> Value {
    h.command(
        &format!("axion/crm/push/{user}/receipt"),
        body.to_string().as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shown_receipt_is_published_with_the_send_and_subscription_it_names() {
    let h = Harness::start().await;
    let (send_id, payload) = push_to_alice(&h).await;
    assert_eq!(payload["receipt"]["clicks"], false, "clicks are opt-in");
    assert_eq!(
        payload["notification"]["title"], "Disk full",
        "the rest of the payload is untouched"
    );

    let report = receipt(
        &h,
        "alice",
        json!({"id": "r-1", "token": token(&payload), "receipt": "shown"}),
    )
    .await;

    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["command"], "receipt");
    assert_eq!(report["id"], "r-1", "the receipt's own id");
    assert_eq!(report["send_id"], send_id.as_str());
    assert_eq!(report["receipt"], "shown");
    let listed = h
        .command(
            "axion/crm/push/alice/list",
            json!({"id": "l-1"}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(
        report["subscription"], listed["items"][0]["subscription"],
        "the subscription is named as list names it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_leaves_its_sends_final_report_alone() {
    let h = Harness::start().await;
    let (send_id, payload) = push_to_alice(&h).await;
    let shown = receipt(
        &h,
        "alice",
        json!({"id": "r-1", "token": token(&payload), "receipt": "shown"}),
    )
    .await;
    assert_eq!(shown["ok"], true, "{shown}");
    // A later send's report: whatever the receipt caused is on the bus by now.
    let later = h.send("crm", "alice", json!({"title": "later"})).await;
    assert_eq!(later["delivered"], 1, "{later}");

    let send_topic = h.command_topic("crm", "alice", Verb::Send);
    let results = format!("{}/result", send_topic.rsplit_once('/').unwrap().0);
    let reports_of_the_send: Vec<Value> = h
        .mqtt
        .messages()
        .iter()
        .filter(|m| m.topic == results)
        .map(|m| m.json())
        .filter(|r| r["id"] == send_id.as_str())
        .collect();
    assert_eq!(
        reports_of_the_send.len(),
        1,
        "one final report, not re-opened: {reports_of_the_send:?}"
    );
    assert_eq!(reports_of_the_send[0]["queued"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_counts_once() {
    let h = Harness::start().await;
    let (_, payload) = push_to_alice(&h).await;
    let body = |id: &str| json!({"id": id, "token": token(&payload), "receipt": "shown"});
    assert_eq!(receipt(&h, "alice", body("r-1")).await["ok"], true);

    let again = receipt(&h, "alice", body("r-2")).await;

    assert_eq!(again["ok"], false, "{again}");
    assert!(
        again["error"].as_str().unwrap().contains("already taken"),
        "{again}"
    );
    let failed = receipt(
        &h,
        "alice",
        json!({"id": "r-3", "token": token(&payload), "receipt": "failed", "reason": "denied"}),
    )
    .await;
    assert_eq!(
        failed["ok"], true,
        "another kind of receipt is its own: {failed}"
    );
    assert_eq!(failed["reason"], "denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_receipt_command_delivered_again_is_answered_as_the_first_time() {
    let h = Harness::start().await;
    let (send_id, payload) = push_to_alice(&h).await;
    let body = json!({"id": "r-1", "token": token(&payload), "receipt": "shown"});
    let first = receipt(&h, "alice", body.clone()).await;
    assert_eq!(first["ok"], true, "{first}");
    assert!(first.get("duplicate").is_none(), "{first}");

    // What the broker delivers again when a daemon took the receipt and
    // died before its answer reached the broker: the same command, same id.
    let again = receipt(&h, "alice", body).await;

    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["send_id"], send_id.as_str());
    assert_eq!(again["receipt"], "shown");
    assert_eq!(again["subscription"], first["subscription"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_on_another_users_topic_and_when_forged() {
    let h = Harness::start().await;
    let (_, payload) = push_to_alice(&h).await;
    let token = token(&payload);

    let foreign = receipt(
        &h,
        "bob",
        json!({"id": "r-1", "token": token, "receipt": "shown"}),
    )
    .await;
    assert_eq!(foreign["ok"], false, "{foreign}");
    assert!(
        foreign["error"]
            .as_str()
            .unwrap()
            .contains("not valid for this user"),
        "{foreign}"
    );

    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = receipt(
        &h,
        "alice",
        json!({"id": "r-2", "token": String::from_utf8(forged).unwrap(), "receipt": "shown"}),
    )
    .await;
    assert_eq!(forged["ok"], false, "{forged}");

    // Neither refusal used up the real receipt.
    let real = receipt(
        &h,
        "alice",
        json!({"id": "r-3", "token": token, "receipt": "shown"}),
    )
    .await;
    assert_eq!(real["ok"], true, "{real}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_are_refused_unless_the_operator_turned_them_on() {
    let h = Harness::start().await;
    let (_, payload) = push_to_alice(&h).await;
    let clicked = receipt(
        &h,
        "alice",
        json!({"id": "r-1", "token": token(&payload), "receipt": "clicked"}),
    )
    .await;
    assert_eq!(clicked["ok"], false, "{clicked}");
    assert!(
        clicked["error"]
            .as_str()
            .unwrap()
            .contains("receipts.clicks"),
        "{clicked}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_clicks_on_a_click_is_reported_with_its_action() {
    let h = Harness::start_with(|c| c.settings.receipts.clicks = true).await;
    let (send_id, payload) = push_to_alice(&h).await;
    assert_eq!(payload["receipt"]["clicks"], true);

    let clicked = receipt(
        &h,
        "alice",
        json!({"id": "r-1", "token": token(&payload), "receipt": "clicked", "action": "ack"}),
    )
    .await;

    assert_eq!(clicked["ok"], true, "{clicked}");
    assert_eq!(clicked["send_id"], send_id.as_str());
    assert_eq!(clicked["action"], "ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_receipts_off_pushes_carry_no_token_and_receipts_are_refused() {
    let h = Harness::start_with(|c| c.settings.receipts.enabled = false).await;
    let (_, payload) = push_to_alice(&h).await;
    assert!(payload.get("receipt").is_none(), "{payload}");

    let refused = receipt(
        &h,
        "alice",
        json!({"id": "r-1", "token": "AAAA", "receipt": "shown"}),
    )
    .await;
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("receipts.enabled"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_for_a_send_already_forgotten_is_still_published() {
    let h = Harness::start().await;
    let (send_id, payload) = push_to_alice(&h).await;
    // As if the de-duplication window had passed: the daemon keeps nothing
    // of the send.
    h.database
        .execute("DELETE FROM axion_push_command WHERE 1 = 1")
        .await;

    let shown = receipt(
        &h,
        "alice",
        json!({"id": "r-1", "token": token(&payload), "receipt": "shown"}),
    )
    .await;

    assert_eq!(shown["ok"], true, "{shown}");
    assert_eq!(shown["send_id"], send_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_receipts_from_one_user_is_refused_past_its_allowance() {
    let h = Harness::start().await;
    let mut refused = None;
    // Garbage tokens: the allowance is spent before the token is looked at,
    // so a flood costs the daemon a counter each.
    // Past the burst, only the trickle the allowance refills goes through.
    for i in 0..2 * axion_push::receipt::BURST {
        let answer = receipt(
            &h,
            "mallory",
            json!({"id": format!("r-{i}"), "token": "AAAA", "receipt": "shown"}),
        )
        .await;
        assert_eq!(answer["ok"], false);
        if answer["error"]
            .as_str()
            .unwrap()
            .contains("too many receipts")
        {
            assert_eq!(answer["code"], "rate-limited", "worth sending again later");
            refused = Some(i);
            break;
        }
    }
    assert!(
        refused.is_some_and(|i| i >= axion_push::receipt::BURST),
        "refused at {refused:?}"
    );
    let others = receipt(
        &h,
        "alice",
        json!({"id": "a-1", "token": "AAAA", "receipt": "shown"}),
    )
    .await;
    assert!(
        !others["error"]
            .as_str()
            .unwrap()
            .contains("too many receipts"),
        "another user is not held up: {others}"
    );
}

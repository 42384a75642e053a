//! Sending to a user: the real-time event, then an encrypted, signed push to
//! every active subscription, then the result report.

mod harness;

use harness::{Harness, Reply, WAIT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_reaches_every_browser_of_the_user_encrypted_and_signed() {
    let h = Harness::start().await;
    let laptop = h.browser("laptop");
    let phone = h.browser("phone");
    h.subscribe("crm", "alice", &laptop).await;
    let subscribed = h.subscribe("crm", "alice", &phone).await;
    assert_eq!(subscribed["subscriptions"], 2);

    let from = h.mqtt.count();
    let result = h
        .send(
            "crm",
            "alice",
            json!({"id": "n-1", "title": "Disk full", "body": "db1 at 95%", "url": "/disks/db1"}),
        )
        .await;

    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["command"], "send");
    assert_eq!(result["subscriptions"], 2);
    assert_eq!(result["delivered"], 2);
    assert_eq!(result["failed"], 0);
    assert_eq!(result["deactivated"], 0);

    let messages = h.mqtt.messages();
    let event_at = messages
        .iter()
        .skip(from)
        .position(|m| m.topic == "axion/crm/push/alice")
        .expect("the real-time event was published");
    let result_at = messages
        .iter()
        .skip(from)
        .position(|m| m.topic == "axion/crm/push/alice/result")
        .unwrap();
    assert!(event_at < result_at, "the event comes before the result");
    let event = messages[from + event_at].json();
    assert_eq!(event["id"], "n-1");
    assert_eq!(event["title"], "Disk full");
    assert_eq!(event["body"], "db1 at 95%");
    assert_eq!(event["url"], "/disks/db1");
    assert!(event["ts"].as_f64().unwrap() > 1.7e9);

    let received = h.push.wait_for(2, WAIT).await;
    let vapid_key = h.daemon().vapid().default.key.public_key().to_owned();
    for browser in [&laptop, &phone] {
        let got = h.push.received_by(browser);
        assert_eq!(got.len(), 1, "one request for {}", browser.name);
        let r = &got[0];
        let payload = r
            .payload
            .as_ref()
            .expect("the body decrypts with the browser's key");
        assert_eq!(payload["web_push"], 8030);
        assert_eq!(payload["notification"]["title"], "Disk full");
        assert_eq!(payload["notification"]["body"], "db1 at 95%");
        assert_eq!(payload["notification"]["navigate"], "/disks/db1");
        let vapid = r.vapid.as_ref().expect("the VAPID JWT verifies");
        assert_eq!(vapid.aud, format!("https://{}", h.push.addr));
        assert_eq!(vapid.sub, "mailto:tests@example.com");
        assert_eq!(vapid.key, vapid_key);
        assert_eq!(r.content_encoding.as_deref(), Some("aes128gcm"));
        assert_eq!(r.ttl.as_deref(), Some("86400"));
        assert_eq!(r.urgency.as_deref(), Some("normal"));
        assert_eq!(
            r.http_version,
            hyper::Version::HTTP_2,
            "pushes go over HTTP/2"
        );
    }
    assert_eq!(received.len(), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_subscription_is_deactivated_and_the_others_still_delivered() {
    let h = Harness::start().await;
    let old = h.browser("old");
    let lost = h.browser("lost");
    let current = h.browser("current");
    for b in [&old, &lost, &current] {
        h.subscribe("crm", "bob", b).await;
    }
    h.push.script(&old, [Reply::status(410)]);
    h.push.script(&lost, [Reply::status(404)]);

    let result = h.send("crm", "bob", json!({"title": "Hello"})).await;
    assert_eq!(result["subscriptions"], 3);
    assert_eq!(result["delivered"], 1);
    assert_eq!(result["deactivated"], 2);
    assert_eq!(result["failed"], 0);

    let rows = h.subscription_rows("bob").await;
    let active = |b: &harness::Browser| {
        rows.iter()
            .find(|r| r.endpoint == b.endpoint)
            .unwrap()
            .active
    };
    assert!(!active(&old), "410 deactivates");
    assert!(!active(&lost), "404 deactivates");
    assert!(active(&current));

    let again = h.send("crm", "bob", json!({"title": "Again"})).await;
    assert_eq!(again["subscriptions"], 1);
    assert_eq!(again["delivered"], 1);
    assert_eq!(
        h.push.received_by(&old).len(),
        1,
        "nothing more to a gone endpoint"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_not_retried_and_never_deactivate() {
    let h = Harness::start().await;
    let statuses = [400u16, 401, 403, 413];
    let browsers: Vec<_> = statuses
        .iter()
        .map(|s| h.browser(&format!("answers-{s}")))
        .collect();
    for (b, status) in browsers.iter().zip(statuses) {
        h.subscribe("crm", "carol", b).await;
        h.push.script(b, [Reply::status(status)]);
    }
    let result = h.send("crm", "carol", json!({"title": "T"})).await;
    assert_eq!(result["ok"], true);
    assert_eq!(result["delivered"], 0);
    assert_eq!(result["failed"], statuses.len());
    assert_eq!(result["queued"], 0, "refusals are not retried: {result}");
    assert_eq!(result["deactivated"], 0);
    for status in statuses {
        assert_eq!(result["failures"][status.to_string()], 1, "{result}");
    }
    for b in &browsers {
        assert_eq!(h.push.received_by(b).len(), 1, "one request to {}", b.name);
    }
    assert!(h.subscription_rows("carol").await.iter().all(|r| r.active));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_push_service_is_retried_until_the_message_expires() {
    let h = Harness::start().await;
    let reachable = h.browser("reachable");
    h.subscribe("crm", "dave", &reachable).await;
    // A port bound but not listening: connections to it are refused, and
    // nothing else can take it while the test holds it.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = held.local_addr().unwrap();
    let mut unreachable = h.browser("unreachable");
    unreachable.endpoint = format!("https://{closed}/push/unreachable");
    h.subscribe("crm", "dave", &unreachable).await;

    let first = h
        .send(
            "crm",
            "dave",
            json!({"id": "short-lived", "title": "T", "ttl": 2}),
        )
        .await;
    assert_eq!(first["delivered"], 1, "{first}");
    assert_eq!(
        first["queued"], 1,
        "the unreachable one waits for a retry: {first}"
    );
    let last = h.final_result("crm", "dave", "short-lived").await;
    assert_eq!(last["delivered"], 1, "{last}");
    assert_eq!(last["expired"], 1, "{last}");
    assert_eq!(last["deactivated"], 0);
    assert!(h.subscription_rows("dave").await.iter().all(|r| r.active));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_subscriptions_still_gets_the_event() {
    let h = Harness::start().await;
    let from = h.mqtt.count();
    let result = h
        .send("crm", "nobody", json!({"id": "n-0", "title": "T"}))
        .await;
    assert_eq!(result["ok"], true);
    assert_eq!(result["subscriptions"], 0);
    assert_eq!(result["delivered"], 0);
    h.mqtt
        .wait_for(from, "the event", WAIT, |m| {
            m.topic == "axion/crm/push/nobody"
        })
        .await;
    assert!(h.push.received().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_fill_what_the_command_leaves_out() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "erin", &b).await;
    let from = h.mqtt.count();
    h.send(
        "crm",
        "erin",
        json!({"id": "minimal", "title": "Only a title"}),
    )
    .await;
    let event = h
        .mqtt
        .wait_for(from, "the event", WAIT, |m| {
            m.topic == "axion/crm/push/erin"
        })
        .await
        .json();
    assert_eq!(event["body"], "");
    assert_eq!(event["url"], "/");
    assert_eq!(event["ttl"], 86400);
    assert_eq!(event["urgency"], "normal");
    assert_eq!(event["renotify"], false);
    assert_eq!(event["require_interaction"], false);
    assert_eq!(event["silent"], false);
    assert_eq!(event["data"], json!({}));
    let pushed = h.push.wait_for(1, WAIT).await;
    let payload = pushed[0].payload.as_ref().unwrap();
    assert_eq!(payload["notification"]["navigate"], "/");
    assert_eq!(payload["notification"]["body"], "");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_option_reaches_the_browser_and_the_push_headers() {
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "fay", &b).await;
    let result = h
        .send(
            "crm",
            "fay",
            json!({
                "title": "Build failed", "body": "main is red", "url": "/ci/42",
                "icon": "/icon.png", "badge": "/badge.png", "image": "/shot.png",
                "tag": "ci", "renotify": true, "require_interaction": true, "silent": false,
                "lang": "en", "dir": "ltr",
                "actions": [{"action": "retry", "title": "Retry", "url": "/ci/42/retry"}],
                "data": {"build": 42}, "ttl": 600, "urgency": "high", "topic": "ci-main"
            }),
        )
        .await;
    assert_eq!(result["delivered"], 1, "{result}");
    let r = &h.push.received_by(&b)[0];
    assert_eq!(r.ttl.as_deref(), Some("600"));
    assert_eq!(r.urgency.as_deref(), Some("high"));
    assert_eq!(r.topic.as_deref(), Some("ci-main"));
    let n = &r.payload.as_ref().unwrap()["notification"];
    assert_eq!(n["icon"], "/icon.png");
    assert_eq!(n["badge"], "/badge.png");
    assert_eq!(n["image"], "/shot.png");
    assert_eq!(n["tag"], "ci");
    assert_eq!(n["renotify"], true);
    assert_eq!(n["requireInteraction"], true);
    assert_eq!(n["lang"], "en");
    assert_eq!(n["dir"], "ltr");
    assert_eq!(n["actions"][0]["navigate"], "/ci/42/retry");
    assert_eq!(n["data"]["build"], 42);
    h.stop().await;
}

/// The real-time event cannot be published (the MQTT side is gone); Web
/// Push still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_real_time_publish_does_not_stop_web_push() {
    let alone = harness::alone::Alone::start().await;
    alone.subscribe("b").await;
    alone.send(br#"{"title":"still pushed"}"#, false).await;
    let received = alone.push.wait_for(1, WAIT).await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].payload.as_ref().unwrap()["notification"]["title"],
        "still pushed"
    );
    alone.stop().await;
}

/// A send without an `id` that the broker delivers again (DUP set, as after
/// a reconnect before the daemon's acknowledgement got through) is
/// recognised by its content: the push goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_send_without_an_id_is_not_sent_again() {
    let alone = harness::alone::Alone::start().await;
    let b = alone.subscribe("b").await;
    let payload = br#"{"title":"Disk full"}"#;
    alone.send(payload, false).await;
    alone.push.wait_for(1, WAIT).await;
    alone.send(payload, true).await;
    // A marker behind it: the queue claims in order, so once the marker
    // is out, a second copy would be out or in flight — and stopping the
    // engine waits for what is in flight.
    alone.send(br#"{"title":"marker"}"#, false).await;
    alone.push.wait_for(2, WAIT).await;
    let push = alone.push.clone();
    alone.stop().await;
    let titles: Vec<_> = push
        .received_by(&b)
        .iter()
        .map(|r| r.payload.as_ref().unwrap()["notification"]["title"].clone())
        .collect();
    assert_eq!(titles, ["Disk full", "marker"]);
}

/// The same alert sent twice on purpose, without ids, goes out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_sends_without_an_id_both_go_out() {
    let alone = harness::alone::Alone::start().await;
    alone.subscribe("b").await;
    let payload = br#"{"title":"Server check"}"#;
    alone.send(payload, false).await;
    alone.send(payload, false).await;
    let received = alone.push.wait_for(2, WAIT).await;
    assert_eq!(received.len(), 2);
    alone.stop().await;
}

/// Live listeners hear of a notification first: no push of a send goes out
/// before its real-time event is handed to the MQTT side — here a slow one —
/// even when the delivery engine claims the send's deliveries meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_push_goes_out_before_its_event_is_handed_to_the_mqtt_side() {
    let mut alone = harness::alone::Alone::with_egress(1).await;
    let mut egress = alone.egress.take().unwrap();
    alone.subscribe("b").await;
    egress.recv().await.expect("the subscribe's result");
    // The MQTT side is busy: one message waits in front of the event.
    alone
        .egress_tx
        .publish(axion_push::report::Outgoing {
            topic: "busy".into(),
            payload: Default::default(),
            retain: false,
        })
        .await
        .unwrap();
    let processor = alone.processor.clone();
    let sending = tokio::spawn(async move {
        processor
            .handle(
                "axion/crm/push/alice/send",
                br#"{"id":"event-first","title":"T"}"#,
            )
            .await
    });
    // The engine claims the delivery (woken here, as a poll or another
    // send would): its lease moves the queue's next due time a lease ahead,
    // past the hold a new send's deliveries get.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        alone.wake.notify();
        let leased = axion_push::store::HOLD + std::time::Duration::from_secs(1);
        if matches!(alone.store.next_due("-").await.unwrap(), Some(after) if after > leased) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never claimed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The MQTT side takes its time before it has room for the event.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let room_made = std::time::Instant::now();
    assert_eq!(egress.recv().await.unwrap().out.topic, "busy");
    let event = egress.recv().await.unwrap();
    assert_eq!(event.out.topic, "axion/crm/push/alice");
    sending.await.unwrap();
    let pushed = alone.push.wait_for(1, WAIT).await;
    assert!(
        pushed[0].arrived_at >= room_made,
        "the push went out {:?} before the event could be handed over",
        room_made - pushed[0].arrived_at
    );
    alone.stop().await;
}

/// Commands that arrive together are handled together — consecutive sends
/// recorded in one transaction — and still each as if alone: a subscribe
/// takes effect before a send behind it, a malformed send fails alone, the
/// same id twice is a duplicate, and every answer comes in arrival order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_handled_together_keep_their_order_and_fail_alone() {
    use axion_push::command::Inbound;
    let mut alone = harness::alone::Alone::with_egress(64).await;
    let mut egress = alone.egress.take().unwrap();
    let alice = alone.push.browser("alice-phone");
    let bob = alone.push.browser("bob-phone");
    let subscribe_alice = alice.subscription().to_string();
    let subscribe_bob = bob.subscription().to_string();
    let messages = [
        Inbound {
            topic: "axion/crm/push/alice/subscribe",
            payload: subscribe_alice.as_bytes(),
            redelivered: false,
        },
        Inbound {
            topic: "axion/crm/push/alice/send",
            payload: br#"{"id":"a-1","title":"first"}"#,
            redelivered: false,
        },
        Inbound {
            topic: "axion/crm/push/alice/send",
            payload: br#"{"id":"a-2","title":"second"}"#,
            redelivered: false,
        },
        Inbound {
            topic: "axion/crm/push/alice/send",
            payload: br#"{"id":"bad","body":"no title"}"#,
            redelivered: false,
        },
        Inbound {
            topic: "axion/crm/push/alice/send",
            payload: br#"{"id":"a-1","title":"again"}"#,
            redelivered: false,
        },
        Inbound {
            topic: "axion/crm/push/bob/subscribe",
            payload: subscribe_bob.as_bytes(),
            redelivered: false,
        },
        Inbound {
            topic: "axion/crm/push/bob/send",
            payload: br#"{"id":"b-1","title":"for bob"}"#,
            redelivered: false,
        },
    ];
    let handled = alone
        .processor
        .handle_many(&messages, |_| axion_push::report::Receipt::none())
        .await;
    assert_eq!(handled, messages.len());
    let mut answers = Vec::new();
    while let Ok(publication) = egress.try_recv() {
        if publication.out.topic.ends_with("/result") {
            let r: serde_json::Value = serde_json::from_slice(&publication.out.payload).unwrap();
            // Sends with deliveries are answered by the engine, which runs
            // meanwhile: it may have reported one already.
            let by_engine = r["command"] == "send" && r["ok"] == true && r["duplicate"].is_null();
            if !by_engine {
                answers.push((r["command"].as_str().unwrap().to_owned(), r));
            }
        }
    }
    let commands: Vec<&str> = answers.iter().map(|(c, _)| c.as_str()).collect();
    // The command stage's answers: the subscribes, the refusal and the
    // duplicate, in arrival order.
    assert_eq!(
        commands,
        ["subscribe", "send", "send", "subscribe"],
        "{answers:?}"
    );
    assert_eq!(answers[1].1["id"], "bad");
    assert_eq!(answers[1].1["ok"], false);
    assert_eq!(answers[2].1["id"], "a-1");
    assert_eq!(answers[2].1["duplicate"], true);
    // Each subscribe took effect before the sends behind it.
    let pushed = alone.push.wait_for(3, WAIT).await;
    let mut titles: Vec<(String, String)> = pushed
        .iter()
        .map(|r| {
            (
                r.browser.clone(),
                r.payload.as_ref().unwrap()["notification"]["title"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            ("alice-phone".to_owned(), "first".to_owned()),
            ("alice-phone".to_owned(), "second".to_owned()),
            ("bob-phone".to_owned(), "for bob".to_owned()),
        ]
    );
    alone.stop().await;
}

/// A trigger that makes the database refuse to record the send `poison`,
/// as a constraint or a hand-made rule of an operator's would.
fn refuse_the_send_poison(backend: axion_push::store::Backend) -> &'static str {
    use axion_push::store::Backend;
    match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON axion_push_command \
             WHEN NEW.Id = 'poison' BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
        }
        Backend::MySql => {
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON axion_push_command FOR EACH ROW \
             BEGIN IF NEW.Id = 'poison' THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison refused'; END IF; END"
        }
        Backend::Postgres => {
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.\"Id\" = 'poison' THEN RAISE EXCEPTION 'poison refused'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER refuse_poison BEFORE INSERT ON axion_push_command \
             FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
        }
    }
}

/// Sends that arrive together are recorded in one transaction; when the
/// database refuses one of them, each is recorded alone, so that only that
/// one is answered with an error and the others are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_the_database_refuses_fails_alone_among_sends_recorded_together() {
    use axion_push::command::Inbound;
    let mut alone = harness::alone::Alone::with_egress(64).await;
    let mut egress = alone.egress.take().unwrap();
    alone
        .database
        .execute(refuse_the_send_poison(alone.database.backend))
        .await;
    let alice = alone.push.browser("alice-phone");
    let subscribe = alice.subscription().to_string();
    let message = |topic, payload| Inbound {
        topic,
        payload,
        redelivered: false,
    };
    let subscribed = [message(
        "axion/crm/push/alice/subscribe",
        subscribe.as_bytes(),
    )];
    alone
        .processor
        .handle_many(&subscribed, |_| axion_push::report::Receipt::none())
        .await;
    let sends = [
        message(
            "axion/crm/push/alice/send",
            br#"{"id":"a-1","title":"first"}"#,
        ),
        message(
            "axion/crm/push/alice/send",
            br#"{"id":"poison","title":"refused"}"#,
        ),
        message(
            "axion/crm/push/alice/send",
            br#"{"id":"a-2","title":"second"}"#,
        ),
    ];
    let handled = alone
        .processor
        .handle_many(&sends, |_| axion_push::report::Receipt::none())
        .await;
    assert_eq!(handled, sends.len(), "none left to handle again");

    let pushed = alone.push.wait_for(2, WAIT).await;
    let mut titles: Vec<&str> = pushed
        .iter()
        .map(|r| {
            r.payload.as_ref().unwrap()["notification"]["title"]
                .as_str()
                .unwrap()
        })
        .collect();
    titles.sort_unstable();
    assert_eq!(titles, ["first", "second"]);
    let mut refusal = None;
    while let Ok(publication) = egress.try_recv() {
        let r: serde_json::Value = serde_json::from_slice(&publication.out.payload).unwrap();
        if publication.out.topic.ends_with("/result") && r["id"] == "poison" {
            refusal = Some(r);
        }
    }
    let refusal = refusal.expect("the refused send is answered");
    assert_eq!(refusal["ok"], false, "{refusal}");
    assert!(
        refusal["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{refusal}"
    );
    alone.stop().await;
}

//! Several daemons on one broker and one server database: they split the
//! commands (an MQTT shared subscription) and the queue (row locks), and
//! when one dies the others finish its work — nothing lost, duplicates
//! bounded by the requests it had in flight. And a database outage in the
//! middle of a fan-out loses nothing.
//!
//! These need a server database (MariaDB/MySQL or PostgreSQL), named by
//! `AXION_PUSH_TEST_DATABASE`; `.ci/run` runs them on both:
//! `AXION_PUSH_TEST_DATABASE=postgres://postgres@127.0.0.1:5432 cargo test --test scale_out -- --ignored`.

mod harness;
#[path = "harness/process.rs"]
mod process;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axion_push::store::Backend;
use harness::database::{AxionRow, TestDatabase};
use harness::mosquitto::Mosquitto;
use harness::{Browser, Harness, PushService, Reply, TestClient, WAIT};
use process::Serve;
use serde_json::json;

/// Requests each daemon may have in flight: what a killed one can leave
/// sent but not recorded.
const CONCURRENCY: usize = 64;

/// A fresh database on the server `AXION_PUSH_TEST_DATABASE` names.
async fn server_database() -> TestDatabase {
    let db = TestDatabase::create().await;
    assert_ne!(
        db.backend,
        Backend::Sqlite,
        "these tests need a server database: set AXION_PUSH_TEST_DATABASE to a mysql:// or postgres:// server"
    );
    db
}

/// `per_user` browsers for each of `users`, written into the migrated
/// database; every push is answered after `latency`.
async fn seed(
    db: &TestDatabase,
    push: &PushService,
    users: &[String],
    per_user: usize,
    latency: Duration,
) -> Vec<Browser> {
    let store = axion_push::store::Store::open(&db.settings())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    let mut browsers = Vec::new();
    let mut owners = Vec::new();
    for user in users {
        for i in 0..per_user {
            let b = push.browser(&format!("{user}-{i}"));
            push.script(&b, [Reply::slow(201, latency)]);
            browsers.push(b);
            owners.push(user.as_str());
        }
    }
    let rows: Vec<AxionRow> = browsers
        .iter()
        .zip(&owners)
        .map(|(b, user)| AxionRow {
            user,
            package: "crm",
            endpoint: &b.endpoint,
            p256dh: Some(&b.p256dh),
            auth: Some(&b.auth),
            created_at: Some("2025-01-01 00:00:00"),
            active: Some("Y"),
            ..AxionRow::default()
        })
        .collect();
    db.insert_rows(&rows).await;
    browsers
}

/// How many requests each browser received.
fn per_browser(push: &PushService) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in push.received() {
        assert!(r.payload.is_ok(), "every push decrypts: {r:?}");
        *seen.entry(r.browser).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a server database: AXION_PUSH_TEST_DATABASE=postgres://… (or mysql://…) cargo test --test scale_out -- --ignored"]
async fn three_daemons_lose_nothing_when_one_is_killed() {
    const USERS: usize = 100;
    const PER_USER: usize = 100;
    const PUSHES: usize = USERS * PER_USER;
    harness::init_logging();
    let db = server_database().await;
    let broker = Mosquitto::start(true).await;
    let push = PushService::start().await;
    let users: Vec<String> = (0..USERS).map(|u| format!("u{u}")).collect();
    seed(&db, &push, &users, PER_USER, Duration::from_millis(20)).await;

    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut daemons: Vec<Serve> = dirs
        .iter()
        .map(|dir| {
            let (config, _) = process::write_config_on(
                &db.url,
                dir.path(),
                &push,
                &format!("    url: {}\n    shared_group: axion-push", broker.url()),
                &format!("    concurrency: {CONCURRENCY}\n"),
                "",
            );
            Serve::start(&config)
        })
        .collect();
    for daemon in &mut daemons {
        daemon.wait_for("axion-push is running");
    }
    let service = TestClient::connect_persistent(
        "127.0.0.1",
        broker.addr.port(),
        &format!("service-{}", uuid::Uuid::new_v4()),
        &["axion/crm/push/+/result".into(), "axion/crm/push/+".into()],
    )
    .await;
    for user in &users {
        service
            .publish(
                &format!("axion/crm/push/{user}/send"),
                json!({"id": format!("to-{user}"), "title": "To many"}).to_string(),
            )
            .await;
    }

    push.wait_for(PUSHES / 4, Duration::from_secs(60)).await;
    // Every send recorded first (its event follows its transaction): a
    // command the broker handed to the daemon about to die, and that it
    // had not recorded, waits for that daemon's session on Mosquitto,
    // which gives no member's messages to the rest of its group (README,
    // "Scaled out").
    for user in &users {
        let topic = format!("axion/crm/push/{user}");
        service
            .wait_for(0, &format!("the event of to-{user}"), WAIT, |m| {
                m.topic == topic
            })
            .await;
    }
    let victim = daemons.remove(0);
    victim.signal("-KILL");
    let killed_at = Instant::now();
    assert!(!victim.wait().success());
    let before_kill = push.received_count();
    assert!(before_kill < PUSHES, "the kill came after the last push");

    for user in &users {
        let id = format!("to-{user}");
        let report = service
            .wait_for(
                0,
                &format!("the final report of {id}"),
                Duration::from_secs(90),
                |m| {
                    m.topic.ends_with("/result")
                        && m.json()["id"] == id.as_str()
                        && m.json()["queued"] == 0
                },
            )
            .await
            .json();
        assert_eq!(report["delivered"], PER_USER, "{report}");
    }
    let finished = killed_at.elapsed();
    let seen = per_browser(&push);
    assert_eq!(seen.len(), PUSHES, "every subscription received its push");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{} with three daemons: killed one after {before_kill} of {PUSHES} pushes; everything delivered and reported {finished:?} after the kill; {duplicates} pushes sent twice (bound: {CONCURRENCY})",
        db.backend.name()
    );
    assert!(
        duplicates <= CONCURRENCY,
        "{duplicates} duplicates: more than the killed daemon's requests in flight"
    );
    assert!(
        finished <= Duration::from_secs(45),
        "the others took {finished:?} after the kill (lease: {:?})",
        axion_push::store::LEASE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a server database: AXION_PUSH_TEST_DATABASE=postgres://… (or mysql://…) cargo test --test scale_out -- --ignored"]
async fn a_database_outage_in_the_middle_of_a_fan_out_loses_nothing() {
    const SUBSCRIPTIONS: usize = 2_000;
    let h = Harness::start_with(|c| c.settings.delivery.concurrency = CONCURRENCY).await;
    assert_ne!(
        h.database.backend,
        Backend::Sqlite,
        "this test needs a server database: set AXION_PUSH_TEST_DATABASE to a mysql:// or postgres:// server"
    );
    seed(
        &h.database,
        &h.push,
        &["many".to_owned()],
        SUBSCRIPTIONS,
        Duration::from_millis(20),
    )
    .await;
    let from = h.mqtt.count();
    h.mqtt
        .publish(
            "axion/crm/push/many/send",
            json!({"id": "fan-out", "title": "T"}).to_string(),
        )
        .await;
    h.push.wait_for(SUBSCRIPTIONS / 4, WAIT).await;
    // Every connection to the database is closed, and new ones refused.
    let outage = h.database.outage().await;
    h.mqtt
        .wait_for(from, "the status saying the database is away", WAIT, |m| {
            m.topic == "axion/push/daemon/status" && m.json()["database"] == "unavailable"
        })
        .await;
    let during = h.mqtt.count();
    outage.end().await;
    h.mqtt
        .wait_for(
            during,
            "the status saying the database is back",
            WAIT,
            |m| m.topic == "axion/push/daemon/status" && m.json()["database"] == "ok",
        )
        .await;
    let report = h
        .mqtt
        .wait_for(from, "the final report", Duration::from_secs(60), |m| {
            m.topic == "axion/crm/push/many/result"
                && m.json()["id"] == "fan-out"
                && m.json()["queued"] == 0
        })
        .await
        .json();
    assert_eq!(report["delivered"], SUBSCRIPTIONS, "{report}");
    let seen = per_browser(&h.push);
    assert_eq!(
        seen.len(),
        SUBSCRIPTIONS,
        "every subscription received its push"
    );
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{}: database cut off mid fan-out; {duplicates} pushes sent twice (bound: {CONCURRENCY})",
        h.database.backend.name()
    );
    assert!(duplicates <= CONCURRENCY, "{duplicates} duplicates");
    h.stop().await;
}

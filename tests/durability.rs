//! Delivery that loses nothing: a send is in the database before it is
//! acknowledged, so a daemon killed mid-fan-out finishes it when it comes
//! back; a broker restart loses no command published at QoS 1; a database
//! outage holds commands (unacknowledged) until it ends.

mod harness;
#[path = "harness/process.rs"]
mod process;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use harness::database::{AxionRow, TestDatabase};
use harness::mosquitto::Mosquitto;
use harness::{Harness, PushService, TestClient, WAIT};
use process::Serve;
use serde_json::json;

/// Writes `n` subscriptions of `user` straight into the migrated
/// database, as years of browsers subscribing would have.
async fn seed_subscriptions(
    db: &TestDatabase,
    push: &PushService,
    user: &str,
    n: usize,
) -> Vec<harness::Browser> {
    let store = axion_push::store::Store::open(&db.settings())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    let browsers: Vec<_> = (0..n)
        .map(|i| push.browser(&format!("{user}-{i}")))
        .collect();
    let rows: Vec<AxionRow> = browsers
        .iter()
        .map(|b| AxionRow {
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

/// A daemon on a Mosquitto of the test's own that persists sessions, with
/// alice's browser subscribed, and a service whose session the broker keeps
/// (its unacknowledged publishes go again after a restart, and what is
/// published for it while it is away waits for it), subscribed to `filter`.
async fn on_a_persistent_broker(
    filter: &str,
) -> (Mosquitto, Harness, harness::Browser, TestClient) {
    let broker = Mosquitto::start(true).await;
    let url = broker.url();
    let h = Harness::start_with(|c| {
        c.settings.mqtt.url = Some(url.parse().unwrap());
        c.settings.mqtt.keep_alive = Duration::from_secs(5);
    })
    .await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let service = TestClient::connect_persistent(
        "127.0.0.1",
        broker.addr.port(),
        &format!("service-{}", uuid::Uuid::new_v4()),
        &[filter.into()],
    )
    .await;
    (broker, h, b, service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_fan_out_delivers_to_every_subscription_after_restart() {
    const SUBSCRIPTIONS: usize = 5_000;
    const CONCURRENCY: usize = 64;
    harness::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await;
    let push = PushService::start().await;
    let browsers = seed_subscriptions(&db, &push, "many", SUBSCRIPTIONS).await;
    // Every answer takes a little while, so the kill lands mid-fan-out.
    for b in &browsers {
        push.script(b, [harness::Reply::slow(201, Duration::from_millis(20))]);
    }
    let (config, port) = process::write_config_on(
        &db.url,
        dir.path(),
        &push,
        "",
        &format!("    concurrency: {CONCURRENCY}\n"),
        "",
    );
    let serve = Serve::start(&config);
    serve.wait_ready();
    let mqtt = TestClient::connect("127.0.0.1", port, &["axion/#".into()]).await;
    mqtt.publish(
        "axion/crm/push/many/send",
        json!({"id": "fan-out", "title": "To everyone"}).to_string(),
    )
    .await;

    push.wait_for(SUBSCRIPTIONS / 5, Duration::from_secs(60))
        .await;
    serve.signal("-KILL");
    let status = serve.wait();
    assert!(!status.success(), "killed: {status:?}");
    let before_restart = push.received_count();
    assert!(
        before_restart < SUBSCRIPTIONS,
        "the kill came after the fan-out finished ({before_restart} requests)"
    );

    // The embedded broker died with the daemon; the client reconnects to
    // the new one and subscribes again (its retained status says so).
    let from = mqtt.count();
    // What the killed run had claimed comes due again when its lease runs
    // out; the rest is due at once.
    let _serve = Serve::start(&config);
    mqtt.wait_for(from, "the daemon online again", WAIT, |m| {
        m.topic == "axion/push/daemon/status" && m.json()["state"] == "online"
    })
    .await;
    let result = mqtt
        .wait_for(
            from,
            "the send's final result",
            Duration::from_secs(120),
            |m| {
                m.topic == "axion/crm/push/many/result"
                    && m.json()["id"] == "fan-out"
                    && m.json()["queued"] == 0
            },
        )
        .await
        .json();
    assert_eq!(result["delivered"], SUBSCRIPTIONS, "{result}");

    let received = push.received();
    let mut per_browser: HashMap<&str, usize> = HashMap::new();
    for r in &received {
        assert!(r.payload.is_ok(), "every push decrypts: {r:?}");
        assert_eq!(r.answered, 201);
        *per_browser.entry(r.browser.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_browser.len(),
        SUBSCRIPTIONS,
        "every subscription received it"
    );
    let duplicates = received.len() - SUBSCRIPTIONS;
    eprintln!(
        "kill -9 after {before_restart} of {SUBSCRIPTIONS} requests: {duplicates} sent twice (bound: concurrency {CONCURRENCY})"
    );
    assert!(
        duplicates <= CONCURRENCY,
        "{duplicates} duplicates: more than the requests that can be in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_no_command_published_at_qos_1() {
    const COMMANDS: usize = 60;
    let (mut broker, h, b, service) = on_a_persistent_broker("axion/crm/push/alice/result").await;
    let publisher = {
        let service = service.clone();
        tokio::spawn(async move {
            for i in 0..COMMANDS {
                service
                    .publish(
                        "axion/crm/push/alice/send",
                        json!({"id": format!("stream-{i}"), "title": format!("n{i}")}).to_string(),
                    )
                    .await;
                // A steady stream, so the restart falls in its middle.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    h.push.wait_for(COMMANDS / 3, WAIT).await;
    broker.restart().await;
    publisher.await.unwrap();

    let mut reported = HashSet::new();
    for i in 0..COMMANDS {
        let id = format!("stream-{i}");
        let r = service
            .wait_for(
                0,
                &format!("the result of {id}"),
                Duration::from_secs(60),
                |m| m.json()["id"] == id.as_str(),
            )
            .await
            .json();
        assert_eq!(r["ok"], true, "{r}");
        reported.insert(id);
    }
    let titles: Vec<String> = h
        .push
        .received_by(&b)
        .iter()
        .map(|r| {
            r.payload.as_ref().unwrap()["notification"]["title"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let distinct: HashSet<&String> = titles.iter().collect();
    assert_eq!(distinct.len(), COMMANDS, "every command delivered");
    assert_eq!(titles.len(), COMMANDS, "none twice: {titles:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_due_while_the_broker_is_down_is_published_when_it_returns() {
    let (mut broker, h, b, service) = on_a_persistent_broker("axion/crm/push/alice/#").await;
    h.push
        .script(&b, [harness::Reply::slow(201, Duration::from_millis(500))]);
    service
        .publish(
            "axion/crm/push/alice/send",
            json!({"id": "while-down", "title": "T"}).to_string(),
        )
        .await;
    service
        .wait_for(0, "the event", WAIT, |m| m.topic == "axion/crm/push/alice")
        .await;
    broker.stop();
    // Delivered, and its result due, while no broker runs.
    h.push.wait_for(1, WAIT).await;
    broker.resume().await;
    let r = service
        .wait_for(0, "the result", WAIT, |m| {
            m.topic == "axion/crm/push/alice/result" && m.json()["id"] == "while-down"
        })
        .await
        .json();
    assert_eq!(r["delivered"], 1, "{r}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_wait_out_a_database_outage_and_none_is_lost() {
    const COMMANDS: usize = 10;
    let h = Harness::start_with(|c| {
        c.settings.database.busy_timeout = Duration::from_millis(200);
    })
    .await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;

    let from = h.mqtt.count();
    let lock = h.database.outage().await;
    for i in 0..COMMANDS {
        h.mqtt
            .publish(
                "axion/crm/push/alice/send",
                json!({"id": format!("held-{i}"), "title": format!("n{i}")}).to_string(),
            )
            .await;
    }
    let down = h
        .mqtt
        .wait_for(from, "the status saying the database is down", WAIT, |m| {
            m.topic == "axion/push/daemon/status" && m.json()["database"] == "unavailable"
        })
        .await;
    assert_eq!(down.json()["state"], "online", "the daemon stays up");
    let released_at = h.mqtt.count();
    lock.end().await;
    h.mqtt
        .wait_for(
            released_at,
            "the status saying the database is back",
            WAIT,
            |m| m.topic == "axion/push/daemon/status" && m.json()["database"] == "ok",
        )
        .await;
    for i in 0..COMMANDS {
        let id = format!("held-{i}");
        let r = h.final_result("crm", "alice", &id).await;
        assert_eq!(r["delivered"], 1, "{r}");
    }
    let messages = h.mqtt.messages();
    let first_result = messages
        .iter()
        .position(|m| m.topic == "axion/crm/push/alice/result" && m.json()["id"] == "held-0")
        .unwrap();
    assert!(
        first_result >= released_at,
        "no command was answered while the database was locked"
    );
    assert_eq!(
        h.push.received_by(&b).len(),
        COMMANDS,
        "each delivered once"
    );
    h.stop().await;
}

/// Waits until no delivery is left in the queue of `db`.
async fn wait_until_every_delivery_settled(db: &TestDatabase) {
    let store = axion_push::store::Store::open(&db.settings())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pending = store.pending_deliveries().await.unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} deliveries still queued after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.close().await;
}

/// A service's client that keeps its session on `broker`, subscribed to
/// `filter`.
async fn service_on(broker: &Mosquitto, filter: &str) -> TestClient {
    TestClient::connect_persistent(
        "127.0.0.1",
        broker.addr.port(),
        &format!("service-{}", uuid::Uuid::new_v4()),
        &[filter.into()],
    )
    .await
}

/// Subscribes `user`'s browser through the broker and waits for the answer.
async fn subscribe_through(service: &TestClient, user: &str, browser: &harness::Browser) {
    let from = service.count();
    service
        .publish(
            &format!("axion/crm/push/{user}/subscribe"),
            browser.subscription().to_string(),
        )
        .await;
    let r = service
        .wait_for(from, "the subscribe result", WAIT, |m| {
            m.topic == format!("axion/crm/push/{user}/result")
        })
        .await
        .json();
    assert_eq!(r["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_due_while_the_broker_is_away_are_published_after_a_kill_and_restart() {
    const SENDS: usize = 3;
    harness::init_logging();
    let mut broker = Mosquitto::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await;
    let push = PushService::start().await;
    let (config, _) = process::write_config_on(
        &db.url,
        dir.path(),
        &push,
        &format!("    url: {}", broker.url()),
        "",
        "",
    );
    let service = service_on(&broker, "axion/crm/push/+/result").await;
    let serve = Serve::start(&config);
    serve.wait_ready();
    for i in 0..SENDS {
        let b = push.browser(&format!("b{i}"));
        // Slow answers: the broker goes away while the pushes are out.
        push.script(&b, [harness::Reply::slow(201, Duration::from_millis(500))]);
        subscribe_through(&service, &format!("u{i}"), &b).await;
    }
    for i in 0..SENDS {
        service
            .publish(
                &format!("axion/crm/push/u{i}/send"),
                json!({"id": format!("away-{i}"), "title": "T"}).to_string(),
            )
            .await;
    }
    push.wait_for(SENDS, WAIT).await;
    broker.stop();
    // Every send finishes, and its report is due, while no broker runs.
    wait_until_every_delivery_settled(&db).await;
    serve.signal("-KILL");
    serve.wait();

    broker.resume().await;
    let _serve = Serve::start(&config);
    for i in 0..SENDS {
        let id = format!("away-{i}");
        let r = service
            .wait_for(0, &format!("the final result of {id}"), WAIT, |m| {
                m.json()["id"] == id.as_str() && m.json()["queued"] == 0
            })
            .await
            .json();
        assert_eq!(r["delivered"], 1, "{r}");
    }
    assert_eq!(push.received_count(), SENDS, "nothing was pushed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_broker_never_took_is_published_after_a_kill_and_restart() {
    harness::init_logging();
    let broker = Mosquitto::start(false).await;
    let proxy = harness::proxy::Proxy::start(broker.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await;
    let push = PushService::start().await;
    let (config, _) = process::write_config_on(
        &db.url,
        dir.path(),
        &push,
        &format!("    url: mqtt://{}", proxy.addr),
        "",
        "",
    );
    let service = service_on(&broker, "axion/crm/push/alice").await;
    let serve = Serve::start(&config);
    serve.wait_ready();
    let b = push.browser("b");
    let subscriber = TestClient::connect(
        "127.0.0.1",
        broker.addr.port(),
        &["axion/crm/push/alice/result".into()],
    )
    .await;
    subscribe_through(&subscriber, "alice", &b).await;

    // The daemon receives the send, records it and pushes; nothing it sends
    // back — the event, the command's ack — reaches the broker.
    proxy.hold_what_clients_send();
    service
        .publish(
            "axion/crm/push/alice/send",
            json!({"id": "held", "title": "Held"}).to_string(),
        )
        .await;
    push.wait_for(1, WAIT).await;
    serve.signal("-KILL");
    serve.wait();

    let _serve = Serve::start(&config);
    let event = service
        .wait_for(0, "the real-time event", WAIT, |m| {
            m.topic == "axion/crm/push/alice"
        })
        .await
        .json();
    assert_eq!(event["id"], "held", "{event}");
    assert_eq!(event["title"], "Held", "{event}");
}

/// With several daemons on one database, one that dies with a send's
/// event and final report handed to its broker, not acknowledged, may never
/// start again: a daemon still running publishes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_dead_daemon_handed_and_no_broker_took_is_published_by_one_still_running() {
    use axion_push::model::{Package, User};
    use axion_push::store::{Enqueued, NewSend, Recipients, Settled, Settlement, Store};
    let h = Harness::start().await;
    let b = h.browser("b");
    h.subscribe("crm", "alice", &b).await;
    let from = h.mqtt.count();

    // The other daemon, on the same database: an hour ago it recorded a
    // send to alice and handed its event to its broker, then sent the push
    // and handed the final report; the broker took neither, and the daemon
    // died.
    let dead = "dead-daemon/0123456789ab";
    let store = Store::open(&h.database.settings()).await.unwrap();
    let (crm, alice) = (
        Package::parse("crm").unwrap(),
        User::parse("alice").unwrap(),
    );
    let long_ago = axion_push::clock::now_ms() - 3_600_000;
    let send = NewSend {
        package: &crm,
        id: "orphan",
        target: "alice",
        recipients: Recipients::User(&alice),
        members: None,
        accepted_ms: long_ago,
        payload: b"{}",
        ttl: 86_400,
        urgency: "normal",
        topic: None,
        duplicate_after_ms: long_ago - 60_000,
        digest: None,
        redelivered: false,
        event: br#"{"id":"orphan","title":"Finished elsewhere"}"#,
    };
    assert_eq!(
        store.enqueue(&send, dead).await.unwrap(),
        Enqueued::New { subscriptions: 1 }
    );
    let claimed = store.claim(dead, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "held for the daemon that recorded it");
    let settled: Vec<Settlement> = claimed
        .into_iter()
        .map(|claimed| Settlement {
            claimed,
            settled: Settled::Delivered,
        })
        .collect();
    store.settle(dead, &settled, long_ago).await.unwrap();
    store.close().await;

    // Within a lease and two looks, as a dead daemon's deliveries are.
    let within = axion_push::store::LEASE + 2 * axion_push::store::RENEW_EVERY + WAIT;
    let event = h
        .mqtt
        .wait_for(from, "the orphaned event", within, |m| {
            m.topic == "axion/crm/push/alice"
        })
        .await
        .json();
    assert_eq!(event["id"], "orphan", "{event}");
    let report = h
        .mqtt
        .wait_for(from, "the orphaned final report", within, |m| {
            m.topic == "axion/crm/push/alice/result" && m.json()["id"] == "orphan"
        })
        .await
        .json();
    assert_eq!(report["delivered"], 1, "{report}");
    assert_eq!(report["queued"], 0, "{report}");
    assert!(h.push.received_by(&b).is_empty(), "nothing pushed again");
    h.stop().await;
}

/// `GET /metrics` from the endpoint at `addr`: the exposition text.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// The peak resident memory of process `pid`, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos_0_flood_during_a_database_outage_stays_within_bounded_memory_and_loses_no_qos_1_command()
 {
    const FLOOD: usize = 200_000;
    /// What the daemon takes in of QoS 0 commands it cannot handle yet.
    const BACKLOG: usize = 10_000;
    const SUBSCRIBES: usize = 20;
    /// The daemon's peak resident memory: about 20 MB at rest in a test
    /// build; holding the whole flood took it past 80 MB.
    const PEAK_RSS_KIB: u64 = 48 * 1024;
    harness::init_logging();
    let broker = Mosquitto::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await;
    let push = PushService::start().await;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // SQLite fails a write after busy_timeout; a server's outage cuts the
    // daemon's connections.
    let busy = match db.backend {
        axion_push::store::Backend::Sqlite => "    busy_timeout: 200ms\n",
        _ => "",
    };
    let (config, _) = process::write_config_on(
        &db.url,
        dir.path(),
        &push,
        &format!("    url: {}", broker.url()),
        "",
        &format!("{busy}  metrics:\n    listen: {metrics}"),
    );
    let serve = Serve::start(&config);
    serve.wait_ready();
    let service = TestClient::connect(
        "127.0.0.1",
        broker.addr.port(),
        &["axion/crm/push/+/result".into()],
    )
    .await;
    let lock = db.outage().await;

    let mut options = rumqttc::MqttOptions::new("flood", "127.0.0.1", broker.addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (flooder, mut flood_loop) = rumqttc::AsyncClient::new(options, 10_000);
    tokio::spawn(async move { while flood_loop.poll().await.is_ok() {} });
    let browsers: Vec<_> = (0..SUBSCRIBES)
        .map(|i| push.browser(&format!("q{i}")))
        .collect();
    for i in 0..FLOOD {
        flooder
            .publish(
                format!("axion/crm/push/nobody-{}/send", i % 100),
                rumqttc::QoS::AtMostOnce,
                false,
                br#"{"title":"flood"}"#.to_vec(),
            )
            .await
            .unwrap();
        if i % (FLOOD / SUBSCRIBES) == 0 {
            let k = i / (FLOOD / SUBSCRIBES);
            service
                .publish(
                    &format!("axion/crm/push/q{k}/subscribe"),
                    browsers[k].subscription().to_string(),
                )
                .await;
        }
    }
    // Everything beyond the backlog is dropped, and counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let dropped = loop {
        let text = scrape(metrics).await;
        let dropped: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("axion_push_commands_dropped_total "))
            .map_or(0, |n| n.trim().parse().unwrap());
        if dropped >= FLOOD - BACKLOG {
            break dropped;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{dropped} QoS 0 commands dropped after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let peak = peak_rss_kib(serve.child.id());
    eprintln!("{dropped} of {FLOOD} QoS 0 sends dropped; peak RSS {peak} KiB");
    assert!(
        peak < PEAK_RSS_KIB,
        "peak RSS {peak} KiB, bound {PEAK_RSS_KIB} KiB"
    );

    lock.end().await;
    for k in 0..SUBSCRIBES {
        let topic = format!("axion/crm/push/q{k}/result");
        let r = service
            .wait_for(
                0,
                &format!("the result on {topic}"),
                Duration::from_secs(120),
                |m| m.topic == topic,
            )
            .await
            .json();
        assert_eq!(r["ok"], true, "{r}");
    }
}

//! What only MariaDB/MySQL asks of the store: Axion's table as the Python
//! module left it (CHAR padding, `Active` 'Y'/'N'/NULL, endpoints past the
//! 255 characters its key indexes) used in place and never changed by
//! migrating or sending, the prefix key, the server's case-insensitive
//! collation, and two daemons recording one send at once.
//!
//! These run on the server `AXION_PUSH_TEST_DATABASE` names, which must be
//! a `mysql://` or `mariadb://` URL; `.ci/run` runs them in its MariaDB step.

mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use axion_push::model::{Endpoint, Group, Package, Subscription, SubscriptionKeys, User};
use axion_push::notification::Urgency;
use axion_push::store::{
    Backend, Enqueued, MembersChange, NewSend, Recipients, Settled, Settlement, Store,
};
use harness::database::TestDatabase;
use sqlx::{Connection, MySqlConnection, Row};

const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
const FIXTURE: &str = include_str!("fixtures/axion-subscription-table.mysql.sql");
const NEEDS_MARIADB: &str =
    "needs MariaDB: AXION_PUSH_TEST_DATABASE=mysql://… cargo test --test store_mysql -- --ignored";

/// A fresh database on the MariaDB/MySQL server the environment names.
async fn database() -> TestDatabase {
    let server = std::env::var("AXION_PUSH_TEST_DATABASE").unwrap_or_default();
    assert_eq!(
        Backend::of_url(&server),
        Some(Backend::MySql),
        "AXION_PUSH_TEST_DATABASE={server:?}: these tests need a mysql:// or mariadb:// server URL ({NEEDS_MARIADB})"
    );
    TestDatabase::create_on(Some(&server)).await
}

/// A connection of the test's own, to look at tables as an administrator
/// would.
async fn admin(db: &TestDatabase) -> MySqlConnection {
    let url = db.url.replacen("mariadb://", "mysql://", 1);
    MySqlConnection::connect(&url).await.unwrap()
}

async fn store(db: &TestDatabase) -> Store {
    let store = Store::open(&db.settings()).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn package(name: &str) -> Package {
    Package::parse(name).unwrap()
}

fn user(name: &str) -> User {
    User::parse(name).unwrap()
}

fn subscription(endpoint: &str) -> Subscription {
    Subscription {
        endpoint: Endpoint::parse(endpoint).unwrap(),
        keys: SubscriptionKeys::parse(P256DH, AUTH).unwrap(),
        user_agent: None,
        module: None,
    }
}

fn send<'a>(id: &'a str, to: &'a User, package: &'a Package) -> NewSend<'a> {
    let now = axion_push::clock::now_ms();
    NewSend {
        package,
        id,
        target: to.as_str(),
        recipients: Recipients::User(to),
        members: None,
        accepted_ms: now,
        payload: b"{}",
        ttl: 60,
        urgency: Urgency::Normal.as_header(),
        topic: None,
        duplicate_after_ms: now - 60_000,
        digest: None,
        redelivered: false,
        event: b"{}",
    }
}

async fn enqueue(store: &Store, id: &str, to: &User, package: &Package, owner: &str) -> u64 {
    match store.enqueue(&send(id, to, package), owner).await.unwrap() {
        Enqueued::New { subscriptions } => subscriptions,
        other => panic!("{id} was not recorded: {other:?}"),
    }
}

/// Axion's table as `SHOW CREATE TABLE` prints it.
async fn definition(conn: &mut MySqlConnection) -> String {
    sqlx::query("SHOW CREATE TABLE def_notify_push_subscription")
        .fetch_one(conn)
        .await
        .unwrap()
        .get(1)
}

async fn checksum(conn: &mut MySqlConnection) -> i64 {
    sqlx::query("CHECKSUM TABLE def_notify_push_subscription EXTENDED")
        .fetch_one(conn)
        .await
        .unwrap()
        .get(1)
}

/// A row of Axion's table, every column as text, as the server returns it.
type Row9 = [Option<String>; 9];

async fn rows(conn: &mut MySqlConnection) -> Vec<Row9> {
    sqlx::query(
        "SELECT User, Package, Module, Endpoint, KeysP256dh, KeysAuth, UserAgent, \
         CAST(CreatedAt AS CHAR), Active FROM def_notify_push_subscription \
         ORDER BY User, Package, Endpoint",
    )
    .fetch_all(conn)
    .await
    .unwrap()
    .iter()
    .map(|r| std::array::from_fn(|i| r.get(i)))
    .collect()
}

#[tokio::test]
#[ignore = "needs MariaDB: AXION_PUSH_TEST_DATABASE=mysql://… cargo test --test store_mysql -- --ignored"]
async fn axion_table_as_the_python_module_left_it_is_sent_to_and_never_changed() {
    let db = database().await;
    db.execute(FIXTURE).await;
    let mut conn = admin(&db).await;
    let (definition_before, checksum_before, rows_before) = (
        definition(&mut conn).await,
        checksum(&mut conn).await,
        rows(&mut conn).await,
    );
    assert!(
        rows_before
            .iter()
            .any(|r| r[3].as_ref().unwrap().chars().count() > 255),
        "the fixture holds endpoints past the key's 255 characters"
    );

    let store = store(&db).await;
    let info = store.info().await.unwrap();
    assert_eq!(info.axion_table_missing_columns, Some(Vec::new()));
    assert!(info.skip_locked, "MariaDB 10.6+ / MySQL 8: {info:?}");
    // A send to each user with rows in `crm`: alice has 'Y' and 'N' rows,
    // bob one with `Active` NULL.
    let crm = package("crm");
    let mut sent_to = BTreeSet::new();
    for (n, name) in ["alice", "bob"].into_iter().enumerate() {
        enqueue(&store, &format!("n-{n}"), &user(name), &crm, "a").await;
        let claimed = store.claim("a", 100).await.unwrap();
        let batch: Vec<Settlement> = claimed
            .iter()
            .map(|c| Settlement {
                claimed: c.clone(),
                settled: Settled::Delivered,
            })
            .collect();
        store.settle("a", &batch, 1).await.unwrap();
        sent_to.extend(claimed.into_iter().map(|c| (c.user, c.endpoint, c.p256dh)));
    }
    let expected: BTreeSet<_> = rows_before
        .iter()
        .filter(|r| r[1].as_deref() == Some("crm"))
        .filter(|r| matches!(r[8].as_deref(), Some("Y") | None))
        .map(|r| (r[0].clone().unwrap(), r[3].clone().unwrap(), r[4].clone()))
        .collect();
    assert_eq!(expected.len(), 3, "the fixture's active crm rows");
    assert_eq!(sent_to, expected, "exactly the active and NULL-Active rows");

    assert_eq!(definition(&mut conn).await, definition_before);
    assert_eq!(checksum(&mut conn).await, checksum_before);
    assert_eq!(rows(&mut conn).await, rows_before);
    store.close().await;
}

#[tokio::test]
#[ignore = "needs MariaDB: AXION_PUSH_TEST_DATABASE=mysql://… cargo test --test store_mysql -- --ignored"]
async fn a_new_endpoint_sharing_the_first_255_characters_replaces_the_old_row() {
    let db = database().await;
    let store = store(&db).await;
    let (crm, alice, bob) = (package("crm"), user("alice"), user("bob"));
    let prefix = format!(
        "https://updates.push.services.mozilla.com/wpush/v2/{}",
        "g".repeat(255)
    );
    let (old, new) = (format!("{prefix}-old"), format!("{prefix}-new"));
    store
        .upsert_subscription(&crm, &alice, &subscription(&old), 50)
        .await
        .unwrap();
    store
        .upsert_subscription(&crm, &bob, &subscription(&old), 50)
        .await
        .unwrap();
    let s = store
        .upsert_subscription(&crm, &alice, &subscription(&new), 50)
        .await
        .unwrap();
    assert_eq!((s.active, s.evicted), (1, 0), "{s:?}");
    let rows = store.subscriptions(&alice, Some(&crm)).await.unwrap();
    let endpoints: Vec<_> = rows
        .iter()
        .map(|r| (r.endpoint.as_str(), r.active))
        .collect();
    assert_eq!(endpoints, [(new.as_str(), true)]);
    assert!(!store.deactivate(&crm, &alice, &old).await.unwrap());
    assert_eq!(enqueue(&store, "n-1", &alice, &crm, "a").await, 1);
    assert_eq!(store.claim("a", 10).await.unwrap()[0].endpoint, new);
    // bob's row for the old endpoint was taken by alice's first subscribe
    // and is still there, deactivated, whole.
    let bob_rows = store.subscriptions(&bob, None).await.unwrap();
    assert_eq!(bob_rows.len(), 1);
    assert_eq!(bob_rows[0].endpoint, old);
    store.close().await;
}

#[tokio::test]
#[ignore = "needs MariaDB: AXION_PUSH_TEST_DATABASE=mysql://… cargo test --test store_mysql -- --ignored"]
async fn names_and_ids_that_differ_only_in_case_are_different() {
    let db = database().await;
    let store = store(&db).await;
    let crm = package("crm");
    let endpoint = |n: u32| format!("https://fcm.googleapis.com/fcm/send/device-{n}");
    for (n, name) in ["alice", "Alice"].into_iter().enumerate() {
        store
            .upsert_subscription(&crm, &user(name), &subscription(&endpoint(n as u32)), 1)
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .subscriptions(&user("alice"), None)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(enqueue(&store, "n-1", &user("Alice"), &crm, "a").await, 1);
    assert_eq!(
        store.claim("a", 10).await.unwrap()[0].endpoint,
        endpoint(1),
        "Alice's only"
    );
    // Another id, although the server's default collation says it is equal.
    assert_eq!(enqueue(&store, "N-1", &user("alice"), &crm, "a").await, 1);

    let (ops, ops_upper) = (Group::parse("ops").unwrap(), Group::parse("Ops").unwrap());
    for (group, name) in [(&ops, "alice"), (&ops, "Alice"), (&ops_upper, "bob")] {
        store
            .change_members(
                &crm,
                group,
                &MembersChange::Edit {
                    add: vec![user(name)],
                    remove: vec![],
                },
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.members(&crm, &ops).await.unwrap(),
        [user("Alice"), user("alice")]
    );
    assert_eq!(
        store.members(&crm, &ops_upper).await.unwrap(),
        [user("bob")]
    );
    store.close().await;
}

#[tokio::test]
#[ignore = "needs MariaDB: AXION_PUSH_TEST_DATABASE=mysql://… cargo test --test store_mysql -- --ignored"]
async fn one_users_endpoints_that_differ_only_in_case_share_axions_key() {
    let db = database().await;
    let store = store(&db).await;
    let (crm, alice) = (package("crm"), user("alice"));
    let lower = "https://fcm.googleapis.com/fcm/send/abc";
    let upper = "https://fcm.googleapis.com/fcm/send/ABC";
    store
        .upsert_subscription(&crm, &alice, &subscription(lower), 50)
        .await
        .unwrap();
    let s = store
        .upsert_subscription(&crm, &alice, &subscription(upper), 50)
        .await
        .unwrap();
    assert_eq!(s.active, 1, "the key allows one of them: the newer");
    let rows = store.subscriptions(&alice, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].endpoint, upper);
    assert!(!store.deactivate(&crm, &alice, lower).await.unwrap());
    store.close().await;
}

#[tokio::test]
#[ignore = "needs MariaDB: AXION_PUSH_TEST_DATABASE=mysql://… cargo test --test store_mysql -- --ignored"]
async fn a_user_of_255_characters_subscribes_and_is_sent_to() {
    let db = database().await;
    let store = store(&db).await;
    let crm = package("crm");
    // Four bytes a character in utf8mb4: Axion's key is at its longest.
    let long = user(&"🦀".repeat(255));
    let endpoint = format!(
        "https://updates.push.services.mozilla.com/wpush/v2/{}",
        "x".repeat(400)
    );
    let s = store
        .upsert_subscription(&crm, &long, &subscription(&endpoint), 50)
        .await
        .unwrap();
    assert_eq!(s.active, 1);
    let rows = store.subscriptions(&long, Some(&crm)).await.unwrap();
    assert_eq!(rows[0].user, long.as_str());
    assert_eq!(rows[0].endpoint, endpoint);
    assert_eq!(enqueue(&store, "n-1", &long, &crm, "a").await, 1);
    let claimed = store.claim("a", 10).await.unwrap();
    assert_eq!(
        (claimed[0].user.as_str(), claimed[0].endpoint.as_str()),
        (long.as_str(), endpoint.as_str())
    );
    let group = Group::parse(&"g".repeat(255)).unwrap();
    store
        .change_members(&crm, &group, &MembersChange::Set(vec![long.clone()]))
        .await
        .unwrap();
    assert_eq!(store.members(&crm, &group).await.unwrap(), [long]);
    store.close().await;
}

/// Waits until the store runs a statement on the command's key (removing
/// an old command of that id, or inserting its own): neither can end while
/// another transaction holds the key. (The process list, not `innodb_trx`,
/// whose cache is refreshed only when left unread for a while.)
async fn the_command_key_is_waited_for(conn: &mut MySqlConnection) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.processlist \
             WHERE DB = DATABASE() AND (INFO LIKE 'INSERT INTO axion_push_command %' \
                 OR INFO LIKE 'DELETE FROM axion_push_command %')",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if running > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never ran a statement on the command's key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MariaDB: AXION_PUSH_TEST_DATABASE=mysql://… cargo test --test store_mysql -- --ignored"]
async fn a_send_recorded_by_another_daemon_at_the_same_moment_is_a_duplicate() {
    let db = database().await;
    let store = store(&db).await;
    let (crm, alice) = (package("crm"), user("alice"));
    store
        .upsert_subscription(
            &crm,
            &alice,
            &subscription("https://fcm.googleapis.com/fcm/send/a"),
            50,
        )
        .await
        .unwrap();
    // Another daemon has inserted the command and not committed yet.
    let mut other = admin(&db).await;
    let mut other_tx = other.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO axion_push_command \
         (Package, Id, Target, AcceptedAt, ExpiresAt, Payload, Ttl, Urgency) \
         VALUES ('crm', 'n-1', 'alice', ?, ?, '', 60, 'normal')",
    )
    .bind(axion_push::clock::now_ms() as i64)
    .bind(axion_push::clock::now_ms() as i64 + 60_000)
    .execute(&mut *other_tx)
    .await
    .unwrap();
    let recording = tokio::spawn({
        let store = store.clone();
        async move {
            let (crm, alice) = (package("crm"), user("alice"));
            store.enqueue(&send("n-1", &alice, &crm), "b").await
        }
    });
    let mut watcher = admin(&db).await;
    the_command_key_is_waited_for(&mut watcher).await;
    other_tx.commit().await.unwrap();
    let recorded = recording.await.unwrap();
    assert!(
        matches!(recorded, Ok(Enqueued::Duplicate { .. })),
        "{recorded:?}"
    );

    // And two daemons racing over many ids: one command each, one duplicate.
    let other = Store::open(&db.settings()).await.unwrap();
    let ids: Vec<String> = (0..40).map(|n| format!("race-{n}")).collect();
    let record_all = |store: Store, ids: Vec<String>| async move {
        let (crm, alice) = (package("crm"), user("alice"));
        let mut new = 0;
        for id in &ids {
            if let Enqueued::New { .. } = store.enqueue(&send(id, &alice, &crm), "x").await.unwrap()
            {
                new += 1;
            }
        }
        new
    };
    let (a, b) = tokio::join!(
        tokio::spawn(record_all(store.clone(), ids.clone())),
        tokio::spawn(record_all(other.clone(), ids.clone()))
    );
    assert_eq!(a.unwrap() + b.unwrap(), ids.len());
    assert_eq!(store.pending_deliveries().await.unwrap(), ids.len() as u64);
    store.close().await;
    other.close().await;
}

#[tokio::test]
#[ignore = "needs MariaDB: AXION_PUSH_TEST_DATABASE=mysql://… cargo test --test store_mysql -- --ignored"]
async fn a_mariadb_url_opens_the_same_database() {
    let db = database().await;
    let mut settings = db.settings();
    settings.url = settings.url.replacen("mysql://", "mariadb://", 1);
    let store = Store::open(&settings).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.backend(), Backend::MySql);
    store.close().await;
}

/// Statements the server has closed since it started, on every connection.
async fn statements_closed(conn: &mut MySqlConnection) -> i64 {
    let value: String = sqlx::query("SHOW GLOBAL STATUS LIKE 'Com_stmt_close'")
        .fetch_one(conn)
        .await
        .unwrap()
        .get(1);
    value.parse().unwrap()
}

/// sqlx 0.9.0 leaves Nagle's algorithm on, and closes a statement with a
/// packet the server does not answer: the statement after it waited 40 ms
/// for the server's delayed ACK, several times in every settle. The queue
/// keeps its statements prepared instead, in a few shapes, whatever the
/// size of its batches. (Every test of this file runs the same store; none
/// closes a statement either.)
#[tokio::test]
#[ignore = "needs MariaDB: AXION_PUSH_TEST_DATABASE=mysql://… cargo test --test store_mysql -- --ignored"]
async fn the_queue_closes_no_statement_whatever_its_batch_sizes() {
    let db = database().await;
    let store = store(&db).await;
    let mut conn = admin(&db).await;
    let crm = package("crm");
    let users: Vec<User> = (0..40).map(|n| user(&format!("u{n}"))).collect();
    for (n, to) in users.iter().enumerate() {
        store
            .upsert_subscription(
                &crm,
                to,
                &subscription(&format!("https://push.example.net/s/{n}")),
                50,
            )
            .await
            .unwrap();
    }
    let before = statements_closed(&mut conn).await;
    let mut next = 0;
    for size in [2, 3, 9, 17, 40] {
        let ids: Vec<String> = (next..next + size).map(|n| format!("c{n}")).collect();
        next += size;
        let sends: Vec<NewSend> = ids
            .iter()
            .zip(&users)
            .map(|(id, to)| send(id, to, &crm))
            .collect();
        let enqueued = store.enqueue_many(&sends, "a").await.unwrap();
        assert!(
            enqueued
                .iter()
                .all(|e| *e == Enqueued::New { subscriptions: 1 })
        );
        let claimed = store.claim("a", 100).await.unwrap();
        assert_eq!(claimed.len(), size);
        let keys: Vec<(String, String)> = ids.iter().map(|id| ("crm".into(), id.clone())).collect();
        assert_eq!(store.queued_messages(&keys).await.unwrap().len(), size);
        let (delivered, retried) = claimed.split_at(size / 2);
        let mut batch: Vec<Settlement> = delivered
            .iter()
            .map(|c| Settlement {
                claimed: c.clone(),
                settled: Settled::Delivered,
            })
            .collect();
        batch.extend(retried.iter().map(|c| Settlement {
            claimed: c.clone(),
            settled: Settled::Retry {
                after: Duration::from_secs(3600),
                cause: "503".into(),
            },
        }));
        let due = store.settle("a", &batch, 1).await.unwrap();
        let published: Vec<axion_push::store::Published> = due
            .iter()
            .map(|d| axion_push::store::Published::Report {
                package: d.package.clone(),
                id: d.id.clone(),
                is_final: d.pending == 0,
            })
            .chain(ids.iter().map(|id| axion_push::store::Published::Event {
                package: "crm".into(),
                id: id.clone(),
            }))
            .collect();
        store.mark_published(&published).await.unwrap();
    }
    assert_eq!(statements_closed(&mut conn).await - before, 0);
    store.close().await;
}

//! What only the PostgreSQL backend has to get right: `User` quoted in every
//! statement (unquoted it is `current_user`), an Axion table another tool
//! created used as it is, claims that skip locked rows, and the server's
//! own temporary errors.
//!
//! These tests need the server `AXION_PUSH_TEST_DATABASE` names, and fail
//! when it is not a `postgres://` URL; `.ci/run` runs them in its
//! PostgreSQL step:
//! `AXION_PUSH_TEST_DATABASE=postgres://postgres@127.0.0.1:5432 cargo test --test store_postgres -- --ignored`

mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use axion_push::model::{Endpoint, Group, Package, Subscription, SubscriptionKeys, User};
use axion_push::store::{
    Backend, Enqueued, MembersChange, NewSend, Recipients, Settled, Settlement, Store,
};
use harness::database::{AxionRow, TestDatabase};
use sqlx::{Connection, PgConnection};

const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// Long enough for anything these tests wait for; a claim that waits for a
/// locked row instead of skipping it waits forever.
const WAIT: Duration = Duration::from_secs(15);

/// The PostgreSQL server the tests run on.
fn server() -> String {
    let spec = harness::database::test_database_spec().unwrap_or_default();
    assert!(
        Backend::of_url(&spec) == Some(Backend::Postgres),
        "these tests need PostgreSQL: AXION_PUSH_TEST_DATABASE=postgres://… (now {spec:?})"
    );
    spec
}

async fn database() -> TestDatabase {
    TestDatabase::create_on(Some(&server())).await
}

async fn store(db: &TestDatabase) -> Store {
    let store = Store::open(&db.settings()).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// A connection of the test's own, as another client of the server.
async fn connect(db: &TestDatabase) -> PgConnection {
    PgConnection::connect(&db.direct_url).await.unwrap()
}

fn package() -> Package {
    Package::parse("crm").unwrap()
}

fn user(name: &str) -> User {
    User::parse(name).unwrap()
}

fn endpoint(n: usize) -> String {
    format!("https://fcm.googleapis.com/fcm/send/device-{n}")
}

fn subscription(endpoint: &str) -> Subscription {
    Subscription {
        endpoint: Endpoint::parse(endpoint).unwrap(),
        keys: SubscriptionKeys::parse(P256DH, AUTH).unwrap(),
        user_agent: None,
        module: None,
    }
}

fn send<'a>(
    id: &'a str,
    recipients: Recipients<'a>,
    target: &'a str,
    p: &'a Package,
) -> NewSend<'a> {
    let now = axion_push::clock::now_ms();
    NewSend {
        package: p,
        id,
        target,
        recipients,
        members: None,
        accepted_ms: now,
        payload: b"{}",
        ttl: 60,
        urgency: "normal",
        topic: None,
        duplicate_after_ms: now - 60_000,
        digest: None,
        redelivered: false,
        event: b"{}",
    }
}

async fn enqueue(store: &Store, id: &str, to: &User) -> u64 {
    let p = package();
    match store
        .enqueue(&send(id, Recipients::User(to), to.as_str(), &p), "a")
        .await
        .unwrap()
    {
        Enqueued::New { subscriptions } => subscriptions,
        other => panic!("{id} was not recorded: {other:?}"),
    }
}

/// The role the daemon connects as: the URL's user, else libpq's default.
fn role() -> String {
    let url = url::Url::parse(&server()).unwrap();
    match url.username() {
        "" => std::env::var("USER").expect("a user in the URL or $USER"),
        name => name.to_owned(),
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: AXION_PUSH_TEST_DATABASE=postgres://… cargo test --test store_postgres -- --ignored"]
async fn a_user_named_like_the_connecting_role_is_kept_apart_from_the_others() {
    let db = database().await;
    let store = store(&db).await;
    let (p, alice) = (package(), user("alice"));
    let role = User::parse(&role()).expect("the role's name is a valid user name");
    store
        .upsert_subscription(&p, &role, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    store
        .upsert_subscription(&p, &alice, &subscription(&endpoint(2)), 50)
        .await
        .unwrap();

    let listed = store.subscriptions(&role, None).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.user.as_str()).collect::<Vec<_>>(),
        [role.as_str()],
        "{listed:?}"
    );
    assert_eq!(enqueue(&store, "to-role", &role).await, 1);
    let claimed = store.claim("a", 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].user.as_str(), claimed[0].endpoint.clone()),
        (role.as_str(), endpoint(1))
    );

    // One user's limit, unsubscribe and takeover leave the other alone.
    let s = store
        .upsert_subscription(&p, &role, &subscription(&endpoint(3)), 1)
        .await
        .unwrap();
    assert_eq!(
        (s.active, s.evicted, s.taken_from_others),
        (1, 1, 0),
        "{s:?}"
    );
    assert!(!store.deactivate(&p, &role, &endpoint(2)).await.unwrap());
    let s = store
        .upsert_subscription(&p, &alice, &subscription(&endpoint(3)), 50)
        .await
        .unwrap();
    assert_eq!(s.taken_from_others, 1, "the browser moves to alice");
    let alices: Vec<_> = store.subscriptions(&alice, None).await.unwrap();
    assert!(
        alices.iter().all(|s| s.active && s.user == "alice"),
        "{alices:?}"
    );
    assert_eq!(alices.len(), 2);

    let ops = Group::parse("ops").unwrap();
    store
        .change_members(
            &p,
            &ops,
            &MembersChange::Edit {
                add: vec![role.clone(), alice.clone()],
                remove: vec![],
            },
        )
        .await
        .unwrap();
    store
        .change_members(
            &p,
            &ops,
            &MembersChange::Edit {
                add: vec![],
                remove: vec![role.clone()],
            },
        )
        .await
        .unwrap();
    assert_eq!(store.members(&p, &ops).await.unwrap(), [alice]);
    store.close().await;
}

/// Axion's table as another tool created it in PostgreSQL: no index of
/// ours, a check constraint of its own.
const AXION_TABLE_BY_ANOTHER_TOOL: &str = r#"
CREATE TABLE def_notify_push_subscription (
  "User" char(255) NOT NULL, "Package" char(255) NOT NULL, "Module" char(255),
  "Endpoint" varchar(2048) NOT NULL, "KeysP256dh" varchar(512), "KeysAuth" varchar(512),
  "UserAgent" varchar(512), "CreatedAt" timestamp, "Active" char(1) DEFAULT 'Y',
  PRIMARY KEY ("User", "Package", "Endpoint"),
  CONSTRAINT active_flag CHECK ("Active" IN ('Y', 'N'))
)"#;

/// The table's columns, constraints and indexes, as text.
const DEFINITION: &str = r#"
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
  SELECT format('column %s %s %s %s %s', column_name, data_type, character_maximum_length,
                is_nullable, column_default) AS line
  FROM information_schema.columns
  WHERE table_schema = current_schema() AND table_name = 'def_notify_push_subscription'
  UNION ALL
  SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
  WHERE conrelid = 'def_notify_push_subscription'::regclass
  UNION ALL
  SELECT 'index ' || indexdef FROM pg_indexes
  WHERE schemaname = current_schema() AND tablename = 'def_notify_push_subscription'
) d"#;

/// Every row, every byte (padding included), and where each row lives: a
/// row rewritten in place with the same values moves.
const CHECKSUM: &str = r#"
SELECT md5(string_agg(ctid::text || ' ' || t::text, E'\n' ORDER BY ctid))
FROM def_notify_push_subscription t"#;

/// Axion's table's definition and a checksum of its rows.
async fn snapshot(conn: &mut PgConnection) -> (String, String) {
    let definition: String = sqlx::query_scalar(DEFINITION)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let checksum: String = sqlx::query_scalar(CHECKSUM)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    (definition, checksum)
}

#[tokio::test]
#[ignore = "needs PostgreSQL: AXION_PUSH_TEST_DATABASE=postgres://… cargo test --test store_postgres -- --ignored"]
async fn an_axion_table_another_tool_created_is_used_as_it_is() {
    let db = database().await;
    db.execute(AXION_TABLE_BY_ANOTHER_TOOL).await;
    // An endpoint past 255 characters, and a second one sharing its first
    // 255: the key is the whole endpoint.
    let long = format!(
        "https://updates.push.services.mozilla.com/wpush/v2/{}",
        "a".repeat(300)
    );
    let long_too = format!("{long}b");
    db.insert_rows(&[
        AxionRow {
            user: "alice",
            package: "crm",
            endpoint: &long,
            p256dh: Some(P256DH),
            auth: Some(AUTH),
            created_at: Some("2024-05-01 10:00:00"),
            active: Some("Y"),
            ..AxionRow::default()
        },
        AxionRow {
            user: "alice",
            package: "crm",
            module: Some("sales"),
            endpoint: &long_too,
            p256dh: Some(P256DH),
            auth: Some(AUTH),
            active: None,
            ..AxionRow::default()
        },
        AxionRow {
            user: "alice",
            package: "crm",
            endpoint: &endpoint(3),
            p256dh: Some(P256DH),
            auth: Some(AUTH),
            active: Some("N"),
            ..AxionRow::default()
        },
        AxionRow {
            user: "bob",
            package: "crm",
            endpoint: &endpoint(4),
            p256dh: Some(P256DH),
            auth: Some(AUTH),
            active: Some("Y"),
            ..AxionRow::default()
        },
    ])
    .await;
    let mut conn = connect(&db).await;
    let before = snapshot(&mut conn).await;

    let store = store(&db).await;
    let info = store.info().await.unwrap();
    assert_eq!(info.axion_table_missing_columns, Some(vec![]), "{info:?}");
    let listed = store.subscriptions(&user("alice"), None).await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|s| s.user == "alice" && s.package == "crm"),
        "char(255) padding is not part of a name: {listed:?}"
    );
    assert_eq!(enqueue(&store, "n-1", &user("alice")).await, 2);
    let claimed = store.claim("a", 10).await.unwrap();
    let endpoints: BTreeSet<_> = claimed.iter().map(|c| c.endpoint.clone()).collect();
    assert_eq!(endpoints, BTreeSet::from([long.clone(), long_too.clone()]));
    assert!(
        claimed
            .iter()
            .all(|c| c.user == "alice" && c.package == "crm")
    );
    let batch: Vec<_> = claimed
        .iter()
        .map(|c| Settlement {
            claimed: c.clone(),
            settled: Settled::Delivered,
        })
        .collect();
    let due = store.settle("a", &batch, 1).await.unwrap();
    assert_eq!((due[0].delivered, due[0].pending), (2, 0));
    store.close().await;

    let after = snapshot(&mut conn).await;
    assert_eq!(before.0, after.0, "the table's definition changed");
    assert_eq!(before.1, after.1, "the table's rows changed");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: AXION_PUSH_TEST_DATABASE=postgres://… cargo test --test store_postgres -- --ignored"]
async fn a_claim_skips_deliveries_another_transaction_holds_instead_of_waiting() {
    let db = database().await;
    let store = store(&db).await;
    let alice = user("alice");
    for n in 0..3 {
        store
            .upsert_subscription(&package(), &alice, &subscription(&endpoint(n)), 50)
            .await
            .unwrap();
    }
    enqueue(&store, "n-1", &alice).await;
    store.release("a").await.unwrap();

    let mut other = connect(&db).await;
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    let locked: i64 = sqlx::query_scalar(
        r#"SELECT "Seq" FROM axion_push_delivery ORDER BY "Seq" LIMIT 1 FOR UPDATE"#,
    )
    .fetch_one(&mut other)
    .await
    .unwrap();
    let claimed = tokio::time::timeout(WAIT, store.claim("b", 10))
        .await
        .expect("the claim waited for the locked row")
        .unwrap();
    let seqs: Vec<i64> = claimed.iter().map(|c| c.seq).collect();
    assert_eq!(seqs.len(), 2, "{seqs:?}");
    assert!(!seqs.contains(&locked), "{seqs:?} holds {locked}");

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let rest = store.claim("b", 10).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.seq).collect::<Vec<_>>(), [locked]);
    store.close().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: AXION_PUSH_TEST_DATABASE=postgres://… cargo test --test store_postgres -- --ignored"]
async fn a_lock_wait_timeout_is_temporary_and_a_missing_table_is_not() {
    let db = database().await;
    store(&db).await.close().await;
    // The server gives up waiting for a lock after 100 ms (55P03).
    let settings = axion_push::config::DatabaseSettings {
        url: format!("{}?options=-c%20lock_timeout%3D100", db.url),
        ..db.settings()
    };
    let store = Store::open(&settings).await.unwrap();
    let mut other = connect(&db).await;
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("LOCK TABLE axion_push_delivery IN ACCESS EXCLUSIVE MODE")
        .execute(&mut other)
        .await
        .unwrap();
    let error = tokio::time::timeout(WAIT, store.claim("a", 10))
        .await
        .expect("lock_timeout applies")
        .expect_err("the table is locked");
    assert!(error.is_transient(), "{error}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();

    sqlx::query("DROP TABLE axion_push_group_member")
        .execute(&mut other)
        .await
        .unwrap();
    let error = store
        .members(&package(), &Group::parse("ops").unwrap())
        .await
        .expect_err("no such table");
    assert!(!error.is_transient(), "{error}");
    store.close().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: AXION_PUSH_TEST_DATABASE=postgres://… cargo test --test store_postgres -- --ignored"]
async fn a_connection_the_administrator_terminates_mid_statement_is_temporary() {
    let db = database().await;
    let store = store(&db).await;
    let mut other = connect(&db).await;
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("LOCK TABLE axion_push_delivery IN ACCESS EXCLUSIVE MODE")
        .execute(&mut other)
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.pending_deliveries().await }
    });
    // The daemon's statement, once it waits for the lock.
    let find = r#"
        SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'axion-push'
          AND wait_event_type = 'Lock'"#;
    let mut watcher = connect(&db).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let pid: i32 = loop {
        if let Some(pid) = sqlx::query_scalar(find)
            .fetch_optional(&mut watcher)
            .await
            .unwrap()
        {
            break pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon's statement never waited for the lock"
        );
        tokio::task::yield_now().await;
    };
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut watcher)
        .await
        .unwrap();
    assert!(terminated);
    let error = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the statement ends with its connection")
        .unwrap()
        .expect_err("its connection was terminated");
    assert!(error.is_transient(), "{error}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    // The pool replaces the connection: the next statement works.
    assert_eq!(store.pending_deliveries().await.unwrap(), 0);
    store.close().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: AXION_PUSH_TEST_DATABASE=postgres://… cargo test --test store_postgres -- --ignored"]
async fn check_config_sees_the_server_and_an_axion_table_lacking_columns() {
    let db = database().await;
    // `postgresql://` is the same backend.
    let settings = axion_push::config::DatabaseSettings {
        url: db.url.replacen("postgres://", "postgresql://", 1),
        ..db.settings()
    };
    let store = Store::open(&settings).await.unwrap();
    let info = store.info().await.unwrap();
    assert_eq!(info.backend, Backend::Postgres);
    assert!(info.version.starts_with(char::is_numeric), "{info:?}");
    assert!(info.skip_locked);
    assert_eq!(info.axion_table_missing_columns, None, "no table yet");

    db.execute(
        r#"CREATE TABLE def_notify_push_subscription (
             "User" char(255) NOT NULL, "Package" char(255) NOT NULL,
             "Endpoint" varchar(2048) NOT NULL)"#,
    )
    .await;
    let info = store.info().await.unwrap();
    assert_eq!(
        info.axion_table_missing_columns,
        Some(
            [
                "Module",
                "KeysP256dh",
                "KeysAuth",
                "UserAgent",
                "CreatedAt",
                "Active"
            ]
            .map(String::from)
            .to_vec()
        )
    );
    store.close().await;
}

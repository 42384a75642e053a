//! The store's contract, on the backend `AXION_PUSH_TEST_DATABASE` names
//! (SQLite when unset; `.ci/run` runs this file again on MariaDB and on
//! PostgreSQL): every statement, NULL `Active`, exact endpoints, the queue's
//! holds, leases and settling, and two daemons claiming from one queue.

mod harness;

use std::collections::HashSet;
use std::time::Duration;

use axion_push::model::{Endpoint, Group, Package, Subscription, SubscriptionKeys, User};
use axion_push::notification::Urgency;
use axion_push::store::{
    Backend, Claimed, Enqueued, MembersChange, NewSend, Published, Recipients, Settled, Settlement,
    Store, Taken,
};
use harness::database::{AxionRow, TestDatabase};

const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

async fn store(db: &TestDatabase) -> Store {
    let store = Store::open(&db.settings()).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn package() -> Package {
    Package::parse("crm").unwrap()
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

fn endpoint(n: usize) -> String {
    format!("https://fcm.googleapis.com/fcm/send/device-{n}")
}

/// A send to `user` with id `id`, accepted now.
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
        event: b"{\"title\":\"T\"}",
    }
}

async fn enqueue(store: &Store, id: &str, to: &User, owner: &str) -> u64 {
    let p = package();
    match store.enqueue(&send(id, to, &p), owner).await.unwrap() {
        Enqueued::New { subscriptions } => subscriptions,
        other => panic!("{id} was not recorded: {other:?}"),
    }
}

fn settled(claimed: &[Claimed], as_: impl Fn(&Claimed) -> Settled) -> Vec<Settlement> {
    claimed
        .iter()
        .map(|c| Settlement {
            claimed: c.clone(),
            settled: as_(c),
        })
        .collect()
}

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    store.migrate().await.unwrap();
    let info = store.info().await.unwrap();
    assert_eq!(info.backend, db.backend);
    assert_eq!(
        info.axion_table_missing_columns,
        Some(Vec::new()),
        "{info:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn a_subscription_is_recorded_updated_and_deactivated() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice) = (package(), user("alice"));
    let s = store
        .upsert_subscription(&p, &alice, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    assert_eq!(s.active, 1);
    store
        .upsert_subscription(&p, &alice, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    let rows = store.subscriptions(&alice, Some(&p)).await.unwrap();
    assert_eq!(rows.len(), 1, "subscribing again updates the row: {rows:?}");
    assert!(rows[0].active);
    assert!(rows[0].created_at.is_some());
    assert!(store.deactivate(&p, &alice, &endpoint(1)).await.unwrap());
    assert!(!store.deactivate(&p, &alice, &endpoint(1)).await.unwrap());
    assert!(!store.subscriptions(&alice, None).await.unwrap()[0].active);
    store.close().await;
}

#[tokio::test]
async fn endpoints_that_differ_only_in_case_are_different_subscriptions() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice, bob) = (package(), user("alice"), user("bob"));
    let lower = "https://fcm.googleapis.com/fcm/send/abc";
    let upper = "https://fcm.googleapis.com/fcm/send/ABC";
    store
        .upsert_subscription(&p, &alice, &subscription(lower), 50)
        .await
        .unwrap();
    let s = store
        .upsert_subscription(&p, &bob, &subscription(upper), 50)
        .await
        .unwrap();
    assert_eq!(s.taken_from_others, 0, "another browser: alice keeps hers");
    assert!(!store.deactivate(&p, &bob, lower).await.unwrap());
    assert!(!store.deactivate(&p, &alice, upper).await.unwrap());
    assert_eq!(enqueue(&store, "n-1", &alice, "a").await, 1);
    let claimed = store.claim("a", 10).await.unwrap();
    assert_eq!(claimed[0].endpoint, lower);
    // One user holding both: Axion's key on MariaDB/MySQL compares the
    // first 255 characters of the endpoint under the table's collation,
    // usually case-insensitive, so there the second replaces the first
    // (tests/store_mysql.rs).
    if db.backend != Backend::MySql {
        let s = store
            .upsert_subscription(&p, &alice, &subscription(upper), 50)
            .await
            .unwrap();
        assert_eq!(s.active, 2);
        assert!(store.deactivate(&p, &alice, upper).await.unwrap());
        let rows = store.subscriptions(&alice, Some(&p)).await.unwrap();
        let active: Vec<_> = rows
            .iter()
            .filter(|r| r.active)
            .map(|r| r.endpoint.as_str())
            .collect();
        assert_eq!(active, [lower]);
    }
    store.close().await;
}

/// Rows older software wrote with `Active` NULL.
async fn null_active_row(db: &TestDatabase, user: &str, endpoint: &str, created_at: &str) {
    db.insert_rows(&[AxionRow {
        user,
        package: "crm",
        endpoint,
        p256dh: Some(P256DH),
        auth: Some(AUTH),
        created_at: Some(created_at),
        active: None,
        ..AxionRow::default()
    }])
    .await;
}

#[tokio::test]
async fn null_active_is_active_for_sending_listing_and_unsubscribing() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    null_active_row(&db, "alice", &endpoint(1), "2025-01-01 00:00:00").await;
    let alice = user("alice");
    assert!(store.subscriptions(&alice, None).await.unwrap()[0].active);
    assert_eq!(enqueue(&store, "n-1", &alice, "a").await, 1);
    assert!(
        store
            .deactivate(&package(), &alice, &endpoint(1))
            .await
            .unwrap(),
        "unsubscribe reaches a NULL row"
    );
    assert!(!store.subscriptions(&alice, None).await.unwrap()[0].active);
    store.close().await;
}

#[tokio::test]
async fn null_active_is_taken_over_when_another_user_subscribes_the_browser() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    null_active_row(&db, "alice", &endpoint(1), "2025-01-01 00:00:00").await;
    let s = store
        .upsert_subscription(&package(), &user("bob"), &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    assert_eq!(s.taken_from_others, 1);
    assert!(!store.subscriptions(&user("alice"), None).await.unwrap()[0].active);
    store.close().await;
}

/// `(user, active)` of every row for `endpoint` in `crm` among `users`.
async fn holders(store: &Store, users: &[&str], endpoint: &str) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    for name in users {
        for row in store
            .subscriptions(&user(name), Some(&package()))
            .await
            .unwrap()
        {
            if row.endpoint == endpoint {
                found.push((row.user.trim_end().to_owned(), row.active));
            }
        }
    }
    found
}

#[tokio::test]
async fn an_endpoint_active_for_another_user_is_not_taken_when_takeover_is_refused() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice, bob) = (package(), user("alice"), user("bob"));
    let e = endpoint(1);
    store
        .upsert_subscription(&p, &alice, &subscription(&e), 50)
        .await
        .unwrap();
    let refused = store
        .upsert_subscription_unless_taken(&p, &bob, &subscription(&e), 50)
        .await
        .unwrap();
    assert_eq!(refused, None);
    assert_eq!(
        holders(&store, &["alice", "bob"], &e).await,
        [("alice".to_owned(), true)]
    );
    // Her own endpoint, again: hers to update.
    let again = store
        .upsert_subscription_unless_taken(&p, &alice, &subscription(&e), 50)
        .await
        .unwrap()
        .expect("alice's own endpoint");
    assert_eq!((again.active, again.taken_from_others), (1, 0));
    // Not active any more (her push service said 410): anyone's.
    assert!(store.deactivate(&p, &alice, &e).await.unwrap());
    let taken = store
        .upsert_subscription_unless_taken(&p, &bob, &subscription(&e), 50)
        .await
        .unwrap()
        .expect("an endpoint nobody has active");
    assert_eq!((taken.active, taken.taken_from_others), (1, 0));
    store.close().await;
}

#[tokio::test]
async fn refusing_takeover_compares_exactly_and_counts_null_active_as_active() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, bob) = (package(), user("bob"));
    // Written by older software: Active NULL.
    null_active_row(&db, "alice", &endpoint(1), "2025-01-01 00:00:00").await;
    let refused = store
        .upsert_subscription_unless_taken(&p, &bob, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    assert_eq!(refused, None, "a NULL Active row is active");
    assert!(
        store.subscriptions(&user("alice"), None).await.unwrap()[0].active,
        "nothing changed"
    );

    // "Bob" is another user than "bob", whatever the table's collation.
    store
        .upsert_subscription(&p, &user("Bob"), &subscription(&endpoint(2)), 50)
        .await
        .unwrap();
    let refused = store
        .upsert_subscription_unless_taken(&p, &bob, &subscription(&endpoint(2)), 50)
        .await
        .unwrap();
    assert_eq!(refused, None, "Bob's browser went to bob");

    // Another package's row, or another endpoint that collates equal, is
    // not this one.
    let hr = Package::parse("hr").unwrap();
    let lower = "https://fcm.googleapis.com/fcm/send/abc";
    let upper = "https://fcm.googleapis.com/fcm/send/ABC";
    store
        .upsert_subscription(&hr, &user("carol"), &subscription(lower), 50)
        .await
        .unwrap();
    store
        .upsert_subscription(&p, &user("carol"), &subscription(upper), 50)
        .await
        .unwrap();
    let mine = store
        .upsert_subscription_unless_taken(&p, &bob, &subscription(lower), 50)
        .await
        .unwrap()
        .expect("nobody has this endpoint in crm");
    assert_eq!(mine.taken_from_others, 0);
    let carols = store.subscriptions(&user("carol"), None).await.unwrap();
    assert!(carols.iter().all(|r| r.active), "{carols:?}");
    store.close().await;
}

/// Each answer gives the endpoint's lock back at once: a lock left with a
/// pooled connection (MariaDB/MySQL's named locks outlive transactions)
/// would hold up the next daemon's subscribe of that endpoint.
#[tokio::test]
async fn the_endpoints_lock_is_given_back_after_a_subscribe_and_after_a_refusal() {
    let db = TestDatabase::create().await;
    let (a, b) = (store(&db).await, store(&db).await);
    let e = endpoint(1);
    let subscribe = |store: &Store, name: &'static str| {
        let (store, e) = (store.clone(), e.clone());
        async move {
            let (p, who, s) = (package(), user(name), subscription(&e));
            let subscribing = store.upsert_subscription_unless_taken(&p, &who, &s, 50);
            tokio::time::timeout(Duration::from_secs(5), subscribing)
                .await
                .unwrap_or_else(|_| panic!("{name} waited for the endpoint's lock"))
                .unwrap()
        }
    };
    assert!(subscribe(&a, "alice").await.is_some());
    assert_eq!(subscribe(&b, "bob").await, None);
    assert_eq!(subscribe(&a, "bob").await, None);
    assert!(subscribe(&b, "alice").await.is_some());
    a.close().await;
    b.close().await;
}

/// Two daemons subscribing one new endpoint for two users at once: without
/// the endpoint's lock both checks pass (neither sees the other's row
/// before it commits) and both users end up with the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_subscribing_one_endpoint_at_once_cannot_both_have_it() {
    const ROUNDS: usize = 30;
    let db = TestDatabase::create().await;
    let (store_a, store_b) = (store(&db).await, store(&db).await);
    let subscribe = |store: Store, name: &'static str, e: String| async move {
        store
            .upsert_subscription_unless_taken(&package(), &user(name), &subscription(&e), 50)
            .await
            .unwrap()
    };
    for round in 0..ROUNDS {
        let e = endpoint(1000 + round);
        let (a, b) = tokio::join!(
            tokio::spawn(subscribe(store_a.clone(), "alice", e.clone())),
            tokio::spawn(subscribe(store_b.clone(), "bob", e.clone()))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let active: Vec<_> = holders(&store_a, &["alice", "bob"], &e)
            .await
            .into_iter()
            .filter(|(_, active)| *active)
            .collect();
        assert_eq!(
            (a.is_some() as usize + b.is_some() as usize, active.len()),
            (1, 1),
            "round {round}: alice {a:?}, bob {b:?}, active {active:?}"
        );
    }
    store_a.close().await;
    store_b.close().await;
}

#[tokio::test]
async fn null_active_counts_toward_the_per_user_limit() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    null_active_row(&db, "alice", &endpoint(1), "2025-01-01 00:00:00").await;
    let s = store
        .upsert_subscription(&package(), &user("alice"), &subscription(&endpoint(2)), 1)
        .await
        .unwrap();
    assert_eq!((s.active, s.evicted), (1, 1), "{s:?}");
    store.close().await;
}

#[tokio::test]
async fn a_row_without_a_creation_time_is_evicted_first() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    db.insert_rows(&[AxionRow {
        user: "alice",
        package: "crm",
        endpoint: &endpoint(1),
        p256dh: Some(P256DH),
        auth: Some(AUTH),
        active: Some("Y"),
        ..AxionRow::default()
    }])
    .await;
    null_active_row(&db, "alice", &endpoint(2), "2020-01-01 00:00:00").await;
    store
        .upsert_subscription(&package(), &user("alice"), &subscription(&endpoint(3)), 2)
        .await
        .unwrap();
    let rows = store.subscriptions(&user("alice"), None).await.unwrap();
    let active: HashSet<_> = rows
        .iter()
        .filter(|r| r.active)
        .map(|r| r.endpoint.clone())
        .collect();
    assert_eq!(
        active,
        HashSet::from([endpoint(2), endpoint(3)]),
        "{rows:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn group_membership_is_edited_and_set() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, ops) = (package(), Group::parse("ops").unwrap());
    let n = store
        .change_members(
            &p,
            &ops,
            &MembersChange::Edit {
                add: vec![user("alice"), user("bob")],
                remove: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    store
        .change_members(&p, &ops, &MembersChange::Set(vec![user("carol")]))
        .await
        .unwrap();
    assert_eq!(store.members(&p, &ops).await.unwrap(), [user("carol")]);
    store.close().await;
}

#[tokio::test]
async fn a_new_sends_deliveries_are_held_for_the_daemon_that_recorded_it() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice) = (package(), user("alice"));
    for n in 0..3 {
        store
            .upsert_subscription(&p, &alice, &subscription(&endpoint(n)), 50)
            .await
            .unwrap();
    }
    assert_eq!(enqueue(&store, "n-1", &alice, "a").await, 3);
    assert!(store.claim("b", 10).await.unwrap().is_empty(), "held for a");
    let claimed = store.claim("a", 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(claimed.iter().all(|c| c.command_id == "n-1" && !c.tried));
    assert!(store.claim("a", 10).await.unwrap().is_empty(), "leased now");
    assert_eq!(store.pending_deliveries().await.unwrap(), 3);
    store.close().await;
}

#[tokio::test]
async fn small_claims_take_every_held_delivery_once_in_the_order_sends_were_recorded() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice) = (package(), user("alice"));
    for n in 0..5 {
        store
            .upsert_subscription(&p, &alice, &subscription(&endpoint(n)), 50)
            .await
            .unwrap();
    }
    enqueue(&store, "n-1", &alice, "a").await;
    enqueue(&store, "n-2", &alice, "a").await;
    let mut taken = Vec::new();
    let first = store.claim("a", 3).await.unwrap();
    taken.extend(first);
    // A send recorded between claims is taken too.
    enqueue(&store, "n-3", &alice, "a").await;
    loop {
        let claimed = store.claim("a", 3).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        taken.extend(claimed);
    }
    let mut seqs: Vec<i64> = taken.iter().map(|c| c.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!((taken.len(), seqs.len()), (15, 15), "each once: {taken:?}");
    let sends: Vec<&str> = taken.iter().map(|c| c.command_id.as_str()).collect();
    let mut in_order = sends.clone();
    in_order.sort_unstable();
    assert_eq!(sends, in_order, "oldest send first");
    store.close().await;
}

#[tokio::test]
async fn a_held_send_is_anyones_once_the_hold_is_over() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let alice = user("alice");
    store
        .upsert_subscription(&package(), &alice, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    enqueue(&store, "n-1", &alice, "a").await;
    let due = store.next_due("b").await.unwrap().expect("queued");
    assert!(due <= axion_push::store::HOLD, "{due:?}");
    tokio::time::sleep(due + Duration::from_millis(50)).await;
    assert_eq!(store.claim("b", 10).await.unwrap().len(), 1);
    store.close().await;
}

/// A claim whose answer was lost leaves rows leased to a daemon that is not
/// working on them; renewing only what it works on lets those run out.
#[tokio::test]
async fn renewing_extends_only_the_leases_named() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let alice = user("alice");
    for n in 0..2 {
        store
            .upsert_subscription(&package(), &alice, &subscription(&endpoint(n)), 50)
            .await
            .unwrap();
    }
    enqueue(&store, "n-1", &alice, "a").await;
    let claimed = store.claim("a", 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(store.renew("a", &[claimed[1].seq]).await.unwrap(), 1);
    assert_eq!(store.renew("b", &[claimed[1].seq]).await.unwrap(), 0);
    assert_eq!(store.renew("a", &[]).await.unwrap(), 0);
    store.close().await;
}

#[tokio::test]
async fn released_deliveries_are_due_at_once_for_another_daemon() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let alice = user("alice");
    store
        .upsert_subscription(&package(), &alice, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    enqueue(&store, "n-1", &alice, "a").await;
    let claimed = store.claim("a", 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(store.renew("a", &[claimed[0].seq]).await.unwrap(), 1);
    assert!(store.claim("b", 10).await.unwrap().is_empty());
    assert_eq!(store.release("a").await.unwrap(), 1);
    assert_eq!(store.claim("b", 10).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn settling_counts_each_outcome_and_makes_the_report_due() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice) = (package(), user("alice"));
    for n in 0..4 {
        store
            .upsert_subscription(&p, &alice, &subscription(&endpoint(n)), 50)
            .await
            .unwrap();
    }
    enqueue(&store, "n-1", &alice, "a").await;
    let claimed = store.claim("a", 10).await.unwrap();
    let batch = settled(&claimed, |c| match c.endpoint.as_str() {
        e if e == endpoint(0) => Settled::Delivered,
        e if e == endpoint(1) => Settled::Gone,
        e if e == endpoint(2) => Settled::Failed("403".into()),
        _ => Settled::Retry {
            after: Duration::from_secs(3600),
            cause: "503".into(),
        },
    });
    let due = store.settle("a", &batch, 1).await.unwrap();
    assert_eq!(due.len(), 1, "every delivery tried once: the first report");
    let first = &due[0];
    assert_eq!(
        (
            first.delivered,
            first.deactivated,
            first.failed,
            first.pending
        ),
        (1, 1, 1, 1),
        "{first:?}"
    );
    assert_eq!(first.failures(), [("403".to_owned(), 1)].into());
    assert_eq!(
        first.retries(),
        [("503".to_owned(), 1)].into(),
        "why the queued one waits"
    );
    let rows = store.subscriptions(&alice, Some(&p)).await.unwrap();
    let gone = rows.iter().find(|r| r.endpoint == endpoint(1)).unwrap();
    assert!(!gone.active, "404/410 deactivates");
    let retry = store.next_due("a").await.unwrap().expect("the retry");
    assert!(retry > Duration::from_secs(3500), "{retry:?}");
    store.close().await;
}

#[tokio::test]
async fn reports_say_why_deliveries_wait_and_why_they_expired() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice) = (package(), user("alice"));
    for n in 0..3 {
        store
            .upsert_subscription(&p, &alice, &subscription(&endpoint(n)), 50)
            .await
            .unwrap();
    }
    enqueue(&store, "n-1", &alice, "a").await;
    let claimed = store.claim("a", 10).await.unwrap();
    let batch = settled(&claimed, |c| match c.endpoint.as_str() {
        e if e == endpoint(0) => Settled::Delivered,
        e if e == endpoint(1) => Settled::Retry {
            after: Duration::ZERO,
            cause: "connection".into(),
        },
        _ => Settled::Deferred {
            after: Duration::ZERO,
            cause: axion_push::store::PAUSED,
        },
    });
    let first = store.settle("a", &batch, 1).await.unwrap();
    assert_eq!(
        first.len(),
        1,
        "every delivery tried once: the first report"
    );
    assert_eq!(first[0].pending, 2);
    assert_eq!(
        first[0].retries(),
        [("connection".to_owned(), 1), ("paused".to_owned(), 1)].into(),
        "a retry by its cause, a delivery not tried by its paused push service"
    );
    assert!(first[0].failures().is_empty(), "nothing failed for good");

    // Both tried again, both met a 503, then ran out of time.
    let again = store.claim("a", 10).await.unwrap();
    assert_eq!(again.len(), 2);
    let batch = settled(&again, |_| Settled::Retry {
        after: Duration::ZERO,
        cause: "503".into(),
    });
    assert!(store.settle("a", &batch, 2).await.unwrap().is_empty());
    let last = store.claim("a", 10).await.unwrap();
    let batch = settled(&last, |_| Settled::Expired);
    let last = store.settle("a", &batch, 3).await.unwrap();
    assert_eq!((last.len(), last[0].expired, last[0].pending), (1, 2, 0));
    assert_eq!(
        last[0].retries(),
        [
            ("503".to_owned(), 2),
            ("connection".to_owned(), 1),
            ("paused".to_owned(), 1)
        ]
        .into(),
        "the final report says what the expired ones met"
    );
    store.close().await;
}

#[tokio::test]
async fn a_delivery_put_off_for_an_unreadable_message_waits_under_database_not_paused() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice) = (package(), user("alice"));
    store
        .upsert_subscription(&p, &alice, &subscription(&endpoint(0)), 50)
        .await
        .unwrap();
    enqueue(&store, "n-1", &alice, "a").await;
    let claimed = store.claim("a", 10).await.unwrap();
    let batch = settled(&claimed, |_| Settled::Deferred {
        after: Duration::ZERO,
        cause: axion_push::store::UNREADABLE,
    });
    let first = store.settle("a", &batch, 1).await.unwrap();
    assert_eq!((first.len(), first[0].pending), (1, 1));
    assert_eq!(
        first[0].retries(),
        [("database".to_owned(), 1)].into(),
        "the report says the daemon's database kept it, not its push service"
    );
    let again = store.claim("a", 10).await.unwrap();
    assert_eq!(again.len(), 1, "put back, to be claimed again");
    store.close().await;
}

/// The send `id` accepted `later_ms` after now, with the de-duplication
/// window `send` uses.
fn send_later<'a>(id: &'a str, to: &'a User, package: &'a Package, later_ms: u64) -> NewSend<'a> {
    let mut s = send(id, to, package);
    s.accepted_ms += later_ms;
    s.duplicate_after_ms += later_ms;
    s
}

#[tokio::test]
async fn an_id_reused_after_the_window_is_a_new_send_without_the_old_ones_counts_or_causes() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice) = (package(), user("alice"));
    store
        .upsert_subscription(&p, &alice, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    // Reused once recorded alone, once in a batch.
    for (id, alone) in [("n-1", true), ("n-2", false)] {
        enqueue(&store, id, &alice, "a").await;
        let claimed = store.claim("a", 10).await.unwrap();
        let due = store
            .settle(
                "a",
                &settled(&claimed, |_| Settled::Failed("403".into())),
                1,
            )
            .await
            .unwrap();
        assert_eq!(due[0].failures().get("403"), Some(&1), "{id}: {due:?}");

        // Past the window (`send` uses a minute).
        let again = send_later(id, &alice, &p, 120_000);
        let enqueued = if alone {
            store.enqueue(&again, "a").await.unwrap()
        } else {
            store.enqueue_many(&[again], "a").await.unwrap().remove(0)
        };
        assert_eq!(enqueued, Enqueued::New { subscriptions: 1 }, "{id}");
        let claimed = store.claim("a", 10).await.unwrap();
        assert_eq!(claimed.len(), 1, "{id}");
        let due = store
            .settle(
                "a",
                &settled(&claimed, |_| Settled::Failed("413".into())),
                1,
            )
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "{id}: {due:?}");
        let state = &due[0];
        assert_eq!(
            (state.subscriptions, state.delivered, state.failed),
            (1, 0, 1),
            "{id}: {state:?}"
        );
        assert_eq!(
            state.failures(),
            [("413".to_owned(), 1)].into(),
            "{id}: only this send's causes"
        );
    }
    store.close().await;
}

#[tokio::test]
async fn a_retry_comes_due_after_its_delay() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let alice = user("alice");
    store
        .upsert_subscription(&package(), &alice, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    enqueue(&store, "n-1", &alice, "a").await;
    let claimed = store.claim("a", 10).await.unwrap();
    let batch = settled(&claimed, |_| Settled::Retry {
        after: Duration::ZERO,
        cause: "timeout".into(),
    });
    store.settle("a", &batch, 1).await.unwrap();
    let again = store.claim("b", 10).await.unwrap();
    assert_eq!(again.len(), 1, "due again, for anyone");
    assert_eq!((again[0].attempts, again[0].tried), (1, true));
    store.close().await;
}

#[tokio::test]
async fn settling_a_delivery_another_daemon_took_over_changes_nothing() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let alice = user("alice");
    store
        .upsert_subscription(&package(), &alice, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    enqueue(&store, "n-1", &alice, "a").await;
    let by_a = store.claim("a", 10).await.unwrap();
    // a's lease ends (as when a stops answering) and b takes the delivery.
    store.release("a").await.unwrap();
    let by_b = store.claim("b", 10).await.unwrap();
    assert!(
        store
            .settle("a", &settled(&by_a, |_| Settled::Delivered), 1)
            .await
            .unwrap()
            .is_empty(),
        "a's late answer counts for nothing"
    );
    let due = store
        .settle("b", &settled(&by_b, |_| Settled::Delivered), 1)
        .await
        .unwrap();
    assert_eq!((due[0].delivered, due[0].pending), (1, 0));
    assert_eq!(store.pending_deliveries().await.unwrap(), 0);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_claiming_at_once_never_hold_the_same_delivery() {
    const DELIVERIES: usize = 2_000;
    let db = TestDatabase::create().await;
    let store_a = store(&db).await;
    let endpoints: Vec<String> = (0..DELIVERIES).map(endpoint).collect();
    let rows: Vec<AxionRow> = endpoints
        .iter()
        .map(|e| AxionRow {
            user: "many",
            package: "crm",
            endpoint: e,
            p256dh: Some(P256DH),
            auth: Some(AUTH),
            created_at: Some("2025-01-01 00:00:00"),
            active: Some("Y"),
            ..AxionRow::default()
        })
        .collect();
    db.insert_rows(&rows).await;
    enqueue(&store_a, "n-1", &user("many"), "recorder").await;
    store_a.release("recorder").await.unwrap();
    let store_b = Store::open(&db.settings()).await.unwrap();
    let claim_all = |store: Store, owner: &'static str| async move {
        let mut seqs = Vec::new();
        loop {
            // A deadlock between the two is a temporary error, which the
            // daemon tries again, as here.
            let claimed = match store.claim(owner, 37).await {
                Ok(claimed) => claimed,
                Err(e) if e.is_transient() => continue,
                Err(e) => panic!("{e}"),
            };
            if claimed.is_empty() {
                return seqs;
            }
            seqs.extend(claimed.iter().map(|c| c.seq));
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claim_all(store_a.clone(), "a")),
        tokio::spawn(claim_all(store_b.clone(), "b"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let all: HashSet<i64> = a.iter().chain(&b).copied().collect();
    assert_eq!(
        a.len() + b.len(),
        DELIVERIES,
        "a {} + b {}",
        a.len(),
        b.len()
    );
    assert_eq!(all.len(), DELIVERIES, "a delivery was held by both");
    store_a.close().await;
    store_b.close().await;
}

#[tokio::test]
async fn a_send_id_seen_within_the_window_is_a_duplicate_with_its_unacknowledged_event() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice) = (package(), user("alice"));
    store
        .upsert_subscription(&p, &alice, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    enqueue(&store, "n-1", &alice, "a").await;
    match store.enqueue(&send("n-1", &alice, &p), "b").await.unwrap() {
        Enqueued::Duplicate {
            earlier,
            unpublished_event,
        } => {
            assert_eq!(earlier.subscriptions, 1);
            assert_eq!(
                unpublished_event.as_deref(),
                Some(&b"{\"title\":\"T\"}"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    store
        .mark_published(&[Published::Event {
            package: "crm".into(),
            id: "n-1".into(),
        }])
        .await
        .unwrap();
    match store.enqueue(&send("n-1", &alice, &p), "b").await.unwrap() {
        Enqueued::Duplicate {
            unpublished_event, ..
        } => assert_eq!(unpublished_event, None, "acknowledged"),
        other => panic!("{other:?}"),
    }
    store.close().await;
}

/// Send `id` to alice's one browser, recorded, claimed and delivered by
/// daemon "a": its final report due and, like its event, never
/// acknowledged.
async fn delivered_send_to_alice(store: &Store, id: &str) {
    let alice = user("alice");
    store
        .upsert_subscription(&package(), &alice, &subscription(&endpoint(1)), 50)
        .await
        .unwrap();
    enqueue(store, id, &alice, "a").await;
    let claimed = store.claim("a", 10).await.unwrap();
    store
        .settle("a", &settled(&claimed, |_| Settled::Delivered), 1_000)
        .await
        .unwrap();
}

#[tokio::test]
async fn reports_and_events_never_acknowledged_are_taken_again_once() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    delivered_send_to_alice(&store, "n-1").await;
    let later = axion_push::clock::now_ms() + 1;
    let (reports, events) = store.take_unpublished(later, later).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].id.as_str(), reports[0].delivered), ("n-1", 1));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].target, "alice");
    let (reports, events) = store.take_unpublished(later, later).await.unwrap();
    assert!(reports.is_empty() && events.is_empty(), "taken once");
    store
        .mark_published(&[
            Published::Report {
                package: "crm".into(),
                id: "n-1".into(),
                is_final: true,
            },
            Published::Event {
                package: "crm".into(),
                id: "n-1".into(),
            },
        ])
        .await
        .unwrap();
    let much_later = later + 3_600_000;
    let (reports, events) = store
        .take_unpublished(much_later, much_later)
        .await
        .unwrap();
    assert!(reports.is_empty() && events.is_empty(), "acknowledged");
    assert_eq!(store.purge_commands(much_later).await.unwrap(), 1);
    store.close().await;
}

#[tokio::test]
async fn an_acknowledged_event_leaves_its_sends_unacknowledged_report_to_be_taken_again() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    delivered_send_to_alice(&store, "n-1").await;
    store
        .mark_published(&[Published::Event {
            package: "crm".into(),
            id: "n-1".into(),
        }])
        .await
        .unwrap();
    let later = axion_push::clock::now_ms() + 1;
    let (reports, events) = store.take_unpublished(later, later).await.unwrap();
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(
        reports.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["n-1"]
    );
    store.close().await;
}

#[tokio::test]
async fn a_database_password_is_never_shown_in_an_error() {
    for scheme in ["mysql", "postgres"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = axion_push::config::DatabaseSettings {
            url: format!("{scheme}://axion:hunter2@127.0.0.1:{port}/axion"),
            ..Default::default()
        };
        let error = match Store::open(&settings).await {
            Ok(_) => panic!("nothing listens on {port}"),
            Err(e) => e.to_string(),
        };
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("127.0.0.1"), "{error}");
    }
}

#[tokio::test]
async fn several_sends_are_recorded_at_once_as_one_after_the_other_would_be() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice, bob, carol) = (package(), user("alice"), user("bob"), user("carol"));
    for n in 0..2 {
        store
            .upsert_subscription(&p, &alice, &subscription(&endpoint(n)), 50)
            .await
            .unwrap();
    }
    null_active_row(&db, "carol", &endpoint(9), "2025-01-01 00:00:00").await;
    enqueue(&store, "seen", &alice, "a").await;
    let batch = [
        send("to-alice", &alice, &p),
        send("to-bob", &bob, &p),
        send("seen", &alice, &p),
        send("to-carol", &carol, &p),
    ];
    let enqueued = store.enqueue_many(&batch, "a").await.unwrap();
    assert_eq!(enqueued[0], Enqueued::New { subscriptions: 2 });
    assert_eq!(enqueued[1], Enqueued::New { subscriptions: 0 });
    assert!(
        matches!(&enqueued[2], Enqueued::Duplicate { earlier, .. } if earlier.subscriptions == 2),
        "{:?}",
        enqueued[2]
    );
    assert_eq!(enqueued[3], Enqueued::New { subscriptions: 1 });
    let claimed = store.claim("a", 100).await.unwrap();
    let mut per_send: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in &claimed {
        *per_send.entry(c.command_id.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_send,
        [("seen", 2), ("to-alice", 2), ("to-carol", 1)].into(),
        "{claimed:?}"
    );
    // bob's send reached nobody: its final report is due at once.
    let later = axion_push::clock::now_ms() + 1;
    let (reports, _) = store.take_unpublished(later, later).await.unwrap();
    assert_eq!(
        reports.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["to-bob"]
    );
    store.close().await;
}

#[tokio::test]
async fn a_batch_of_fresh_sends_reaches_exactly_whom_each_would_alone_in_order() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice, bob, carol) = (package(), user("alice"), user("bob"), user("carol"));
    let shouting = user("ALICE");
    for n in 0..2 {
        store
            .upsert_subscription(&p, &alice, &subscription(&endpoint(n)), 50)
            .await
            .unwrap();
    }
    null_active_row(&db, "carol", &endpoint(9), "2025-01-01 00:00:00").await;
    let batch = [
        send("first", &alice, &p),
        send("to-bob", &bob, &p),
        send("to-carol", &carol, &p),
        send("to-shouting", &shouting, &p),
        send("second", &alice, &p),
    ];
    let enqueued = store.enqueue_many(&batch, "a").await.unwrap();
    let counts: Vec<u64> = enqueued
        .iter()
        .map(|e| match e {
            Enqueued::New { subscriptions } => *subscriptions,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(counts, [2, 0, 1, 0, 2]);
    // In queue order, each send's deliveries together, the sends in the
    // order they came.
    let claimed = store.claim("a", 100).await.unwrap();
    let order: Vec<&str> = claimed.iter().map(|c| c.command_id.as_str()).collect();
    assert_eq!(
        order,
        ["first", "first", "to-carol", "second", "second"],
        "{claimed:?}"
    );
    // Those that reached nobody have their final report due at once.
    let later = axion_push::clock::now_ms() + 1;
    let (reports, _) = store.take_unpublished(later, later).await.unwrap();
    let mut due: Vec<&str> = reports.iter().map(|r| r.id.as_str()).collect();
    due.sort_unstable();
    assert_eq!(due, ["to-bob", "to-shouting"]);
    store.close().await;
}

#[tokio::test]
async fn the_messages_of_a_claims_sends_are_read_together_and_a_missing_one_is_left_out() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let (p, alice, bob) = (package(), user("alice"), user("bob"));
    let mut with_topic = send("to-bob", &bob, &p);
    with_topic.payload = b"{\"b\":1}";
    with_topic.topic = Some("news");
    with_topic.urgency = Urgency::High.as_header();
    store
        .enqueue_many(&[send("to-alice", &alice, &p), with_topic], "a")
        .await
        .unwrap();
    let keys = [
        ("crm".to_owned(), "to-alice".to_owned()),
        ("crm".to_owned(), "to-bob".to_owned()),
        ("crm".to_owned(), "never-sent".to_owned()),
        ("other".to_owned(), "to-alice".to_owned()),
    ];
    let mut messages = store.queued_messages(&keys).await.unwrap();
    messages.sort_by(|a, b| a.1.cmp(&b.1));
    /// Package, id, payload, topic, urgency, TTL.
    type Found<'a> = (&'a str, &'a str, &'a [u8], Option<&'a str>, &'a str, u32);
    let found: Vec<Found> = messages
        .iter()
        .map(|(package, id, m)| {
            (
                package.as_str(),
                id.as_str(),
                m.payload.as_slice(),
                m.topic.as_deref(),
                m.urgency.as_str(),
                m.ttl,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("crm", "to-alice", &b"{}"[..], None, "normal", 60),
            ("crm", "to-bob", &b"{\"b\":1}"[..], Some("news"), "high", 60),
        ]
    );
    assert!(store.queued_messages(&[]).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn a_receipt_is_taken_once_per_push_and_kind_and_forgotten_with_its_token() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let crm = package();
    let now = axion_push::clock::now_ms();

    let take = |package: &Package, tag: &'static str, kind: &'static str, command: &'static str| {
        let store = &store;
        let package = package.clone();
        async move {
            store
                .take_receipt(&package, tag, kind, now, command)
                .await
                .unwrap()
        }
    };
    assert_eq!(take(&crm, "tag-1", "shown", "r-1").await, Taken::First);
    assert_eq!(
        take(&crm, "tag-1", "shown", "r-2").await,
        Taken::Replay,
        "another command: a replay"
    );
    assert_eq!(
        take(&crm, "tag-1", "shown", "r-1").await,
        Taken::Again,
        "the same command delivered again"
    );
    assert_eq!(
        take(&crm, "tag-1", "clicked", "r-3").await,
        Taken::First,
        "another kind for the same push"
    );
    assert_eq!(
        take(&crm, "TAG-1", "shown", "r-4").await,
        Taken::First,
        "tags are base64url: case matters"
    );
    let hr = Package::parse("hr").unwrap();
    assert_eq!(take(&hr, "tag-1", "shown", "r-1").await, Taken::First);

    assert_eq!(store.purge_receipts(now).await.unwrap(), 0);
    assert_eq!(store.purge_receipts(now + 1).await.unwrap(), 4);
    assert_eq!(
        take(&crm, "tag-1", "shown", "r-2").await,
        Taken::First,
        "forgotten"
    );
    store.close().await;
}

fn health_event(
    subscription: &str,
    at_ms: u64,
    outcome: axion_push::store::HealthOutcome,
) -> axion_push::store::HealthEvent {
    axion_push::store::HealthEvent {
        package: "crm".into(),
        subscription: subscription.into(),
        user: "alice".into(),
        origin: Some("https://fcm.googleapis.com".into()),
        at_ms,
        outcome,
    }
}

#[tokio::test]
async fn a_subscriptions_health_keeps_its_last_delivery_receipt_and_failures() {
    use axion_push::store::HealthOutcome::{Delivered, Failed};
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let crm = package();
    let failed = || Failed("expired".into());
    store
        .record_health(&[
            health_event("a", 1_000, failed()),
            health_event("a", 2_000, Delivered),
            health_event("b", 2_000, failed()),
        ])
        .await
        .unwrap();
    store
        .record_health(&[
            health_event("a", 3_000, failed()),
            health_event("b", 3_000, failed()),
        ])
        .await
        .unwrap();
    store
        .record_receipt_health(&crm, "a", &user("alice"), "shown", 2_500)
        .await
        .unwrap();

    let mut health = store
        .health(&crm, &["a".into(), "b".into(), "c".into()])
        .await
        .unwrap();
    health.sort_by(|x, y| x.subscription.cmp(&y.subscription));
    assert_eq!(health.len(), 2, "nothing recorded for c: {health:?}");
    let (a, b) = (&health[0], &health[1]);
    assert_eq!(a.delivered_at, Some(2_000));
    assert_eq!(a.failed_at, Some(3_000));
    assert_eq!(a.failure.as_deref(), Some("expired"));
    assert_eq!(a.failures, 1, "failures since the last delivery");
    assert_eq!(a.receipt.as_deref(), Some("shown"));
    assert_eq!(a.receipt_at, Some(2_500));
    assert_eq!(a.origin.as_deref(), Some("https://fcm.googleapis.com"));
    assert_eq!(b.delivered_at, None);
    assert_eq!(b.failures, 2);
    store.close().await;
}

/// The run of refusals that expires a subscription, on a clock the test
/// sets: counted refusals start and continue it, any other refusal or a
/// delivery ends it.
#[tokio::test]
async fn a_run_of_refusals_starts_continues_and_ends() {
    use axion_push::store::HealthOutcome::{Delivered, Failed};
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let refused = |at| health_event("a", at, Failed("400".into()));

    assert_eq!(
        store.record_refusal(&refused(10), true).await.unwrap(),
        Some(10)
    );
    assert_eq!(
        store.record_refusal(&refused(20), true).await.unwrap(),
        Some(10)
    );
    assert_eq!(
        store.record_refusal(&refused(30), false).await.unwrap(),
        None,
        "a refusal while the push service delivered to nobody ends the run"
    );
    assert_eq!(
        store.record_refusal(&refused(40), true).await.unwrap(),
        Some(40)
    );
    store
        .record_health(&[health_event("a", 50, Delivered)])
        .await
        .unwrap();
    assert_eq!(
        store.record_refusal(&refused(60), true).await.unwrap(),
        Some(60),
        "a delivery ended the run"
    );
    let later = 60 + axion_push::store::RUN_GAP_MS + 1;
    assert_eq!(
        store.record_refusal(&refused(later), true).await.unwrap(),
        Some(later),
        "a run with no push for longer than the gap starts again"
    );
    let health = store.health(&package(), &["a".into()]).await.unwrap();
    assert_eq!(health[0].failures, 2);
    assert_eq!(health[0].refused_since, Some(later));
    store.close().await;
}

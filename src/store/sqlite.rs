//! The SQLite backend: statements as named constants, one small function per
//! intent.

use std::borrow::Cow;
use std::str::FromStr;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, SqlSafeStr, SqlitePool};

use super::{MembersChange, RowKey, StoreError, StoredSubscription, Subscribed};
use crate::config::DatabaseSettings;
use crate::model::{Group, Package, Subscription, User};

/// The migrations, compiled in so an installed binary needs no files beside
/// it. Built by hand rather than with `sqlx::migrate!` to keep sqlx's
/// compile-time macro machinery (and a second SQLite build) out of the build.
fn migrator() -> Migrator {
    let step = |version, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(description),
            MigrationType::Simple,
            AssertSqlSafe(sql).into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        step(
            1,
            "axion subscription table",
            include_str!("../../migrations/sqlite/0001_axion_subscription_table.sql"),
        ),
        step(
            2,
            "axion-push groups",
            include_str!("../../migrations/sqlite/0002_axion_push_groups.sql"),
        ),
        step(
            3,
            "axion-push delivery queue",
            include_str!("../../migrations/sqlite/0003_axion_push_delivery_queue.sql"),
        ),
    ])
}

pub(super) async fn open(settings: &DatabaseSettings) -> Result<SqlitePool, StoreError> {
    let open_error = |reason: String| StoreError::Open {
        url: settings.url.clone(),
        reason,
    };
    let options =
        SqliteConnectOptions::from_str(&settings.url).map_err(|e| open_error(e.to_string()))?;
    create_private(&options, &settings.url);
    let options = options
        .create_if_missing(true)
        // WAL lets the CLI read while the daemon writes; NORMAL is durable
        // across process crashes, which is what a daemon needs.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(settings.busy_timeout);
    SqlitePoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.busy_timeout.max(std::time::Duration::from_secs(1)))
        .connect_with(options)
        .await
        .map_err(|e| open_error(e.to_string()))
}

/// Creates a database file that does not exist yet readable by the daemon's
/// user only: it holds endpoints (capabilities) and browsers' auth secrets,
/// and SQLite would create it with the umask's default, usually 0644.
/// SQLite gives the `-wal` and `-shm` files the database's mode. An existing
/// file keeps its mode (the daemon warns when others may read it); a file
/// that cannot be created is left for SQLite to report when it opens it.
fn create_private(options: &SqliteConnectOptions, url: &str) {
    let path = options.get_filename();
    let in_memory = url.contains("mode=memory")
        || path
            .to_str()
            .is_some_and(|p| p == ":memory:" || p.starts_with("file:"));
    if in_memory {
        return;
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    let _ = file.open(path);
}

pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    migrator()
        .run(pool)
        .await
        .map_err(|e| StoreError::Migrate(e.to_string()))
}

/// SQLite result codes (low byte of the extended code) that describe the
/// database's state rather than the statement: busy, locked, read-only,
/// I/O error, full, cannot open.
const TRANSIENT_CODES: [i64; 6] = [5, 6, 8, 10, 13, 14];

pub(super) fn classify(e: sqlx::Error) -> StoreError {
    let transient = match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| TRANSIENT_CODES.contains(&(c & 0xff))),
        _ => false,
    };
    if transient {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Query(e.to_string())
    }
}

const UPSERT_SUBSCRIPTION: &str = "\
    INSERT INTO def_notify_push_subscription \
        (User, Package, Module, Endpoint, KeysP256dh, KeysAuth, UserAgent, CreatedAt, Active) \
    VALUES (?, ?, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP, 'Y') \
    ON CONFLICT (User, Package, Endpoint) DO UPDATE SET \
        Module = excluded.Module, KeysP256dh = excluded.KeysP256dh, \
        KeysAuth = excluded.KeysAuth, UserAgent = excluded.UserAgent, Active = 'Y'";

const DEACTIVATE_ENDPOINT_FOR_OTHERS: &str = "\
    UPDATE def_notify_push_subscription SET Active = 'N' \
    WHERE Package = ? AND Endpoint = ? AND User <> ? AND Active = 'Y'";

/// Keeps the `?` newest other active subscriptions of the user in the
/// package (`LIMIT -1 OFFSET n`: all rows after the first n).
const EVICT_OLDEST: &str = "\
    UPDATE def_notify_push_subscription SET Active = 'N' \
    WHERE User = ? AND Package = ? AND Active = 'Y' AND Endpoint IN ( \
        SELECT Endpoint FROM def_notify_push_subscription \
        WHERE User = ? AND Package = ? AND Active = 'Y' AND Endpoint <> ? \
        ORDER BY CreatedAt DESC, rowid DESC LIMIT -1 OFFSET ?)";

const COUNT_ACTIVE: &str = "\
    SELECT COUNT(*) FROM def_notify_push_subscription \
    WHERE User = ? AND Package = ? AND Active = 'Y'";

const DEACTIVATE: &str = "\
    UPDATE def_notify_push_subscription SET Active = 'N' \
    WHERE User = ? AND Package = ? AND Endpoint = ? AND Active = 'Y'";

const SUBSCRIPTION_COLUMNS: &str = "\
    User, Package, Module, Endpoint, KeysP256dh, KeysAuth, UserAgent, \
    CAST(CreatedAt AS TEXT) AS CreatedAt, Active";

/// SQLite's default limit on bound parameters is 32766; batches stay far below.
const BATCH: usize = 500;

pub(super) async fn upsert_subscription(
    pool: &SqlitePool,
    package: &Package,
    user: &User,
    s: &Subscription,
    max_active: usize,
) -> Result<Subscribed, StoreError> {
    let mut tx = pool.begin().await.map_err(classify)?;
    let taken = sqlx::query(DEACTIVATE_ENDPOINT_FOR_OTHERS)
        .bind(package.as_str())
        .bind(s.endpoint.as_str())
        .bind(user.as_str())
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected();
    sqlx::query(UPSERT_SUBSCRIPTION)
        .bind(user.as_str())
        .bind(package.as_str())
        .bind(s.module.as_deref())
        .bind(s.endpoint.as_str())
        .bind(s.keys.p256dh_text())
        .bind(s.keys.auth_text())
        .bind(s.user_agent.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    let keep_others = i64::try_from(max_active.saturating_sub(1)).unwrap_or(i64::MAX);
    let evicted = sqlx::query(EVICT_OLDEST)
        .bind(user.as_str())
        .bind(package.as_str())
        .bind(user.as_str())
        .bind(package.as_str())
        .bind(s.endpoint.as_str())
        .bind(keep_others)
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected();
    let active: i64 = sqlx::query_scalar(COUNT_ACTIVE)
        .bind(user.as_str())
        .bind(package.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
    tx.commit().await.map_err(classify)?;
    Ok(Subscribed {
        active: active.try_into().unwrap_or_default(),
        taken_from_others: taken,
        evicted,
    })
}

pub(super) async fn deactivate(
    pool: &SqlitePool,
    package: &Package,
    user: &User,
    endpoint: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(DEACTIVATE)
        .bind(user.as_str())
        .bind(package.as_str())
        .bind(endpoint)
        .execute(pool)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn deactivate_rows(pool: &SqlitePool, rows: &[RowKey]) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await.map_err(classify)?;
    let mut changed = 0;
    for row in rows {
        changed += sqlx::query(DEACTIVATE)
            .bind(&row.user)
            .bind(&row.package)
            .bind(&row.endpoint)
            .execute(&mut *tx)
            .await
            .map_err(classify)?
            .rows_affected();
    }
    tx.commit().await.map_err(classify)?;
    Ok(changed)
}

fn subscription_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredSubscription, StoreError> {
    let get = |e: sqlx::Error| StoreError::Query(e.to_string());
    let active: Option<String> = row.try_get("Active").map_err(get)?;
    Ok(StoredSubscription {
        user: row.try_get("User").map_err(get)?,
        package: row.try_get("Package").map_err(get)?,
        module: row.try_get("Module").map_err(get)?,
        endpoint: row.try_get("Endpoint").map_err(get)?,
        p256dh: row.try_get("KeysP256dh").map_err(get)?,
        auth: row.try_get("KeysAuth").map_err(get)?,
        user_agent: row.try_get("UserAgent").map_err(get)?,
        created_at: row.try_get("CreatedAt").map_err(get)?,
        // The column defaults to 'Y'; older rows may hold NULL.
        active: active.is_none_or(|a| a.trim().eq_ignore_ascii_case("y")),
    })
}

pub(super) async fn active_subscriptions(
    pool: &SqlitePool,
    package: &Package,
    users: &[User],
) -> Result<Vec<StoredSubscription>, StoreError> {
    let mut found = Vec::new();
    for chunk in users.chunks(BATCH) {
        let mut q = QueryBuilder::new(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM def_notify_push_subscription \
             WHERE (Active = 'Y' OR Active IS NULL) AND Package = "
        ));
        q.push_bind(package.as_str()).push(" AND User IN (");
        let mut list = q.separated(", ");
        for user in chunk {
            list.push_bind(user.as_str());
        }
        q.push(") ORDER BY User, CreatedAt");
        let rows = q.build().fetch_all(pool).await.map_err(classify)?;
        for row in &rows {
            found.push(subscription_from_row(row)?);
        }
    }
    Ok(found)
}

pub(super) async fn subscriptions(
    pool: &SqlitePool,
    user: &User,
    package: Option<&Package>,
) -> Result<Vec<StoredSubscription>, StoreError> {
    let sql = format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM def_notify_push_subscription \
         WHERE User = ? AND (? IS NULL OR Package = ?) ORDER BY Package, CreatedAt"
    );
    let package = package.map(Package::as_str);
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(user.as_str())
        .bind(package)
        .bind(package)
        .fetch_all(pool)
        .await
        .map_err(classify)?;
    rows.iter().map(subscription_from_row).collect()
}

const ADD_MEMBER: &str = "\
    INSERT INTO axion_push_group_member (Package, GroupName, User, AddedAt) \
    VALUES (?, ?, ?, CURRENT_TIMESTAMP) ON CONFLICT DO NOTHING";
const REMOVE_MEMBER: &str =
    "DELETE FROM axion_push_group_member WHERE Package = ? AND GroupName = ? AND User = ?";
const CLEAR_GROUP: &str = "DELETE FROM axion_push_group_member WHERE Package = ? AND GroupName = ?";
const MEMBERS: &str =
    "SELECT User FROM axion_push_group_member WHERE Package = ? AND GroupName = ? ORDER BY User";
const COUNT_MEMBERS: &str =
    "SELECT COUNT(*) FROM axion_push_group_member WHERE Package = ? AND GroupName = ?";

pub(super) async fn change_members(
    pool: &SqlitePool,
    package: &Package,
    group: &Group,
    change: &MembersChange,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await.map_err(classify)?;
    let (add, remove): (&[User], &[User]) = match change {
        MembersChange::Edit { add, remove } => (add, remove),
        MembersChange::Set(users) => {
            sqlx::query(CLEAR_GROUP)
                .bind(package.as_str())
                .bind(group.as_str())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            (users, &[])
        }
    };
    for user in remove {
        sqlx::query(REMOVE_MEMBER)
            .bind(package.as_str())
            .bind(group.as_str())
            .bind(user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    }
    for user in add {
        sqlx::query(ADD_MEMBER)
            .bind(package.as_str())
            .bind(group.as_str())
            .bind(user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    }
    let count: i64 = sqlx::query_scalar(COUNT_MEMBERS)
        .bind(package.as_str())
        .bind(group.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
    tx.commit().await.map_err(classify)?;
    Ok(count.try_into().unwrap_or_default())
}

pub(super) async fn members(
    pool: &SqlitePool,
    package: &Package,
    group: &Group,
) -> Result<Vec<User>, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(MEMBERS)
        .bind(package.as_str())
        .bind(group.as_str())
        .fetch_all(pool)
        .await
        .map_err(classify)?;
    // Names were validated when added; one that no longer parses (a table
    // edited by hand) is skipped rather than failing the whole group.
    Ok(names.iter().filter_map(|n| User::parse(n).ok()).collect())
}

//! The MariaDB/MySQL backend: subscriptions and groups here, the delivery
//! queue in `queue.rs`. Statements are named constants, one small function
//! per intent.
//!
//! Axion's table is used as its installation created it: its columns take
//! the database's default collation, usually case-insensitive, and its key
//! indexes the first 255 characters of `Endpoint` only. Every comparison
//! with it is therefore written twice (see [`exact!`]): once under the
//! column's own collation, which lets the server use Axion's key, and once
//! under `utf8mb4_bin`, which keeps only the rows holding that very string.
//! Our own tables are `utf8mb4_bin` throughout.
//!
//! Connections run at READ COMMITTED: the queue relies on row locks
//! (`FOR UPDATE [SKIP LOCKED]`), not on snapshots, and REPEATABLE READ's gap
//! locks would make a claim block the inserts of a new send, and a scan of
//! Axion's table lock rows Axion's own software writes.

mod queue;
mod receipts;
mod subscription_health;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection, MySqlPool, SqlSafeStr};

use super::{
    Backend, DatabaseInfo, StoreError, StoredSubscription, Subscribed, Takeover, endpoint_lock_key,
    missing_columns, redact_url,
};
use crate::config::DatabaseSettings;
use crate::model::{Package, Subscription, User};

/// Our migrations' bookkeeping: sqlx's default `_sqlx_migrations` would be
/// a stranger in Axion's schema.
const MIGRATIONS: &str = "axion_push_migrations";

/// The migrations, compiled in so an installed binary needs no files beside
/// it (built by hand, as for SQLite, to keep sqlx's macros out of the
/// build). Versions and descriptions are SQLite's: one history per schema.
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
    let mut migrator = Migrator::with_migrations(vec![
        step(
            1,
            "axion subscription table",
            include_str!("../../../migrations/mysql/0001_axion_subscription_table.sql"),
        ),
        step(
            2,
            "axion-push groups",
            include_str!("../../../migrations/mysql/0002_axion_push_groups.sql"),
        ),
        step(
            3,
            "axion-push delivery queue",
            include_str!("../../../migrations/mysql/0003_axion_push_delivery_queue.sql"),
        ),
        step(
            4,
            "axion-push publication",
            include_str!("../../../migrations/mysql/0004_axion_push_publication.sql"),
        ),
        step(
            5,
            "axion-push receipts",
            include_str!("../../../migrations/mysql/0005_axion_push_receipt.sql"),
        ),
        step(
            6,
            "axion-push subscription health",
            include_str!("../../../migrations/mysql/0006_axion_push_subscription_health.sql"),
        ),
        step(
            7,
            "axion-push receipt command",
            include_str!("../../../migrations/mysql/0007_axion_push_receipt_command.sql"),
        ),
    ]);
    migrator.dangerous_set_table_name(MIGRATIONS);
    migrator
}

/// How long a statement waits for a connection from the pool before the
/// database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection: every statement the store
/// uses, in every shape (see `queue::shape`), fewer than 200, so none is
/// ever closed to make room. (The server's `max_prepared_stmt_count`,
/// 16,382 by default, allows this for dozens of connections.)
const STATEMENT_CACHE: usize = 256;

/// Set on every new connection. A row lock is held for one short
/// transaction; one held for long belongs to a client that is gone, so a
/// statement waits 10 s for it (not InnoDB's default 50) and then fails as
/// transient (1205), to be tried again.
const SESSION_ISOLATION: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";
const SESSION_LOCK_WAIT: &str = "SET SESSION innodb_lock_wait_timeout = 10";

#[derive(Clone)]
pub(super) struct MySql {
    pool: MySqlPool,
    /// Whether the server knows `FOR UPDATE SKIP LOCKED` (MariaDB 10.6,
    /// MySQL 8.0.1): without it claims wait for each other's rows, and only
    /// one daemon may use the database.
    skip_locked: bool,
    /// Where this process's claims stand (see `queue.rs`).
    claim_cursors: queue::ClaimCursors,
}

/// Server error numbers that describe the server's or the connection's
/// state rather than the statement: the same statement may succeed later.
const TRANSIENT_ERRORS: [u16; 15] = [
    1040, // too many connections
    1053, // server shutdown in progress
    1158, // network read error
    1159, // network read timed out
    1160, // network write error
    1161, // network write timed out
    1203, // the user's max_user_connections reached
    1205, // lock wait timeout
    1213, // deadlock: the transaction was rolled back
    1317, // query interrupted (KILL QUERY, shutdown)
    1927, // connection killed (MariaDB)
    2002, // cannot connect (socket)
    2003, // cannot connect (TCP)
    2006, // server has gone away
    2013, // lost connection during a query
];

/// MySQL's number for a duplicate key.
pub(super) const DUPLICATE_KEY: u16 = 1062;

pub(super) fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// Whether a database error is one of MariaDB/MySQL's temporary ones.
pub(super) fn is_transient(db: &dyn DatabaseError) -> bool {
    db.try_downcast_ref::<MySqlDatabaseError>()
        .is_some_and(|e| TRANSIENT_ERRORS.contains(&e.number()))
}

/// Whether a server of this `VERSION()` knows `SKIP LOCKED`: MariaDB from
/// 10.6, MySQL from 8.0.1.
fn has_skip_locked(version: &str) -> bool {
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(0),
    );
    if version.contains("MariaDB") {
        (major, minor) >= (10, 6)
    } else {
        (major, minor, patch) >= (8, 0, 1)
    }
}

/// `column` equal to the next parameter, exactly; bind the value twice.
/// The first comparison, under the column's own collation, lets the server
/// use Axion's key; the second, under `utf8mb4_bin`, drops the rows that
/// only collate equal (`ABC` for `abc`). The parameter carries the
/// explicit collation, so a column in another character set (latin1,
/// utf8mb3) is converted to it, not the other way round.
macro_rules! exact {
    ($column:literal) => {
        concat!(
            "(",
            $column,
            " = ? AND ",
            $column,
            " = ? COLLATE utf8mb4_bin)"
        )
    };
}

/// A subscription counts as active when `Active` is 'Y' or, as older
/// software left it, NULL — in every statement alike. Compared as bytes:
/// under Axion's collation 'y' would count too.
macro_rules! active {
    () => {
        "(Active IS NULL OR CAST(Active AS BINARY) = 'Y')"
    };
}
pub(super) use {active, exact};

/// Whether another user of the package has the endpoint active. (A scan
/// of Axion's table, as below.)
const ENDPOINT_ACTIVE_FOR_OTHERS: &str = concat!(
    "SELECT COUNT(*) FROM def_notify_push_subscription WHERE ",
    exact!("Package"),
    " AND ",
    exact!("Endpoint"),
    " AND User <> ? COLLATE utf8mb4_bin AND ",
    active!()
);

/// Takes and gives back an endpoint's named lock (see [`EndpointLock`]).
/// `GET_LOCK` waits as long as a row lock does, then answers 0; 1 is
/// taken, NULL an error (the statement killed).
const LOCK_ENDPOINT: &str = "SELECT GET_LOCK(?, 10)";
const UNLOCK_ENDPOINT: &str = "SELECT RELEASE_LOCK(?)";

/// Deactivates the other users' rows for a browser: it belongs to the
/// account that subscribed it last. (No index of Axion's starts with
/// `Package` or `Endpoint`, and none is added to its table: this scans it.)
const DEACTIVATE_ENDPOINT_FOR_OTHERS: &str = concat!(
    "UPDATE def_notify_push_subscription SET Active = 'N' WHERE ",
    exact!("Package"),
    " AND ",
    exact!("Endpoint"),
    " AND User <> ? COLLATE utf8mb4_bin AND ",
    active!()
);

/// Records the subscription. Axion's key holds the first 255 characters of
/// the endpoint, under the table's collation: a row that collides with it
/// there is the same browser's (a push service that re-issued a long
/// endpoint), or a browser whose other account just lost it above, and
/// this row replaces it — user and endpoint included. (Parameters twice:
/// `VALUES()` is deprecated in MySQL, and MariaDB has no row alias.)
const UPSERT_SUBSCRIPTION: &str = "\
    INSERT INTO def_notify_push_subscription \
        (User, Package, Module, Endpoint, KeysP256dh, KeysAuth, UserAgent, CreatedAt, Active) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'Y') \
    ON DUPLICATE KEY UPDATE User = ?, Package = ?, Module = ?, Endpoint = ?, \
        KeysP256dh = ?, KeysAuth = ?, UserAgent = ?, Active = 'Y'";

/// `CreatedAt` for a new row: now, or a second after the user's newest row
/// in the package when that is not earlier. The column holds whole seconds
/// and the per-user limit evicts the oldest first (Axion's table has no
/// other trace of order), so subscriptions within one second must still
/// read in the order they came.
const CREATED_AT: &str = concat!(
    "SELECT CAST(GREATEST(CURRENT_TIMESTAMP, \
         COALESCE(MAX(CreatedAt) + INTERVAL 1 SECOND, CURRENT_TIMESTAMP)) AS CHAR) \
     FROM def_notify_push_subscription WHERE ",
    exact!("User"),
    " AND ",
    exact!("Package")
);

/// The user's other active subscriptions in the package.
const COUNT_OTHERS_ACTIVE: &str = concat!(
    "SELECT COUNT(*) FROM def_notify_push_subscription WHERE ",
    exact!("User"),
    " AND ",
    exact!("Package"),
    " AND Endpoint <> ? COLLATE utf8mb4_bin AND ",
    active!()
);

/// Deactivates the `?` oldest of them: a row without `CreatedAt` counts as
/// the oldest. (MySQL allows no `LIMIT` in an `IN` subquery, nor a subquery
/// on the table being updated: the count above says how many.)
const EVICT_OLDEST: &str = concat!(
    "UPDATE def_notify_push_subscription SET Active = 'N' WHERE ",
    exact!("User"),
    " AND ",
    exact!("Package"),
    " AND Endpoint <> ? COLLATE utf8mb4_bin AND ",
    active!(),
    " ORDER BY CreatedAt IS NOT NULL, CreatedAt, Endpoint LIMIT ?"
);

const COUNT_ACTIVE: &str = concat!(
    "SELECT COUNT(*) FROM def_notify_push_subscription WHERE ",
    exact!("User"),
    " AND ",
    exact!("Package"),
    " AND ",
    active!()
);

const DEACTIVATE: &str = concat!(
    "UPDATE def_notify_push_subscription SET Active = 'N' WHERE ",
    exact!("User"),
    " AND ",
    exact!("Package"),
    " AND ",
    exact!("Endpoint"),
    " AND ",
    active!()
);

const SUBSCRIPTIONS: &str = concat!(
    "SELECT User, Package, Module, Endpoint, KeysP256dh, KeysAuth, UserAgent, \
        CAST(CreatedAt AS CHAR) AS CreatedAt, Active \
     FROM def_notify_push_subscription WHERE ",
    exact!("User"),
    " AND (? IS NULL OR ",
    exact!("Package"),
    ") ORDER BY Package, CreatedAt"
);

/// Run once per member (see `edit_members`).
const ADD_MEMBERS: &str = "\
    INSERT INTO axion_push_group_member (Package, GroupName, User, AddedAt) \
    VALUES (?, ?, ?, CURRENT_TIMESTAMP) ON DUPLICATE KEY UPDATE AddedAt = AddedAt";
/// Run once per member.
const REMOVE_MEMBERS: &str =
    "DELETE FROM axion_push_group_member WHERE Package = ? AND GroupName = ? AND User = ?";
const CLEAR_GROUP: &str = "DELETE FROM axion_push_group_member WHERE Package = ? AND GroupName = ?";
const MEMBERS: &str =
    "SELECT User FROM axion_push_group_member WHERE Package = ? AND GroupName = ? ORDER BY User";
const COUNT_MEMBERS: &str =
    "SELECT COUNT(*) FROM axion_push_group_member WHERE Package = ? AND GroupName = ?";

const VERSION: &str = "SELECT VERSION()";
const AXION_TABLE_COLUMNS: &str = "\
    SELECT COLUMN_NAME FROM information_schema.columns \
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'def_notify_push_subscription'";

impl MySql {
    super::shared::groups!();
    super::shared::change_members!();

    pub(super) async fn open(settings: &DatabaseSettings) -> Result<MySql, StoreError> {
        let open_error = |e: sqlx::Error| StoreError::Open {
            url: redact_url(&settings.url),
            reason: e.to_string(),
        };
        // sqlx reads `mysql://` only; MariaDB speaks the same protocol.
        let url = match settings.url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => settings.url.clone(),
        };
        // sqlx's parse errors do not repeat the URL, so they may be shown.
        let mut options = MySqlConnectOptions::from_str(&url).map_err(open_error)?;
        // sqlx sets the session's time zone to UTC; `CreatedAt` in Axion's
        // table is then written in the server's own zone, as Axion's
        // `NOW()` writes it, unless the URL names a zone. (The queue's
        // times do not depend on it: see `now_ms!`.)
        let names_zone = url::Url::parse(&url).is_ok_and(|u| {
            u.query_pairs()
                .any(|(k, _)| k == "timezone" || k == "time-zone")
        });
        if !names_zone {
            options = options.timezone(None);
        }
        options = options.statement_cache_capacity(STATEMENT_CACHE);
        if options.get_database().is_none_or(str::is_empty) {
            return Err(StoreError::Open {
                url: redact_url(&settings.url),
                reason: "the URL names no database (mysql://user@host:3306/axion)".into(),
            });
        }
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(SESSION_ISOLATION).await?;
                    conn.execute(SESSION_LOCK_WAIT).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let version: String = sqlx::query_scalar(VERSION)
            .fetch_one(&pool)
            .await
            .map_err(open_error)?;
        Ok(MySql {
            pool,
            skip_locked: has_skip_locked(&version),
            claim_cursors: queue::ClaimCursors::default(),
        })
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        migrator()
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)
    }

    pub(super) async fn info(&self) -> Result<DatabaseInfo, StoreError> {
        let version: String = sqlx::query_scalar(VERSION).fetch_one(&self.pool).await?;
        let columns: Vec<String> = sqlx::query_scalar(AXION_TABLE_COLUMNS)
            .fetch_all(&self.pool)
            .await?;
        Ok(DatabaseInfo {
            backend: Backend::MySql,
            version,
            axion_table_missing_columns: missing_columns(&columns),
            skip_locked: self.skip_locked,
        })
    }

    pub(super) async fn upsert_subscription(
        &self,
        package: &Package,
        user: &User,
        s: &Subscription,
        max_active: usize,
        takeover: Takeover,
    ) -> Result<Option<Subscribed>, StoreError> {
        let (package, user, endpoint) = (package.as_str(), user.as_str(), s.endpoint.as_str());
        let (p256dh, auth) = (s.keys.p256dh_text(), s.keys.auth_text());
        let (module, user_agent) = (s.module.as_deref(), s.user_agent.as_deref());
        // Refusing to take the endpoint from others: its lock is held from
        // the check to the commit. (An error on the way closes the
        // connection, and the lock with it.)
        let mut lock = match takeover {
            Takeover::Allowed => None,
            Takeover::Refused => Some(EndpointLock::take(&self.pool, package, endpoint).await?),
        };
        let mut pooled;
        let conn: &mut MySqlConnection = match &mut lock {
            Some(lock) => lock.connection(),
            None => {
                pooled = self.pool.acquire().await?;
                &mut pooled
            }
        };
        let mut tx = conn.begin().await?;
        if takeover == Takeover::Refused
            && endpoint_active_for_others(&mut tx, package, user, endpoint).await?
        {
            tx.rollback().await?;
            if let Some(lock) = lock {
                lock.release().await;
            }
            return Ok(None);
        }
        let taken = sqlx::query(DEACTIVATE_ENDPOINT_FOR_OTHERS)
            .bind(package)
            .bind(package)
            .bind(endpoint)
            .bind(endpoint)
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let created_at: String = sqlx::query_scalar(CREATED_AT)
            .bind(user)
            .bind(user)
            .bind(package)
            .bind(package)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(UPSERT_SUBSCRIPTION)
            .bind(user)
            .bind(package)
            .bind(module)
            .bind(endpoint)
            .bind(&p256dh)
            .bind(&auth)
            .bind(user_agent)
            .bind(&created_at)
            .bind(user)
            .bind(package)
            .bind(module)
            .bind(endpoint)
            .bind(&p256dh)
            .bind(&auth)
            .bind(user_agent)
            .execute(&mut *tx)
            .await?;
        let others: i64 = sqlx::query_scalar(COUNT_OTHERS_ACTIVE)
            .bind(user)
            .bind(user)
            .bind(package)
            .bind(package)
            .bind(endpoint)
            .fetch_one(&mut *tx)
            .await?;
        let keep_others = i64::try_from(max_active.saturating_sub(1)).unwrap_or(i64::MAX);
        let evicted = if others > keep_others {
            sqlx::query(EVICT_OLDEST)
                .bind(user)
                .bind(user)
                .bind(package)
                .bind(package)
                .bind(endpoint)
                .bind(others - keep_others)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        } else {
            0
        };
        let active: i64 = sqlx::query_scalar(COUNT_ACTIVE)
            .bind(user)
            .bind(user)
            .bind(package)
            .bind(package)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        if let Some(lock) = lock {
            lock.release().await;
        }
        Ok(Some(Subscribed {
            active: active.try_into().unwrap_or_default(),
            taken_from_others: taken,
            evicted,
        }))
    }

    pub(super) async fn deactivate(
        &self,
        package: &Package,
        user: &User,
        endpoint: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(DEACTIVATE)
            .bind(user.as_str())
            .bind(user.as_str())
            .bind(package.as_str())
            .bind(package.as_str())
            .bind(endpoint)
            .bind(endpoint)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn subscriptions(
        &self,
        user: &User,
        package: Option<&Package>,
    ) -> Result<Vec<StoredSubscription>, StoreError> {
        let package = package.map(Package::as_str);
        let rows = sqlx::query(SUBSCRIPTIONS)
            .bind(user.as_str())
            .bind(user.as_str())
            .bind(package)
            .bind(package)
            .bind(package)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(crate::store::rows::subscription).collect()
    }
}

/// Whether another user of the package has `endpoint` active.
async fn endpoint_active_for_others(
    conn: &mut MySqlConnection,
    package: &str,
    user: &str,
    endpoint: &str,
) -> Result<bool, StoreError> {
    let others: i64 = sqlx::query_scalar(ENDPOINT_ACTIVE_FOR_OTHERS)
        .bind(package)
        .bind(package)
        .bind(endpoint)
        .bind(endpoint)
        .bind(user)
        .fetch_one(conn)
        .await?;
    Ok(others > 0)
}

/// An endpoint's named lock (`GET_LOCK`), held by the session of one pooled
/// connection: with no index of its own on `Endpoint` in Axion's table, no
/// row or gap lock can keep two users' first subscribes of one endpoint
/// apart, and a locking scan would wait for every row anyone holds. A named
/// lock is not transactional: it outlives commit and rollback, and a
/// connection back in the pool would keep it. So it is released on purpose,
/// and a connection whose release did not happen (an error, a cancelled
/// command) is closed instead of returned: the server drops its session's
/// locks with it.
struct EndpointLock {
    conn: Option<PoolConnection<sqlx::MySql>>,
    name: String,
}

impl EndpointLock {
    async fn take(
        pool: &MySqlPool,
        package: &str,
        endpoint: &str,
    ) -> Result<EndpointLock, StoreError> {
        let key = endpoint_lock_key(package, endpoint);
        let hex: String = key[..20].iter().map(|b| format!("{b:02x}")).collect();
        let conn = pool.acquire().await?;
        let mut lock = EndpointLock {
            conn: Some(conn),
            // At most 64 characters, server-wide.
            name: format!("axion-push {hex}"),
        };
        let taken: Option<i64> = sqlx::query_scalar(LOCK_ENDPOINT)
            .bind(lock.name.clone())
            .fetch_one(lock.connection())
            .await?;
        if taken != Some(1) {
            return Err(StoreError::EndpointLocked);
        }
        Ok(lock)
    }

    fn connection(&mut self) -> &mut MySqlConnection {
        self.conn
            .as_mut()
            .expect("the connection is held until released")
    }

    /// Gives the lock back, and the connection to the pool; if that fails,
    /// the connection is closed, which gives the lock back too.
    async fn release(mut self) {
        let released = sqlx::query_scalar::<_, Option<i64>>(UNLOCK_ENDPOINT)
            .bind(self.name.clone())
            .fetch_one(self.connection())
            .await;
        if released.is_ok() {
            self.conn = None;
        }
    }
}

impl Drop for EndpointLock {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.conn {
            conn.close_on_drop();
        }
    }
}

super::shared::edit_members_one_by_one!(sqlx::MySqlConnection);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_locked_is_known_from_mariadb_10_6_and_mysql_8_0_1() {
        assert!(has_skip_locked("10.11.19-MariaDB-0+deb12u1"));
        assert!(has_skip_locked("10.6.0-MariaDB"));
        assert!(!has_skip_locked("10.5.23-MariaDB-log"));
        assert!(has_skip_locked("11.4.2-MariaDB"));
        assert!(has_skip_locked("8.0.36"));
        assert!(has_skip_locked("8.4.0-commercial"));
        assert!(!has_skip_locked("8.0.0-dmr"));
        assert!(!has_skip_locked("5.7.44-log"));
    }

    #[tokio::test]
    async fn a_url_without_a_database_is_refused_without_its_password() {
        let settings = DatabaseSettings {
            url: "mariadb://axion:hunter2@db.example:3306".into(),
            ..DatabaseSettings::default()
        };
        let Err(e) = MySql::open(&settings).await else {
            panic!("opened a server without a database");
        };
        let shown = e.to_string();
        assert!(shown.contains("names no database"), "{shown}");
        assert!(
            shown.contains("db.example") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}

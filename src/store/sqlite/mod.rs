//! The SQLite backend: subscriptions and groups here, the delivery queue
//! in `queue.rs`. Statements are named constants, one small function per
//! intent.

mod queue;
mod receipts;
mod subscription_health;

use std::borrow::Cow;
use std::str::FromStr;

use sqlx::error::DatabaseError;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlitePool};

use super::{
    Backend, DatabaseInfo, StoreError, StoredSubscription, Subscribed, Takeover, missing_columns,
    redact_url,
};
use crate::config::DatabaseSettings;
use crate::model::{Package, Subscription, User};

/// Where sqlx would keep its bookkeeping; ours is `axion_push_migrations`,
/// and an installation migrated before keeps its history under the new name.
const SQLX_MIGRATIONS: &str = "_sqlx_migrations";
const MIGRATIONS: &str = "axion_push_migrations";

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
    let mut migrator = Migrator::with_migrations(vec![
        step(
            1,
            "axion subscription table",
            include_str!("../../../migrations/sqlite/0001_axion_subscription_table.sql"),
        ),
        step(
            2,
            "axion-push groups",
            include_str!("../../../migrations/sqlite/0002_axion_push_groups.sql"),
        ),
        step(
            3,
            "axion-push delivery queue",
            include_str!("../../../migrations/sqlite/0003_axion_push_delivery_queue.sql"),
        ),
        step(
            4,
            "axion-push publication",
            include_str!("../../../migrations/sqlite/0004_axion_push_publication.sql"),
        ),
        step(
            5,
            "axion-push receipts",
            include_str!("../../../migrations/sqlite/0005_axion_push_receipt.sql"),
        ),
        step(
            6,
            "axion-push subscription health",
            include_str!("../../../migrations/sqlite/0006_axion_push_subscription_health.sql"),
        ),
        step(
            7,
            "axion-push receipt command",
            include_str!("../../../migrations/sqlite/0007_axion_push_receipt_command.sql"),
        ),
    ]);
    migrator.dangerous_set_table_name(MIGRATIONS);
    migrator
}

#[derive(Clone)]
pub(super) struct Sqlite {
    pool: SqlitePool,
}

/// SQLite result codes (low byte of the extended code) that describe the
/// database's state rather than the statement: busy, locked, read-only,
/// I/O error, full, cannot open.
const TRANSIENT_CODES: [i64; 6] = [5, 6, 8, 10, 13, 14];

/// Whether a database error is one of SQLite's temporary ones.
pub(super) fn is_transient(db: &dyn DatabaseError) -> bool {
    db.try_downcast_ref::<SqliteError>()
        .and_then(|e| e.code())
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| TRANSIENT_CODES.contains(&(c & 0xff)))
}

/// A subscription counts as active when `Active` is 'Y' or, as older
/// software left it, NULL — in every statement alike.
macro_rules! active {
    () => {
        "(Active = 'Y' OR Active IS NULL)"
    };
}

const UPSERT_SUBSCRIPTION: &str = "\
    INSERT INTO def_notify_push_subscription \
        (User, Package, Module, Endpoint, KeysP256dh, KeysAuth, UserAgent, CreatedAt, Active) \
    VALUES (?, ?, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP, 'Y') \
    ON CONFLICT (User, Package, Endpoint) DO UPDATE SET \
        Module = excluded.Module, KeysP256dh = excluded.KeysP256dh, \
        KeysAuth = excluded.KeysAuth, UserAgent = excluded.UserAgent, Active = 'Y'";

/// Whether another user of the package has the endpoint active.
const ENDPOINT_ACTIVE_FOR_OTHERS: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM def_notify_push_subscription \
     WHERE Package = ? AND Endpoint = ? AND User <> ? AND ",
    active!(),
    ")"
);

const DEACTIVATE_ENDPOINT_FOR_OTHERS: &str = concat!(
    "UPDATE def_notify_push_subscription SET Active = 'N' \
     WHERE Package = ? AND Endpoint = ? AND User <> ? AND ",
    active!()
);

/// Keeps the `?` newest other active subscriptions of the user in the
/// package (`LIMIT -1 OFFSET n`: all rows after the first n). A row without
/// `CreatedAt` counts as the oldest.
const EVICT_OLDEST: &str = concat!(
    "UPDATE def_notify_push_subscription SET Active = 'N' \
     WHERE User = ? AND Package = ? AND ",
    active!(),
    " AND Endpoint IN ( \
        SELECT Endpoint FROM def_notify_push_subscription \
        WHERE User = ? AND Package = ? AND ",
    active!(),
    " AND Endpoint <> ? \
        ORDER BY CreatedAt IS NULL, CreatedAt DESC, rowid DESC LIMIT -1 OFFSET ?)"
);

const COUNT_ACTIVE: &str = concat!(
    "SELECT COUNT(*) FROM def_notify_push_subscription WHERE User = ? AND Package = ? AND ",
    active!()
);

const DEACTIVATE: &str = concat!(
    "UPDATE def_notify_push_subscription SET Active = 'N' \
     WHERE User = ? AND Package = ? AND Endpoint = ? AND ",
    active!()
);

const SUBSCRIPTIONS: &str = "\
    SELECT User, Package, Module, Endpoint, KeysP256dh, KeysAuth, UserAgent, \
        CAST(CreatedAt AS TEXT) AS CreatedAt, Active \
    FROM def_notify_push_subscription \
    WHERE User = ? AND (? IS NULL OR Package = ?) ORDER BY Package, CreatedAt";

/// Run once per member (see `edit_members`).
const ADD_MEMBERS: &str = "\
    INSERT INTO axion_push_group_member (Package, GroupName, User, AddedAt) \
    VALUES (?, ?, ?, CURRENT_TIMESTAMP) ON CONFLICT DO NOTHING";
/// Run once per member.
const REMOVE_MEMBERS: &str =
    "DELETE FROM axion_push_group_member WHERE Package = ? AND GroupName = ? AND User = ?";
const CLEAR_GROUP: &str = "DELETE FROM axion_push_group_member WHERE Package = ? AND GroupName = ?";
const MEMBERS: &str =
    "SELECT User FROM axion_push_group_member WHERE Package = ? AND GroupName = ? ORDER BY User";
const COUNT_MEMBERS: &str =
    "SELECT COUNT(*) FROM axion_push_group_member WHERE Package = ? AND GroupName = ?";

/// Rows sqlx may hand over from SQLite's thread before the caller takes
/// them: more than a claim or a settle statement returns. Only a batch of
/// sends to users with many browsers returns more, and then SQLite's
/// thread waits for the caller now and then, as it did for every row.
const ROW_BUFFER: usize = 1024;

impl Sqlite {
    super::shared::groups!();
    super::shared::change_members!();
    super::shared::deactivate!();

    pub(super) async fn open(settings: &DatabaseSettings) -> Result<Sqlite, StoreError> {
        let open_error = |e: sqlx::Error| StoreError::Open {
            url: redact_url(&settings.url),
            reason: e.to_string(),
        };
        let options = SqliteConnectOptions::from_str(&settings.url).map_err(open_error)?;
        create_private(&options, &settings.url);
        let options = options
            .create_if_missing(true)
            // WAL lets the CLI read while the daemon writes; NORMAL is
            // durable across process crashes, which is what a daemon needs.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(settings.busy_timeout)
            // sqlx runs SQLite on a thread of its own and hands rows over
            // through a channel of this size; with its default (50) a claim
            // or a batch's RETURNING stalled that thread again and again
            // until the caller took the rows, a thread switch per row or so
            // (1.3 per send in the many-sends benchmark).
            .row_buffer_size(ROW_BUFFER)
            // SQLite's default puts statement journals and sorting scratch
            // in temporary files: in the many-sends benchmark it created and
            // unlinked one every 160 sends (an open, an unlink and their
            // metadata writes each time) for data that fits in memory.
            .pragma("temp_store", "memory");
        // One connection, whatever `max_connections` says: SQLite takes one
        // write lock for the whole file, so a second connection of ours
        // would only wait for the first (sleeping in its busy handler) and
        // drop its page cache at every commit of the other. Measured on the
        // load benchmark's many-sends workload: 4 connections 1,600
        // pushes/s, 1 connection 2,700.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            // The connection lives in this process and cannot go stale; a
            // test before each use is one more round trip to its thread.
            .test_before_acquire(false)
            .acquire_timeout(settings.busy_timeout.max(std::time::Duration::from_secs(1)))
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Ok(Sqlite { pool })
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let migrate_error = |e| StoreError::Migrate(MigrateError::Execute(e));
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&self.pool)
                .await
                .map_err(migrate_error)?;
        if tables.iter().any(|t| t == SQLX_MIGRATIONS) && !tables.iter().any(|t| t == MIGRATIONS) {
            sqlx::query(AssertSqlSafe(format!(
                "ALTER TABLE {SQLX_MIGRATIONS} RENAME TO {MIGRATIONS}"
            )))
            .execute(&self.pool)
            .await
            .map_err(migrate_error)?;
        }
        migrator()
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)
    }

    pub(super) async fn info(&self) -> Result<DatabaseInfo, StoreError> {
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&self.pool)
            .await?;
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM pragma_table_info('def_notify_push_subscription')",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(DatabaseInfo {
            backend: Backend::Sqlite,
            version,
            axion_table_missing_columns: missing_columns(&columns),
            // SQLite lets one writer at a time in: claims never collide.
            skip_locked: true,
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
        // IMMEDIATE: the write lock from the start, so the check below sees
        // every other subscribe's rows and none comes in before ours.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if takeover == Takeover::Refused
            && endpoint_active_for_others(&mut tx, package, user, s.endpoint.as_str()).await?
        {
            tx.rollback().await?;
            return Ok(None);
        }
        let taken = sqlx::query(DEACTIVATE_ENDPOINT_FOR_OTHERS)
            .bind(package.as_str())
            .bind(s.endpoint.as_str())
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?
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
            .await?;
        let keep_others = i64::try_from(max_active.saturating_sub(1)).unwrap_or(i64::MAX);
        let evicted = sqlx::query(EVICT_OLDEST)
            .bind(user.as_str())
            .bind(package.as_str())
            .bind(user.as_str())
            .bind(package.as_str())
            .bind(s.endpoint.as_str())
            .bind(keep_others)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let active: i64 = sqlx::query_scalar(COUNT_ACTIVE)
            .bind(user.as_str())
            .bind(package.as_str())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Subscribed {
            active: active.try_into().unwrap_or_default(),
            taken_from_others: taken,
            evicted,
        }))
    }

    pub(super) async fn subscriptions(
        &self,
        user: &User,
        package: Option<&Package>,
    ) -> Result<Vec<StoredSubscription>, StoreError> {
        let package = package.map(Package::as_str);
        let rows = sqlx::query(SUBSCRIPTIONS)
            .bind(user.as_str())
            .bind(package)
            .bind(package)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(crate::store::rows::subscription).collect()
    }
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

super::shared::endpoint_active_for_others!(sqlx::SqliteConnection);

super::shared::edit_members_one_by_one!(sqlx::SqliteConnection);

//! The PostgreSQL backend: subscriptions and groups here, the delivery
//! queue in `queue.rs`. Statements are named constants, one small function
//! per intent.
//!
//! Every identifier is quoted. Unquoted, PostgreSQL folds names to lower
//! case, and `User` is a reserved word: `WHERE User = $1` compares
//! `current_user`, true for every row when a user is named like the role
//! the daemon connects as.
//!
//! Axion's table keeps `char(255)` columns, which PostgreSQL pads with
//! spaces. They are read as `text` (the cast drops the padding) and compared
//! with parameters cast to `bpchar`: compared with `text` instead, the
//! column would be cast and its primary key left unused.

mod queue;
mod receipts;
mod subscription_health;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

use super::{
    Backend, DatabaseInfo, StoreError, StoredSubscription, Subscribed, Takeover, endpoint_lock_key,
    missing_columns, redact_url,
};
use crate::config::DatabaseSettings;
use crate::model::{Group, Package, Subscription, User};

/// Our bookkeeping table: sqlx's default `_sqlx_migrations` would be a
/// stranger in Axion's schema.
const MIGRATIONS: &str = "axion_push_migrations";

/// How long a statement waits for a connection from the pool before it
/// fails as transient (the server down, or every connection busy).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shown in `pg_stat_activity`, so an administrator can tell the daemon's
/// connections from the rest.
const APPLICATION_NAME: &str = "axion-push";

/// The migrations, compiled in so an installed binary needs no files beside
/// it (built by hand as SQLite's are: no sqlx macros in the build).
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
            include_str!("../../../migrations/postgres/0001_axion_subscription_table.sql"),
        ),
        step(
            2,
            "axion-push groups",
            include_str!("../../../migrations/postgres/0002_axion_push_groups.sql"),
        ),
        step(
            3,
            "axion-push delivery queue",
            include_str!("../../../migrations/postgres/0003_axion_push_delivery_queue.sql"),
        ),
        step(
            4,
            "axion-push publication",
            include_str!("../../../migrations/postgres/0004_axion_push_publication.sql"),
        ),
        step(
            5,
            "axion-push digest index",
            include_str!("../../../migrations/postgres/0005_axion_push_digest_partial.sql"),
        ),
        step(
            6,
            "axion-push receipts",
            include_str!("../../../migrations/postgres/0006_axion_push_receipt.sql"),
        ),
        step(
            7,
            "axion-push subscription health",
            include_str!("../../../migrations/postgres/0007_axion_push_subscription_health.sql"),
        ),
        step(
            8,
            "axion-push receipt command",
            include_str!("../../../migrations/postgres/0008_axion_push_receipt_command.sql"),
        ),
    ]);
    migrator.dangerous_set_table_name(MIGRATIONS);
    migrator
}

#[derive(Clone)]
pub(super) struct Postgres {
    pool: PgPool,
}

/// SQLSTATEs that describe the server or the connection rather than the
/// statement, so the same statement may well succeed later: serialization
/// failure, deadlock, lock wait timeout, too many connections, the server
/// shutting down, crashed or starting, and every connection exception
/// (class 08).
fn is_transient_state(code: &str) -> bool {
    matches!(
        code,
        "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03"
    ) || code.starts_with("08")
}

/// Whether a database error is one of PostgreSQL's temporary ones.
pub(super) fn is_transient(db: &dyn DatabaseError) -> bool {
    db.try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|e| is_transient_state(e.code()))
}

/// A subscription counts as active when `Active` is 'Y' or, as older
/// software left it, NULL — in every statement alike.
macro_rules! active {
    () => {
        "(\"Active\" = 'Y' OR \"Active\" IS NULL)"
    };
}

const UPSERT_SUBSCRIPTION: &str = "\
    INSERT INTO def_notify_push_subscription \
        (\"User\", \"Package\", \"Module\", \"Endpoint\", \"KeysP256dh\", \"KeysAuth\", \
         \"UserAgent\", \"CreatedAt\", \"Active\") \
    VALUES ($1, $2, $3, $4, $5, $6, $7, LOCALTIMESTAMP, 'Y') \
    ON CONFLICT (\"User\", \"Package\", \"Endpoint\") DO UPDATE SET \
        \"Module\" = EXCLUDED.\"Module\", \"KeysP256dh\" = EXCLUDED.\"KeysP256dh\", \
        \"KeysAuth\" = EXCLUDED.\"KeysAuth\", \"UserAgent\" = EXCLUDED.\"UserAgent\", \
        \"Active\" = 'Y'";

/// Whether another user of the package has the endpoint active.
const ENDPOINT_ACTIVE_FOR_OTHERS: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM def_notify_push_subscription \
     WHERE \"Package\" = $1::bpchar AND \"Endpoint\" = $2 AND \"User\" <> $3::bpchar AND ",
    active!(),
    ")"
);

/// Holds the endpoint's lock until the transaction ends, so subscribes of
/// one endpoint take turns: the check above must see the rows another
/// subscribe is inserting, which READ COMMITTED only shows once they are
/// committed (no row lock exists yet to wait for). The two-key form is
/// another key space than sqlx's migration lock; `$1` names ours, `$2`
/// is the endpoint's hash.
const LOCK_ENDPOINT: &str = "SELECT pg_advisory_xact_lock($1, $2)";

/// The first key of [`LOCK_ENDPOINT`]: "axps".
const ENDPOINT_LOCK_SPACE: i32 = 0x6178_7073;

const DEACTIVATE_ENDPOINT_FOR_OTHERS: &str = concat!(
    "UPDATE def_notify_push_subscription SET \"Active\" = 'N' \
     WHERE \"Package\" = $1::bpchar AND \"Endpoint\" = $2 AND \"User\" <> $3::bpchar AND ",
    active!()
);

/// Keeps the `$4` newest other active subscriptions of the user in the
/// package. A row without `CreatedAt` counts as the oldest; among rows
/// written in the same instant, the one written last (the highest `ctid`,
/// roughly) is kept.
const EVICT_OLDEST: &str = concat!(
    "UPDATE def_notify_push_subscription SET \"Active\" = 'N' \
     WHERE \"User\" = $1::bpchar AND \"Package\" = $2::bpchar AND ",
    active!(),
    " AND \"Endpoint\" IN ( \
        SELECT \"Endpoint\" FROM def_notify_push_subscription \
        WHERE \"User\" = $1::bpchar AND \"Package\" = $2::bpchar AND ",
    active!(),
    " AND \"Endpoint\" <> $3 \
        ORDER BY \"CreatedAt\" DESC NULLS LAST, ctid DESC OFFSET $4)"
);

const COUNT_ACTIVE: &str = concat!(
    "SELECT COUNT(*) FROM def_notify_push_subscription \
     WHERE \"User\" = $1::bpchar AND \"Package\" = $2::bpchar AND ",
    active!()
);

const DEACTIVATE: &str = concat!(
    "UPDATE def_notify_push_subscription SET \"Active\" = 'N' \
     WHERE \"User\" = $1::bpchar AND \"Package\" = $2::bpchar AND \"Endpoint\" = $3 AND ",
    active!()
);

/// Text without `char(255)`'s padding, `CreatedAt` as SQLite shows it; a
/// row without `CreatedAt` first, as the oldest.
const SUBSCRIPTIONS: &str = "\
    SELECT \"User\"::text AS \"User\", \"Package\"::text AS \"Package\", \
        \"Module\"::text AS \"Module\", \"Endpoint\"::text AS \"Endpoint\", \
        \"KeysP256dh\"::text AS \"KeysP256dh\", \"KeysAuth\"::text AS \"KeysAuth\", \
        \"UserAgent\"::text AS \"UserAgent\", \
        to_char(\"CreatedAt\", 'YYYY-MM-DD HH24:MI:SS') AS \"CreatedAt\", \
        \"Active\"::text AS \"Active\" \
    FROM def_notify_push_subscription \
    WHERE \"User\" = $1::bpchar AND ($2::text IS NULL OR \"Package\" = $2::bpchar) \
    ORDER BY \"Package\", \"CreatedAt\" NULLS FIRST";

/// Members added in one statement, in the order given.
const ADD_MEMBERS: &str = "\
    INSERT INTO axion_push_group_member (\"Package\", \"GroupName\", \"User\", \"AddedAt\") \
    SELECT $1, $2, u, LOCALTIMESTAMP FROM unnest($3::text[]) AS u ON CONFLICT DO NOTHING";
const REMOVE_MEMBERS: &str = "\
    DELETE FROM axion_push_group_member \
    WHERE \"Package\" = $1 AND \"GroupName\" = $2 AND \"User\" = ANY($3)";
const CLEAR_GROUP: &str =
    "DELETE FROM axion_push_group_member WHERE \"Package\" = $1 AND \"GroupName\" = $2";
const MEMBERS: &str = "\
    SELECT \"User\" FROM axion_push_group_member \
    WHERE \"Package\" = $1 AND \"GroupName\" = $2 ORDER BY \"User\"";
const COUNT_MEMBERS: &str = "\
    SELECT COUNT(*) FROM axion_push_group_member WHERE \"Package\" = $1 AND \"GroupName\" = $2";

const SERVER_VERSION: &str = "SHOW server_version";
/// `FOR UPDATE SKIP LOCKED` came with PostgreSQL 9.5.
const HAS_SKIP_LOCKED: &str = "SELECT current_setting('server_version_num')::int >= 90500";
/// Axion's table where the statements find it: in the current schema.
const AXION_TABLE_COLUMNS: &str = "\
    SELECT column_name::text FROM information_schema.columns \
    WHERE table_schema = current_schema() AND table_name = 'def_notify_push_subscription'";

impl Postgres {
    super::shared::groups!();
    super::shared::change_members!();
    super::shared::deactivate!();

    pub(super) async fn open(settings: &DatabaseSettings) -> Result<Postgres, StoreError> {
        let open_error = |e: sqlx::Error| StoreError::Open {
            url: redact_url(&settings.url),
            reason: without_password(&settings.url, e.to_string()),
        };
        let options = PgConnectOptions::from_str(&settings.url)
            .map_err(open_error)?
            .application_name(APPLICATION_NAME);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Ok(Postgres { pool })
    }

    /// sqlx's migrator holds an advisory lock meanwhile, so daemons starting
    /// together migrate one after the other.
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        migrator()
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)
    }

    pub(super) async fn info(&self) -> Result<DatabaseInfo, StoreError> {
        let version: String = sqlx::query_scalar(SERVER_VERSION)
            .fetch_one(&self.pool)
            .await?;
        let skip_locked: bool = sqlx::query_scalar(HAS_SKIP_LOCKED)
            .fetch_one(&self.pool)
            .await?;
        let columns: Vec<String> = sqlx::query_scalar(AXION_TABLE_COLUMNS)
            .fetch_all(&self.pool)
            .await?;
        Ok(DatabaseInfo {
            backend: Backend::Postgres,
            version,
            axion_table_missing_columns: missing_columns(&columns),
            skip_locked,
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
        let mut tx = self.pool.begin().await?;
        if takeover == Takeover::Refused {
            let key = endpoint_lock_key(package.as_str(), s.endpoint.as_str());
            sqlx::query(LOCK_ENDPOINT)
                .bind(ENDPOINT_LOCK_SPACE)
                .bind(i32::from_be_bytes([key[0], key[1], key[2], key[3]]))
                .execute(&mut *tx)
                .await?;
            if endpoint_active_for_others(&mut tx, package, user, s.endpoint.as_str()).await? {
                tx.rollback().await?;
                return Ok(None);
            }
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
        let rows = sqlx::query(SUBSCRIPTIONS)
            .bind(user.as_str())
            .bind(package.map(Package::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(crate::store::rows::subscription).collect()
    }
}

/// `statement` with the users as one array parameter, sorted: concurrent
/// edits of one group then lock its rows in the same order.
async fn edit_members(
    conn: &mut sqlx::PgConnection,
    statement: &'static str,
    package: &Package,
    group: &Group,
    users: &[User],
) -> Result<(), StoreError> {
    if users.is_empty() {
        return Ok(());
    }
    let mut names: Vec<&str> = users.iter().map(User::as_str).collect();
    names.sort_unstable();
    sqlx::query(statement)
        .bind(package.as_str())
        .bind(group.as_str())
        .bind(names)
        .execute(conn)
        .await?;
    Ok(())
}

/// `reason` with the URL's password, should an error quote it, masked.
fn without_password(url: &str, reason: String) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match parsed.password() {
            Some(password) if !password.is_empty() => reason.replace(password, "***"),
            _ => reason,
        },
        Err(_) => reason,
    }
}

super::shared::endpoint_active_for_others!(sqlx::PgConnection);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_deadlocks_and_shutdowns_are_transient() {
        for code in [
            "40001", "40P01", "55P03", "53300", "57P01", "57P02", "57P03", "08000", "08006",
            "08003",
        ] {
            assert!(is_transient_state(code), "{code}");
        }
        // Syntax, undefined table, unique violation, value too long.
        for code in ["42601", "42P01", "23505", "22001"] {
            assert!(!is_transient_state(code), "{code}");
        }
    }

    #[test]
    fn a_password_quoted_in_an_error_is_masked() {
        let url = "postgres://axion:s3cret@db.example/axion";
        assert_eq!(
            without_password(url, "bad thing near s3cret".into()),
            "bad thing near ***"
        );
    }
}

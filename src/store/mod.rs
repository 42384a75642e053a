//! Every SQL statement the daemon runs, behind one cheap, cloneable [`Store`].
//!
//! The subscriptions live in Axion's `def_notify_push_subscription`, used
//! exactly as existing installations created it; anything else (groups, the
//! delivery queue, command ids seen) is in tables of our own, created by the
//! migrations in `migrations/`. The store decides nothing: it records and
//! reads what the command and delivery layers ask.

mod health;
mod queue;
mod sqlite;
mod sqlite_queue;

pub use health::Health;
pub use queue::{
    Claimed, CommandState, Enqueued, NewSend, Published, QueuedMessage, Recipients, Settled,
    Settlement, UnpublishedEvent,
};

use crate::config::DatabaseSettings;
use crate::model::{Group, Package, Subscription, User};

/// Why a statement failed, and whether trying again later can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// Locked, busy, out of connections, disk full or unreachable: the same
    /// statement may well succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A row of `def_notify_push_subscription`, as stored. Keys are text here:
/// rows written by older software are only decoded when they are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    pub user: String,
    pub package: String,
    pub module: Option<String>,
    pub endpoint: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Option<String>,
    pub active: bool,
}

/// What recording a subscription changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// The user's active subscriptions in the package afterwards.
    pub active: u64,
    /// Other users of the package whose row for the same endpoint was
    /// deactivated: a browser belongs to the account that subscribed it last.
    pub taken_from_others: u64,
    /// The user's oldest subscriptions deactivated to stay within the limit.
    pub evicted: u64,
}

/// A change to a group's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembersChange {
    Edit { add: Vec<User>, remove: Vec<User> },
    Set(Vec<User>),
}

/// A subscription to deactivate: its row's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowKey {
    pub user: String,
    pub package: String,
    pub endpoint: String,
}

#[derive(Clone)]
pub struct Store {
    pool: sqlx::SqlitePool,
}

impl Store {
    /// Opens (and for SQLite creates) the database; does not migrate.
    pub async fn open(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        let pool = sqlite::open(settings).await?;
        Ok(Store { pool })
    }

    /// Brings the schema up to date; safe to run on every start.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlite::migrate(&self.pool).await
    }

    /// Records a subscription as active; beyond `max_active` active ones
    /// for the user in the package, the oldest are deactivated.
    pub async fn upsert_subscription(
        &self,
        package: &Package,
        user: &User,
        subscription: &Subscription,
        max_active: usize,
    ) -> Result<Subscribed, StoreError> {
        sqlite::upsert_subscription(&self.pool, package, user, subscription, max_active).await
    }

    /// Sets Active = 'N' for one endpoint of a user; false if nothing was
    /// active there.
    pub async fn deactivate(
        &self,
        package: &Package,
        user: &User,
        endpoint: &str,
    ) -> Result<bool, StoreError> {
        sqlite::deactivate(&self.pool, package, user, endpoint).await
    }

    /// Deactivates many rows in one transaction; returns how many changed.
    pub async fn deactivate_rows(&self, rows: &[RowKey]) -> Result<u64, StoreError> {
        sqlite::deactivate_rows(&self.pool, rows).await
    }

    /// The active subscriptions of `users` in `package`.
    pub async fn active_subscriptions(
        &self,
        package: &Package,
        users: &[User],
    ) -> Result<Vec<StoredSubscription>, StoreError> {
        sqlite::active_subscriptions(&self.pool, package, users).await
    }

    /// Every subscription of a user, active or not, in one or all packages.
    pub async fn subscriptions(
        &self,
        user: &User,
        package: Option<&Package>,
    ) -> Result<Vec<StoredSubscription>, StoreError> {
        sqlite::subscriptions(&self.pool, user, package).await
    }

    /// Applies a membership change; returns the group's size afterwards.
    pub async fn change_members(
        &self,
        package: &Package,
        group: &Group,
        change: &MembersChange,
    ) -> Result<u64, StoreError> {
        sqlite::change_members(&self.pool, package, group, change).await
    }

    pub async fn members(&self, package: &Package, group: &Group) -> Result<Vec<User>, StoreError> {
        sqlite::members(&self.pool, package, group).await
    }

    /// Records a send and one delivery per active subscription it reaches,
    /// in one transaction — or, when its id was seen within the window,
    /// nothing.
    pub async fn enqueue(&self, send: &NewSend<'_>) -> Result<Enqueued, StoreError> {
        sqlite_queue::enqueue(&self.pool, send).await
    }

    /// The message of a recorded send.
    pub async fn queued_message(
        &self,
        package: &str,
        id: &str,
    ) -> Result<Option<QueuedMessage>, StoreError> {
        sqlite_queue::message(&self.pool, package, id).await
    }

    /// Takes up to `limit` due deliveries for `instance` until `lease_until_ms`.
    pub async fn claim(
        &self,
        instance: &str,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        sqlite_queue::claim(&self.pool, instance, now_ms, lease_until_ms, limit).await
    }

    /// When the earliest delivery is due, if any is queued.
    pub async fn next_due(&self) -> Result<Option<u64>, StoreError> {
        sqlite_queue::next_due(&self.pool).await
    }

    /// Deliveries in the queue, due or waiting for a retry, of every
    /// instance (the metrics' queue depth).
    pub async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        sqlite_queue::pending(&self.pool).await
    }

    /// Makes every delivery `instance` holds due at `now_ms`: what a run
    /// with the same client id left in flight when it died or stopped.
    pub async fn release(&self, instance: &str, now_ms: u64) -> Result<u64, StoreError> {
        sqlite_queue::release(&self.pool, instance, now_ms).await
    }

    /// Writes back what became of claimed deliveries, in one transaction;
    /// returns the commands whose next result report is due, marked as
    /// handed to the broker at `now_ms`.
    pub async fn settle(
        &self,
        instance: &str,
        batch: &[Settlement],
        now_ms: u64,
    ) -> Result<Vec<CommandState>, StoreError> {
        sqlite_queue::settle(&self.pool, instance, batch, now_ms).await
    }

    /// Records what the broker has acknowledged.
    pub async fn mark_published(&self, published: &[Published]) -> Result<(), StoreError> {
        sqlite_queue::mark_published(&self.pool, published).await
    }

    /// Result reports and real-time events handed to the broker before
    /// `before_ms` and never acknowledged — the daemon that handed them
    /// stopped or died first — marked as handed again at `now_ms`.
    pub async fn take_unpublished(
        &self,
        before_ms: u64,
        now_ms: u64,
    ) -> Result<(Vec<CommandState>, Vec<UnpublishedEvent>), StoreError> {
        sqlite_queue::take_unpublished(&self.pool, before_ms, now_ms).await
    }

    /// Forgets finished, published commands accepted before `before_ms`.
    pub async fn purge_commands(&self, before_ms: u64) -> Result<u64, StoreError> {
        sqlite_queue::purge(&self.pool, before_ms).await
    }

    /// Waits until in-flight statements finish and closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

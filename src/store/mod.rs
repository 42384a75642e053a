//! Every SQL statement the daemon runs, behind one cheap, cloneable [`Store`].
//!
//! The subscriptions live in Axion's `def_notify_push_subscription`, used
//! exactly as existing installations created it; anything else (groups, the
//! delivery queue, command ids seen, the migrations' bookkeeping) is in
//! tables of our own, `axion_push_*`, created by the migrations in
//! `migrations/{sqlite,mysql,postgres}/`. The store decides nothing: it
//! records and reads what the command and delivery layers ask.
//!
//! Three backends, chosen by the scheme of `axion_push.database.url`, each
//! on its own concrete sqlx pool with SQL written for its dialect (sqlx's
//! `Any` driver gets placeholders and booleans wrong across them): SQLite
//! (`sqlite/`), MariaDB/MySQL (`mysql/`), PostgreSQL (`postgres/`). The rest
//! of the daemon sees one `Store`.
//!
//! Time in the queue is the database's: a claim leases a delivery until the
//! database's clock passes `NextAt`, so daemons on several machines agree on
//! when a lease has run out whatever their own clocks say.

mod health;
mod mysql;
mod postgres;
mod queue;
mod rows;
mod shared;
mod sqlite;
mod subscription_health;

use std::time::Duration;

pub use health::Health;
pub use queue::{
    Claimed, CommandState, Enqueued, NewSend, PAUSED, Published, QueuedMessage, Recipients,
    Settled, Settlement, UNREADABLE, UnpublishedEvent,
};
pub use subscription_health::{HealthEvent, HealthOutcome, RUN_GAP_MS, SubscriptionHealth};

use crate::config::DatabaseSettings;
use crate::model::{Group, Package, Subscription, User};

/// How long a claimed delivery is its daemon's. Renewed (see
/// [`Store::renew`]) while its request is in flight, so it only runs out
/// when the daemon is gone: then another daemon takes the delivery over
/// within this time plus its idle poll.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often a daemon renews the leases it holds.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A new send's deliveries are held for the daemon that recorded them this
/// long: it hands the send's event to its broker first (in microseconds,
/// normally), then claims them. Past it, any daemon may take them — the
/// recorder died, or other daemons help with a large fan-out.
pub const HOLD: Duration = Duration::from_secs(2);

/// Why a statement failed, and whether trying again later can help. The
/// sqlx error it came from is kept as its source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Text, not the sqlx error: it may repeat the URL's password, which
    /// is taken out (and the URL shown redacted).
    #[error("cannot open the database {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Locked, busy, out of connections, a deadlock, a lost connection, a
    /// server shutting down: the same statement may well succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Another daemon's subscribe of the same endpoint held the endpoint's
    /// lock (MariaDB/MySQL) longer than a statement may wait.
    #[error("database unavailable: another subscribe of the same endpoint held its lock for 10 s")]
    EndpointLocked,
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::EndpointLocked
        )
    }
}

/// A failed statement, unavailable or not by what the error says: a lost,
/// refused or exhausted connection on any backend, or an error code from
/// the backend's own list of temporary ones.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let transient = match &e {
            // A protocol error is a byte stream broken off: a connection
            // closed while it opens reads as a bad answer to its first
            // request.
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                sqlite::is_transient(db.as_ref())
                    || mysql::is_transient(db.as_ref())
                    || postgres::is_transient(db.as_ref())
            }
            _ => false,
        };
        if transient {
            StoreError::Unavailable(e)
        } else {
            StoreError::Query(e)
        }
    }
}

/// `url` with any password replaced by `***`, for logs and errors: a
/// database URL may carry credentials.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Not a URL at all: show no more than its scheme.
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…"),
            None => "…".to_owned(),
        },
    }
}

/// The database engines the daemon speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
    Postgres,
}

impl Backend {
    /// The backend a `database.url` names, by its scheme.
    pub fn of_url(url: &str) -> Option<Backend> {
        match url.split_once(':')?.0 {
            "sqlite" => Some(Backend::Sqlite),
            "mysql" | "mariadb" => Some(Backend::MySql),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::MySql => "MariaDB/MySQL",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// What `check-config` reports about the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    pub backend: Backend,
    /// The server's own version string.
    pub version: String,
    /// Axion's table: `None` when it does not exist yet (the migrations
    /// create it), else the expected columns it lacks.
    pub axion_table_missing_columns: Option<Vec<String>>,
    /// Whether claims can skip rows another daemon holds (`FOR UPDATE SKIP
    /// LOCKED`): without it only one daemon may use the database.
    pub skip_locked: bool,
}

/// The columns of `def_notify_push_subscription` the daemon reads and
/// writes (DESIGN §4).
pub const AXION_COLUMNS: [&str; 9] = [
    "User",
    "Package",
    "Module",
    "Endpoint",
    "KeysP256dh",
    "KeysAuth",
    "UserAgent",
    "CreatedAt",
    "Active",
];

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
    /// `Active` is 'Y', or NULL as rows older software wrote: the column's
    /// default is 'Y', and NULL counts as 'Y' in every statement.
    pub active: bool,
}

/// Whether recording a subscription may move its endpoint away from other
/// users of the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// A browser belongs to the account that subscribed it last: the other
    /// users' rows for the endpoint are deactivated.
    Allowed,
    /// An endpoint active for another user stays theirs, and nothing is
    /// recorded.
    Refused,
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

/// What taking a receipt found (see [`Store::take_receipt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The first receipt of its kind for its push.
    First,
    /// Taken before by the same command (the same `id`): the broker
    /// delivering it again, its first answer perhaps lost with a daemon.
    Again,
    /// Taken before by another command: a replay.
    Replay,
}

impl Taken {
    /// From what the take statement found: the receipt's replays so far
    /// (0 when this take recorded it) and the command that took it.
    pub(crate) fn of(replays: i64, taken_by: Option<&str>, command_id: &str) -> Taken {
        if replays == 0 {
            Taken::First
        } else if taken_by == Some(command_id) {
            Taken::Again
        } else {
            Taken::Replay
        }
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(sqlite::Sqlite),
    MySql(mysql::MySql),
    Postgres(postgres::Postgres),
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

/// Calls the same method on whichever backend the store holds.
macro_rules! on_backend {
    ($store:expr, $pool:ident => $call:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $call,
            Pool::MySql($pool) => $call,
            Pool::Postgres($pool) => $call,
        }
    };
}

impl Store {
    /// Opens the database `settings.url` names (SQLite creates its file);
    /// does not migrate.
    pub async fn open(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        let pool = match Backend::of_url(&settings.url) {
            Some(Backend::Sqlite) => Pool::Sqlite(sqlite::Sqlite::open(settings).await?),
            Some(Backend::MySql) => Pool::MySql(mysql::MySql::open(settings).await?),
            Some(Backend::Postgres) => Pool::Postgres(postgres::Postgres::open(settings).await?),
            None => {
                return Err(StoreError::Open {
                    url: redact_url(&settings.url),
                    reason:
                        "not a sqlite://, mysql://, mariadb://, postgres:// or postgresql:// URL"
                            .into(),
                });
            }
        };
        Ok(Store { pool })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::MySql(_) => Backend::MySql,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Brings the schema up to date; safe to run on every start. Creates
    /// Axion's table only where it does not exist, and never alters it.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        on_backend!(self, b => b.migrate().await)
    }

    /// The engine, its version, Axion's table and row-lock support.
    pub async fn info(&self) -> Result<DatabaseInfo, StoreError> {
        on_backend!(self, b => b.info().await)
    }

    /// Records a subscription as active; beyond `max_active` active ones
    /// for the user in the package, the oldest are deactivated. Other
    /// users' rows for the endpoint are deactivated ([`Takeover::Allowed`]).
    pub async fn upsert_subscription(
        &self,
        package: &Package,
        user: &User,
        subscription: &Subscription,
        max_active: usize,
    ) -> Result<Subscribed, StoreError> {
        let recorded = on_backend!(self, b => b.upsert_subscription(
            package, user, subscription, max_active, Takeover::Allowed).await)?;
        Ok(recorded.expect("a subscription that may take over is always recorded"))
    }

    /// Like [`Store::upsert_subscription`], unless the endpoint is active
    /// for another user of the package: then nothing changes, and `None`
    /// says so ([`Takeover::Refused`]). The check and the upsert are one
    /// transaction, with the endpoint locked meanwhile, so two users
    /// subscribing one endpoint at once cannot both pass the check.
    pub async fn upsert_subscription_unless_taken(
        &self,
        package: &Package,
        user: &User,
        subscription: &Subscription,
        max_active: usize,
    ) -> Result<Option<Subscribed>, StoreError> {
        on_backend!(self, b => b.upsert_subscription(
            package, user, subscription, max_active, Takeover::Refused).await)
    }

    /// Sets Active = 'N' for one endpoint of a user; false if nothing was
    /// active there.
    pub async fn deactivate(
        &self,
        package: &Package,
        user: &User,
        endpoint: &str,
    ) -> Result<bool, StoreError> {
        on_backend!(self, b => b.deactivate(package, user, endpoint).await)
    }

    /// Every subscription of a user, active or not, in one or all packages.
    pub async fn subscriptions(
        &self,
        user: &User,
        package: Option<&Package>,
    ) -> Result<Vec<StoredSubscription>, StoreError> {
        on_backend!(self, b => b.subscriptions(user, package).await)
    }

    /// Applies a membership change; returns the group's size afterwards.
    pub async fn change_members(
        &self,
        package: &Package,
        group: &Group,
        change: &MembersChange,
    ) -> Result<u64, StoreError> {
        on_backend!(self, b => b.change_members(package, group, change).await)
    }

    pub async fn members(&self, package: &Package, group: &Group) -> Result<Vec<User>, StoreError> {
        on_backend!(self, b => b.members(package, group).await)
    }

    /// Records a send and one delivery per active subscription it reaches,
    /// in one transaction — or, when its id was seen within the window,
    /// nothing. The deliveries are held for `owner` (see [`HOLD`]).
    pub async fn enqueue(&self, send: &NewSend<'_>, owner: &str) -> Result<Enqueued, StoreError> {
        on_backend!(self, b => b.enqueue(send, owner).await)
    }

    /// Records several sends at once, as [`Store::enqueue`] would one after
    /// the other, in one transaction: each to one user, their ids distinct,
    /// none a redelivery without an id of its own (those go one by one).
    pub async fn enqueue_many(
        &self,
        sends: &[NewSend<'_>],
        owner: &str,
    ) -> Result<Vec<Enqueued>, StoreError> {
        on_backend!(self, b => b.enqueue_many(sends, owner).await)
    }

    /// The messages of recorded sends, by (package, id), in one statement:
    /// a claim's worth at a time. A send that is gone is missing from the
    /// answer.
    pub async fn queued_messages(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<(String, String, QueuedMessage)>, StoreError> {
        on_backend!(self, b => b.queued_messages(keys).await)
    }

    /// Takes up to `limit` deliveries for `owner`, leased for [`LEASE`]:
    /// those due, and those held for it. Rows another daemon is claiming
    /// at the same moment are skipped, not waited for.
    pub async fn claim(&self, owner: &str, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        on_backend!(self, b => b.claim(owner, limit).await)
    }

    /// How long until the earliest delivery `owner` may claim is due, if any
    /// is queued.
    pub async fn next_due(&self, owner: &str) -> Result<Option<Duration>, StoreError> {
        on_backend!(self, b => b.next_due(owner).await)
    }

    /// Deliveries in the queue, due or waiting for a retry, of every
    /// daemon (the metrics' queue depth).
    pub async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        on_backend!(self, b => b.pending_deliveries().await)
    }

    /// Extends by [`LEASE`] the leases `owner` holds on the deliveries
    /// `seqs` — those its requests are working on. Not every row leased to
    /// `owner`: a claim whose answer was lost (the connection dropped with
    /// its COMMIT on the way) leased rows nobody works on, and those must
    /// run out and come due again.
    pub async fn renew(&self, owner: &str, seqs: &[i64]) -> Result<u64, StoreError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        on_backend!(self, b => b.renew(owner, seqs).await)
    }

    /// Makes every delivery `owner` holds due now, for another daemon (or
    /// the next run) to take at once.
    pub async fn release(&self, owner: &str) -> Result<u64, StoreError> {
        on_backend!(self, b => b.release(owner).await)
    }

    /// Writes back what became of claimed deliveries, in one transaction,
    /// set-based and in a fixed order; rows `owner` no longer holds (its
    /// lease ran out and another daemon took them) are left alone. Returns
    /// the commands whose next result report is due, marked as handed to
    /// the broker at `now_ms`.
    pub async fn settle(
        &self,
        owner: &str,
        batch: &[Settlement],
        now_ms: u64,
    ) -> Result<Vec<CommandState>, StoreError> {
        on_backend!(self, b => b.settle(owner, batch, now_ms).await)
    }

    /// Records what the broker has acknowledged.
    pub async fn mark_published(&self, published: &[Published]) -> Result<(), StoreError> {
        on_backend!(self, b => b.mark_published(published).await)
    }

    /// Result reports and real-time events handed to the broker before
    /// `before_ms` and never acknowledged — the daemon that handed them
    /// stopped or died first — marked as handed again at `now_ms`.
    pub async fn take_unpublished(
        &self,
        before_ms: u64,
        now_ms: u64,
    ) -> Result<(Vec<CommandState>, Vec<UnpublishedEvent>), StoreError> {
        on_backend!(self, b => b.take_unpublished(before_ms, now_ms).await)
    }

    /// Forgets finished, published commands accepted before `before_ms`.
    pub async fn purge_commands(&self, before_ms: u64) -> Result<u64, StoreError> {
        on_backend!(self, b => b.purge_commands(before_ms).await)
    }

    /// Records that a receipt of `kind` came for the push whose token has
    /// `tag`, with the command `command_id`; one that had come before
    /// changes nothing but a count of replays.
    pub async fn take_receipt(
        &self,
        package: &Package,
        tag: &str,
        kind: &str,
        sent_ms: u64,
        command_id: &str,
    ) -> Result<Taken, StoreError> {
        on_backend!(self, b => b.take_receipt(package.as_str(), tag, kind, sent_ms, command_id).await)
    }

    /// Forgets the receipts of pushes sent before `before_ms`: their tokens
    /// are no longer accepted at all.
    pub async fn purge_receipts(&self, before_ms: u64) -> Result<u64, StoreError> {
        on_backend!(self, b => b.purge_receipts(before_ms).await)
    }

    /// Records what became of a batch of pushes in their subscriptions'
    /// health. (Refusals go through [`Store::record_refusal`].)
    pub async fn record_health(&self, events: &[HealthEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        on_backend!(self, b => b.record_health(events).await)
    }

    /// Records a push refused for good; `counted`: the refusal was for the
    /// subscription alone (its push service delivered to others), so it
    /// starts or continues a run of refusals, which any other refusal
    /// ends. Returns when the run started, if one is on.
    pub async fn record_refusal(
        &self,
        event: &HealthEvent,
        counted: bool,
    ) -> Result<Option<u64>, StoreError> {
        on_backend!(self, b => b.record_refusal(event, counted).await)
    }

    /// Records a receipt in its subscription's health.
    pub async fn record_receipt_health(
        &self,
        package: &Package,
        subscription: &str,
        user: &User,
        kind: &str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        on_backend!(self, b => b
            .record_receipt_health(package.as_str(), subscription, user.as_str(), kind, at_ms)
            .await)
    }

    /// The recorded health of `subscriptions` (their stable ids) in
    /// `package`; those with none recorded are left out.
    pub async fn health(
        &self,
        package: &Package,
        subscriptions: &[String],
    ) -> Result<Vec<SubscriptionHealth>, StoreError> {
        on_backend!(self, b => b.health(package.as_str(), subscriptions).await)
    }

    /// Waits until in-flight statements finish and closes the pool.
    pub async fn close(&self) {
        on_backend!(self, b => b.close().await)
    }
}

/// `Active` as the statements read it: 'Y', or NULL as older software left
/// it (the column's default is 'Y').
pub(crate) fn is_active(active: Option<&str>) -> bool {
    active.is_none_or(|a| a.trim() == "Y")
}

/// Axion's expected columns missing from `columns` (`None`: no table).
pub(crate) fn missing_columns(columns: &[String]) -> Option<Vec<String>> {
    if columns.is_empty() {
        return None;
    }
    Some(
        AXION_COLUMNS
            .iter()
            .filter(|c| !columns.iter().any(|have| have.eq_ignore_ascii_case(c)))
            .map(|c| (*c).to_owned())
            .collect(),
    )
}

/// A SHA-256 digest of a package and an endpoint, naming the endpoint's
/// lock on a server database (a number on PostgreSQL, a name on
/// MariaDB/MySQL). The same on every machine and in every version, so all
/// daemons sharing a database take the same lock; each field comes with its
/// length, so none slides into the other.
pub(crate) fn endpoint_lock_key(package: &str, endpoint: &str) -> [u8; 32] {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for field in [package, endpoint] {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        digest.update(&len.to_be_bytes());
        digest.update(field.as_bytes());
    }
    digest
        .finish()
        .as_ref()
        .try_into()
        .expect("a SHA-256 digest is 32 bytes")
}

/// The owner a new send's deliveries are held for until it claims them.
pub(crate) fn held_by(owner: &str) -> String {
    format!("{owner}:held")
}

pub(crate) fn to_u64(n: i64) -> u64 {
    n.try_into().unwrap_or_default()
}

pub(crate) fn to_i64(n: u64) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

pub(crate) fn millis(d: Duration) -> i64 {
    d.as_millis().try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_database_url_is_never_shown() {
        let shown = redact_url("mysql://axion:hunter2@db.example:3306/axion");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.example"), "{shown}");
        assert_eq!(
            redact_url("sqlite://axion-push.db"),
            "sqlite://axion-push.db"
        );
        assert!(!redact_url("postgres://u:p@[bad").contains(":p@"));
    }

    #[test]
    fn the_backend_is_chosen_by_the_scheme() {
        assert_eq!(Backend::of_url("sqlite://a.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("mariadb://h/db"), Some(Backend::MySql));
        assert_eq!(Backend::of_url("mysql://h/db"), Some(Backend::MySql));
        assert_eq!(
            Backend::of_url("postgresql://h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("redis://h"), None);
    }
}

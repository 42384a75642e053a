//! The MySql backend (not built yet: `Store::open` refuses its URLs).

use std::time::Duration;

use crate::config::DatabaseSettings;
use crate::model::{Group, Package, Subscription, User};
use crate::store::queue::{
    Claimed, CommandState, Enqueued, NewSend, Published, QueuedMessage, Settlement,
    UnpublishedEvent,
};
use crate::store::{
    DatabaseInfo, MembersChange, StoreError, StoredSubscription, Subscribed, redact_url,
};

#[derive(Clone)]
pub(super) enum MySql {}

#[allow(clippy::unused_async)]
impl MySql {
    pub(super) async fn open(settings: &DatabaseSettings) -> Result<MySql, StoreError> {
        Err(StoreError::Open {
            url: redact_url(&settings.url),
            reason: "this backend is not built yet".into(),
        })
    }
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        match *self {}
    }
    pub(super) async fn info(&self) -> Result<DatabaseInfo, StoreError> {
        match *self {}
    }
    pub(super) async fn upsert_subscription(
        &self,
        _: &Package,
        _: &User,
        _: &Subscription,
        _: usize,
    ) -> Result<Subscribed, StoreError> {
        match *self {}
    }
    pub(super) async fn deactivate(
        &self,
        _: &Package,
        _: &User,
        _: &str,
    ) -> Result<bool, StoreError> {
        match *self {}
    }
    pub(super) async fn subscriptions(
        &self,
        _: &User,
        _: Option<&Package>,
    ) -> Result<Vec<StoredSubscription>, StoreError> {
        match *self {}
    }
    pub(super) async fn change_members(
        &self,
        _: &Package,
        _: &Group,
        _: &MembersChange,
    ) -> Result<u64, StoreError> {
        match *self {}
    }
    pub(super) async fn members(&self, _: &Package, _: &Group) -> Result<Vec<User>, StoreError> {
        match *self {}
    }
    pub(super) async fn enqueue(&self, _: &NewSend<'_>, _: &str) -> Result<Enqueued, StoreError> {
        match *self {}
    }
    pub(super) async fn queued_message(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<QueuedMessage>, StoreError> {
        match *self {}
    }
    pub(super) async fn claim(&self, _: &str, _: usize) -> Result<Vec<Claimed>, StoreError> {
        match *self {}
    }
    pub(super) async fn next_due(&self, _: &str) -> Result<Option<Duration>, StoreError> {
        match *self {}
    }
    pub(super) async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        match *self {}
    }
    pub(super) async fn renew(&self, _: &str) -> Result<u64, StoreError> {
        match *self {}
    }
    pub(super) async fn release(&self, _: &str) -> Result<u64, StoreError> {
        match *self {}
    }
    pub(super) async fn settle(
        &self,
        _: &str,
        _: &[Settlement],
        _: u64,
    ) -> Result<Vec<CommandState>, StoreError> {
        match *self {}
    }
    pub(super) async fn mark_published(&self, _: &[Published]) -> Result<(), StoreError> {
        match *self {}
    }
    pub(super) async fn take_unpublished(
        &self,
        _: u64,
        _: u64,
    ) -> Result<(Vec<CommandState>, Vec<UnpublishedEvent>), StoreError> {
        match *self {}
    }
    pub(super) async fn purge_commands(&self, _: u64) -> Result<u64, StoreError> {
        match *self {}
    }
    pub(super) async fn close(&self) {
        match *self {}
    }
}

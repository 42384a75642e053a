//! Fan-out: one notification to many subscriptions, concurrently.
//!
//! Each delivery holds a permit of one daemon-wide semaphore
//! (`delivery.concurrency`), taken *before* its task is spawned, so a group of
//! 100 000 subscriptions never means 100 000 tasks, and one command cannot
//! starve the others of more than its share of the permits it holds. Requests
//! to a slow push service hold their permits only for `request_timeout`.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::model::{Endpoint, SubscriptionKeys};
use crate::notification::Urgency;
use crate::push::{Message, Outcome, PushClient, VapidSigner};
use crate::store::{RowKey, StoredSubscription};

/// One command's deliveries: the message, who signs it, and where it goes.
pub struct Fanout {
    pub payload: Arc<[u8]>,
    pub ttl: u32,
    pub urgency: Urgency,
    pub topic: Option<Arc<str>>,
    pub signer: Arc<VapidSigner>,
    pub subscriptions: Vec<StoredSubscription>,
}

/// How a command's deliveries ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub delivered: u64,
    pub failed: u64,
    /// Subscriptions the push service called gone (404/410).
    pub gone: Vec<RowKey>,
    /// Failed deliveries by cause (see `ResultReport::failures`).
    pub failures: BTreeMap<String, u64>,
}

impl Summary {
    fn record(&mut self, row: &StoredSubscription, result: Result<Outcome, String>) {
        match result {
            Ok(Outcome::Delivered) => self.delivered += 1,
            Ok(Outcome::Gone(_)) => self.gone.push(RowKey {
                user: row.user.clone(),
                package: row.package.clone(),
                endpoint: row.endpoint.clone(),
            }),
            Ok(other) => self.fail(other.failure_key().unwrap_or_else(|| "other".into())),
            Err(key) => self.fail(key),
        }
    }

    fn fail(&mut self, key: String) {
        self.failed += 1;
        *self.failures.entry(key).or_default() += 1;
    }
}

#[derive(Clone)]
pub struct Deliverer {
    client: Arc<PushClient>,
    permits: Arc<Semaphore>,
}

impl Deliverer {
    pub fn new(client: Arc<PushClient>, concurrency: usize) -> Self {
        Self {
            client,
            permits: Arc::new(Semaphore::new(concurrency)),
        }
    }

    /// Sends to every subscription and waits for all answers.
    pub async fn deliver(&self, fanout: Fanout) -> Summary {
        let Fanout {
            payload,
            ttl,
            urgency,
            topic,
            signer,
            subscriptions,
        } = fanout;
        let mut summary = Summary::default();
        let mut tasks = JoinSet::new();
        for (index, row) in subscriptions.iter().enumerate() {
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("the delivery semaphore is never closed");
            while let Some(done) = tasks.try_join_next() {
                let (i, result) = done.expect("delivery tasks do not panic");
                summary.record(&subscriptions[i], result);
            }
            let client = self.client.clone();
            let signer = signer.clone();
            let payload = payload.clone();
            let topic = topic.clone();
            let endpoint = row.endpoint.clone();
            let keys = (row.p256dh.clone(), row.auth.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let result = send_one(
                    &client,
                    &endpoint,
                    keys,
                    Message {
                        payload: &payload,
                        ttl,
                        urgency,
                        topic: topic.as_deref(),
                    },
                    &signer,
                )
                .await;
                (index, result)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, result) = done.expect("delivery tasks do not panic");
            summary.record(&subscriptions[i], result);
        }
        summary
    }
}

/// Rows written by older software are decoded here, at their first use; a
/// row that cannot be used is a failed delivery, never a crash.
async fn send_one(
    client: &PushClient,
    endpoint: &str,
    (p256dh, auth): (Option<String>, Option<String>),
    message: Message<'_>,
    signer: &VapidSigner,
) -> Result<Outcome, String> {
    let endpoint = Endpoint::parse(endpoint).map_err(|_| "endpoint".to_owned())?;
    let keys = SubscriptionKeys::parse(
        p256dh.as_deref().unwrap_or_default(),
        auth.as_deref().unwrap_or_default(),
    )
    .map_err(|_| "keys".to_owned())?;
    client
        .send(&endpoint, &keys, message, signer)
        .await
        .map_err(|e| {
            tracing::warn!(origin = endpoint.origin(), error = %e, "push not sent");
            e.failure_key().to_owned()
        })
}

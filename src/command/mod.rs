//! Commands: an ingress message parsed into a typed command and applied.
//!
//! [`Processor::handle`] runs in arrival order — parsing, store writes,
//! recording a send's deliveries in the queue, publishing its real-time
//! events — so a subscribe is always recorded before a send published after
//! it reads the subscriptions. Pushes are the delivery engine's work, so a
//! slow push service never holds up the next command. Every command gets a
//! result report; a bad one gets one with a clear `error`, and nothing here
//! panics on input. When the database is unavailable a command is neither
//! answered nor acknowledged: [`Handled::Unavailable`] tells the caller to
//! try it again later.

mod list;
mod members;

pub use list::listed_health;
mod receipt;
mod send;
mod subscribe;
mod unsubscribe;

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::{HandOff, Ledger, Messages, Wake};
use crate::model::{ModelError, Target};
use crate::notification::NotificationError;
use crate::push::{EndpointPolicy, PayloadTooLarge, PolicyError, VapidSigners};
use crate::report::{Egress, Outgoing, Receipt, ResultReport};
use crate::stats::Stats;
use crate::store::{Health, Store, StoreError};
use crate::topics::{Levels, TopicError, Topics, Verb};

/// Why a command was refused. The `Display` text is the result's `error`.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Topic(#[from] TopicError),
    #[error(
        "payload is {len} bytes; commands are limited to {max} (axion_push.limits.max_command_bytes)"
    )]
    TooLarge { len: usize, max: usize },
    #[error("{0}")]
    Notification(#[from] NotificationError),
    #[error("{0}")]
    Payload(#[from] PayloadTooLarge),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Token(#[from] crate::token::TokenError),
    #[error("{0}")]
    ReceiptToken(#[from] crate::receipt::ReceiptTokenError),
    /// A receipt past its user's allowance: worth sending again later.
    #[error(
        "too many receipts from this user: at most {} at once, then {} a second; send the rest later",
        crate::receipt::BURST,
        crate::receipt::PER_SECOND
    )]
    TooManyReceipts,
    /// With subscribe tokens on, a token proves who the user is, not whose
    /// browser the endpoint is: an endpoint active for another user of the
    /// package stays theirs.
    #[error(
        "the endpoint is active for another user of the package, and a token does not move it: \
         make a new push subscription in the browser (PushSubscription.unsubscribe(), \
         then pushManager.subscribe()) and subscribe that"
    )]
    EndpointTaken,
}

impl CommandError {
    /// A machine-readable reason, the result's `code`, for refusals a
    /// client can act on.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            CommandError::EndpointTaken => Some("endpoint-taken"),
            CommandError::TooManyReceipts => Some("rate-limited"),
            _ => None,
        }
    }
}

/// A message as the MQTT client received it.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// MQTT's DUP flag.
    pub redelivered: bool,
}

/// Sends to users recorded together at most, in one transaction.
const BATCH: usize = 256;

/// What became of a message.
#[derive(Debug)]
pub enum Handled {
    /// Processed (a send: recorded in the queue); its result, if due, is
    /// queued for publishing. Acknowledge it.
    Done,
    /// The database is unavailable: nothing was applied or answered. Do
    /// not acknowledge it; handle it again later.
    Unavailable(StoreError),
}

/// Everything the command stage needs, built once by the daemon.
#[derive(Clone)]
pub struct Processor {
    inner: Arc<ProcessorParts>,
}

/// The parts a [`Processor`] is built from.
pub struct ProcessorParts {
    pub store: Store,
    pub topics: Topics,
    pub egress: Egress,
    /// Told when a send has been queued.
    pub wake: Wake,
    /// Records what the broker acknowledged (a send's event and reports).
    pub ledger: Ledger,
    /// Holds a send's pushes until its event is handed to egress.
    pub hand_off: HandOff,
    /// Where a recorded send's message waits for the engine.
    pub messages: Messages,
    /// Whose a new send's deliveries are: this process (the engine's owner).
    pub owner: String,
    pub health: Health,
    pub stats: Arc<Stats>,
    pub signers: Arc<VapidSigners>,
    pub policy: EndpointPolicy,
    pub max_command_bytes: usize,
    pub max_subscriptions_per_user: usize,
    /// Set when subscribe, unsubscribe and list must carry a token.
    pub subscribe_tokens: Option<Arc<crate::token::TokenKey>>,
    /// Set when browsers report receipts (`receipts.enabled`).
    pub receipts: Option<Arc<crate::receipt::Receipts>>,
    pub default_ttl: u32,
    pub dedup_window: Duration,
    /// Acknowledge a command once it is applied, not once the broker has
    /// its answer. Set on the embedded broker, which lives in this process:
    /// its unacknowledged commands die with the daemon like the answer
    /// would, so waiting protects nothing — and rumqttd holds its `PUBACK`s
    /// (and `PINGRESP`s) behind a full in-flight window towards the client,
    /// so waiting for them while holding the acks that would empty that
    /// window stalls the connection.
    pub ack_once_applied: bool,
}

impl Processor {
    pub fn new(parts: ProcessorParts) -> Self {
        Self {
            inner: Arc::new(parts),
        }
    }

    /// Handles one ingress message.
    pub async fn handle(&self, topic: &str, payload: &[u8]) -> Handled {
        self.handle_message(topic, payload, false, Receipt::none())
            .await
    }

    /// Handles one ingress message; `redelivered` is MQTT's DUP flag: the
    /// broker is delivering it again, so a send without an `id` that was
    /// already recorded is recognised by its content. `answered` is
    /// confirmed once nothing of the command is left to lose: its answer
    /// acknowledged by the broker, or a send recorded in the queue (which
    /// publishes its reports and event at least once from there).
    pub async fn handle_message(
        &self,
        topic: &str,
        payload: &[u8],
        redelivered: bool,
        answered: Receipt,
    ) -> Handled {
        let inner = &self.inner;
        let Some(levels) = inner.topics.levels(topic) else {
            tracing::debug!(topic, "ignoring a message outside the ingress topics");
            answered.confirm();
            return Handled::Done;
        };
        if levels.is_result() {
            answered.confirm();
            return Handled::Done;
        }
        let reply_to = inner.topics.reply_topic(&levels);
        match self.apply(&levels, payload, redelivered).await {
            Ok(applied) => {
                inner.health.ok();
                inner.answer(levels.verb, reply_to, applied, answered).await;
                Handled::Done
            }
            Err(CommandError::Store(error)) if error.is_transient() => {
                inner.health.failed(&error, "handling a command");
                Handled::Unavailable(error)
            }
            Err(error) => {
                let id = peek_id(payload).unwrap_or_else(new_id);
                let store_trouble = matches!(error, CommandError::Store(_));
                let text = error.to_string();
                if store_trouble {
                    tracing::error!(
                        command_id = id,
                        package = levels.package,
                        target = levels.target,
                        verb = levels.verb,
                        error = text,
                        "command failed"
                    );
                } else {
                    tracing::warn!(
                        command_id = id,
                        package = levels.package,
                        target = levels.target,
                        verb = levels.verb,
                        error = text,
                        "command rejected"
                    );
                }
                Stats::add(&inner.stats.rejected, 1);
                inner.stats.by_verb.add(levels.verb);
                inner.stats.rejected_by_verb.add(levels.verb);
                let report = ResultReport {
                    code: error.code().map(str::to_owned),
                    ..ResultReport::rejected(id, levels.verb, text)
                };
                inner.publish_answer(reply_to, &report, answered).await;
                Handled::Done
            }
        }
    }

    /// Handles `messages` in arrival order, and returns how many it handled:
    /// all of them, or those before the first the database could not take
    /// (that one and the rest are to be handled again later). Consecutive
    /// sends to users are recorded together, in one transaction, their
    /// answers and acknowledgements still in order; `answered(k)` is the
    /// receipt for message `k` (see [`Processor::handle_message`]).
    pub async fn handle_many(
        &self,
        messages: &[Inbound<'_>],
        mut answered: impl FnMut(usize) -> Receipt,
    ) -> usize {
        let inner = &self.inner;
        let mut i = 0;
        while i < messages.len() {
            let mut run: Vec<(send::Ready, String)> = Vec::new();
            let mut keys = std::collections::HashSet::new();
            while i + run.len() < messages.len() && run.len() < BATCH {
                let Some((ready, reply_to)) = self.batchable_send(&messages[i + run.len()]).await
                else {
                    break;
                };
                let (package, id) = ready.key();
                if !keys.insert((package.to_owned(), id.to_owned())) {
                    break;
                }
                run.push((ready, reply_to));
            }
            if run.is_empty() {
                let m = &messages[i];
                match self
                    .handle_message(m.topic, m.payload, m.redelivered, answered(i))
                    .await
                {
                    Handled::Done => i += 1,
                    Handled::Unavailable(_) => return i,
                }
                continue;
            }
            let count = run.len();
            let (sends, replies): (Vec<_>, Vec<_>) = run.into_iter().unzip();
            match send::apply_many(self, sends).await {
                Ok(applied) => {
                    inner.health.ok();
                    for (k, (applied, reply_to)) in applied.into_iter().zip(replies).enumerate() {
                        inner
                            .answer(Verb::Send.as_str(), reply_to, applied, answered(i + k))
                            .await;
                    }
                    i += count;
                }
                Err(error) if error.is_transient() => {
                    inner.health.failed(&error, "handling a command");
                    return i;
                }
                Err(error) => {
                    // One of them the database refuses: each alone, so that
                    // only that one fails.
                    tracing::warn!(error = %error, sends = count, "recording sends together failed; recording them one by one");
                    for (k, m) in messages.iter().enumerate().skip(i).take(count) {
                        if let Handled::Unavailable(_) = self
                            .handle_message(m.topic, m.payload, m.redelivered, answered(k))
                            .await
                        {
                            return k;
                        }
                    }
                    i += count;
                }
            }
        }
        messages.len()
    }

    /// A send to one user that may be recorded with others, parsed and
    /// rendered, with its result topic; `None` for any other message (and
    /// for a send that does not parse: it is answered on its own).
    async fn batchable_send(&self, m: &Inbound<'_>) -> Option<(send::Ready, String)> {
        let inner = &self.inner;
        let levels = inner.topics.levels(m.topic)?;
        if levels.is_result() || m.payload.len() > inner.max_command_bytes {
            return None;
        }
        let route = levels.route().ok()?;
        if route.verb != Verb::Send || !matches!(route.target, Target::User(_)) {
            return None;
        }
        let reply_to = inner.topics.reply_topic(&levels);
        let ready = send::prepare(self, route, m.payload, m.redelivered)
            .await
            .ok()?;
        ready.is_batchable().then_some((ready, reply_to))
    }

    async fn apply(
        &self,
        levels: &Levels<'_>,
        payload: &[u8],
        redelivered: bool,
    ) -> Result<Applied, CommandError> {
        let max = self.inner.max_command_bytes;
        if payload.len() > max {
            return Err(CommandError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let route = levels.route()?;
        let package = &route.package;
        match (route.verb, &route.target) {
            (Verb::Send, _) => send::apply(self, route.clone(), payload, redelivered).await,
            (Verb::Subscribe, Target::User(user)) => {
                subscribe::apply(&self.inner, package, user, payload)
                    .await
                    .map(Applied::Report)
            }
            (Verb::Unsubscribe, Target::User(user)) => {
                unsubscribe::apply(&self.inner, package, user, payload)
                    .await
                    .map(Applied::Report)
            }
            (Verb::List, target) => list::apply(&self.inner, package, target, payload)
                .await
                .map(Applied::Report),
            (Verb::Receipt, Target::User(user)) => {
                receipt::apply(&self.inner, package, user, payload)
                    .await
                    .map(Applied::Report)
            }
            (Verb::Members, Target::Group(group)) => {
                members::apply(&self.inner, package, group, payload)
                    .await
                    .map(Applied::Report)
            }
            // `Levels::route` refuses these combinations; answer anyway
            // rather than trust that from afar.
            (Verb::Subscribe | Verb::Unsubscribe | Verb::Receipt, Target::Group(_)) => {
                Err(TopicError::GroupNotAllowed {
                    verb: route.verb.as_str(),
                }
                .into())
            }
            (Verb::Members, Target::User(_)) => Err(TopicError::UserNotAllowed.into()),
        }
    }
}

enum Applied {
    /// The answer to publish.
    Report(ResultReport),
    /// A send recorded with its final report already due (it reaches no
    /// subscription): the receipt records that report as published.
    Recorded(ResultReport, Receipt),
    /// A send in the queue: the engine publishes its result.
    Queued,
}

impl ProcessorParts {
    /// Counts an applied command and publishes its answer, if it has one.
    async fn answer(&self, verb: &str, reply_to: String, applied: Applied, answered: Receipt) {
        Stats::add(&self.stats.commands, 1);
        self.stats.by_verb.add(verb);
        match applied {
            Applied::Report(report) => {
                self.publish_answer(reply_to, &report, answered).await;
            }
            Applied::Recorded(report, published) => {
                answered.confirm();
                self.publish_result(reply_to, &report, published).await;
            }
            Applied::Queued => answered.confirm(),
        }
    }

    /// Publishes a command's answer; `answered` is the command's receipt
    /// (see [`ProcessorParts::ack_once_applied`]).
    async fn publish_answer(&self, topic: String, report: &ResultReport, answered: Receipt) {
        let receipt = if self.ack_once_applied {
            answered.confirm();
            Receipt::none()
        } else {
            answered
        };
        self.publish_result(topic, report, receipt).await;
    }

    async fn publish_result(&self, topic: String, report: &ResultReport, receipt: Receipt) {
        let out = Outgoing {
            topic,
            payload: report.to_json(),
            retain: false,
        };
        if self.egress.publish_confirmed(out, receipt).await.is_err() {
            tracing::warn!(
                command_id = report.id,
                "result not published: the daemon is stopping"
            );
        }
    }
}

/// A fresh command id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The `id` of a payload that could not be parsed as a command, so the
/// rejection can still be matched by the service waiting for it.
fn peek_id(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let id = value.get("id")?.as_str()?;
    (!id.is_empty() && id.chars().count() <= crate::notification::MAX_ID_LEN).then(|| id.to_owned())
}

/// Reads an optional `id` for commands other than send.
fn command_id(value: &serde_json::Value) -> Result<String, CommandError> {
    match value.get("id") {
        None | Some(serde_json::Value::Null) => Ok(new_id()),
        Some(serde_json::Value::String(id))
            if !id.is_empty() && id.chars().count() <= crate::notification::MAX_ID_LEN =>
        {
            Ok(id.clone())
        }
        Some(_) => Err(CommandError::Invalid(format!(
            "id must be a string of 1 to {} characters",
            crate::notification::MAX_ID_LEN
        ))),
    }
}

/// With subscribe tokens on, checks the payload's `token` for `user` in
/// `package` (`subscribe`, `unsubscribe` and `list` carry one).
fn check_token(
    inner: &ProcessorParts,
    value: &serde_json::Value,
    package: &crate::model::Package,
    user: &crate::model::User,
) -> Result<(), CommandError> {
    let Some(key) = &inner.subscribe_tokens else {
        return Ok(());
    };
    let now = crate::clock::now_ms() / 1000;
    let token = value.get("token").and_then(serde_json::Value::as_str);
    key.verify(token, package, user, now)?;
    Ok(())
}

/// Parses a JSON object payload, with a message naming the verb.
fn json_object(
    verb: &str,
    payload: &[u8],
    expected: &str,
) -> Result<serde_json::Value, CommandError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(CommandError::Invalid(format!(
            "payload is empty: {verb} expects {expected}"
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
        CommandError::Invalid(format!(
            "payload is not valid JSON ({}): {verb} expects {expected}",
            crate::notification::json_message(&e)
        ))
    })?;
    if !value.is_object() {
        return Err(CommandError::Invalid(format!(
            "payload is not a JSON object: {verb} expects {expected}"
        )));
    }
    Ok(value)
}

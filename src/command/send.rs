//! `…/{user}/send` and `…/@{group}/send`: record the send and its
//! deliveries, publish the real-time event, and wake the delivery engine.
//!
//! Nothing is sent from here: the command is acknowledged once its
//! deliveries are in the queue, so a crash after that loses nothing, and a
//! redelivery of the same command (same `id`) is answered `duplicate`.

use super::{Applied, CommandError, Processor, new_id};
use std::sync::Arc;

use crate::clock::now_ms;
use crate::delivery::{self, Marked, Prepared, publish_event};
use crate::model::{Group, Target, User};
use crate::notification::Notification;
use crate::push::payload;
use crate::report::Event;
use crate::store::{Enqueued, NewSend, Published, Recipients, StoreError};
use crate::topics::Route;

/// A send parsed and rendered, ready to record.
pub(super) struct Ready {
    route: Route,
    notification: Notification,
    /// For a send without an `id` of its own: its topic and payload hashed.
    digest: Option<String>,
    redelivered: bool,
    accepted_ms: u64,
    web_push: Vec<u8>,
    /// Who the event goes to: the user, or the group's members now.
    users: Vec<User>,
    group: Option<Group>,
    event: bytes::Bytes,
    target: String,
}

impl Ready {
    /// Whether it may be recorded together with others (see
    /// `Store::enqueue_many`): to one user, and not a redelivery recognised
    /// by its content.
    pub(super) fn is_batchable(&self) -> bool {
        self.group.is_none() && !(self.redelivered && self.digest.is_some())
    }

    pub(super) fn key(&self) -> (&str, &str) {
        (self.route.package.as_str(), &self.notification.id)
    }

    fn new_send<'a>(&'a self, window: std::time::Duration) -> NewSend<'a> {
        let window_ms = crate::clock::ms(window);
        let recipients = match (&self.route.target, &self.group) {
            (_, Some(group)) => Recipients::Group(group),
            (Target::User(user), None) => Recipients::User(user),
            (Target::Group(group), None) => Recipients::Group(group),
        };
        NewSend {
            package: &self.route.package,
            id: &self.notification.id,
            target: &self.target,
            recipients,
            members: self.group.as_ref().map(|_| self.users.len() as u64),
            accepted_ms: self.accepted_ms,
            payload: &self.web_push,
            ttl: self.notification.ttl,
            urgency: self.notification.urgency.as_header(),
            topic: self.notification.topic.as_deref(),
            duplicate_after_ms: self.accepted_ms.saturating_sub(window_ms),
            digest: self.digest.as_deref(),
            redelivered: self.redelivered,
            event: &self.event,
        }
    }
}

/// Parses and renders a send; a group's members are read here.
pub(super) async fn prepare(
    processor: &Processor,
    route: Route,
    payload: &[u8],
    redelivered: bool,
) -> Result<Ready, CommandError> {
    let inner = &processor.inner;
    let mut generated = false;
    let notification = Notification::parse(payload, inner.default_ttl, || {
        generated = true;
        new_id()
    })?;
    // Without an id of its own, a send is recognised on redelivery by its
    // topic and payload — never otherwise, so two identical alerts sent on
    // purpose both go out.
    let digest = generated.then(|| digest(&route, payload));
    let accepted_ms = now_ms();
    // Rendered once per command and only encrypted per subscription (each
    // push adds its receipt token, whose length the id decides).
    let reserved = inner.receipts.as_ref().map_or(0, |r| {
        payload::receipt_len(crate::receipt::token_len(&notification.id), r.interactions)
    });
    let web_push = payload::render(&notification, accepted_ms, reserved)?;
    let (users, group) = match &route.target {
        Target::User(user) => (vec![user.clone()], None),
        Target::Group(group) => (
            inner.store.members(&route.package, group).await?,
            Some(group.clone()),
        ),
    };
    let event = Event {
        notification: &notification,
        ts: accepted_ms as f64 / 1000.0,
        group: group.as_ref().map(Group::as_str),
    }
    .to_json();
    let target = route.target.to_string();
    Ok(Ready {
        route,
        notification,
        digest,
        redelivered,
        accepted_ms,
        web_push,
        users,
        group,
        event,
        target,
    })
}

pub(super) async fn apply(
    processor: &Processor,
    route: Route,
    payload: &[u8],
    redelivered: bool,
) -> Result<Applied, CommandError> {
    let inner = &processor.inner;
    let ready = prepare(processor, route, payload, redelivered).await?;
    // Until the event is handed to egress, no push of this send goes out.
    let marked = inner.hand_off.mark(ready.key().0, ready.key().1);
    let enqueued = inner
        .store
        .enqueue(&ready.new_send(inner.dedup_window), &inner.owner)
        .await?;
    Ok(finish(processor, ready, enqueued, marked).await)
}

/// Records `sends` together (see `Ready::is_batchable`; their ids distinct)
/// in one transaction, then finishes each in order.
pub(super) async fn apply_many(
    processor: &Processor,
    sends: Vec<Ready>,
) -> Result<Vec<Applied>, StoreError> {
    let inner = &processor.inner;
    let marked: Vec<Marked> = sends
        .iter()
        .map(|s| inner.hand_off.mark(s.key().0, s.key().1))
        .collect();
    let new_sends: Vec<NewSend<'_>> = sends
        .iter()
        .map(|s| s.new_send(inner.dedup_window))
        .collect();
    let enqueued = inner.store.enqueue_many(&new_sends, &inner.owner).await?;
    drop(new_sends);
    let mut applied = Vec::with_capacity(sends.len());
    for ((ready, enqueued), marked) in sends.into_iter().zip(enqueued).zip(marked) {
        applied.push(finish(processor, ready, enqueued, marked).await);
    }
    Ok(applied)
}

/// What becomes of a recorded send: its event handed to egress (after which
/// its pushes may go), its message handed to the engine, its answer.
async fn finish(
    processor: &Processor,
    ready: Ready,
    enqueued: Enqueued,
    marked: Marked,
) -> Applied {
    let inner = &processor.inner;
    let Ready {
        route,
        notification,
        redelivered,
        accepted_ms,
        web_push,
        users,
        group,
        event,
        ..
    } = ready;
    let subscriptions = match enqueued {
        Enqueued::Duplicate {
            earlier,
            unpublished_event,
        } => {
            tracing::info!(
                command_id = notification.id,
                package = %route.package,
                target = %route.target,
                "send dropped as a duplicate of an earlier one with the same id"
            );
            if let Some(event) = unpublished_event.filter(|_| redelivered) {
                // The broker delivers the command again: the daemon that
                // recorded it may have died before the broker took its
                // event. (A service sending the same id twice gets no
                // second event; an acknowledgement still being recorded
                // looks unacknowledged for a moment.)
                publish_event(
                    &inner.egress,
                    &inner.topics,
                    &inner.ledger,
                    &route.package,
                    &earlier.id,
                    &users,
                    event.into(),
                )
                .await;
            }
            let mut report = delivery::report(&earlier);
            report.id = notification.id.clone();
            report.duplicate = true;
            return Applied::Report(report);
        }
        Enqueued::New { subscriptions } => subscriptions,
    };
    if subscriptions > 0 {
        // The engine takes it from here rather than reading it back.
        inner.messages.put(
            route.package.as_str(),
            &notification.id,
            Arc::new(Prepared {
                payload: Arc::from(web_push),
                ttl: notification.ttl,
                urgency: notification.urgency,
                topic: notification.topic.as_deref().map(Arc::from),
                expires_ms: accepted_ms.saturating_add(u64::from(notification.ttl) * 1000),
                signer: inner.signers.for_package(&route.package).clone(),
            }),
            subscriptions,
        );
    }

    // The event goes out before any push is attempted: live listeners hear
    // of the notification first, and a broken push service cannot delay them.
    publish_event(
        &inner.egress,
        &inner.topics,
        &inner.ledger,
        &route.package,
        &notification.id,
        &users,
        event,
    )
    .await;
    drop(marked);
    tracing::info!(
        command_id = notification.id,
        package = %route.package,
        target = %route.target,
        subscriptions,
        "send accepted"
    );
    if subscriptions == 0 {
        // Nothing to deliver: the final result is due now.
        let published = inner.ledger.receipt(Published::Report {
            package: route.package.as_str().to_owned(),
            id: notification.id.clone(),
            is_final: true,
        });
        let mut report = crate::report::ResultReport::accepted(notification.id, "send");
        report.members = group.as_ref().map(|_| users.len() as u64);
        return Applied::Recorded(report, published);
    }
    inner.wake.notify();
    Applied::Queued
}

/// SHA-256 of the command's package, target and payload, base64url.
fn digest(route: &Route, payload: &[u8]) -> String {
    use base64::Engine as _;
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [
        route.package.as_str().as_bytes(),
        b"\0",
        route.target.to_string().as_bytes(),
        b"\0",
    ] {
        context.update(part);
    }
    context.update(payload);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(context.finish())
}

//! `…/{user}/send` and `…/@{group}/send`: record the send and its
//! deliveries, publish the real-time event, and wake the delivery engine.
//!
//! Nothing is sent from here: the command is acknowledged once its
//! deliveries are in the queue, so a crash after that loses nothing, and a
//! redelivery of the same command (same `id`) is answered `duplicate`.

use super::{Applied, CommandError, Processor, new_id};
use std::sync::Arc;

use crate::delivery::{self, Prepared, publish_event};
use crate::model::{Group, Target};
use crate::notification::Notification;
use crate::push::payload;
use crate::report::{Event, now_ms};
use crate::store::{Enqueued, NewSend, Published, Recipients};
use crate::topics::Route;

pub(super) async fn apply(
    processor: &Processor,
    route: Route,
    payload: &[u8],
    redelivered: bool,
) -> Result<Applied, CommandError> {
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
    // Rendered once per command and only encrypted per subscription.
    let web_push = payload::render(&notification, accepted_ms)?;

    let (users, recipients, group) = match &route.target {
        Target::User(user) => (vec![user.clone()], Recipients::User(user), None),
        Target::Group(group) => (
            inner.store.members(&route.package, group).await?,
            Recipients::Group(group),
            Some(group.clone()),
        ),
    };
    let event = Event {
        notification: &notification,
        ts: accepted_ms as f64 / 1000.0,
        group: group.as_ref().map(Group::as_str),
    }
    .to_json();
    let window_ms: u64 = inner
        .dedup_window
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX);
    let target = route.target.to_string();
    // Until the event is handed to egress, no push of this send goes out.
    let marked = inner
        .hand_off
        .mark(route.package.as_str(), &notification.id);
    let enqueued = inner
        .store
        .enqueue(
            &NewSend {
                package: &route.package,
                id: &notification.id,
                target: &target,
                recipients,
                members: group.as_ref().map(|_| users.len() as u64),
                accepted_ms,
                payload: &web_push,
                ttl: notification.ttl,
                urgency: notification.urgency.as_header(),
                topic: notification.topic.as_deref(),
                duplicate_after_ms: accepted_ms.saturating_sub(window_ms),
                digest: digest.as_deref(),
                redelivered,
                event: &event,
            },
            &inner.owner,
        )
        .await?;
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
            return Ok(Applied::Report(report));
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
        return Ok(Applied::Recorded(report, published));
    }
    inner.wake.notify();
    Ok(Applied::Queued)
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

//! `…/{user}/send` and `…/@{group}/send`: the real-time event, then Web Push
//! to every active subscription of the addressed users.

use std::sync::Arc;

use super::{CommandError, Pending, Processor, new_id};
use crate::delivery::{Fanout, Summary};
use crate::model::{Group, Target};
use crate::notification::Notification;
use crate::push::payload;
use crate::report::{Event, Outgoing, ResultReport, now_ms};
use crate::topics::Route;

pub(super) async fn apply(
    processor: &Processor,
    route: Route,
    payload: &[u8],
) -> Result<Pending, CommandError> {
    let inner = &processor.inner;
    let notification = Notification::parse(payload, inner.default_ttl, new_id)?;
    let accepted_ms = now_ms();
    // Rendered once per command and only encrypted per subscription.
    let web_push = payload::render(&notification, accepted_ms)?;

    let (users, group) = match &route.target {
        Target::User(user) => (vec![user.clone()], None),
        Target::Group(group) => (
            inner.store.members(&route.package, group).await?,
            Some(group.clone()),
        ),
    };
    let subscriptions = if users.is_empty() {
        Vec::new()
    } else {
        inner
            .store
            .active_subscriptions(&route.package, &users)
            .await?
    };

    // The event goes out before any push is attempted: live listeners hear
    // of the notification first, and a broken push service cannot delay them.
    let event = Event {
        notification: &notification,
        ts: accepted_ms as f64 / 1000.0,
        group: group.as_ref().map(Group::as_str),
    }
    .to_json();
    for user in &users {
        let out = Outgoing {
            topic: inner.topics.event(&route.package, user),
            payload: event.clone(),
            retain: false,
        };
        if inner.egress.publish(out).await.is_err() {
            tracing::warn!(command_id = notification.id, user = %user, "real-time event not published: the daemon is stopping");
        }
    }

    tracing::info!(
        command_id = notification.id,
        package = %route.package,
        target = %route.target,
        subscriptions = subscriptions.len(),
        "send accepted"
    );
    let fanout = Fanout {
        payload: Arc::from(web_push),
        ttl: notification.ttl,
        urgency: notification.urgency,
        topic: notification.topic.as_deref().map(Arc::from),
        signer: inner.signers.for_package(&route.package).clone(),
        subscriptions,
    };
    let processor = processor.clone();
    let members = group.as_ref().map(|_| users.len() as u64);
    Ok(Box::pin(async move {
        let inner = &processor.inner;
        let total = fanout.subscriptions.len() as u64;
        let summary = if fanout.subscriptions.is_empty() {
            Summary::default()
        } else {
            inner.deliverer.deliver(fanout).await
        };
        let deactivated = match inner.store.deactivate_rows(&summary.gone).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(command_id = notification.id, error = %e, gone = summary.gone.len(), "gone subscriptions not deactivated");
                0
            }
        };
        let report = ResultReport {
            subscriptions: total,
            delivered: summary.delivered,
            failed: summary.failed,
            deactivated,
            failures: summary.failures,
            members,
            ..ResultReport::accepted(notification.id.clone(), "send")
        };
        tracing::info!(
            command_id = report.id,
            package = %route.package,
            target = %route.target,
            delivered = report.delivered,
            failed = report.failed,
            deactivated = report.deactivated,
            "send finished"
        );
        let topic = inner.topics.result(&route.package, &route.target);
        inner.publish_result(topic, &report).await;
    }))
}

//! `…/{user}/receipt`: what a browser did with a push, sent by the shipped
//! service worker with the receipt token the push carried (see `receipt`).
//!
//! `{"token": "…", "receipt": "shown" | "failed" | "clicked" | "closed",
//! "action": "…", "reason": "…", "id": "…"}`. An accepted receipt is
//! published on the user's result topic as a report with `command:
//! "receipt"`, the send's id in `send_id` and the subscription's id in
//! `subscription`; its own `id` is the receipt's (a send's `id` there would
//! let a service waiting for the send's result take the receipt for it).
//! It changes nothing of the send's own reports. A token that is forged,
//! of another user, too old, or already used for this kind of receipt, and
//! a user sending more than their allowance, get an error and change
//! nothing. The same receipt command again (the same `id`: the broker's
//! redelivery after a daemon died before publishing its answer) is
//! answered as the first time, with `duplicate: true`.

use std::time::Instant;

use serde_json::Value;

use super::{CommandError, ProcessorParts, command_id, json_object};
use crate::clock::now_ms;
use crate::model::{Package, User};
use crate::receipt::{self, Kind};
use crate::report::ResultReport;
use crate::store::Taken;

const EXPECTED: &str = r#"{"token": "…", "receipt": "shown"|"failed"|"clicked"|"closed", "action": "…", "reason": "…"}"#;
const FIELDS: [&str; 5] = ["id", "token", "receipt", "action", "reason"];
/// The longest `action` (a notification action's name) and `reason` (the
/// browser's words) kept; longer ones are cut, not refused: a receipt is
/// worth more than its wording.
const MAX_ACTION_CHARS: usize = 64;
const MAX_REASON_CHARS: usize = 256;

pub(super) async fn apply(
    inner: &ProcessorParts,
    package: &Package,
    user: &User,
    payload: &[u8],
) -> Result<ResultReport, CommandError> {
    let value = json_object("receipt", payload, EXPECTED)?;
    let id = command_id(&value)?;
    if let Some(key) = value
        .as_object()
        .and_then(|m| m.keys().find(|k| !FIELDS.contains(&k.as_str())))
    {
        return Err(CommandError::Invalid(format!(
            "unknown field `{key}`: receipt expects {EXPECTED}"
        )));
    }
    let Some(receipts) = &inner.receipts else {
        return Err(CommandError::Invalid(
            "receipts are turned off on this daemon (axion_push.receipts.enabled)".into(),
        ));
    };
    let kind = match value.get("receipt") {
        Some(Value::String(text)) => Kind::parse(text).ok_or_else(|| {
            CommandError::Invalid(format!(
                "receipt must be shown, failed, clicked or closed, not '{}'",
                text.chars().take(32).collect::<String>()
            ))
        })?,
        _ => {
            return Err(CommandError::Invalid(format!(
                "receipt is missing: receipt expects {EXPECTED}"
            )));
        }
    };
    if kind.is_interaction() && !receipts.interactions {
        return Err(CommandError::Invalid(format!(
            "{} receipts are turned off on this daemon (axion_push.receipts.clicks)",
            kind.as_str()
        )));
    }
    let action = text(&value, "action", MAX_ACTION_CHARS)?;
    let reason = text(&value, "reason", MAX_REASON_CHARS)?;
    if !receipts.allow(package.as_str(), user.as_str(), Instant::now()) {
        return Err(CommandError::TooManyReceipts);
    }
    let token = value.get("token").and_then(Value::as_str);
    let verified = receipts.key.verify(token, package, user, now_ms() / 1000)?;
    let taken = inner
        .store
        .take_receipt(
            package,
            &verified.tag,
            kind.as_str(),
            verified.sent_secs.saturating_mul(1000),
            &id,
        )
        .await?;
    if taken == Taken::Replay {
        return Err(CommandError::Invalid(format!(
            "this push's {} receipt was already taken: a receipt counts once",
            kind.as_str()
        )));
    }
    let subscription = receipt::subscription_text(&verified.subscription);
    // The receipt is taken: it is answered whatever becomes of this record
    // (an error here would leave it taken and never reported).
    if let Err(e) = inner
        .store
        .record_receipt_health(package, &subscription, user, kind.as_str(), now_ms())
        .await
    {
        tracing::warn!(error = %e, "could not record a receipt in its subscription's health");
    }
    tracing::info!(
        command_id = id,
        send_id = verified.send_id,
        package = %package,
        user = %user,
        receipt = kind.as_str(),
        duplicate = taken == Taken::Again,
        "receipt"
    );
    Ok(ResultReport {
        duplicate: taken == Taken::Again,
        send_id: Some(verified.send_id),
        receipt: Some(kind.as_str().to_owned()),
        subscription: Some(subscription),
        action: action.filter(|_| kind == Kind::Clicked),
        reason: reason.filter(|_| kind == Kind::Failed),
        ..ResultReport::accepted(id, "receipt")
    })
}

/// An optional text field, cut to `max` characters.
fn text(value: &Value, name: &str, max: usize) -> Result<Option<String>, CommandError> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.chars().take(max).collect())),
        Some(_) => Err(CommandError::Invalid(format!("{name} must be a string"))),
    }
}

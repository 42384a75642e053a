//! `test-push`: one send through the running daemon, its first result
//! report printed as JSON, and what the report means said in sentences.
//!
//! The first report comes once every delivery was tried once; deliveries
//! waiting for a retry are `queued`, not failed, and the words must not
//! say otherwise.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::client;
use crate::config::Config;
use crate::model::{Package, Target};
use crate::report::ResultReport;
use crate::topics::{Topics, Verb};

/// `test-push`'s arguments.
pub(super) struct TestPush<'a> {
    pub user: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub package: &'a str,
    pub url: &'a str,
    /// Seconds to wait for the report.
    pub timeout: u64,
    /// How long to print receipts after the report, if at all.
    pub wait_receipts: Option<Duration>,
}

pub(super) async fn run(config: &Config, args: TestPush<'_>) -> Result<ExitCode> {
    let TestPush {
        user,
        title,
        body,
        package,
        url,
        timeout,
        wait_receipts,
    } = args;
    let package = Package::parse(package).context("--package")?;
    let target = Target::parse(user).context("USER")?;
    let id = crate::command::new_id();
    let command = serde_json::json!({"id": id, "title": title, "body": body, "url": url});
    let topics = Topics::new(config.settings.mqtt.topic_prefix.clone());
    let mut print_receipt = |receipt: &ResultReport| print_receipt(receipt);
    // A group's members each get their receipts on their own result topic.
    let receipts = wait_receipts.map(|wait| client::Receipts {
        filter: match &target {
            Target::User(_) => topics.result(&package, &target),
            Target::Group(_) => topics.all_results(&package),
        },
        wait,
        each: &mut print_receipt,
    });
    let mut exit = Ok(ExitCode::SUCCESS);
    client::request_watching(
        config,
        client::Request {
            command_topic: &topics.command(&package, &target, Verb::Send),
            result_topic: &topics.result(&package, &target),
            id: &id,
            payload: serde_json::to_vec(&command)?,
            timeout: Duration::from_secs(timeout),
        },
        receipts,
        |report| exit = judge(report, &target, &package, wait_receipts),
    )
    .await?;
    exit
}

/// Prints the report and says what it means; the exit code.
fn judge(
    report: &ResultReport,
    target: &Target,
    package: &Package,
    wait_receipts: Option<Duration>,
) -> Result<ExitCode> {
    println!(
        "{}",
        serde_json::to_string_pretty(report).expect("a report serialises")
    );
    if !report.ok {
        bail!(
            "the daemon refused the notification: {}",
            report.error.clone().unwrap_or_default()
        );
    }
    if report.subscriptions == 0 {
        eprintln!(
            "{target} has no active subscription in package {package}: nothing was pushed (subscribe a browser first)"
        );
        return Ok(ExitCode::FAILURE);
    }
    let verdict = Verdict::of(report);
    for line in &verdict.lines {
        eprintln!("{line}");
    }
    if let Some(wait) = wait_receipts {
        eprintln!(
            "waiting {} for receipts (shown, failed, and with receipts.clicks on, clicked and closed)…",
            humantime::format_duration(wait)
        );
    }
    Ok(if verdict.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One receipt as a JSON line on stdout, and in words on stderr.
fn print_receipt(receipt: &ResultReport) {
    println!(
        "{}",
        serde_json::to_string(receipt).expect("a report serialises")
    );
    let what = receipt.receipt.as_deref().unwrap_or("?");
    let subscription = receipt.subscription.as_deref().unwrap_or("?");
    let detail = match (what, &receipt.action, &receipt.reason) {
        ("clicked", Some(action), _) => format!(" (action {action})"),
        ("failed", _, Some(reason)) => format!(": {reason}"),
        _ => String::new(),
    };
    eprintln!("{what} by subscription {subscription}{detail}");
}

/// A send's report in sentences, one per kind of outcome.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    lines: Vec<String>,
    /// Something was delivered and nothing failed, expired or waits for a
    /// retry. A subscription found gone is the browser's doing, not a
    /// failure of the setup.
    success: bool,
}

impl Verdict {
    fn of(report: &ResultReport) -> Verdict {
        let mut lines = Vec::new();
        if report.delivered > 0 {
            lines.push(format!("{} delivered", pushes(report.delivered)));
        }
        if report.failed > 0 {
            lines.push(format!(
                "{} failed: {}",
                pushes(report.failed),
                causes(&report.failures)
            ));
        }
        if report.deactivated > 0 {
            lines.push(format!(
                "{} gone (the push service answered 404 or 410): deactivated",
                count(report.deactivated, "subscription", "subscriptions")
            ));
        }
        if report.expired > 0 {
            let met = if report.retries.is_empty() || report.queued > 0 {
                String::new()
            } else {
                format!(" (its attempts met: {})", causes(&report.retries))
            };
            lines.push(format!(
                "{} expired: the message's TTL ran out before a push service took it{met}",
                pushes(report.expired)
            ));
        }
        if report.queued > 0 {
            let why = if report.retries.is_empty() {
                "the push service could not take it yet (a 429, a 5xx, a timeout or no \
                 connection)"
                    .to_owned()
            } else {
                causes(&report.retries)
            };
            lines.push(format!(
                "{} queued for retry: {why}. The daemon retries until the message's TTL runs \
                 out, then publishes a final report",
                pushes(report.queued)
            ));
        }
        let success =
            report.delivered > 0 && report.failed == 0 && report.expired == 0 && report.queued == 0;
        Verdict { lines, success }
    }
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn pushes(n: u64) -> String {
    count(n, "push", "pushes")
}

/// A report's `failures` or `retries` in words: one cause alone, or each
/// with its count.
fn causes(causes: &std::collections::BTreeMap<String, u64>) -> String {
    match causes.len() {
        0 => "the report names no cause".to_owned(),
        1 => causes.keys().map(|c| explain(c)).collect(),
        _ => causes
            .iter()
            .map(|(cause, n)| format!("{n} × {}", explain(cause)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// One cause of the report's `failures` (an HTTP status or a word, see
/// `ResultReport::failures`), as the operator would look into it.
fn explain(cause: &str) -> String {
    match cause {
        "timeout" => "the push service did not answer within delivery.request_timeout".into(),
        "connection" => {
            "no connection to the push service (name resolution, network or TLS)".into()
        }
        "policy" => {
            "the endpoint no longer passes the endpoint policy (axion_push.endpoints)".into()
        }
        "endpoint" => "the stored endpoint cannot be used".into(),
        "keys" => "the stored subscription keys cannot be used".into(),
        "paused" => "its push service is paused after failing repeatedly; the daemon tries \
                     again when it recovers"
            .into(),
        "database" => "the daemon could not read the message from its database; it tries \
                       again once the database answers"
            .into(),
        "stale" => "the push service refused this subscription alone for \
                    subscriptions.expire_after while taking others' pushes: deactivated as stale"
            .into(),
        "401" | "403" => format!(
            "the push service answered {cause}: the VAPID key pair or vapid_email is wrong, \
             or the browser subscribed with another key"
        ),
        "400" => "the push service answered 400: it found the request malformed".into(),
        "413" => "the push service answered 413: the notification is too large for it".into(),
        "429" => "the push service answered 429: too many requests".into(),
        status if status.len() == 3 && status.starts_with('5') => {
            format!("the push service answered {status}: an error on its side")
        }
        status if status.parse::<u16>().is_ok() => format!("the push service answered {status}"),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: serde_json::Value) -> ResultReport {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_push_queued_for_retry_is_not_called_failed() {
        let v = Verdict::of(&report(serde_json::json!({
            "ok": true, "subscriptions": 1, "queued": 1
        })));
        assert!(!v.success);
        assert_eq!(v.lines.len(), 1, "{v:?}");
        assert!(v.lines[0].starts_with("1 push queued for retry:"), "{v:?}");
        assert!(!v.lines[0].contains("failed"), "{v:?}");
    }

    #[test]
    fn a_push_queued_for_retry_says_what_its_attempt_met() {
        let v = Verdict::of(&report(serde_json::json!({
            "ok": true, "subscriptions": 1, "queued": 1, "retries": {"connection": 1}
        })));
        assert_eq!(
            v.lines,
            [
                "1 push queued for retry: no connection to the push service (name resolution, \
              network or TLS). The daemon retries until the message's TTL runs out, then \
              publishes a final report"
            ]
        );
    }

    #[test]
    fn an_expired_push_says_what_its_attempts_met() {
        let v = Verdict::of(&report(serde_json::json!({
            "ok": true, "subscriptions": 1, "expired": 1, "retries": {"503": 3}
        })));
        assert_eq!(
            v.lines,
            [
                "1 push expired: the message's TTL ran out before a push service took it (its \
              attempts met: the push service answered 503: an error on its side)"
            ]
        );
    }

    #[test]
    fn a_refusal_is_explained_by_its_status() {
        let v = Verdict::of(&report(serde_json::json!({
            "ok": true, "subscriptions": 2, "delivered": 1, "failed": 1, "failures": {"403": 1}
        })));
        assert!(!v.success);
        assert_eq!(v.lines[0], "1 push delivered");
        assert!(
            v.lines[1]
                .starts_with("1 push failed: the push service answered 403: the VAPID key pair"),
            "{v:?}"
        );
    }

    #[test]
    fn several_causes_are_counted_each() {
        let v = Verdict::of(&report(serde_json::json!({
            "ok": true, "subscriptions": 3, "failed": 3, "failures": {"413": 1, "policy": 2}
        })));
        assert!(
            v.lines[0].starts_with("3 pushes failed: 1 × the push service answered 413"),
            "{v:?}"
        );
        assert!(
            v.lines[0].contains("; 2 × the endpoint no longer passes"),
            "{v:?}"
        );
    }

    #[test]
    fn every_push_delivered_is_success_even_beside_a_gone_subscription() {
        let v = Verdict::of(&report(serde_json::json!({
            "ok": true, "subscriptions": 3, "delivered": 2, "deactivated": 1
        })));
        assert!(v.success, "{v:?}");
        assert_eq!(
            v.lines,
            [
                "2 pushes delivered",
                "1 subscription gone (the push service answered 404 or 410): deactivated"
            ]
        );
    }
}

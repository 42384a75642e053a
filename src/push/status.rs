//! What a push service's answer means, as an [`Outcome`].
//!
//! Only 404 and 410 say a subscription is gone; everything else is either
//! worth trying again (429, 5xx, timeouts, broken connections — with the
//! delay the service asked for) or a refusal that retrying will not change.
//! This is where ntfy and others go wrong: they delete subscriptions on any
//! error, so a push service's bad minute costs users their notifications.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Why a delivery may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// 429 or a 5xx.
    Status(u16),
    Timeout,
    Connection,
}

impl std::fmt::Display for RetryCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryCause::Status(code) => write!(f, "HTTP {code}"),
            RetryCause::Timeout => f.write_str("timeout"),
            RetryCause::Connection => f.write_str("connection failed"),
        }
    }
}

/// The result of one push request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 201/202 (any 2xx): the push service took the message.
    Delivered,
    /// 404/410: the subscription expired or was revoked; deactivate it.
    Gone(u16),
    /// Worth retrying, no sooner than `after` when the service said so.
    Retry {
        cause: RetryCause,
        after: Option<Duration>,
    },
    /// 413: the service refused the size; retrying will not help.
    TooLarge,
    /// 400, 401, 403 and other 4xx: refused; not retried, not deactivated
    /// (403 usually means our VAPID keys are wrong, not the subscription).
    Rejected(u16),
}

impl Outcome {
    /// The key under which a result report counts this outcome as a failure;
    /// `None` for outcomes that are not failures.
    pub fn failure_key(&self) -> Option<String> {
        match self {
            Outcome::Delivered | Outcome::Gone(_) => None,
            Outcome::Retry {
                cause: RetryCause::Status(code),
                ..
            } => Some(code.to_string()),
            Outcome::Retry {
                cause: RetryCause::Timeout,
                ..
            } => Some("timeout".into()),
            Outcome::Retry {
                cause: RetryCause::Connection,
                ..
            } => Some("connection".into()),
            Outcome::TooLarge => Some("413".into()),
            Outcome::Rejected(code) => Some(code.to_string()),
        }
    }
}

/// Classifies a response. `now` anchors an HTTP-date `Retry-After`.
pub fn classify(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Outcome {
    let code = status.as_u16();
    match code {
        200..=299 => Outcome::Delivered,
        404 | 410 => Outcome::Gone(code),
        413 => Outcome::TooLarge,
        429 | 500..=599 => Outcome::Retry {
            cause: RetryCause::Status(code),
            after: retry_after(headers, now),
        },
        _ => Outcome::Rejected(code),
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3); a date
/// in the past means "now".
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn outcome(code: u16) -> Outcome {
        classify(
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            SystemTime::now(),
        )
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(outcome(201), Outcome::Delivered);
        assert_eq!(outcome(202), Outcome::Delivered);
        assert_eq!(outcome(404), Outcome::Gone(404));
        assert_eq!(outcome(410), Outcome::Gone(410));
        assert_eq!(outcome(413), Outcome::TooLarge);
        for code in [400, 401, 403] {
            assert_eq!(outcome(code), Outcome::Rejected(code));
        }
        for code in [429, 500, 502, 503] {
            assert_eq!(
                outcome(code),
                Outcome::Retry {
                    cause: RetryCause::Status(code),
                    after: None
                }
            );
        }
    }

    #[test]
    fn only_404_and_410_mean_gone() {
        for code in 100..600 {
            let Ok(status) = StatusCode::from_u16(code) else {
                continue;
            };
            let gone = matches!(
                classify(status, &HeaderMap::new(), SystemTime::now()),
                Outcome::Gone(_)
            );
            assert_eq!(gone, code == 404 || code == 410, "{code}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:50:07 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
        let mut h429 = HeaderMap::new();
        h429.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h429, now),
            Outcome::Retry {
                cause: RetryCause::Status(429),
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn failures_are_counted_under_their_status_or_cause() {
        assert_eq!(outcome(201).failure_key(), None);
        assert_eq!(outcome(410).failure_key(), None);
        assert_eq!(outcome(503).failure_key().as_deref(), Some("503"));
        assert_eq!(outcome(403).failure_key().as_deref(), Some("403"));
        assert_eq!(
            Outcome::Retry {
                cause: RetryCause::Timeout,
                after: None
            }
            .failure_key()
            .as_deref(),
            Some("timeout")
        );
    }
}

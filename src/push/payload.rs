//! The Web Push payload: what the browser decrypts.
//!
//! It is a Declarative Web Push message (`{"web_push": 8030, "notification":
//! {…}}`, W3C Push API), so Safari 18.4+ shows it without running a service
//! worker, and the shipped service worker reads the same shape everywhere
//! else. `title`, `body` and `url` are repeated at the top level, where
//! service workers written for the Python module read them — the price is a
//! few dozen bytes of the 3993 a push may carry.
//!
//! The message is `mutable`: a browser that shows declarative messages by
//! itself (Safari 18.4+, Firefox 153+) still hands it to the page's service
//! worker first, so every browser shows it the same way and a click can
//! focus a window that is already open on the page instead of opening
//! another. The browser shows the declarative notification itself only when
//! there is no service worker or it shows nothing.

use serde::Serialize;
use serde_json::Value;

use crate::notification::{Dir, Notification};

use super::ece::MAX_PLAINTEXT;

/// `web_push` magic number of a declarative push message.
const DECLARATIVE_MAGIC: u16 = 8030;

#[derive(Serialize)]
struct Declarative<'a> {
    web_push: u16,
    mutable: bool,
    notification: DeclarativeNotification<'a>,
    title: &'a str,
    body: &'a str,
    url: &'a str,
}

#[derive(Serialize)]
struct DeclarativeNotification<'a> {
    title: &'a str,
    body: &'a str,
    navigate: &'a str,
    dir: Dir,
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    badge: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    renotify: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    silent: bool,
    /// The spec spells the members as `NotificationOptions` does.
    #[serde(
        rename = "requireInteraction",
        skip_serializing_if = "std::ops::Not::not"
    )]
    require_interaction: bool,
    timestamp: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    actions: Vec<DeclarativeAction<'a>>,
    #[serde(skip_serializing_if = "is_empty_object")]
    data: &'a Value,
}

#[derive(Serialize)]
struct DeclarativeAction<'a> {
    action: &'a str,
    title: &'a str,
    navigate: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon: Option<&'a str>,
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.is_empty()) || v.is_null()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the notification is {len} bytes as a Web Push payload{}; at most {MAX_PLAINTEXT} fit one 4096-byte encrypted record (shorten body, data or actions)",
    if *reserved > 0 { format!(" ({reserved} of them the receipt token each push carries)") } else { String::new() }
)]
pub struct PayloadTooLarge {
    /// The payload's bytes, `reserved` included.
    pub len: usize,
    /// What each push adds to it (its receipt token).
    pub reserved: usize,
}

/// Renders the payload once per command; it is then encrypted per
/// subscription. `timestamp_ms` is when the command was accepted;
/// `reserved` is what each push adds to it (see [`with_receipt`]), counted
/// in the limit.
pub fn render(
    n: &Notification,
    timestamp_ms: u64,
    reserved: usize,
) -> Result<Vec<u8>, PayloadTooLarge> {
    let message = Declarative {
        web_push: DECLARATIVE_MAGIC,
        mutable: true,
        notification: DeclarativeNotification {
            title: &n.title,
            body: &n.body,
            navigate: &n.url,
            dir: n.dir,
            lang: n.lang.as_deref(),
            tag: n.tag.as_deref(),
            icon: n.icon.as_deref(),
            badge: n.badge.as_deref(),
            image: n.image.as_deref(),
            renotify: n.renotify,
            silent: n.silent,
            require_interaction: n.require_interaction,
            timestamp: timestamp_ms,
            actions: n
                .actions
                .iter()
                .map(|a| DeclarativeAction {
                    action: &a.action,
                    title: &a.title,
                    navigate: a.url.as_deref().unwrap_or(&n.url),
                    icon: a.icon.as_deref(),
                })
                .collect(),
            data: &n.data,
        },
        title: &n.title,
        body: &n.body,
        url: &n.url,
    };
    let bytes = serde_json::to_vec(&message).expect("a payload of strings and numbers serialises");
    let len = bytes.len() + reserved;
    if len > MAX_PLAINTEXT {
        return Err(PayloadTooLarge { len, reserved });
    }
    Ok(bytes)
}

/// The start of the member [`with_receipt`] adds.
const RECEIPT_OPEN: &str = r#","receipt":{"token":""#;
const RECEIPT_CLOSE_CLICKS: &str = r#"","clicks":true}"#;
const RECEIPT_CLOSE: &str = r#"","clicks":false}"#;

/// The bytes [`with_receipt`] adds for a token of `token_len` characters.
pub fn receipt_len(token_len: usize, clicks: bool) -> usize {
    let close = if clicks {
        RECEIPT_CLOSE_CLICKS
    } else {
        RECEIPT_CLOSE
    };
    RECEIPT_OPEN.len() + token_len + close.len()
}

/// One push's payload: the rendered one with its receipt token added as a
/// last top-level member, `"receipt": {"token", "clicks"}` (`clicks`: the
/// worker may report clicks and dismissals too). The payload is rendered
/// once per send; this only copies it, so a fan-out stays one render.
pub fn with_receipt(rendered: &[u8], token: &str, clicks: bool) -> Vec<u8> {
    debug_assert_eq!(
        rendered.last(),
        Some(&b'}'),
        "a rendered payload is an object"
    );
    debug_assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "a token is base64url: nothing to escape"
    );
    let close = if clicks {
        RECEIPT_CLOSE_CLICKS
    } else {
        RECEIPT_CLOSE
    };
    let body = &rendered[..rendered.len() - 1];
    let mut out = Vec::with_capacity(rendered.len() + receipt_len(token.len(), clicks));
    out.extend_from_slice(body);
    out.extend_from_slice(RECEIPT_OPEN.as_bytes());
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(close.as_bytes());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(json: &str) -> Notification {
        Notification::parse(json.as_bytes(), 60, || "id-1".into()).unwrap()
    }

    #[test]
    fn the_payload_is_a_declarative_push_message() {
        let n = notification(
            r#"{"title":"Alert","body":"Disk full","url":"/disks","tag":"disk","actions":[{"action":"ack","title":"Ack"}],"data":{"host":"db1"}}"#,
        );
        let v: Value = serde_json::from_slice(&render(&n, 1_700_000_000_000, 0).unwrap()).unwrap();
        assert_eq!(v["web_push"], 8030);
        assert_eq!(v["mutable"], true, "the service worker is asked first");
        let d = &v["notification"];
        assert_eq!(d["title"], "Alert");
        assert_eq!(d["body"], "Disk full");
        assert_eq!(d["navigate"], "/disks");
        assert_eq!(d["tag"], "disk");
        assert_eq!(d["dir"], "auto");
        assert_eq!(d["timestamp"], 1_700_000_000_000u64);
        assert_eq!(
            d["actions"][0]["navigate"], "/disks",
            "actions default to the url"
        );
        assert_eq!(d["data"]["host"], "db1");
        assert_eq!(
            v["title"], "Alert",
            "top-level copy for older service workers"
        );
        assert_eq!(v["url"], "/disks");
    }

    #[test]
    fn notification_options_keep_their_declarative_spelling() {
        let n = notification(
            r#"{"title":"T","require_interaction":true,"renotify":true,"tag":"t","silent":true}"#,
        );
        let v: Value = serde_json::from_slice(&render(&n, 0, 0).unwrap()).unwrap();
        let d = &v["notification"];
        assert_eq!(d["requireInteraction"], true);
        assert_eq!(d["renotify"], true);
        assert_eq!(d["silent"], true);
        assert!(d.get("require_interaction").is_none());
    }

    #[test]
    fn a_payload_that_cannot_fit_one_record_is_refused() {
        let n = notification(&format!(r#"{{"title":"T","body":"{}"}}"#, "x".repeat(4000)));
        let e = render(&n, 0, 0).unwrap_err();
        assert!(e.len > MAX_PLAINTEXT);
        assert!(e.to_string().contains("at most 3993"), "{e}");
    }

    #[test]
    fn the_receipt_is_a_last_member_and_counted_in_the_limit() {
        let n = notification(r#"{"title":"T","data":{"k":1}}"#);
        let rendered = render(&n, 0, 0).unwrap();
        let token = "AbC-_9";
        for clicks in [false, true] {
            let with = with_receipt(&rendered, token, clicks);
            assert_eq!(
                with.len(),
                rendered.len() + receipt_len(token.len(), clicks)
            );
            let v: Value = serde_json::from_slice(&with).unwrap();
            assert_eq!(v["receipt"]["token"], token);
            assert_eq!(v["receipt"]["clicks"], clicks);
            assert_eq!(v["notification"]["data"]["k"], 1);
        }
        let room = MAX_PLAINTEXT - rendered.len();
        assert!(render(&n, 0, room).is_ok());
        let e = render(&n, 0, room + 1).unwrap_err();
        assert_eq!(e.len, MAX_PLAINTEXT + 1);
        assert!(
            e.to_string()
                .contains(&format!("({} of them the receipt token", room + 1)),
            "{e}"
        );
    }
}

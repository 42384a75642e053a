//! The notification: what a person sees, as a send command describes it.
//!
//! Parsed once from the command, checked, and given its defaults (those of
//! the Python module: `body` empty, `url` `/`, TTL from the config). The
//! real-time event and the Web Push payload are both rendered from it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::MAX_TTL;

/// The longest `id` a command may carry.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    #[default]
    Auto,
    Ltr,
    Rtl,
}

/// RFC 8030 §5.3 `Urgency`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    VeryLow,
    Low,
    #[default]
    Normal,
    High,
}

impl Urgency {
    pub fn as_header(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// A button on the notification; `url` is opened when it is clicked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub action: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
}

/// A send command's payload as it arrives. Unknown fields are refused so a
/// misspelt option (`requireInteraction`) is reported instead of ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    id: Option<String>,
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    icon: Option<String>,
    #[serde(default)]
    badge: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    renotify: bool,
    #[serde(default)]
    require_interaction: bool,
    #[serde(default)]
    silent: bool,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    dir: Dir,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    ttl: Option<u32>,
    #[serde(default)]
    urgency: Urgency,
    #[serde(default)]
    topic: Option<String>,
}

/// A checked notification with every default applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub id: String,
    pub title: String,
    pub body: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub renotify: bool,
    pub require_interaction: bool,
    pub silent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    pub dir: Dir,
    pub actions: Vec<Action>,
    pub data: Value,
    pub ttl: u32,
    pub urgency: Urgency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// Why a send command's payload was refused; the text goes into the result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("payload is not a valid notification: {0}")]
    Json(String),
    #[error("title is empty")]
    EmptyTitle,
    #[error("id must be 1 to {MAX_ID_LEN} characters")]
    BadId,
    #[error("ttl {0} is over the maximum of {MAX_TTL} seconds (4 weeks)")]
    TtlTooLong(u32),
    #[error("topic must be 1 to 32 base64url characters (RFC 8030 §5.4)")]
    BadTopic,
    #[error("renotify needs a tag: browsers refuse renotify without one")]
    RenotifyWithoutTag,
    #[error("actions[{0}] needs a non-empty action and title")]
    BadAction(usize),
    /// `field` is `url` or `actions[i].url`; `found` says what the URL is
    /// without repeating it.
    #[error(
        "{field} must be an https:// URL or one relative to the app's site such as /inbox, not {found}"
    )]
    BadClickUrl { field: String, found: &'static str },
}

impl Notification {
    /// Parses a send command. `new_id` supplies an id when the command has
    /// none; `default_ttl` applies when it has no `ttl`.
    pub fn parse(
        payload: &[u8],
        default_ttl: u32,
        new_id: impl FnOnce() -> String,
    ) -> Result<Notification, NotificationError> {
        let wire: Wire = serde_json::from_slice(payload)
            .map_err(|e| NotificationError::Json(json_message(&e)))?;
        if wire.title.trim().is_empty() {
            return Err(NotificationError::EmptyTitle);
        }
        let id = match wire.id {
            Some(id) if id.is_empty() || id.chars().count() > MAX_ID_LEN => {
                return Err(NotificationError::BadId);
            }
            Some(id) => id,
            None => new_id(),
        };
        let ttl = wire.ttl.unwrap_or(default_ttl);
        if ttl > MAX_TTL {
            return Err(NotificationError::TtlTooLong(ttl));
        }
        if let Some(topic) = &wire.topic
            && !is_valid_topic(topic)
        {
            return Err(NotificationError::BadTopic);
        }
        if wire.renotify && wire.tag.as_deref().is_none_or(str::is_empty) {
            return Err(NotificationError::RenotifyWithoutTag);
        }
        if let Some(i) = wire
            .actions
            .iter()
            .position(|a| a.action.is_empty() || a.title.is_empty())
        {
            return Err(NotificationError::BadAction(i));
        }
        if let Some(url) = &wire.url {
            check_click_url("url", url)?;
        }
        for (i, action) in wire.actions.iter().enumerate() {
            if let Some(url) = &action.url {
                check_click_url(&format!("actions[{i}].url"), url)?;
            }
        }
        Ok(Notification {
            id,
            title: wire.title,
            body: wire.body,
            url: wire.url.unwrap_or_else(|| "/".to_owned()),
            icon: wire.icon,
            badge: wire.badge,
            image: wire.image,
            tag: wire.tag,
            renotify: wire.renotify,
            require_interaction: wire.require_interaction,
            silent: wire.silent,
            lang: wire.lang,
            dir: wire.dir,
            actions: wire.actions,
            data: wire
                .data
                .unwrap_or_else(|| Value::Object(Default::default())),
            ttl,
            urgency: wire.urgency,
            topic: wire.topic,
        })
    }
}

/// A click opens `url` in the browser (`clients.openWindow`), so it must be a
/// web page: an `https` URL, or one relative to the app's site, which the
/// service worker resolves against its own origin. `javascript:`, `data:`
/// and the like would run or show whatever the sender chose; a
/// scheme-relative `//host/…` (or `\\host/…`, which browsers read the same
/// way) is another site in disguise. The URL is read as browsers read it
/// (WHATWG), so tabs, newlines and leading spaces hide nothing.
fn check_click_url(field: &str, url: &str) -> Result<(), NotificationError> {
    let refuse = |found| {
        Err(NotificationError::BadClickUrl {
            field: field.to_owned(),
            found,
        })
    };
    if url.chars().any(char::is_control) {
        return refuse("a URL with control characters");
    }
    match url::Url::parse(url) {
        Ok(absolute) if absolute.scheme() == "https" => Ok(()),
        Ok(absolute) => match absolute.scheme() {
            "http" => refuse("an http: URL"),
            "javascript" => refuse("a javascript: URL"),
            "data" => refuse("a data: URL"),
            _ => refuse("a URL of another scheme"),
        },
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            // Resolved against a stand-in for the app, a relative URL must
            // stay on it.
            let app = url::Url::parse("https://app.invalid/").expect("a valid URL");
            match app.join(url) {
                Ok(resolved) if resolved.host_str() == Some("app.invalid") => Ok(()),
                _ => refuse("a scheme-relative URL (another site)"),
            }
        }
        Err(_) => refuse("a valid URL"),
    }
}

/// RFC 8030 §5.4: at most 32 characters of the URL-safe base64 alphabet.
fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 32
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// serde_json's message without its "at line 1 column 7" tail when the
/// position adds nothing (single-line payloads).
pub fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if e.line() <= 1 {
        if let Some(at) = text.find(" at line ") {
            return text[..at].to_owned();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Notification, NotificationError> {
        Notification::parse(json.as_bytes(), 86_400, || "generated".into())
    }

    #[test]
    fn title_is_the_only_required_field() {
        let n = parse(r#"{"title":"Alert"}"#).unwrap();
        assert_eq!(n.title, "Alert");
        assert_eq!(n.body, "");
        assert_eq!(n.url, "/");
        assert_eq!(n.id, "generated");
        assert_eq!(n.ttl, 86_400);
        assert_eq!(n.urgency, Urgency::Normal);
        assert_eq!(n.dir, Dir::Auto);
        assert_eq!(n.data, serde_json::json!({}));
        assert!(!n.renotify && !n.require_interaction && !n.silent);
        assert!(n.actions.is_empty());
    }

    #[test]
    fn a_missing_title_is_named() {
        let e = parse(r#"{"body":"x"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "payload is not a valid notification: missing field `title`"
        );
        assert_eq!(
            parse(r#"{"title":"  "}"#).unwrap_err(),
            NotificationError::EmptyTitle
        );
    }

    #[test]
    fn every_documented_field_is_read() {
        let n = parse(
            r#"{"id":"c-1","title":"T","body":"B","url":"/x","icon":"/i.png","badge":"/b.png",
                "image":"/im.png","tag":"t","renotify":true,"require_interaction":true,"silent":true,
                "lang":"de","dir":"rtl","actions":[{"action":"ack","title":"OK","url":"/ack"}],
                "data":{"k":1},"ttl":60,"urgency":"very-low","topic":"abc_DEF-1"}"#,
        )
        .unwrap();
        assert_eq!(n.id, "c-1");
        assert_eq!(n.tag.as_deref(), Some("t"));
        assert_eq!(n.dir, Dir::Rtl);
        assert_eq!(n.urgency, Urgency::VeryLow);
        assert_eq!(n.actions[0].url.as_deref(), Some("/ack"));
        assert_eq!(n.ttl, 60);
        assert_eq!(n.topic.as_deref(), Some("abc_DEF-1"));
    }

    #[test]
    fn misspelt_fields_are_refused_not_ignored() {
        let e = parse(r#"{"title":"T","requireInteraction":true}"#).unwrap_err();
        assert!(
            e.to_string().contains("unknown field `requireInteraction`"),
            "{e}"
        );
    }

    #[test]
    fn malformed_json_is_reported() {
        let e = parse(r#"{"title":"#).unwrap_err();
        assert!(matches!(e, NotificationError::Json(_)), "{e}");
        assert!(matches!(
            parse("[]").unwrap_err(),
            NotificationError::Json(_)
        ));
    }

    #[test]
    fn web_push_options_are_checked() {
        assert_eq!(
            parse(r#"{"title":"T","topic":"has space"}"#).unwrap_err(),
            NotificationError::BadTopic
        );
        assert_eq!(
            parse(&format!(r#"{{"title":"T","topic":"{}"}}"#, "a".repeat(33))).unwrap_err(),
            NotificationError::BadTopic
        );
        assert_eq!(
            parse(r#"{"title":"T","ttl":9999999}"#).unwrap_err(),
            NotificationError::TtlTooLong(9_999_999)
        );
        assert_eq!(
            parse(r#"{"title":"T","renotify":true}"#).unwrap_err(),
            NotificationError::RenotifyWithoutTag
        );
        assert_eq!(
            parse(r#"{"title":"T","actions":[{"action":"","title":"x"}]}"#).unwrap_err(),
            NotificationError::BadAction(0)
        );
        assert!(parse(r#"{"title":"T","urgency":"urgent"}"#).is_err());
        assert_eq!(
            parse(r#"{"title":"T","id":""}"#).unwrap_err(),
            NotificationError::BadId
        );
    }

    #[test]
    fn click_urls_must_be_https_or_relative() {
        for url in [
            "/",
            "/inbox?x=1#top",
            "inbox",
            "?tab=2",
            "#top",
            "https://app.example/x",
            "https://other.example/",
        ] {
            let json = serde_json::json!({"title": "T", "url": url,
                "actions": [{"action": "a", "title": "A", "url": url}]});
            assert!(parse(&json.to_string()).is_ok(), "{url}");
        }
        for (url, found) in [
            ("javascript:alert(1)", "a javascript: URL"),
            ("  JavaScript:alert(1)", "a javascript: URL"),
            ("java\tscript:alert(1)", "a URL with control characters"),
            ("data:text/html,<b>x</b>", "a data: URL"),
            ("http://app.example/", "an http: URL"),
            ("blob:https://app.example/1", "a URL of another scheme"),
            ("//evil.example/x", "a scheme-relative URL (another site)"),
            ("\\\\evil.example/x", "a scheme-relative URL (another site)"),
            ("/\\evil.example/x", "a scheme-relative URL (another site)"),
            ("https://", "a valid URL"),
        ] {
            let json = serde_json::json!({"title": "T", "url": url});
            assert_eq!(
                parse(&json.to_string()).unwrap_err(),
                NotificationError::BadClickUrl {
                    field: "url".into(),
                    found
                },
                "{url}"
            );
        }
        let e = parse(
            r#"{"title":"T","actions":[{"action":"a","title":"A"},{"action":"b","title":"B","url":"javascript:x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "actions[1].url must be an https:// URL or one relative to the app's site such as /inbox, not a javascript: URL"
        );
    }
}

//! The nouns every layer shares, validated once when they are built.
//!
//! A value of these types is known to be well formed: a [`User`] is a legal
//! topic level that fits the Axion table, a [`SubscriptionKeys`] holds a point
//! on P-256 and a 16-byte secret. Later layers never re-check them.

use std::fmt;

use aws_lc_rs::agreement::{ECDH_P256, ParsedPublicKey, ParsedPublicKeyFormat, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use url::Url;

/// The Axion table stores names in `char(255)` columns.
pub const MAX_NAME_LEN: usize = 255;
/// DESIGN §3 and the `Endpoint varchar(2048)` column.
pub const MAX_ENDPOINT_LEN: usize = 2048;
/// The user name whose event topic would be the package's retained VAPID
/// topic (`axion/{package}/push/vapid`); it cannot be addressed.
pub const RESERVED_USER: &str = "vapid";

/// Why a name, endpoint or key was refused. The text is what a service
/// author reads in a result report, so it names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{kind} is empty")]
    EmptyName { kind: &'static str },
    #[error("{kind} '{name}' contains '{ch}', which is not allowed in an MQTT topic level")]
    BadNameChar {
        kind: &'static str,
        name: String,
        ch: char,
    },
    /// The name is not repeated: it would carry the control character
    /// into the result and the log.
    #[error("{kind} contains a control character (U+{code:04X}), which names may not contain")]
    ControlChar { kind: &'static str, code: u32 },
    #[error("{kind} is {len} characters long; at most {MAX_NAME_LEN} are allowed")]
    NameTooLong { kind: &'static str, len: usize },
    #[error(
        "the user name '{RESERVED_USER}' is reserved: axion/{{package}}/push/{RESERVED_USER} carries the package's VAPID key"
    )]
    ReservedUser,
    #[error("group name is missing after '@'")]
    EmptyGroup,
    #[error("endpoint is {len} characters long; at most {MAX_ENDPOINT_LEN} are allowed")]
    EndpointTooLong { len: usize },
    #[error("endpoint is not a valid absolute URL: {0}")]
    EndpointNotUrl(String),
    #[error("keys.{field} is not valid base64url")]
    KeyNotBase64 { field: &'static str },
    #[error("keys.p256dh must be a 65-byte uncompressed P-256 point, got {len} bytes")]
    P256dhLength { len: usize },
    #[error("keys.p256dh is not a point on the P-256 curve")]
    P256dhNotOnCurve,
    #[error("keys.auth must be 16 bytes, got {len}")]
    AuthLength { len: usize },
}

fn check_level(kind: &'static str, name: &str) -> Result<(), ModelError> {
    if name.is_empty() {
        return Err(ModelError::EmptyName { kind });
    }
    // Control characters would forge log lines and make one name look
    // like another (a newline was a field separator in v1 tokens).
    if let Some(ch) = name.chars().find(|c| c.is_control()) {
        return Err(ModelError::ControlChar {
            kind,
            code: u32::from(ch),
        });
    }
    if let Some(ch) = name.chars().find(|c| matches!(c, '+' | '#' | '/')) {
        return Err(ModelError::BadNameChar {
            kind,
            name: name.to_owned(),
            ch,
        });
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(ModelError::NameTooLong { kind, len });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// An Axion package (`crm`, `base`, …): the second topic level.
    Package
);
name_type!(
    /// An Axion user name.
    User
);
name_type!(
    /// A group of users, addressed as `@{group}` in topics.
    Group
);

impl Package {
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        check_level("package", name)?;
        Ok(Self(name.to_owned()))
    }
}

impl User {
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        check_level("user", name)?;
        if name == RESERVED_USER {
            return Err(ModelError::ReservedUser);
        }
        if name.starts_with('@') {
            // A user name starting with '@' could never be addressed: the
            // topic grammar reads it as a group.
            return Err(ModelError::BadNameChar {
                kind: "user",
                name: name.to_owned(),
                ch: '@',
            });
        }
        Ok(Self(name.to_owned()))
    }
}

impl Group {
    /// `name` is the group without its leading `@`.
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        if name.is_empty() {
            return Err(ModelError::EmptyGroup);
        }
        check_level("group", name)?;
        Ok(Self(name.to_owned()))
    }
}

/// Who a command addresses: one user or every member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    User(User),
    Group(Group),
}

impl Target {
    /// Reads a topic level: `@name` is a group, anything else a user.
    pub fn parse(level: &str) -> Result<Self, ModelError> {
        match level.strip_prefix('@') {
            Some(group) => Group::parse(group).map(Target::Group),
            None => User::parse(level).map(Target::User),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::User(user) => write!(f, "{user}"),
            Target::Group(group) => write!(f, "@{group}"),
        }
    }
}

/// A push service URL that received a subscription. It is a capability: whoever
/// knows it can push to the browser, so it is never logged whole (see
/// [`Endpoint::origin`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint(Url);

impl Endpoint {
    pub fn parse(raw: &str) -> Result<Self, ModelError> {
        let len = raw.chars().count();
        if len > MAX_ENDPOINT_LEN {
            return Err(ModelError::EndpointTooLong { len });
        }
        let url = Url::parse(raw).map_err(|e| ModelError::EndpointNotUrl(e.to_string()))?;
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(ModelError::EndpointNotUrl("it has no host".into()));
        }
        Ok(Self(url))
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// `scheme://host[:port]`: the push service, the VAPID audience, and what
    /// logs may show.
    pub fn origin(&self) -> String {
        self.0.origin().ascii_serialization()
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({}/…)", self.origin())
    }
}

/// The browser's half of RFC 8291: its ECDH public key and auth secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SubscriptionKeys {
    p256dh: [u8; 65],
    auth: [u8; 16],
}

impl SubscriptionKeys {
    /// Browsers send base64url without padding; standard base64 and padding
    /// are accepted too, since some client libraries re-encode the keys.
    pub fn parse(p256dh: &str, auth: &str) -> Result<Self, ModelError> {
        let p256dh_bytes =
            decode_base64(p256dh).ok_or(ModelError::KeyNotBase64 { field: "p256dh" })?;
        let auth_bytes = decode_base64(auth).ok_or(ModelError::KeyNotBase64 { field: "auth" })?;
        let p256dh: [u8; 65] =
            p256dh_bytes
                .as_slice()
                .try_into()
                .map_err(|_| ModelError::P256dhLength {
                    len: p256dh_bytes.len(),
                })?;
        let parsed = ParsedPublicKey::try_from(UnparsedPublicKey::new(&ECDH_P256, &p256dh))
            .map_err(|_| ModelError::P256dhNotOnCurve)?;
        if parsed.format() != ParsedPublicKeyFormat::Uncompressed {
            return Err(ModelError::P256dhNotOnCurve);
        }
        let auth: [u8; 16] =
            auth_bytes
                .as_slice()
                .try_into()
                .map_err(|_| ModelError::AuthLength {
                    len: auth_bytes.len(),
                })?;
        Ok(Self { p256dh, auth })
    }

    pub fn p256dh(&self) -> &[u8; 65] {
        &self.p256dh
    }

    pub fn auth(&self) -> &[u8; 16] {
        &self.auth
    }

    /// The canonical text form stored in the table (base64url, no padding).
    pub fn p256dh_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.p256dh)
    }

    pub fn auth_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.auth)
    }
}

impl fmt::Debug for SubscriptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscriptionKeys(…)")
    }
}

/// Decodes base64url or standard base64, with or without padding.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let normalized: String = text
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(normalized).ok()
}

/// The longest TTL the daemon asks of a push service: four weeks, FCM's
/// maximum (others cap lower and clamp silently).
pub const MAX_TTL: u32 = 2_419_200;

/// An entry of `axion_push.endpoints.allow_hosts`: an exact host, or
/// `*.domain` for any subdomain of `domain` (not `domain` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    Subdomains(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, host) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, text.clone()),
        };
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']'));
        if !valid {
            return Err(format!("'{text}' is not a host name or *.domain pattern"));
        }
        Ok(if wildcard {
            HostPattern::Subdomains(host)
        } else {
            HostPattern::Exact(host)
        })
    }

    /// `host` as the URL parser gives it (lower case, IPv6 in brackets).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        match self {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Subdomains(domain) => {
                host.len().checked_sub(domain.len() + 1).is_some_and(|cut| {
                    host.as_bytes()[cut] == b'.'
                        && host.as_bytes()[cut + 1..].eq_ignore_ascii_case(domain.as_bytes())
                })
            }
        }
    }
}

/// A browser's push subscription as the daemon stores it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub endpoint: Endpoint,
    pub keys: SubscriptionKeys,
    pub user_agent: Option<String>,
    pub module: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    // The RFC 8291 Appendix A user agent key.
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    #[test]
    fn names_refuse_wildcards_and_slashes() {
        for bad in ["a+b", "a#", "a/b", ""] {
            assert!(User::parse(bad).is_err(), "{bad:?} accepted");
            assert!(Package::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(User::parse("alice").unwrap().as_str(), "alice");
    }

    #[test]
    fn names_refuse_control_characters_without_repeating_them() {
        for name in [
            "a\nb",
            "a\rb",
            "tab\t",
            "nul\0",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            let e = User::parse(name).unwrap_err();
            assert!(matches!(e, ModelError::ControlChar { .. }), "{name:?}: {e}");
            assert!(!e.to_string().contains(name), "{e}");
            assert!(Package::parse(name).is_err(), "{name:?}");
            assert!(Group::parse(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn names_longer_than_the_table_column_are_refused() {
        let long = "x".repeat(256);
        assert_eq!(
            User::parse(&long),
            Err(ModelError::NameTooLong {
                kind: "user",
                len: 256
            })
        );
        assert!(User::parse(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn the_vapid_user_name_is_reserved() {
        assert_eq!(User::parse("vapid"), Err(ModelError::ReservedUser));
    }

    #[test]
    fn a_level_starting_with_at_is_a_group() {
        assert_eq!(
            Target::parse("@ops").unwrap(),
            Target::Group(Group::parse("ops").unwrap())
        );
        assert_eq!(Target::parse("@"), Err(ModelError::EmptyGroup));
        assert!(matches!(Target::parse("bob"), Ok(Target::User(_))));
    }

    #[test]
    fn keys_accept_base64url_and_standard_base64() {
        let keys = SubscriptionKeys::parse(UA_PUBLIC, AUTH).unwrap();
        let standard = UA_PUBLIC.replace('-', "+").replace('_', "/") + "=";
        let again = SubscriptionKeys::parse(&standard, "BTBZMqHH6r4Tts7J/aSIgg==").unwrap();
        assert!(keys == again);
        assert_eq!(keys.p256dh_text(), UA_PUBLIC);
    }

    #[test]
    fn keys_off_the_curve_are_refused() {
        let mut bytes = decode_base64(UA_PUBLIC).unwrap();
        bytes[64] ^= 1;
        let off_curve = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            SubscriptionKeys::parse(&off_curve, AUTH),
            Err(ModelError::P256dhNotOnCurve)
        );
    }

    #[test]
    fn compressed_points_and_short_secrets_are_refused() {
        let bytes = decode_base64(UA_PUBLIC).unwrap();
        let mut compressed = vec![2 + (bytes[64] & 1)];
        compressed.extend_from_slice(&bytes[1..33]);
        assert_eq!(
            SubscriptionKeys::parse(&URL_SAFE_NO_PAD.encode(&compressed), AUTH),
            Err(ModelError::P256dhLength { len: 33 })
        );
        assert_eq!(
            SubscriptionKeys::parse(UA_PUBLIC, "AAAA"),
            Err(ModelError::AuthLength { len: 3 })
        );
        assert_eq!(
            SubscriptionKeys::parse("not base64!", AUTH),
            Err(ModelError::KeyNotBase64 { field: "p256dh" })
        );
    }

    #[test]
    fn endpoints_are_bounded_and_absolute() {
        assert!(Endpoint::parse("https://fcm.googleapis.com/fcm/send/abc").is_ok());
        assert!(matches!(
            Endpoint::parse("/relative"),
            Err(ModelError::EndpointNotUrl(_))
        ));
        let long = format!("https://fcm.googleapis.com/{}", "a".repeat(2048));
        assert!(matches!(
            Endpoint::parse(&long),
            Err(ModelError::EndpointTooLong { .. })
        ));
    }

    #[test]
    fn host_patterns_match_exactly_or_strict_subdomains() {
        let exact = HostPattern::parse("fcm.googleapis.com").unwrap();
        assert!(exact.matches("fcm.googleapis.com"));
        assert!(!exact.matches("evil-fcm.googleapis.com"));
        let sub = HostPattern::parse("*.push.apple.com").unwrap();
        assert!(sub.matches("web.push.apple.com"));
        assert!(!sub.matches("push.apple.com"));
        assert!(!sub.matches("webpush.apple.com"));
        assert!(!sub.matches("web.push.apple.com.evil.net"));
        assert!(HostPattern::parse("bad host!").is_err());
    }

    #[test]
    fn endpoint_debug_shows_only_the_origin() {
        let e = Endpoint::parse("https://fcm.googleapis.com/fcm/send/secret-token").unwrap();
        let shown = format!("{e:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert_eq!(e.origin(), "https://fcm.googleapis.com");
    }
}

//! Receipts: what a browser did with a push — shown, failed, clicked,
//! closed — reported back by the shipped service worker.
//!
//! A 201 from a push service only says the push service took the message.
//! So every push carries, inside its encrypted payload, a receipt token that
//! names the send and the subscription it went to, signed by this daemon;
//! the service worker sends it back with what happened, on
//! `axion/{package}/push/{user}/receipt`. The token is the authorisation: no
//! subscribe token is needed, so a worker that was offline for days can
//! still report, and nobody can make one for a push they did not receive.
//!
//! Token format (v1), base64url without padding of:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, 1 |
//! | 4 | when the send was accepted, seconds since the epoch, big-endian |
//! | 16 | the subscription's stable id (see [`subscription_id`]) |
//! | 1 + n | the send's id: `1` and its 16 bytes when it is a UUID in the form the daemon generates (the short form), else `0` and its UTF-8 bytes |
//! | 16 | HMAC-SHA256 over the domain, the package and user (each length-prefixed), and the bytes above, truncated to 128 bits |
//!
//! A send with a generated id costs 54 bytes, 72 characters in the payload.
//! The key is derived (HKDF-SHA256) from the VAPID private key of
//! `base.push`: every daemon of an installation already shares it, it
//! survives restarts, and an operator has nothing more to configure or
//! keep secret. Replacing the VAPID key invalidates the receipts of pushes
//! sent before, as it invalidates the subscriptions made with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use aws_lc_rs::{digest, hkdf, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::model::{Package, User};

/// The longest a token is accepted after its send: a browser that was off
/// for a month still reports, and the record of receipts already taken (to
/// refuse replays) needs keeping no longer than this.
pub const MAX_AGE_SECS: u64 = 30 * 24 * 3600;
/// [`MAX_AGE_SECS`] for humans.
pub const MAX_AGE: &str = "30 days";

const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"axion-push receipt v1";
const HKDF_INFO: &[u8] = b"axion-push receipt key v1";
const TAG_LEN: usize = 16;
const SUBSCRIPTION_LEN: usize = 16;
/// Version, time and subscription: what precedes the send's id.
const HEAD_LEN: usize = 1 + 4 + SUBSCRIPTION_LEN;

/// A subscription's stable id: the first 128 bits of
/// SHA-256(`axion-push subscription`, 0, package, 0, endpoint). Derived
/// rather than stored, so the Axion table needs no column of ours; it names
/// the subscription without handing out its endpoint (`list` shows it, a
/// receipt carries it).
pub fn subscription_id(package: &str, endpoint: &str) -> [u8; SUBSCRIPTION_LEN] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"axion-push subscription\0");
    context.update(package.as_bytes());
    context.update(b"\0");
    context.update(endpoint.as_bytes());
    let mut id = [0; SUBSCRIPTION_LEN];
    id.copy_from_slice(&context.finish().as_ref()[..SUBSCRIPTION_LEN]);
    id
}

/// [`subscription_id`] as it is shown: base64url.
pub fn subscription_text(id: &[u8; SUBSCRIPTION_LEN]) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// What a browser did with a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `showNotification` resolved.
    Shown,
    /// The browser refused to show it; the receipt carries its reason.
    Failed,
    /// The person clicked it (or one of its actions).
    Clicked,
    /// The person dismissed it.
    Closed,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Shown, Kind::Failed, Kind::Clicked, Kind::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Shown => "shown",
            Kind::Failed => "failed",
            Kind::Clicked => "clicked",
            Kind::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Clicks and dismissals say what a person did, not what the browser
    /// did: they are reported only where the operator turned them on.
    pub fn is_interaction(self) -> bool {
        matches!(self, Kind::Clicked | Kind::Closed)
    }
}

/// Why a receipt token was refused. The text goes into the result; it
/// never repeats the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptTokenError {
    #[error("token is missing: a receipt carries the token its push came with")]
    Missing,
    #[error("token is not a receipt token of this daemon's format")]
    Malformed,
    #[error("token is not valid for this user and package")]
    Invalid,
    #[error("token is older than {MAX_AGE}: receipts of pushes that old are not taken")]
    Expired,
}

/// A token that checked out: what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub send_id: String,
    pub subscription: [u8; SUBSCRIPTION_LEN],
    /// When the send was accepted, seconds since the epoch.
    pub sent_secs: u64,
    /// The token's MAC, base64url: unique per push, the key under which
    /// the receipts already taken are remembered.
    pub tag: String,
}

/// The key receipt tokens are signed with.
pub struct ReceiptKey(hmac::Key);

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptKey(***)")
    }
}

impl ReceiptKey {
    /// The key derived from a VAPID private key (its 32-byte scalar).
    pub fn derive(vapid_private_scalar: &[u8]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, DOMAIN).extract(vapid_private_scalar);
        let okm = prk
            .expand(&[HKDF_INFO], hmac::HMAC_SHA256)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self(hmac::Key::from(okm))
    }

    /// The token for one push of send `send_id`, accepted at `sent_secs`,
    /// to `subscription` of `user` in `package`.
    pub fn issue(
        &self,
        package: &str,
        user: &str,
        send_id: &str,
        subscription: &[u8; SUBSCRIPTION_LEN],
        sent_secs: u64,
    ) -> String {
        let mut body = Vec::with_capacity(HEAD_LEN + 1 + 16 + TAG_LEN);
        body.push(VERSION);
        body.extend_from_slice(&u32::try_from(sent_secs).unwrap_or(u32::MAX).to_be_bytes());
        body.extend_from_slice(subscription);
        match short_uuid(send_id) {
            Some(bytes) => {
                body.push(1);
                body.extend_from_slice(&bytes);
            }
            None => {
                body.push(0);
                body.extend_from_slice(send_id.as_bytes());
            }
        }
        let tag = self.tag(package, user, &body);
        body.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// Checks `token` for `user` in `package` at `now_secs`.
    pub fn verify(
        &self,
        token: Option<&str>,
        package: &Package,
        user: &User,
        now_secs: u64,
    ) -> Result<Verified, ReceiptTokenError> {
        let token = token.ok_or(ReceiptTokenError::Missing)?;
        // The longest a valid token can be: a 128-character id of 4-byte
        // characters. Anything longer is not decoded at all.
        if token.len() > (HEAD_LEN + 1 + 4 * crate::notification::MAX_ID_LEN + TAG_LEN) * 4 / 3 + 4
        {
            return Err(ReceiptTokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| ReceiptTokenError::Malformed)?;
        if bytes.len() < HEAD_LEN + 2 + TAG_LEN || bytes[0] != VERSION {
            return Err(ReceiptTokenError::Malformed);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let expected = self.tag(package.as_str(), user.as_str(), body);
        // Constant time, as `hmac::verify` would be over the whole tag.
        if !constant_time_eq(&expected.as_ref()[..TAG_LEN], tag) {
            return Err(ReceiptTokenError::Invalid);
        }
        let sent_secs = u64::from(u32::from_be_bytes(
            body[1..5].try_into().expect("four bytes"),
        ));
        if now_secs.saturating_sub(sent_secs) > MAX_AGE_SECS {
            return Err(ReceiptTokenError::Expired);
        }
        let mut subscription = [0; SUBSCRIPTION_LEN];
        subscription.copy_from_slice(&body[5..HEAD_LEN]);
        let id = &body[HEAD_LEN + 1..];
        let send_id = match body[HEAD_LEN] {
            1 => uuid::Uuid::from_slice(id)
                .map_err(|_| ReceiptTokenError::Malformed)?
                .to_string(),
            0 => String::from_utf8(id.to_vec()).map_err(|_| ReceiptTokenError::Malformed)?,
            _ => return Err(ReceiptTokenError::Malformed),
        };
        Ok(Verified {
            send_id,
            subscription,
            sent_secs,
            tag: URL_SAFE_NO_PAD.encode(tag),
        })
    }

    fn tag(&self, package: &str, user: &str, body: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(DOMAIN);
        for field in [package, user] {
            let len = u32::try_from(field.len()).expect("names are at most 255 characters");
            context.update(&len.to_be_bytes());
            context.update(field.as_bytes());
        }
        context.update(body);
        context.sign()
    }
}

/// The length in characters of a token for a send with this id, whatever
/// the package, user and subscription: the payload budget counts it.
pub fn token_len(send_id: &str) -> usize {
    let id = short_uuid(send_id).map_or(send_id.len(), |b| b.len());
    // base64 without padding: four characters per three bytes, rounded up.
    ((HEAD_LEN + 1 + id + TAG_LEN) * 4).div_ceil(3)
}

/// The 16 bytes of an id the daemon generated (a hyphenated lower-case
/// UUID), so that it round-trips exactly; `None` for any other id.
fn short_uuid(id: &str) -> Option<[u8; 16]> {
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    (uuid.to_string() == id).then(|| *uuid.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Receipts one user may send in a burst: a worker that kept its receipts
/// while offline sends them all at once (it keeps at most 100).
pub const BURST: u32 = 200;
/// Receipts per second a user may send after a burst.
pub const PER_SECOND: u32 = 5;
/// Users whose allowance is tracked before those with a full one are
/// forgotten (they lose nothing: a new bucket starts full).
const TRACKED: usize = 10_000;

/// Receipts as this daemon takes them: the key, what may be reported, and
/// each user's allowance, so a flood from one browser costs a check each
/// and nothing more.
#[derive(Debug)]
pub struct Receipts {
    pub key: ReceiptKey,
    /// Clicks and dismissals are taken too (`receipts.clicks`).
    pub interactions: bool,
    allowance: Mutex<HashMap<(String, String), Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * f64::from(PER_SECOND)).min(f64::from(BURST))
    }
}

impl Receipts {
    pub fn new(key: ReceiptKey, interactions: bool) -> Self {
        Self {
            key,
            interactions,
            allowance: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one receipt from `user`'s allowance in `package`; false when
    /// it is spent ([`BURST`] at once, then [`PER_SECOND`]).
    pub fn allow(&self, package: &str, user: &str, now: Instant) -> bool {
        let mut buckets = self.allowance.lock().expect("receipt allowance lock");
        if buckets.len() >= TRACKED {
            buckets.retain(|_, b| b.refilled(now) < f64::from(BURST));
            // Still full: a flood in many users' names (only a service can
            // publish for any user). Starting afresh bounds the memory; each
            // of them gets one more burst.
            if buckets.len() >= TRACKED {
                buckets.clear();
            }
        }
        let bucket = buckets
            .entry((package.to_owned(), user.to_owned()))
            .or_insert(Bucket {
                tokens: f64::from(BURST),
                at: now,
            });
        let tokens = bucket.refilled(now);
        *bucket = Bucket {
            tokens: (tokens - 1.0).max(0.0),
            at: now,
        };
        tokens >= 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ReceiptKey {
        ReceiptKey::derive(&[7; 32])
    }

    fn crm() -> Package {
        Package::parse("crm").unwrap()
    }

    fn alice() -> User {
        User::parse("alice").unwrap()
    }

    const NOW: u64 = 1_790_000_000;

    #[test]
    fn a_token_names_its_send_and_subscription() {
        let sub = subscription_id("crm", "https://push.example/a");
        let id = "0b6b5b46-4cf4-4c8e-9d54-6f2c1a1f7e10";
        let token = key().issue("crm", "alice", id, &sub, NOW - 60);
        let verified = key().verify(Some(&token), &crm(), &alice(), NOW).unwrap();
        assert_eq!(verified.send_id, id);
        assert_eq!(verified.subscription, sub);
        assert_eq!(verified.sent_secs, NOW - 60);
        assert_eq!(token.len(), token_len(id));
        assert_eq!(token.len(), 72);
    }

    #[test]
    fn any_id_round_trips_and_its_length_is_known_in_advance() {
        let sub = subscription_id("crm", "https://push.example/a");
        for id in [
            "order-17",
            "0B6B5B46-4CF4-4C8E-9D54-6F2C1A1F7E10",
            "0b6b5b464cf44c8e9d546f2c1a1f7e10",
            "ünïcödé 🙂",
            &"x".repeat(128),
        ] {
            let token = key().issue("crm", "alice", id, &sub, NOW);
            assert_eq!(token.len(), token_len(id), "{id}");
            let verified = key().verify(Some(&token), &crm(), &alice(), NOW).unwrap();
            assert_eq!(verified.send_id, id);
        }
    }

    #[test]
    fn a_token_of_another_user_package_or_key_is_invalid() {
        let sub = subscription_id("crm", "https://push.example/a");
        let token = key().issue("crm", "alice", "s1", &sub, NOW);
        let bob = User::parse("bob").unwrap();
        let hr = Package::parse("hr").unwrap();
        assert_eq!(
            key().verify(Some(&token), &crm(), &bob, NOW),
            Err(ReceiptTokenError::Invalid)
        );
        assert_eq!(
            key().verify(Some(&token), &hr, &alice(), NOW),
            Err(ReceiptTokenError::Invalid)
        );
        assert_eq!(
            ReceiptKey::derive(&[8; 32]).verify(Some(&token), &crm(), &alice(), NOW),
            Err(ReceiptTokenError::Invalid)
        );
    }

    #[test]
    fn a_changed_byte_anywhere_makes_a_token_invalid_or_malformed() {
        let sub = subscription_id("crm", "https://push.example/a");
        let token = key().issue("crm", "alice", "s1", &sub, NOW);
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            let mut forged = bytes.clone();
            forged[i] ^= 1;
            let forged = URL_SAFE_NO_PAD.encode(forged);
            assert!(
                key().verify(Some(&forged), &crm(), &alice(), NOW).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn a_token_older_than_the_maximum_age_is_expired() {
        let sub = subscription_id("crm", "https://push.example/a");
        let token = key().issue("crm", "alice", "s1", &sub, NOW - MAX_AGE_SECS - 1);
        assert_eq!(
            key().verify(Some(&token), &crm(), &alice(), NOW),
            Err(ReceiptTokenError::Expired)
        );
    }

    #[test]
    fn a_user_may_send_a_burst_then_a_few_per_second() {
        let receipts = Receipts::new(key(), false);
        let start = Instant::now();
        for _ in 0..BURST {
            assert!(receipts.allow("crm", "alice", start));
        }
        assert!(!receipts.allow("crm", "alice", start), "the burst is spent");
        assert!(
            receipts.allow("crm", "bob", start),
            "each user has their own"
        );
        let later = start + std::time::Duration::from_secs(1);
        for _ in 0..PER_SECOND {
            assert!(receipts.allow("crm", "alice", later));
        }
        assert!(!receipts.allow("crm", "alice", later));
    }

    #[test]
    fn garbage_is_malformed_and_nothing_is_missing() {
        for garbage in ["", "!!", "AAAA", &"A".repeat(5000)] {
            assert_eq!(
                key().verify(Some(garbage), &crm(), &alice(), NOW),
                Err(ReceiptTokenError::Malformed),
                "{garbage}"
            );
        }
        assert_eq!(
            key().verify(None, &crm(), &alice(), NOW),
            Err(ReceiptTokenError::Missing)
        );
    }
}

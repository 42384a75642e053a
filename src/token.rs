//! Subscribe tokens: proof, issued by the host application, that a browser
//! acts for a given user of a given package until a given time.
//!
//! With `axion_push.subscribe_token_secret` set, a browser logs in to the
//! embedded broker's WebSocket listener with its token as the password, and
//! `subscribe`, `unsubscribe` and `list` must carry it as `token`: the host
//! app makes it for the signed-in user with the same secret. Format (v2):
//!
//! `v2.{expires}.{base64url(HMAC-SHA256(secret, message))}`, `expires` in
//! seconds since the epoch, where `message` is the bytes
//! `axion-push token v2` followed, for each of package, user and the
//! decimal `expires`, by its UTF-8 length as a 4-byte big-endian number and
//! its UTF-8 bytes. Length prefixes make the fields unambiguous whatever
//! they contain (v1 joined them with newlines, so (`crm`, `a\nb`) and
//! (`crm\na`, `b`) signed the same text). A token may be valid for at most
//! [`MAX_LIFETIME`] from the moment it is checked. HMAC from aws-lc-rs,
//! compared in constant time.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::model::{Package, User};

/// The longest a token may still be valid when it is checked: a token that
/// leaks stops working within this time whatever its issuer wrote.
pub const MAX_LIFETIME_SECS: u64 = 7 * 24 * 3600;
/// [`MAX_LIFETIME_SECS`] for humans.
pub const MAX_LIFETIME: &str = "7 days";

/// What a token starts with: its format version.
const VERSION: &str = "v2";
/// The start of the signed bytes: what they are, and their version.
const DOMAIN: &[u8] = b"axion-push token v2";

/// Why a token was refused. The text goes into the command's result; it
/// never repeats the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "token is missing: this daemon requires a subscribe token issued by the application for this user"
    )]
    Missing,
    #[error("token is not of the form v2.EXPIRES.SIGNATURE")]
    Malformed,
    #[error(
        "token is of the older v1 format (EXPIRES.SIGNATURE): the application must issue v2 tokens (see the README's Security section)"
    )]
    Outdated,
    #[error("token has expired: ask the application for a new one")]
    Expired,
    #[error(
        "token is valid for longer than {MAX_LIFETIME}: the application must issue tokens valid for at most {MAX_LIFETIME}"
    )]
    TooLong,
    #[error("token is not valid for this user and package")]
    Invalid,
}

pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

/// The signed bytes: the domain, then each field length-prefixed.
fn message(package: &Package, user: &User, expires: u64) -> Vec<u8> {
    let expires = expires.to_string();
    let mut out = DOMAIN.to_vec();
    for field in [package.as_str(), user.as_str(), expires.as_str()] {
        let len = u32::try_from(field.len()).expect("names are at most 255 characters");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

impl TokenKey {
    pub fn new(secret: &str) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
    }

    /// A token for `user` in `package`, valid until `expires` (seconds
    /// since the epoch).
    pub fn issue(&self, package: &Package, user: &User, expires: u64) -> String {
        let tag = hmac::sign(&self.0, &message(package, user, expires));
        format!(
            "{VERSION}.{expires}.{}",
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// Checks `token` for `user` in `package` at `now` (seconds since the
    /// epoch); returns when it expires.
    pub fn verify(
        &self,
        token: Option<&str>,
        package: &Package,
        user: &User,
        now: u64,
    ) -> Result<u64, TokenError> {
        let token = token.ok_or(TokenError::Missing)?;
        let mut parts = token.split('.');
        let (Some(version), Some(expires), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            let is_v1 = token
                .split_once('.')
                .is_some_and(|(e, t)| e.parse::<u64>().is_ok() && !t.contains('.'));
            return Err(if is_v1 {
                TokenError::Outdated
            } else {
                TokenError::Malformed
            });
        };
        if version != VERSION {
            return Err(TokenError::Malformed);
        }
        let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.0, &message(package, user, expires), &tag)
            .map_err(|_| TokenError::Invalid)?;
        if now >= expires {
            return Err(TokenError::Expired);
        }
        if expires - now > MAX_LIFETIME_SECS {
            return Err(TokenError::TooLong);
        }
        Ok(expires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(package: &str, user: &str) -> (Package, User) {
        (Package::parse(package).unwrap(), User::parse(user).unwrap())
    }

    #[test]
    fn a_token_is_valid_for_its_user_and_package_until_it_expires() {
        let key = TokenKey::new("a secret of the host application");
        let (crm, alice) = names("crm", "alice");
        let token = key.issue(&crm, &alice, 1_000);
        assert!(token.starts_with("v2.1000."), "{token}");
        assert_eq!(key.verify(Some(&token), &crm, &alice, 999), Ok(1_000));
        assert_eq!(
            key.verify(Some(&token), &crm, &alice, 1_000),
            Err(TokenError::Expired)
        );
        let (_, bob) = names("crm", "bob");
        assert_eq!(
            key.verify(Some(&token), &crm, &bob, 999),
            Err(TokenError::Invalid)
        );
        let (hr, _) = names("hr", "alice");
        assert_eq!(
            key.verify(Some(&token), &hr, &alice, 999),
            Err(TokenError::Invalid)
        );
    }

    /// The signed bytes of v2, spelled out: a change here breaks every
    /// host application's tokens (and the Python client's mirror,
    /// `clients/python/src/axion_push_client/token.py`, tested against
    /// the same value).
    #[test]
    fn the_signed_bytes_are_length_prefixed_fields() {
        let (crm, alice) = names("crm", "alice");
        let mut expected = b"axion-push token v2".to_vec();
        expected.extend_from_slice(b"\0\0\0\x03crm\0\0\0\x05alice\0\0\0\x041000");
        assert_eq!(message(&crm, &alice, 1000), expected);
        assert_eq!(
            TokenKey::new("a-shared-secret-of-at-least-32-characters").issue(&crm, &alice, 1000),
            "v2.1000.a7w_Vk9K72lPm07Dcm1H5wJ-htvPDQlEs_r_rngYWrQ"
        );
    }

    #[test]
    fn fields_cannot_be_shifted_between_package_and_user() {
        let key = TokenKey::new("s");
        // Names with the separator v1 used are refused by the model now,
        // but the encoding must not depend on that.
        let (a, bc) = names("a", "bc");
        let (ab, c) = names("ab", "c");
        assert_ne!(message(&a, &bc, 1), message(&ab, &c, 1));
        let token = key.issue(&a, &bc, 100);
        assert_eq!(
            key.verify(Some(&token), &ab, &c, 0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_token_valid_for_longer_than_the_cap_is_refused() {
        let key = TokenKey::new("s");
        let (crm, alice) = names("crm", "alice");
        let now = 1_000_000;
        let within = key.issue(&crm, &alice, now + MAX_LIFETIME_SECS);
        assert!(key.verify(Some(&within), &crm, &alice, now).is_ok());
        let beyond = key.issue(&crm, &alice, now + MAX_LIFETIME_SECS + 1);
        assert_eq!(
            key.verify(Some(&beyond), &crm, &alice, now),
            Err(TokenError::TooLong)
        );
        let year_2343 = key.issue(&crm, &alice, 11_661_000_000);
        assert_eq!(
            key.verify(Some(&year_2343), &crm, &alice, now),
            Err(TokenError::TooLong)
        );
    }

    #[test]
    fn another_secret_or_a_changed_expiry_does_not_verify() {
        let (crm, alice) = names("crm", "alice");
        let token = TokenKey::new("one").issue(&crm, &alice, 1_000);
        assert_eq!(
            TokenKey::new("two").verify(Some(&token), &crm, &alice, 0),
            Err(TokenError::Invalid)
        );
        let stretched = token.replacen(".1000.", ".9999.", 1);
        assert_eq!(
            TokenKey::new("one").verify(Some(&stretched), &crm, &alice, 0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn missing_malformed_and_outdated_tokens_are_named() {
        let key = TokenKey::new("s");
        let (crm, alice) = names("crm", "alice");
        assert_eq!(key.verify(None, &crm, &alice, 0), Err(TokenError::Missing));
        for bad in [
            "",
            "abc",
            "x.y",
            "v2.10.!!!",
            "v3.10.abc",
            "v2.x.abc",
            "v2.1.2.3",
        ] {
            assert_eq!(
                key.verify(Some(bad), &crm, &alice, 0),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            key.verify(Some("1000.c2lnbmF0dXJl"), &crm, &alice, 0),
            Err(TokenError::Outdated)
        );
    }
}

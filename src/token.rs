//! Subscribe tokens: proof, issued by the host application, that a browser
//! acts for a given user of a given package.
//!
//! A browser talking MQTT directly (the embedded broker's WebSocket
//! listener) could otherwise subscribe its endpoint as anyone and receive
//! their notifications. With `axion_push.subscribe_token_secret` set,
//! `subscribe` and `unsubscribe` must carry a `token` the host app made for
//! the logged-in user with the same secret:
//! `{expires}.{base64url(HMAC-SHA256(secret, "axion-push subscribe v1\n{package}\n{user}\n{expires}"))}`,
//! `expires` in seconds since the epoch. HMAC from aws-lc-rs, compared in
//! constant time.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::model::{Package, User};

/// Why a token was refused. The text goes into the command's result; it
/// never repeats the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "token is missing: this daemon requires a subscribe token issued by the application for this user"
    )]
    Missing,
    #[error("token is not of the form EXPIRES.SIGNATURE")]
    Malformed,
    #[error("token has expired: ask the application for a new one")]
    Expired,
    #[error("token is not valid for this user and package")]
    Invalid,
}

pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

fn message(package: &Package, user: &User, expires: u64) -> String {
    format!("axion-push subscribe v1\n{package}\n{user}\n{expires}")
}

impl TokenKey {
    pub fn new(secret: &str) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
    }

    /// A token for `user` in `package`, valid until `expires` (seconds
    /// since the epoch).
    pub fn issue(&self, package: &Package, user: &User, expires: u64) -> String {
        let tag = hmac::sign(&self.0, message(package, user, expires).as_bytes());
        format!("{expires}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    pub fn verify(
        &self,
        token: Option<&str>,
        package: &Package,
        user: &User,
        now: u64,
    ) -> Result<(), TokenError> {
        let token = token.ok_or(TokenError::Missing)?;
        let (expires, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.0, message(package, user, expires).as_bytes(), &tag)
            .map_err(|_| TokenError::Invalid)?;
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(())
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
        assert_eq!(key.verify(Some(&token), &crm, &alice, 999), Ok(()));
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

    #[test]
    fn another_secret_or_a_changed_expiry_does_not_verify() {
        let (crm, alice) = names("crm", "alice");
        let token = TokenKey::new("one").issue(&crm, &alice, 1_000);
        assert_eq!(
            TokenKey::new("two").verify(Some(&token), &crm, &alice, 0),
            Err(TokenError::Invalid)
        );
        let stretched = token.replacen("1000.", "9999.", 1);
        assert_eq!(
            TokenKey::new("one").verify(Some(&stretched), &crm, &alice, 0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn missing_and_malformed_tokens_are_named() {
        let key = TokenKey::new("s");
        let (crm, alice) = names("crm", "alice");
        assert_eq!(key.verify(None, &crm, &alice, 0), Err(TokenError::Missing));
        for bad in ["", "abc", "x.y", "10.!!!"] {
            assert_eq!(
                key.verify(Some(bad), &crm, &alice, 0),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }
}

//! RFC 8292 VAPID: the `Authorization: vapid t=<JWT>, k=<key>` header.
//!
//! Signing an ES256 JWT costs more than encrypting a push, and the token only
//! depends on the push service's origin, so each signer keeps one header per
//! origin and renews it when half its lifetime is gone — long before the 24 h
//! limit push services enforce.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::EcdsaKeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::VapidIdentity;

/// How long a token is valid. RFC 8292 §2 caps `exp` at 24 h; 12 h leaves
/// room for clock skew between us and the push service.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A cached token is renewed once less than this is left.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(6 * 3600);

/// `{"typ":"JWT","alg":"ES256"}`, base64url.
const JWT_HEADER: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9";

#[derive(Clone)]
struct Cached {
    header: Arc<str>,
    expires: SystemTime,
}

/// Signs VAPID headers for one identity (one package's key and contact).
pub struct VapidSigner {
    key_pair: Arc<EcdsaKeyPair>,
    public_key: String,
    subject: String,
    rng: SystemRandom,
    /// std Mutex: held only to read or insert, never across an await.
    cache: Mutex<HashMap<String, Cached>>,
}

impl VapidSigner {
    pub fn new(identity: &VapidIdentity) -> Self {
        Self {
            key_pair: identity.key.key_pair().clone(),
            public_key: identity.key.public_key().to_owned(),
            subject: identity.subject.clone(),
            rng: SystemRandom::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header value for a push service `origin`.
    pub fn authorization(&self, origin: &str, now: SystemTime) -> Arc<str> {
        let mut cache = self
            .cache
            .lock()
            .expect("the VAPID cache lock is never poisoned");
        if let Some(hit) = cache.get(origin)
            && hit.expires > now + RENEW_BEFORE_EXPIRY
        {
            return hit.header.clone();
        }
        let expires = now + TOKEN_LIFETIME;
        let header: Arc<str> = self.sign(origin, expires).into();
        cache.insert(
            origin.to_owned(),
            Cached {
                header: header.clone(),
                expires,
            },
        );
        header
    }

    fn sign(&self, origin: &str, expires: SystemTime) -> String {
        let exp = expires
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let claims = serde_json::json!({ "aud": origin, "exp": exp, "sub": self.subject });
        let signing_input = format!(
            "{JWT_HEADER}.{}",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key_pair
            .sign(&self.rng, signing_input.as_bytes())
            .expect("ECDSA P-256 signing does not fail with a valid key");
        format!(
            "vapid t={signing_input}.{}, k={}",
            URL_SAFE_NO_PAD.encode(signature.as_ref()),
            self.public_key
        )
    }
}

/// One signer per package identity, built once at start.
pub struct VapidSigners {
    default: Arc<VapidSigner>,
    packages: HashMap<crate::model::Package, Arc<VapidSigner>>,
}

impl VapidSigners {
    pub fn new(registry: &crate::config::VapidRegistry) -> Self {
        let default = Arc::new(VapidSigner::new(&registry.default));
        let packages = registry
            .packages
            .iter()
            .map(|(package, id)| (package.clone(), Arc::new(VapidSigner::new(id))))
            .collect();
        Self { default, packages }
    }

    pub fn for_package(&self, package: &crate::model::Package) -> &Arc<VapidSigner> {
        self.packages.get(package).unwrap_or(&self.default)
    }

    /// The `base.push` identity.
    pub fn default_signer(&self) -> &Arc<VapidSigner> {
        &self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VapidPrivateKey;
    use crate::model::decode_base64;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn signer() -> VapidSigner {
        VapidSigner::new(&VapidIdentity {
            key: VapidPrivateKey::generate(),
            subject: "mailto:ops@example.com".into(),
        })
    }

    fn parts(header: &str) -> (String, String, String, String) {
        let rest = header.strip_prefix("vapid t=").unwrap();
        let (token, k) = rest.split_once(", k=").unwrap();
        let mut it = token.split('.');
        (
            it.next().unwrap().to_owned(),
            it.next().unwrap().to_owned(),
            it.next().unwrap().to_owned(),
            k.to_owned(),
        )
    }

    #[test]
    fn the_token_carries_audience_expiry_and_contact() {
        let s = signer();
        let now = SystemTime::now();
        let header = s.authorization("https://fcm.googleapis.com", now);
        let (h, claims, sig, k) = parts(&header);
        assert_eq!(
            decode_base64(&h).unwrap(),
            br#"{"typ":"JWT","alg":"ES256"}"#
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&decode_base64(&claims).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://fcm.googleapis.com");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let exp = claims["exp"].as_u64().unwrap();
        let now_s = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(
            exp > now_s && exp <= now_s + 24 * 3600,
            "exp {exp} now {now_s}"
        );
        assert_eq!(k, s.public_key());
        let public = decode_base64(&k).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(
                format!("{h}.{}", parts(&header).1).as_bytes(),
                &decode_base64(&sig).unwrap(),
            )
            .expect("signature verifies");
    }

    #[test]
    fn tokens_are_cached_per_origin_and_renewed_before_expiry() {
        let s = signer();
        let t0 = SystemTime::now();
        let a = s.authorization("https://a.example", t0);
        assert!(Arc::ptr_eq(
            &a,
            &s.authorization("https://a.example", t0 + Duration::from_secs(3600))
        ));
        let b = s.authorization("https://b.example", t0);
        assert!(!Arc::ptr_eq(&a, &b));
        let later = s.authorization("https://a.example", t0 + Duration::from_secs(7 * 3600));
        assert!(
            !Arc::ptr_eq(&a, &later),
            "token kept past its renewal point"
        );
    }
}

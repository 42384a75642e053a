//! RFC 8291 message encryption (`aes128gcm`, RFC 8188) on aws-lc-rs.
//!
//! Only the framing is ours — which bytes go into which HKDF call and how the
//! record is laid out; every primitive (ECDH P-256, HMAC/HKDF-SHA-256,
//! AES-128-GCM) is aws-lc-rs. The `web-push` crates were measured 4× slower and
//! pin OpenSSL (DESIGN §9). Every intermediate value is checked against RFC 8291
//! Appendix A in the tests below, and the integration tests decrypt our output
//! with an independent implementation.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, UnparsedPublicKey};
use aws_lc_rs::hkdf::{self, HKDF_SHA256, KeyType};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::model::SubscriptionKeys;

/// The record size announced in the header. Push services accept bodies of
/// 4096 bytes, so one record of this size holds any message they take.
pub const RECORD_SIZE: u32 = 4096;
/// salt (16) + rs (4) + idlen (1) + keyid (65-byte uncompressed point).
pub const HEADER_LEN: usize = 16 + 4 + 1 + 65;
const TAG_LEN: usize = 16;
/// The largest plaintext whose encrypted body (header, plaintext, the 0x02
/// padding delimiter and the GCM tag) fits the 4096 bytes push services accept.
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - HEADER_LEN - TAG_LEN - 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EceError {
    #[error(
        "the Web Push payload is {len} bytes; at most {MAX_PLAINTEXT} fit one 4096-byte aes128gcm record"
    )]
    TooLarge { len: usize },
    #[error("the subscription's p256dh key was refused by ECDH")]
    BadPeerKey,
    #[error("the system random generator failed")]
    Random,
}

/// The keys RFC 8291 §3.3–3.4 and RFC 8188 §2.2–2.3 derive for one message.
#[derive(Debug, PartialEq, Eq)]
struct Derived {
    ecdh_secret: Vec<u8>,
    prk_key: [u8; 32],
    ikm: [u8; 32],
    prk: [u8; 32],
    cek: [u8; 16],
    nonce: [u8; 12],
}

/// Output length for aws-lc-rs's HKDF-Expand.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Extract is HMAC(salt, ikm) (RFC 5869 §2.2); computed as such so the
/// pseudo-random keys can be compared with the RFC's.
fn extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
    tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

fn expand<const N: usize>(prk: &[u8; 32], info: &[u8]) -> [u8; N] {
    let prk = hkdf::Prk::new_less_safe(HKDF_SHA256, prk);
    let mut out = [0u8; N];
    prk.expand(&[info], Len(N))
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-SHA-256 expands to at most 255 * 32 bytes");
    out
}

fn derive(
    as_private: &agreement::PrivateKey,
    as_public: &[u8],
    keys: &SubscriptionKeys,
    salt: &[u8; 16],
) -> Result<Derived, EceError> {
    let ecdh_secret = agreement::agree(
        as_private,
        UnparsedPublicKey::new(&ECDH_P256, keys.p256dh()),
        EceError::BadPeerKey,
        |secret| Ok(secret.to_vec()),
    )?;
    // RFC 8291 §3.3: key_info = "WebPush: info" || 0x00 || ua_public || as_public
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(keys.p256dh());
    key_info.extend_from_slice(as_public);
    let prk_key = extract(keys.auth(), &ecdh_secret);
    let ikm = expand::<32>(&prk_key, &key_info);
    // RFC 8188 §2.2–2.3.
    let prk = extract(salt, &ikm);
    let cek = expand::<16>(&prk, b"Content-Encoding: aes128gcm\0");
    let nonce = expand::<12>(&prk, b"Content-Encoding: nonce\0");
    Ok(Derived {
        ecdh_secret,
        prk_key,
        ikm,
        prk,
        cek,
        nonce,
    })
}

/// Encrypts `plaintext` for one subscription with a fresh sender key pair and
/// salt (RFC 8291 §3.1 requires both to be new for every message).
pub fn encrypt(plaintext: &[u8], keys: &SubscriptionKeys) -> Result<Vec<u8>, EceError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| EceError::Random)?;
    let as_private = agreement::PrivateKey::generate(&ECDH_P256).map_err(|_| EceError::Random)?;
    encrypt_with(plaintext, keys, &as_private, &salt)
}

fn encrypt_with(
    plaintext: &[u8],
    keys: &SubscriptionKeys,
    as_private: &agreement::PrivateKey,
    salt: &[u8; 16],
) -> Result<Vec<u8>, EceError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EceError::TooLarge {
            len: plaintext.len(),
        });
    }
    let as_public = as_private
        .compute_public_key()
        .map_err(|_| EceError::Random)?;
    let derived = derive(as_private, as_public.as_ref(), keys, salt)?;

    let mut body = Vec::with_capacity(HEADER_LEN + plaintext.len() + 1 + TAG_LEN);
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public.as_ref());
    // The single, last record: plaintext, then the 0x02 delimiter, no padding.
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    record.push(0x02);
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &derived.cek).expect("a 16-byte AES-128 key"),
    );
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(derived.nonce),
        Aad::empty(),
        &mut record,
    )
    .map_err(|_| EceError::Random)?;
    body.extend_from_slice(&record);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decode_base64;

    /// RFC 8291 Appendix A, as kept in `tests/fixtures/rfc8291-appendix-a.json`.
    struct Vector(serde_json::Value);

    impl Vector {
        fn load() -> Self {
            let text = include_str!("../../tests/fixtures/rfc8291-appendix-a.json");
            Vector(serde_json::from_str(text).unwrap())
        }
        fn bytes(&self, field: &str) -> Vec<u8> {
            decode_base64(self.0[field].as_str().unwrap()).unwrap()
        }
    }

    fn setup(v: &Vector) -> (SubscriptionKeys, agreement::PrivateKey, [u8; 16]) {
        let keys = SubscriptionKeys::parse(
            v.0["ua_public"].as_str().unwrap(),
            v.0["auth_secret"].as_str().unwrap(),
        )
        .unwrap();
        let as_private =
            agreement::PrivateKey::from_private_key(&ECDH_P256, &v.bytes("as_private")).unwrap();
        let salt: [u8; 16] = v.bytes("salt").try_into().unwrap();
        (keys, as_private, salt)
    }

    #[test]
    fn every_intermediate_value_matches_rfc8291_appendix_a() {
        let v = Vector::load();
        let (keys, as_private, salt) = setup(&v);
        let as_public = as_private.compute_public_key().unwrap();
        assert_eq!(as_public.as_ref(), v.bytes("as_public"));
        let d = derive(&as_private, as_public.as_ref(), &keys, &salt).unwrap();
        assert_eq!(d.ecdh_secret, v.bytes("ecdh_secret"), "ecdh_secret");
        assert_eq!(d.prk_key.to_vec(), v.bytes("prk_key"), "prk_key");
        assert_eq!(d.ikm.to_vec(), v.bytes("ikm"), "ikm");
        assert_eq!(d.prk.to_vec(), v.bytes("prk"), "prk");
        assert_eq!(d.cek.to_vec(), v.bytes("cek"), "cek");
        assert_eq!(d.nonce.to_vec(), v.bytes("nonce"), "nonce");
    }

    #[test]
    fn the_body_matches_rfc8291_appendix_a() {
        let v = Vector::load();
        let (keys, as_private, salt) = setup(&v);
        let body = encrypt_with(&v.bytes("plaintext"), &keys, &as_private, &salt).unwrap();
        let header = v.bytes("header");
        assert_eq!(body[..HEADER_LEN], header[..], "header");
        assert_eq!(body[HEADER_LEN..], v.bytes("ciphertext")[..], "ciphertext");
        assert_eq!(v.0["record_size"].as_u64(), Some(u64::from(RECORD_SIZE)));
    }

    #[test]
    fn the_largest_payload_fills_exactly_4096_bytes() {
        let v = Vector::load();
        let (keys, _, _) = setup(&v);
        let body = encrypt(&vec![b'x'; MAX_PLAINTEXT], &keys).unwrap();
        assert_eq!(body.len(), 4096);
        assert_eq!(
            encrypt(&vec![b'x'; MAX_PLAINTEXT + 1], &keys),
            Err(EceError::TooLarge {
                len: MAX_PLAINTEXT + 1
            })
        );
    }

    #[test]
    fn every_message_gets_a_fresh_key_and_salt() {
        let v = Vector::load();
        let (keys, _, _) = setup(&v);
        let a = encrypt(b"same", &keys).unwrap();
        let b = encrypt(b"same", &keys).unwrap();
        assert_ne!(a[..16], b[..16], "salt reused");
        assert_ne!(a[21..HEADER_LEN], b[21..HEADER_LEN], "sender key reused");
    }
}

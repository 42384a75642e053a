//! VAPID keys as Axion configs hold them: every form py_vapid writes.
//!
//! pywebpush accepted `vapid_private_key` as a PEM text, a path to a PEM file,
//! a base64url DER (PKCS#8 or SEC1) or a base64url raw 32-byte scalar, and
//! existing `config.yaml` files contain all of them. The key is decoded once at
//! load, so a bad key stops the daemon at start with the key's path, not at
//! the first push.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::agreement::{self, ECDH_P256};
use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::model::decode_base64;

/// A VAPID signing key (P-256). Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct VapidPrivateKey {
    key_pair: Arc<EcdsaKeyPair>,
    public_key: String,
    /// The file it was read from, when the config named one: a file
    /// holding a secret, which the daemon checks others cannot read.
    file: Option<PathBuf>,
}

impl VapidPrivateKey {
    /// Decodes any form py_vapid produces; `text` may also name a PEM file.
    pub fn decode(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("is empty".into());
        }
        if text.starts_with("-----BEGIN") {
            return Self::from_pem(text.as_bytes());
        }
        let path = Path::new(text);
        if looks_like_path(text) && path.is_file() {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("names the file {}, which cannot be read: {e}", text))?;
            let key = Self::from_pem(&bytes)
                .or_else(|_| Self::from_der(&bytes))
                .map_err(|e| format!("names the file {text}, which {e}"))?;
            return Ok(Self {
                file: Some(path.to_owned()),
                ..key
            });
        }
        // A DER or raw key pasted into YAML may have been wrapped over lines.
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = decode_base64(&compact).ok_or_else(|| {
            "is neither a PEM key, a PEM file, nor base64/base64url key material".to_owned()
        })?;
        if bytes.len() == 32 {
            Self::from_raw(&bytes)
        } else {
            Self::from_der(&bytes)
        }
    }

    fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("is not a readable PEM private key ({e})"))?;
        Self::from_der(der.secret_der())
    }

    /// PKCS#8 or SEC1 (`EC PRIVATE KEY`) DER.
    fn from_der(der: &[u8]) -> Result<Self, String> {
        let key_pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| format!("is not a P-256 private key ({e})"))?;
        Ok(Self::from_key_pair(key_pair))
    }

    /// The bare 32-byte scalar `Vapid.from_raw` reads.
    fn from_raw(scalar: &[u8]) -> Result<Self, String> {
        let private = agreement::PrivateKey::from_private_key(&ECDH_P256, scalar)
            .map_err(|_| "is 32 bytes but not a valid P-256 private scalar".to_owned())?;
        let public = private
            .compute_public_key()
            .map_err(|_| "is not a valid P-256 private scalar".to_owned())?;
        let key_pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            scalar,
            public.as_ref(),
        )
        .map_err(|e| format!("is not a valid P-256 private scalar ({e})"))?;
        Ok(Self::from_key_pair(key_pair))
    }

    fn from_key_pair(key_pair: EcdsaKeyPair) -> Self {
        let public_key = URL_SAFE_NO_PAD.encode(key_pair.public_key().as_ref());
        Self {
            key_pair: Arc::new(key_pair),
            public_key,
            file: None,
        }
    }

    /// A fresh key, for first runs and `generate-vapid`.
    pub fn generate() -> Self {
        let key_pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("the system random generator works");
        Self::from_key_pair(key_pair)
    }

    /// PKCS#8 PEM, the form py_vapid's `save_key` writes.
    pub fn to_pem(&self) -> String {
        let der = self
            .key_pair
            .to_pkcs8v1()
            .expect("a generated P-256 key serialises");
        let body = STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    /// The raw scalar as base64url: the most compact form for `config.yaml`.
    pub fn to_raw_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.scalar())
    }

    /// The private scalar, 32 bytes big-endian: what other keys of the
    /// installation are derived from.
    pub fn scalar(&self) -> Vec<u8> {
        self.key_pair
            .private_key()
            .as_be_bytes()
            .expect("a P-256 key has a big-endian scalar")
            .as_ref()
            .to_vec()
    }

    /// The uncompressed public point, base64url: the browser's
    /// `applicationServerKey` and the `k=` of the Authorization header.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    pub fn key_pair(&self) -> &Arc<EcdsaKeyPair> {
        &self.key_pair
    }

    /// The file the config named for this key, if it named one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

impl fmt::Debug for VapidPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VapidPrivateKey(public {})", self.public_key)
    }
}

fn looks_like_path(text: &str) -> bool {
    text.contains('/') || text.contains('\\') || text.ends_with(".pem") || text.ends_with(".der")
}

/// Normalises a VAPID `sub`: a bare address gains `mailto:`. Apple answers 403
/// to contacts on localhost, `.local` or `.invalid`, so those are refused here.
pub fn normalize_subject(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let subject = if raw.starts_with("mailto:") || raw.starts_with("https://") {
        raw.to_owned()
    } else if raw.contains('@') && !raw.contains(':') {
        format!("mailto:{raw}")
    } else {
        return Err(format!(
            "'{raw}' is not a contact: use mailto:someone@your-domain or an https:// URL"
        ));
    };
    let host: Option<String> = match subject.strip_prefix("mailto:") {
        Some(address) => address
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_owned()),
        None => url::Url::parse(&subject)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned)),
    };
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Err(format!("'{subject}' has no domain"));
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let refused = host == "localhost"
        || [".localhost", ".local", ".invalid"]
            .iter()
            .any(|suffix| host.ends_with(suffix))
        || host.parse::<std::net::IpAddr>().is_ok();
    if refused {
        return Err(format!(
            "'{subject}' uses a domain push services refuse (Apple answers 403 to localhost, .local, .invalid and bare IPs)"
        ));
    }
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_survives_every_form() {
        let key = VapidPrivateKey::generate();
        let from_pem = VapidPrivateKey::decode(&key.to_pem()).unwrap();
        let from_raw = VapidPrivateKey::decode(&key.to_raw_base64url()).unwrap();
        assert_eq!(from_pem.public_key(), key.public_key());
        assert_eq!(from_raw.public_key(), key.public_key());
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let e = VapidPrivateKey::decode("not a key!").unwrap_err();
        assert!(e.contains("neither a PEM key"), "{e}");
        let e = VapidPrivateKey::decode("AAAA").unwrap_err();
        assert!(e.contains("not a P-256 private key"), "{e}");
    }

    #[test]
    fn subjects_are_normalised_and_local_domains_refused() {
        assert_eq!(
            normalize_subject("admin@example.com").unwrap(),
            "mailto:admin@example.com"
        );
        assert_eq!(
            normalize_subject("https://example.com/contact").unwrap(),
            "https://example.com/contact"
        );
        for bad in [
            "mailto:root@localhost",
            "mailto:a@box.local",
            "mailto:a@x.invalid",
            "https://localhost/",
            "admin",
        ] {
            assert!(normalize_subject(bad).is_err(), "{bad} accepted");
        }
    }
}

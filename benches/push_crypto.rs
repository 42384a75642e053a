//! The CPU cost of one push: encryption and VAPID, ours against a baseline
//! measured in the same run.
//!
//! - encrypt: `axion_push::push::ece` (aws-lc-rs) against `web-push-native`
//!   (RustCrypto), the same RFC 8291 operation on the same payload;
//! - VAPID: our header cached per push-service origin against signing a
//!   fresh JWT for every push (what pywebpush and most senders do);
//! - per push: the two together, ours against the baseline's.
//!
//! Run: `cargo bench --bench push_crypto` (release mode). Prints mean
//! microseconds per operation and the ratio baseline / ours.
//! `cargo bench --bench push_crypto -- --smoke` runs a few rounds only, to
//! prove the benchmark works (`.ci/run`).

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use axion_push::config::{VapidIdentity, VapidPrivateKey};
use axion_push::model::SubscriptionKeys;
use axion_push::push::{VapidSigner, ece};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Rounds per measure; `--smoke` runs a few.
fn rounds() -> u32 {
    if std::env::args().any(|a| a == "--smoke") {
        20
    } else {
        2_000
    }
}

fn mean(rounds: u32, mut f: impl FnMut(u32)) -> Duration {
    for i in 0..rounds / 10 {
        f(i); // warm-up
    }
    let start = Instant::now();
    for i in 0..rounds {
        f(i);
    }
    start.elapsed() / rounds
}

fn row(name: &str, ours: Duration, baseline: Duration) {
    println!(
        "{name:<34} ours {:>8.2} µs   baseline {:>8.2} µs   ratio {:>7.1}×",
        ours.as_secs_f64() * 1e6,
        baseline.as_secs_f64() * 1e6,
        baseline.as_secs_f64() / ours.as_secs_f64()
    );
}

fn main() {
    let rounds = rounds();
    // A browser's keys, made with the baseline's library.
    let mut seed = [0u8; 32];
    aws_lc_rs::rand::fill(&mut seed).unwrap();
    let ua_secret = p256::SecretKey::from_slice(&seed).expect("a valid scalar");
    let ua_public = ua_secret.public_key();
    let mut auth = [0u8; 16];
    aws_lc_rs::rand::fill(&mut auth).unwrap();
    let keys = SubscriptionKeys::parse(
        &URL_SAFE_NO_PAD.encode(ua_public.to_sec1_bytes()),
        &URL_SAFE_NO_PAD.encode(auth),
    )
    .unwrap();
    let baseline_auth = web_push_native::Auth::clone_from_slice(&auth);
    // A typical notification payload.
    let payload = br#"{"web_push":8030,"notification":{"title":"Disk full","body":"db1 is at 95% of its volume","navigate":"/disks/db1","dir":"auto","timestamp":1764280000000},"title":"Disk full","body":"db1 is at 95% of its volume","url":"/disks/db1"}"#;

    let signer = VapidSigner::new(&VapidIdentity {
        key: VapidPrivateKey::generate(),
        subject: "mailto:ops@example.com".into(),
    });
    let now = SystemTime::now();

    let ours_encrypt = mean(rounds, |_| {
        black_box(ece::encrypt(black_box(payload), &keys).unwrap());
    });
    let baseline_encrypt = mean(rounds, |_| {
        black_box(web_push_native::encrypt(payload.to_vec(), &ua_public, &baseline_auth).unwrap());
    });
    let ours_vapid = mean(rounds, |_| {
        black_box(signer.authorization("https://fcm.googleapis.com", now));
    });
    // A new origin each time: every call signs a fresh token.
    let origins: Vec<String> = (0..rounds + rounds / 10)
        .map(|i| format!("https://push-{i}.example"))
        .collect();
    let signed_each_time = mean(rounds, |i| {
        black_box(signer.authorization(&origins[i as usize], now));
    });

    println!("axion-push per-push CPU cost, {rounds} rounds each");
    row("encrypt (RFC 8291)", ours_encrypt, baseline_encrypt);
    row(
        "VAPID header (cached vs signed)",
        ours_vapid,
        signed_each_time,
    );
    row(
        "per push (encrypt + VAPID)",
        ours_encrypt + ours_vapid,
        baseline_encrypt + signed_each_time,
    );
}

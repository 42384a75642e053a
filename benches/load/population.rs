//! The subscriptions every system of a run is measured on: users of the
//! package `bench`, each subscription a simulated browser with a real P-256
//! key and auth secret (the push service does not decrypt, so the private
//! half is dropped), at an endpoint of the benchmark's push service.

use std::path::{Path, PathBuf};

use aws_lc_rs::agreement::{ECDH_P256, PrivateKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::harness::database::AxionRow;

pub const PACKAGE: &str = "bench";

#[derive(Debug, Clone)]
pub struct Subscription {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

/// Users holding the same number of subscriptions each.
pub struct Group {
    pub name: &'static str,
    pub users: Vec<String>,
    /// `subscriptions[i]` belong to `users[i]`.
    pub subscriptions: Vec<Vec<Subscription>>,
    /// The same as JSON for the baselines, written when first asked for.
    file: std::sync::OnceLock<PathBuf>,
    dir: PathBuf,
}

/// Hands out subscription indices, so that every endpoint is distinct.
pub struct Endpoints {
    pub origin: String,
    next: usize,
}

impl Endpoints {
    pub fn at(origin: String) -> Endpoints {
        Endpoints { origin, next: 0 }
    }

    fn subscription(&mut self) -> Subscription {
        let key = PrivateKey::generate(&ECDH_P256).expect("a P-256 key");
        let public = key.compute_public_key().expect("its public key");
        let mut auth = [0u8; 16];
        aws_lc_rs::rand::fill(&mut auth).expect("random bytes");
        let endpoint = format!("{}/push/{}", self.origin, self.next);
        self.next += 1;
        Subscription {
            endpoint,
            p256dh: URL_SAFE_NO_PAD.encode(public.as_ref()),
            auth: URL_SAFE_NO_PAD.encode(auth),
        }
    }
}

impl Group {
    /// `users` users named `{prefix}{n}`, `each` subscriptions each.
    pub fn new(
        name: &'static str,
        prefix: &str,
        users: usize,
        each: usize,
        endpoints: &mut Endpoints,
        dir: &Path,
    ) -> Group {
        let users: Vec<String> = (0..users).map(|n| format!("{prefix}{n}")).collect();
        let subscriptions = users
            .iter()
            .map(|_| (0..each).map(|_| endpoints.subscription()).collect())
            .collect();
        Group {
            name,
            users,
            subscriptions,
            file: std::sync::OnceLock::new(),
            dir: dir.to_owned(),
        }
    }

    pub fn per_user(&self) -> usize {
        self.subscriptions.first().map_or(0, Vec::len)
    }

    /// Rows of Axion's table, for the daemon's database.
    pub fn rows(&self) -> Vec<AxionRow<'_>> {
        self.users
            .iter()
            .zip(&self.subscriptions)
            .flat_map(|(user, subscriptions)| {
                subscriptions.iter().map(move |s| AxionRow {
                    user,
                    package: PACKAGE,
                    endpoint: &s.endpoint,
                    p256dh: Some(&s.p256dh),
                    auth: Some(&s.auth),
                    created_at: Some("2025-01-01 00:00:00"),
                    active: Some("Y"),
                    ..AxionRow::default()
                })
            })
            .collect()
    }

    /// `{"bench/user": [PushSubscription JSON, …]}`: what a baseline reads
    /// at start instead of querying a database per send.
    pub fn file(&self) -> &Path {
        self.file.get_or_init(|| self.write_file())
    }

    fn write_file(&self) -> PathBuf {
        let map: serde_json::Map<String, serde_json::Value> = self
            .users
            .iter()
            .zip(&self.subscriptions)
            .map(|(user, subscriptions)| {
                let list = subscriptions
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "endpoint": s.endpoint,
                            "keys": {"p256dh": s.p256dh, "auth": s.auth},
                        })
                    })
                    .collect();
                (format!("{PACKAGE}/{user}"), serde_json::Value::Array(list))
            })
            .collect();
        let file = self.dir.join(format!("subscriptions-{}.json", self.name));
        std::fs::write(&file, serde_json::to_vec(&map).unwrap()).unwrap();
        file
    }
}

//! The messages of recent sends, ready to encrypt.
//!
//! The command stage renders a send's message once and puts it here as it
//! records the send, so the engine does not read it back from the database
//! for every send; a message that is not here (a send another daemon
//! recorded, one older than what is kept, one from before a restart) is read
//! from the database and kept here for its other deliveries.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::notification::Urgency;
use crate::push::VapidSigner;

/// Messages kept: far more than the sends a daemon delivers at once.
const KEPT: usize = 4096;

/// A message ready to encrypt, shared by its send's deliveries.
pub struct Prepared {
    pub payload: Arc<[u8]>,
    pub ttl: u32,
    pub urgency: Urgency,
    pub topic: Option<Arc<str>>,
    /// No attempt after this (milliseconds since the epoch).
    pub expires_ms: u64,
    pub signer: Arc<VapidSigner>,
}

type Key = (String, String);

#[derive(Clone, Default)]
pub struct Messages {
    inner: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    by_send: HashMap<Key, Arc<Prepared>>,
    /// Oldest first: the first to go when more than `KEPT` are kept.
    order: VecDeque<Key>,
}

impl Messages {
    /// Keeps the message of send `id` of `package`.
    pub fn put(&self, package: &str, id: &str, message: Arc<Prepared>) {
        let key = (package.to_owned(), id.to_owned());
        let mut kept = self.inner.lock().expect("messages lock");
        if kept.by_send.insert(key.clone(), message).is_none() {
            kept.order.push_back(key);
        }
        while kept.order.len() > KEPT {
            if let Some(oldest) = kept.order.pop_front() {
                kept.by_send.remove(&oldest);
            }
        }
    }

    pub fn get(&self, package: &str, id: &str) -> Option<Arc<Prepared>> {
        let kept = self.inner.lock().expect("messages lock");
        kept.by_send
            .get(&(package.to_owned(), id.to_owned()))
            .cloned()
    }
}

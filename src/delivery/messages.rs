//! The messages of recent sends, ready to encrypt.
//!
//! The command stage renders a send's message once and puts it here as it
//! records the send, so the engine does not read it back from the database
//! for every send. A message that is not here (a send another daemon
//! recorded, a retry, one from before a restart, one recorded while this
//! was full) is read from the database, once per claim.
//!
//! The queue is worked oldest first, so this keeps the oldest: a message
//! leaves once each of its send's deliveries has been claimed once, and
//! when full, a new message is not kept rather than pushing out the ones
//! the engine needs next. (Pushing out the oldest, as a cache usually does,
//! made a burst of sends longer than this read back almost every message.)
//! A message whose deliveries another daemon took never reaches zero: it
//! goes once it is older than [`STALE`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::notification::Urgency;
use crate::push::VapidSigner;

/// Messages kept at most, and their payloads' bytes at most (a payload is
/// up to about 4 KB; most are a few hundred bytes).
const KEPT: usize = 16_384;
const KEPT_BYTES: usize = 16 << 20;
/// A message kept this long has had its chance: the engine claims a send's
/// deliveries within seconds of recording it unless the queue is long, and
/// then the message is read back from the database.
const STALE: Duration = Duration::from_secs(60);

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

impl Prepared {
    /// When the send was accepted: its expiry is that plus its TTL.
    pub fn accepted_ms(&self) -> u64 {
        self.expires_ms
            .saturating_sub(u64::from(self.ttl).saturating_mul(1000))
    }
}

type Key = (String, String);

struct Entry {
    message: Arc<Prepared>,
    /// Deliveries of the send not yet claimed through here.
    unclaimed: u64,
}

#[derive(Clone, Default)]
pub struct Messages {
    inner: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    by_send: HashMap<Key, Entry>,
    /// When each message was put, oldest first (some may be gone already).
    order: VecDeque<(Instant, Key)>,
    /// The payload bytes of the messages kept.
    bytes: usize,
}

impl Messages {
    /// Keeps the message of send `id` of `package` for its `deliveries`
    /// first claims, if there is room.
    pub fn put(&self, package: &str, id: &str, message: Arc<Prepared>, deliveries: u64) {
        if deliveries == 0 {
            return;
        }
        let key = (package.to_owned(), id.to_owned());
        let now = Instant::now();
        let mut kept = self.inner.lock().expect("messages lock");
        kept.forget_stale(now);
        // An id used again (after the de-duplication window): the new send's
        // message, never the old one's.
        kept.remove(&key);
        let size = message.payload.len();
        if kept.by_send.len() >= KEPT || kept.bytes + size > KEPT_BYTES {
            return;
        }
        let entry = Entry {
            message,
            unclaimed: deliveries,
        };
        kept.by_send.insert(key.clone(), entry);
        kept.bytes += size;
        kept.order.push_back((now, key));
    }

    /// The message of send `id` of `package`, for `claimed` of its
    /// deliveries just claimed.
    pub fn take(&self, package: &str, id: &str, claimed: u64) -> Option<Arc<Prepared>> {
        let key = (package.to_owned(), id.to_owned());
        let mut kept = self.inner.lock().expect("messages lock");
        let entry = kept.by_send.get_mut(&key)?;
        let message = entry.message.clone();
        entry.unclaimed = entry.unclaimed.saturating_sub(claimed);
        if entry.unclaimed == 0 {
            kept.remove(&key);
        }
        Some(message)
    }

    /// Messages kept now.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("messages lock").by_send.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Kept {
    fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.by_send.remove(key) {
            self.bytes -= entry.message.payload.len();
        }
    }

    /// Forgets messages put more than [`STALE`] ago, and the ages of those
    /// already gone.
    fn forget_stale(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front() {
            let gone = !self.by_send.contains_key(key);
            if !gone && now.duration_since(*at) <= STALE {
                break;
            }
            if let Some((_, key)) = self.order.pop_front()
                && !gone
            {
                self.remove(&key);
            }
        }
        // Ages of messages taken behind one still kept: dropped now and
        // then, so they cannot pile up.
        if self.order.len() > 2 * KEPT {
            let by_send = &self.by_send;
            self.order.retain(|(_, key)| by_send.contains_key(key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Arc<Prepared> {
        let identity = crate::config::VapidIdentity {
            key: crate::config::VapidPrivateKey::generate(),
            subject: "mailto:ops@example.com".into(),
        };
        Arc::new(Prepared {
            payload: Arc::from(&b"{}"[..]),
            ttl: 60,
            urgency: Urgency::Normal,
            topic: None,
            expires_ms: u64::MAX,
            signer: Arc::new(VapidSigner::new(&identity)),
        })
    }

    #[test]
    fn a_message_leaves_once_each_delivery_was_claimed() {
        let messages = Messages::default();
        messages.put("crm", "n-1", message(), 3);
        assert!(messages.take("crm", "n-1", 1).is_some());
        assert!(messages.take("crm", "n-1", 2).is_some(), "a claim of two");
        assert!(
            messages.take("crm", "n-1", 1).is_none(),
            "read back for a retry"
        );
        assert!(messages.is_empty());
    }

    #[test]
    fn an_id_used_again_gets_its_new_message() {
        let messages = Messages::default();
        messages.put("crm", "n-1", message(), 1);
        let new = Arc::new(Prepared {
            payload: Arc::from(&b"{\"new\":1}"[..]),
            ..Arc::into_inner(message()).unwrap()
        });
        messages.put("crm", "n-1", new, 1);
        let taken = messages.take("crm", "n-1", 1).unwrap();
        assert_eq!(&taken.payload[..], &b"{\"new\":1}"[..]);
    }

    #[test]
    fn the_payload_bytes_kept_are_bounded_too() {
        let messages = Messages::default();
        let big = Arc::new(Prepared {
            payload: Arc::from(vec![0_u8; 4096]),
            ..Arc::into_inner(message()).unwrap()
        });
        for n in 0..KEPT {
            messages.put("crm", &format!("n-{n}"), big.clone(), 1);
        }
        assert_eq!(messages.len(), KEPT_BYTES / 4096);
        assert!(messages.take("crm", "n-0", 1).is_some());
        messages.put("crm", "later", big, 1);
        assert!(messages.take("crm", "later", 1).is_some(), "room again");
    }

    #[test]
    fn when_full_the_oldest_stay_and_the_newest_are_read_back() {
        let messages = Messages::default();
        let m = message();
        for n in 0..KEPT + 10 {
            messages.put("crm", &format!("n-{n}"), m.clone(), 1);
        }
        assert_eq!(messages.len(), KEPT);
        assert!(
            messages.take("crm", "n-0", 1).is_some(),
            "the next to claim"
        );
        assert!(messages.take("crm", &format!("n-{KEPT}"), 1).is_none());
        // Claiming made room.
        messages.put("crm", "later", m, 1);
        assert!(messages.take("crm", "later", 1).is_some());
    }
}

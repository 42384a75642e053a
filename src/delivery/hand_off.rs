//! Sends whose real-time event is not handed to egress yet.
//!
//! A send's deliveries are claimable as soon as its transaction commits,
//! and its event is handed to egress just after: the engine, polling or
//! woken by another send, could claim the deliveries in between and push
//! before live listeners hear of the notification. The command stage marks
//! the send here before it records it and clears the mark once the event is
//! handed over; a request waits while its send is marked. In memory, so it
//! costs no SQL; it orders the stages of one daemon.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug, Clone, Default)]
pub struct HandOff {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// How many sends are marked: the common case, none, takes no lock.
    marked: AtomicUsize,
    sends: Mutex<HashSet<(String, String)>>,
    cleared: Notify,
}

/// Clears a send's mark when dropped: once its event is handed over, or
/// when recording it failed.
#[derive(Debug)]
pub struct Marked {
    inner: Arc<Inner>,
    key: (String, String),
}

impl HandOff {
    /// Marks send `id` of `package` until the returned guard is dropped.
    pub fn mark(&self, package: &str, id: &str) -> Marked {
        let key = (package.to_owned(), id.to_owned());
        let mut sends = self.inner.sends.lock().expect("hand-off lock");
        if sends.insert(key.clone()) {
            self.inner.marked.fetch_add(1, Ordering::SeqCst);
        }
        drop(sends);
        Marked {
            inner: self.inner.clone(),
            key,
        }
    }

    fn is_marked(&self, key: &(String, String)) -> bool {
        self.inner.marked.load(Ordering::SeqCst) > 0
            && self
                .inner
                .sends
                .lock()
                .expect("hand-off lock")
                .contains(key)
    }

    /// Waits until send `id` of `package` is not marked.
    pub async fn wait(&self, package: &str, id: &str) {
        let key = (package.to_owned(), id.to_owned());
        loop {
            let cleared = self.inner.cleared.notified();
            tokio::pin!(cleared);
            cleared.as_mut().enable();
            if !self.is_marked(&key) {
                return;
            }
            cleared.await;
        }
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        let mut sends = self.inner.sends.lock().expect("hand-off lock");
        if sends.remove(&self.key) {
            self.inner.marked.fetch_sub(1, Ordering::SeqCst);
        }
        drop(sends);
        self.inner.cleared.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll};

    fn is_ready(f: &mut std::pin::Pin<Box<impl Future<Output = ()>>>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(f.as_mut().poll(&mut cx), Poll::Ready(()))
    }

    #[test]
    fn a_marked_send_waits_until_its_mark_is_cleared() {
        let hand_off = HandOff::default();
        let marked = hand_off.mark("crm", "n-1");
        let mut waiting = Box::pin(hand_off.wait("crm", "n-1"));
        assert!(!is_ready(&mut waiting));
        let mut other = Box::pin(hand_off.wait("crm", "n-2"));
        assert!(is_ready(&mut other), "another send does not wait");
        drop(marked);
        assert!(is_ready(&mut waiting));
    }
}

//! What the daemon has handed to the broker and whether the broker has it.
//!
//! rumqttc's `publish` returns once a message is queued towards the event
//! loop, not when the broker acknowledges it, and it tells no packet id.
//! A result or event counts as published here only once its QoS 1 PUBACK
//! arrived, so the daemon can mark it in the database then (and publish it
//! again after a crash otherwise). This is hand-written because rumqttc
//! 0.25 offers no per-publish acknowledgement; it relies on what rumqttc
//! does promise: it takes requests in order and reports each publish it
//! writes as `Outgoing::Publish(pkid)` (`Outgoing::AwaitAck(pkid)` when the
//! id is still in use), and the broker's `PubAck(pkid)`.
//!
//! Every publish goes through here and only the event loop's own task
//! hands them over, between two polls: so when a connection is lost,
//! everything handed so far is in rumqttc's pending queue, which it keeps
//! for a session the broker still has and drops otherwise — then this
//! outbox hands those messages again.

use std::collections::{HashMap, VecDeque};

use crate::report::{Outgoing, Publication, Receipt};

/// Messages handed to rumqttc and not yet acknowledged, at most. Below
/// rumqttc's own in-flight limit (see `mqtt::INFLIGHT`), so it never holds a
/// publish back for flow control, and packet ids are not reused while one
/// is still unacknowledged.
pub(super) const WINDOW: usize = 100;

struct Entry {
    /// Order of arrival, kept when messages are handed again.
    seq: u64,
    out: Outgoing,
    receipt: Option<Receipt>,
}

#[derive(Default)]
pub(super) struct Outbox {
    next_seq: u64,
    /// Not handed yet.
    waiting: VecDeque<Entry>,
    /// Handed to rumqttc, which has not written them yet.
    handed: VecDeque<Entry>,
    /// Written with a packet id; waiting for the broker's PUBACK.
    awaiting: HashMap<u16, Entry>,
    /// Held back by rumqttc until its packet id is free again.
    held: Option<(u16, Entry)>,
}

impl Outbox {
    /// Messages not yet acknowledged, in any state.
    pub(super) fn len(&self) -> usize {
        self.waiting.len() + self.in_flight()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn in_flight(&self) -> usize {
        self.handed.len() + self.awaiting.len() + usize::from(self.held.is_some())
    }

    /// Whether to take another message from the egress channel: beyond the
    /// window they wait there, so a broker that is away slows the stages
    /// down instead of filling memory.
    pub(super) fn has_room(&self) -> bool {
        self.len() < WINDOW
    }

    pub(super) fn push(&mut self, publication: Publication) {
        let entry = self.entry(publication.out, publication.receipt);
        self.waiting.push_back(entry);
    }

    /// Queues `out` ahead of everything waiting (the retained topics on a
    /// new connection).
    pub(super) fn push_first(&mut self, out: Outgoing) {
        let entry = self.entry(out, None);
        self.waiting.push_front(entry);
    }

    fn entry(&mut self, out: Outgoing, receipt: Option<Receipt>) -> Entry {
        self.next_seq += 1;
        Entry {
            seq: self.next_seq,
            out,
            receipt,
        }
    }

    /// The messages to hand to rumqttc now, in order; they count as handed.
    pub(super) fn hand(&mut self) -> Vec<Outgoing> {
        let mut now = Vec::new();
        while self.in_flight() < WINDOW
            && let Some(entry) = self.waiting.pop_front()
        {
            now.push(entry.out.clone());
            self.handed.push_back(entry);
        }
        now
    }

    /// The last `n` messages handed did not reach rumqttc: they wait again,
    /// first, in their order.
    pub(super) fn give_back(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(entry) = self.handed.pop_back() {
                self.waiting.push_front(entry);
            }
        }
    }

    /// rumqttc wrote a publish with packet id `pkid`.
    pub(super) fn written(&mut self, pkid: u16) {
        if pkid == 0 || self.awaiting.contains_key(&pkid) {
            // QoS 0 (none of ours), or one sent again on a resumed session.
            return;
        }
        let entry = match self.held.take() {
            Some((held, entry)) if held == pkid => entry,
            other => {
                self.held = other;
                match self.handed.pop_front() {
                    Some(entry) => entry,
                    None => {
                        tracing::debug!(pkid, "a publish the daemon did not hand over");
                        return;
                    }
                }
            }
        };
        self.awaiting.insert(pkid, entry);
    }

    /// rumqttc holds the next handed publish back: `pkid` is still in use.
    pub(super) fn held_back(&mut self, pkid: u16) {
        if let Some(entry) = self.handed.pop_front() {
            self.held = Some((pkid, entry));
        }
    }

    /// The broker acknowledged `pkid`: its receipt, if it has one.
    pub(super) fn acknowledged(&mut self, pkid: u16) -> Option<Receipt> {
        self.awaiting.remove(&pkid)?.receipt
    }

    /// A new connection. Without the old session, rumqttc dropped every
    /// message it held: they are handed again, in their first order.
    pub(super) fn connected(&mut self, session_present: bool) {
        if session_present {
            return;
        }
        let mut lost: Vec<Entry> = self.handed.drain(..).collect();
        lost.extend(self.awaiting.drain().map(|(_, e)| e));
        lost.extend(self.held.take().map(|(_, e)| e));
        lost.sort_by_key(|e| e.seq);
        for entry in lost.into_iter().rev() {
            self.waiting.push_front(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn out(topic: &str) -> Outgoing {
        Outgoing {
            topic: topic.into(),
            payload: bytes::Bytes::new(),
            retain: false,
        }
    }

    /// An outbox whose receipts record their topic in `confirmed`.
    fn outbox_with(topics: &[&str]) -> (Outbox, Arc<Mutex<Vec<String>>>) {
        let confirmed = Arc::new(Mutex::new(Vec::new()));
        let mut outbox = Outbox::default();
        for topic in topics {
            let (confirmed, name) = (confirmed.clone(), (*topic).to_owned());
            outbox.push(Publication {
                out: out(topic),
                receipt: Some(Receipt::new(move || confirmed.lock().unwrap().push(name))),
            });
        }
        (outbox, confirmed)
    }

    fn topics(handed: &[Outgoing]) -> Vec<&str> {
        handed.iter().map(|o| o.topic.as_str()).collect()
    }

    #[test]
    fn a_message_is_confirmed_only_by_its_own_puback() {
        let (mut o, confirmed) = outbox_with(&["a", "b"]);
        assert_eq!(topics(&o.hand()), ["a", "b"]);
        o.written(7);
        o.written(8);
        o.acknowledged(8).unwrap().confirm();
        assert_eq!(*confirmed.lock().unwrap(), ["b"]);
        assert!(o.acknowledged(9).is_none(), "an unknown packet id");
        o.acknowledged(7).unwrap().confirm();
        assert_eq!(*confirmed.lock().unwrap(), ["b", "a"]);
        assert!(o.is_empty());
    }

    #[test]
    fn a_lost_session_hands_every_unacknowledged_message_again_in_order() {
        let (mut o, _) = outbox_with(&["a", "b", "c", "d"]);
        o.hand();
        o.written(1);
        o.written(2);
        let _ = o.acknowledged(1);
        // "c" and "d" were handed but not written when the connection
        // dropped; the broker comes back without the session.
        o.connected(false);
        assert_eq!(topics(&o.hand()), ["b", "c", "d"]);
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn a_resumed_session_keeps_packet_ids_and_ignores_rumqttcs_retransmissions() {
        let (mut o, confirmed) = outbox_with(&["a", "b"]);
        o.hand();
        o.written(1);
        o.connected(true);
        assert!(o.hand().is_empty(), "rumqttc sends them again itself");
        o.written(1); // "a" again, same id
        o.written(2); // "b", first time
        o.acknowledged(2).unwrap().confirm();
        o.acknowledged(1).unwrap().confirm();
        assert_eq!(*confirmed.lock().unwrap(), ["b", "a"]);
    }

    #[test]
    fn a_publish_held_back_for_its_packet_id_is_matched_when_written() {
        let (mut o, confirmed) = outbox_with(&["a", "b", "c"]);
        o.hand();
        o.written(1);
        o.held_back(1); // "b" waits for id 1
        o.written(2); // "c" goes first
        let _ = o.acknowledged(1); // "a"
        o.written(1); // now "b"
        o.acknowledged(1).unwrap().confirm();
        o.acknowledged(2).unwrap().confirm();
        assert_eq!(*confirmed.lock().unwrap(), ["b", "c"]);
    }

    #[test]
    fn the_window_bounds_what_is_handed_and_taken() {
        let mut o = Outbox::default();
        for i in 0..WINDOW + 5 {
            o.push(Publication {
                out: out(&i.to_string()),
                receipt: None,
            });
        }
        assert!(!o.has_room());
        assert_eq!(o.hand().len(), WINDOW);
        o.written(1);
        let _ = o.acknowledged(1);
        assert_eq!(o.hand().len(), 1);
    }

    #[test]
    fn retained_topics_go_first_on_a_new_connection() {
        let (mut o, _) = outbox_with(&["result"]);
        o.push_first(out("vapid"));
        assert_eq!(topics(&o.hand()), ["vapid", "result"]);
    }

    #[test]
    fn what_rumqttc_could_not_take_is_handed_again_in_order() {
        let (mut o, _) = outbox_with(&["a", "b", "c"]);
        assert_eq!(topics(&o.hand()), ["a", "b", "c"]);
        o.give_back(2);
        o.written(1);
        assert_eq!(topics(&o.hand()), ["b", "c"]);
    }
}

//! Acknowledging commands in the order they arrived, once they are handled.
//!
//! MQTT 3.1.1 §4.6 wants PUBACKs in arrival order, and rumqttd disconnects
//! a client that acks out of order. A command counts as handled when what
//! answers it is safe — on an external broker, when the broker acknowledges
//! the command's answer (its result report; a group send's events, one
//! message per member, confirm together through `Receipt::split`). Those
//! acknowledgements come back in the order the broker answers different
//! messages of different sizes, not in the commands' order, even though
//! commands are applied in order, in batches (`Processor::handle_many`):
//! so a handled command only releases its ack when every command before it
//! has been handled too. (Re-checked after batching: still needed.)

use std::collections::VecDeque;

use rumqttc::{AsyncClient, Publish};
use tokio::sync::mpsc;

/// A message for the acker.
#[derive(Debug)]
pub(super) enum AckEvent {
    /// A QoS ≥ 1 message arrived as number `seq` on the current connection.
    Track(u64, Publish),
    /// Message `seq` is handled.
    Done(u64),
    /// A new connection: acks owed to the old one cannot be sent any more;
    /// the broker redelivers those messages.
    Reset,
    /// Answered once every event sent before it has been applied.
    Flush(tokio::sync::oneshot::Sender<()>),
}

#[derive(Default)]
pub(super) struct AckQueue {
    /// Tracked messages in arrival order, with whether they are handled.
    waiting: VecDeque<(u64, Publish, bool)>,
}

impl AckQueue {
    /// Applies an event and returns the acks it releases, in order.
    pub(super) fn apply(&mut self, event: AckEvent) -> Vec<Publish> {
        match event {
            AckEvent::Track(seq, publish) => {
                self.waiting.push_back((seq, publish, false));
                Vec::new()
            }
            AckEvent::Done(seq) => {
                // Unknown seqs are QoS 0 messages or ones from a previous
                // connection.
                if let Some(entry) = self.waiting.iter_mut().find(|(s, _, _)| *s == seq) {
                    entry.2 = true;
                }
                let mut ready = Vec::new();
                while self.waiting.front().is_some_and(|(_, _, done)| *done) {
                    let (_, publish, _) = self.waiting.pop_front().expect("front exists");
                    ready.push(publish);
                }
                ready
            }
            AckEvent::Reset => {
                self.waiting.clear();
                Vec::new()
            }
            AckEvent::Flush(reply) => {
                let _ = reply.send(());
                Vec::new()
            }
        }
    }
}

/// Runs until every sender of `events` is gone.
pub(super) async fn run(client: AsyncClient, mut events: mpsc::UnboundedReceiver<AckEvent>) {
    let mut queue = AckQueue::default();
    while let Some(event) = events.recv().await {
        for publish in queue.apply(event) {
            if client.ack(&publish).await.is_err() {
                // The event loop is gone: the daemon is stopping.
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rumqttc::QoS;

    fn publish(pkid: u16) -> Publish {
        let mut p = Publish::new("t", QoS::AtLeastOnce, Bytes::new());
        p.pkid = pkid;
        p
    }

    fn pkids(acks: Vec<Publish>) -> Vec<u16> {
        acks.into_iter().map(|p| p.pkid).collect()
    }

    #[test]
    fn acks_are_released_in_arrival_order() {
        let mut q = AckQueue::default();
        for seq in 1..=3 {
            q.apply(AckEvent::Track(seq, publish(seq as u16)));
        }
        assert!(q.apply(AckEvent::Done(2)).is_empty(), "2 waits for 1");
        assert!(q.apply(AckEvent::Done(3)).is_empty(), "3 waits for 1");
        assert_eq!(pkids(q.apply(AckEvent::Done(1))), [1, 2, 3]);
    }

    #[test]
    fn a_reconnect_forgets_acks_owed_to_the_old_connection() {
        let mut q = AckQueue::default();
        q.apply(AckEvent::Track(1, publish(1)));
        q.apply(AckEvent::Reset);
        assert!(q.apply(AckEvent::Done(1)).is_empty());
        q.apply(AckEvent::Track(2, publish(1)));
        assert_eq!(pkids(q.apply(AckEvent::Done(2))), [1]);
    }

    #[test]
    fn untracked_messages_release_nothing() {
        let mut q = AckQueue::default();
        assert!(q.apply(AckEvent::Done(7)).is_empty());
    }
}

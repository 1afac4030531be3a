//! Redeliveries: events whose lease ended without an ack (nacked, expired, or
//! given back when their member left), waiting until they are due again, and
//! the retry policy that says when that is and when to give up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use tokio::time::Instant;

use super::{Key, Origin};
use crate::types::{Offset, PartitionId, StoredEvent};

/// An event queued for redelivery.
pub(super) struct Waiting {
    pub event: Arc<StoredEvent>,
    pub first_delivery_ms: u64,
    pub origin: Origin,
    /// Generation of the lease it came from, when that lease was given back
    /// because its member left (not expired, not nacked). Until the event goes
    /// to someone else, that ack id may still ack it: nobody else holds it, and
    /// it lets a consumer whose stream just dropped settle what it processed.
    pub released: Option<u64>,
}

#[derive(Default)]
pub(super) struct Retries {
    /// (due, seq, partition, offset); seq keeps events due at the same time in
    /// the order they were queued. An entry whose event left `waiting` by
    /// another way (settled, or dropped by a seek) is skipped when it comes due.
    due: BinaryHeap<Reverse<(Instant, u64, PartitionId, Offset)>>,
    seq: u64,
    /// The events in `due`, keyed for lookup.
    waiting: HashMap<Key, Waiting>,
}

impl Retries {
    /// Queues `waiting` (the event of `key`) for redelivery at `due`.
    pub fn schedule(&mut self, key: Key, due: Instant, waiting: Waiting) {
        self.seq += 1;
        self.due.push(Reverse((due, self.seq, key.0, key.1)));
        self.waiting.insert(key, waiting);
    }

    /// Takes the earliest heap entry if it is due by `now`, and its event if that
    /// is still waiting. One entry per call: a stale entry yields `None`, and
    /// the caller moves on to other events.
    pub fn pop_due(&mut self, now: Instant) -> Option<Waiting> {
        let Reverse((due, _, p, o)) = self.due.peek().copied()?;
        if due > now {
            return None;
        }
        self.due.pop();
        self.waiting.remove(&(p, o))
    }

    /// When the earliest entry comes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse(r)| r.0)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.waiting.contains_key(key)
    }

    /// Whether `key` waits after its member left while holding it under the
    /// lease `generation` (whose ack id may still settle it).
    pub fn released_from(&self, key: &Key, generation: u64) -> bool {
        self.waiting
            .get(key)
            .is_some_and(|w| w.released == Some(generation))
    }

    /// Takes the event of `key` out of the queue (it was settled meanwhile).
    pub fn take(&mut self, key: &Key) -> Option<Waiting> {
        self.waiting.remove(key)
    }

    /// Keeps only the waiting events for which `keep` holds.
    pub fn retain(&mut self, keep: impl FnMut(&Key, &mut Waiting) -> bool) {
        self.waiting.retain(keep);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Waiting)> {
        self.waiting.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_event;
    use super::*;
    use std::time::Duration;

    fn waiting(offset: Offset, released: Option<u64>) -> Waiting {
        Waiting {
            event: Arc::new(test_event(0, offset, "", 1)),
            first_delivery_ms: 5,
            origin: Origin::Log,
            released,
        }
    }

    fn drain_due(r: &mut Retries, now: Instant) -> Vec<Offset> {
        std::iter::from_fn(|| r.pop_due(now).map(|w| w.event.offset)).collect()
    }

    #[test]
    fn events_come_back_when_due_in_due_order_then_queue_order() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Retries::default();
        r.schedule((0, 1), t0 + 2 * s, waiting(1, None));
        r.schedule((0, 2), t0 + s, waiting(2, None));
        r.schedule((0, 3), t0 + s, waiting(3, None));
        assert_eq!(r.next_due(), Some(t0 + s));
        assert!(r.pop_due(t0).is_none(), "nothing is due yet");
        assert_eq!(drain_due(&mut r, t0 + s), [2, 3]);
        assert!(r.contains(&(0, 1)));
        assert_eq!(drain_due(&mut r, t0 + 2 * s), [1]);
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn an_event_taken_out_leaves_a_stale_entry_that_yields_nothing() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        r.schedule((0, 1), t0, waiting(1, None));
        r.schedule((0, 2), t0, waiting(2, None));
        assert_eq!(r.take(&(0, 1)).map(|w| w.event.offset), Some(1));
        // The stale entry is consumed on its own, then the next one comes.
        assert!(r.pop_due(t0).is_none());
        assert_eq!(r.pop_due(t0).map(|w| w.event.offset), Some(2));
    }

    #[test]
    fn only_the_released_generation_may_settle_a_waiting_event() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        r.schedule((0, 1), t0, waiting(1, Some(42)));
        r.schedule((0, 2), t0, waiting(2, None));
        assert!(r.released_from(&(0, 1), 42));
        assert!(!r.released_from(&(0, 1), 41));
        assert!(
            !r.released_from(&(0, 2), 42),
            "a nacked event is not released"
        );
        assert!(!r.released_from(&(0, 3), 42));
    }

    #[test]
    fn retain_drops_events_and_their_entries_go_stale() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        for o in 0..4 {
            r.schedule((o as PartitionId % 2, o), t0, waiting(o, None));
        }
        r.retain(|k, _| k.0 != 1);
        assert_eq!(r.iter().count(), 2);
        let mut back: Vec<_> = std::iter::from_fn(|| r.next_due().map(|_| r.pop_due(t0)))
            .flatten()
            .map(|w| w.event.offset)
            .collect();
        back.sort_unstable();
        assert_eq!(back, [0, 2]);
    }
}

//! The members of a subscription (its Subscribe streams), their credit, and
//! the fair turn among them: events go round-robin to the members that can
//! take one, in join order.

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::{Delivery, MemberItem};
use crate::error::Error;
use crate::types::StoredEvent;

struct Member {
    tx: mpsc::Sender<MemberItem>,
    max_in_flight: u32,
    in_flight: u32,
    /// [`StoredEvent::size_bytes`] of the leases it holds, and its bound
    /// (`Options::max_in_flight_bytes`).
    in_flight_bytes: usize,
    max_in_flight_bytes: usize,
}

impl Member {
    /// Has credit in events and in bytes (the event that crosses the byte bound
    /// still goes, so an event bigger than the bound is delivered alone), and
    /// room in its channel for one more batch. A member
    /// that stopped reading gets nothing more (leases that expire under it do
    /// not make it eligible again until it drains its channel), so the actor
    /// never leases events it cannot hand over.
    ///
    /// One slot always stays free for the final status ([`Members::close_all`]),
    /// so a member learns why its stream ended even when it was not reading.
    fn can_take(&self) -> bool {
        self.in_flight < self.max_in_flight
            && self.in_flight_bytes < self.max_in_flight_bytes
            && self.tx.capacity() > 1
    }
}

/// What became of a batch offered to a member.
pub(super) enum Handed {
    /// In the member's channel.
    Sent,
    /// No such member (any more); the batch was not offered.
    NoMember,
    /// The member's channel refused it: `gone` when the stream was dropped,
    /// otherwise it was full. The batch comes back.
    Refused { batch: Vec<Delivery>, gone: bool },
}

pub(super) struct Members {
    by_id: HashMap<u64, Member>,
    /// Member ids in join order, for round-robin dispatch.
    order: Vec<u64>,
    /// Where the next round-robin turn starts in `order`.
    turn: usize,
    next_id: u64,
    /// The byte bound of each member's leases (`Options::max_in_flight_bytes`).
    max_in_flight_bytes: usize,
}

impl Members {
    pub fn new(max_in_flight_bytes: usize) -> Self {
        Members {
            by_id: HashMap::new(),
            order: Vec::new(),
            turn: 0,
            next_id: 1,
            max_in_flight_bytes,
        }
    }

    /// A fresh member id (also for a join that is turned away at once).
    pub fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds member `id` (from [`Members::new_id`]), which may hold
    /// `max_in_flight` leases, last in turn.
    pub fn add(&mut self, id: u64, tx: mpsc::Sender<MemberItem>, max_in_flight: u32) {
        self.by_id.insert(
            id,
            Member {
                tx,
                max_in_flight,
                in_flight: 0,
                in_flight_bytes: 0,
                max_in_flight_bytes: self.max_in_flight_bytes,
            },
        );
        self.order.push(id);
    }

    /// Removes a member; false when it was not there. Its leases are the
    /// caller's to give back.
    pub fn remove(&mut self, id: u64) -> bool {
        if self.by_id.remove(&id).is_none() {
            return false;
        }
        self.order.retain(|m| *m != id);
        true
    }

    /// The next member, in turn, that can take an event; the turn moves past it.
    pub fn next_with_credit(&mut self) -> Option<u64> {
        let n = self.order.len();
        for i in 0..n {
            let idx = (self.turn + i) % n;
            let id = self.order[idx];
            if self.by_id[&id].can_take() {
                self.turn = (idx + 1) % n;
                return Some(id);
            }
        }
        None
    }

    /// Whether any member could take an event now.
    pub fn has_credit(&self) -> bool {
        self.by_id.values().any(Member::can_take)
    }

    /// Member `id` leased `event`: it uses credit until [`Members::release`].
    pub fn hold(&mut self, id: u64, event: &StoredEvent) {
        if let Some(m) = self.by_id.get_mut(&id) {
            m.in_flight += 1;
            m.in_flight_bytes += event.size_bytes();
        }
    }

    /// A lease of member `id` ended: its credit comes back.
    pub fn release(&mut self, id: u64, event: &StoredEvent) {
        if let Some(m) = self.by_id.get_mut(&id) {
            m.in_flight = m.in_flight.saturating_sub(1);
            m.in_flight_bytes = m.in_flight_bytes.saturating_sub(event.size_bytes());
        }
    }

    /// Puts `batch` into member `id`'s channel without waiting.
    pub fn hand(&self, id: u64, batch: Vec<Delivery>) -> Handed {
        let Some(m) = self.by_id.get(&id) else {
            return Handed::NoMember;
        };
        match m.tx.try_send(Ok(batch)) {
            Ok(()) => Handed::Sent,
            Err(e) => {
                let gone = matches!(e, mpsc::error::TrySendError::Closed(_));
                let batch = match e {
                    mpsc::error::TrySendError::Closed(Ok(b))
                    | mpsc::error::TrySendError::Full(Ok(b)) => b,
                    _ => Vec::new(),
                };
                Handed::Refused { batch, gone }
            }
        }
    }

    /// Tells member `id`, if it is there, why its stream ends (the slot kept
    /// free in its channel takes it).
    pub fn notify(&self, id: u64, err: Error) {
        if let Some(m) = self.by_id.get(&id) {
            let _ = m.tx.try_send(Err(err));
        }
    }

    /// Empties the turn order and returns it, so the caller can end each member.
    pub fn take_order(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.order)
    }

    /// Ends every member's stream with `err()`.
    pub fn close_all(&mut self, err: impl Fn() -> Error) {
        for (_, m) in self.by_id.drain() {
            let _ = m.tx.try_send(Err(err()));
        }
        self.order.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_event;
    use super::*;
    use crate::delivery::ack_id::AckId;
    use crate::types::SubscriptionId;

    fn join(m: &mut Members, max_in_flight: u32) -> (u64, mpsc::Receiver<MemberItem>) {
        let (tx, rx) = mpsc::channel(max_in_flight as usize + 2);
        let id = m.new_id();
        m.add(id, tx, max_in_flight);
        (id, rx)
    }

    fn delivery(offset: u64) -> Delivery {
        Delivery {
            event: Arc::new(test_event(0, offset, "", 1)),
            ack_id: AckId {
                subscription: SubscriptionId(1),
                partition: 0,
                offset,
                generation: 1,
            },
            attempt: 1,
        }
    }

    #[test]
    fn turns_go_round_robin_in_join_order() {
        let mut m = Members::new(1 << 20);
        let (a, _ra) = join(&mut m, 10);
        let (b, _rb) = join(&mut m, 10);
        let (c, _rc) = join(&mut m, 10);
        let turns: Vec<_> = (0..7).map(|_| m.next_with_credit().unwrap()).collect();
        assert_eq!(turns, [a, b, c, a, b, c, a]);
        assert!(m.remove(b));
        assert!(!m.remove(b), "removing twice reports false");
        let turns: Vec<_> = (0..4).map(|_| m.next_with_credit().unwrap()).collect();
        assert_eq!(turns.iter().filter(|t| **t == a).count(), 2);
        assert_eq!(turns.iter().filter(|t| **t == c).count(), 2);
    }

    #[test]
    fn a_member_without_credit_is_skipped_until_a_lease_ends() {
        let mut m = Members::new(1 << 20);
        let (a, _ra) = join(&mut m, 1);
        let (b, _rb) = join(&mut m, 2);
        let ev = test_event(0, 0, "", 10);
        m.hold(a, &ev);
        assert_eq!(m.next_with_credit(), Some(b));
        m.hold(b, &ev);
        m.hold(b, &ev);
        assert_eq!(m.next_with_credit(), None);
        assert!(!m.has_credit());
        m.release(a, &ev);
        assert!(m.has_credit());
        assert_eq!(m.next_with_credit(), Some(a));
    }

    #[test]
    fn the_byte_bound_stops_a_member_after_the_event_that_crosses_it() {
        let mut m = Members::new(100);
        let (a, _ra) = join(&mut m, 10);
        m.hold(a, &test_event(0, 0, "", 60));
        assert_eq!(m.next_with_credit(), Some(a), "60 of 100 bytes");
        m.hold(a, &test_event(0, 1, "", 60));
        assert_eq!(m.next_with_credit(), None, "120 bytes: over the bound");
        m.release(a, &test_event(0, 0, "", 60));
        assert_eq!(m.next_with_credit(), Some(a));
    }

    #[test]
    fn a_member_that_stops_reading_gets_nothing_and_keeps_a_slot_for_the_end() {
        let mut m = Members::new(1 << 20);
        let (a, mut rx) = join(&mut m, 1);
        // Capacity 3: two batches fill it up to the slot kept for the status.
        assert!(matches!(m.hand(a, vec![delivery(0)]), Handed::Sent));
        assert!(matches!(m.hand(a, vec![delivery(1)]), Handed::Sent));
        assert_eq!(m.next_with_credit(), None, "only the final slot is left");
        m.notify(a, Error::ShuttingDown);
        assert!(matches!(m.hand(a, vec![delivery(2)]),
            Handed::Refused { ref batch, gone: false } if batch.len() == 1));
        let mut last = None;
        while let Ok(item) = rx.try_recv() {
            last = Some(item);
        }
        assert!(matches!(last, Some(Err(Error::ShuttingDown))));
    }

    #[test]
    fn a_dropped_stream_refuses_its_batch_as_gone() {
        let mut m = Members::new(1 << 20);
        let (a, rx) = join(&mut m, 4);
        drop(rx);
        assert!(matches!(
            m.hand(a, vec![delivery(0), delivery(1)]),
            Handed::Refused { ref batch, gone: true } if batch.len() == 2
        ));
        assert!(matches!(m.hand(99, vec![delivery(0)]), Handed::NoMember));
    }

    #[test]
    fn close_all_tells_every_member_and_empties_the_set() {
        let mut m = Members::new(1 << 20);
        let (_a, mut ra) = join(&mut m, 1);
        let (_b, mut rb) = join(&mut m, 1);
        m.close_all(|| Error::ShuttingDown);
        assert!(m.is_empty());
        assert_eq!(m.next_with_credit(), None);
        for rx in [&mut ra, &mut rb] {
            assert!(matches!(rx.try_recv(), Ok(Err(Error::ShuttingDown))));
        }
    }
}

//! The lease table of a subscription: which member holds which event, under
//! which generation, until when, and the heap that says which lease runs out
//! next.
//!
//! The deadlines are lazy: settling or extending a lease leaves its old entry
//! behind, and an entry counts only while it still matches its lease's
//! generation and deadline. When old entries outnumber the live leases the
//! deadlines are refilled from the live leases, so their size follows the
//! leases in flight, not the throughput.
//!
//! Grants all take the same ack deadline from a monotonic clock, so their
//! deadlines arrive sorted: they go in a queue (O(1) each; the heap's pushes
//! were ~2 % of a consume run's CPU). Only a deadline that would break the
//! queue's order (an extension, or grants after the ack deadline shrank)
//! goes in a heap beside it; the next deadline is the earlier of the two
//! fronts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Key, Origin};
use crate::types::{Offset, PartitionId, StoredEvent};

/// One event handed to a member and not settled yet.
pub(super) struct Lease {
    pub member: u64,
    /// Names this lease in its ack id; a newer lease of the same event has a
    /// higher one, so an old ack id cannot settle it.
    pub generation: u64,
    pub deadline: Instant,
    pub event: Arc<StoredEvent>,
    pub first_delivery_ms: u64,
    pub delivered_ms: u64,
    pub origin: Origin,
}

/// A deadline entry: (deadline, partition, offset, generation).
type DeadlineEntry = (Instant, PartitionId, Offset, u64);

pub(super) struct Leases {
    live: HashMap<Key, Lease>,
    /// Every deadline ever set; stale entries are skipped when they come due.
    deadlines: Deadlines,
    /// The generation of the last lease granted.
    generation: u64,
    ack_deadline: Duration,
}

impl Leases {
    /// `first_generation`: lease generations continue from here, so ack ids of
    /// another run of the server (another range) never match.
    pub fn new(first_generation: u64, ack_deadline: Duration) -> Self {
        Leases {
            live: HashMap::new(),
            deadlines: Deadlines::default(),
            generation: first_generation,
            ack_deadline,
        }
    }

    /// The lease time of grants from now on; leases already granted keep theirs.
    pub fn set_ack_deadline(&mut self, ack_deadline: Duration) {
        self.ack_deadline = ack_deadline;
    }

    /// Leases `event` to `member` until now + the ack deadline and returns the
    /// lease's generation.
    pub fn grant(
        &mut self,
        member: u64,
        event: Arc<StoredEvent>,
        first_delivery_ms: u64,
        delivered_ms: u64,
        origin: Origin,
        now: Instant,
    ) -> u64 {
        self.generation += 1;
        let deadline = now + self.ack_deadline;
        let key = (event.partition, event.offset);
        // The lease goes in before its heap entry: the push may rebuild the
        // heap from the live leases, and the new one must be among them.
        self.live.insert(
            key,
            Lease {
                member,
                generation: self.generation,
                deadline,
                event,
                first_delivery_ms,
                delivered_ms,
                origin,
            },
        );
        self.push_deadline((deadline, key.0, key.1, self.generation));
        self.generation
    }

    pub fn get(&self, key: &Key) -> Option<&Lease> {
        self.live.get(key)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.live.contains_key(key)
    }

    /// Whether `key` is leased under `generation` (an ack id's lease is live).
    pub fn is_live(&self, key: &Key, generation: u64) -> bool {
        self.live
            .get(key)
            .is_some_and(|l| l.generation == generation)
    }

    /// Ends the lease of `key`, if any.
    pub fn take(&mut self, key: &Key) -> Option<Lease> {
        self.live.remove(key)
    }

    /// Records where a leased event's attempts now stand.
    pub fn set_origin(&mut self, key: &Key, origin: Origin) {
        if let Some(lease) = self.live.get_mut(key) {
            lease.origin = origin;
        }
    }

    /// Moves the deadline of a live lease to `deadline`.
    pub fn extend(&mut self, key: &Key, deadline: Instant) {
        let Some(lease) = self.live.get_mut(key) else {
            return;
        };
        lease.deadline = deadline;
        let entry = (lease.deadline, key.0, key.1, lease.generation);
        self.push_deadline(entry);
    }

    /// The next lease whose deadline passed by `now`, dropping the stale heap
    /// entries on the way. The lease stays until the caller ends it.
    pub fn next_expired(&mut self, now: Instant) -> Option<Key> {
        while let Some((deadline, p, o, generation)) = self.deadlines.first() {
            if deadline > now {
                return None;
            }
            self.deadlines.pop_first();
            let current = self
                .live
                .get(&(p, o))
                .is_some_and(|l| l.generation == generation && l.deadline == deadline);
            if current {
                return Some((p, o));
            }
        }
        None
    }

    /// When to look for expired leases next (possibly a stale entry's time:
    /// waking early costs one look).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|d| d.0)
    }

    /// The events `member` holds.
    pub fn held_by(&self, member: u64) -> Vec<Key> {
        self.keys_where(|_, l| l.member == member)
    }

    /// The leased events for which `pred` holds.
    pub fn keys_where(&self, mut pred: impl FnMut(&Key, &Lease) -> bool) -> Vec<Key> {
        self.live
            .iter()
            .filter(|(k, l)| pred(k, l))
            .map(|(k, _)| *k)
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Lease)> {
        self.live.iter()
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Adds a deadline entry, and refills the deadlines from the live leases
    /// when stale entries outnumber them.
    fn push_deadline(&mut self, entry: DeadlineEntry) {
        self.deadlines.push(entry);
        if self.deadlines.len() > 2 * self.live.len() + 1024 {
            let live = self.live.iter();
            self.deadlines
                .refill(live.map(|(&(p, o), l)| (l.deadline, p, o, l.generation)));
        }
    }
}

/// Deadline entries, earliest first: a queue of those that arrived in order
/// and a heap of the others (module doc).
#[derive(Default)]
struct Deadlines {
    in_order: VecDeque<DeadlineEntry>,
    out_of_order: BinaryHeap<Reverse<DeadlineEntry>>,
}

impl Deadlines {
    /// The queue is kept in deadline order only: grants of one dispatch
    /// round share a deadline and go round-robin across partitions, so
    /// comparing whole entries would send most of them to the heap.
    fn push(&mut self, entry: DeadlineEntry) {
        match self.in_order.back() {
            Some(last) if last.0 > entry.0 => self.out_of_order.push(Reverse(entry)),
            _ => self.in_order.push_back(entry),
        }
    }

    /// The earliest entry.
    fn first(&self) -> Option<DeadlineEntry> {
        match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(&a), Some(&Reverse(b))) => Some(a.min(b)),
            (a, b) => a.copied().or(b.map(|r| r.0)),
        }
    }

    /// Removes the earliest entry.
    fn pop_first(&mut self) {
        let from_queue = match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(a), Some(Reverse(b))) => a <= b,
            (a, _) => a.is_some(),
        };
        if from_queue {
            self.in_order.pop_front();
        } else {
            self.out_of_order.pop();
        }
    }

    fn len(&self) -> usize {
        self.in_order.len() + self.out_of_order.len()
    }

    /// Replaces every entry with `live`'s. Reuses the queue's allocation:
    /// growing a new one after each rebuild (every ~1 000 grants) cost ~1 %
    /// of a consume run's CPU in page faults.
    fn refill(&mut self, live: impl Iterator<Item = DeadlineEntry>) {
        self.in_order.clear();
        self.in_order.extend(live);
        self.in_order.make_contiguous().sort_unstable();
        self.out_of_order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_event;
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn grant(leases: &mut Leases, member: u64, offset: Offset, now: Instant) -> u64 {
        let ev = Arc::new(test_event(0, offset, "", 1));
        leases.grant(member, ev, 1, 1, Origin::Log, now)
    }

    #[test]
    fn a_lease_expires_at_its_deadline_and_not_before() {
        let t0 = Instant::now();
        let mut leases = Leases::new(100, DEADLINE);
        let generation = grant(&mut leases, 7, 3, t0);
        assert_eq!(generation, 101);
        assert!(leases.is_live(&(0, 3), 101));
        assert!(!leases.is_live(&(0, 3), 100), "another generation is stale");
        assert_eq!(leases.next_deadline(), Some(t0 + DEADLINE));
        assert_eq!(leases.next_expired(t0 + DEADLINE / 2), None);
        assert_eq!(leases.next_expired(t0 + DEADLINE), Some((0, 3)));
        // Expiry reports; the caller ends the lease.
        assert!(leases.take(&(0, 3)).is_some());
        assert_eq!(leases.next_expired(t0 + 2 * DEADLINE), None);
    }

    #[test]
    fn expiries_come_in_deadline_order() {
        let t0 = Instant::now();
        let mut leases = Leases::new(0, DEADLINE);
        grant(&mut leases, 1, 5, t0 + Duration::from_secs(2));
        grant(&mut leases, 1, 6, t0);
        grant(&mut leases, 2, 7, t0 + Duration::from_secs(1));
        let late = t0 + 3 * DEADLINE;
        let mut order = Vec::new();
        while let Some(key) = leases.next_expired(late) {
            leases.take(&key);
            order.push(key.1);
        }
        assert_eq!(order, [6, 7, 5]);
    }

    #[test]
    fn an_extended_lease_expires_at_its_new_deadline_only() {
        let t0 = Instant::now();
        let mut leases = Leases::new(0, DEADLINE);
        grant(&mut leases, 1, 0, t0);
        leases.extend(&(0, 0), t0 + 3 * DEADLINE);
        assert_eq!(
            leases.next_expired(t0 + 2 * DEADLINE),
            None,
            "old entry is stale"
        );
        assert_eq!(leases.next_expired(t0 + 3 * DEADLINE), Some((0, 0)));
        // Extending to earlier works too: the new entry comes due first.
        leases.extend(&(0, 0), t0 + Duration::from_secs(1));
        assert_eq!(
            leases.get(&(0, 0)).unwrap().deadline,
            t0 + Duration::from_secs(1)
        );
        assert_eq!(
            leases.next_expired(t0 + Duration::from_secs(1)),
            Some((0, 0))
        );
    }

    #[test]
    fn a_settled_lease_never_expires_even_when_regranted() {
        let t0 = Instant::now();
        let mut leases = Leases::new(0, DEADLINE);
        let first = grant(&mut leases, 1, 0, t0);
        leases.take(&(0, 0));
        // The same event again, later: the first lease's entry must not end it.
        let second = grant(&mut leases, 2, 0, t0 + DEADLINE / 2);
        assert!(second > first);
        assert_eq!(leases.next_expired(t0 + DEADLINE), None);
        assert_eq!(leases.next_expired(t0 + DEADLINE * 3 / 2), Some((0, 0)));
        assert_eq!(leases.get(&(0, 0)).unwrap().member, 2);
    }

    #[test]
    fn held_by_names_a_members_leases() {
        let t0 = Instant::now();
        let mut leases = Leases::new(0, DEADLINE);
        for o in 0..6 {
            grant(&mut leases, o % 2, o, t0);
        }
        let mut held = leases.held_by(1);
        held.sort_unstable();
        assert_eq!(held, [(0, 1), (0, 3), (0, 5)]);
        assert_eq!(leases.len(), 6);
    }

    #[test]
    fn the_heap_stays_bounded_by_the_live_leases() {
        let t0 = Instant::now();
        let mut leases = Leases::new(0, DEADLINE);
        for o in 0..10_000 {
            grant(&mut leases, 1, o, t0);
            leases.take(&(0, o));
        }
        assert!(leases.deadlines.len() <= 1027, "{}", leases.deadlines.len());
    }

    /// A refill keeps the live entries of both the queue and the heap (an
    /// extension's entry goes in the heap).
    #[test]
    fn a_refill_keeps_extended_leases() {
        let t0 = Instant::now();
        let mut leases = Leases::new(0, DEADLINE);
        grant(&mut leases, 1, 1 << 20, t0);
        let extended = t0 + 3 * DEADLINE;
        leases.extend(&(0, 1 << 20), extended);
        for o in 0..3000 {
            grant(&mut leases, 1, o, t0);
            leases.take(&(0, o));
        }
        assert!(leases.deadlines.len() <= 1027, "{}", leases.deadlines.len());
        assert_eq!(leases.next_expired(t0 + 2 * DEADLINE), None);
        assert_eq!(leases.next_expired(extended), Some((0, 1 << 20)));
    }

    /// The grant whose entry makes the deadlines refill must keep its own
    /// (an earlier rebuild from the live leases left it out, so that lease
    /// never expired).
    #[test]
    fn a_lease_granted_as_the_heap_is_rebuilt_still_expires() {
        let t0 = Instant::now();
        for settled in [1023, 1024, 1025, 1026, 2000, 3000] {
            let mut leases = Leases::new(0, DEADLINE);
            for o in 0..settled {
                grant(&mut leases, 1, o, t0);
                leases.take(&(0, o));
            }
            grant(&mut leases, 1, 1 << 20, t0);
            let expired = leases.next_expired(t0 + DEADLINE);
            assert_eq!(expired, Some((0, 1 << 20)), "after {settled} settled");
        }
    }

    /// One dispatch round grants round-robin across partitions at one
    /// deadline: all of it goes in the queue, none in the heap.
    #[test]
    fn grants_of_one_round_across_partitions_stay_in_the_queue() {
        let t0 = Instant::now();
        let mut leases = Leases::new(0, DEADLINE);
        for round in 0..3u64 {
            let now = t0 + Duration::from_millis(round);
            for p in [3, 0, 2, 1] {
                let ev = Arc::new(test_event(p, 100 - round, "", 1));
                leases.grant(1, ev, 1, 1, Origin::Log, now);
            }
        }
        assert_eq!(leases.deadlines.in_order.len(), 12);
        assert!(leases.deadlines.out_of_order.is_empty());
    }

    proptest::proptest! {
        /// Whatever order deadlines arrive in (grants at any time, a changed
        /// ack deadline, extensions, settles), the live leases expire exactly
        /// once each, earliest deadline first.
        #[test]
        fn live_leases_expire_in_deadline_order(
            ops in proptest::collection::vec((0u8..4, 0u64..64, 0u64..30), 1..400)
        ) {
            let t0 = Instant::now();
            let mut leases = Leases::new(0, DEADLINE);
            for (op, offset, secs) in ops {
                let at = t0 + Duration::from_secs(secs);
                match op {
                    0 => { grant(&mut leases, 1, offset, at); }
                    1 => leases.set_ack_deadline(Duration::from_secs(1 + secs)),
                    2 => leases.extend(&(0, offset), at),
                    _ => { leases.take(&(0, offset)); }
                }
            }
            let mut expected: Vec<(Instant, Offset)> =
                leases.iter().map(|(k, l)| (l.deadline, k.1)).collect();
            expected.sort();
            let mut expired = Vec::new();
            while let Some(key) = leases.next_expired(t0 + Duration::from_secs(1000)) {
                let lease = leases.take(&key).unwrap();
                expired.push((lease.deadline, key.1));
            }
            let deadlines: Vec<Instant> = expired.iter().map(|e| e.0).collect();
            proptest::prop_assert!(deadlines.windows(2).all(|w| w[0] <= w[1]));
            expired.sort();
            proptest::prop_assert_eq!(expired, expected);
        }
    }
}

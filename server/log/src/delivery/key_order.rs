//! KEY ordering: at most one event per key in flight, and a key's events in
//! offset order.
//!
//! A key is *busy* while one of its events is leased, waiting for redelivery,
//! or next in line in `unblocked`. A later event of a busy key waits in
//! `blocked` behind it; when the busy one is settled, the next blocked one moves
//! to `unblocked` and the key stays busy, so nothing overtakes it. Other keys
//! pass. Events without a key are never held back.
//!
//! The held events are read ahead from the log and not yet handed out, so they
//! count toward the read-ahead bound; [`KeyOrder::held`] says how much they weigh.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::Footprint;
use crate::types::{PartitionId, StoredEvent};

#[derive(Default)]
pub(super) struct KeyOrder {
    /// The subscription's ordering is KEY; otherwise nothing is held back.
    enabled: bool,
    busy: HashSet<String>,
    /// Events held back behind their busy key, in offset order.
    blocked: HashMap<String, VecDeque<Arc<StoredEvent>>>,
    /// The next event of a key whose previous one was settled.
    unblocked: VecDeque<Arc<StoredEvent>>,
    /// What `blocked` and `unblocked` hold.
    held: Footprint,
}

impl KeyOrder {
    pub fn new(enabled: bool) -> Self {
        KeyOrder {
            enabled,
            ..Default::default()
        }
    }

    /// Turns KEY ordering on or off. Off frees every key, and the events held
    /// back go out next, in no particular order.
    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
        if !enabled {
            self.busy.clear();
            for (_, q) in self.blocked.drain() {
                self.unblocked.extend(q);
            }
        }
    }

    /// Whether `event` must wait because another event of its key is out.
    pub fn must_wait(&self, event: &StoredEvent) -> bool {
        self.enabled && !event.key.is_empty() && self.busy.contains(&event.key)
    }

    /// An event of this key goes out: the key is busy until [`KeyOrder::release`].
    pub fn start(&mut self, event: &StoredEvent) {
        if self.enabled && !event.key.is_empty() {
            self.busy.insert(event.key.clone());
        }
    }

    /// Holds `event` back behind its busy key (see [`KeyOrder::must_wait`]).
    pub fn hold_back(&mut self, event: Arc<StoredEvent>) {
        self.held.add(&event);
        self.blocked
            .entry(event.key.clone())
            .or_default()
            .push_back(event);
    }

    /// The event of `key` was settled: its next event (if any) goes next, and
    /// until it goes out the key stays busy.
    pub fn release(&mut self, key: &str) {
        if key.is_empty() || !self.busy.contains(key) {
            return;
        }
        match self.blocked.get_mut(key).and_then(VecDeque::pop_front) {
            Some(next) => {
                if self.blocked.get(key).is_some_and(VecDeque::is_empty) {
                    self.blocked.remove(key);
                }
                self.unblocked.push_back(next);
            }
            None => {
                self.busy.remove(key);
            }
        }
    }

    /// The next event whose turn came, in the order its turn came.
    pub fn pop_unblocked(&mut self) -> Option<Arc<StoredEvent>> {
        let event = self.unblocked.pop_front()?;
        self.held.remove(&event);
        Some(event)
    }

    /// A seek repositioned partition `p`: its held events go, and the keys that
    /// `route` sends to it are free again, except `still_out` (keys of events
    /// that stay leased or queued for redelivery).
    pub fn reset_partition<'a>(
        &mut self,
        p: PartitionId,
        route: impl Fn(&str) -> PartitionId,
        still_out: impl Iterator<Item = &'a str>,
    ) {
        let held = &mut self.held;
        self.unblocked.retain(|e| {
            let gone = e.partition == p;
            if gone {
                held.remove(e);
            }
            !gone
        });
        self.blocked.retain(|_, q| {
            let gone = q.front().is_some_and(|e| e.partition == p);
            if gone {
                q.iter().for_each(|e| held.remove(e));
            }
            !gone
        });
        self.busy.retain(|k| route(k) != p);
        if self.enabled {
            let still_busy = still_out.filter(|k| !k.is_empty()).map(str::to_string);
            self.busy.extend(still_busy);
        }
    }

    /// The oldest held event of each key.
    pub fn oldest(&self) -> impl Iterator<Item = &Arc<StoredEvent>> {
        self.unblocked
            .iter()
            .chain(self.blocked.values().filter_map(VecDeque::front))
    }

    /// What the held events weigh.
    pub fn held(&self) -> Footprint {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_event;
    use super::*;

    fn ev(offset: u64, key: &str) -> Arc<StoredEvent> {
        Arc::new(test_event(0, offset, key, 10))
    }

    /// Hands `e` out the way the dispatcher does; false when it was held back.
    fn offer(k: &mut KeyOrder, e: Arc<StoredEvent>) -> bool {
        if k.must_wait(&e) {
            k.hold_back(e);
            return false;
        }
        k.start(&e);
        true
    }

    #[test]
    fn a_keys_next_event_waits_until_the_previous_one_is_settled() {
        let mut k = KeyOrder::new(true);
        assert!(offer(&mut k, ev(0, "a")));
        assert!(!offer(&mut k, ev(1, "a")), "a is busy");
        assert!(!offer(&mut k, ev(2, "a")));
        assert!(offer(&mut k, ev(3, "b")), "other keys pass");
        assert!(offer(&mut k, ev(4, "")), "no key, no order");
        assert!(offer(&mut k, ev(5, "")));
        assert_eq!(k.held().events, 2);
        assert_eq!(k.held().bytes, 22);
        assert!(k.pop_unblocked().is_none());

        k.release("a");
        let next = k.pop_unblocked().expect("offset 1 goes next");
        assert_eq!(next.offset, 1);
        assert!(
            k.must_wait(&ev(9, "a")),
            "the key stays busy for its next event"
        );
        k.start(&next);
        k.release("a");
        assert_eq!(k.pop_unblocked().map(|e| e.offset), Some(2));
        k.release("a");
        assert!(!k.must_wait(&ev(9, "a")), "nothing left: the key is free");
        assert_eq!(k.held(), Footprint::default());
    }

    #[test]
    fn release_of_a_free_or_empty_key_does_nothing() {
        let mut k = KeyOrder::new(true);
        k.release("");
        k.release("x");
        assert!(k.pop_unblocked().is_none());
        assert!(!k.must_wait(&ev(0, "x")));
    }

    #[test]
    fn disabled_ordering_holds_nothing_back() {
        let mut k = KeyOrder::new(false);
        assert!(offer(&mut k, ev(0, "a")));
        assert!(offer(&mut k, ev(1, "a")));
        assert!(k.pop_unblocked().is_none());
        assert_eq!(k.held(), Footprint::default());
    }

    #[test]
    fn turning_ordering_off_lets_the_held_events_go() {
        let mut k = KeyOrder::new(true);
        offer(&mut k, ev(0, "a"));
        offer(&mut k, ev(1, "a"));
        offer(&mut k, ev(2, "b"));
        offer(&mut k, ev(3, "b"));
        k.set_enabled(false);
        let mut out: Vec<_> = std::iter::from_fn(|| k.pop_unblocked().map(|e| e.offset)).collect();
        out.sort_unstable();
        assert_eq!(out, [1, 3]);
        assert!(!k.must_wait(&ev(4, "a")));
        assert_eq!(k.held(), Footprint::default());
    }

    #[test]
    fn resetting_a_partition_frees_its_keys_but_not_the_ones_still_out() {
        let mut k = KeyOrder::new(true);
        let on = |p: PartitionId, o: u64, key: &str| Arc::new(test_event(p, o, key, 1));
        // Keys route by name here: "a*" to partition 0, the rest to 1.
        let route = |key: &str| PartitionId::from(!key.starts_with('a'));
        for (p, o, key) in [(0, 0, "a1"), (0, 1, "a1"), (0, 2, "a2"), (1, 0, "b")] {
            let e = on(p, o, key);
            if k.must_wait(&e) {
                k.hold_back(e);
            } else {
                k.start(&e);
            }
        }
        let e = on(1, 1, "b");
        k.hold_back(e);
        k.release("b");
        assert_eq!(k.held().events, 2, "a1's second event and b's next");
        // a2 stays leased across the seek.
        k.reset_partition(0, route, ["a2"].into_iter());
        assert_eq!(k.held().events, 1, "only b's event is left");
        assert!(!k.must_wait(&on(0, 5, "a1")));
        assert!(k.must_wait(&on(0, 6, "a2")));
        assert!(k.must_wait(&on(1, 2, "b")));
        assert_eq!(k.oldest().map(|e| e.offset).collect::<Vec<_>>(), [1]);
    }
}

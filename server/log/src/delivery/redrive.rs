//! Redriven dead letters: events an operator sent back from the dead-letter
//! queue, waiting for their first delivery in redrive order, and the stored
//! redrive-queue entries of those handed out and not yet settled (rewritten
//! with the attempt count at each delivery, so attempts survive restarts).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::dead_letter::DeadLetterEntry;
use super::{Origin, Redriven};
use crate::types::{Offset, PartitionId, StoredEvent};

#[derive(Default)]
pub(super) struct RedriveQueue {
    /// Not yet handed out, in redrive order.
    queued: VecDeque<Redriven>,
    /// Stored entries of redriven events handed out and not yet settled, by seq.
    out: HashMap<u64, DeadLetterEntry>,
}

impl RedriveQueue {
    pub fn extend(&mut self, entries: impl IntoIterator<Item = Redriven>) {
        self.queued.extend(entries);
    }

    /// Takes the first queued event for which `may_go` holds, and returns it
    /// with its origin (seq, redrive count and attempts so far).
    pub fn hand_out(
        &mut self,
        may_go: impl FnMut(&Redriven) -> bool,
    ) -> Option<(Arc<StoredEvent>, Origin)> {
        let i = self.queued.iter().position(may_go)?;
        let r = self.queued.remove(i).expect("in range");
        let attempts = r.entry.attempts;
        self.out.insert(r.seq, r.entry);
        let origin = Origin::Redrive {
            seq: r.seq,
            redrive_count: r.redrive_count,
            attempts,
        };
        Some((r.event, origin))
    }

    /// Records the attempts of the handed-out event `seq`, and returns its
    /// entry to store; `None` when it is no longer out.
    pub fn set_attempts(&mut self, seq: u64, attempts: u32) -> Option<&DeadLetterEntry> {
        let entry = self.out.get_mut(&seq)?;
        entry.attempts = attempts;
        Some(entry)
    }

    /// The handed-out event `seq` was settled (or dropped by a seek).
    pub fn settled(&mut self, seq: u64) {
        self.out.remove(&seq);
    }

    /// Drops the queued events of partition `p` at or after `target` (a seek
    /// hands them out from the log again) and returns their seqs.
    pub fn drop_from(&mut self, p: PartitionId, target: Offset) -> Vec<u64> {
        let mut gone = Vec::new();
        self.queued.retain(|r| {
            let keep = r.event.partition != p || r.event.offset < target;
            if !keep {
                gone.push(r.seq);
            }
            keep
        });
        gone
    }

    /// Events queued and not handed out yet.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::test_event;
    use super::*;

    fn redriven(seq: u64, p: PartitionId, offset: Offset, attempts: u32) -> Redriven {
        Redriven {
            seq,
            redrive_count: 1,
            event: Arc::new(test_event(p, offset, "", 1)),
            entry: DeadLetterEntry {
                seq,
                partition: p,
                offset,
                attempts,
                redrive_count: 1,
                first_delivery_ms: 0,
                last_delivery_ms: 0,
                dead_letter_ms: 0,
                reason: String::new(),
                record: Bytes::new(),
            },
        }
    }

    #[test]
    fn events_go_in_redrive_order_skipping_those_that_may_not_go_yet() {
        let mut q = RedriveQueue::default();
        q.extend([
            redriven(5, 0, 1, 0),
            redriven(6, 0, 2, 0),
            redriven(7, 1, 1, 0),
        ]);
        let (ev, origin) = q.hand_out(|r| r.seq != 5).unwrap();
        assert_eq!(ev.offset, 2);
        assert_eq!(
            origin,
            Origin::Redrive {
                seq: 6,
                redrive_count: 1,
                attempts: 0
            }
        );
        assert_eq!(q.hand_out(|_| true).unwrap().0.offset, 1, "seq 5 now");
        assert_eq!(q.queued(), 1);
        assert!(q.hand_out(|_| false).is_none());
    }

    #[test]
    fn attempts_are_kept_on_the_entry_of_a_handed_out_event_until_settled() {
        let mut q = RedriveQueue::default();
        q.extend([redriven(5, 0, 1, 2)]);
        let (_, origin) = q.hand_out(|_| true).unwrap();
        assert!(matches!(origin, Origin::Redrive { attempts: 2, .. }));
        assert_eq!(q.set_attempts(5, 3).map(|e| e.attempts), Some(3));
        q.settled(5);
        assert!(q.set_attempts(5, 4).is_none(), "settled: nothing to store");
    }

    #[test]
    fn a_seek_drops_the_queued_events_at_or_after_its_target() {
        let mut q = RedriveQueue::default();
        q.extend([
            redriven(1, 0, 3, 0),
            redriven(2, 0, 9, 0),
            redriven(3, 1, 9, 0),
        ]);
        assert_eq!(q.drop_from(0, 5), [2]);
        assert_eq!(q.queued(), 2);
        assert_eq!(q.drop_from(0, 3), [1]);
        assert_eq!(q.hand_out(|_| true).unwrap().0.partition, 1);
    }
}

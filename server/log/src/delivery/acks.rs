//! Per-partition ack state of a subscription: what has been settled, and how
//! often each unsettled event was delivered. This is all the delivery engine
//! persists per partition; leases and retry timers live only in memory.
//!
//! ```text
//!            floor                         cursor (memory only)
//!              │                              │
//!   settled ◄──┤ ✓ . ✓ ✓ . . ✓ . . . . . . . .│ not yet read from the log
//!              └── settled_above_floor = {f, f+2, f+3, f+6}
//! ```
//!
//! * Every offset below `floor` is settled (acked, dead-lettered or filtered).
//! * `settled` holds settled offsets at or above the floor (acks arrive out of
//!   order); the floor advances over them as the gaps close.
//! * `attempts` counts deliveries of unsettled offsets, so that redeliveries keep
//!   their attempt number across restarts.
//!
//! Encoding (value of a `subs` key): version u8 = 1, floor varint, then the settled
//! offsets as a count plus ascending (non-zero) deltas, then the attempts as a count plus
//! (offset delta from floor, attempts) pairs. All varints.

use std::collections::{BTreeSet, HashMap};

use bytes::BytesMut;

use crate::codec::{put_varint, CodecError, Reader};
use crate::types::Offset;

const VERSION: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionAcks {
    pub floor: Offset,
    pub settled: BTreeSet<Offset>,
    /// Hashed, not ordered: an entry goes in per delivery and out per ack,
    /// the hottest operations of a consume run (a B-tree's were ~2 % of its
    /// CPU); only the encoding, once per flush, needs them in order.
    pub attempts: Attempts,
}

/// Delivery counts by offset.
pub type Attempts = HashMap<Offset, u32, foldhash::fast::FixedState>;

impl PartitionAcks {
    pub fn starting_at(floor: Offset) -> Self {
        PartitionAcks {
            floor,
            ..Default::default()
        }
    }

    pub fn is_settled(&self, offset: Offset) -> bool {
        offset < self.floor || self.settled.contains(&offset)
    }

    /// Marks `offset` settled and advances the floor over any closed gap.
    /// Returns false when it was already settled.
    pub fn settle(&mut self, offset: Offset) -> bool {
        if self.is_settled(offset) {
            return false;
        }
        self.attempts.remove(&offset);
        if offset == self.floor {
            self.floor += 1;
            while self.settled.remove(&self.floor) {
                self.floor += 1;
            }
        } else {
            self.settled.insert(offset);
        }
        true
    }

    /// Number of unsettled offsets in `[floor, end)`.
    pub fn unsettled_below(&self, end: Offset) -> u64 {
        if end <= self.floor {
            return 0;
        }
        let settled = self.settled.range(..end).count() as u64;
        end - self.floor - settled
    }

    /// Moves the floor up to `to` (retention or seek), forgetting what lies below.
    pub fn raise_floor(&mut self, to: Offset) {
        if to <= self.floor {
            return;
        }
        self.floor = to;
        self.settled = self.settled.split_off(&to);
        self.attempts.retain(|&o, _| o >= to);
        while self.settled.remove(&self.floor) {
            self.floor += 1;
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b =
            BytesMut::with_capacity(16 + 3 * (self.settled.len() + 2 * self.attempts.len()));
        b.extend_from_slice(&[VERSION]);
        put_varint(&mut b, self.floor);
        put_varint(&mut b, self.settled.len() as u64);
        let mut prev = self.floor;
        for &o in &self.settled {
            put_varint(&mut b, o - prev);
            prev = o;
        }
        put_varint(&mut b, self.attempts.len() as u64);
        let mut attempts: Vec<(Offset, u32)> =
            self.attempts.iter().map(|(&o, &n)| (o, n)).collect();
        attempts.sort_unstable();
        for (o, n) in attempts {
            put_varint(&mut b, o.saturating_sub(self.floor));
            put_varint(&mut b, u64::from(n));
        }
        b.to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != VERSION {
            return Err(CodecError::UnknownVersion(v));
        }
        let floor = r.varint()?;
        let mut settled = BTreeSet::new();
        let mut prev = floor;
        for _ in 0..r.varint()? {
            // Settled offsets lie strictly above the floor and ascend: the
            // encoder never writes a zero delta.
            let delta = r.varint()?;
            if delta == 0 {
                return Err(CodecError::Malformed(
                    "settled offsets must ascend above the floor",
                ));
            }
            prev = prev.checked_add(delta).ok_or(CodecError::Truncated)?;
            settled.insert(prev);
        }
        let mut attempts = Attempts::default();
        for _ in 0..r.varint()? {
            let o = floor
                .checked_add(r.varint()?)
                .ok_or(CodecError::Truncated)?;
            let n = u32::try_from(r.varint()?).map_err(|_| CodecError::Truncated)?;
            attempts.insert(o, n);
        }
        if !r.is_empty() {
            return Err(CodecError::Truncated);
        }
        Ok(PartitionAcks {
            floor,
            settled,
            attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_advances_over_closed_gaps() {
        let mut a = PartitionAcks::starting_at(10);
        assert!(a.settle(12));
        assert!(a.settle(11));
        assert_eq!(a.floor, 10);
        assert!(a.settle(10));
        assert_eq!(a.floor, 13);
        assert!(a.settled.is_empty());
        assert!(!a.settle(11), "settling twice reports false");
        assert!(a.is_settled(5));
        assert!(!a.is_settled(13));
    }

    #[test]
    fn counts_unsettled() {
        let mut a = PartitionAcks::starting_at(0);
        a.settle(2);
        a.settle(4);
        assert_eq!(a.unsettled_below(6), 4);
        assert_eq!(a.unsettled_below(0), 0);
    }

    #[test]
    fn raise_floor_drops_state_below() {
        let mut a = PartitionAcks::starting_at(0);
        a.settle(3);
        a.settle(6);
        a.attempts.insert(1, 2);
        a.attempts.insert(7, 1);
        a.raise_floor(5);
        assert_eq!(a.floor, 5);
        assert_eq!(a.settled, BTreeSet::from([6]));
        assert_eq!(a.attempts, Attempts::from_iter([(7, 1)]));
        a.raise_floor(6);
        assert_eq!(a.floor, 7, "floor skips the settled 6");
    }

    #[test]
    fn encoding_round_trips() {
        let mut a = PartitionAcks::starting_at(1_000_000);
        for o in [1_000_002, 1_000_005, 1_100_000] {
            a.settle(o);
        }
        a.attempts.insert(1_000_000, 3);
        a.attempts.insert(1_000_001, 1);
        let enc = a.encode();
        assert_eq!(PartitionAcks::decode(&enc).unwrap(), a);
        assert!(PartitionAcks::decode(&enc[..enc.len() - 1]).is_err());
        assert!(PartitionAcks::decode(&[9]).is_err());
    }

    /// Found by the `ack_state` fuzz target (fuzz/): a settled delta of 0
    /// put the floor itself into `settled`. `settle(floor)` then reports
    /// "already settled", so the floor never advances again and `settled`
    /// grows with every later ack. The encoder never writes a 0 delta.
    #[test]
    fn a_settled_offset_at_or_below_the_previous_one_is_rejected() {
        // Floor 64 (as an overlong varint), one settled offset, delta 0.
        let at_floor = [1, 0xc0, 0x00, 1, 0, 0];
        assert!(PartitionAcks::decode(&at_floor).is_err());
        // Floor 5, settled 7 twice.
        let repeated = [1, 5, 2, 2, 0, 0];
        assert!(PartitionAcks::decode(&repeated).is_err());
    }
}

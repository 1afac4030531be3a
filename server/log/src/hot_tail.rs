//! The hot tail: each partition's most recently committed record batches,
//! kept in memory so that a subscription that keeps up with its topic reads
//! new events without a RocksDB iterator and without a hop to the blocking
//! pool (lever 2 of issue 15).
//!
//! ```text
//!  partition p:   start ............................................. end
//!  RocksDB:       [b0][b1][b2][b3][b4][b5][b6][b7][b8][b9][b10][b11]
//!  hot tail:                                  [b7][b8][b9][b10][b11]
//!                                              ▲ front          ▲ back ends at
//!                                              └ oldest kept      the last commit
//! ```
//!
//! * The writer pushes a group's batches (the very values it put into
//!   RocksDB, as `Bytes` without a copy) once the group is durable, *before*
//!   it advances the partition's committed end. A reader that saw an end
//!   therefore finds every record below it either here or in RocksDB.
//! * The batches here are contiguous and the last one ends at the last
//!   committed offset. When a batch cannot be kept (the budget is spent),
//!   the partition's tail is emptied first, so a gap never hides inside it.
//! * Only topics with a live reader (a subscription with members) keep one:
//!   for the others the writer empties the tail instead of filling it.
//! * Bounded twice: [`PARTITION_BYTES`] per partition, and the log-wide
//!   [`HotBudget`] (`Options::hot_tail_bytes`) over all partitions. A read
//!   that starts below the oldest batch kept goes to RocksDB as before.
//! * The bytes are the stored ones: a read decodes and checks each record's
//!   checksum exactly as a RocksDB read does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::types::Offset;

/// Most bytes one partition keeps: about a second of a fast partition's
/// writes, so a subscription that lags by more than that reads RocksDB.
pub const PARTITION_BYTES: usize = 4 << 20;
/// What a kept batch costs besides its value's allocation.
const BATCH_OVERHEAD: usize = 64;

/// The log-wide bound on what every partition's hot tail holds together.
#[derive(Debug)]
pub struct HotBudget {
    limit: usize,
    used: AtomicUsize,
}

impl HotBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(HotBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes held by every hot tail now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One committed record batch: its value as stored, and its offsets.
#[derive(Debug, Clone)]
pub struct HotBatch {
    pub base: Offset,
    /// One past its last record.
    pub end: Offset,
    pub value: Bytes,
    /// What it counts against the bounds.
    cost: usize,
}

#[derive(Debug, Default)]
struct Batches {
    /// Contiguous, in offset order.
    kept: VecDeque<HotBatch>,
    bytes: usize,
}

/// One partition's hot tail; see the module docs.
#[derive(Debug)]
pub struct HotTail {
    budget: Arc<HotBudget>,
    batches: Mutex<Batches>,
}

impl HotTail {
    pub fn new(budget: Arc<HotBudget>) -> Self {
        HotTail {
            budget,
            batches: Mutex::new(Batches::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Batches> {
        // Nothing under this lock can panic half-way; recover from poison.
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a committed batch of `count` records from `base`, dropping the
    /// oldest ones to stay within the bounds. `capacity` is the allocation
    /// behind `value`. Called by the writer, in offset order, before the
    /// partition's end moves past the batch.
    pub fn push(&self, base: Offset, count: u32, value: Bytes, capacity: usize) {
        let cost = capacity.max(value.len()) + BATCH_OVERHEAD;
        let mut b = self.lock();
        let follows = b.kept.back().is_none_or(|last| last.end == base);
        if !follows || cost > PARTITION_BYTES {
            self.evict(&mut b, usize::MAX);
        }
        if cost > PARTITION_BYTES {
            return; // never fits: this partition reads RocksDB until the next batch
        }
        while b.bytes + cost > PARTITION_BYTES {
            self.evict(&mut b, 1);
        }
        while !self.budget.try_take(cost) {
            if b.kept.is_empty() {
                return; // other partitions hold the budget: read from RocksDB
            }
            self.evict(&mut b, 1);
        }
        b.bytes += cost;
        b.kept.push_back(HotBatch {
            base,
            end: base + u64::from(count),
            value,
            cost,
        });
    }

    /// Drops up to `n` of the oldest batches.
    fn evict(&self, b: &mut Batches, n: usize) {
        for _ in 0..n {
            let Some(old) = b.kept.pop_front() else {
                return;
            };
            b.bytes -= old.cost;
            self.budget.give_back(old.cost);
        }
    }

    /// Drops every kept batch.
    pub fn clear(&self) {
        self.evict(&mut self.lock(), usize::MAX);
    }

    /// The kept batches holding offsets from `from` on, up to `max_batches`
    /// of them (cheap clones of `Bytes`), or `None` when they do not hold
    /// `from` (it is older than the oldest kept, or newer than the newest, or
    /// nothing is kept): read RocksDB instead.
    pub fn batches_from(&self, from: Offset, max_batches: usize) -> Option<Vec<HotBatch>> {
        let b = self.lock();
        let (first, last) = (b.kept.front()?, b.kept.back()?);
        if from < first.base || from >= last.end {
            return None;
        }
        let i = b.kept.partition_point(|batch| batch.end <= from);
        Some(b.kept.range(i..).take(max_batches).cloned().collect())
    }

    /// Bytes this partition keeps.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Drop for HotTail {
    fn drop(&mut self) {
        let b = self.batches.get_mut().unwrap_or_else(|e| e.into_inner());
        self.budget.give_back(b.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    fn bases(t: &HotTail, from: Offset) -> Option<Vec<Offset>> {
        t.batches_from(from, usize::MAX)
            .map(|v| v.iter().map(|b| b.base).collect())
    }

    #[test]
    fn a_read_finds_the_batch_holding_its_offset() {
        let t = HotTail::new(HotBudget::new(1 << 30));
        t.push(10, 5, batch(100), 100);
        t.push(15, 5, batch(100), 100);
        t.push(20, 1, batch(100), 100);
        assert_eq!(bases(&t, 9), None, "older than the oldest kept: RocksDB");
        assert_eq!(bases(&t, 10), Some(vec![10, 15, 20]));
        assert_eq!(bases(&t, 14), Some(vec![10, 15, 20]));
        assert_eq!(bases(&t, 15), Some(vec![15, 20]));
        assert_eq!(bases(&t, 21), None, "not kept (yet): RocksDB");
        assert_eq!(t.batches_from(10, 1).map(|v| v.len()), Some(1));
    }

    #[test]
    fn a_partition_keeps_its_newest_batches_within_its_bound() {
        let budget = HotBudget::new(1 << 30);
        let t = HotTail::new(budget.clone());
        let size = PARTITION_BYTES / 4;
        for i in 0..10u64 {
            t.push(i, 1, batch(size), size);
        }
        let kept = bases(&t, 0).unwrap_or_default();
        assert!(kept.is_empty(), "offset 0 was evicted: {kept:?}");
        let kept = bases(&t, 9).expect("the newest is kept");
        assert_eq!(kept, vec![9]);
        assert!(t.bytes() <= PARTITION_BYTES);
        assert_eq!(budget.used(), t.bytes());
        assert_eq!(bases(&t, 7), Some(vec![7, 8, 9]));
        assert_eq!(bases(&t, 6), None);
    }

    #[test]
    fn the_shared_budget_bounds_all_partitions_together() {
        let budget = HotBudget::new(1000);
        let a = HotTail::new(budget.clone());
        let b = HotTail::new(budget.clone());
        a.push(0, 1, batch(400), 400);
        a.push(1, 1, batch(400), 400);
        // b cannot take budget from a, and keeps nothing.
        b.push(0, 1, batch(400), 400);
        assert_eq!(bases(&b, 0), None);
        // a evicts its own oldest to make room.
        a.push(2, 1, batch(400), 400);
        assert_eq!(bases(&a, 1), Some(vec![1, 2]));
        assert!(budget.used() <= 1000);
        drop(a);
        assert_eq!(budget.used(), b.bytes());
        b.push(1, 1, batch(400), 400);
        assert_eq!(bases(&b, 1), Some(vec![1]));
    }

    #[test]
    fn a_gap_empties_the_tail_so_no_read_skips_records() {
        let t = HotTail::new(HotBudget::new(1 << 30));
        t.push(0, 5, batch(10), 10);
        t.push(7, 3, batch(10), 10);
        assert_eq!(bases(&t, 5), None, "5 and 6 are not here");
        assert_eq!(bases(&t, 7), Some(vec![7]));
    }

    #[test]
    fn clearing_gives_the_budget_back() {
        let budget = HotBudget::new(1 << 30);
        let t = HotTail::new(budget.clone());
        t.push(0, 2, batch(10), 10);
        t.clear();
        assert_eq!(bases(&t, 0), None);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_batch_larger_than_a_partitions_bound_is_not_kept() {
        let budget = HotBudget::new(1 << 30);
        let t = HotTail::new(budget.clone());
        t.push(0, 1, batch(10), 10);
        t.push(1, 1, batch(10), PARTITION_BYTES + 1);
        assert_eq!(bases(&t, 0), None);
        assert_eq!(bases(&t, 1), None);
        assert_eq!(budget.used(), 0);
    }
}

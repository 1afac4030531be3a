//! What a subscription persists, and when: each partition's ack state (marked
//! dirty when it changes, written by the next flush), the writes that must go
//! in the same batch as that state (dead-letter entries, redrive-queue
//! updates), when the next flush is due, and the dead-letter seq. Also loads
//! all of it when the subscription starts.
//!
//! Every write the delivery engine makes is built here. Flushes are lazy (every
//! `Options::ack_flush_interval`), except that a dead-lettering makes the next
//! flush due at once: its entry and the ack state that settles the event go to
//! disk in one batch, so the event is never both pending and dead-lettered, nor
//! neither.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::acks::PartitionAcks;
use super::dead_letter::DeadLetterEntry;
use super::{DlqCounters, Key, Redriven};
use crate::error::{Error, Result};
use crate::keys::{self, parse_dlq_key};
use crate::store::Log;
use crate::topic::TopicState;
use crate::types::{Offset, PartitionId, SubscriptionId};
use crate::writer::Update;

/// One partition's ack state, and whether it changed since it was written.
struct AckState {
    acks: PartitionAcks,
    dirty: bool,
}

pub(super) struct Persistence {
    sub: SubscriptionId,
    parts: Vec<AckState>,
    /// Writes that must reach disk atomically with the next flush (dead-letter
    /// entries, written in the same batch as the ack state that settles them).
    pending: Vec<Update>,
    flush_at: Option<Instant>,
    flush_interval: Duration,
    /// The seq of the next dead letter (a persisted high-water mark).
    next_dlq_seq: u64,
    dlq: Arc<DlqCounters>,
}

/// What a subscription starts from (see [`load`]).
pub(crate) struct Loaded {
    pub acks: Vec<PartitionAcks>,
    pub next_dlq_seq: u64,
    pub dlq: Arc<DlqCounters>,
    pub redrive: Vec<Redriven>,
}

impl Persistence {
    pub fn new(
        sub: SubscriptionId,
        acks: Vec<PartitionAcks>,
        next_dlq_seq: u64,
        dlq: Arc<DlqCounters>,
        flush_interval: Duration,
    ) -> Self {
        Persistence {
            sub,
            parts: acks
                .into_iter()
                .map(|acks| AckState { acks, dirty: false })
                .collect(),
            pending: Vec::new(),
            flush_at: None,
            flush_interval,
            next_dlq_seq,
            dlq,
        }
    }

    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    pub fn acks(&self, p: PartitionId) -> &PartitionAcks {
        &self.parts[p as usize].acks
    }

    /// Everything below is settled.
    pub fn floor(&self, p: PartitionId) -> Offset {
        self.parts[p as usize].acks.floor
    }

    /// Whether `key` is settled; false for a partition that does not exist.
    pub fn is_settled(&self, key: Key) -> bool {
        self.parts
            .get(key.0 as usize)
            .is_some_and(|p| p.acks.is_settled(key.1))
    }

    /// Deliveries of the log event `key` so far.
    pub fn attempts(&self, key: Key) -> u32 {
        let acks = &self.parts[key.0 as usize].acks;
        acks.attempts.get(&key.1).copied().unwrap_or(0)
    }

    /// Counts a delivery of the log event `key` (`up`), or takes one back.
    /// Returns the new count.
    pub fn count_attempt(&mut self, key: Key, up: bool) -> u32 {
        let part = &mut self.parts[key.0 as usize];
        let a = part.acks.attempts.entry(key.1).or_insert(0);
        *a = if up {
            a.saturating_add(1)
        } else {
            a.saturating_sub(1)
        };
        let n = *a;
        if n == 0 {
            part.acks.attempts.remove(&key.1);
        }
        part.dirty = true;
        n
    }

    /// Settles the log event `key` (acked, filtered out or dead-lettered);
    /// written by the next flush.
    pub fn settle(&mut self, key: Key, now: Instant) {
        let part = &mut self.parts[key.0 as usize];
        part.acks.settle(key.1);
        part.dirty = true;
        self.flush_soon(now);
    }

    /// Retention moved partition `p`'s start up to `start` above its floor: the
    /// floor follows. Returns how many events were lost unsettled, given that
    /// `in_memory` of those below `start` are still held in memory (leased,
    /// waiting or read ahead), which the caller counts as its own.
    pub fn follow_start(
        &mut self,
        p: PartitionId,
        start: Offset,
        in_memory: u64,
        now: Instant,
    ) -> u64 {
        let part = &mut self.parts[p as usize];
        let lost = part.acks.unsettled_below(start).saturating_sub(in_memory);
        part.acks.raise_floor(start);
        part.dirty = true;
        self.flush_soon(now);
        lost
    }

    /// Rewrites the stored redrive-queue entry `seq` (its attempts changed).
    pub fn rewrite_redrive(&mut self, seq: u64, entry: &DeadLetterEntry) {
        debug_assert_eq!(seq, entry.seq);
        self.pending.push(Update::PutRedrive {
            sub: self.sub,
            entry: entry.clone(),
        });
    }

    /// Deletes the redrive-queue entry `seq` (its event was settled) with the
    /// next flush.
    pub fn drop_redrive(&mut self, seq: u64) {
        self.pending
            .push(Update::DropRedrive { sub: self.sub, seq });
    }

    /// Adds the entry `entry(seq)` to the dead-letter queue under the next seq,
    /// with the next flush, which is due at once.
    pub fn add_dead_letter(&mut self, entry: impl FnOnce(u64) -> DeadLetterEntry, now: Instant) {
        let entry = entry(self.next_dlq_seq);
        self.next_dlq_seq += 1;
        // The command writes the high-water mark (seq + 1) in the same batch
        // as the entry it covers.
        self.pending.push(Update::DeadLetter {
            sub: self.sub,
            entry,
        });
        self.flush_at = Some(now);
        self.dlq.count.fetch_add(1, AtomicOrdering::Relaxed);
    }

    /// Starts partition `p` over at `target`, into `batch`: the deletes of the
    /// redrive entries the seek dropped, then the new ack state.
    pub fn reposition(
        &mut self,
        p: PartitionId,
        target: Offset,
        dropped: Vec<u64>,
        batch: &mut Vec<Update>,
    ) {
        let sub = self.sub;
        batch.extend(
            dropped
                .into_iter()
                .map(|seq| Update::DropRedrive { sub, seq }),
        );
        let part = &mut self.parts[p as usize];
        part.acks = PartitionAcks::starting_at(target);
        part.dirty = false;
        batch.push(Update::PutAckState {
            sub,
            partition: p,
            acks: part.acks.clone(),
        });
    }

    /// Makes a flush due within the flush interval, unless one is due earlier.
    pub fn flush_soon(&mut self, now: Instant) {
        self.flush_at.get_or_insert(now + self.flush_interval);
    }

    pub fn flush_at(&self) -> Option<Instant> {
        self.flush_at
    }

    pub fn flush_due(&self, now: Instant) -> bool {
        self.flush_at.is_some_and(|t| t <= now)
    }

    /// Whether writes wait that must go with the next flush.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The batch of a flush: the pending writes, then the dirty ack state.
    /// Everything in it counts as written from now on.
    pub fn take_flush(&mut self) -> Vec<Update> {
        self.flush_at = None;
        self.take_writes()
    }

    /// Like [`Persistence::take_flush`], but leaves the flush timer alone.
    pub fn take_writes(&mut self) -> Vec<Update> {
        let sub = self.sub;
        let mut ops = std::mem::take(&mut self.pending);
        ops.extend(
            self.parts
                .iter_mut()
                .enumerate()
                .filter(|(_, p)| p.dirty)
                .map(|(i, p)| {
                    p.dirty = false;
                    Update::PutAckState {
                        sub,
                        partition: i as PartitionId,
                        acks: p.acks.clone(),
                    }
                }),
        );
        ops
    }
}

/// Loads a subscription's persisted state. Blocking.
pub(crate) fn load(log: &Log, topic: &TopicState, sub: SubscriptionId) -> Result<Loaded> {
    let redrive = load_redrive(log, topic, sub)?;
    // Seqs name DLQ entries and redrive-queue entries alike, so the next one
    // comes from the persisted high-water mark, never from what happens to be
    // stored now: after a purge or a redrive emptied the DLQ, "highest key + 1"
    // would hand out a seq that a pending redrive entry (or an operator's saved
    // id) still means. The max with the stored keys covers data dirs written
    // before the mark existed.
    let mut next_seq = match log.get_sub_state(&keys::dlq_seq_key(sub))? {
        Some(v) => {
            u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| Error::CorruptMetadata {
                        location: format!("{sub} dead-letter seq"),
                        reason: format!("{} bytes, expected 8", v.len()),
                    })?,
            )
        }
        None => 0,
    };
    if let Some(last) = redrive.iter().map(|r| r.seq).max() {
        next_seq = next_seq.max(last + 1);
    }
    let mut count = 0u64;
    log.scan_dlq(sub, 0, |key, _| {
        if let Some((_, seq)) = parse_dlq_key(key) {
            next_seq = next_seq.max(seq + 1);
            count += 1;
        }
        true
    })?;
    let acks = (0..topic.partition_count())
        .map(|p| {
            let start = topic.partitions[p as usize].start();
            let mut acks = match log.get_sub_state(&keys::sub_state_key(sub, p))? {
                Some(v) => PartitionAcks::decode(&v).map_err(|source| Error::Corruption {
                    location: format!("{sub} partition {p} ack state"),
                    reason: source.to_string(),
                })?,
                None => PartitionAcks::starting_at(start),
            };
            acks.raise_floor(start);
            Ok(acks)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Loaded {
        acks,
        next_dlq_seq: next_seq,
        dlq: Arc::new(DlqCounters {
            count: AtomicU64::new(count),
        }),
        redrive,
    })
}

/// The redrive queue: dead letters an operator sent back, not yet settled.
fn load_redrive(log: &Log, topic: &TopicState, sub: SubscriptionId) -> Result<Vec<Redriven>> {
    let mut redrive = Vec::new();
    let mut failure = None;
    log.scan_redrive(sub, |seq, value| {
        match DeadLetterEntry::decode(seq, value)
            .and_then(|e| e.event(topic.id()).map(|ev| (e, ev)))
        {
            Ok((e, ev)) => redrive.push(Redriven {
                seq,
                redrive_count: e.redrive_count,
                event: Arc::new(ev),
                entry: e,
            }),
            Err(source) => {
                failure = Some(Error::Corruption {
                    location: format!("{sub} redrive entry {seq}"),
                    reason: source.to_string(),
                });
                return false;
            }
        }
        true
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(redrive),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const INTERVAL: Duration = Duration::from_millis(500);

    fn state(partitions: usize) -> Persistence {
        let acks = (0..partitions)
            .map(|_| PartitionAcks::starting_at(10))
            .collect();
        Persistence::new(SubscriptionId(3), acks, 7, Arc::default(), INTERVAL)
    }

    fn entry(seq: u64) -> DeadLetterEntry {
        DeadLetterEntry {
            seq,
            partition: 0,
            offset: 10,
            attempts: 3,
            redrive_count: 0,
            first_delivery_ms: 1,
            last_delivery_ms: 2,
            dead_letter_ms: 3,
            reason: "r".into(),
            record: Bytes::new(),
        }
    }

    #[test]
    fn only_changed_partitions_are_written_and_then_they_are_clean() {
        let t0 = Instant::now();
        let mut s = state(3);
        assert!(s.take_flush().is_empty(), "nothing changed");
        s.settle((1, 10), t0);
        s.count_attempt((2, 11), true);
        assert_eq!(s.take_writes().len(), 2, "partitions 1 and 2");
        assert!(s.take_writes().is_empty());
        assert_eq!(s.floor(1), 11);
        assert!(s.is_settled((1, 10)));
        assert!(!s.is_settled((1, 11)));
        assert!(!s.is_settled((9, 0)), "no such partition");
    }

    #[test]
    fn attempts_count_up_and_back_down_to_nothing() {
        let mut s = state(1);
        assert_eq!(s.count_attempt((0, 12), true), 1);
        assert_eq!(s.count_attempt((0, 12), true), 2);
        assert_eq!(s.attempts((0, 12)), 2);
        assert_eq!(s.count_attempt((0, 12), false), 1);
        assert_eq!(s.count_attempt((0, 12), false), 0);
        assert!(s.acks(0).attempts.is_empty(), "no zero entries are kept");
        s.count_attempt((0, 12), true);
        s.settle((0, 12), Instant::now());
        assert_eq!(s.attempts((0, 12)), 0, "settling forgets the attempts");
    }

    #[test]
    fn a_flush_is_due_after_the_interval_and_a_dead_letter_makes_it_due_now() {
        let t0 = Instant::now();
        let mut s = state(1);
        assert_eq!(s.flush_at(), None);
        s.settle((0, 10), t0);
        s.flush_soon(t0 + INTERVAL);
        assert_eq!(s.flush_at(), Some(t0 + INTERVAL), "the earlier time stays");
        assert!(!s.flush_due(t0));
        assert!(s.flush_due(t0 + INTERVAL));
        let later = t0 + Duration::from_millis(100);
        s.add_dead_letter(entry, later);
        assert!(s.flush_due(later));
        assert!(s.has_pending());
        s.take_flush();
        assert_eq!(s.flush_at(), None);
        assert!(!s.has_pending());
    }

    #[test]
    fn dead_letters_take_increasing_seqs_and_count() {
        let t0 = Instant::now();
        let mut s = state(1);
        let mut seqs = Vec::new();
        for _ in 0..2 {
            s.add_dead_letter(
                |seq| {
                    seqs.push(seq);
                    entry(seq)
                },
                t0,
            );
        }
        assert_eq!(seqs, [7, 8], "from the loaded high-water mark on");
        assert_eq!(s.next_dlq_seq, 9);
        assert_eq!(s.dlq.count.load(AtomicOrdering::Relaxed), 2);
        // Per entry one command (the entry and the seq mark together), in
        // one batch with the ack state.
        s.settle((0, 10), t0);
        assert_eq!(s.take_flush().len(), 3);
    }

    #[test]
    fn a_reposition_writes_the_new_state_at_once_and_leaves_it_clean() {
        let t0 = Instant::now();
        let mut s = state(2);
        s.settle((0, 10), t0);
        s.count_attempt((0, 12), true);
        s.settle((1, 10), t0);
        let mut batch = Vec::new();
        s.reposition(0, 4, vec![1, 2], &mut batch);
        assert_eq!(batch.len(), 3, "two redrive deletes and the ack state");
        assert_eq!(s.floor(0), 4);
        assert!(s.acks(0).attempts.is_empty());
        assert_eq!(s.take_writes().len(), 1, "only partition 1 is still dirty");
    }

    #[test]
    fn following_retention_counts_what_was_lost_unsettled() {
        let t0 = Instant::now();
        let mut s = state(1);
        s.settle((0, 12), t0);
        // 10, 11, 13, 14 were never settled; one of them is in memory.
        assert_eq!(s.follow_start(0, 15, 1, t0), 3);
        assert_eq!(s.floor(0), 15);
        assert_eq!(s.take_flush().len(), 1);
    }
}

//! Reads, all blocking (call them off the async workers): committed records
//! of a partition, the time index, dead letters, the redrive queue and
//! subscription state. Readers never look past a partition's committed end.

use std::ops::Range;

use bytes::Bytes;
use rocksdb::{DBRawIterator, ReadOptions};

use crate::batch::Records;
use crate::codec::{self, CodecError};
use crate::error::{storage, Error, Result};
use crate::hot_tail::HotBatch;
use crate::keys::{self, Cf};
use crate::topic::TopicState;
use crate::types::{Offset, PartitionId, StoredEvent};

use super::Log;

impl Log {
    /// Reads committed events of one partition starting at `from`, at most
    /// `max_events` of them and stopping after `max_bytes` of payload (at least one
    /// event is returned when any is available). Blocking.
    ///
    /// One copy per stored batch: the records used from it are copied out
    /// together, and each event's payload is a slice of that copy.
    pub fn read(
        &self,
        topic: &TopicState,
        partition: PartitionId,
        from: Offset,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>> {
        let Some(mut read) = Gather::new(topic, partition, from, max_events, max_bytes) else {
            return Ok(Vec::new());
        };
        let mut it = self.records_from(topic, partition, read.from, read.end);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let base = base_offset(topic, partition, k)?;
            if read.take(base, v, |used| Bytes::copy_from_slice(&v[used]))? {
                break;
            }
            it.next();
        }
        it.status().map_err(storage)?;
        Ok(read.out)
    }

    /// [`Log::read`] from the partition's hot tail, without RocksDB: `None`
    /// when `from` is not within what the hot tail keeps (read RocksDB
    /// instead). Does not block; the records are decoded and checked as a
    /// RocksDB read would, and their payloads are slices of the kept batches.
    pub fn read_hot(
        &self,
        topic: &TopicState,
        partition: PartitionId,
        from: Offset,
        max_events: usize,
        max_bytes: usize,
    ) -> Option<Result<Vec<StoredEvent>>> {
        let Some(read) = Gather::new(topic, partition, from, max_events, max_bytes) else {
            return Some(Ok(Vec::new()));
        };
        // A batch holds at least one event; the read stops at `max_events`.
        let hot = &topic.partitions[partition as usize].hot;
        let batches = hot.batches_from(read.from, max_events)?;
        Some(read.take_hot(&batches))
    }

    /// The first offset of `partition` whose publish time is at or after `ms`
    /// (the committed end when there is none). Blocking.
    ///
    /// Uses the sparse time index to find a starting point at most one index
    /// interval (100 ms of records) before the answer, then scans forward, so
    /// the cost does not grow with the size of the log.
    pub fn offset_for_time(
        &self,
        topic: &TopicState,
        partition: PartitionId,
        ms: u64,
    ) -> Result<Offset> {
        let tail = &topic.partitions[partition as usize];
        let (start, end) = (tail.start(), tail.end());
        let id = topic.id();
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::time_index_key(id, partition, 0, 0).to_vec());
        ro.set_iterate_upper_bound(
            keys::time_index_key(id, partition, u64::MAX, u64::MAX).to_vec(),
        );
        let mut it = self
            .inner
            .db
            .raw_iterator_cf_opt(self.cf(Cf::TimeIndex), ro);
        // The last index entry strictly before `ms`: every event before its offset
        // is older still.
        it.seek_for_prev(keys::time_index_key(
            id,
            partition,
            ms.saturating_sub(1),
            u64::MAX,
        ));
        let from = it
            .key()
            .and_then(keys::parse_time_index_key)
            .map_or(start, |(_, _, _, o)| o.max(start));
        it.status().map_err(storage)?;
        drop(it);
        if from >= end {
            return Ok(end);
        }

        let mut it = self.records_from(topic, partition, from, end);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            for record in stored_records(topic, partition, k, v)? {
                let (offset, range) = record?;
                if offset < from {
                    continue;
                }
                if offset >= end {
                    return Ok(end);
                }
                let t = codec::record_publish_time(&v[range])
                    .map_err(damaged(topic, partition, offset))?;
                if t >= ms {
                    return Ok(offset);
                }
            }
            it.next();
        }
        it.status().map_err(storage)?;
        Ok(end)
    }

    /// An iterator over the stored values of `partition` that hold offsets
    /// in `[from, end)`: at the batch holding `from` (which starts at or
    /// before it), or at the first one after it.
    pub(super) fn records_from(
        &self,
        topic: &TopicState,
        partition: PartitionId,
        from: Offset,
        end: Offset,
    ) -> DBRawIterator<'_> {
        let id = topic.id();
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::record_key(id, partition, 0).to_vec());
        ro.set_iterate_upper_bound(keys::record_key(id, partition, end).to_vec());
        let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(Cf::Records), ro);
        it.seek_for_prev(keys::record_key(id, partition, from));
        if !it.valid() {
            it.seek(keys::record_key(id, partition, from));
        }
        it
    }

    /// Visits the dead-letter entries of `sub` with seq >= `from_seq`, in seq
    /// order, until `visit` returns false. Blocking.
    pub(crate) fn scan_dlq(
        &self,
        sub: crate::types::SubscriptionId,
        from_seq: u64,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let (_, end) = keys::subscription_range(sub);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(Cf::Dlq), ro);
        it.seek(keys::dlq_key(sub, from_seq));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !visit(k, v) {
                break;
            }
            it.next();
        }
        it.status().map_err(storage)?;
        Ok(())
    }

    /// Visits the redrive-queue entries of `sub` (seq, value) in seq order until
    /// `visit` returns false. Blocking.
    pub(crate) fn scan_redrive(
        &self,
        sub: crate::types::SubscriptionId,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<()> {
        let start = keys::redrive_key(sub, 0);
        let end = keys::redrive_key(sub, u64::MAX);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(Cf::Subs), ro);
        it.seek(start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (_, seq) = keys::parse_redrive_key(k).ok_or_else(|| Error::CorruptMetadata {
                location: format!("{sub} redrive key"),
                reason: "malformed".into(),
            })?;
            if !visit(seq, v) {
                break;
            }
            it.next();
        }
        it.status().map_err(storage)?;
        Ok(())
    }

    /// Reads a raw value from the `subs` column family. Blocking.
    pub(crate) fn get_sub_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner
            .db
            .get_cf(self.cf(Cf::Subs), key)
            .map_err(storage)
    }
}

/// What one read collects, from RocksDB or from the hot tail alike: the
/// events of a partition from `from` up to its committed end, within the
/// read's event and byte limits.
struct Gather<'t> {
    topic: &'t TopicState,
    partition: PartitionId,
    from: Offset,
    end: Offset,
    max_events: usize,
    max_bytes: usize,
    bytes: usize,
    /// Records of the current stored value to take: offset and byte range.
    wanted: Vec<(Offset, Range<usize>)>,
    out: Vec<StoredEvent>,
}

impl<'t> Gather<'t> {
    /// A read of `partition` from `from` (or its first retained offset, if
    /// later); `None` when there is nothing to read.
    fn new(
        topic: &'t TopicState,
        partition: PartitionId,
        from: Offset,
        max_events: usize,
        max_bytes: usize,
    ) -> Option<Self> {
        let tail = &topic.partitions[partition as usize];
        let end = tail.end();
        let from = from.max(tail.start());
        if from >= end || max_events == 0 {
            return None;
        }
        Some(Gather {
            topic,
            partition,
            from,
            end,
            max_events,
            max_bytes,
            bytes: 0,
            wanted: Vec::new(),
            out: Vec::with_capacity(max_events.min((end - from) as usize)),
        })
    }

    /// Takes what the read wants of one stored value, whose first record has
    /// offset `base`. `hold` turns the byte range of `value` the taken
    /// records span into the `Bytes` their payloads are sliced from (a copy
    /// out of RocksDB, or a slice of a kept batch). True once the read is
    /// full.
    fn take(
        &mut self,
        base: Offset,
        value: &[u8],
        hold: impl FnOnce(Range<usize>) -> Bytes,
    ) -> Result<bool> {
        let (topic, partition) = (self.topic, self.partition);
        let records = Records::new(value).map_err(damaged(topic, partition, base))?;
        let mut full = false;
        for (offset, range) in (base..).zip(records) {
            let range = range.map_err(damaged(topic, partition, base))?;
            if offset < self.from {
                continue;
            }
            let taken = self.out.len() + self.wanted.len();
            if offset >= self.end
                || taken >= self.max_events
                || (self.bytes >= self.max_bytes && taken > 0)
            {
                full = true;
                break;
            }
            self.bytes += range.len();
            self.wanted.push((offset, range));
        }
        if let (Some((_, first)), Some((_, last))) = (self.wanted.first(), self.wanted.last()) {
            let lo = first.start;
            let held = hold(lo..last.end);
            for (offset, r) in self.wanted.drain(..) {
                let record = held.slice(r.start - lo..r.end - lo);
                let ev = codec::decode_record(topic.id(), partition, offset, record)
                    .map_err(damaged(topic, partition, offset))?;
                self.out.push(ev);
            }
        }
        Ok(full)
    }

    /// The read served from kept batches: payloads slice them, no copy.
    fn take_hot(mut self, batches: &[HotBatch]) -> Result<Vec<StoredEvent>> {
        for batch in batches {
            if self.take(batch.base, &batch.value, |used| batch.value.slice(used))? {
                break;
            }
        }
        Ok(self.out)
    }
}

/// The base offset of a stored value, from its key.
pub(super) fn base_offset(
    topic: &TopicState,
    partition: PartitionId,
    key: &[u8],
) -> Result<Offset> {
    keys::parse_record_key(key)
        .map(|(_, _, offset)| offset)
        .ok_or_else(|| Error::CorruptMetadata {
            location: format!("{} partition {partition}", topic.name()),
            reason: "malformed record key".into(),
        })
}

/// The records of one stored value (key `key`) with their offsets; damaged
/// framing is corruption at the value's base offset.
pub(super) fn stored_records<'a>(
    topic: &'a TopicState,
    partition: PartitionId,
    key: &[u8],
    value: &'a [u8],
) -> Result<impl Iterator<Item = Result<(Offset, Range<usize>)>> + 'a> {
    let base = base_offset(topic, partition, key)?;
    let records = Records::new(value).map_err(damaged(topic, partition, base))?;
    Ok((base..).zip(records).map(move |(offset, range)| {
        range
            .map(|r| (offset, r))
            .map_err(damaged(topic, partition, base))
    }))
}

/// Maps a record that does not decode to the corruption error that names
/// where it lies (DATA_LOSS at the RPC surface).
pub(super) fn damaged(
    topic: &TopicState,
    partition: PartitionId,
    offset: Offset,
) -> impl Fn(CodecError) -> Error + '_ {
    move |source| Error::Corruption {
        location: format!(
            "topic {:?} partition {partition} offset {offset}",
            topic.name()
        ),
        reason: source.to_string(),
    }
}

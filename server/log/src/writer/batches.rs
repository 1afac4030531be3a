//! The record batches a group commit fills: one per partition it appends to
//! (another when one is full), put into the group's `WriteBatch` as one value
//! each (see [`crate::batch`]), then kept for the partitions' hot tails.

use std::sync::Arc;

use bytes::Bytes;
use rocksdb::{ColumnFamily, WriteBatch};

use crate::batch::BatchBuilder;
use crate::keys;
use crate::topic::TopicState;
use crate::types::{Offset, PartitionId};

/// A batch starts with room for this much, and grows as records come.
const INITIAL_CAPACITY: usize = 4096;

/// A batch put into the group's `WriteBatch`, for its partition's hot tail
/// once the group is durable.
pub(super) struct Flushed {
    topic: Arc<TopicState>,
    partition: PartitionId,
    base: Offset,
    count: u32,
    value: Bytes,
    capacity: usize,
}

impl Flushed {
    /// Hands the batch to its partition's hot tail, when a subscription of
    /// its topic has members (otherwise the tail is emptied). Call once the
    /// group is durable and before the partition's end moves past it.
    pub fn keep_hot(self) {
        let tail = &self.topic.partitions[self.partition as usize];
        if self.topic.has_live_readers() {
            tail.hot
                .push(self.base, self.count, self.value, self.capacity);
        } else {
            tail.hot.clear();
        }
    }
}

#[derive(Default)]
pub(super) struct OpenBatches {
    open: Vec<(Arc<TopicState>, PartitionId, BatchBuilder)>,
    flushed: Vec<Flushed>,
}

impl OpenBatches {
    /// Adds a sealed record with the next offset of `partition`.
    pub fn push(
        &mut self,
        topic: &Arc<TopicState>,
        partition: PartitionId,
        offset: Offset,
        record: &[u8],
    ) {
        let open = self
            .open
            .iter_mut()
            .rev()
            .find(|(t, p, _)| Arc::ptr_eq(t, topic) && *p == partition)
            .map(|(_, _, b)| b)
            .filter(|b| b.next_offset() == offset && b.has_room(record.len()));
        match open {
            Some(b) => b.push(record),
            None => {
                let mut b = BatchBuilder::new(offset, INITIAL_CAPACITY.max(record.len() + 4));
                b.push(record);
                self.open.push((topic.clone(), partition, b));
            }
        }
    }

    /// Puts every open batch into `batch` under its base offset's key. Called
    /// at the end of a group, and before any other command of the group is
    /// added, so a trim or a topic deletion later in the group applies to
    /// the records before it, as it would have to records put one by one.
    pub fn flush(&mut self, batch: &mut WriteBatch, records: &ColumnFamily) {
        for (topic, partition, mut b) in self.open.drain(..) {
            let base = b.base();
            batch.put_cf(
                records,
                keys::record_key(topic.meta.id, partition, base),
                b.finish(),
            );
            let count = b.count();
            // The WriteBatch holds its own copy; the hot tail takes this
            // buffer as it is.
            let buf = b.into_buf();
            let capacity = buf.capacity();
            self.flushed.push(Flushed {
                topic,
                partition,
                base,
                count,
                value: Bytes::from(buf),
                capacity,
            });
        }
    }

    /// The batches flushed so far, in the order they were put.
    pub fn into_flushed(self) -> Vec<Flushed> {
        debug_assert!(self.open.is_empty(), "flush before taking the batches");
        self.flushed
    }
}

//! The record batches a group commit fills: one per partition it appends to
//! (another when one is full), put into the group's `WriteBatch` as one value
//! each (see [`crate::batch`]).

use rocksdb::{ColumnFamily, WriteBatch};

use crate::batch::BatchBuilder;
use crate::keys;
use crate::types::{Offset, PartitionId, TopicId};

/// A batch starts with room for this much, and grows as records come.
const INITIAL_CAPACITY: usize = 4096;

#[derive(Default)]
pub(super) struct OpenBatches {
    open: Vec<(TopicId, PartitionId, BatchBuilder)>,
}

impl OpenBatches {
    /// Adds a sealed record with the next offset of `partition`.
    pub fn push(&mut self, topic: TopicId, partition: PartitionId, offset: Offset, record: &[u8]) {
        let open = self
            .open
            .iter_mut()
            .rev()
            .find(|(t, p, _)| *t == topic && *p == partition)
            .map(|(_, _, b)| b)
            .filter(|b| b.next_offset() == offset && b.has_room(record.len()));
        match open {
            Some(b) => b.push(record),
            None => {
                let mut b = BatchBuilder::new(offset, INITIAL_CAPACITY.max(record.len() + 4));
                b.push(record);
                self.open.push((topic, partition, b));
            }
        }
    }

    /// Puts every open batch into `batch` under its base offset's key. Called
    /// at the end of a group, and before any other command of the group is
    /// added, so a trim or a topic deletion later in the group applies to
    /// the records before it, as it would have to records put one by one.
    pub fn flush(&mut self, batch: &mut WriteBatch, records: &ColumnFamily) {
        for (topic, partition, mut b) in self.open.drain(..) {
            batch.put_cf(
                records,
                keys::record_key(topic, partition, b.base()),
                b.finish(),
            );
        }
    }
}

//! Retention: trims the oldest records of a partition by age and size.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::read::{base_offset, damaged};
use crate::batch::Records;
use crate::codec;
use crate::error::{storage, Error, Result};
use crate::keys;
use crate::topic::TopicState;
use crate::types::{Offset, PartitionId};
use crate::writer::Update;

use super::Log;

impl Log {
    /// Applies the topic's retention to one partition: deletes records older than
    /// `max_age` and the oldest records beyond `max_bytes`, but never the newest
    /// record (it anchors the partition's next offset across restarts). Returns
    /// the number of records removed. Blocking (reads), then one write.
    pub async fn apply_retention(
        &self,
        topic: &Arc<TopicState>,
        partition: PartitionId,
        now_ms: u64,
    ) -> Result<u64> {
        let tail = &topic.partitions[partition as usize];
        let (start, end) = (tail.start(), tail.end());
        if end <= start + 1 {
            return Ok(0);
        }
        let (log, t) = (self.clone(), topic.clone());
        let Cut {
            new_start,
            removed_bytes,
            cut_ms,
        } = tokio::task::spawn_blocking(move || {
            log.retention_cut(&t, partition, start, end, now_ms)
        })
        .await
        .map_err(|_| Error::ShuttingDown)??;
        if new_start <= start {
            return Ok(0);
        }
        // Index entries up to the last removed record's time go too.
        let trim = Update::Trim {
            topic: topic.id(),
            partition,
            from: start,
            to: new_start,
            index_until_ms: cut_ms,
        };
        self.write(vec![trim], false).await?;
        tail.start.store(new_start, Ordering::Release);
        let _ = tail
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(removed_bytes))
            });
        topic.notify_tail();
        Ok(new_start - start)
    }

    /// Where retention cuts `partition` (whose records are `[start, end)`):
    /// past everything older than `max_age`, then past the oldest records
    /// for as long as the partition is over `max_bytes`, but never past the
    /// newest record. Blocking.
    fn retention_cut(
        &self,
        topic: &TopicState,
        partition: PartitionId,
        start: Offset,
        end: Offset,
        now_ms: u64,
    ) -> Result<Cut> {
        let retention = topic.meta.retention;
        let mut target = start;
        if let Some(age) = retention.max_age_ms {
            target =
                target.max(self.offset_for_time(topic, partition, now_ms.saturating_sub(age))?);
        }
        let target = target.min(end - 1);
        let bytes = topic.partitions[partition as usize]
            .bytes
            .load(Ordering::Relaxed);
        let excess = retention
            .max_bytes
            .map_or(0, |max| bytes.saturating_sub(max));
        // One pass from the start over whole stored batches (a batch is
        // removed whole or kept, like Kafka's segments): sizes of what goes,
        // up to the age target and then for as long as the size limit is
        // exceeded. The batch holding the newest record always stays.
        let mut it = self.records_from(topic, partition, start, end);
        let mut cut = Cut {
            new_start: start,
            removed_bytes: 0,
            cut_ms: 0,
        };
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let base = base_offset(topic, partition, k)?;
            let records = Records::new(v).map_err(damaged(topic, partition, base))?;
            let next = base + u64::from(records.record_count());
            if next >= end || (next > target && cut.removed_bytes >= excess) {
                break;
            }
            let mut newest = 0..0;
            for range in records {
                newest = range.map_err(damaged(topic, partition, base))?;
                cut.removed_bytes += (newest.len() + keys::RECORD_KEY_LEN) as u64;
            }
            // Only the last removed record's time bounds the index trim.
            cut.cut_ms = codec::record_publish_time(&v[newest]).unwrap_or(cut.cut_ms);
            cut.new_start = next;
            it.next();
        }
        it.status().map_err(storage)?;
        Ok(cut)
    }
}

/// What a retention pass removes.
struct Cut {
    /// The partition's first offset after the cut.
    new_start: Offset,
    /// Bytes of the removed records (values and keys).
    removed_bytes: u64,
    /// Publish time of the last removed record.
    cut_ms: u64,
}

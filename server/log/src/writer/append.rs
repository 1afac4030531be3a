//! The writer's half of a publish: duplicate checks, offsets and publish
//! times, and the record, time-index and idempotency-key writes of one append
//! command, all into the group's batch.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rocksdb::{ColumnFamily, WriteBatch};

use super::batches::OpenBatches;
use super::{cf_handle, Advance, PendingRecord, Writer, TIME_INDEX_INTERVAL_MS};
use crate::codec::seal_record;
use crate::dedup::{ByFingerprint, Lookup, NewKey, Seen};
use crate::error::Result;
use crate::keys::{self, Cf};
use crate::topic::TopicState;
use crate::types::{AppendResult, PartitionId};

/// What the writer does with one record of an append.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// A new record; with what its idempotency key's lookup found, when it
    /// has one.
    Write(Option<NewKey>),
    /// Its idempotency key was committed before.
    Duplicate(Seen),
    /// Its idempotency key appeared earlier in the same command.
    SameAs(usize),
}

/// The column families an append writes, looked up once per command (the
/// records go through the group's [`OpenBatches`]).
struct AppendCfs<'a> {
    time_index: &'a ColumnFamily,
    dedup: &'a ColumnFamily,
}

impl Writer {
    /// Adds one append command to `batch`; returns one result per record, in
    /// order. Fails as a whole (nothing added) when a duplicate lookup fails.
    pub(super) fn add_append(
        &mut self,
        batch: &mut WriteBatch,
        topic: &Arc<TopicState>,
        records: Vec<PendingRecord>,
        now: u64,
        (advances, batches): (&mut Vec<Advance>, &mut OpenBatches),
    ) -> Result<Vec<AppendResult>> {
        let db = self.db.clone();
        let cfs = AppendCfs {
            time_index: cf_handle(&db, Cf::TimeIndex),
            dedup: cf_handle(&db, Cf::Dedup),
        };
        let plan = self.plan(batch, &cfs, topic, &records, now)?;
        let mut results: Vec<AppendResult> = Vec::with_capacity(records.len());
        for (record, plan) in records.into_iter().zip(plan) {
            let result = match plan {
                Plan::Write(new_key) => {
                    let record = (record, new_key);
                    self.add_record(batch, &cfs, topic, record, now, (advances, batches))
                }
                Plan::Duplicate(seen) => AppendResult {
                    partition: seen.partition,
                    offset: seen.offset,
                    duplicate: true,
                },
                Plan::SameAs(j) => AppendResult {
                    duplicate: true,
                    ..results[j]
                },
            };
            results.push(result);
        }
        Ok(results)
    }

    /// Decides every duplicate before touching the batch (beyond dropping
    /// expired dedup buckets), so a failed lookup fails the whole command and
    /// never writes part of it.
    fn plan(
        &mut self,
        batch: &mut WriteBatch,
        cfs: &AppendCfs<'_>,
        topic: &TopicState,
        records: &[PendingRecord],
        now: u64,
    ) -> Result<Vec<Plan>> {
        let mut plan = Vec::with_capacity(records.len());
        if !records.iter().any(|r| !r.idempotency_key.is_empty()) {
            plan.resize(records.len(), Plan::Write(None));
            return Ok(plan);
        }
        self.dedup.prune(now);
        let id = topic.meta.id;
        // The first record of this command with each key, by the key's
        // fingerprint (one hash per key serves this and the lookup).
        let mut first_in_command: ByFingerprint<usize> = ByFingerprint::default();
        for (i, r) in records.iter().enumerate() {
            let key = r.idempotency_key.as_str();
            if key.is_empty() {
                plan.push(Plan::Write(None));
                continue;
            }
            let fp = self.dedup.fingerprint(id, key.as_bytes());
            // A fingerprint collision with another key falls through to the
            // lookup, and the first key keeps the map entry (at worst a
            // repeat of the second key is written twice, never dropped).
            let same = first_in_command
                .get(&fp)
                .filter(|&&j| records[j].idempotency_key == key);
            plan.push(match same {
                Some(&j) => Plan::SameAs(j),
                None => match self.dedup.lookup(&self.db, cfs.dedup, (id, key, fp), now)? {
                    Lookup::Seen(seen) => Plan::Duplicate(seen),
                    Lookup::New(new_key) => {
                        first_in_command.entry(fp).or_insert(i);
                        Plan::Write(Some(new_key))
                    }
                },
            });
        }
        if let Some((from, to)) = self.dedup.expired_range(topic.meta.id, now) {
            batch.delete_range_cf(cfs.dedup, from, to);
        }
        Ok(plan)
    }

    /// Gives a record its offset and publish time, seals it and adds it to
    /// its partition's record batch; remembers its idempotency key (as its
    /// lookup found it) for the group's dedup values, or adds its key entry
    /// to `batch`; adds a time-index entry when due.
    fn add_record(
        &mut self,
        batch: &mut WriteBatch,
        cfs: &AppendCfs<'_>,
        topic: &Arc<TopicState>,
        (
            PendingRecord {
                partition,
                mut record,
                idempotency_key,
            },
            new_key,
        ): (PendingRecord, Option<NewKey>),
        now: u64,
        (advances, batches): (&mut Vec<Advance>, &mut OpenBatches),
    ) -> AppendResult {
        let id = topic.meta.id;
        let tail = &topic.partitions[partition as usize];
        // Only this thread writes `next`, `last_publish_ms` and `last_index_ms`.
        let offset = tail.next.load(Relaxed);
        tail.next.store(offset + 1, Relaxed);
        let publish_ms = now.max(tail.last_publish_ms.load(Relaxed));
        tail.last_publish_ms.store(publish_ms, Relaxed);
        seal_record(&mut record, publish_ms);
        let bytes = (record.len() + keys::RECORD_KEY_LEN) as u64;
        tail.bytes.fetch_add(bytes, Relaxed);
        if let Some(new_key) = new_key {
            let seen = Seen {
                partition,
                offset,
                publish_ms,
            };
            if let Some((k, v)) = self.dedup.remember(id, idempotency_key, new_key, seen) {
                batch.put_cf(cfs.dedup, k, v);
            }
        }
        batches.push(topic, partition, offset, &record);
        let last_indexed = tail.last_index_ms.load(Relaxed);
        if last_indexed == 0 || publish_ms >= last_indexed + TIME_INDEX_INTERVAL_MS {
            batch.put_cf(
                cfs.time_index,
                keys::time_index_key(id, partition, publish_ms, offset),
                [],
            );
            tail.last_index_ms.store(publish_ms, Relaxed);
        }
        advance(advances, topic, partition, offset, bytes);
        AppendResult {
            partition,
            offset,
            duplicate: false,
        }
    }
}

/// Records that `offset` of `partition` (`bytes` of it) commits with this
/// group.
fn advance(
    advances: &mut Vec<Advance>,
    topic: &Arc<TopicState>,
    partition: PartitionId,
    offset: u64,
    bytes: u64,
) {
    match advances
        .iter_mut()
        .rev()
        .find(|a| Arc::ptr_eq(&a.topic, topic) && a.partition == partition)
    {
        Some(a) => {
            a.end = offset + 1;
            a.events += 1;
            a.bytes += bytes;
        }
        None => advances.push(Advance {
            topic: topic.clone(),
            partition,
            end: offset + 1,
            events: 1,
            bytes,
        }),
    }
}

//! The writer's typed commands: every write other than an append, said in
//! domain terms (restate's log-server `DataUpdate` / `MetadataUpdate` are the
//! model).
//!
//! Callers hand the writer ids, seqs and structs; only [`Update::encode`] turns
//! them into column families, keys ([`crate::keys`]) and values. So a key
//! layout changes in one place, and writes that must land together (a dead
//! letter and the seq high-water mark that covers it, a redrive's delete and
//! put) are one command that cannot be half-built.
//!
//! | command | column family: what it writes |
//! |---|---|
//! | `PutTopic` | `meta`: topic metadata (JSON) |
//! | `DeleteTopic` | `meta`: drops the topic; `records`, `time_index`, `dedup`: `DeleteRange` over the topic id |
//! | `PutSubscription` | `meta`: subscription metadata (JSON) |
//! | `DeleteSubscription` | `meta`: drops the subscription; `subs`, `dlq`: `DeleteRange` over its id |
//! | `PutIds` | `meta`: the id allocator |
//! | `Trim` | `records`, `time_index`: `DeleteRange` over a partition's oldest records |
//! | `PutAckState` | `subs`: one partition's ack state |
//! | `DeadLetter` | `dlq`: the entry; `subs`: the next dead-letter seq |
//! | `PurgeDeadLetter` | `dlq`: deletes the entry |
//! | `Redrive` | `dlq`: deletes the entry; `subs`: puts it on the redrive queue |
//! | `PutRedrive` | `subs`: rewrites a redrive-queue entry (its attempts) |
//! | `DropRedrive` | `subs`: deletes a redrive-queue entry |
//! | `PutAudit` | `audit`: one audit record (JSON) under its time and id |
//! | `TrimAudit` | `audit`: `DeleteRange` over the records older than a time |

use eventbus_broker::AuditRecord;

use crate::delivery::acks::PartitionAcks;
use crate::delivery::dead_letter::DeadLetterEntry;
use crate::keys::{self, Cf, MetaKind};
use crate::meta::{SubscriptionMeta, TopicMeta};
use crate::types::{Offset, PartitionId, SubscriptionId, TopicId, UnixMillis};

/// One write the writer applies in a group's batch; see the module docs.
#[derive(Debug, Clone)]
pub enum Update {
    /// Stores a topic's metadata under its name.
    PutTopic(TopicMeta),
    /// Removes a topic's metadata and every record, time-index entry and
    /// idempotency key of its id.
    DeleteTopic { id: TopicId, name: String },
    /// Stores a subscription's metadata (create, update, pause).
    PutSubscription(SubscriptionMeta),
    /// Removes a subscription's metadata and all of its state: ack state,
    /// redrive queue, dead-letter seq and dead letters.
    DeleteSubscription {
        id: SubscriptionId,
        topic: TopicId,
        name: String,
    },
    /// Persists the next topic and subscription ids.
    PutIds(IdAllocator),
    /// Drops records `[from, to)` of a partition, and its time-index entries
    /// before (`index_until_ms`, `to`).
    Trim {
        topic: TopicId,
        partition: PartitionId,
        from: Offset,
        to: Offset,
        index_until_ms: UnixMillis,
    },
    /// Stores one partition's ack state.
    PutAckState {
        sub: SubscriptionId,
        partition: PartitionId,
        acks: PartitionAcks,
    },
    /// Adds a dead-letter entry and, in the same batch, raises the
    /// subscription's dead-letter seq high-water mark past it, so a seq is
    /// never handed out twice.
    DeadLetter {
        sub: SubscriptionId,
        entry: DeadLetterEntry,
    },
    /// Deletes one dead letter.
    PurgeDeadLetter { sub: SubscriptionId, seq: u64 },
    /// Moves a dead letter to the redrive queue under the same seq: one batch
    /// deletes it from the DLQ and adds `entry`, so a crash leaves it on
    /// exactly one side.
    Redrive {
        sub: SubscriptionId,
        entry: DeadLetterEntry,
    },
    /// Rewrites a redrive-queue entry (its attempt count changed).
    PutRedrive {
        sub: SubscriptionId,
        entry: DeadLetterEntry,
    },
    /// Removes a redrive-queue entry (settled, dead-lettered again, or sought
    /// past).
    DropRedrive { sub: SubscriptionId, seq: u64 },
    /// Stores one audit record under its time and id (both already
    /// assigned).
    PutAudit(AuditRecord),
    /// Drops every audit record older than `before_ms` (audit retention).
    TrimAudit { before_ms: UnixMillis },
}

/// Where [`Update::encode`] puts its writes: a RocksDB `WriteBatch` in the
/// writer, a list in tests.
pub trait Sink {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]);
    fn delete(&mut self, cf: Cf, key: &[u8]);
    /// Deletes `[from, to)`.
    fn delete_range(&mut self, cf: Cf, from: &[u8], to: &[u8]);
}

impl Update {
    /// The command that removes `sub` and all of its state.
    pub fn delete_subscription(sub: &SubscriptionMeta) -> Update {
        Update::DeleteSubscription {
            id: sub.id,
            topic: sub.topic_id,
            name: sub.name.clone(),
        }
    }

    /// Writes this command's keys and values into `out`, in the order a
    /// batch applies them.
    pub fn encode(&self, out: &mut impl Sink) {
        match self {
            Update::PutTopic(meta) => {
                out.put(Cf::Meta, &keys::topic_meta_key(&meta.name), &to_json(meta))
            }
            Update::DeleteTopic { id, name } => {
                let (start, end) = keys::topic_range(*id);
                out.delete(Cf::Meta, &keys::topic_meta_key(name));
                for cf in [Cf::Records, Cf::TimeIndex, Cf::Dedup] {
                    out.delete_range(cf, &start, &end);
                }
            }
            Update::PutSubscription(meta) => out.put(
                Cf::Meta,
                &keys::subscription_meta_key(meta.topic_id, &meta.name),
                &to_json(meta),
            ),
            Update::DeleteSubscription { id, topic, name } => {
                let (start, end) = keys::subscription_range(*id);
                out.delete(Cf::Meta, &keys::subscription_meta_key(*topic, name));
                out.delete_range(Cf::Subs, &start, &end);
                out.delete_range(Cf::Dlq, &start, &end);
            }
            Update::PutIds(ids) => out.put(
                Cf::Meta,
                &keys::meta_key(MetaKind::IdAllocator),
                &ids.encode(),
            ),
            Update::Trim {
                topic,
                partition,
                from,
                to,
                index_until_ms,
            } => {
                out.delete_range(
                    Cf::Records,
                    &keys::record_key(*topic, *partition, *from),
                    &keys::record_key(*topic, *partition, *to),
                );
                out.delete_range(
                    Cf::TimeIndex,
                    &keys::time_index_key(*topic, *partition, 0, 0),
                    &keys::time_index_key(*topic, *partition, *index_until_ms, *to),
                );
            }
            Update::PutAckState {
                sub,
                partition,
                acks,
            } => out.put(
                Cf::Subs,
                &keys::sub_state_key(*sub, *partition),
                &acks.encode(),
            ),
            Update::DeadLetter { sub, entry } => {
                out.put(Cf::Dlq, &keys::dlq_key(*sub, entry.seq), &entry.encode());
                let next_seq = entry.seq + 1;
                out.put(Cf::Subs, &keys::dlq_seq_key(*sub), &next_seq.to_be_bytes());
            }
            Update::PurgeDeadLetter { sub, seq } => out.delete(Cf::Dlq, &keys::dlq_key(*sub, *seq)),
            Update::Redrive { sub, entry } => {
                out.delete(Cf::Dlq, &keys::dlq_key(*sub, entry.seq));
                out.put(
                    Cf::Subs,
                    &keys::redrive_key(*sub, entry.seq),
                    &entry.encode(),
                );
            }
            Update::PutRedrive { sub, entry } => out.put(
                Cf::Subs,
                &keys::redrive_key(*sub, entry.seq),
                &entry.encode(),
            ),
            Update::DropRedrive { sub, seq } => {
                out.delete(Cf::Subs, &keys::redrive_key(*sub, *seq))
            }
            Update::PutAudit(record) => out.put(
                Cf::Audit,
                &keys::audit_key(record.time_ms, record.id),
                &to_json(record),
            ),
            Update::TrimAudit { before_ms } => out.delete_range(
                Cf::Audit,
                &keys::audit_key(0, 0),
                &keys::audit_key(*before_ms, 0),
            ),
        }
    }

    /// About how many bytes this command adds to a batch, to bound a group's
    /// size: at most what it writes for log, subscription and dead-letter
    /// data, a flat estimate for metadata (small JSON).
    pub fn size_hint(&self) -> usize {
        const META: usize = 256;
        // A varint takes at most 10 bytes.
        const VARINT: usize = 10;
        match self {
            Update::PutTopic(_) | Update::PutSubscription(_) | Update::PutIds(_) => META,
            Update::DeleteTopic { .. } | Update::DeleteSubscription { .. } => META,
            Update::Trim { .. } => 2 * (keys::RECORD_KEY_LEN + keys::TIME_INDEX_KEY_LEN),
            Update::PutAckState { acks, .. } => {
                keys::SUB_STATE_KEY_LEN
                    + 1
                    + VARINT * (3 + acks.settled.len() + 2 * acks.attempts.len())
            }
            Update::DeadLetter { entry, .. }
            | Update::Redrive { entry, .. }
            | Update::PutRedrive { entry, .. } => {
                2 * keys::REDRIVE_KEY_LEN + 64 + entry.reason.len() + entry.record.len()
            }
            Update::PurgeDeadLetter { .. } => keys::DLQ_KEY_LEN,
            Update::DropRedrive { .. } => keys::REDRIVE_KEY_LEN,
            // JSON adds at most about 200 bytes of names and quotes, and
            // escapes at most 6 bytes per byte of text.
            Update::PutAudit(record) => keys::AUDIT_KEY_LEN + 200 + 6 * record.size_bytes(),
            Update::TrimAudit { .. } => 2 * keys::AUDIT_KEY_LEN,
        }
    }
}

/// The next topic and subscription ids; ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdAllocator {
    pub next_topic: u32,
    pub next_subscription: u32,
}

impl IdAllocator {
    /// A new data dir's first ids.
    pub const FIRST: IdAllocator = IdAllocator {
        next_topic: 1,
        next_subscription: 1,
    };

    /// Value of [`MetaKind::IdAllocator`]: next topic id u32, next subscription id u32.
    pub fn encode(&self) -> [u8; 8] {
        let mut v = [0u8; 8];
        v[0..4].copy_from_slice(&self.next_topic.to_be_bytes());
        v[4..8].copy_from_slice(&self.next_subscription.to_be_bytes());
        v
    }

    /// `None` when `v` is not 8 bytes.
    pub fn decode(v: &[u8]) -> Option<IdAllocator> {
        let v: &[u8; 8] = v.try_into().ok()?;
        Some(IdAllocator {
            next_topic: u32::from_be_bytes(v[0..4].try_into().ok()?),
            next_subscription: u32::from_be_bytes(v[4..8].try_into().ok()?),
        })
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("metadata types always serialize")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::meta::{Retention, SubscriptionConfig};
    use crate::types::StartPosition;

    /// One write as the batch would get it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Raw {
        Put(Cf, Vec<u8>, Vec<u8>),
        Delete(Cf, Vec<u8>),
        DeleteRange(Cf, Vec<u8>, Vec<u8>),
    }

    impl Sink for Vec<Raw> {
        fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
            self.push(Raw::Put(cf, key.to_vec(), value.to_vec()));
        }
        fn delete(&mut self, cf: Cf, key: &[u8]) {
            self.push(Raw::Delete(cf, key.to_vec()));
        }
        fn delete_range(&mut self, cf: Cf, from: &[u8], to: &[u8]) {
            self.push(Raw::DeleteRange(cf, from.to_vec(), to.to_vec()));
        }
    }

    fn encoded(update: &Update) -> Vec<Raw> {
        let mut out = Vec::new();
        update.encode(&mut out);
        out
    }

    fn entry(seq: u64) -> DeadLetterEntry {
        DeadLetterEntry {
            seq,
            partition: 1,
            offset: 300,
            attempts: 4,
            redrive_count: 2,
            first_delivery_ms: 10,
            last_delivery_ms: 20,
            dead_letter_ms: 30,
            reason: "poison".into(),
            record: Bytes::from_static(b"sealed record"),
        }
    }

    fn sub_meta() -> SubscriptionMeta {
        SubscriptionMeta {
            id: SubscriptionId(12),
            topic_id: TopicId(3),
            name: "billing".into(),
            config: SubscriptionConfig::default(),
            paused: true,
            start_position: StartPosition::Latest,
            created_ms: 99,
            creator: None,
        }
    }

    // Each test decodes what an update wrote through keys.rs and the value
    // codecs, and checks it is what the hand-built ops wrote before.

    #[test]
    fn ack_state_goes_to_its_partition_key() {
        let mut acks = PartitionAcks::starting_at(40);
        acks.settle(42);
        acks.attempts.insert(41, 3);
        let update = Update::PutAckState {
            sub: SubscriptionId(7),
            partition: 5,
            acks: acks.clone(),
        };
        let [Raw::Put(Cf::Subs, k, v)] = &encoded(&update)[..] else {
            panic!("one put in subs: {update:?}");
        };
        assert_eq!(k[..], keys::sub_state_key(SubscriptionId(7), 5));
        assert_eq!(PartitionAcks::decode(v).unwrap(), acks);
    }

    #[test]
    fn a_dead_letter_raises_the_seq_mark_past_itself_in_the_same_batch() {
        let sub = SubscriptionId(7);
        let update = Update::DeadLetter {
            sub,
            entry: entry(41),
        };
        let [Raw::Put(Cf::Dlq, k, v), Raw::Put(Cf::Subs, mark_key, mark)] = &encoded(&update)[..]
        else {
            panic!("dlq entry, then seq mark: {update:?}");
        };
        assert_eq!(keys::parse_dlq_key(k), Some((sub, 41)));
        assert_eq!(DeadLetterEntry::decode(41, v).unwrap(), entry(41));
        assert_eq!(mark_key[..], keys::dlq_seq_key(sub));
        assert_eq!(mark[..], 42u64.to_be_bytes());
    }

    #[test]
    fn a_redrive_moves_the_entry_under_the_same_seq() {
        let sub = SubscriptionId(2);
        let update = Update::Redrive {
            sub,
            entry: entry(9),
        };
        let [Raw::Delete(Cf::Dlq, gone), Raw::Put(Cf::Subs, k, v)] = &encoded(&update)[..] else {
            panic!("dlq delete, then redrive put: {update:?}");
        };
        assert_eq!(keys::parse_dlq_key(gone), Some((sub, 9)));
        assert_eq!(keys::parse_redrive_key(k), Some((sub, 9)));
        assert_eq!(DeadLetterEntry::decode(9, v).unwrap(), entry(9));
        // Rewriting a queued entry writes the same key as the redrive did.
        let rewrite = encoded(&Update::PutRedrive {
            sub,
            entry: entry(9),
        });
        assert_eq!(rewrite, [Raw::Put(Cf::Subs, k.clone(), v.clone())]);
    }

    #[test]
    fn drops_and_purges_delete_one_key() {
        let sub = SubscriptionId(2);
        assert_eq!(
            encoded(&Update::DropRedrive { sub, seq: 5 }),
            [Raw::Delete(Cf::Subs, keys::redrive_key(sub, 5).to_vec())]
        );
        assert_eq!(
            encoded(&Update::PurgeDeadLetter { sub, seq: 5 }),
            [Raw::Delete(Cf::Dlq, keys::dlq_key(sub, 5).to_vec())]
        );
    }

    #[test]
    fn deleting_a_topic_drops_its_metadata_and_every_keyed_range() {
        let id = TopicId(8);
        let raw = encoded(&Update::DeleteTopic {
            id,
            name: "orders".into(),
        });
        let (start, end) = keys::topic_range(id);
        let range = |cf| Raw::DeleteRange(cf, start.to_vec(), end.to_vec());
        assert_eq!(
            raw,
            [
                Raw::Delete(Cf::Meta, keys::topic_meta_key("orders")),
                range(Cf::Records),
                range(Cf::TimeIndex),
                range(Cf::Dedup),
            ]
        );
    }

    #[test]
    fn deleting_a_subscription_drops_its_metadata_state_and_dead_letters() {
        let meta = sub_meta();
        let raw = encoded(&Update::delete_subscription(&meta));
        let (start, end) = keys::subscription_range(meta.id);
        let range = |cf| Raw::DeleteRange(cf, start.to_vec(), end.to_vec());
        assert_eq!(
            raw,
            [
                Raw::Delete(Cf::Meta, keys::subscription_meta_key(TopicId(3), "billing")),
                range(Cf::Subs),
                range(Cf::Dlq),
            ]
        );
        // The ranges cover every kind of subs key and every dead letter.
        for k in [
            keys::sub_state_key(meta.id, u32::MAX).to_vec(),
            keys::redrive_key(meta.id, u64::MAX).to_vec(),
            keys::dlq_seq_key(meta.id).to_vec(),
            keys::dlq_key(meta.id, u64::MAX).to_vec(),
        ] {
            assert!(k.as_slice() >= start.as_slice() && k.as_slice() < end.as_slice());
        }
    }

    #[test]
    fn metadata_round_trips_as_json_under_its_name() {
        let topic = TopicMeta {
            id: TopicId(4),
            name: "orders".into(),
            partitions: 3,
            retention: Retention {
                max_age_ms: Some(60_000),
                max_bytes: None,
            },
            created_ms: 5,
            creator: Some("ops".into()),
        };
        let [Raw::Put(Cf::Meta, k, v)] = &encoded(&Update::PutTopic(topic.clone()))[..] else {
            panic!("one meta put");
        };
        assert_eq!(*k, keys::topic_meta_key("orders"));
        assert_eq!(serde_json::from_slice::<TopicMeta>(v).unwrap(), topic);

        let sub = sub_meta();
        let [Raw::Put(Cf::Meta, k, v)] = &encoded(&Update::PutSubscription(sub.clone()))[..] else {
            panic!("one meta put");
        };
        assert_eq!(*k, keys::subscription_meta_key(sub.topic_id, &sub.name));
        assert_eq!(serde_json::from_slice::<SubscriptionMeta>(v).unwrap(), sub);

        let ids = IdAllocator {
            next_topic: 70_000,
            next_subscription: 3,
        };
        let [Raw::Put(Cf::Meta, k, v)] = &encoded(&Update::PutIds(ids))[..] else {
            panic!("one meta put");
        };
        assert_eq!(k[..], keys::meta_key(MetaKind::IdAllocator));
        assert_eq!(IdAllocator::decode(v), Some(ids));
        assert_eq!(IdAllocator::decode(&v[..7]), None);
    }

    #[test]
    fn a_trim_drops_old_records_and_their_index_entries_only() {
        let (topic, partition) = (TopicId(6), 2);
        let raw = encoded(&Update::Trim {
            topic,
            partition,
            from: 10,
            to: 25,
            index_until_ms: 1_000,
        });
        let [Raw::DeleteRange(Cf::Records, a, b), Raw::DeleteRange(Cf::TimeIndex, c, d)] = &raw[..]
        else {
            panic!("records range, then index range: {raw:?}");
        };
        assert_eq!(keys::parse_record_key(a), Some((topic, partition, 10)));
        assert_eq!(keys::parse_record_key(b), Some((topic, partition, 25)));
        assert_eq!(
            keys::parse_time_index_key(c),
            Some((topic, partition, 0, 0))
        );
        assert_eq!(
            keys::parse_time_index_key(d),
            Some((topic, partition, 1_000, 25))
        );
    }

    #[test]
    fn audit_records_go_under_their_time_and_id_and_trims_cut_by_time() {
        let record = AuditRecord {
            id: 5,
            time_ms: 1_000,
            principal: "ops".into(),
            action: "DeleteTopic".into(),
            target: "orders".into(),
            result: "OK".into(),
            ..Default::default()
        };
        let update = Update::PutAudit(record.clone());
        let [Raw::Put(Cf::Audit, k, v)] = &encoded(&update)[..] else {
            panic!("one audit put: {update:?}");
        };
        assert_eq!(keys::parse_audit_key(k), Some((1_000, 5)));
        assert_eq!(serde_json::from_slice::<AuditRecord>(v).unwrap(), record);
        assert!(update.size_hint() >= k.len() + v.len());

        let [Raw::DeleteRange(Cf::Audit, from, to)] =
            &encoded(&Update::TrimAudit { before_ms: 1_000 })[..]
        else {
            panic!("one audit range");
        };
        assert_eq!(keys::parse_audit_key(from), Some((0, 0)));
        // Everything of an earlier millisecond goes, nothing of 1000 itself.
        assert!(keys::audit_key(999, u64::MAX).as_slice() < to.as_slice());
        assert!(k.as_slice() >= to.as_slice());
    }

    #[test]
    fn size_hints_cover_what_big_updates_write() {
        let mut acks = PartitionAcks::starting_at(1 << 40);
        for o in (0..500u64).map(|i| (1 << 40) + 2 + 1_000 * i) {
            acks.settle(o);
            acks.attempts.insert(o + 1, u32::MAX);
        }
        let mut big = entry(1);
        big.record = Bytes::from(vec![7u8; 100_000]);
        for update in [
            Update::PutAckState {
                sub: SubscriptionId(1),
                partition: 0,
                acks,
            },
            Update::DeadLetter {
                sub: SubscriptionId(1),
                entry: big.clone(),
            },
            Update::Redrive {
                sub: SubscriptionId(1),
                entry: big,
            },
        ] {
            let written: usize = encoded(&update)
                .iter()
                .map(|r| match r {
                    Raw::Put(_, k, v) => k.len() + v.len(),
                    Raw::Delete(_, k) => k.len(),
                    Raw::DeleteRange(_, a, b) => a.len() + b.len(),
                })
                .sum();
            assert!(
                update.size_hint() >= written,
                "{} < {written} bytes written",
                update.size_hint()
            );
        }
    }
}

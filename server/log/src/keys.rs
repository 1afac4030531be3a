//! RocksDB key layout.
//!
//! Every integer is big-endian so that byte order equals numeric order, which is
//! what makes range scans and `DeleteRange` over a topic or partition work.
//!
//! | column family | key                                             | value                          |
//! |---------------|-------------------------------------------------|--------------------------------|
//! | `meta`        | kind:u8 (+ name / ids, see [`MetaKind`])         | JSON metadata or a counter     |
//! | `records`     | topic:u32 partition:u32 base offset:u64          | record batch ([`crate::batch`]) |
//! | `time_index`  | topic:u32 partition:u32 publish_ms:u64 offset:u64 | empty                        |
//! | `subs`        | sub:u32 0x01 partition:u32                       | per-partition delivery state   |
//! | `subs`        | sub:u32 0x02 seq:u64                             | redriven dead letter (pending) |
//! | `subs`        | sub:u32 0x03                                     | next dead-letter seq, u64      |
//! | `dlq`         | sub:u32 seq:u64                                  | dead-letter entry              |
//! | `dedup`       | topic:u32 bucket:u64 0xFF group:u64              | the group's keys ([`crate::dedup`]) |
//! | `dedup`       | topic:u32 bucket:u64 idempotency key             | partition:u32 offset:u64 publish_ms:u64 |
//! | `audit`       | time_ms:u64 id:u64                               | JSON audit record              |
//!
//! Kind bytes are permanent: a retired kind is never reused.

use crate::types::{Offset, PartitionId, SubscriptionId, TopicId, UnixMillis};

/// A column family, named without borrowing the DB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    Meta,
    Records,
    TimeIndex,
    Subs,
    Dlq,
    Dedup,
    Audit,
}

impl Cf {
    /// Every column family the store opens, in creation order.
    /// A data dir written before a column family existed gets it at the
    /// next open (`create_missing_column_families`), empty.
    pub const ALL: [Cf; 7] = [
        Cf::Meta,
        Cf::Records,
        Cf::TimeIndex,
        Cf::Subs,
        Cf::Dlq,
        Cf::Dedup,
        Cf::Audit,
    ];

    /// The RocksDB name; permanent, like the key layouts.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Records => "records",
            Cf::TimeIndex => "time_index",
            Cf::Subs => "subs",
            Cf::Dlq => "dlq",
            Cf::Dedup => "dedup",
            Cf::Audit => "audit",
        }
    }
}

/// First byte of every key in the `meta` column family.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    /// Value: on-disk format version, u32.
    FormatVersion = 0x01,
    /// Value: next topic id u32, then next subscription id u32.
    IdAllocator = 0x02,
    /// Value: u64 incremented at every open; seeds lease generations so that an ack
    /// id from a previous run can never match a lease of this run.
    Incarnation = 0x03,
    /// Key: kind, topic name. Value: JSON `TopicMeta`.
    Topic = 0x10,
    /// Key: kind, topic id u32, subscription name. Value: JSON `SubscriptionMeta`.
    Subscription = 0x11,
}

/// First byte after the subscription id in the `subs` column family.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    /// Per-partition ack floor, settled set and attempt counts.
    PartitionState = 0x01,
    /// Key: sub, kind, DLQ seq u64. Value: the redriven dead-letter entry, waiting
    /// for redelivery. Written in the same batch that deletes the DLQ entry.
    Redrive = 0x02,
    /// Key: sub, kind. Value: the next dead-letter seq, u64. Written in the same
    /// batch as every new dead-letter entry, so a seq is never handed out twice,
    /// not even after a purge or a redrive emptied the queue and the server
    /// restarted (seqs name DLQ entries *and* redrive-queue entries).
    DlqSeq = 0x03,
}

pub const RECORD_KEY_LEN: usize = 16;
pub const TIME_INDEX_KEY_LEN: usize = 24;
pub const SUB_STATE_KEY_LEN: usize = 9;

pub fn meta_key(kind: MetaKind) -> [u8; 1] {
    [kind as u8]
}

pub fn topic_meta_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(MetaKind::Topic as u8);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Prefix of all subscription metadata of one topic.
pub fn subscription_meta_prefix(topic: TopicId) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = MetaKind::Subscription as u8;
    k[1..5].copy_from_slice(&topic.0.to_be_bytes());
    k
}

pub fn subscription_meta_key(topic: TopicId, name: &str) -> Vec<u8> {
    let mut k = subscription_meta_prefix(topic).to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn record_key(topic: TopicId, partition: PartitionId, offset: Offset) -> [u8; RECORD_KEY_LEN] {
    let mut k = [0u8; RECORD_KEY_LEN];
    k[0..4].copy_from_slice(&topic.0.to_be_bytes());
    k[4..8].copy_from_slice(&partition.to_be_bytes());
    k[8..16].copy_from_slice(&offset.to_be_bytes());
    k
}

/// Decodes a `records` key into (topic, partition, offset): the base offset
/// of the batch stored under it.
pub fn parse_record_key(key: &[u8]) -> Option<(TopicId, PartitionId, Offset)> {
    if key.len() != RECORD_KEY_LEN {
        return None;
    }
    Some((
        TopicId(u32::from_be_bytes(key[0..4].try_into().ok()?)),
        u32::from_be_bytes(key[4..8].try_into().ok()?),
        u64::from_be_bytes(key[8..16].try_into().ok()?),
    ))
}

/// Key range `[start, end)` covering every key of a topic in a CF whose keys start
/// with the topic id (`records`, `time_index`, `dedup`).
pub fn topic_range(topic: TopicId) -> ([u8; 4], [u8; 4]) {
    // Topic ids stop below u32::MAX (see the id allocator), so +1 cannot overflow.
    (topic.0.to_be_bytes(), (topic.0 + 1).to_be_bytes())
}

pub fn time_index_key(
    topic: TopicId,
    partition: PartitionId,
    publish_ms: UnixMillis,
    offset: Offset,
) -> [u8; TIME_INDEX_KEY_LEN] {
    let mut k = [0u8; TIME_INDEX_KEY_LEN];
    k[0..4].copy_from_slice(&topic.0.to_be_bytes());
    k[4..8].copy_from_slice(&partition.to_be_bytes());
    k[8..16].copy_from_slice(&publish_ms.to_be_bytes());
    k[16..24].copy_from_slice(&offset.to_be_bytes());
    k
}

/// Decodes a `time_index` key into (topic, partition, publish_ms, offset).
pub fn parse_time_index_key(key: &[u8]) -> Option<(TopicId, PartitionId, UnixMillis, Offset)> {
    if key.len() != TIME_INDEX_KEY_LEN {
        return None;
    }
    Some((
        TopicId(u32::from_be_bytes(key[0..4].try_into().ok()?)),
        u32::from_be_bytes(key[4..8].try_into().ok()?),
        u64::from_be_bytes(key[8..16].try_into().ok()?),
        u64::from_be_bytes(key[16..24].try_into().ok()?),
    ))
}

pub fn sub_state_key(sub: SubscriptionId, partition: PartitionId) -> [u8; SUB_STATE_KEY_LEN] {
    let mut k = [0u8; SUB_STATE_KEY_LEN];
    k[0..4].copy_from_slice(&sub.0.to_be_bytes());
    k[4] = SubKind::PartitionState as u8;
    k[5..9].copy_from_slice(&partition.to_be_bytes());
    k
}

pub const REDRIVE_KEY_LEN: usize = 13;

pub fn redrive_key(sub: SubscriptionId, seq: u64) -> [u8; REDRIVE_KEY_LEN] {
    let mut k = [0u8; REDRIVE_KEY_LEN];
    k[0..4].copy_from_slice(&sub.0.to_be_bytes());
    k[4] = SubKind::Redrive as u8;
    k[5..13].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Decodes a redrive-queue key into (subscription, seq).
pub fn parse_redrive_key(key: &[u8]) -> Option<(SubscriptionId, u64)> {
    if key.len() != REDRIVE_KEY_LEN || key[4] != SubKind::Redrive as u8 {
        return None;
    }
    Some((
        SubscriptionId(u32::from_be_bytes(key[0..4].try_into().ok()?)),
        u64::from_be_bytes(key[5..13].try_into().ok()?),
    ))
}

pub const DLQ_SEQ_KEY_LEN: usize = 5;

/// Where a subscription's dead-letter seq high-water mark lives.
pub fn dlq_seq_key(sub: SubscriptionId) -> [u8; DLQ_SEQ_KEY_LEN] {
    let mut k = [0u8; DLQ_SEQ_KEY_LEN];
    k[0..4].copy_from_slice(&sub.0.to_be_bytes());
    k[4] = SubKind::DlqSeq as u8;
    k
}

pub const DLQ_KEY_LEN: usize = 12;

/// A dead-letter entry: seqs grow with each dead-lettering, so key order is
/// dead-letter order and the first key is the oldest entry.
pub fn dlq_key(sub: SubscriptionId, seq: u64) -> [u8; DLQ_KEY_LEN] {
    let mut k = [0u8; DLQ_KEY_LEN];
    k[0..4].copy_from_slice(&sub.0.to_be_bytes());
    k[4..12].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Decodes a `dlq` key into (subscription, seq).
pub fn parse_dlq_key(key: &[u8]) -> Option<(SubscriptionId, u64)> {
    if key.len() != DLQ_KEY_LEN {
        return None;
    }
    Some((
        SubscriptionId(u32::from_be_bytes(key[0..4].try_into().ok()?)),
        u64::from_be_bytes(key[4..12].try_into().ok()?),
    ))
}

/// Bytes before the idempotency key in a dedup key: topic and bucket.
pub const DEDUP_KEY_PREFIX: usize = 12;

/// An idempotency key of `topic` in dedup bucket `bucket` (see [`crate::dedup`]).
/// Buckets sort numerically within a topic, so expired buckets go with one
/// `DeleteRange`.
pub fn dedup_key(topic: TopicId, bucket: u64, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(DEDUP_KEY_PREFIX + key.len());
    k.extend_from_slice(&topic.0.to_be_bytes());
    k.extend_from_slice(&bucket.to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// The byte after the bucket that marks a group value: it never occurs in
/// UTF-8, so no idempotency key starts with it, and a bucket's group values
/// sort after its key entries.
pub const DEDUP_GROUP_MARK: u8 = 0xFF;

/// Length of a dedup group value's key.
pub const DEDUP_GROUP_KEY_LEN: usize = DEDUP_KEY_PREFIX + 1 + 8;

/// The value holding the keys of `topic` committed by group commit `group`,
/// in bucket `bucket` (see [`crate::dedup`]).
pub fn dedup_group_key(topic: TopicId, bucket: u64, group: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(DEDUP_GROUP_KEY_LEN);
    k.extend_from_slice(&topic.0.to_be_bytes());
    k.extend_from_slice(&bucket.to_be_bytes());
    k.push(DEDUP_GROUP_MARK);
    k.extend_from_slice(&group.to_be_bytes());
    k
}

/// What a `dedup` key of a topic names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupKey {
    /// A group value: (bucket, group).
    Group(u64, u64),
    /// One idempotency key's entry, in this bucket.
    Key(u64),
}

/// Decodes a `dedup` key (its topic is not checked).
pub fn parse_dedup_key(key: &[u8]) -> Option<DedupKey> {
    let bucket = u64::from_be_bytes(key.get(4..DEDUP_KEY_PREFIX)?.try_into().ok()?);
    match key.get(DEDUP_KEY_PREFIX) {
        Some(&DEDUP_GROUP_MARK) if key.len() == DEDUP_GROUP_KEY_LEN => Some(DedupKey::Group(
            bucket,
            u64::from_be_bytes(key[DEDUP_KEY_PREFIX + 1..].try_into().ok()?),
        )),
        Some(&DEDUP_GROUP_MARK) => None,
        _ => Some(DedupKey::Key(bucket)),
    }
}

pub const AUDIT_KEY_LEN: usize = 16;

/// An audit record: time first, so key order is time order and retention
/// is one `DeleteRange`; the record id keeps keys of one millisecond apart.
pub fn audit_key(time_ms: UnixMillis, id: u64) -> [u8; AUDIT_KEY_LEN] {
    let mut k = [0u8; AUDIT_KEY_LEN];
    k[0..8].copy_from_slice(&time_ms.to_be_bytes());
    k[8..16].copy_from_slice(&id.to_be_bytes());
    k
}

/// Decodes an `audit` key into (time_ms, id).
pub fn parse_audit_key(key: &[u8]) -> Option<(UnixMillis, u64)> {
    if key.len() != AUDIT_KEY_LEN {
        return None;
    }
    Some((
        u64::from_be_bytes(key[0..8].try_into().ok()?),
        u64::from_be_bytes(key[8..16].try_into().ok()?),
    ))
}

/// Key range `[start, end)` covering every `subs` / `dlq` key of one subscription.
pub fn subscription_range(sub: SubscriptionId) -> ([u8; 4], [u8; 4]) {
    (sub.0.to_be_bytes(), (sub.0 + 1).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_round_trip() {
        let k = record_key(TopicId(7), 3, 1 << 40);
        assert_eq!(k.len(), RECORD_KEY_LEN);
        assert_eq!(parse_record_key(&k), Some((TopicId(7), 3, 1 << 40)));
        assert_eq!(parse_record_key(&k[..15]), None);
    }

    #[test]
    fn record_keys_sort_numerically() {
        // Byte order must equal (topic, partition, offset) order, including across
        // byte boundaries where little-endian would sort wrongly.
        let mut keys = [
            record_key(TopicId(1), 0, 256),
            record_key(TopicId(1), 0, 255),
            record_key(TopicId(0), 1, 0),
            record_key(TopicId(1), 1, 0),
            record_key(TopicId(0), 0, u64::MAX),
        ];
        keys.sort();
        let parsed: Vec<_> = keys.iter().map(|k| parse_record_key(k).unwrap()).collect();
        assert_eq!(
            parsed,
            vec![
                (TopicId(0), 0, u64::MAX),
                (TopicId(0), 1, 0),
                (TopicId(1), 0, 255),
                (TopicId(1), 0, 256),
                (TopicId(1), 1, 0),
            ]
        );
    }

    #[test]
    fn time_index_keys_round_trip_and_sort_by_time() {
        let a = time_index_key(TopicId(2), 1, 1_000, 50);
        let b = time_index_key(TopicId(2), 1, 1_001, 10);
        assert!(a < b);
        assert_eq!(parse_time_index_key(&b), Some((TopicId(2), 1, 1_001, 10)));
    }

    #[test]
    fn topic_range_covers_exactly_one_topic() {
        let (start, end) = topic_range(TopicId(5));
        let inside = record_key(TopicId(5), u32::MAX, u64::MAX);
        let before = record_key(TopicId(4), u32::MAX, u64::MAX);
        let after = record_key(TopicId(6), 0, 0);
        assert!(inside.as_slice() >= start.as_slice() && inside.as_slice() < end.as_slice());
        assert!(before.as_slice() < start.as_slice());
        assert!(after.as_slice() >= end.as_slice());
    }

    #[test]
    fn sub_state_keys_group_by_subscription() {
        let (start, end) = subscription_range(SubscriptionId(9));
        let k = sub_state_key(SubscriptionId(9), 42);
        assert_eq!(k.len(), SUB_STATE_KEY_LEN);
        assert!(k.as_slice() >= start.as_slice() && k.as_slice() < end.as_slice());
        assert!(sub_state_key(SubscriptionId(9), 1) < sub_state_key(SubscriptionId(9), 2));
    }

    #[test]
    fn redrive_keys_round_trip_and_stay_inside_the_subscription() {
        let k = redrive_key(SubscriptionId(4), 1 << 33);
        assert_eq!(parse_redrive_key(&k), Some((SubscriptionId(4), 1 << 33)));
        assert_eq!(
            parse_redrive_key(&sub_state_key(SubscriptionId(4), 0)),
            None
        );
        assert_eq!(parse_redrive_key(&dlq_seq_key(SubscriptionId(4))), None);
        let (start, end) = subscription_range(SubscriptionId(4));
        assert!(k.as_slice() >= start.as_slice() && k.as_slice() < end.as_slice());
    }

    #[test]
    fn dedup_keys_stay_inside_their_topic() {
        let (start, end) = topic_range(TopicId(1));
        let k = dedup_key(TopicId(1), 9, "k");
        assert!(k.as_slice() >= start.as_slice() && k.as_slice() < end.as_slice());
        let g = dedup_group_key(TopicId(1), u64::MAX, u64::MAX);
        assert!(g.as_slice() >= start.as_slice() && g.as_slice() < end.as_slice());
    }

    #[test]
    fn dedup_group_values_sort_after_their_buckets_key_entries() {
        let key = dedup_key(TopicId(1), 9, "\u{10FFFF}");
        let group = dedup_group_key(TopicId(1), 9, 0);
        assert!(key < group && group < dedup_key(TopicId(1), 10, ""));
        assert_eq!(parse_dedup_key(&key), Some(DedupKey::Key(9)));
        assert_eq!(parse_dedup_key(&group), Some(DedupKey::Group(9, 0)));
        assert_eq!(parse_dedup_key(&group[..15]), None);
    }

    #[test]
    fn audit_keys_round_trip_and_sort_by_time_then_id() {
        let k = audit_key(1 << 40, 3);
        assert_eq!(parse_audit_key(&k), Some((1 << 40, 3)));
        assert_eq!(parse_audit_key(&k[..15]), None);
        assert!(audit_key(255, u64::MAX) < audit_key(256, 0));
        assert!(audit_key(256, 1) < audit_key(256, 2));
    }

    #[test]
    fn column_family_names_are_distinct() {
        let names: std::collections::HashSet<_> = Cf::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Cf::ALL.len());
    }

    #[test]
    fn meta_kinds_are_distinct_prefixes() {
        assert_eq!(topic_meta_key("orders")[0], MetaKind::Topic as u8);
        assert_eq!(
            subscription_meta_key(TopicId(1), "s")[0],
            MetaKind::Subscription as u8
        );
        assert_eq!(
            subscription_meta_key(TopicId(1), "s")[1..5],
            1u32.to_be_bytes()
        );
    }
}

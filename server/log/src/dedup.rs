//! Idempotent publish: the writer thread's duplicate check.
//!
//! A publish with a non-empty idempotency key is a duplicate when the same key
//! was committed to the same topic within the window (default 2 min). The check
//! runs in the writer, the one place that serialises publishes, so two
//! concurrent publishes of one key can never both be written.
//!
//! Keys live on disk (`dedup` CF: topic u32, bucket u64, key -> partition u32,
//! offset u64, publish_ms u64) so the window survives restarts and can be far
//! larger than memory; bucket = publish_ms / window. A lookup reads the current
//! and the previous bucket; buckets older than that are dropped with one
//! DeleteRange. Recent keys are also kept in memory to skip the disk reads on
//! retries that arrive quickly.

use std::collections::{HashMap, VecDeque};

use rocksdb::{ColumnFamily, DB};

use crate::error::{storage, Result};
use crate::keys::dedup_key;
use crate::types::{Offset, PartitionId, TopicId, UnixMillis};

/// Where a key was first committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub partition: PartitionId,
    pub offset: Offset,
    pub publish_ms: UnixMillis,
}

impl Seen {
    fn encode(&self) -> [u8; 20] {
        let mut v = [0u8; 20];
        v[0..4].copy_from_slice(&self.partition.to_be_bytes());
        v[4..12].copy_from_slice(&self.offset.to_be_bytes());
        v[12..20].copy_from_slice(&self.publish_ms.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<Seen> {
        Some(Seen {
            partition: u32::from_be_bytes(v.get(0..4)?.try_into().ok()?),
            offset: u64::from_be_bytes(v.get(4..12)?.try_into().ok()?),
            publish_ms: u64::from_be_bytes(v.get(12..20)?.try_into().ok()?),
        })
    }
}

/// The writer's dedup state.
pub struct Dedup {
    window_ms: u64,
    recent: HashMap<(TopicId, String), Seen>,
    /// Insertion order of `recent`, for pruning by age.
    order: VecDeque<(UnixMillis, TopicId, String)>,
    /// Per topic: buckets below this were already dropped from disk.
    dropped_below: HashMap<TopicId, u64>,
}

impl Dedup {
    pub fn new(window_ms: u64) -> Self {
        Dedup {
            window_ms: window_ms.max(1),
            recent: HashMap::new(),
            order: VecDeque::new(),
            dropped_below: HashMap::new(),
        }
    }

    pub fn bucket(&self, ms: UnixMillis) -> u64 {
        ms / self.window_ms
    }

    /// The earlier commit of `key` within the window, if any.
    pub fn lookup(
        &self,
        db: &DB,
        cf: &ColumnFamily,
        topic: TopicId,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<Seen>> {
        let fresh = |s: &Seen| now.saturating_sub(s.publish_ms) <= self.window_ms;
        if let Some(s) = self.recent.get(&(topic, key.to_string())) {
            return Ok(fresh(s).then_some(*s));
        }
        let bucket = self.bucket(now);
        for b in [bucket, bucket.saturating_sub(1)] {
            if let Some(v) = db
                .get_pinned_cf(cf, dedup_key(topic, b, key))
                .map_err(storage)?
            {
                if let Some(s) = Seen::decode(&v).filter(fresh) {
                    return Ok(Some(s));
                }
            }
        }
        Ok(None)
    }

    /// Records a key committed in this group; returns the disk key and value.
    pub fn remember(&mut self, topic: TopicId, key: &str, seen: Seen) -> (Vec<u8>, [u8; 20]) {
        self.recent.insert((topic, key.to_string()), seen);
        self.order
            .push_back((seen.publish_ms, topic, key.to_string()));
        (
            dedup_key(topic, self.bucket(seen.publish_ms), key),
            seen.encode(),
        )
    }

    /// Forgets in-memory keys older than the window.
    pub fn prune(&mut self, now: UnixMillis) {
        while let Some((ms, _, _)) = self.order.front() {
            if now.saturating_sub(*ms) <= self.window_ms {
                break;
            }
            let (_, topic, key) = self.order.pop_front().expect("peeked");
            if self
                .recent
                .get(&(topic, key.clone()))
                .is_some_and(|s| now.saturating_sub(s.publish_ms) > self.window_ms)
            {
                self.recent.remove(&(topic, key));
            }
        }
    }

    /// The on-disk range of buckets of `topic` that can no longer match, when
    /// it has not been dropped yet.
    pub fn expired_range(&mut self, topic: TopicId, now: UnixMillis) -> Option<(Vec<u8>, Vec<u8>)> {
        let keep_from = self.bucket(now).saturating_sub(1);
        let done = self.dropped_below.entry(topic).or_insert(0);
        if *done >= keep_from {
            return None;
        }
        *done = keep_from;
        Some((dedup_key(topic, 0, ""), dedup_key(topic, keep_from, "")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_round_trips_and_keys_group_by_bucket() {
        let s = Seen {
            partition: 3,
            offset: 99,
            publish_ms: 1234,
        };
        assert_eq!(Seen::decode(&s.encode()), Some(s));
        assert!(dedup_key(TopicId(1), 5, "zzz") < dedup_key(TopicId(1), 6, "aaa"));
        assert!(dedup_key(TopicId(1), u64::MAX, "z") < dedup_key(TopicId(2), 0, ""));
    }

    #[test]
    fn memory_prunes_by_age_and_ranges_expire_once() {
        let mut d = Dedup::new(1000);
        d.remember(
            TopicId(1),
            "k",
            Seen {
                partition: 0,
                offset: 0,
                publish_ms: 10,
            },
        );
        d.prune(500);
        assert_eq!(d.recent.len(), 1);
        d.prune(2000);
        assert!(d.recent.is_empty());
        assert!(d.expired_range(TopicId(1), 5_500).is_some());
        assert!(
            d.expired_range(TopicId(1), 5_600).is_none(),
            "same bucket: nothing new"
        );
    }
}

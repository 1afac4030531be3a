//! Idempotent publish: the writer thread's duplicate check.
//!
//! A publish with a non-empty idempotency key is a duplicate when the same key
//! was committed to the same topic within the window (default 2 min). The check
//! runs in the writer, the one place that serialises publishes, so two
//! concurrent publishes of one key can never both be written.
//!
//! Keys live on disk (`dedup` CF: topic u32, bucket u64, key -> partition u32,
//! offset u64, publish_ms u64) so the window survives restarts; bucket =
//! publish_ms / window. A disk lookup reads the current and the previous
//! bucket; buckets older than that are dropped with one DeleteRange.
//!
//! Almost every key is new, and a disk lookup for each one on the writer
//! thread halved publish throughput. So the writer also keeps an in-memory
//! *fingerprint* (a 64-bit keyed hash of topic and key) of every key this
//! process committed within the window, in time slices of a quarter window:
//! - a key whose fingerprint is absent was not committed within the window,
//!   *provided* memory holds every key committed since `now - window`
//!   ([`Dedup::complete_from`]: the process start, or later once slices were
//!   dropped to stay under [`MAX_REMEMBERED_KEYS`]); then no disk read runs;
//! - a key whose fingerprint is present (a retry, or in ~n/2^64 of cases a
//!   collision) is confirmed on disk, which holds the full key: a collision
//!   can never turn a new event into a "duplicate";
//! - at open, the window's keys are read back from disk
//!   ([`Dedup::recover`]); only when there are very many does memory start
//!   incomplete, and then every lookup goes to disk, as all of them used
//!   to, until one window has passed.
//!
//! Keys of the group being built are not on disk yet: they are kept with
//! their full key in `group` until the group's write succeeds (then their
//! fingerprints join the slices) or fails (then they are forgotten, so a
//! retry of a refused publish is not taken for a duplicate).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use rocksdb::{ColumnFamily, DB};

use crate::error::{storage, Result};
use crate::keys::{dedup_key, DEDUP_KEY_PREFIX};
use crate::types::{Offset, PartitionId, TopicId, UnixMillis};

/// Fingerprints kept in memory at most (~16 bytes each in a hash set, so
/// about 64 MiB). Past it the oldest slice is dropped and lookups of that
/// slice's time go to disk again.
pub const MAX_REMEMBERED_KEYS: usize = 4 << 20;

/// Keys of the window read back at open at most (a scan of about 50 ms).
pub const RECOVER_AT_MOST: usize = 200_000;

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

/// Fingerprints are already keyed hashes: the set uses them as they are.
#[derive(Default)]
pub struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A 64-bit keyed hash of a topic and an idempotency key.
pub type Fingerprint = u64;

type Fingerprints = HashSet<Fingerprint, BuildHasherDefault<Identity>>;

/// A map keyed by fingerprints, which are hashed as they are.
pub type ByFingerprint<V> = HashMap<Fingerprint, V, BuildHasherDefault<Identity>>;

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The key was committed within the window, here.
    Seen(Seen),
    /// A new key; its fingerprint goes to [`Dedup::remember`].
    New(Fingerprint),
}

/// Fingerprints of keys committed in one stretch of publish time.
struct Slice {
    /// `publish_ms / slice_ms` of every key in it.
    index: u64,
    /// The latest publish time of a key in it.
    newest_ms: UnixMillis,
    keys: Fingerprints,
}

/// A key committed in the group being built.
struct GroupKey {
    fingerprint: u64,
    topic: TopicId,
    key: String,
    seen: Seen,
}

/// The writer's dedup state.
pub struct Dedup {
    window_ms: u64,
    slice_ms: u64,
    hasher: RandomState,
    /// Oldest first.
    slices: VecDeque<Slice>,
    /// Memory holds the fingerprint of every key committed at or after this
    /// publish time.
    complete_from: UnixMillis,
    /// Keys of the group being built (not on disk yet): fingerprint ->
    /// index in `group_keys`, which holds the full keys.
    group: ByFingerprint<usize>,
    group_keys: Vec<GroupKey>,
    /// Per topic: buckets below this were already dropped from disk.
    dropped_below: HashMap<TopicId, u64>,
}

impl Dedup {
    /// `started_ms`: when this process started committing (nothing
    /// committed before it is in memory).
    pub fn new(window_ms: u64, started_ms: UnixMillis) -> Self {
        let window_ms = window_ms.max(1);
        Dedup {
            window_ms,
            slice_ms: (window_ms / 4).max(1),
            hasher: RandomState::new(),
            slices: VecDeque::new(),
            complete_from: started_ms,
            group: HashMap::default(),
            group_keys: Vec::new(),
            dropped_below: HashMap::new(),
        }
    }

    pub fn bucket(&self, ms: UnixMillis) -> u64 {
        ms / self.window_ms
    }

    /// The fingerprint of `key` in `topic`: what [`Dedup::lookup`] takes.
    pub fn fingerprint(&self, topic: TopicId, key: &[u8]) -> Fingerprint {
        let mut h = self.hasher.build_hasher();
        h.write_u32(topic.0);
        h.write(key);
        h.finish()
    }

    /// The state after a restart: the fingerprints of the window's keys of
    /// `topics` read back from disk, so memory is complete from the start.
    /// With more than [`RECOVER_AT_MOST`] such keys the reading stops, and
    /// lookups go to disk until one window has passed.
    pub fn recover(
        db: &DB,
        cf: &ColumnFamily,
        topics: impl IntoIterator<Item = TopicId>,
        window_ms: u64,
        now: UnixMillis,
    ) -> Result<Dedup> {
        let mut d = Dedup::new(window_ms, now);
        let from_bucket = d.bucket(now).saturating_sub(1);
        let mut found: Vec<(UnixMillis, u64)> = Vec::new();
        for topic in topics {
            let start = dedup_key(topic, from_bucket, "");
            let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
            for item in db.iterator_cf(cf, mode) {
                let (k, v) = item.map_err(storage)?;
                if k.get(..4) != Some(&topic.0.to_be_bytes()[..]) {
                    break;
                }
                let Some(seen) = Seen::decode(&v) else {
                    continue;
                };
                if now.saturating_sub(seen.publish_ms) > d.window_ms {
                    continue;
                }
                if found.len() == RECOVER_AT_MOST {
                    tracing::info!(
                        keys = RECOVER_AT_MOST,
                        "many idempotency keys in the window: their lookups read the disk until it has passed"
                    );
                    return Ok(Dedup::new(window_ms, now));
                }
                found.push((
                    seen.publish_ms,
                    d.fingerprint(topic, &k[DEDUP_KEY_PREFIX..]),
                ));
            }
        }
        found.sort_unstable();
        for (publish_ms, fp) in found {
            d.insert(fp, publish_ms);
        }
        d.complete_from = 0;
        Ok(d)
    }

    /// Adds a committed key's fingerprint to the slice of its time.
    fn insert(&mut self, fp: u64, publish_ms: UnixMillis) {
        let index = publish_ms / self.slice_ms;
        match self.slices.back_mut() {
            Some(s) if s.index >= index => {
                // Publish times are per partition; one from a partition a
                // little behind the others joins the newest slice.
                s.keys.insert(fp);
                s.newest_ms = s.newest_ms.max(publish_ms);
            }
            _ => self.slices.push_back(Slice {
                index,
                newest_ms: publish_ms,
                keys: Fingerprints::from_iter([fp]),
            }),
        }
    }

    /// Fingerprints in memory (a handful of slices to add up).
    fn remembered(&self) -> usize {
        self.slices.iter().map(|s| s.keys.len()).sum()
    }

    /// The earlier commit of `key` (whose [`Dedup::fingerprint`] is `fp`)
    /// within the window, if any.
    pub fn lookup(
        &self,
        db: &DB,
        cf: &ColumnFamily,
        (topic, key, fp): (TopicId, &str, Fingerprint),
        now: UnixMillis,
    ) -> Result<Lookup> {
        let fresh = |s: &Seen| now.saturating_sub(s.publish_ms) <= self.window_ms;
        if let Some(g) = self.in_group(fp, topic, key) {
            return Ok(match fresh(&g.seen) {
                true => Lookup::Seen(g.seen),
                false => Lookup::New(fp),
            });
        }
        let complete = now.saturating_sub(self.window_ms) >= self.complete_from;
        if complete && !self.slices.iter().any(|s| s.keys.contains(&fp)) {
            return Ok(Lookup::New(fp));
        }
        let bucket = self.bucket(now);
        for b in [bucket, bucket.saturating_sub(1)] {
            if let Some(v) = db
                .get_pinned_cf(cf, dedup_key(topic, b, key))
                .map_err(storage)?
            {
                if let Some(s) = Seen::decode(&v).filter(fresh) {
                    return Ok(Lookup::Seen(s));
                }
            }
        }
        Ok(Lookup::New(fp))
    }

    /// Records a key committed in the group being built, with the
    /// fingerprint its lookup returned; returns its disk key and value.
    pub fn remember(
        &mut self,
        topic: TopicId,
        key: String,
        fingerprint: Fingerprint,
        seen: Seen,
    ) -> (Vec<u8>, [u8; 20]) {
        let disk_key = dedup_key(topic, self.bucket(seen.publish_ms), &key);
        // On a fingerprint collision inside one group the map keeps the
        // first key; `in_group` finds the others by a scan.
        self.group
            .entry(fingerprint)
            .or_insert(self.group_keys.len());
        self.group_keys.push(GroupKey {
            fingerprint,
            topic,
            key,
            seen,
        });
        (disk_key, seen.encode())
    }

    /// The entry of the group being built for `key`, if it has one.
    fn in_group(&self, fp: u64, topic: TopicId, key: &str) -> Option<&GroupKey> {
        let same = |g: &&GroupKey| g.topic == topic && g.key == key;
        let first = self.group.get(&fp).map(|&i| &self.group_keys[i])?;
        if same(&first) {
            return Some(first);
        }
        self.group_keys
            .iter()
            .filter(|g| g.fingerprint == fp)
            .find(same)
    }

    /// The group's write succeeded: its keys are now on disk, and in memory
    /// as fingerprints.
    pub fn group_written(&mut self) {
        let group = std::mem::take(&mut self.group_keys);
        for g in &group {
            self.insert(g.fingerprint, g.seen.publish_ms);
        }
        // Keep the allocation for the next group.
        self.group_keys = group;
        self.group_keys.clear();
        self.group.clear();
        while self.remembered() > MAX_REMEMBERED_KEYS {
            let Some(dropped) = self.slices.pop_front() else {
                break;
            };
            self.complete_from = self.complete_from.max(dropped.newest_ms + 1);
            tracing::debug!(
                keys = dropped.keys.len(),
                "idempotency keys over the memory bound: lookups of their time go to disk"
            );
        }
    }

    /// The group's write failed: none of its keys were stored.
    pub fn group_failed(&mut self) {
        self.group.clear();
        self.group_keys.clear();
    }

    /// Forgets slices wholly older than the window.
    pub fn prune(&mut self, now: UnixMillis) {
        while let Some(front) = self.slices.front() {
            if now.saturating_sub(front.newest_ms) <= self.window_ms {
                break;
            }
            self.slices.pop_front();
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

    /// [`Dedup::remember`] for a key a lookup found new.
    fn remember(d: &mut Dedup, topic: TopicId, key: String, seen: Seen) -> (Vec<u8>, [u8; 20]) {
        let fingerprint = d.fingerprint(topic, key.as_bytes());
        d.remember(topic, key, fingerprint, seen)
    }

    /// [`Dedup::lookup`] of `key`, fingerprinted here.
    fn lookup(
        d: &Dedup,
        db: &DB,
        cf: &ColumnFamily,
        topic: TopicId,
        key: &str,
        now: UnixMillis,
    ) -> Result<Lookup> {
        d.lookup(
            db,
            cf,
            (topic, key, d.fingerprint(topic, key.as_bytes())),
            now,
        )
    }

    /// The earlier commit a lookup found, if any.
    fn found(lookup: Result<Lookup>) -> Option<Seen> {
        match lookup.unwrap() {
            Lookup::Seen(seen) => Some(seen),
            Lookup::New(_) => None,
        }
    }

    fn seen(offset: u64, publish_ms: u64) -> Seen {
        Seen {
            partition: 0,
            offset,
            publish_ms,
        }
    }

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
    fn slices_prune_by_age_and_ranges_expire_once() {
        let mut d = Dedup::new(1000, 0);
        remember(&mut d, TopicId(1), "k".into(), seen(0, 10));
        remember(&mut d, TopicId(1), "j".into(), seen(1, 600));
        d.group_written();
        assert_eq!((d.slices.len(), d.remembered()), (2, 2));
        d.prune(1_005);
        assert_eq!(d.remembered(), 2, "10 is still inside the window at 1005");
        d.prune(1_100);
        assert_eq!((d.slices.len(), d.remembered()), (1, 1));
        d.prune(2_000);
        assert!(d.slices.is_empty());
        assert!(d.expired_range(TopicId(1), 5_500).is_some());
        assert!(
            d.expired_range(TopicId(1), 5_600).is_none(),
            "same bucket: nothing new"
        );
    }

    #[test]
    fn a_failed_group_leaves_nothing_behind() {
        let mut d = Dedup::new(1000, 0);
        remember(&mut d, TopicId(1), "k".into(), seen(0, 10));
        assert_eq!(d.group_keys.len(), 1);
        d.group_failed();
        assert!(d.group.is_empty() && d.group_keys.is_empty() && d.slices.is_empty());
    }

    #[test]
    fn fingerprints_differ_by_topic_and_key() {
        let d = Dedup::new(1000, 0);
        let fp = |t: u32, k: &str| d.fingerprint(TopicId(t), k.as_bytes());
        assert_ne!(fp(1, "k"), fp(2, "k"));
        assert_ne!(fp(1, "k"), fp(1, "k2"));
        assert_eq!(fp(1, "k"), fp(1, "k"));
    }

    /// A RocksDB with the store's column families, in a temp dir.
    fn db() -> (tempfile::TempDir, DB) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::store::open::open_db(dir.path(), 1 << 20).expect("open");
        (dir, db)
    }

    fn dedup_cf(db: &DB) -> &ColumnFamily {
        db.cf_handle(crate::keys::Cf::Dedup.name())
            .expect("dedup cf")
    }

    #[test]
    fn a_key_of_the_group_being_built_is_found_before_it_is_written() {
        let (_dir, db) = db();
        let mut d = Dedup::new(60_000, 0);
        let now = 100_000;
        let first = seen(7, now);
        remember(&mut d, TopicId(1), "k".into(), first);
        let cf = dedup_cf(&db);
        assert_eq!(
            found(lookup(&d, &db, cf, TopicId(1), "k", now)),
            Some(first)
        );
        assert_eq!(found(lookup(&d, &db, cf, TopicId(2), "k", now)), None);
        d.group_failed();
        assert_eq!(found(lookup(&d, &db, cf, TopicId(1), "k", now)), None);
    }

    #[test]
    fn recovery_reads_back_the_window_and_memory_answers_misses() {
        let (_dir, db) = db();
        let cf = dedup_cf(&db);
        let window = 60_000;
        let now = 10 * window;
        let mut before = Dedup::new(window, 0);
        let (old, recent) = (seen(1, now - window - 1), seen(2, now - 10));
        for (key, s) in [("old", old), ("recent", recent)] {
            let (k, v) = remember(&mut before, TopicId(3), key.into(), s);
            db.put_cf(cf, k, v).unwrap();
        }
        let after = Dedup::recover(&db, cf, [TopicId(3)], window, now).unwrap();
        assert_eq!(after.complete_from, 0, "every key of the window was read");
        assert_eq!(after.remembered(), 1, "the key outside the window is not");
        assert_eq!(
            found(lookup(&after, &db, cf, TopicId(3), "recent", now)),
            Some(recent)
        );
        assert_eq!(found(lookup(&after, &db, cf, TopicId(3), "old", now)), None);
        assert_eq!(found(lookup(&after, &db, cf, TopicId(3), "new", now)), None);
    }
}

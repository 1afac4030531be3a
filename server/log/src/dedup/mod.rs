//! Idempotent publish: the writer thread's duplicate check.
//!
//! A publish with a non-empty idempotency key is a duplicate when the same key
//! was committed to the same topic within the window (default 2 min). The check
//! runs in the writer, the one place that serialises publishes, so two
//! concurrent publishes of one key can never both be written.
//!
//! Keys live on disk in the `dedup` CF, in the same atomic write as their
//! records, so the window survives restarts. Two forms share it, both under
//! (topic u32, bucket u64), bucket = publish_ms / window, so expired buckets
//! go with one `DeleteRange`:
//! - a **group value** (key: topic, bucket, 0xFF, group u64): every key of
//!   the topic that one group commit wrote, with where each was committed.
//!   One RocksDB entry per group, not per key: a memtable insert per key
//!   was most of what idempotency cost the writer;
//! - a **key entry** (key: topic, bucket, idempotency key), one per key,
//!   found by a point lookup. Only keys memory does not hold are written so:
//!   past [`MAX_REMEMBERED_KEYS`], a 64-bit fingerprint collision, and
//!   every key written by versions before group values.
//!
//! The writer keeps in memory, for every key of the window in a group
//! value, a *fingerprint* (a 64-bit keyed hash of topic and key) and the
//! group it is in, in time slices of a quarter window. A lookup:
//! - finds a fingerprint in memory (a retry, or in ~n/2^56 of cases a
//!   collision) and confirms it against the full key in the group value on
//!   disk: a collision never turns a new event into a "duplicate";
//! - finds no fingerprint: the key is new, unless some keys of the window are
//!   key entries only ([`Dedup::disk_lookups_until`]); then it looks for
//!   one, as every lookup did before memory held the keys.
//!
//! At open, [`Dedup::recover`] reads the window's group values back into
//! memory (a sequential read of one value per group), and notes any key
//! entries of the window. Memory is never partial: what it cannot hold is a
//! key entry.
//!
//! Keys of the group being built are not on disk yet: they are kept with
//! their full key in `group` until [`Dedup::seal_group`] adds the group's
//! values to its batch and the write succeeds (then they join memory) or
//! fails (then they are forgotten, so a retry of a refused publish is not
//! taken for a duplicate).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use rocksdb::{ColumnFamily, WriteBatch, DB};

mod recover;
mod value;

pub use value::Seen;
use value::{group_entries, put_group_entry, GROUP_VALUE_V1};

use crate::error::{storage, Result};
use crate::keys::{dedup_group_key, dedup_key};
use crate::types::{TopicId, UnixMillis};

/// Keys held in memory at most (a fingerprint and a group number, 16 bytes
/// each in hash maps kept at most 7/8 full with power-of-two sizes: up to
/// ~140 MiB). Past it a key is written as a key
/// entry of its own, and keys memory does not know are looked up on disk
/// until that key has left the window.
pub const MAX_REMEMBERED_KEYS: usize = 4 << 20;

/// A group commit's number, unique among the group values on disk: each
/// process starts above every number it read back.
type GroupId = u64;

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

/// A permutation of the byte values that puts the hex digits first: `0`-`9`
/// are 0-9, `a`-`f` 10-15, every other byte keeps its order after them. It
/// is one-to-one, so keys that differ in their last byte only never share a
/// fingerprint.
const LAST_BYTE_RANK: [u8; 256] = {
    let mut rank = [0u8; 256];
    let mut next = 16usize;
    let mut b = 0usize;
    while b < 256 {
        rank[b] = match b as u8 {
            d @ b'0'..=b'9' => d - b'0',
            x @ b'a'..=b'f' => x - b'a' + 10,
            _ => {
                next += 1;
                (next - 1) as u8
            }
        };
        b += 1;
    }
    rank
};

/// A map keyed by fingerprints, which are hashed as they are.
pub type ByFingerprint<V> = HashMap<Fingerprint, V, BuildHasherDefault<Identity>>;

/// A key a lookup found new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewKey {
    pub fingerprint: Fingerprint,
    /// Memory holds another key with this fingerprint: this one is written
    /// as a key entry.
    collides: bool,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The key was committed within the window, here.
    Seen(Seen),
    /// A new key; it goes to [`Dedup::remember`].
    New(NewKey),
}

/// Keys committed in one stretch of publish time, each with its group.
struct Slice {
    /// `publish_ms / slice_ms` of its groups' newest keys.
    index: u64,
    /// The latest publish time of a key in it.
    newest_ms: UnixMillis,
    keys: ByFingerprint<GroupId>,
    /// The bucket each group's values are stored under.
    groups: HashMap<GroupId, u64>,
}

/// A key committed in the group being built.
struct GroupKey {
    fingerprint: u64,
    topic: TopicId,
    key: String,
    seen: Seen,
    /// Written as a key entry, not into the group's values.
    alone: bool,
}

/// The group values one [`Dedup::seal_group`] added to a batch.
#[derive(Debug, Clone)]
struct Sealed {
    group: GroupId,
    bucket: u64,
    newest_ms: UnixMillis,
    /// Their keys, in `group_keys`.
    keys: std::ops::Range<usize>,
}

/// The writer's dedup state.
pub struct Dedup {
    window_ms: u64,
    slice_ms: u64,
    hasher: RandomState,
    /// Oldest first.
    slices: VecDeque<Slice>,
    /// Keys in `slices`.
    remembered: usize,
    max_remembered: usize,
    /// Some keys of the window may be key entries only: until this publish
    /// time has left the window, a key memory does not know is looked up on
    /// disk too.
    disk_lookups_until: UnixMillis,
    /// The number of the next group value.
    next_group: GroupId,
    /// Keys of the group being built (not on disk yet): fingerprint ->
    /// index in `group_keys`, which holds the full keys.
    group: ByFingerprint<usize>,
    group_keys: Vec<GroupKey>,
    /// What the batch being built holds, in order.
    sealed: Vec<Sealed>,
    /// Per topic: buckets below this were already dropped from disk.
    dropped_below: HashMap<TopicId, u64>,
}

impl Dedup {
    /// The state of a data dir with no idempotency keys.
    pub fn new(window_ms: u64) -> Self {
        let window_ms = window_ms.max(1);
        Dedup {
            window_ms,
            slice_ms: (window_ms / 4).max(1),
            hasher: RandomState::new(),
            slices: VecDeque::new(),
            remembered: 0,
            max_remembered: MAX_REMEMBERED_KEYS,
            disk_lookups_until: 0,
            next_group: 0,
            group: HashMap::default(),
            group_keys: Vec::new(),
            sealed: Vec::new(),
            dropped_below: HashMap::new(),
        }
    }

    pub fn bucket(&self, ms: UnixMillis) -> u64 {
        ms / self.window_ms
    }

    fn fresh(&self, seen: &Seen, now: UnixMillis) -> bool {
        now.saturating_sub(seen.publish_ms) <= self.window_ms
    }

    /// The fingerprint of `key` in `topic`: what [`Dedup::lookup`] takes.
    ///
    /// A keyed hash of the topic and all of the key but its last byte, with
    /// that byte's [`LAST_BYTE_RANK`] XORed into the low (and top) bits. Keys that
    /// count up (the SDK's default keys end in a hex counter, many
    /// producers' in a decimal one) thus land in one aligned block of 16
    /// slots of the maps, which use fingerprints as they are: a run of keys
    /// shares a few cache lines and one page instead of touching a random
    /// line and page each. Distinct keys still get distinct fingerprints
    /// when they differ only in the last byte, and collide with probability
    /// 2^-56 otherwise (a collision is confirmed away on disk, see
    /// [`Dedup::lookup`]).
    pub fn fingerprint(&self, topic: TopicId, key: &[u8]) -> Fingerprint {
        let mut h = self.hasher.build_hasher();
        h.write_u32(topic.0);
        match key.split_last() {
            Some((&last, head)) => {
                h.write(head);
                let rank = u64::from(LAST_BYTE_RANK[usize::from(last)]);
                // Also into the top bits: the maps tell the slots of one
                // block apart by a 7-bit tag taken from there, so keys of a
                // run get different tags, not one shared tag that makes
                // every probe compare them all.
                h.finish() ^ rank ^ (rank << 57)
            }
            None => h.finish(),
        }
    }

    /// The slice for a group whose newest key was published at `newest_ms`.
    /// A new slice gets room for `capacity` keys: growing a map of many
    /// keys rehashes every one.
    fn slice_for(&mut self, newest_ms: UnixMillis, capacity: usize) -> &mut Slice {
        let index = newest_ms / self.slice_ms;
        // Publish times are per partition; a group whose newest key is from a
        // partition a little behind the others joins the newest slice.
        if !matches!(self.slices.back(), Some(s) if s.index >= index) {
            let capacity = capacity.min(self.max_remembered.saturating_sub(self.remembered));
            self.slices.push_back(Slice {
                index,
                newest_ms,
                keys: ByFingerprint::with_capacity_and_hasher(capacity, Default::default()),
                groups: HashMap::new(),
            });
        }
        let last = self.slices.len() - 1;
        let slice = &mut self.slices[last];
        slice.newest_ms = slice.newest_ms.max(newest_ms);
        slice
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
        let mut new = NewKey {
            fingerprint: fp,
            collides: false,
        };
        if let Some(g) = self.in_group(fp, topic, key) {
            return Ok(match self.fresh(&g.seen, now) {
                true => Lookup::Seen(g.seen),
                false => Lookup::New(new),
            });
        }
        // Newest first: a key committed again after its window passed is
        // in a newer slice too.
        for slice in self.slices.iter().rev() {
            let Some(group) = slice.keys.get(&fp) else {
                continue;
            };
            let Some(&bucket) = slice.groups.get(group) else {
                continue;
            };
            let Some(value) = db
                .get_pinned_cf(cf, dedup_group_key(topic, bucket, *group))
                .map_err(storage)?
            else {
                // Gone with its bucket, which left the window (else the
                // fingerprint is another key's).
                new.collides |= bucket + 1 >= self.bucket(now);
                continue;
            };
            match group_entries(&value)?
                .into_iter()
                .find(|(k, _)| *k == key.as_bytes())
            {
                Some((_, seen)) if self.fresh(&seen, now) => return Ok(Lookup::Seen(seen)),
                Some(_) => {}
                None => new.collides = true,
            }
        }
        if now <= self.disk_lookups_until {
            let bucket = self.bucket(now);
            for b in [bucket, bucket.saturating_sub(1)] {
                if let Some(v) = db
                    .get_pinned_cf(cf, dedup_key(topic, b, key))
                    .map_err(storage)?
                {
                    if let Some(s) = Seen::decode(&v).filter(|s| self.fresh(s, now)) {
                        return Ok(Lookup::Seen(s));
                    }
                }
            }
        }
        Ok(Lookup::New(new))
    }

    /// Records a key committed in the group being built, as its lookup
    /// found it. Returns the key entry to write, for a key that is not to go
    /// into the group's values ([`Dedup::seal_group`] adds those).
    pub fn remember(
        &mut self,
        topic: TopicId,
        key: String,
        new: NewKey,
        seen: Seen,
    ) -> Option<(Vec<u8>, [u8; 20])> {
        let alone = new.collides || self.remembered + self.group_keys.len() >= self.max_remembered;
        let entry = alone.then(|| {
            self.disk_lookups_until = self
                .disk_lookups_until
                .max(seen.publish_ms + self.window_ms);
            (
                dedup_key(topic, self.bucket(seen.publish_ms), &key),
                seen.encode(),
            )
        });
        // On a fingerprint collision inside one group the map keeps the
        // first key; `in_group` finds the others by a scan.
        self.group
            .entry(new.fingerprint)
            .or_insert(self.group_keys.len());
        self.group_keys.push(GroupKey {
            fingerprint: new.fingerprint,
            topic,
            key,
            seen,
            alone,
        });
        entry
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

    /// Adds the values of the keys remembered since the last seal to the
    /// batch: one per topic, holding every such key that is not a key
    /// entry, all under the bucket of the newest (so none is dropped while a
    /// key is in the window). Called before any other write joins the batch
    /// (a topic's deletion must follow its keys) and at its end.
    pub fn seal_group(&mut self, batch: &mut WriteBatch, cf: &ColumnFamily) {
        let keys = self.sealed.last().map_or(0, |s| s.keys.end)..self.group_keys.len();
        let in_values = || self.group_keys[keys.clone()].iter().filter(|g| !g.alone);
        let Some(newest_ms) = in_values().map(|g| g.seen.publish_ms).max() else {
            return;
        };
        let bucket = self.bucket(newest_ms);
        let group = self.next_group;
        // Most groups touch one topic or a few.
        let mut values: Vec<(TopicId, Vec<u8>)> = Vec::new();
        for g in in_values() {
            let i = match values.iter().position(|(t, _)| *t == g.topic) {
                Some(i) => i,
                None => {
                    let mut v = Vec::with_capacity(1 + keys.len() * (g.key.len() + 20));
                    v.push(GROUP_VALUE_V1);
                    values.push((g.topic, v));
                    values.len() - 1
                }
            };
            put_group_entry(&mut values[i].1, &g.key, g.seen);
        }
        for (topic, value) in values {
            batch.put_cf(cf, dedup_group_key(topic, bucket, group), value);
        }
        self.next_group += 1;
        self.sealed.push(Sealed {
            group,
            bucket,
            newest_ms,
            keys,
        });
    }

    /// The group's write succeeded: its keys are now on disk, and the ones in
    /// its values join memory.
    pub fn group_written(&mut self) {
        let group_keys = std::mem::take(&mut self.group_keys);
        for sealed in std::mem::take(&mut self.sealed) {
            // A new slice is sized like the one before: the rate is much
            // the same.
            let capacity = self.slices.back().map_or(0, |s| s.keys.len());
            let slice = self.slice_for(sealed.newest_ms, capacity);
            slice.groups.insert(sealed.group, sealed.bucket);
            let mut added = 0;
            for g in group_keys[sealed.keys].iter().filter(|g| !g.alone) {
                if slice.keys.insert(g.fingerprint, sealed.group).is_none() {
                    added += 1;
                }
            }
            self.remembered += added;
        }
        // Keep the allocation for the next group.
        self.group_keys = group_keys;
        self.group_keys.clear();
        self.group.clear();
    }

    /// The group's write failed: none of its keys were stored.
    pub fn group_failed(&mut self) {
        self.group.clear();
        self.group_keys.clear();
        self.sealed.clear();
    }

    /// Forgets slices wholly older than the window.
    pub fn prune(&mut self, now: UnixMillis) {
        while let Some(front) = self.slices.front() {
            if now.saturating_sub(front.newest_ms) <= self.window_ms {
                break;
            }
            self.remembered -= front.keys.len();
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
    use crate::error::Error;
    use crate::keys::{parse_dedup_key, DedupKey};

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

    /// [`Dedup::lookup`] of `key`, fingerprinted here.
    fn lookup(d: &Dedup, db: &DB, topic: TopicId, key: &str, now: UnixMillis) -> Lookup {
        let fp = d.fingerprint(topic, key.as_bytes());
        d.lookup(db, dedup_cf(db), (topic, key, fp), now)
            .expect("lookup")
    }

    /// The earlier commit a lookup found, if any.
    fn found(d: &Dedup, db: &DB, topic: TopicId, key: &str, now: UnixMillis) -> Option<Seen> {
        match lookup(d, db, topic, key, now) {
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

    /// Commits one group of keys as the writer does: lookup, remember, seal,
    /// write, written. Returns how many keys became key entries.
    fn commit(d: &mut Dedup, db: &DB, keys: &[(TopicId, &str, Seen)]) -> usize {
        let mut batch = WriteBatch::default();
        let mut alone = 0;
        for &(topic, key, seen) in keys {
            let Lookup::New(new) = lookup(d, db, topic, key, seen.publish_ms) else {
                panic!("{key} is not new");
            };
            if let Some((k, v)) = d.remember(topic, key.into(), new, seen) {
                batch.put_cf(dedup_cf(db), k, v);
                alone += 1;
            }
        }
        d.seal_group(&mut batch, dedup_cf(db));
        db.write(batch).expect("write");
        d.group_written();
        alone
    }

    /// (group values, key entries) on disk.
    fn on_disk(db: &DB) -> (usize, usize) {
        let mut counts = (0, 0);
        for item in db.iterator_cf(dedup_cf(db), rocksdb::IteratorMode::Start) {
            let (k, _) = item.expect("read");
            match parse_dedup_key(&k) {
                Some(DedupKey::Group(..)) => counts.0 += 1,
                _ => counts.1 += 1,
            }
        }
        counts
    }

    #[test]
    fn seen_and_group_values_round_trip() {
        let s = Seen {
            partition: 3,
            offset: 99,
            publish_ms: 1234,
        };
        assert_eq!(Seen::decode(&s.encode()), Some(s));
        let mut value = vec![GROUP_VALUE_V1];
        put_group_entry(&mut value, "k", s);
        put_group_entry(&mut value, "", seen(1 << 40, 5));
        let entries = group_entries(&value).unwrap();
        assert_eq!(entries, vec![(&b"k"[..], s), (&b""[..], seen(1 << 40, 5))]);
        assert!(matches!(
            group_entries(&value[..value.len() - 1]),
            Err(Error::StorageCorruption(_))
        ));
        assert!(matches!(
            group_entries(&[9]),
            Err(Error::StorageCorruption(_))
        ));
    }

    #[test]
    fn one_value_per_topic_and_group_confirms_retries() {
        let (_dir, db) = db();
        let mut d = Dedup::new(60_000);
        let now = 100_000;
        let (a, b) = (TopicId(1), TopicId(2));
        let alone = commit(
            &mut d,
            &db,
            &[
                (a, "k1", seen(0, now)),
                (b, "k1", seen(7, now)),
                (a, "k2", seen(1, now)),
            ],
        );
        assert_eq!(alone, 0);
        assert_eq!(
            on_disk(&db),
            (2, 0),
            "one group value per topic, no key entry"
        );
        assert_eq!(found(&d, &db, a, "k2", now + 5), Some(seen(1, now)));
        assert_eq!(found(&d, &db, b, "k1", now + 5), Some(seen(7, now)));
        assert_eq!(found(&d, &db, b, "k2", now + 5), None);
        assert_eq!(
            found(&d, &db, a, "k1", now + 60_001),
            None,
            "outside the window"
        );
        commit(&mut d, &db, &[(a, "k3", seen(2, now + 10))]);
        assert_eq!(on_disk(&db), (3, 0));
        assert_eq!(d.sealed.len(), 0);
        assert_eq!(d.next_group, 2);
    }

    #[test]
    fn slices_prune_by_age_and_ranges_expire_once() {
        let (_dir, db) = db();
        let mut d = Dedup::new(1000);
        commit(&mut d, &db, &[(TopicId(1), "k", seen(0, 10))]);
        commit(&mut d, &db, &[(TopicId(1), "j", seen(1, 600))]);
        assert_eq!((d.slices.len(), d.remembered), (2, 2));
        d.prune(1_005);
        assert_eq!(d.remembered, 2, "10 is still inside the window at 1005");
        d.prune(1_100);
        assert_eq!((d.slices.len(), d.remembered), (1, 1));
        d.prune(2_000);
        assert!(d.slices.is_empty() && d.remembered == 0);
        assert!(d.expired_range(TopicId(1), 5_500).is_some());
        assert!(
            d.expired_range(TopicId(1), 5_600).is_none(),
            "same bucket: nothing new"
        );
    }

    #[test]
    fn a_failed_group_leaves_nothing_behind() {
        let (_dir, db) = db();
        let mut d = Dedup::new(1000);
        let Lookup::New(new) = lookup(&d, &db, TopicId(1), "k", 10) else {
            panic!("new");
        };
        assert_eq!(d.remember(TopicId(1), "k".into(), new, seen(0, 10)), None);
        d.seal_group(&mut WriteBatch::default(), dedup_cf(&db));
        assert_eq!((d.group_keys.len(), d.sealed.len()), (1, 1));
        d.group_failed();
        assert!(d.group.is_empty() && d.group_keys.is_empty() && d.sealed.is_empty());
        assert!(d.slices.is_empty());
        assert_eq!(found(&d, &db, TopicId(1), "k", 10), None);
    }

    #[test]
    fn fingerprints_differ_by_topic_and_key() {
        let d = Dedup::new(1000);
        let fp = |t: u32, k: &str| d.fingerprint(TopicId(t), k.as_bytes());
        assert_ne!(fp(1, "k"), fp(2, "k"));
        assert_ne!(fp(1, "k"), fp(1, "k2"));
        assert_eq!(fp(1, "k"), fp(1, "k"));
    }

    #[test]
    fn keys_that_count_up_get_neighbouring_distinct_fingerprints() {
        let d = Dedup::new(1000);
        let fp = |k: &str| d.fingerprint(TopicId(1), k.as_bytes());
        let run: Vec<u64> = "0123456789abcdef"
            .chars()
            .map(|c| fp(&format!("7f3a9c{c}")))
            .collect();
        // One aligned block of 16, every slot of it taken once.
        let block = run[0] & !0xF & (u64::MAX >> 7);
        let mut slots: Vec<u64> = run.iter().map(|f| (f ^ block) & (u64::MAX >> 7)).collect();
        slots.sort_unstable();
        assert_eq!(slots, (0..16).collect::<Vec<u64>>());
        // ... with 16 different tags (the maps' top 7 bits).
        let tags: std::collections::HashSet<u64> = run.iter().map(|f| f >> 57).collect();
        assert_eq!(tags.len(), 16);
        // Any two last bytes differ, so any two fingerprints do.
        let all: std::collections::HashSet<u64> = (0..=255u8)
            .map(|b| d.fingerprint(TopicId(1), &[b'k', b]))
            .collect();
        assert_eq!(all.len(), 256);
        assert_ne!(fp("x0"), fp("y0"), "the rest of the key is hashed");
    }

    #[test]
    fn last_byte_rank_is_a_permutation() {
        let mut seen = [false; 256];
        for &r in &LAST_BYTE_RANK {
            assert!(!seen[usize::from(r)], "rank {r} twice");
            seen[usize::from(r)] = true;
        }
        assert_eq!(LAST_BYTE_RANK[usize::from(b'7')], 7);
        assert_eq!(LAST_BYTE_RANK[usize::from(b'f')], 15);
    }

    #[test]
    fn a_key_of_the_group_being_built_is_found_before_it_is_written() {
        let (_dir, db) = db();
        let mut d = Dedup::new(60_000);
        let now = 100_000;
        let first = seen(7, now);
        let Lookup::New(new) = lookup(&d, &db, TopicId(1), "k", now) else {
            panic!("new");
        };
        d.remember(TopicId(1), "k".into(), new, first);
        assert_eq!(found(&d, &db, TopicId(1), "k", now), Some(first));
        assert_eq!(found(&d, &db, TopicId(2), "k", now), None);
        d.group_failed();
        assert_eq!(found(&d, &db, TopicId(1), "k", now), None);
    }

    #[test]
    fn a_fingerprint_collision_is_confirmed_away_and_stored_as_a_key_entry() {
        let (_dir, db) = db();
        let cf = dedup_cf(&db);
        let mut d = Dedup::new(60_000);
        let now = 100_000;
        let t = TopicId(1);
        commit(&mut d, &db, &[(t, "first", seen(0, now))]);
        // "second" with the fingerprint of "first", as a 64-bit collision.
        let fp = d.fingerprint(t, b"first");
        let Lookup::New(new) = d.lookup(&db, cf, (t, "second", fp), now).unwrap() else {
            panic!("a collision is not a duplicate");
        };
        assert!(new.collides);
        let entry = d.remember(t, "second".into(), new, seen(1, now));
        let (k, v) = entry.expect("a colliding key is a key entry");
        db.put_cf(cf, k, v).unwrap();
        d.seal_group(&mut WriteBatch::default(), cf);
        d.group_written();
        assert_eq!(d.remembered, 1, "memory keeps the first key");
        assert_eq!(
            d.lookup(&db, cf, (t, "second", fp), now + 1).unwrap(),
            Lookup::Seen(seen(1, now)),
            "found on disk"
        );
        assert_eq!(found(&d, &db, t, "first", now + 1), Some(seen(0, now)));
    }

    #[test]
    fn past_the_memory_bound_keys_are_key_entries_found_on_disk() {
        let (_dir, db) = db();
        let mut d = Dedup::new(60_000);
        d.max_remembered = 2;
        let now = 100_000;
        let t = TopicId(1);
        let alone = commit(
            &mut d,
            &db,
            &[
                (t, "a", seen(0, now)),
                (t, "b", seen(1, now)),
                (t, "c", seen(2, now)),
            ],
        );
        assert_eq!(alone, 1);
        assert_eq!(on_disk(&db), (1, 1));
        assert_eq!(d.remembered, 2);
        for (key, offset) in [("a", 0), ("b", 1), ("c", 2)] {
            assert_eq!(found(&d, &db, t, key, now + 10), Some(seen(offset, now)));
        }
        assert_eq!(found(&d, &db, t, "d", now + 10), None);
        assert_eq!(d.disk_lookups_until, now + 60_000);
    }

    #[test]
    fn recovery_reads_back_the_window_and_memory_answers_misses() {
        let (_dir, db) = db();
        let cf = dedup_cf(&db);
        let window = 60_000;
        let now = 10 * window;
        let mut before = Dedup::new(window);
        let t = TopicId(3);
        commit(&mut before, &db, &[(t, "old", seen(1, now - window - 1))]);
        commit(
            &mut before,
            &db,
            &[
                (t, "recent", seen(2, now - 10)),
                (TopicId(4), "x", seen(0, now - 10)),
            ],
        );
        let after = Dedup::recover(&db, cf, [t], window, now).unwrap();
        assert_eq!(after.disk_lookups_until, 0, "memory holds the window");
        assert_eq!(
            after.remembered, 1,
            "the key outside the window is not read"
        );
        assert_eq!(after.next_group, before.next_group);
        assert_eq!(
            found(&after, &db, t, "recent", now),
            Some(seen(2, now - 10))
        );
        assert_eq!(found(&after, &db, t, "old", now), None);
        assert_eq!(found(&after, &db, t, "new", now), None);
    }

    #[test]
    fn key_entries_of_an_older_version_send_lookups_to_disk_for_a_window() {
        let (_dir, db) = db();
        let cf = dedup_cf(&db);
        let window = 60_000;
        let now = 10 * window;
        let t = TopicId(3);
        let old = seen(5, now - 100);
        db.put_cf(cf, dedup_key(t, now / window, "legacy"), old.encode())
            .unwrap();
        let mut d = Dedup::recover(&db, cf, [t], window, now).unwrap();
        assert_eq!(d.disk_lookups_until, now + window);
        assert_eq!(found(&d, &db, t, "legacy", now), Some(old));
        commit(&mut d, &db, &[(t, "fresh", seen(6, now))]);
        assert_eq!(found(&d, &db, t, "fresh", now + 1), Some(seen(6, now)));
    }

    #[test]
    fn recovery_past_the_memory_bound_turns_the_oldest_groups_into_key_entries() {
        let (_dir, db) = db();
        let cf = dedup_cf(&db);
        let window = 60_000;
        let now = 10 * window;
        let t = TopicId(3);
        let mut before = Dedup::new(window);
        commit(
            &mut before,
            &db,
            &[(t, "a", seen(0, now - 300)), (t, "b", seen(1, now - 300))],
        );
        commit(&mut before, &db, &[(t, "c", seen(2, now - 200))]);
        commit(&mut before, &db, &[(t, "d", seen(3, now - 100))]);
        let after = Dedup::recover_within(&db, cf, [t], window, now, 2).unwrap();
        assert_eq!(after.remembered, 2, "the two newest groups");
        assert_eq!(on_disk(&db), (3, 2), "a and b are key entries too");
        assert_eq!(after.disk_lookups_until, now - 300 + window);
        for (key, offset, ms) in [
            ("a", 0, now - 300),
            ("b", 1, now - 300),
            ("c", 2, now - 200),
            ("d", 3, now - 100),
        ] {
            assert_eq!(
                found(&after, &db, t, key, now),
                Some(seen(offset, ms)),
                "{key}"
            );
        }
    }
}

//! Reading the window's keys back at open.

use std::collections::{BTreeMap, HashMap};

use rocksdb::{ColumnFamily, WriteBatch, DB};

use super::value::group_entries;
use super::{Dedup, Fingerprint, GroupId, MAX_REMEMBERED_KEYS};
use crate::error::{storage, Result};
use crate::keys::{dedup_group_key, dedup_key, parse_dedup_key, DedupKey};
use crate::types::{TopicId, UnixMillis};

/// Key entries written per batch when [`Dedup::recover`] turns group values
/// memory cannot hold into key entries.
const CONVERT_BATCH: usize = 10_000;

/// A group's keys of the window found at open, from its values in every
/// topic.
#[derive(Default)]
struct Recovered {
    bucket: u64,
    newest_ms: UnixMillis,
    fingerprints: Vec<Fingerprint>,
    topics: Vec<TopicId>,
}

impl Dedup {
    /// The state after a restart: the window's group values of `topics` read
    /// back into memory. Group values past [`MAX_REMEMBERED_KEYS`] (the
    /// window was made longer) become key entries, oldest first.
    pub fn recover(
        db: &DB,
        cf: &ColumnFamily,
        topics: impl IntoIterator<Item = TopicId>,
        window_ms: u64,
        now: UnixMillis,
    ) -> Result<Dedup> {
        Self::recover_within(db, cf, topics, window_ms, now, MAX_REMEMBERED_KEYS)
    }

    pub(super) fn recover_within(
        db: &DB,
        cf: &ColumnFamily,
        topics: impl IntoIterator<Item = TopicId>,
        window_ms: u64,
        now: UnixMillis,
        max_remembered: usize,
    ) -> Result<Dedup> {
        let started = std::time::Instant::now();
        let mut d = Dedup::new(window_ms);
        d.max_remembered = max_remembered;
        let from_bucket = d.bucket(now).saturating_sub(1);
        let mut found: BTreeMap<GroupId, Recovered> = BTreeMap::new();
        for topic in topics {
            let mut it = db.raw_iterator_cf(cf);
            it.seek(dedup_key(topic, from_bucket, ""));
            while let Some((k, v)) = it.item() {
                if k.get(..4) != Some(&topic.0.to_be_bytes()[..]) {
                    break;
                }
                match parse_dedup_key(k) {
                    Some(DedupKey::Group(bucket, group)) => {
                        d.next_group = d.next_group.max(group + 1);
                        let mut entries = group_entries(v)?;
                        entries.retain(|(_, seen)| d.fresh(seen, now));
                        if !entries.is_empty() {
                            let f = found.entry(group).or_default();
                            f.bucket = bucket;
                            f.topics.push(topic);
                            for (key, seen) in entries {
                                f.newest_ms = f.newest_ms.max(seen.publish_ms);
                                f.fingerprints.push(d.fingerprint(topic, key));
                            }
                        }
                    }
                    // Key entries (older versions wrote only these): lookups
                    // go to disk until a window from now. Skip to the
                    // bucket's group values.
                    Some(DedupKey::Key(bucket)) => {
                        d.disk_lookups_until = now + window_ms;
                        it.seek(dedup_group_key(topic, bucket, 0));
                        continue;
                    }
                    None => {}
                }
                it.next();
            }
            it.status().map_err(storage)?;
        }
        // The newest groups stay in memory; older ones past the bound become
        // key entries.
        let mut groups: Vec<(GroupId, Recovered)> = found.into_iter().collect();
        groups.sort_by_key(|(_, f)| std::cmp::Reverse(f.newest_ms));
        let mut kept = 0;
        let split = groups
            .iter()
            .position(|(_, f)| {
                kept += f.fingerprints.len();
                kept > max_remembered
            })
            .unwrap_or(groups.len());
        let converted = groups.split_off(split);
        let mut per_slice: HashMap<u64, usize> = HashMap::new();
        for (_, f) in &groups {
            *per_slice.entry(f.newest_ms / d.slice_ms).or_default() += f.fingerprints.len();
        }
        // Oldest first, so each group finds its own slice.
        for (group, f) in groups.into_iter().rev() {
            let capacity = per_slice.get(&(f.newest_ms / d.slice_ms)).copied();
            let slice = d.slice_for(f.newest_ms, capacity.unwrap_or(0));
            slice.groups.insert(group, f.bucket);
            for fp in f.fingerprints {
                slice.keys.insert(fp, group);
            }
        }
        d.remembered = d.slices.iter().map(|s| s.keys.len()).sum();
        d.convert_to_key_entries(db, cf, &converted, now)?;
        tracing::info!(
            keys = d.remembered,
            ms = started.elapsed().as_millis() as u64,
            "idempotency keys of the window read back"
        );
        Ok(d)
    }

    /// Writes the window's keys of `groups` as key entries (at open, for
    /// keys memory cannot hold), and sends lookups to disk while they last.
    fn convert_to_key_entries(
        &mut self,
        db: &DB,
        cf: &ColumnFamily,
        groups: &[(GroupId, Recovered)],
        now: UnixMillis,
    ) -> Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        let keys: usize = groups.iter().map(|(_, g)| g.fingerprints.len()).sum();
        tracing::info!(
            keys,
            "more idempotency keys in the window than memory holds: writing the oldest as key entries"
        );
        let mut batch = WriteBatch::default();
        for (group, g) in groups {
            for &topic in &g.topics {
                let Some(value) = db
                    .get_pinned_cf(cf, dedup_group_key(topic, g.bucket, *group))
                    .map_err(storage)?
                else {
                    continue;
                };
                for (key, seen) in group_entries(&value)? {
                    if !self.fresh(&seen, now) {
                        continue;
                    }
                    let mut k = dedup_key(topic, self.bucket(seen.publish_ms), "");
                    k.extend_from_slice(key);
                    batch.put_cf(cf, k, seen.encode());
                    self.disk_lookups_until = self
                        .disk_lookups_until
                        .max(seen.publish_ms + self.window_ms);
                }
                if batch.len() >= CONVERT_BATCH {
                    db.write(std::mem::take(&mut batch)).map_err(storage)?;
                }
            }
        }
        db.write(batch).map_err(storage)
    }
}

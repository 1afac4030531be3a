//! Moving a subscription's position: a seek to new offsets, and following
//! retention when it trims events the subscription never settled.

use tokio::time::Instant;

use super::super::{Key, Origin};
use super::Actor;
use crate::types::{Offset, PartitionId};
use crate::writer::Update;

impl Actor {
    /// Moves partitions to new positions: their leases, pending redeliveries and
    /// read-ahead are dropped, and everything from the target on is unsettled
    /// (attempt counts start over). Old ack ids of those partitions go stale.
    ///
    /// Redriven dead letters at or after the target are dropped too (queued,
    /// leased or waiting), with their stored redrive entries: the log hands
    /// them out again, so keeping them would deliver the event twice. Redriven
    /// dead letters before the target are untouched; an operator returned them
    /// explicitly and the seek does not reach them.
    pub(super) fn seek(&mut self, targets: Vec<Option<Offset>>, ops: &mut Vec<Update>) {
        for (p, target) in targets.into_iter().enumerate() {
            let Some(target) = target else { continue };
            let p_id = p as PartitionId;
            let survives = |key: &Key, origin: &Origin| {
                key.0 != p_id || (matches!(origin, Origin::Redrive { .. }) && key.1 < target)
            };
            let mut gone_redrives = Vec::new();
            let held = self.leases.keys_where(|k, l| !survives(k, &l.origin));
            for key in held {
                if let Origin::Redrive { seq, .. } = self.end_lease(key).origin {
                    gone_redrives.push(seq);
                }
            }
            self.retries.retain(|k, w| {
                let keep = survives(k, &w.origin);
                if let (false, Origin::Redrive { seq, .. }) = (keep, w.origin) {
                    gone_redrives.push(seq);
                }
                keep
            });
            gone_redrives.extend(self.redrive.drop_from(p_id, target));
            for &seq in &gone_redrives {
                self.redrive.settled(seq);
            }
            // Keys of this partition are free again, except those a surviving
            // redriven event still holds.
            let still_out = self
                .leases
                .iter()
                .map(|(k, l)| (k, &l.event))
                .chain(self.retries.iter().map(|(k, w)| (k, &w.event)))
                .filter(|(k, _)| k.0 == p_id)
                .map(|(_, e)| e.key.as_str());
            let topic = &self.topic;
            self.keys
                .reset_partition(p_id, |k| topic.route(k), still_out);
            self.read_ahead.reposition(p_id, target);
            self.persist.reposition(p_id, target, gone_redrives, ops);
        }
    }

    /// Moves partitions whose log start passed their floor (retention trimmed
    /// events this subscription never settled) up to the new start, counting
    /// the events lost without delivery.
    pub(super) fn follow_retention(&mut self, now: Instant) {
        for p in 0..self.persist.partitions() {
            let start = self.topic.partitions[p].start();
            let p_id = p as PartitionId;
            if start <= self.persist.floor(p_id) {
                continue;
            }
            let in_memory = self
                .leases
                .iter()
                .map(|(k, _)| k)
                .chain(self.retries.iter().map(|(k, _)| k))
                .filter(|k| k.0 == p_id && k.1 < start)
                .count() as u64
                + self.read_ahead.buffered_below(p_id, start);
            let lost = self.persist.follow_start(p_id, start, in_memory, now);
            self.read_ahead.skip_to(p_id, start);
            self.stats.lost_to_retention += lost;
        }
    }
}

//! An offline, read-only view of a data dir's subscriptions, for
//! `eventbus migrate` (which moves a single node into cluster mode). The
//! topics and their events are read through [`Log::topics`] and
//! [`Log::read`]; this adds what only the delivery engine knows: each
//! subscription's settings, its committed position per partition, its
//! dead letters and its redrive queue.
//!
//! Everything is read the way a starting subscription reads it
//! (`delivery::persistence::load`), so the positions are the ones a restart
//! of the single node would resume from.

use crate::dead_letters::{self, DeadLetter, StoredDeadLetter};
use crate::error::Result;
use crate::keys::parse_dlq_key;
use crate::meta::SubscriptionMeta;
use crate::store::Log;
use crate::topic::TopicState;
use crate::types::{Offset, StartPosition, UnixMillis};
use eventbus_broker::SubscriptionConfig;

/// One subscription as the data dir holds it.
#[derive(Debug, Clone)]
pub struct ExportedSubscription {
    pub name: String,
    pub config: SubscriptionConfig,
    pub paused: bool,
    pub start_position: StartPosition,
    pub created_ms: UnixMillis,
    pub creator: Option<String>,
    /// Per partition: the committed position, i.e. the first offset not yet
    /// settled (acked, dead-lettered or filtered out). Everything below it
    /// is settled.
    pub floors: Vec<Offset>,
    /// Per partition: events above the floor that are settled already
    /// (acked out of order). A position is one offset, so these are
    /// delivered again after a move.
    pub settled_above_floor: Vec<u64>,
    /// The dead-letter queue, in id order.
    pub dead_letters: Vec<DeadLetter>,
    /// Dead letters redriven and not yet delivered again, in id order; the
    /// attempts field counts the attempts since the redrive.
    pub redrive: Vec<DeadLetter>,
}

impl Log {
    /// Every subscription of `topic`, sorted by name, with its position,
    /// dead letters and redrive queue. Blocking.
    pub fn export_subscriptions(&self, topic: &TopicState) -> Result<Vec<ExportedSubscription>> {
        let mut metas: Vec<SubscriptionMeta> = self.load_subscriptions(topic.id())?;
        metas.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::with_capacity(metas.len());
        for meta in metas {
            let loaded = crate::delivery::persistence::load(self, topic, meta.id)?;
            let mut dead_letters = Vec::new();
            let mut failure = None;
            self.scan_dlq(meta.id, 0, |k, v| {
                // The scan is bounded to this subscription's keys.
                debug_assert!(parse_dlq_key(k).is_some_and(|(s, _)| s == meta.id));
                match dead_letters::decode(topic.id(), k, v) {
                    Ok(dl) => {
                        dead_letters.push(dl.public());
                        true
                    }
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                }
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            let redrive = loaded
                .redrive
                .into_iter()
                .map(|r| {
                    StoredDeadLetter {
                        entry: r.entry,
                        event: (*r.event).clone(),
                    }
                    .public()
                })
                .collect();
            out.push(ExportedSubscription {
                name: meta.name,
                config: meta.config,
                paused: meta.paused,
                start_position: meta.start_position,
                created_ms: meta.created_ms,
                creator: meta.creator,
                floors: loaded.acks.iter().map(|a| a.floor).collect(),
                settled_above_floor: loaded.acks.iter().map(|a| a.settled.len() as u64).collect(),
                dead_letters,
                redrive,
            });
        }
        Ok(out)
    }
}

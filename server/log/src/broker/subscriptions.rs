//! Subscriptions of the RocksDB backend: created with their actor, changed,
//! sought and reported (settings plus the actor's live statistics).

use std::collections::HashMap;
use std::sync::Arc;

use eventbus_broker::SubscriptionInfo;

use super::{blocking, ensure_live, LogBroker, NewSubscription, SeekTarget, SubscriptionUpdate};
use crate::delivery::acks::PartitionAcks;
use crate::delivery::dead_letter::DeadLetterEntry;
use crate::delivery::SubscriptionHandle;
use crate::error::{Error, Result};
use crate::meta::{now_ms, SubscriptionConfig, SubscriptionMeta};
use crate::names::{validate_name, validate_topic_name};
use crate::topic::TopicState;
use crate::types::{StartPosition, SubscriptionId};
use crate::writer::Update;

impl LogBroker {
    // ---- subscriptions ---------------------------------------------------------

    /// Creates a subscription. The topic is auto-created when that is enabled.
    pub async fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        new: NewSubscription,
    ) -> Result<SubscriptionInfo> {
        validate_topic_name(topic)?;
        validate_name("subscription", name)?;
        let config = self.subscription_config(&new)?;
        let topic = self.log.topic_or_create(topic).await?;
        let _admin = self.admin.lock().await;
        ensure_live(&topic)?;
        if self.handle(&topic, name).is_some() {
            return Err(Error::SubscriptionExists {
                topic: topic.name().to_string(),
                subscription: name.to_string(),
            });
        }
        let handle = self
            .start_subscription(&topic, name, config, new.start_position, new.creator)
            .await?;
        self.info(&handle).await
    }

    fn subscription_config(&self, new: &NewSubscription) -> Result<SubscriptionConfig> {
        SubscriptionConfig::of_new(
            new,
            self.options().default_ack_deadline,
            &self.options().limits,
        )
    }

    /// Applies the fields of `update` that are set to a subscription's settings.
    pub async fn update_settings(
        &self,
        topic: &str,
        name: &str,
        update: SubscriptionUpdate,
    ) -> Result<SubscriptionInfo> {
        let update = update.check(self.options().default_ack_deadline, &self.options().limits)?;
        self.update_subscription(topic, name, |m| {
            update.apply(&mut m.config);
            Ok(())
        })
        .await
    }

    /// Persists a new subscription and starts its actor. Caller holds `admin`.
    async fn start_subscription(
        &self,
        topic: &Arc<TopicState>,
        name: &str,
        config: SubscriptionConfig,
        start: StartPosition,
        creator: Option<String>,
    ) -> Result<Arc<SubscriptionHandle>> {
        self.options()
            .limits
            .check_subscription_count(self.subs.load().len())?;
        let meta = SubscriptionMeta {
            id: SubscriptionId(0),
            topic_id: topic.id(),
            name: name.to_string(),
            config,
            paused: false,
            start_position: start,
            created_ms: now_ms(),
            creator,
        };
        // A LATEST subscription starts at the current ends; the floors are written
        // in the same batch as the metadata, so it can never start anywhere else.
        let ends: Vec<u64> = topic.partitions.iter().map(|p| p.end()).collect();
        let meta = self
            .log
            .create_subscription_meta(meta, |m| match start {
                StartPosition::Earliest => Vec::new(),
                StartPosition::Latest => ends
                    .iter()
                    .enumerate()
                    .map(|(p, &end)| Update::PutAckState {
                        sub: m.id,
                        partition: p as u32,
                        acks: PartitionAcks::starting_at(end),
                    })
                    .collect(),
            })
            .await?;
        let handle = SubscriptionHandle::start(self.log.clone(), topic.clone(), meta).await?;
        self.subs.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert((topic.id(), name.to_string()), handle.clone());
            m
        });
        tracing::info!(
            topic = topic.name(),
            subscription = name,
            ?start,
            "subscription created"
        );
        Ok(handle)
    }

    fn handle(&self, topic: &TopicState, name: &str) -> Option<Arc<SubscriptionHandle>> {
        self.subs
            .load()
            .get(&(topic.id(), name.to_string()))
            .cloned()
    }

    /// The running subscription, without creating anything.
    pub(crate) fn subscription(&self, topic: &str, name: &str) -> Result<Arc<SubscriptionHandle>> {
        validate_name("subscription", name)?;
        let topic_state = self.log.existing_topic(topic)?;
        self.handle(&topic_state, name)
            .ok_or_else(|| Error::SubscriptionNotFound {
                topic: topic.to_string(),
                subscription: name.to_string(),
            })
    }

    /// The running subscription, creating topic and subscription (at EARLIEST)
    /// when auto-create is on.
    pub(crate) async fn subscription_or_create(
        &self,
        topic: &str,
        name: &str,
    ) -> Result<Arc<SubscriptionHandle>> {
        validate_topic_name(topic)?;
        validate_name("subscription", name)?;
        let topic_state = self.log.topic_or_create(topic).await?;
        if let Some(h) = self.handle(&topic_state, name) {
            return Ok(h);
        }
        if !self.options().auto_create {
            return Err(Error::SubscriptionNotFound {
                topic: topic.to_string(),
                subscription: name.to_string(),
            });
        }
        let _admin = self.admin.lock().await;
        ensure_live(&topic_state)?;
        if let Some(h) = self.handle(&topic_state, name) {
            return Ok(h);
        }
        let config = self.subscription_config(&NewSubscription::default())?;
        self.start_subscription(&topic_state, name, config, StartPosition::Earliest, None)
            .await
    }

    pub async fn get_subscription(&self, topic: &str, name: &str) -> Result<SubscriptionInfo> {
        let h = self.subscription(topic, name)?;
        self.info(&h).await
    }

    /// Subscriptions of a topic, sorted by name.
    pub async fn list_subscriptions(&self, topic: &str) -> Result<Vec<SubscriptionInfo>> {
        Ok(self.subscriptions_page(topic, None, usize::MAX).await?.0)
    }

    /// One page of a topic's subscriptions in name order: at most `limit`
    /// named after `after`, and whether more follow. The page is cut first:
    /// only its own subscriptions are asked for their statistics (a round trip
    /// to each actor, and storage reads), never every subscription of the topic.
    pub async fn subscriptions_page(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<SubscriptionInfo>, bool)> {
        let topic = self.log.existing_topic(topic)?;
        let mut handles: Vec<_> = self
            .subs
            .load()
            .iter()
            .filter(|((t, name), _)| *t == topic.id() && after.is_none_or(|a| name.as_str() > a))
            .map(|((_, name), h)| (name.clone(), h.clone()))
            .collect();
        handles.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let more = handles.len() > limit;
        handles.truncate(limit);
        let mut out = Vec::with_capacity(handles.len());
        for (_, h) in handles {
            out.push(self.info(&h).await?);
        }
        Ok((out, more))
    }

    pub async fn delete_subscription(&self, topic: &str, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let h = self.subscription(topic, name)?;
        h.stop(crate::delivery::StopReason::Deleted).await;
        self.log
            .write(vec![Update::delete_subscription(&h.meta())], true)
            .await?;
        let key = (h.topic.id(), name.to_string());
        self.subs.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(&key);
            m
        });
        tracing::info!(topic, subscription = name, "subscription deleted");
        Ok(())
    }

    /// Changes a subscription's settings with `change`, persists them (synced)
    /// and applies them to the running subscription.
    pub(crate) async fn update_subscription(
        &self,
        topic: &str,
        name: &str,
        change: impl FnOnce(&mut SubscriptionMeta) -> Result<()>,
    ) -> Result<SubscriptionInfo> {
        let _admin = self.admin.lock().await;
        let h = self.subscription(topic, name)?;
        let mut meta = (*h.meta()).clone();
        change(&mut meta)?;
        self.log
            .write(vec![Update::PutSubscription(meta.clone())], true)
            .await?;
        h.set_meta(meta).await?;
        self.info(&h).await
    }

    /// Stops (or resumes) new deliveries; leases already held stay valid. The
    /// flag is persisted, so a paused subscription stays paused across restarts.
    pub async fn set_paused(
        &self,
        topic: &str,
        name: &str,
        paused: bool,
    ) -> Result<SubscriptionInfo> {
        let info = self
            .update_subscription(topic, name, |m| {
                m.paused = paused;
                Ok(())
            })
            .await?;
        tracing::info!(
            topic,
            subscription = name,
            paused,
            "subscription pause state changed"
        );
        Ok(info)
    }

    /// Moves a subscription to `target` ("reprocess since 09:00"). Offsets are
    /// clamped to what is retained; the new positions are persisted synced.
    pub async fn seek(
        &self,
        topic: &str,
        name: &str,
        target: SeekTarget,
    ) -> Result<SubscriptionInfo> {
        let _admin = self.admin.lock().await;
        let h = self.subscription(topic, name)?;
        let t = h.topic.clone();
        let n = t.partition_count();
        let clamp = |p: u32, o: u64| {
            let tail = &t.partitions[p as usize];
            o.clamp(tail.start(), tail.end())
        };
        let mut targets: Vec<Option<u64>> = vec![None; n as usize];
        match target {
            SeekTarget::Earliest => {
                for p in 0..n {
                    targets[p as usize] = Some(t.partitions[p as usize].start());
                }
            }
            SeekTarget::Latest => {
                for p in 0..n {
                    targets[p as usize] = Some(t.partitions[p as usize].end());
                }
            }
            SeekTarget::Time(ms) => {
                for p in 0..n {
                    targets[p as usize] = Some(self.offset_for_time(t.clone(), p, ms).await?);
                }
            }
            SeekTarget::Offsets(pairs) => {
                if pairs.is_empty() {
                    return Err(Error::invalid("offsets", "name at least one partition"));
                }
                for (p, o) in pairs {
                    if p >= n {
                        return Err(Error::invalid(
                            "offsets",
                            format!("topic {topic:?} has partitions 0..{n}; {p} does not exist"),
                        ));
                    }
                    if targets[p as usize].is_some() {
                        return Err(Error::invalid(
                            "offsets",
                            format!("partition {p} is named twice; name each partition once"),
                        ));
                    }
                    targets[p as usize] = Some(clamp(p, o));
                }
            }
        }
        h.seek(targets).await?;
        tracing::info!(topic, subscription = name, "subscription seeked");
        self.info(&h).await
    }

    pub(super) async fn info(&self, h: &SubscriptionHandle) -> Result<SubscriptionInfo> {
        let mut stats = h.stats().await?;
        if !stats.unread_floors.is_empty() {
            // The oldest unsettled event of some partition is not in memory yet:
            // look its publish time up (a point read per such partition).
            let (log, topic, floors) = (
                self.log.clone(),
                h.topic.clone(),
                stats.unread_floors.clone(),
            );
            let oldest = tokio::task::spawn_blocking(move || -> Result<Option<u64>> {
                let mut oldest: Option<u64> = None;
                for (p, offset) in floors {
                    if let Some(ev) = log.read(&topic, p, offset, 1, 0)?.first() {
                        oldest = Some(oldest.map_or(ev.publish_time, |o| o.min(ev.publish_time)));
                    }
                }
                Ok(oldest)
            })
            .await
            .map_err(|_| Error::ShuttingDown)??;
            stats.oldest_unacked_ms = match (stats.oldest_unacked_ms, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        stats.dead_letter_count = h.dlq.count.load(std::sync::atomic::Ordering::Relaxed);
        if stats.dead_letter_count > 0 {
            let (log, sub) = (self.log.clone(), h.id());
            stats.oldest_dead_letter_ms = blocking(move || {
                let mut oldest = None;
                log.scan_dlq(sub, 0, |_, v| {
                    oldest = DeadLetterEntry::decode(0, v).ok().map(|e| e.dead_letter_ms);
                    false
                })?;
                Ok(oldest)
            })
            .await?;
        }
        let meta = h.meta();
        Ok(SubscriptionInfo {
            topic: h.topic.name().to_string(),
            name: meta.name.clone(),
            id: meta.id,
            config: meta.config.clone(),
            paused: meta.paused,
            start_position: meta.start_position,
            created_ms: meta.created_ms,
            creator: meta.creator.clone(),
            stats: public_stats(stats),
        })
    }
}

/// The actor's statistics as the contract reports them (without the
/// engine's bookkeeping of unread floors, already resolved by `info`).
fn public_stats(s: crate::delivery::SubscriptionStats) -> eventbus_broker::SubscriptionStats {
    eventbus_broker::SubscriptionStats {
        backlog: s.backlog,
        in_flight: s.in_flight,
        oldest_unacked_ms: s.oldest_unacked_ms,
        delivered: s.delivered,
        acked: s.acked,
        nacked: s.nacked,
        redelivered: s.redelivered,
        expired: s.expired,
        dead_lettered: s.dead_lettered,
        filtered: s.filtered,
        lost_to_retention: s.lost_to_retention,
        dead_letter_count: s.dead_letter_count,
        oldest_dead_letter_ms: s.oldest_dead_letter_ms,
        members: s.members,
    }
}

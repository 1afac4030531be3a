//! [`Broker`]: the narrow boundary the gRPC layer talks to.
//!
//! Everything here speaks domain types only. A second backend (for example a NATS
//! JetStream cluster) implements the same operations; the RocksDB log plus the
//! delivery engine is this implementation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::dead_letters::{self, DeadLetter, DeadLetterQuery, DeadLetterSelector};
use crate::delivery::ack_id::AckId;
use crate::delivery::acks::PartitionAcks;
use crate::delivery::dead_letter::DeadLetterEntry;
use crate::delivery::{
    MemberStream, SettleOp, SettleOutcome, SubscriptionHandle, SubscriptionStats,
};
use crate::error::{Error, Result};
use crate::keys;
use crate::meta::{now_ms, SubscriptionConfig, SubscriptionMeta};
use crate::names::validate_name;
use crate::options::{Options, MAX_ACK_DEADLINE, MIN_ACK_DEADLINE};
use crate::store::Log;
use crate::topic::{TopicConfig, TopicState};
use crate::types::{
    saturating_millis, AppendResult, NewEvent, StartPosition, StoredEvent, SubscriptionId, TopicId,
};
use crate::writer::Update;

type SubKey = (TopicId, String);

/// A topic as reported to admins.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub state: Arc<TopicState>,
}

/// A subscription with its live statistics.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    pub topic: String,
    pub meta: SubscriptionMeta,
    pub stats: SubscriptionStats,
}

/// A retry policy as requested; unset bounds take 1 s and 60 s.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryPolicy {
    pub min_backoff: Option<Duration>,
    pub max_backoff: Option<Duration>,
}

/// A change of subscription settings: `None` leaves a field as it is; an inner
/// `None` resets it to its default.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionUpdate {
    pub ack_deadline: Option<Option<Duration>>,
    pub retry_policy: Option<Option<RetryPolicy>>,
    pub max_delivery_attempts: Option<Option<u32>>,
    pub filter: Option<crate::meta::Filter>,
    pub ordering: Option<crate::meta::Ordering>,
}

/// Where SeekSubscription moves a subscription.
#[derive(Debug, Clone)]
pub enum SeekTarget {
    Earliest,
    Latest,
    /// The first event published at or after this time, per partition.
    Time(u64),
    /// Explicit (partition, offset) pairs; other partitions stay where they are.
    Offsets(Vec<(u32, u64)>),
}

/// Settings for a new subscription; `None` takes the default.
#[derive(Debug, Clone, Default)]
pub struct NewSubscription {
    pub start_position: StartPosition,
    pub ack_deadline: Option<Duration>,
    /// `None`: redeliver at once after a failure.
    pub retry_policy: Option<RetryPolicy>,
    pub max_delivery_attempts: Option<u32>,
    pub filter: crate::meta::Filter,
    pub ordering: crate::meta::Ordering,
}

/// The storage and delivery engine behind the gRPC services.
pub struct Broker {
    log: Log,
    subs: ArcSwap<HashMap<SubKey, Arc<SubscriptionHandle>>>,
    /// Serialises subscription creation and deletion (never on the data path).
    admin: Mutex<()>,
    /// The background retention task; stopped at shutdown or when the broker
    /// is dropped, so it never keeps the store open.
    retention: AbortOnDrop,
}

impl Broker {
    /// Opens the store and starts an actor for every stored subscription.
    pub async fn open(options: Options) -> Result<Broker> {
        let log = tokio::task::spawn_blocking(move || Log::open(options))
            .await
            .map_err(|_| Error::ShuttingDown)??;
        let mut subs = HashMap::new();
        for topic in log.topics() {
            let metas = {
                let (log, id) = (log.clone(), topic.id());
                tokio::task::spawn_blocking(move || log.load_subscriptions(id))
                    .await
                    .map_err(|_| Error::ShuttingDown)??
            };
            for meta in metas {
                let name = meta.name.clone();
                let handle = SubscriptionHandle::start(log.clone(), topic.clone(), meta).await?;
                subs.insert((topic.id(), name), handle);
            }
        }
        let retention = AbortOnDrop(tokio::spawn(retention_loop(log.clone())));
        Ok(Broker {
            log,
            subs: ArcSwap::from_pointee(subs),
            admin: Mutex::new(()),
            retention,
        })
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn options(&self) -> &Options {
        self.log.options()
    }

    // ---- publish ---------------------------------------------------------------

    /// Appends `events` to `topic` (auto-creating it when enabled). Returns the id
    /// of the topic written to (event ids derive from it) and one result per event.
    pub async fn publish(
        &self,
        topic: &str,
        events: &[NewEvent],
    ) -> Result<(TopicId, Vec<AppendResult>)> {
        validate_name("topic", topic)?;
        if events.is_empty() {
            return Err(Error::invalid("events", "must contain at least one event"));
        }
        self.options().limits.check_publish_count(events.len())?;
        let topic = self.log.topic_or_create(topic).await?;
        Ok((topic.id(), self.log.append(&topic, events).await?))
    }

    // ---- topics ----------------------------------------------------------------

    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        let state = self.log.create_topic(name, config).await?;
        Ok(TopicInfo { state })
    }

    pub fn get_topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(TopicInfo {
            state: self.log.existing_topic(name)?,
        })
    }

    pub fn list_topics(&self) -> Vec<TopicInfo> {
        self.log
            .topics()
            .into_iter()
            .map(|state| TopicInfo { state })
            .collect()
    }

    /// Deletes a topic with its subscriptions and their dead letters.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let topic = self.log.existing_topic(name)?;
        let handles: Vec<_> = self
            .subs
            .load()
            .iter()
            .filter(|((t, _), _)| *t == topic.id())
            .map(|(_, h)| h.clone())
            .collect();
        for h in &handles {
            h.stop(crate::delivery::StopReason::Deleted).await;
        }
        let metas: Vec<_> = handles.iter().map(|h| (*h.meta()).clone()).collect();
        self.log.delete_topic(name, &metas).await?;
        self.subs.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.retain(|(t, _), _| *t != topic.id());
            m
        });
        Ok(())
    }

    // ---- subscriptions ---------------------------------------------------------

    /// Creates a subscription. The topic is auto-created when that is enabled.
    pub async fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        new: NewSubscription,
    ) -> Result<SubscriptionInfo> {
        validate_name("topic", topic)?;
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
            .start_subscription(&topic, name, config, new.start_position)
            .await?;
        self.info(&handle).await
    }

    fn subscription_config(&self, new: &NewSubscription) -> Result<SubscriptionConfig> {
        let (min_backoff_ms, max_backoff_ms) = backoff_ms(new.retry_policy)?;
        new.filter.validate(&self.options().limits)?;
        Ok(SubscriptionConfig {
            ack_deadline_ms: self.ack_deadline_ms(new.ack_deadline)?,
            min_backoff_ms,
            max_backoff_ms,
            max_delivery_attempts: new
                .max_delivery_attempts
                .unwrap_or(SubscriptionConfig::default().max_delivery_attempts),
            filter: new.filter.clone(),
            ordering: new.ordering,
        })
    }

    /// A requested ack deadline (`None`: the server default), checked.
    fn ack_deadline_ms(&self, requested: Option<Duration>) -> Result<u64> {
        let d = requested.unwrap_or(self.options().default_ack_deadline);
        if !(MIN_ACK_DEADLINE..=MAX_ACK_DEADLINE).contains(&d) {
            return Err(Error::invalid(
                "ack_deadline",
                format!("{d:?} is out of range; use {MIN_ACK_DEADLINE:?} to {MAX_ACK_DEADLINE:?}"),
            ));
        }
        Ok(saturating_millis(d))
    }

    /// Applies the fields of `update` that are set to a subscription's settings.
    pub async fn update_settings(
        &self,
        topic: &str,
        name: &str,
        update: SubscriptionUpdate,
    ) -> Result<SubscriptionInfo> {
        let ack_deadline = update
            .ack_deadline
            .map(|d| self.ack_deadline_ms(d))
            .transpose()?;
        let backoff = update.retry_policy.map(backoff_ms).transpose()?;
        if let Some(f) = &update.filter {
            f.validate(&self.options().limits)?;
        }
        self.update_subscription(topic, name, |m| {
            let c = &mut m.config;
            if let Some(ms) = ack_deadline {
                c.ack_deadline_ms = ms;
            }
            if let Some((min, max)) = backoff {
                (c.min_backoff_ms, c.max_backoff_ms) = (min, max);
            }
            if let Some(max) = update.max_delivery_attempts {
                c.max_delivery_attempts =
                    max.unwrap_or(SubscriptionConfig::default().max_delivery_attempts);
            }
            if let Some(f) = update.filter {
                c.filter = f;
            }
            if let Some(o) = update.ordering {
                c.ordering = o;
            }
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
    pub fn subscription(&self, topic: &str, name: &str) -> Result<Arc<SubscriptionHandle>> {
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
    pub async fn subscription_or_create(
        &self,
        topic: &str,
        name: &str,
    ) -> Result<Arc<SubscriptionHandle>> {
        validate_name("topic", topic)?;
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
        self.start_subscription(&topic_state, name, config, StartPosition::Earliest)
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
    pub async fn update_subscription(
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

    // ---- dead letters ----------------------------------------------------------

    /// One page of dead letters matching `query`, after seq `after`. Returns the
    /// page and the seq to continue after, when there may be more.
    pub async fn list_dead_letters(
        &self,
        topic: &str,
        name: &str,
        after: Option<u64>,
        limit: usize,
        query: DeadLetterQuery,
    ) -> Result<(Vec<DeadLetter>, Option<u64>)> {
        query.validate(&self.options().limits)?;
        let h = self.subscription(topic, name)?;
        let (log, sub, topic_id) = (self.log.clone(), h.id(), h.topic.id());
        blocking(move || {
            let mut page = Vec::new();
            let mut page_bytes = 0usize;
            let mut failure = None;
            let mut more = false;
            log.scan_dlq(sub, after.map_or(0, |a| a + 1), |k, v| {
                match dead_letters::decode(topic_id, k, v) {
                    Ok(dl) if query.matches(&dl.entry, &dl.event) => {
                        // Bounded in bytes too: a page of big events must fit
                        // the 4 MiB a default client receives (and the
                        // server's memory); the first entry always goes.
                        let bytes = dl.size_bytes();
                        if page.len() == limit
                            || (!page.is_empty()
                                && page_bytes + bytes > dead_letters::MAX_PAGE_BYTES)
                        {
                            more = true;
                            return false;
                        }
                        page_bytes += bytes;
                        page.push(dl);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failure = Some(e);
                        return false;
                    }
                }
                true
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            let next = more.then(|| page.last().map(|d| d.entry.seq)).flatten();
            Ok((page, next))
        })
        .await
    }

    pub async fn get_dead_letter(&self, topic: &str, name: &str, seq: u64) -> Result<DeadLetter> {
        let h = self.subscription(topic, name)?;
        let (log, sub, topic_id) = (self.log.clone(), h.id(), h.topic.id());
        let found = blocking(move || dead_letters::read(&log, sub, topic_id, seq)).await?;
        found.ok_or_else(|| Error::DeadLetterNotFound {
            subscription: name.to_string(),
            id: seq.to_string(),
        })
    }

    /// Deletes the selected dead letters (or, with `dry_run`, counts them).
    pub async fn purge_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
    ) -> Result<u64> {
        let _admin = self.admin.lock().await;
        let h = self.subscription(topic, name)?;
        let seqs = self.select_dead_letters(&h, selector).await?;
        let count = seqs.len() as u64;
        if dry_run || seqs.is_empty() {
            return Ok(count);
        }
        for chunk in seqs.chunks(1024) {
            let ops = chunk
                .iter()
                .map(|&seq| Update::PurgeDeadLetter { sub: h.id(), seq })
                .collect();
            self.log.write(ops, true).await?;
            h.dlq
                .count
                .fetch_sub(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!(topic, subscription = name, count, "dead letters purged");
        Ok(count)
    }

    /// Sends the selected dead letters back to this subscription (or, with
    /// `dry_run`, counts them). Attempts start over; each entry's redrive count
    /// goes up by one.
    ///
    /// Exactly once, even across a crash: each chunk is one synced batch that
    /// deletes the DLQ entries and adds them to the subscription's redrive queue
    /// under the same seq. A crash leaves every entry on exactly one side, and
    /// running the redrive again moves only what is still in the DLQ.
    /// `max_per_second` (0: unlimited) paces the chunks.
    pub async fn redrive_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
        max_per_second: u32,
    ) -> Result<u64> {
        let _admin = self.admin.lock().await;
        let h = self.subscription(topic, name)?;
        let seqs = self.select_dead_letters(&h, selector).await?;
        let count = seqs.len() as u64;
        if dry_run || seqs.is_empty() {
            return Ok(count);
        }
        let chunk_size = match max_per_second {
            0 => 1024,
            n => (n as usize).min(1024),
        };
        let pace = (max_per_second > 0)
            .then(|| Duration::from_secs_f64(chunk_size as f64 / max_per_second as f64));
        for chunk in seqs.chunks(chunk_size) {
            let started = tokio::time::Instant::now();
            let (log, sub, topic_id, chunk_seqs) =
                (self.log.clone(), h.id(), h.topic.id(), chunk.to_vec());
            let entries = blocking(move || {
                let mut out = Vec::with_capacity(chunk_seqs.len());
                for seq in chunk_seqs {
                    out.extend(dead_letters::read(&log, sub, topic_id, seq)?);
                }
                Ok(out)
            })
            .await?;
            let mut ops = Vec::with_capacity(entries.len());
            let mut redriven = Vec::with_capacity(entries.len());
            for dl in entries {
                let mut entry = dl.entry;
                entry.redrive_count += 1;
                entry.attempts = 0;
                ops.push(Update::Redrive {
                    sub: h.id(),
                    entry: entry.clone(),
                });
                redriven.push(crate::delivery::Redriven {
                    seq: entry.seq,
                    redrive_count: entry.redrive_count,
                    event: Arc::new(dl.event),
                    entry,
                });
            }
            let moved = redriven.len() as u64;
            self.log.write(ops, true).await?;
            h.dlq
                .count
                .fetch_sub(moved, std::sync::atomic::Ordering::Relaxed);
            h.redriven(redriven).await?;
            if let Some(pace) = pace {
                tokio::time::sleep_until(started + pace).await;
            }
        }
        tracing::info!(topic, subscription = name, count, "dead letters redriven");
        Ok(count)
    }

    /// The seqs of the existing dead letters `selector` names.
    async fn select_dead_letters(
        &self,
        h: &SubscriptionHandle,
        selector: DeadLetterSelector,
    ) -> Result<Vec<u64>> {
        match &selector {
            DeadLetterSelector::Filter(q) => q.validate(&self.options().limits)?,
            DeadLetterSelector::Ids(ids) => {
                self.options().limits.check_dead_letter_ids(ids.len())?
            }
            DeadLetterSelector::All => {}
        }
        let (log, sub, topic_id) = (self.log.clone(), h.id(), h.topic.id());
        blocking(move || {
            let mut seqs = Vec::new();
            let mut failure = None;
            let wanted: Option<std::collections::HashSet<u64>> = match &selector {
                DeadLetterSelector::Ids(ids) => Some(ids.iter().copied().collect()),
                _ => None,
            };
            log.scan_dlq(sub, 0, |k, v| {
                let Some((_, seq)) = keys::parse_dlq_key(k) else {
                    return true;
                };
                let keep = match &selector {
                    DeadLetterSelector::All => true,
                    DeadLetterSelector::Ids(_) => wanted.as_ref().is_some_and(|w| w.contains(&seq)),
                    DeadLetterSelector::Filter(q) => match dead_letters::decode(topic_id, k, v) {
                        Ok(dl) => q.matches(&dl.entry, &dl.event),
                        Err(e) => {
                            failure = Some(e);
                            return false;
                        }
                    },
                };
                if keep {
                    seqs.push(seq);
                }
                true
            })?;
            match failure {
                Some(e) => Err(e),
                None => Ok(seqs),
            }
        })
        .await
    }

    async fn info(&self, h: &SubscriptionHandle) -> Result<SubscriptionInfo> {
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
        Ok(SubscriptionInfo {
            topic: h.topic.name().to_string(),
            meta: (*h.meta()).clone(),
            stats,
        })
    }

    // ---- delivery --------------------------------------------------------------

    /// Joins a subscription as a member (auto-creating it when enabled).
    pub async fn subscribe(
        &self,
        topic: &str,
        name: &str,
        max_in_flight: u32,
    ) -> Result<MemberStream> {
        let limit = self.options().max_in_flight_limit;
        if max_in_flight > limit {
            return Err(Error::invalid(
                "max_in_flight",
                format!(
                    "{max_in_flight} exceeds the server limit of {limit}; use 0 for the default"
                ),
            ));
        }
        let max_in_flight = match max_in_flight {
            0 => self.options().default_max_in_flight,
            n => n,
        };
        let h = self.subscription_or_create(topic, name).await?;
        h.join(max_in_flight).await
    }

    /// Acks, nacks or extends leases named by encoded ack ids.
    pub async fn settle(
        &self,
        topic: &str,
        name: &str,
        op: SettleOp,
        ack_ids: &[String],
    ) -> Result<SettleOutcome> {
        if ack_ids.is_empty() {
            return Err(Error::invalid(
                "ack_ids",
                "must contain at least one ack id",
            ));
        }
        let limits = &self.options().limits;
        limits.check_ack_ids(ack_ids.len())?;
        if let SettleOp::Nack { reason, .. } | SettleOp::DeadLetter { reason } = &op {
            limits.check_reason(reason)?;
        }
        let h = self.subscription(topic, name)?;
        let ids = ack_ids
            .iter()
            .map(|s| {
                let id = AckId::decode(s)?;
                if id.subscription != h.id() {
                    return Err(Error::invalid(
                        "ack_ids",
                        format!("{s:?} belongs to another subscription; ack on the subscription that delivered it"),
                    ));
                }
                if id.partition >= h.topic.partition_count() {
                    return Err(Error::invalid("ack_ids", format!("{s:?} names a partition this topic does not have")));
                }
                Ok(id)
            })
            .collect::<Result<Vec<_>>>()?;
        h.settle(op, ids).await
    }

    /// The first offset at or after `ms` in one partition; see
    /// [`Log::offset_for_time`].
    pub async fn offset_for_time(
        &self,
        topic: Arc<TopicState>,
        partition: u32,
        ms: u64,
    ) -> Result<u64> {
        let log = self.log.clone();
        blocking(move || log.offset_for_time(&topic, partition, ms)).await
    }

    /// Reads committed events of one partition. Never blocks the caller's thread.
    pub async fn read(
        &self,
        topic: Arc<TopicState>,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.read(&topic, partition, from, max, 4 << 20))
            .await
            .map_err(|_| Error::ShuttingDown)?
    }

    /// Stops every subscription, flushing its ack state, and syncs the WAL. The
    /// store stays open (for callers that cannot get unique ownership).
    pub async fn flush(&self) {
        self.retention.0.abort();
        let handles: Vec<_> = self.subs.load().values().cloned().collect();
        for h in &handles {
            h.stop(crate::delivery::StopReason::Shutdown).await;
        }
        if let Err(e) = self.log.sync_wal().await {
            tracing::error!(error = %e, "final WAL sync failed");
        }
    }

    /// Writes an online backup of the whole store into `dir` (absolute, not
    /// existing, parent existing) while publishes continue; see
    /// [`Log::checkpoint`]. Every subscription's ack state is written first,
    /// so the backup redelivers as little as possible. Returns the size.
    pub async fn backup(&self, dir: &std::path::Path) -> Result<u64> {
        let invalid = |reason: &str| Error::InvalidArgument {
            field: "dir",
            reason: reason.to_string(),
        };
        if dir.as_os_str().is_empty() {
            return Err(invalid("required: an absolute path on the server"));
        }
        if !dir.is_absolute() {
            return Err(invalid("must be an absolute path on the server"));
        }
        if dir.exists() {
            return Err(Error::AlreadyExists(format!(
                "backup dir {} already exists; choose a new path",
                dir.display()
            )));
        }
        match dir.parent() {
            Some(parent) if parent.is_dir() => {}
            _ => {
                return Err(Error::FailedPrecondition(format!(
                    "the parent of {} is not an existing directory on the server; create it first",
                    dir.display()
                )))
            }
        }
        // Compare real paths: the data dir may be relative or reached
        // through a symlink.
        let real =
            |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let target = match (dir.parent(), dir.file_name()) {
            (Some(parent), Some(name)) => real(parent).join(name),
            _ => return Err(invalid("must name a new directory")),
        };
        if target.starts_with(real(&self.log.options().data_dir)) {
            return Err(invalid("must not be inside the data dir"));
        }
        let handles: Vec<_> = self.subs.load().values().cloned().collect();
        for h in &handles {
            h.flush().await;
        }
        let (log, dir) = (self.log.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || log.checkpoint(&dir))
            .await
            .map_err(|_| Error::ShuttingDown)?
    }

    /// Drops the broker the way `kill -9` would, for crash tests: subscription
    /// actors stop at once without writing their ack state (what they flushed
    /// lazily before is kept), and no final sync runs for them. Writes already
    /// queued to the writer still land, as they would in the page cache.
    #[doc(hidden)]
    pub async fn crash(self) {
        for h in self.subs.load().values() {
            h.abort().await;
        }
    }

    /// [`Broker::flush`], then closes the store.
    pub async fn shutdown(self) {
        self.flush().await;
        let Broker {
            log,
            subs,
            retention,
            ..
        } = self;
        drop(retention);
        drop(subs);
        tokio::task::spawn_blocking(move || log.close()).await.ok();
    }
}

/// Fails when `topic` was deleted while the caller waited for the admin lock, so
/// a subscription is never created on a dead topic.
fn ensure_live(topic: &TopicState) -> Result<()> {
    if topic.is_deleted() {
        return Err(Error::TopicNotFound(topic.name().to_string()));
    }
    Ok(())
}

/// Runs blocking storage work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::ShuttingDown)?
}

/// Backoff bounds in ms for a requested policy; no policy is (0, 0): at once.
/// The bounds are compared as durations, before any conversion to ms, so a
/// huge value cannot wrap into a small one.
fn backoff_ms(policy: Option<RetryPolicy>) -> Result<(u64, u64)> {
    let Some(p) = policy else {
        return Ok((0, 0));
    };
    let min = p.min_backoff.unwrap_or(Duration::from_secs(1));
    let max = p
        .max_backoff
        .unwrap_or_else(|| Duration::from_secs(60).max(min));
    if min > max {
        return Err(Error::invalid(
            "retry_policy",
            format!("min_backoff ({min:?}) exceeds max_backoff ({max:?})"),
        ));
    }
    if max > MAX_ACK_DEADLINE {
        return Err(Error::invalid(
            "retry_policy.max_backoff",
            format!("{max:?} is longer than the maximum of {MAX_ACK_DEADLINE:?}"),
        ));
    }
    Ok((saturating_millis(min), saturating_millis(max)))
}

/// Applies every topic's retention each `retention_interval`, in the
/// background, through the same writer as publishes (one DeleteRange per
/// partition, never blocking the publish path for long). Subscriptions notice
/// the new start and count what they lose.
async fn retention_loop(log: Log) {
    let mut tick = tokio::time::interval(log.options().retention_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for topic in log.topics() {
            let r = topic.meta.retention;
            if r.max_age_ms.is_none() && r.max_bytes.is_none() {
                continue;
            }
            for p in 0..topic.partition_count() {
                match log.apply_retention(&topic, p, now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(
                        topic = topic.name(),
                        partition = p,
                        removed = n,
                        "retention trimmed"
                    ),
                    Err(e) => {
                        tracing::warn!(topic = topic.name(), partition = p, error = %e, "retention failed")
                    }
                }
            }
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_max_backoff_too_long_for_u64_millis_is_rejected_not_wrapped() {
        // 2^64 + 384 ms: truncated to u64 it would be 384 ms, under the cap.
        let wrapping = Duration::from_secs(18_446_744_073_709_552);
        let err = backoff_ms(Some(RetryPolicy {
            min_backoff: Some(Duration::from_millis(100)),
            max_backoff: Some(wrapping),
        }))
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    field: "retry_policy.max_backoff",
                    ..
                }
            ),
            "{err}"
        );
        let err = backoff_ms(Some(RetryPolicy {
            min_backoff: Some(wrapping),
            max_backoff: None,
        }))
        .unwrap_err();
        assert!(err.to_string().contains("longer than the maximum"), "{err}");
        assert_eq!(
            backoff_ms(Some(RetryPolicy::default())).unwrap(),
            (1_000, 60_000)
        );
        assert_eq!(backoff_ms(None).unwrap(), (0, 0));
    }
}

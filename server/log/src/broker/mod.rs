//! [`LogBroker`]: the RocksDB backend of the broker contract.
//!
//! The log ([`Log`]) plus one delivery actor per subscription, behind the
//! methods the contract names ([`eventbus_broker::Broker`], implemented in
//! [`contract`]). The inherent methods speak the engine's own types where
//! the engine's tests need them (member streams, ack ids); the server only
//! ever sees the trait.
//!
//! * this file: opening, publishing, topics, backup and shutdown;
//! * [`subscriptions`]: creating, changing, seeking and reporting them;
//! * [`delivery`]: members joining, settling, reading;
//! * [`dead_letters`]: listing, purging and redriving the DLQ;
//! * [`replay`]: reading history outside any subscription;
//! * [`retention`]: the background trim.

mod contract;
mod dead_letters;
mod delivery;
mod replay;
mod retention;
mod subscriptions;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use eventbus_broker::{PartitionBounds, TopicInfo};
use tokio::sync::Mutex;

use crate::delivery::SubscriptionHandle;
use crate::error::{Error, Result};
use crate::names::validate_topic_name;
use crate::options::Options;
use crate::store::Log;
use crate::topic::{TopicConfig, TopicState};
use crate::types::{AppendResult, NewEvent, TopicId};

pub use eventbus_broker::{NewSubscription, RetryPolicy, SeekTarget, SubscriptionUpdate};

type SubKey = (TopicId, String);

/// The RocksDB backend: the log and the delivery engine over it.
pub struct LogBroker {
    log: Log,
    subs: ArcSwap<HashMap<SubKey, Arc<SubscriptionHandle>>>,
    /// Serialises subscription creation and deletion (never on the data path).
    admin: Mutex<()>,
    /// The background retention task; stopped at shutdown or when the broker
    /// is dropped, so it never keeps the store open.
    retention: AbortOnDrop,
}

impl LogBroker {
    /// Opens the store and starts an actor for every stored subscription.
    pub async fn open(options: Options) -> Result<LogBroker> {
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
        let retention = AbortOnDrop(tokio::spawn(retention::retention_loop(log.clone())));
        Ok(LogBroker {
            log,
            subs: ArcSwap::from_pointee(subs),
            admin: Mutex::new(()),
            retention,
        })
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
        validate_topic_name(topic)?;
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
        Ok(topic_info(&state))
    }

    pub fn get_topic(&self, name: &str) -> Result<TopicInfo> {
        let state = self.log.existing_topic(name)?;
        Ok(topic_info(&state))
    }

    pub fn list_topics(&self) -> Vec<TopicInfo> {
        self.log.topics().iter().map(|t| topic_info(t)).collect()
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

    /// [`LogBroker::flush`], then closes the store.
    pub async fn shutdown(self) {
        self.flush().await;
        let LogBroker {
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

/// A topic at this moment, as the contract reports it.
fn topic_info(t: &TopicState) -> TopicInfo {
    TopicInfo {
        name: t.name().to_string(),
        id: t.id(),
        partitions: t
            .partitions
            .iter()
            .map(|p| PartitionBounds {
                start: p.start(),
                end: p.end(),
            })
            .collect(),
        retention: t.meta.retention,
        created_ms: t.meta.created_ms,
        creator: t.meta.creator.clone(),
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

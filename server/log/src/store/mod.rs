//! [`Log`]: the RocksDB-backed partitioned log. The offsets of a partition
//! (start, committed end, next) are drawn in `topic.rs`.
//!
//! # Layout
//! * this file: the handle, appends and writes (through the writer), close.
//! * `open.rs`: open and recovery (format version, ids, incarnation, partition bounds).
//! * `admin.rs`: topic and subscription metadata.
//! * `read.rs`: reads of records, the time index, dead letters and subscription state.
//! * `retention.rs`: trimming partitions by age and size.
//! * `backup.rs`: checkpoints and storage statistics.
//! * `audit.rs`: the audit log (append, list, trim).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rocksdb::DB;
use tokio::sync::{mpsc, oneshot, watch, Mutex};

use crate::codec::encode_record;
use crate::error::{Error, Result};
use crate::health::{HealthCell, StorageHealth};
use crate::keys::Cf;
use crate::names::validate_topic_name;
use crate::options::Options;
use crate::synced_mark::SyncedMark;
use crate::topic::{TopicConfig, TopicState};
use crate::types::{AppendResult, NewEvent};
use crate::writer::{Command, IdAllocator, PendingRecord, Update};

mod admin;
mod audit;
mod backup;
pub(crate) mod open;
mod read;
mod retention;
#[cfg(test)]
mod tests;

pub use backup::StorageStats;

/// The partitioned log. Cheap to clone.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DB>,
    options: Options,
    /// `None` only while dropping.
    writer_tx: Option<mpsc::Sender<Command>>,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Copy-on-write map: publishes look topics up without taking a lock.
    topics: ArcSwap<HashMap<String, Arc<TopicState>>>,
    /// Serialises metadata changes (create/delete, id allocation). Never taken on
    /// the publish or delivery path.
    admin: Mutex<IdAllocator>,
    incarnation: u64,
    health: HealthCell,
    synced_mark: Arc<SyncedMark>,
    mark_keeper: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The audit log's newest time and next id; held through each append.
    audit: Mutex<audit::AuditClock>,
    /// The bound on every partition's hot tail together.
    hot_budget: Arc<crate::hot_tail::HotBudget>,
}

impl Drop for Inner {
    /// However the last handle goes away (clean close, or a task dropped at
    /// runtime shutdown), the writer drains and stops, the WAL is synced and
    /// RocksDB is closed here, synchronously: never by a detached thread that a
    /// process exit could interrupt halfway.
    fn drop(&mut self) {
        drop(self.writer_tx.take());
        if let Some(t) = self.writer_thread.get_mut().expect("not poisoned").take() {
            let _ = t.join();
        }
        // The keeper's last round syncs the WAL and writes the final mark.
        self.synced_mark.stop();
        match self.mark_keeper.get_mut().expect("not poisoned").take() {
            Some(t) => {
                let _ = t.join();
            }
            None => {
                if let Err(e) = self.db.flush_wal(true) {
                    tracing::error!(error = %e, "final WAL sync failed");
                }
            }
        }
    }
}

impl Log {
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The write path's state now; see [`crate::health`].
    pub fn health(&self) -> StorageHealth {
        self.inner.health.get()
    }

    /// Changes whenever the write path's state does.
    pub fn watch_health(&self) -> watch::Receiver<StorageHealth> {
        self.inner.health.watch()
    }

    /// Increments at every open; see [`MetaKind::Incarnation`].
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    pub fn topic(&self, name: &str) -> Option<Arc<TopicState>> {
        self.inner.topics.load().get(name).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<TopicState>> {
        let mut v: Vec<_> = self.inner.topics.load().values().cloned().collect();
        v.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        v
    }

    /// Looks a topic up, creating it with defaults when auto-create is on.
    pub async fn topic_or_create(&self, name: &str) -> Result<Arc<TopicState>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        validate_topic_name(name)?;
        if !self.inner.options.auto_create {
            return Err(Error::TopicNotFound(name.to_string()));
        }
        match self.create_topic(name, TopicConfig::default()).await {
            Ok(t) => Ok(t),
            // Lost a race with another creator: use theirs.
            Err(Error::TopicExists(_)) => self
                .topic(name)
                .ok_or_else(|| Error::TopicNotFound(name.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Looks a topic up without creating it.
    pub fn existing_topic(&self, name: &str) -> Result<Arc<TopicState>> {
        validate_topic_name(name)?;
        self.topic(name)
            .ok_or_else(|| Error::TopicNotFound(name.to_string()))
    }

    /// Encodes events for `topic` and appends them in one group commit. Returns one
    /// result per event, in order.
    pub async fn append(
        &self,
        topic: &Arc<TopicState>,
        events: &[NewEvent],
    ) -> Result<Vec<AppendResult>> {
        let max = self.inner.options.max_event_bytes;
        let mut records = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            let record = encode_record(ev);
            if record.len() > max {
                return Err(Error::invalid(
                    "events",
                    format!(
                        "event {i} is {} bytes encoded; the limit is {max} bytes (max-event-bytes)",
                        record.len()
                    ),
                ));
            }
            records.push(PendingRecord {
                partition: topic.route(&ev.key),
                record,
                idempotency_key: ev.idempotency_key.clone(),
            });
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append {
            topic: topic.clone(),
            records,
            reply,
        })
        .await?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Why a reply never came: the write path stopped, or shutdown.
    fn closed(&self) -> Error {
        match self.inner.health.failed() {
            Some(reason) => Error::WriterFailed(reason),
            None => Error::ShuttingDown,
        }
    }

    /// Writes `updates` atomically through the group-commit writer.
    pub(crate) async fn write(&self, updates: Vec<Update>, sync: bool) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Write {
            updates,
            sync,
            reply: Some(reply),
        })
        .await?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Queues `updates` without waiting for the commit. Order with later writes is
    /// kept, because one thread applies them in queue order.
    pub(crate) async fn write_nowait(&self, updates: Vec<Update>) -> Result<()> {
        self.send(Command::Write {
            updates,
            sync: false,
            reply: None,
        })
        .await
    }

    async fn send(&self, cmd: Command) -> Result<()> {
        self.inner
            .writer_tx
            .as_ref()
            .ok_or(Error::ShuttingDown)?
            .send(cmd)
            .await
            .map_err(|_| self.closed())
    }

    /// Syncs the WAL. Used at clean shutdown after the last ack-state flush.
    pub(crate) async fn sync_wal(&self) -> Result<()> {
        self.write(Vec::new(), true).await
    }

    /// Closes the store: waits (up to 5 s) until this is the last handle, stops
    /// the writer thread after it drained its queue, syncs the WAL and closes
    /// RocksDB. Blocking: call from `spawn_blocking`.
    pub fn close(self) {
        let mut inner = self.inner;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let inner = loop {
            match Arc::try_unwrap(inner) {
                Ok(inner) => break inner,
                Err(shared) if std::time::Instant::now() < deadline => {
                    inner = shared;
                    // Short-lived readers (spawn_blocking) still hold a handle.
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(_) => {
                    tracing::warn!(
                        "log still shared at close; RocksDB closes with the last handle"
                    );
                    return;
                }
            }
        };
        drop(inner);
        tracing::info!("log closed");
    }

    #[cfg(test)]
    pub(crate) fn db(&self) -> &DB {
        &self.inner.db
    }

    pub(crate) fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.inner
            .db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }
}

fn corrupt_meta(location: &str, reason: impl Into<String>) -> Error {
    Error::CorruptMetadata {
        location: location.to_string(),
        reason: reason.into(),
    }
}

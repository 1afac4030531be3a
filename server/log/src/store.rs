//! [`Log`]: the RocksDB-backed partitioned log: open and recovery, topic and
//! subscription metadata, appends, reads, retention and backups. The offsets
//! of a partition (start, committed end, next) are drawn in `topic.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, IteratorMode, ReadOptions, DB};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

use crate::codec::{self, encode_record};
use crate::error::{Error, Result};
use crate::health::{HealthCell, StorageHealth};
use crate::keys::{self, Cf, MetaKind};
use crate::meta::{now_ms, SubscriptionMeta, TopicMeta};
use crate::names::validate_name;
use crate::options::{Options, MAX_PARTITIONS};
use crate::space::SpaceGuard;
use crate::synced_mark::{self, SyncedMark};
use crate::topic::{PartitionBounds, TopicConfig, TopicState};
use crate::types::{AppendResult, Durability, NewEvent, Offset, PartitionId, StoredEvent, TopicId};
use crate::writer::{Command, IdAllocator, PendingRecord, Update, Writer};

/// On-disk format of this data dir. Bumped on incompatible layout changes.
pub const FORMAT_VERSION: u32 = 1;
/// Commands queued for the writer before publishers wait (backpressure).
const WRITER_QUEUE: usize = 1024;

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
    /// Opens (or creates) the store. Blocking: call from `spawn_blocking`.
    ///
    /// Recovery cost is one metadata scan plus one seek per partition; it never
    /// reads the records themselves.
    pub fn open(options: Options) -> Result<Log> {
        create_dir_durably(&options.data_dir).map_err(|e| Error::CorruptMetadata {
            location: options.data_dir.display().to_string(),
            reason: format!("cannot create data dir: {e}"),
        })?;
        let (synced_mark, stored_mark) = SyncedMark::open(&options.data_dir)?;
        let db = Arc::new(open_db(&options.data_dir, options.write_buffer_bytes)?);
        // Before anything is written: did recovery keep every synced write?
        synced_mark::check_recovered(db.latest_sequence_number(), stored_mark, synced_mark.path())?;
        let meta_cf = db.cf_handle(Cf::Meta.name()).expect("meta cf");

        match db.get_cf(meta_cf, keys::meta_key(MetaKind::FormatVersion))? {
            Some(v) => {
                let version = u32::from_be_bytes(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| corrupt_meta("format version", "not 4 bytes"))?,
                );
                if version != FORMAT_VERSION {
                    return Err(corrupt_meta(
                        "format version",
                        format!("data dir has format {version}, this build reads {FORMAT_VERSION}"),
                    ));
                }
            }
            None => db.put_cf(
                meta_cf,
                keys::meta_key(MetaKind::FormatVersion),
                FORMAT_VERSION.to_be_bytes(),
            )?,
        }

        let ids = match db.get_cf(meta_cf, keys::meta_key(MetaKind::IdAllocator))? {
            Some(v) => IdAllocator::decode(&v)
                .ok_or_else(|| corrupt_meta("id allocator", "not 8 bytes"))?,
            None => IdAllocator::FIRST,
        };

        let incarnation = match db.get_cf(meta_cf, keys::meta_key(MetaKind::Incarnation))? {
            Some(v) => {
                u64::from_be_bytes(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| corrupt_meta("incarnation", "not 8 bytes"))?,
                ) + 1
            }
            None => 1,
        };
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        db.put_cf_opt(
            meta_cf,
            keys::meta_key(MetaKind::Incarnation),
            incarnation.to_be_bytes(),
            &wo,
        )?;

        let mut topics = HashMap::new();
        let prefix = [MetaKind::Topic as u8];
        for item in db.iterator_cf(
            meta_cf,
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            if k.first() != Some(&(MetaKind::Topic as u8)) {
                break;
            }
            let meta: TopicMeta = serde_json::from_slice(&v).map_err(|e| {
                corrupt_meta(
                    &format!("topic {:?}", String::from_utf8_lossy(&k[1..])),
                    e.to_string(),
                )
            })?;
            let ends = (0..meta.partitions)
                .map(|p| partition_bounds(&db, meta.id, p))
                .collect::<Result<Vec<_>>>()?;
            topics.insert(meta.name.clone(), Arc::new(TopicState::new(meta, ends)));
        }

        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
        let health = HealthCell::default();
        let writer = Writer::new(
            db.clone(),
            writer_rx,
            options.durability == Durability::Fsync,
            crate::types::saturating_millis(options.dedup_window),
            health.clone(),
            SpaceGuard::new(options.data_dir.clone(), options.disk_reserve_bytes),
            synced_mark.clone(),
        );
        let writer_thread = std::thread::Builder::new()
            .name("eventbus-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| corrupt_meta("writer thread", e.to_string()))?;
        let mark_keeper = synced_mark
            .spawn_keeper(db.clone(), health.clone())
            .map_err(|e| corrupt_meta("synced-mark thread", e.to_string()))?;

        tracing::info!(
            data_dir = %options.data_dir.display(),
            topics = topics.len(),
            incarnation,
            durability = %options.durability,
            "log opened"
        );
        Ok(Log {
            inner: Arc::new(Inner {
                db,
                options,
                writer_tx: Some(writer_tx),
                writer_thread: std::sync::Mutex::new(Some(writer_thread)),
                topics: ArcSwap::from_pointee(topics),
                admin: Mutex::new(ids),
                incarnation,
                health,
                synced_mark,
                mark_keeper: std::sync::Mutex::new(Some(mark_keeper)),
            }),
        })
    }

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
        validate_name("topic", name)?;
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
        validate_name("topic", name)?;
        self.topic(name)
            .ok_or_else(|| Error::TopicNotFound(name.to_string()))
    }

    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<TopicState>> {
        validate_name("topic", name)?;
        let partitions = match config.partitions {
            0 => self.inner.options.default_partitions,
            n if n > MAX_PARTITIONS => {
                return Err(Error::invalid(
                    "partitions",
                    format!("{n} is too many; the maximum is {MAX_PARTITIONS}"),
                ))
            }
            n => n,
        };
        let mut ids = self.inner.admin.lock().await;
        if self.topic(name).is_some() {
            return Err(Error::TopicExists(name.to_string()));
        }
        self.inner
            .options
            .limits
            .check_topic_count(self.inner.topics.load().len())?;
        if ids.next_topic == u32::MAX {
            return Err(Error::ResourceExhausted("topic ids exhausted".into()));
        }
        let meta = TopicMeta {
            id: TopicId(ids.next_topic),
            name: name.to_string(),
            partitions,
            retention: config.retention,
            created_ms: now_ms(),
        };
        let mut next = *ids;
        next.next_topic += 1;
        self.write(
            vec![Update::PutTopic(meta.clone()), Update::PutIds(next)],
            true,
        )
        .await?;
        *ids = next;
        let state = Arc::new(TopicState::new(
            meta,
            vec![PartitionBounds::default(); partitions as usize],
        ));
        self.inner.topics.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(name.to_string(), state.clone());
            m
        });
        tracing::info!(topic = name, partitions, "topic created");
        Ok(state)
    }

    /// Deletes a topic, its records, its subscriptions' metadata and state, and
    /// `extra` ops the caller adds. Returns the removed topic.
    pub async fn delete_topic(
        &self,
        name: &str,
        subscriptions: &[SubscriptionMeta],
    ) -> Result<Arc<TopicState>> {
        validate_name("topic", name)?;
        let _ids = self.inner.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| Error::TopicNotFound(name.to_string()))?;
        let mut updates = vec![Update::DeleteTopic {
            id: topic.id(),
            name: name.to_string(),
        }];
        updates.extend(subscriptions.iter().map(Update::delete_subscription));
        let (reply, rx) = oneshot::channel();
        self.send(Command::DeleteTopic {
            topic: topic.clone(),
            updates,
            reply,
        })
        .await?;
        rx.await.map_err(|_| self.closed())??;
        self.inner.topics.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(name);
            m
        });
        tracing::info!(topic = name, "topic deleted");
        Ok(topic)
    }

    /// Allocates a subscription id and persists `meta` (with that id) plus
    /// the updates `extra` returns for it, in one synced batch.
    pub async fn create_subscription_meta(
        &self,
        mut meta: SubscriptionMeta,
        extra: impl FnOnce(&SubscriptionMeta) -> Vec<Update>,
    ) -> Result<SubscriptionMeta> {
        let mut ids = self.inner.admin.lock().await;
        if ids.next_subscription == u32::MAX {
            return Err(Error::ResourceExhausted(
                "subscription ids exhausted".into(),
            ));
        }
        meta.id = crate::types::SubscriptionId(ids.next_subscription);
        let mut next = *ids;
        next.next_subscription += 1;
        let mut updates = vec![Update::PutSubscription(meta.clone()), Update::PutIds(next)];
        updates.extend(extra(&meta));
        self.write(updates, true).await?;
        *ids = next;
        Ok(meta)
    }

    /// Every stored subscription of a topic. Blocking.
    pub fn load_subscriptions(&self, topic: TopicId) -> Result<Vec<SubscriptionMeta>> {
        let cf = self.cf(Cf::Meta);
        let prefix = keys::subscription_meta_prefix(topic);
        let mut out = Vec::new();
        for item in self
            .inner
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, rocksdb::Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let meta: SubscriptionMeta = serde_json::from_slice(&v).map_err(|e| {
                corrupt_meta(
                    &format!(
                        "subscription {:?}",
                        String::from_utf8_lossy(&k[prefix.len()..])
                    ),
                    e.to_string(),
                )
            })?;
            out.push(meta);
        }
        Ok(out)
    }

    /// Visits the dead-letter entries of `sub` with seq >= `from_seq`, in seq
    /// order, until `visit` returns false. Blocking.
    pub fn scan_dlq(
        &self,
        sub: crate::types::SubscriptionId,
        from_seq: u64,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let (_, end) = keys::subscription_range(sub);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(Cf::Dlq), ro);
        it.seek(keys::dlq_key(sub, from_seq));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !visit(k, v) {
                break;
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// Visits the redrive-queue entries of `sub` (seq, value) in seq order until
    /// `visit` returns false. Blocking.
    pub fn scan_redrive(
        &self,
        sub: crate::types::SubscriptionId,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<()> {
        let start = keys::redrive_key(sub, 0);
        let end = keys::redrive_key(sub, u64::MAX);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(Cf::Subs), ro);
        it.seek(start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (_, seq) = keys::parse_redrive_key(k).ok_or_else(|| Error::CorruptMetadata {
                location: format!("{sub} redrive key"),
                reason: "malformed".into(),
            })?;
            if !visit(seq, v) {
                break;
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// Reads a raw value from the `subs` column family. Blocking.
    pub fn get_sub_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.db.get_cf(self.cf(Cf::Subs), key)?)
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
    pub async fn write(&self, updates: Vec<Update>, sync: bool) -> Result<()> {
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
    pub async fn write_nowait(&self, updates: Vec<Update>) -> Result<()> {
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

    /// Reads committed events of one partition starting at `from`, at most
    /// `max_events` of them and stopping after `max_bytes` of payload (at least one
    /// event is returned when any is available). Blocking.
    pub fn read(
        &self,
        topic: &TopicState,
        partition: PartitionId,
        from: Offset,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>> {
        let tail = &topic.partitions[partition as usize];
        let end = tail.end();
        let from = from.max(tail.start());
        if from >= end || max_events == 0 {
            return Ok(Vec::new());
        }
        let id = topic.id();
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::record_key(id, partition, end).to_vec());
        let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(Cf::Records), ro);
        it.seek(keys::record_key(id, partition, from));
        let mut out = Vec::with_capacity(max_events.min((end - from) as usize));
        let mut bytes = 0usize;
        while it.valid() && out.len() < max_events && (bytes < max_bytes || out.is_empty()) {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let (_, _, offset) =
                keys::parse_record_key(k).ok_or_else(|| Error::CorruptMetadata {
                    location: format!("{} partition {partition}", topic.name()),
                    reason: "malformed record key".into(),
                })?;
            bytes += v.len();
            let ev = codec::decode_record(id, partition, offset, Bytes::copy_from_slice(v))
                .map_err(|source| Error::Corruption {
                    location: format!(
                        "topic {:?} partition {partition} offset {offset}",
                        topic.name()
                    ),
                    source,
                })?;
            out.push(ev);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// The first offset of `partition` whose publish time is at or after `ms`
    /// (the committed end when there is none). Blocking.
    ///
    /// Uses the sparse time index to find a starting point at most one index
    /// interval (100 ms of records) before the answer, then scans forward, so
    /// the cost does not grow with the size of the log.
    pub fn offset_for_time(
        &self,
        topic: &TopicState,
        partition: PartitionId,
        ms: u64,
    ) -> Result<Offset> {
        let tail = &topic.partitions[partition as usize];
        let (start, end) = (tail.start(), tail.end());
        let id = topic.id();
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::time_index_key(id, partition, 0, 0).to_vec());
        ro.set_iterate_upper_bound(
            keys::time_index_key(id, partition, u64::MAX, u64::MAX).to_vec(),
        );
        let mut it = self
            .inner
            .db
            .raw_iterator_cf_opt(self.cf(Cf::TimeIndex), ro);
        // The last index entry strictly before `ms`: every event before its offset
        // is older still.
        it.seek_for_prev(keys::time_index_key(
            id,
            partition,
            ms.saturating_sub(1),
            u64::MAX,
        ));
        let from = it
            .key()
            .and_then(keys::parse_time_index_key)
            .map_or(start, |(_, _, _, o)| o.max(start));
        it.status()?;
        drop(it);

        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::record_key(id, partition, end).to_vec());
        let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(Cf::Records), ro);
        it.seek(keys::record_key(id, partition, from));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (_, _, offset) =
                keys::parse_record_key(k).ok_or_else(|| Error::CorruptMetadata {
                    location: format!("{} partition {partition}", topic.name()),
                    reason: "malformed record key".into(),
                })?;
            let t = codec::record_publish_time(v).map_err(|source| Error::Corruption {
                location: format!(
                    "topic {:?} partition {partition} offset {offset}",
                    topic.name()
                ),
                source,
            })?;
            if t >= ms {
                return Ok(offset);
            }
            it.next();
        }
        it.status()?;
        Ok(end)
    }

    /// Applies the topic's retention to one partition: deletes records older than
    /// `max_age` and the oldest records beyond `max_bytes`, but never the newest
    /// record (it anchors the partition's next offset across restarts). Returns
    /// the number of records removed. Blocking (reads), then one write.
    pub async fn apply_retention(
        &self,
        topic: &Arc<TopicState>,
        partition: PartitionId,
        now_ms: u64,
    ) -> Result<u64> {
        let retention = topic.meta.retention;
        let tail = &topic.partitions[partition as usize];
        let (start, end) = (tail.start(), tail.end());
        if end <= start + 1 {
            return Ok(0);
        }
        let (log, t) = (self.clone(), topic.clone());
        let (new_start, removed_bytes, cut_ms) =
            tokio::task::spawn_blocking(move || -> Result<(u64, u64, u64)> {
                let mut target = start;
                if let Some(age) = retention.max_age_ms {
                    target = target.max(log.offset_for_time(
                        &t,
                        partition,
                        now_ms.saturating_sub(age),
                    )?);
                }
                let target = target.min(end - 1);
                let bytes = t.partitions[partition as usize]
                    .bytes
                    .load(Ordering::Relaxed);
                let excess = retention
                    .max_bytes
                    .map_or(0, |max| bytes.saturating_sub(max));
                // One pass from the start: sizes of what goes, up to the age target
                // and then for as long as the size limit is exceeded.
                let mut ro = ReadOptions::default();
                ro.set_iterate_upper_bound(keys::record_key(t.id(), partition, end - 1).to_vec());
                let mut it = log.inner.db.raw_iterator_cf_opt(log.cf(Cf::Records), ro);
                it.seek(keys::record_key(t.id(), partition, start));
                let (mut next, mut removed, mut cut_ms) = (start, 0u64, 0u64);
                while let (Some(k), Some(v)) = (it.key(), it.value()) {
                    let (_, _, offset) = keys::parse_record_key(k).expect("record key");
                    if offset >= target && removed >= excess {
                        break;
                    }
                    removed += v.len() as u64 + keys::RECORD_KEY_LEN as u64;
                    cut_ms = codec::record_publish_time(v).unwrap_or(cut_ms);
                    next = offset + 1;
                    it.next();
                }
                it.status()?;
                Ok((next, removed, cut_ms))
            })
            .await
            .map_err(|_| Error::ShuttingDown)??;
        if new_start <= start {
            return Ok(0);
        }
        // Index entries up to the last removed record's time go too.
        let trim = Update::Trim {
            topic: topic.id(),
            partition,
            from: start,
            to: new_start,
            index_until_ms: cut_ms,
        };
        self.write(vec![trim], false).await?;
        tail.start.store(new_start, Ordering::Release);
        let _ = tail
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(removed_bytes))
            });
        topic.notify_tail();
        Ok(new_start - start)
    }

    /// Syncs the WAL. Used at clean shutdown after the last ack-state flush.
    pub async fn sync_wal(&self) -> Result<()> {
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

    /// Writes a RocksDB checkpoint of the whole store into `dir`, which must
    /// not exist: memtables are flushed, SST files hard-linked (copied across
    /// filesystems), the live WAL copied, so the checkpoint is a consistent
    /// store of everything written before it. Safe while the writer runs.
    /// Blocking: call off the async workers. Returns the backup's size.
    pub fn checkpoint(&self, dir: &Path) -> Result<u64> {
        rocksdb::checkpoint::Checkpoint::new(&*self.inner.db)?.create_checkpoint(dir)?;
        let mut size = 0;
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::FailedPrecondition(format!(
                "backup {} was written but cannot be listed: {e}",
                dir.display()
            ))
        })?;
        for entry in entries.flatten() {
            size += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
        Ok(size)
    }

    /// Sizes RocksDB reports for every column family: cheap in-memory
    /// properties, but they take RocksDB's mutex, so call them off the async
    /// worker threads.
    pub fn storage_stats(&self) -> StorageStats {
        let db = &self.inner.db;
        let mut stats = StorageStats::default();
        for cf in Cf::ALL {
            let handle = self.cf(cf);
            let prop = |name: &str| {
                db.property_int_value_cf(handle, name)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            stats.sst_bytes += prop("rocksdb.total-sst-files-size");
            stats.memtable_bytes += prop("rocksdb.cur-size-all-mem-tables");
            stats.pending_compaction_bytes += prop("rocksdb.estimate-pending-compaction-bytes");
        }
        stats
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

/// What the storage occupies, summed over the column families.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Bytes in SST files (the data on disk, compressed).
    pub sst_bytes: u64,
    /// Bytes in memtables (written, not yet flushed to SST files).
    pub memtable_bytes: u64,
    /// Bytes RocksDB estimates compaction still has to rewrite.
    pub pending_compaction_bytes: u64,
}

fn corrupt_meta(location: &str, reason: impl Into<String>) -> Error {
    Error::CorruptMetadata {
        location: location.to_string(),
        reason: reason.into(),
    }
}

/// The bounds of a partition: two seeks, no scan.
fn partition_bounds(db: &DB, topic: TopicId, partition: PartitionId) -> Result<PartitionBounds> {
    let cf = db.cf_handle(Cf::Records.name()).expect("records cf");
    let lower = keys::record_key(topic, partition, 0);
    let upper = keys::record_key(topic, partition, u64::MAX);
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(lower.to_vec());
    ro.set_iterate_upper_bound(upper.to_vec());
    let mut it = db.raw_iterator_cf_opt(cf, ro);
    // A key that does not parse must not make the partition look empty (its
    // offsets would be handed out again): refuse to start instead.
    let offset_of = |k: &[u8]| {
        keys::parse_record_key(k).map(|(_, _, o)| o).ok_or_else(|| {
            corrupt_meta(
                &format!("topic {topic} partition {partition}"),
                format!("malformed record key {k:02x?}"),
            )
        })
    };
    it.seek_to_last();
    let last = it.key().map(offset_of).transpose()?;
    let last_publish_ms = it
        .value()
        .and_then(|v| codec::record_publish_time(v).ok())
        .unwrap_or(0);
    it.seek_to_first();
    let first = it.key().map(offset_of).transpose()?;
    it.status()?;
    Ok(match (first, last) {
        (Some(f), Some(l)) => PartitionBounds {
            start: f,
            end: l + 1,
            last_publish_ms,
            bytes: db
                .get_approximate_sizes_cf(cf, &[rocksdb::Range::new(&lower, &upper)])
                .first()
                .copied()
                .unwrap_or(0),
        },
        _ => PartitionBounds::default(),
    })
}

/// Creates `dir` and its missing parents, and fsyncs the parent of each one
/// created: a new directory entry is durable only once its parent directory
/// is synced, and RocksDB syncs only the entries inside its own directory.
/// Without this, a power cut could take a freshly created data dir, with
/// every event acknowledged into it, and the server would start empty.
fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn open_db(path: &Path, write_buffer_bytes: usize) -> Result<DB> {
    let mut db_opts = rocksdb::Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_background_jobs(2);
    db_opts.set_bytes_per_sync(1 << 20);
    // Keep the WAL bounded: column families with little traffic (meta, subs) must
    // not pin old WAL files forever.
    db_opts.set_max_total_wal_size(256 << 20);
    // After kill -9 or a power cut the WAL may end in a torn record: recover
    // the prefix before it (PointInTime), never skip past damage and replay
    // what follows (SkipAnyCorruptedRecords would reorder history). Damage
    // inside the synced part would make PointInTime drop acknowledged writes;
    // the synced mark (synced_mark.rs) detects that and refuses to start, and
    // RocksDB itself checks that no synced WAL file went missing or shrank.
    db_opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
    db_opts.set_track_and_verify_wals_in_manifest(true);

    let mut table = BlockBasedOptions::default();
    table.set_block_size(16 * 1024);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);

    let cfs = Cf::ALL.iter().map(|&cf| {
        let mut o = rocksdb::Options::default();
        o.set_block_based_table_factory(&table);
        // The other column families hold small state; a quarter of the
        // records memtable is plenty. Every memtable size bounds the free disk
        // a flush needs, which is what RocksDB waits for before it recovers
        // from an out-of-space error by itself.
        o.set_write_buffer_size((write_buffer_bytes / 4).max(1 << 20));
        if cf == Cf::Records {
            // Records are written once in key order per partition and read mostly
            // sequentially; compress the bulk but keep the hot levels fast.
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
            o.set_write_buffer_size(write_buffer_bytes);
        }
        ColumnFamilyDescriptor::new(cf.name(), o)
    });
    // The `default` column family is unused, but opened anyway; left at
    // RocksDB's 64 MiB memtable it would raise the free space RocksDB waits
    // for before it recovers from ENOSPC.
    let mut default_cf = rocksdb::Options::default();
    default_cf.set_write_buffer_size(1 << 20);
    let cfs = cfs.chain(std::iter::once(ColumnFamilyDescriptor::new(
        rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
        default_cf,
    )));
    Ok(DB::open_cf_descriptors(&db_opts, path, cfs)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Durability;

    fn options(dir: &Path) -> Options {
        let mut o = Options::new(dir);
        o.default_partitions = 2;
        o
    }

    fn ev(key: &str, payload: &str) -> NewEvent {
        NewEvent {
            key: key.into(),
            event_type: "t".into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            ..Default::default()
        }
    }

    async fn open(dir: &Path) -> Log {
        let o = options(dir);
        tokio::task::spawn_blocking(move || Log::open(o))
            .await
            .unwrap()
            .unwrap()
    }

    /// Topic "t" with one partition.
    async fn one_partition_topic(log: &Log) -> Arc<TopicState> {
        log.create_topic(
            "t",
            TopicConfig {
                partitions: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    fn read_all(log: &Log, topic: &TopicState, p: PartitionId) -> Vec<StoredEvent> {
        log.read(topic, p, 0, usize::MAX, usize::MAX).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_read_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path()).await;
        let topic = log
            .create_topic("orders", TopicConfig::default())
            .await
            .unwrap();
        assert_eq!(topic.partition_count(), 2);
        let res = log
            .append(&topic, &[ev("a", "1"), ev("a", "2"), ev("b", "3")])
            .await
            .unwrap();
        assert_eq!(
            res[0].partition, res[1].partition,
            "same key, same partition"
        );
        assert_eq!(res[1].offset, res[0].offset + 1);
        let p = res[0].partition;
        let got = read_all(&log, &topic, p);
        let payloads: Vec<_> = got.iter().map(|e| e.payload.clone()).collect();
        assert!(payloads.starts_with(&[Bytes::from("1"), Bytes::from("2")]));
        assert!(got
            .windows(2)
            .all(|w| w[0].publish_time <= w[1].publish_time));
        let incarnation = log.incarnation();
        log.close();

        let log = open(dir.path()).await;
        assert_eq!(log.incarnation(), incarnation + 1);
        let topic = log.topic("orders").expect("topic survives reopen");
        let total: u64 = topic.partitions.iter().map(|t| t.end()).sum();
        assert_eq!(total, 3);
        assert_eq!(
            read_all(&log, &topic, p).len() as u64,
            topic.partitions[p as usize].end()
        );
        // Offsets continue densely after reopen.
        let end_before = topic.partitions[p as usize].end();
        let more = log.append(&topic, &[ev("a", "4")]).await.unwrap();
        assert_eq!(more[0].offset, end_before);
        log.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_get_dense_unique_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path()).await;
        let topic = one_partition_topic(&log).await;
        let mut tasks = Vec::new();
        for w in 0..8 {
            let (log, topic) = (log.clone(), topic.clone());
            tasks.push(tokio::spawn(async move {
                let mut offsets = Vec::new();
                for i in 0..50 {
                    let r = log
                        .append(&topic, &[ev("", &format!("{w}-{i}"))])
                        .await
                        .unwrap();
                    offsets.push(r[0].offset);
                }
                offsets
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let mine = t.await.unwrap();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "each publisher sees its order"
            );
            all.extend(mine);
        }
        all.sort();
        assert_eq!(all, (0..400).collect::<Vec<_>>());
        assert_eq!(read_all(&log, &topic, 0).len(), 400);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_stop_at_the_committed_end_and_respect_limits() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path()).await;
        let topic = one_partition_topic(&log).await;
        let events: Vec<_> = (0..10).map(|i| ev("", &i.to_string())).collect();
        log.append(&topic, &events).await.unwrap();
        assert_eq!(log.read(&topic, 0, 3, 4, usize::MAX).unwrap().len(), 4);
        assert_eq!(
            log.read(&topic, 0, 3, 100, 1).unwrap().len(),
            1,
            "byte limit still returns one"
        );
        assert!(log.read(&topic, 0, 10, 100, usize::MAX).unwrap().is_empty());
        let mut rx = topic.watch_tail();
        rx.borrow_and_update();
        log.append(&topic, &[ev("", "x")]).await.unwrap();
        assert!(rx.has_changed().unwrap(), "a commit wakes tailing readers");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn time_lookups_find_the_first_event_at_or_after_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path()).await;
        let topic = one_partition_topic(&log).await;
        let mut times = Vec::new();
        for i in 0..6 {
            let r = log.append(&topic, &[ev("", &i.to_string())]).await.unwrap();
            times.push(read_all(&log, &topic, 0)[r[0].offset as usize].publish_time);
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        }
        for (offset, &t) in times.iter().enumerate() {
            assert_eq!(log.offset_for_time(&topic, 0, t).unwrap(), offset as u64);
        }
        assert_eq!(log.offset_for_time(&topic, 0, 0).unwrap(), 0);
        assert_eq!(
            log.offset_for_time(&topic, 0, times[5] + 1).unwrap(),
            6,
            "past the tail: the end"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corruption_is_detected_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path()).await;
        let topic = one_partition_topic(&log).await;
        log.append(&topic, &[ev("", "precious")]).await.unwrap();
        // Flip a payload byte behind the log's back.
        let key = keys::record_key(topic.id(), 0, 0);
        let mut v = log.db().get_cf(log.cf(Cf::Records), key).unwrap().unwrap();
        *v.last_mut().unwrap() ^= 1;
        log.db().put_cf(log.cf(Cf::Records), key, v).unwrap();
        let err = log.read(&topic, 0, 0, 10, usize::MAX).unwrap_err();
        assert!(matches!(err, Error::Corruption { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_record_key_refuses_to_open_instead_of_an_empty_partition() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path()).await;
        let topic = one_partition_topic(&log).await;
        log.append(&topic, &[ev("", "a"), ev("", "b")])
            .await
            .unwrap();
        // The last key of the partition grows a stray byte.
        let good = keys::record_key(topic.id(), 0, 1);
        let v = log.db().get_cf(log.cf(Cf::Records), good).unwrap().unwrap();
        let mut bad = good.to_vec();
        bad.push(0);
        log.db().put_cf(log.cf(Cf::Records), &bad, v).unwrap();
        log.close();
        let o = options(dir.path());
        let err = tokio::task::spawn_blocking(move || Log::open(o))
            .await
            .unwrap()
            .err()
            .expect("refuses to open");
        assert!(matches!(err, Error::CorruptMetadata { .. }), "{err}");
        assert!(err.to_string().contains("malformed record key"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_topic_removes_data_and_never_reuses_ids() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path()).await;
        let old = log.create_topic("t", TopicConfig::default()).await.unwrap();
        log.append(&old, &[ev("", "x")]).await.unwrap();
        log.delete_topic("t", &[]).await.unwrap();
        assert!(log.topic("t").is_none());
        let err = log.append(&old, &[ev("", "late")]).await.unwrap_err();
        assert!(
            matches!(err, Error::TopicNotFound(_)),
            "appends to a deleted topic fail: {err}"
        );
        let new = log.create_topic("t", TopicConfig::default()).await.unwrap();
        assert!(new.id() > old.id());
        assert!(new.partitions.iter().all(|p| p.end() == 0));
        log.close();
        let log = open(dir.path()).await;
        assert_eq!(log.topic("t").unwrap().id(), new.id());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buffered_mode_appends_and_limits_event_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(dir.path());
        o.durability = Durability::Buffered;
        o.max_event_bytes = 100;
        let log = tokio::task::spawn_blocking(move || Log::open(o))
            .await
            .unwrap()
            .unwrap();
        let topic = log.topic_or_create("auto").await.unwrap();
        log.append(&topic, &[ev("", "small")]).await.unwrap();
        let err = log
            .append(&topic, &[ev("", &"x".repeat(200))])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    field: "events",
                    ..
                }
            ),
            "{err}"
        );
    }
}

//! The group-commit writer: the only thread that writes to RocksDB.
//!
//! ```text
//!  publish handlers ──► bounded mpsc ──► writer thread
//!                                         │ 1. drain every queued command (up to a byte cap)
//!                                         │ 2. assign offsets, stamp publish times
//!                                         │ 3. ONE WriteBatch, ONE write (+ WAL sync if any
//!                                         │    command in the group needs it)
//!                                         │ 4. advance each partition's committed end,
//!                                         │    bump the topic's tail watch
//!                                         └ 5. answer every command of the group
//! ```
//!
//! Under load one fsync carries thousands of events; at low load a publish costs a
//! single fsync.
//!
//! The fsync is pipelined: a group that needs it is written without sync and
//! handed to a second thread, the syncer, which drains every group written
//! meanwhile, makes them durable with ONE WAL sync (`FlushWAL(true)`) and only
//! then advances the committed ends and answers. So the writer encodes and
//! inserts group N+1 into the memtable while group N's fsync is in flight: a
//! round costs max(fsync, write) instead of their sum. Readers never see the
//! unsynced records, because they are bounded by the committed end. Once any
//! group went through the syncer, later groups follow it there too, so
//! committed ends and answers keep the write order. Because one thread assigns offsets and writes, offsets are dense
//! and a reader bounded by the committed end never sees an event that a crash
//! could take back.
//!
//! Faults (see [`crate::health`]): a failed sync, a failed write other than
//! out of space, or a panic in the writer or syncer thread stops the write path
//! for good: that group and every later command fail with
//! [`Error::WriterFailed`] until restart. Retrying an fsync and then
//! acknowledging can lose data silently, because the kernel may have dropped
//! the dirty pages that failed to write. Out of space is not fatal: appends are
//! refused with [`Error::DiskFull`] while the disk is under its reserve
//! ([`crate::space`]), and a write that still hits ENOSPC fails only its own
//! group.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;

use bytes::BytesMut;
use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::{mpsc, oneshot};

use crate::dedup::Dedup;
use crate::error::{is_no_space, Error, Result};
use crate::health::HealthCell;
use crate::keys::Cf;
use crate::meta::now_ms;
use crate::metric_names;
use crate::space::SpaceGuard;
use crate::synced_mark::SyncedMark;
use crate::topic::TopicState;
use crate::types::{AppendResult, PartitionId};

mod append;
mod batches;
mod syncer;
mod update;

use syncer::{
    complete, fail_replies, fail_replies_with, panic_message, run_syncer, sync_and_complete,
    Written,
};
pub use update::{IdAllocator, Sink, Update};

/// Stop draining the queue into one group past this many bytes, so a single write
/// stays a bounded amount of work and memory.
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// ... or past this many commands.
const MAX_GROUP_COMMANDS: usize = 4096;
/// Groups written but not yet synced before the writer waits for the syncer.
const MAX_UNSYNCED_GROUPS: usize = 256;
/// A partition gets a time-index entry at most this often.
pub const TIME_INDEX_INTERVAL_MS: u64 = 100;

/// An encoded (unsealed) record bound for a partition.
pub struct PendingRecord {
    pub partition: PartitionId,
    pub record: BytesMut,
    /// Non-empty: deduplicate within the window (see [`crate::dedup`]).
    pub idempotency_key: String,
}

pub enum Command {
    Append {
        topic: Arc<TopicState>,
        records: Vec<PendingRecord>,
        reply: oneshot::Sender<Result<Vec<AppendResult>>>,
    },
    Write {
        updates: Vec<Update>,
        sync: bool,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// Marks the topic deleted (so later appends fail) and writes `updates`.
    DeleteTopic {
        topic: Arc<TopicState>,
        updates: Vec<Update>,
        reply: oneshot::Sender<Result<()>>,
    },
}

enum Reply {
    Append(
        oneshot::Sender<Result<Vec<AppendResult>>>,
        Result<Vec<AppendResult>>,
    ),
    Unit(Option<oneshot::Sender<Result<()>>>),
}

/// What a committed group must publish to readers.
struct Advance {
    topic: Arc<TopicState>,
    partition: PartitionId,
    end: u64,
    /// Events of this group in the partition.
    events: usize,
    /// Their bytes, as counted in the partition's retained bytes.
    bytes: u64,
}

impl Advance {
    /// The group was not written: give its offsets and bytes back, so the
    /// next group takes the same offsets (offsets stay dense).
    fn undo(&self) {
        let tail = &self.topic.partitions[self.partition as usize];
        tail.next.store(self.end - self.events as u64, Relaxed);
        tail.bytes.fetch_sub(self.bytes, Relaxed);
    }
}

pub struct Writer {
    db: Arc<DB>,
    rx: mpsc::Receiver<Command>,
    sync_appends: bool,
    /// Shared with the syncer and the health reporters; a failure is sticky.
    health: HealthCell,
    space: SpaceGuard,
    dedup: Dedup,
    /// Advanced after every successful WAL sync.
    mark: Arc<SyncedMark>,
}

impl Writer {
    pub fn new(
        db: Arc<DB>,
        rx: mpsc::Receiver<Command>,
        sync_appends: bool,
        dedup: Dedup,
        health: HealthCell,
        space: SpaceGuard,
        mark: Arc<SyncedMark>,
    ) -> Self {
        Writer {
            db,
            rx,
            sync_appends,
            health,
            space,
            dedup,
            mark,
        }
    }

    /// Runs until every sender is dropped, then stops the syncer once it has
    /// answered everything. Call on a dedicated thread.
    ///
    /// A panic in here stops the write path (health turns `Failed`) instead
    /// of silently closing the queue: the thread then keeps answering every
    /// command with an error until the process restarts.
    pub fn run(mut self) {
        let loop_result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_loop()));
        if let Err(panic) = loop_result {
            self.health.fail(format!(
                "the writer thread panicked: {}",
                panic_message(&*panic)
            ));
            while let Some(cmd) = self.rx.blocking_recv() {
                let failure = self.health.failed().unwrap_or_default();
                fail(cmd, || Error::WriterFailed(failure.clone()));
            }
        }
    }

    fn run_loop(&mut self) {
        let (to_syncer, syncer_rx) = std::sync::mpsc::sync_channel(MAX_UNSYNCED_GROUPS);
        let pending = Arc::new(AtomicUsize::new(0));
        let syncer = {
            let (db, pending, health) = (self.db.clone(), pending.clone(), self.health.clone());
            let mark = self.mark.clone();
            let idle_sync = self.sync_appends.then_some(syncer::IDLE_SYNC);
            std::thread::Builder::new()
                .name("eventbus-syncer".into())
                .spawn(move || run_syncer(db, syncer_rx, pending, health, &mark, idle_sync))
        };
        let syncer = match syncer {
            Ok(handle) => Some((handle, to_syncer)),
            Err(e) => {
                // Without a syncer every group syncs inline: slower, still correct.
                tracing::warn!(error = %e, "cannot start the syncer thread; syncing inline");
                None
            }
        };
        while let Some(first) = self.rx.blocking_recv() {
            fail::fail_point!("writer::panic", |_| panic!("injected writer panic"));
            let mut group = vec![first];
            let mut bytes = 0usize;
            while bytes < MAX_GROUP_BYTES && group.len() < MAX_GROUP_COMMANDS {
                match self.rx.try_recv() {
                    Ok(cmd) => {
                        bytes += command_bytes(&cmd);
                        group.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            let to_syncer = syncer.as_ref().map(|(_, tx)| (tx, &*pending));
            self.commit_group(group, to_syncer);
        }
        if let Some((handle, tx)) = syncer {
            drop(tx);
            let _ = handle.join();
        }
        tracing::debug!("writer stopped: all senders closed");
    }

    fn failed(&self) -> Option<String> {
        self.health.failed()
    }

    fn commit_group(
        &mut self,
        group: Vec<Command>,
        to_syncer: Option<(&std::sync::mpsc::SyncSender<Written>, &AtomicUsize)>,
    ) {
        let _span = tracing::debug_span!("group_commit", commands = group.len()).entered();
        if let Some(failure) = self.failed() {
            for cmd in group {
                fail(cmd, || Error::WriterFailed(failure.clone()));
            }
            return;
        }
        let mut batch = WriteBatch::default();
        let written = self.add_group(&mut batch, group);

        // Through the syncer when this group needs a sync, or when an earlier
        // group still waits there (answers and committed ends keep their order).
        let via_syncer = to_syncer.filter(|(_, pending)| written.sync || pending.load(Acquire) > 0);
        let events: usize = written.advances.iter().map(|a| a.events).sum();
        if events > 0 {
            metrics::histogram!(metric_names::COMMIT_BATCH_EVENTS).record(events as f64);
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(written.sync && via_syncer.is_none());
        if let Err(msg) = self.write(batch, &opts) {
            self.dedup.group_failed();
            for a in &written.advances {
                a.undo();
            }
            self.write_failed(&msg, written.replies);
            return;
        }
        self.dedup.group_written();
        match via_syncer {
            Some((tx, pending)) => {
                pending.fetch_add(1, Release);
                if let Err(unsent) = tx.send(written) {
                    // The syncer is gone (it only stops when we do): answer here.
                    pending.fetch_sub(1, Release);
                    sync_and_complete(&self.db, vec![unsent.0], &self.health, &self.mark);
                }
            }
            // The syncer may have failed a sync since the check at the top;
            // nothing written after a failed sync may be acknowledged.
            None => match self.failed() {
                Some(failure) => fail_replies(written.replies, &failure),
                None => complete(written),
            },
        }
    }

    /// Adds every command of `group` to `batch`: what the group will
    /// publish and answer once it is written (and synced, when it must be).
    fn add_group(&mut self, batch: &mut WriteBatch, group: Vec<Command>) -> Written {
        let now = now_ms();
        let started = std::time::Instant::now();
        let mut sync = false;
        let mut replies = Vec::with_capacity(group.len());
        let mut advances: Vec<Advance> = Vec::new();
        let mut batches = batches::OpenBatches::default();
        let db = self.db.clone();
        let records_cf = cf_handle(&db, Cf::Records);
        let dedup_cf = cf_handle(&db, Cf::Dedup);
        for cmd in group {
            // Appends' records and idempotency keys go into the batch before
            // any other write (a topic's deletion must follow them).
            if !matches!(cmd, Command::Append { .. }) {
                batches.flush(batch, records_cf);
                self.dedup.seal_group(batch, dedup_cf);
            }
            match cmd {
                Command::Append {
                    topic,
                    records,
                    reply,
                } => {
                    let results = match self.admit(&topic, &records) {
                        Ok(()) => {
                            sync |= self.sync_appends;
                            let group = (&mut advances, &mut batches);
                            self.add_append(batch, &topic, records, now, group)
                        }
                        Err(e) => Err(e),
                    };
                    replies.push(Reply::Append(reply, results));
                }
                Command::Write {
                    updates,
                    sync: s,
                    reply,
                } => {
                    sync |= s;
                    self.add_updates(batch, &updates);
                    replies.push(Reply::Unit(reply));
                }
                Command::DeleteTopic {
                    topic,
                    updates,
                    reply,
                } => {
                    topic.mark_deleted();
                    sync = true;
                    self.add_updates(batch, &updates);
                    replies.push(Reply::Unit(Some(reply)));
                }
            }
        }
        batches.flush(batch, records_cf);
        self.dedup.seal_group(batch, dedup_cf);
        Written {
            sync,
            advances,
            batches: batches.into_flushed(),
            replies,
            started,
        }
    }

    /// Refuses an append to a deleted topic, or while the disk is under its
    /// reserve.
    fn admit(&mut self, topic: &TopicState, records: &[PendingRecord]) -> Result<()> {
        if topic.is_deleted() {
            return Err(Error::TopicNotFound(topic.meta.name.clone()));
        }
        let bytes = records.iter().map(|r| r.record.len() as u64).sum();
        if let Err((free_bytes, reserve_bytes)) = self.space.admit(bytes, std::time::Instant::now())
        {
            self.health.disk_full(free_bytes, reserve_bytes);
            return Err(Error::DiskFull {
                free_bytes,
                reserve_bytes,
            });
        }
        if self.space.reserve() > 0 {
            self.health.space_ok();
        }
        Ok(())
    }

    /// A group's write failed: out of space refuses the group only; anything
    /// else stops the write path.
    fn write_failed(&mut self, msg: &str, replies: Vec<Reply>) {
        if is_no_space(msg) {
            // Nothing of this group reached the WAL: refuse it, keep going.
            let (free_bytes, reserve_bytes) = self.out_of_space();
            let full = || Error::DiskFull {
                free_bytes,
                reserve_bytes,
            };
            fail_replies_with(replies, full);
        } else if msg.starts_with("Corruption") {
            // RocksDB stops all writes once a flush or compaction finds
            // damaged data; a restart meets the same damage.
            self.health.fail(format!(
                "stored data is damaged and RocksDB stopped all writes: {msg}; restore the data dir from a backup (see RUNBOOK.md, corruption)"
            ));
            fail_replies(replies, msg);
        } else {
            self.health.fail(format!("RocksDB write failed: {msg}"));
            fail_replies(replies, msg);
        }
    }

    /// One RocksDB write, with the `writer::write` failpoint in front of it
    /// (`return(enospc)` fails as out of space, any other `return` as EIO).
    fn write(&self, batch: WriteBatch, opts: &WriteOptions) -> Result<(), String> {
        fail::fail_point!("writer::write", |arg| Err(match arg.as_deref() {
            Some("enospc") => "IO error: No space left on device: injected".to_string(),
            _ => "IO error: Input/output error: injected".to_string(),
        }));
        self.db.write_opt(batch, opts).map_err(|e| e.into_string())
    }

    /// A write found the disk full: record it and look again next time.
    fn out_of_space(&mut self) -> (u64, u64) {
        self.space.invalidate();
        let free = crate::space::free_bytes(self.space.dir()).unwrap_or(0);
        let reserve = self.space.reserve();
        self.health.disk_full(free, reserve);
        (free, reserve)
    }

    fn add_updates(&self, batch: &mut WriteBatch, updates: &[Update]) {
        let mut sink = BatchSink {
            db: &self.db,
            batch,
        };
        for update in updates {
            update.encode(&mut sink);
        }
    }
}

/// Encodes [`Update`]s straight into a group's `WriteBatch`.
struct BatchSink<'a> {
    db: &'a DB,
    batch: &'a mut WriteBatch,
}

impl Sink for BatchSink<'_> {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.batch.put_cf(cf_handle(self.db, cf), key, value);
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.batch.delete_cf(cf_handle(self.db, cf), key);
    }

    fn delete_range(&mut self, cf: Cf, from: &[u8], to: &[u8]) {
        self.batch.delete_range_cf(cf_handle(self.db, cf), from, to);
    }
}

fn cf_handle(db: &DB, cf: Cf) -> &rocksdb::ColumnFamily {
    db.cf_handle(cf.name())
        .expect("every column family is created at open")
}

fn command_bytes(cmd: &Command) -> usize {
    match cmd {
        Command::Append { records, .. } => records.iter().map(|r| r.record.len() + 16).sum(),
        Command::Write { updates, .. } | Command::DeleteTopic { updates, .. } => {
            updates.iter().map(Update::size_hint).sum()
        }
    }
}

fn fail(cmd: Command, err: impl Fn() -> Error) {
    match cmd {
        Command::Append { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Command::Write { reply, .. } => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(err()));
            }
        }
        Command::DeleteTopic { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
    }
}

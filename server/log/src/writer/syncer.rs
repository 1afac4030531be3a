//! The syncer thread: makes written groups durable with one WAL sync, then
//! publishes their committed ends and answers them, in write order. See the
//! module docs of [`crate::writer`] for why the fsync is pipelined.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Release;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::DB;

use super::batches::Flushed;
use super::{Advance, Reply};
use crate::error::Error;
use crate::health::HealthCell;
use crate::metric_names;
use crate::synced_mark::SyncedMark;
use crate::topic::TopicState;

/// A group in RocksDB whose effects wait for the syncer.
pub(super) struct Written {
    pub(super) sync: bool,
    pub(super) advances: Vec<Advance>,
    /// The record batches written, for the hot tails.
    pub(super) batches: Vec<Flushed>,
    pub(super) replies: Vec<Reply>,
    /// When the writer took the group: commit latency runs from here.
    pub(super) started: std::time::Instant,
}

/// In fsync mode, the longest a write that did not ask for a sync (ack
/// state, dead letters, redrive entries) stays unsynced when no publish
/// syncs the WAL. A kill keeps such writes (they are in the page cache); a
/// power cut takes them, so this, plus the subscriptions' ack-flush
/// interval, bounds what a power cut can take from them: acked events come
/// back at most that old. One fsync per window, and only while consumers
/// settle and nobody publishes.
pub(super) const IDLE_SYNC: Duration = Duration::from_millis(50);

/// The syncer thread: one WAL sync for every group written since the last,
/// then their committed ends and answers, in write order; with `idle_sync`
/// (fsync mode), also a sync at most that long after an unsynced group. A
/// panic stops the write path like a failed sync; the groups it held are
/// answered with an error when their reply channels drop.
pub(super) fn run_syncer(
    db: Arc<DB>,
    rx: std::sync::mpsc::Receiver<Written>,
    pending: Arc<AtomicUsize>,
    health: HealthCell,
    mark: &SyncedMark,
    idle_sync: Option<Duration>,
) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // When the oldest group written without a sync since the last sync was.
        let mut unsynced_since: Option<Instant> = None;
        loop {
            let next = match (idle_sync, unsynced_since) {
                (Some(window), Some(since)) => {
                    rx.recv_timeout((since + window).saturating_duration_since(Instant::now()))
                }
                _ => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let first = match next {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    if health.failed().is_none() {
                        // A failure is recorded in health by `sync`.
                        let _ = sync(&db, &health, mark);
                    }
                    unsynced_since = None;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut groups = vec![first];
            groups.extend(rx.try_iter());
            let n = groups.len();
            let synced = groups.iter().any(|w| w.sync);
            sync_and_complete(&db, groups, &health, mark);
            pending.fetch_sub(n, Release);
            if synced {
                unsynced_since = None;
            } else {
                unsynced_since.get_or_insert_with(Instant::now);
            }
        }
    }));
    if let Err(panic) = result {
        health.fail(format!(
            "the syncer thread panicked: {}",
            panic_message(&*panic)
        ));
    }
}

/// One WAL sync (if any group needs it) for `groups`, then their committed
/// ends and answers; after this or any earlier failure, errors instead.
/// A failed sync stops the write path whatever its errno (out of space
/// included): the pages that failed to reach the disk may be gone.
pub(super) fn sync_and_complete(
    db: &DB,
    groups: Vec<Written>,
    health: &HealthCell,
    mark: &SyncedMark,
) {
    let _span = tracing::debug_span!("wal_sync", groups = groups.len()).entered();
    let synced = match health.failed() {
        Some(msg) => Err(msg),
        None if groups.iter().any(|w| w.sync) => {
            let events: usize = groups
                .iter()
                .flat_map(|w| &w.advances)
                .map(|a| a.events)
                .sum();
            metrics::histogram!(metric_names::WAL_SYNC_EVENTS).record(events as f64);
            sync(db, health, mark)
        }
        None => Ok(()),
    };
    match synced {
        Ok(()) => groups.into_iter().for_each(complete),
        Err(msg) => {
            for w in groups {
                fail_replies(w.replies, &msg);
            }
        }
    }
}

/// One WAL sync, and the synced mark moved to what it covered; a failure
/// stops the write path (fail-stop, whatever its errno).
fn sync(db: &DB, health: &HealthCell, mark: &SyncedMark) -> Result<(), String> {
    // Read before the sync: everything up to here is in the WAL the sync
    // covers (the writer may add more meanwhile).
    let covered = db.latest_sequence_number();
    let started = Instant::now();
    let synced = sync_wal(db);
    metrics::histogram!(metric_names::WAL_SYNC_DURATION).record(started.elapsed().as_secs_f64());
    synced.map(|()| mark.advance(covered)).map_err(|msg| {
        health.fail(format!("WAL sync failed: {msg}"));
        msg
    })
}

/// `FlushWAL(sync)`, with the `syncer::sync` failpoint (`return`: EIO;
/// `panic`: a dying syncer) in front of it.
fn sync_wal(db: &DB) -> Result<(), String> {
    fail::fail_point!("syncer::sync", |_| Err(
        "IO error: fdatasync: Input/output error: injected".to_string()
    ));
    db.flush_wal(true).map_err(|e| e.into_string())
}

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A group is durable: publish its records to readers, then answer it.
pub(super) fn complete(w: Written) {
    if !w.advances.is_empty() {
        metrics::histogram!(metric_names::COMMIT_DURATION)
            .record(w.started.elapsed().as_secs_f64());
    }
    let mut last_topic: Option<*const TopicState> = None;
    // Into the hot tails before the ends move: a reader that sees an end
    // finds what is below it here or in RocksDB.
    for batch in w.batches {
        batch.keep_hot();
    }
    for adv in &w.advances {
        adv.topic.partitions[adv.partition as usize]
            .end
            .store(adv.end, Release);
    }
    for adv in &w.advances {
        let ptr = Arc::as_ptr(&adv.topic);
        if last_topic != Some(ptr) {
            adv.topic.notify_tail();
            last_topic = Some(ptr);
        }
    }
    for r in w.replies {
        match r {
            Reply::Append(tx, res) => {
                let _ = tx.send(res);
            }
            Reply::Unit(tx) => {
                if let Some(tx) = tx {
                    let _ = tx.send(Ok(()));
                }
            }
        }
    }
}

pub(super) fn fail_replies(replies: Vec<Reply>, msg: &str) {
    fail_replies_with(replies, || Error::WriterFailed(msg.to_string()));
}

pub(super) fn fail_replies_with(replies: Vec<Reply>, err: impl Fn() -> Error) {
    for r in replies {
        match r {
            Reply::Append(tx, _) => {
                let _ = tx.send(Err(err()));
            }
            Reply::Unit(Some(tx)) => {
                let _ = tx.send(Err(err()));
            }
            Reply::Unit(None) => {}
        }
    }
}

//! [`TopicState`]: a live topic, its metadata and the positions of its
//! partitions, shared by the writer (which advances them), readers and the
//! delivery engine.
//!
//! ```text
//!  partition p of a topic:
//!
//!     start                                  end         next
//!       │  retained, committed records        │  in the    │
//!       ▼                                     ▼  writer's  ▼
//!     ┌───┬───┬───┬───┬───┬───┬───┬───┬───┬───┬───┬───┐
//!     │ 0 │ 1 │ 2 │ 3 │ 4 │ 5 │ 6 │ 7 │ 8 │ 9 │10 │11 │
//!     └───┴───┴───┴───┴───┴───┴───┴───┴───┴───┴───┴───┘
//!                                               group being committed
//! ```
//!
//! * `next` is the offset the writer gives the next record; only the writer
//!   thread touches it.
//! * `end` is one past the last *committed* record. Readers never look at or past
//!   it, so they cannot observe an event a crash could take back. It only grows,
//!   and every advance bumps the topic's tail [`watch`] so tailing readers wake.
//! * `start` is the first retained offset.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::hot_tail::{HotBudget, HotTail};
use crate::meta::TopicMeta;
use crate::partitioner::{partition_for_key, Spreader};
use crate::types::{Offset, PartitionId, TopicId};

/// Per-partition positions; see the module docs.
#[derive(Debug)]
pub struct PartitionTail {
    pub(crate) next: AtomicU64,
    pub(crate) end: AtomicU64,
    pub(crate) start: AtomicU64,
    pub(crate) last_publish_ms: AtomicU64,
    pub(crate) last_index_ms: AtomicU64,
    /// Bytes of retained records: exact for what this run wrote and trimmed,
    /// estimated from SST sizes at open. Drives `max_bytes` retention.
    pub(crate) bytes: AtomicU64,
    /// The most recently committed batches, in memory (see [`crate::hot_tail`]).
    pub(crate) hot: HotTail,
}

impl PartitionTail {
    /// One past the last committed offset.
    pub fn end(&self) -> Offset {
        self.end.load(Ordering::Acquire)
    }
    /// The first retained offset.
    pub fn start(&self) -> Offset {
        self.start.load(Ordering::Acquire)
    }
}

/// A live topic: its metadata plus the shared tail positions.
#[derive(Debug)]
pub struct TopicState {
    pub meta: TopicMeta,
    pub partitions: Box<[PartitionTail]>,
    tail_tx: watch::Sender<u64>,
    deleted: AtomicBool,
    spreader: Spreader,
    /// Subscriptions of this topic that have members now: only then do its
    /// partitions keep a hot tail (see [`LiveReader`]).
    live_readers: AtomicUsize,
}

impl TopicState {
    pub(crate) fn new(
        meta: TopicMeta,
        bounds: Vec<PartitionBounds>,
        hot_budget: &Arc<HotBudget>,
    ) -> Self {
        let partitions = bounds
            .into_iter()
            .map(|b| PartitionTail {
                next: AtomicU64::new(b.end),
                end: AtomicU64::new(b.end),
                start: AtomicU64::new(b.start),
                last_publish_ms: AtomicU64::new(b.last_publish_ms),
                bytes: AtomicU64::new(b.bytes),
                last_index_ms: AtomicU64::new(0),
                hot: HotTail::new(hot_budget.clone()),
            })
            .collect();
        TopicState {
            meta,
            partitions,
            tail_tx: watch::channel(0).0,
            deleted: AtomicBool::new(false),
            spreader: Spreader::default(),
            live_readers: AtomicUsize::new(0),
        }
    }

    pub fn id(&self) -> TopicId {
        self.meta.id
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn partition_count(&self) -> u32 {
        self.meta.partitions
    }

    /// Events retained now: the sum over partitions of end - start.
    pub fn retained_events(&self) -> u64 {
        self.partitions.iter().map(|p| p.end() - p.start()).sum()
    }

    /// Events ever committed: the sum of the partitions' end offsets.
    pub fn committed_events(&self) -> u64 {
        self.partitions.iter().map(|p| p.end()).sum()
    }

    /// A receiver that changes whenever any partition's committed end advances.
    pub fn watch_tail(&self) -> watch::Receiver<u64> {
        self.tail_tx.subscribe()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.notify_tail();
    }

    pub(crate) fn notify_tail(&self) {
        self.tail_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether a subscription of this topic has members: the writer keeps
    /// the newest batches in memory only then, so a topic nobody reads costs
    /// neither the memory nor the writer's time.
    pub(crate) fn has_live_readers(&self) -> bool {
        self.live_readers.load(Ordering::Relaxed) > 0
    }

    /// The partition an event goes to.
    pub fn route(&self, key: &str) -> PartitionId {
        if key.is_empty() {
            self.spreader.next(self.meta.partitions)
        } else {
            partition_for_key(key, self.meta.partitions)
        }
    }
}

/// Counts a subscription as a live reader of its topic while it has
/// members; uncounts it when dropped.
pub(crate) struct LiveReader {
    topic: Arc<TopicState>,
    counted: bool,
}

impl LiveReader {
    pub(crate) fn new(topic: Arc<TopicState>) -> Self {
        LiveReader {
            topic,
            counted: false,
        }
    }

    /// Counts or uncounts the subscription: `live` when it has members.
    pub(crate) fn set(&mut self, live: bool) {
        if live != self.counted {
            self.counted = live;
            if live {
                self.topic.live_readers.fetch_add(1, Ordering::Relaxed);
            } else {
                self.topic.live_readers.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for LiveReader {
    fn drop(&mut self) {
        self.set(false);
    }
}

pub use eventbus_broker::TopicConfig;

/// What recovery learns about a partition from its first and last record.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PartitionBounds {
    pub(crate) start: Offset,
    pub(crate) end: Offset,
    /// Publish time of the last record, so publish times stay monotonic per
    /// partition across restarts even if the clock stepped back.
    pub(crate) last_publish_ms: u64,
    /// Estimated stored bytes (SST files only).
    pub(crate) bytes: u64,
}

//! The read side of a subscription: per partition, the cursor (the next offset
//! to read from the log) and the events read ahead and not yet handed out; the
//! one log read in flight; and the bound on what is held read ahead, in events
//! and in bytes.
//!
//! Reads go round-robin across partitions, and each stays within the
//! subscription's unsettled window above the partition's floor. Events come
//! out round-robin across partitions too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Footprint;
use crate::error::{Error, Result};
use crate::metric_names;
use crate::store::Log;
use crate::topic::TopicState;
use crate::types::{Offset, PartitionId, StoredEvent};

/// Events read from the log per fetch.
const READ_BATCH: usize = 512;
/// Record bytes read from the log per fetch (at least one event).
const READ_BYTES: usize = 4 << 20;
/// Stop reading ahead once this many fetched events wait for a member (the
/// byte bound is `Options::read_ahead_bytes`).
const BUFFER_TARGET: usize = 2048;
/// Back off this long after a failed log read before trying again.
const READ_RETRY: Duration = Duration::from_secs(1);
/// Look again this long after a read found nothing although the partition's
/// end said otherwise (a trim or delete raced it).
const EMPTY_RETRY: Duration = Duration::from_millis(100);

/// What a read-ahead task returns: the partition and the events it read.
pub(super) type FetchResult = Result<(PartitionId, Vec<StoredEvent>)>;

/// One partition's read position and what was read from it.
struct Feed {
    /// Next offset to read from the log.
    cursor: Offset,
    /// Read, not yet handed out, in offset order.
    buffer: VecDeque<Arc<StoredEvent>>,
}

/// A log read to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Read {
    pub partition: PartitionId,
    pub from: Offset,
    pub max_events: usize,
    pub max_bytes: usize,
}

/// Where a partition stands, for choosing the next read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// Everything below is settled (the ack state's floor).
    pub floor: Offset,
    /// The log's end: the next offset to be written.
    pub end: Offset,
}

/// What became of a finished read.
#[derive(Debug)]
pub(super) enum Fetched {
    /// Its events are buffered, or it was dropped (its partition was
    /// repositioned meanwhile, or it found nothing: read again soon).
    Done,
    /// It hit damaged data at or after `offset`.
    Damaged {
        partition: PartitionId,
        offset: Offset,
        error: Error,
    },
    /// It failed otherwise; the next read waits a while.
    Failed(Error),
}

pub(super) struct ReadAhead {
    feeds: Vec<Feed>,
    /// What the buffers hold.
    size: Footprint,
    /// The partition whose buffer hands out the next event.
    take_turn: usize,
    /// The partition read next.
    fetch_turn: usize,
    fetch: Option<JoinHandle<FetchResult>>,
    /// Partition and cursor the running read started from; a result whose
    /// partition cursor moved meanwhile (a seek) is dropped.
    fetch_from: Option<(PartitionId, Offset)>,
    /// No read before this (after a failed or empty one).
    retry_at: Option<Instant>,
    /// Reads served from the hot tail and from RocksDB, registered once (a
    /// recorder lookup per read would cost more than a hot read).
    reads_hot: metrics::Counter,
    reads_rocksdb: metrics::Counter,
}

impl ReadAhead {
    /// Starts reading each partition at its cursor.
    pub fn new(cursors: impl IntoIterator<Item = Offset>) -> Self {
        ReadAhead {
            feeds: cursors
                .into_iter()
                .map(|cursor| Feed {
                    cursor,
                    buffer: VecDeque::new(),
                })
                .collect(),
            size: Footprint::default(),
            take_turn: 0,
            fetch_turn: 0,
            fetch: None,
            fetch_from: None,
            retry_at: None,
            reads_hot: metrics::counter!(metric_names::READS, "from" => "hot_tail"),
            reads_rocksdb: metrics::counter!(metric_names::READS, "from" => "rocksdb"),
        }
    }

    pub fn cursor(&self, p: PartitionId) -> Offset {
        self.feeds[p as usize].cursor
    }

    pub fn is_fetching(&self) -> bool {
        self.fetch.is_some()
    }

    /// When a read may start again after a failed or empty one.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The next read, if one is due: none while one runs, while the read-ahead
    /// (this plus `held_elsewhere`, events read ahead and held back) is full, or
    /// before a retry time. Partitions take turns; each read stays below
    /// `floor + window`.
    pub fn next_read(
        &mut self,
        now: Instant,
        held_elsewhere: Footprint,
        read_ahead_bytes: usize,
        window: u64,
        bounds: impl Fn(usize) -> Bounds,
    ) -> Option<Read> {
        let held = self.size.plus(held_elsewhere);
        if self.fetch.is_some()
            || held.events >= BUFFER_TARGET
            || held.bytes >= read_ahead_bytes
            || self.retry_at.is_some_and(|t| t > now)
        {
            return None;
        }
        self.retry_at = None;
        // At least one event is read whatever this says, so an event bigger
        // than the whole read-ahead still gets through.
        let max_bytes = READ_BYTES.min(read_ahead_bytes - held.bytes);
        let n = self.feeds.len();
        for i in 0..n {
            let p = (self.fetch_turn + i) % n;
            let cursor = self.feeds[p].cursor;
            let Bounds { floor, end } = bounds(p);
            if cursor < end && cursor.saturating_sub(floor) < window {
                self.fetch_turn = (p + 1) % n;
                return Some(Read {
                    partition: p as PartitionId,
                    from: cursor,
                    max_events: READ_BATCH.min((floor + window).saturating_sub(cursor) as usize),
                    max_bytes,
                });
            }
        }
        None
    }

    /// Starts `read`: from the partition's hot tail when it holds `from`, and
    /// then the result is returned at once, for [`ReadAhead::on_fetched`];
    /// otherwise on a blocking thread, and [`ReadAhead::fetched`] waits for it.
    pub fn start(&mut self, read: Read, log: &Log, topic: &Arc<TopicState>) -> Option<FetchResult> {
        self.started(&read);
        let Read {
            partition: p,
            from,
            max_events,
            max_bytes,
        } = read;
        if let Some(hot) = log.read_hot(topic, p, from, max_events, max_bytes) {
            self.reads_hot.increment(1);
            return Some(hot.map(|evs| (p, evs)));
        }
        self.reads_rocksdb.increment(1);
        let (log, topic) = (log.clone(), topic.clone());
        self.fetch = Some(tokio::task::spawn_blocking(move || {
            log.read(&topic, p, from, max_events, max_bytes)
                .map(|evs| (p, evs))
        }));
        None
    }

    fn started(&mut self, read: &Read) {
        self.fetch_from = Some((read.partition, read.from));
    }

    /// Waits for the running read. Call only while [`ReadAhead::is_fetching`];
    /// the result goes to [`ReadAhead::on_fetched`].
    pub async fn fetched(&mut self) -> FetchResult {
        let task = self.fetch.as_mut().expect("called only while a read runs");
        task.await.unwrap_or_else(|_| Err(Error::ShuttingDown))
    }

    /// Buffers what a read returned, skipping what `is_settled` says was
    /// settled already (after a restart the cursor starts at the floor).
    pub fn on_fetched(
        &mut self,
        res: FetchResult,
        is_settled: impl Fn(PartitionId, Offset) -> bool,
    ) -> Fetched {
        self.fetch = None;
        let origin = self.fetch_from.take();
        if let Some((p, from)) = origin {
            if self.feeds[p as usize].cursor != from {
                return Fetched::Done; // the partition was repositioned while we read
            }
        }
        match res {
            Ok((_, events)) if events.is_empty() => {
                self.retry_at = Some(Instant::now() + EMPTY_RETRY);
                Fetched::Done
            }
            Ok((p, events)) => {
                let feed = &mut self.feeds[p as usize];
                for ev in events {
                    feed.cursor = ev.offset + 1;
                    if is_settled(p, ev.offset) {
                        continue;
                    }
                    self.size.add(&ev);
                    feed.buffer.push_back(Arc::new(ev));
                }
                Fetched::Done
            }
            Err(error) if error.is_damage() => {
                let (partition, offset) = origin.unwrap_or_default();
                Fetched::Damaged {
                    partition,
                    offset,
                    error,
                }
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + READ_RETRY);
                Fetched::Failed(e)
            }
        }
    }

    /// The next buffered event, partitions taking turns. Each event goes to
    /// `offer`, which returns it to hand it out, or `None` when it disposed of
    /// it (filtered it out, or held it back); then the next one is offered.
    pub fn hand_out(
        &mut self,
        mut offer: impl FnMut(Arc<StoredEvent>) -> Option<Arc<StoredEvent>>,
    ) -> Option<Arc<StoredEvent>> {
        let n = self.feeds.len();
        let mut i = 0;
        while i < n {
            let p = (self.take_turn + i) % n;
            let Some(ev) = self.feeds[p].buffer.pop_front() else {
                i += 1;
                continue;
            };
            self.size.remove(&ev);
            if let Some(ev) = offer(ev) {
                self.take_turn = (p + 1) % n;
                return Some(ev);
            }
        }
        None
    }

    /// Repositions partition `p` at `target`, dropping what was read ahead.
    pub fn reposition(&mut self, p: PartitionId, target: Offset) {
        let feed = &mut self.feeds[p as usize];
        let size = &mut self.size;
        feed.buffer.drain(..).for_each(|e| size.remove(&e));
        feed.cursor = target;
    }

    /// Retention moved partition `p`'s start up to `start`: reading goes on
    /// from there at the earliest.
    pub fn skip_to(&mut self, p: PartitionId, start: Offset) {
        let feed = &mut self.feeds[p as usize];
        feed.cursor = feed.cursor.max(start);
    }

    /// Buffered events of partition `p` below `offset`.
    pub fn buffered_below(&self, p: PartitionId, offset: Offset) -> u64 {
        let buffer = &self.feeds[p as usize].buffer;
        buffer.iter().filter(|e| e.offset < offset).count() as u64
    }

    /// The oldest buffered event of each partition.
    pub fn oldest(&self) -> impl Iterator<Item = &Arc<StoredEvent>> {
        self.feeds.iter().filter_map(|f| f.buffer.front())
    }

    /// Stops the running read, if any.
    pub fn abort(&mut self) {
        if let Some(f) = self.fetch.take() {
            f.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_event;
    use super::*;

    const MB: usize = 1 << 20;

    fn open(bounds: &[(Offset, Offset)]) -> impl Fn(usize) -> Bounds + '_ {
        |p| Bounds {
            floor: bounds[p].0,
            end: bounds[p].1,
        }
    }

    fn events(p: PartitionId, offsets: std::ops::Range<Offset>, size: usize) -> FetchResult {
        Ok((p, offsets.map(|o| test_event(p, o, "", size)).collect()))
    }

    /// The next read with nothing held elsewhere and a 1 MiB bound.
    fn plan(r: &mut ReadAhead, at: Instant, window: u64, b: &[(Offset, Offset)]) -> Option<Read> {
        r.next_read(at, Footprint::default(), MB, window, open(b))
    }

    /// Plans the next read and pretends it ran and returned `res`.
    fn read(r: &mut ReadAhead, read: Read, res: FetchResult) -> Fetched {
        r.started(&read);
        r.on_fetched(res, |_, _| false)
    }

    fn take_all(r: &mut ReadAhead) -> Vec<(PartitionId, Offset)> {
        std::iter::from_fn(|| r.hand_out(Some))
            .map(|e| (e.partition, e.offset))
            .collect()
    }

    #[tokio::test]
    async fn reads_take_turns_and_stay_in_the_window() {
        let t0 = Instant::now();
        let mut r = ReadAhead::new([0, 10, 0]);
        let b = [(0, 100), (10, 10), (0, 5_000)];
        let first = plan(&mut r, t0, 1_000, &b);
        let want = Read {
            partition: 0,
            from: 0,
            max_events: 512,
            max_bytes: MB,
        };
        assert_eq!(first, Some(want));
        // One read at a time.
        r.fetch = Some(tokio::spawn(async { Err(Error::ShuttingDown) }));
        assert_eq!(plan(&mut r, t0, 1_000, &b), None);
        r.fetch = None;
        // Partition 1 is at its end; partition 2 is next in turn.
        let second = plan(&mut r, t0, 1_000, &b).unwrap();
        assert_eq!(second.partition, 2);
        let done = read(&mut r, second, events(2, 0..1_000, 1));
        assert!(matches!(done, Fetched::Done));
        let third = plan(&mut r, t0, 1_000, &b).unwrap();
        assert_eq!((third.partition, third.from), (0, 0), "partition 0's turn");
        // Partition 1 is at its end and partition 2 at floor + window, so
        // partition 0 is read again.
        let fourth = plan(&mut r, t0, 1_000, &b).unwrap();
        assert_eq!(fourth.partition, 0);
        let fifth = plan(&mut r, t0, 1_100, &b).unwrap();
        assert_eq!(
            (fifth.partition, fifth.max_events),
            (2, 100),
            "window left: 100"
        );
    }

    #[test]
    fn a_full_read_ahead_stops_reading_in_events_or_bytes() {
        let t0 = Instant::now();
        let mut r = ReadAhead::new([0]);
        let b = [(0, 1_000_000)];
        let all = |events, bytes| Footprint { events, bytes };
        assert!(r
            .next_read(t0, all(BUFFER_TARGET, 0), MB, 1 << 30, open(&b))
            .is_none());
        assert!(r.next_read(t0, all(0, MB), MB, 1 << 30, open(&b)).is_none());
        let rd = r
            .next_read(t0, all(0, MB - 10), MB, 1 << 30, open(&b))
            .unwrap();
        assert_eq!(rd.max_bytes, 10, "the rest of the byte bound");
        read(&mut r, rd, events(0, 0..3, 4));
        // 3 events of 4 bytes each are buffered here, 6 more bytes held elsewhere.
        assert!(r.next_read(t0, all(0, 6), 18, 1 << 30, open(&b)).is_none());
        let rd = r.next_read(t0, all(0, 5), 18, 1 << 30, open(&b)).unwrap();
        assert_eq!((rd.from, rd.max_bytes), (3, 1));
    }

    #[test]
    fn events_come_out_round_robin_and_a_disposed_one_keeps_the_turn() {
        let t0 = Instant::now();
        let mut r = ReadAhead::new([0, 0]);
        let b = [(0, 10), (0, 10)];
        for _ in 0..2 {
            let rd = plan(&mut r, t0, 100, &b).unwrap();
            read(&mut r, rd, events(rd.partition, 0..3, 1));
        }
        // Dispose of partition 0's first event: partition 0 still has the turn.
        let first = r.hand_out(|e| (e.offset != 0).then_some(e)).unwrap();
        assert_eq!((first.partition, first.offset), (0, 1));
        assert_eq!(take_all(&mut r), [(1, 0), (0, 2), (1, 1), (1, 2)]);
        assert_eq!(r.size, Footprint::default());
    }

    #[test]
    fn a_read_skips_settled_events_and_a_stale_one_is_dropped() {
        let t0 = Instant::now();
        let mut r = ReadAhead::new([0]);
        let b = [(0, 10)];
        let rd = plan(&mut r, t0, 100, &b).unwrap();
        r.started(&rd);
        r.on_fetched(events(0, 0..5, 1), |_, o| o % 2 == 1);
        assert_eq!(r.cursor(0), 5, "the cursor passes settled events too");
        assert_eq!(take_all(&mut r), [(0, 0), (0, 2), (0, 4)]);
        // A seek while a read runs: its result is dropped.
        let rd = plan(&mut r, t0, 100, &b).unwrap();
        r.started(&rd);
        r.reposition(0, 2);
        r.on_fetched(events(0, 5..10, 1), |_, _| false);
        assert_eq!(r.cursor(0), 2);
        assert!(take_all(&mut r).is_empty());
    }

    #[test]
    fn failed_and_empty_reads_wait_before_the_next() {
        let t0 = Instant::now();
        let mut r = ReadAhead::new([0]);
        let b = [(0, 10)];
        let rd = plan(&mut r, t0, 100, &b).unwrap();
        read(&mut r, rd, Ok((0, Vec::new())));
        let retry = r.retry_at().expect("an empty read retries later");
        assert!(plan(&mut r, t0, 100, &b).is_none());
        assert!(plan(&mut r, retry, 100, &b).is_some());
        assert!(r.retry_at().is_none());
        let rd = plan(&mut r, retry, 100, &b).unwrap();
        let failed = read(&mut r, rd, Err(Error::ShuttingDown));
        assert!(matches!(failed, Fetched::Failed(Error::ShuttingDown)));
        assert!(r.retry_at().unwrap() >= t0 + READ_RETRY);
    }

    #[test]
    fn repositioning_and_retention_move_the_cursor() {
        let t0 = Instant::now();
        let mut r = ReadAhead::new([0]);
        let rd = plan(&mut r, t0, 100, &[(0, 10)]).unwrap();
        read(&mut r, rd, events(0, 0..6, 3));
        assert_eq!(r.buffered_below(0, 4), 4);
        assert_eq!(r.oldest().map(|e| e.offset).collect::<Vec<_>>(), [0]);
        r.skip_to(0, 3);
        assert_eq!(r.cursor(0), 6, "retention never moves the cursor back");
        r.skip_to(0, 8);
        assert_eq!(r.cursor(0), 8);
        r.reposition(0, 1);
        assert_eq!((r.cursor(0), r.size), (1, Footprint::default()));
    }
}

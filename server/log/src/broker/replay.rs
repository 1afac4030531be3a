//! Replay on the RocksDB backend: read history without touching any
//! subscription.
//!
//! A spawned task reads each selected partition from its start to its end in
//! bounded batches and feeds a bounded channel, which is the stream the
//! caller gets: a slow reader backpressures the task, and the task stops
//! when the caller drops the stream. Following replays wait on the topic's
//! tail watch for the next commit.

use std::sync::Arc;

use eventbus_broker::replay::select_partitions;
use eventbus_broker::{BoxStream, ReplayEnd, ReplayItem, ReplayRequest, ReplayStart};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::LogBroker;
use crate::error::{Error, Result};
use crate::filter::any_type_matches;
use crate::topic::TopicState;

/// Events read per partition per step.
const BATCH: usize = 256;

/// Where one partition's replay stops.
#[derive(Clone, Copy)]
enum End {
    Offset(u64),
    Time(u64),
    /// Follow mode: no end.
    Never,
}

struct Cursor {
    partition: u32,
    next: u64,
    end: End,
    done: bool,
}

type Sender = mpsc::Sender<Result<ReplayItem>>;

impl LogBroker {
    /// Starts a replay; see [`eventbus_broker::Broker::replay`].
    pub async fn replay(&self, req: ReplayRequest) -> Result<BoxStream<Result<ReplayItem>>> {
        let limits = &self.options().limits;
        limits
            .check_type_patterns("types", &req.types)
            .and_then(|bytes| limits.check_filter_bytes("types", bytes))?;
        let topic = self.log.existing_topic(&req.topic)?;
        let partitions = select_partitions(topic.name(), topic.partition_count(), &req.partitions)?;
        let mut cursors = Vec::with_capacity(partitions.len());
        for p in partitions {
            let tail = &topic.partitions[p as usize];
            let next = match req.start {
                ReplayStart::Earliest => tail.start(),
                ReplayStart::Offset(o) => o.max(tail.start()),
                ReplayStart::Time(ms) => self.offset_for_time(topic.clone(), p, ms).await?,
            };
            let end = match req.end {
                ReplayEnd::Tail => End::Offset(tail.end()),
                ReplayEnd::Offset(o) => End::Offset(o),
                ReplayEnd::Time(ms) => End::Time(ms),
                ReplayEnd::Follow => End::Never,
            };
            cursors.push(Cursor {
                partition: p,
                next,
                end,
                done: false,
            });
        }
        let (tx, rx) = mpsc::channel(4);
        let log = self.log.clone();
        tokio::spawn(async move {
            let reader = Reader { log, topic };
            tokio::select! {
                res = reader.run(cursors, &req.types, &tx) => {
                    if let Err(e) = res {
                        let _ = tx.send(Err(e)).await;
                    }
                }
                _ = tx.closed() => {}
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// What the replay task reads from.
struct Reader {
    log: crate::store::Log,
    topic: Arc<TopicState>,
}

impl Reader {
    async fn run(&self, mut cursors: Vec<Cursor>, types: &[String], tx: &Sender) -> Result<()> {
        let mut tail = self.topic.watch_tail();
        let mut caught_up_sent = false;
        loop {
            // Mark the tail seen *before* reading, so a commit that lands after
            // the read still wakes the wait below.
            tail.borrow_and_update();
            let mut progressed = false;
            for c in cursors.iter_mut().filter(|c| !c.done) {
                match self.step(c, types).await? {
                    Step::Nothing => {}
                    Step::Read(events) => {
                        progressed = true;
                        if !events.is_empty()
                            && tx.send(Ok(ReplayItem::Events(events))).await.is_err()
                        {
                            return Ok(());
                        }
                    }
                }
            }
            let following = cursors.iter().any(|c| matches!(c.end, End::Never));
            let all_done = cursors.iter().all(|c| c.done);
            if !progressed && !caught_up_sent && (following || all_done) {
                caught_up_sent = true;
                if tx.send(Ok(ReplayItem::CaughtUp)).await.is_err() {
                    return Ok(());
                }
            }
            if all_done {
                return Ok(());
            }
            if !progressed {
                // Only followers get here: wait for the next commit.
                if tail.changed().await.is_err() || self.topic.is_deleted() {
                    return Err(Error::TopicNotFound(self.topic.name().to_string()));
                }
            }
        }
    }

    /// Reads the next batch of one partition, and the events of it that
    /// match `types`; marks the cursor done at its end.
    async fn step(&self, c: &mut Cursor, types: &[String]) -> Result<Step> {
        let limit = match c.end {
            End::Offset(e) if c.next >= e => {
                c.done = true;
                return Ok(Step::Nothing);
            }
            End::Offset(e) => ((e - c.next) as usize).min(BATCH),
            End::Time(_) | End::Never => BATCH,
        };
        let (log, topic, (p, from)) = (self.log.clone(), self.topic.clone(), (c.partition, c.next));
        let read = tokio::task::spawn_blocking(move || log.read(&topic, p, from, limit, 4 << 20))
            .await
            .map_err(|_| Error::ShuttingDown)??;
        let Some(last) = read.last() else {
            // Nothing more now: bounded replays of a live tail are done.
            if !matches!(c.end, End::Never) {
                c.done = true;
            }
            return Ok(Step::Nothing);
        };
        c.next = last.offset + 1;
        let mut events = Vec::with_capacity(read.len());
        for ev in read {
            if let End::Time(ms) = c.end {
                if ev.publish_time >= ms {
                    c.done = true;
                    break;
                }
            }
            if any_type_matches(types, &ev.event_type) {
                events.push(ev);
            }
        }
        Ok(Step::Read(events))
    }
}

enum Step {
    /// Nothing read: the partition is done, or (following) at its tail.
    Nothing,
    /// A batch was read; these of its events match.
    Read(Vec<crate::types::StoredEvent>),
}

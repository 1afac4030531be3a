//! The subscription actor. See the module docs of [`crate::delivery`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ack_id::AckId;
use super::acks::PartitionAcks;
use super::dead_letter::DeadLetterEntry;
use crate::error::{Error, Result};
use crate::keys::{self, parse_dlq_key};
use crate::meta::{now_ms, Ordering, SubscriptionMeta};
use crate::store::Log;
use crate::topic::TopicState;
use crate::types::{Offset, PartitionId, StoredEvent, SubscriptionId};
use crate::writer::Update;

/// Commands queued for one subscription before callers wait.
const COMMAND_QUEUE: usize = 1024;
/// Events read from the log per fetch.
const READ_BATCH: usize = 512;
/// Record bytes read from the log per fetch (at least one event).
const READ_BYTES: usize = 4 << 20;
/// Stop reading ahead once this many fetched events wait for a member (the
/// byte bound is `Options::read_ahead_bytes`).
const BUFFER_TARGET: usize = 2048;
/// Back off this long after a failed log read before trying again.
const READ_RETRY: Duration = Duration::from_secs(1);

/// One event handed to a member under a lease.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Arc<StoredEvent>,
    pub ack_id: AckId,
    /// 1 for the first delivery.
    pub attempt: u32,
}

/// What a member stream yields: a batch of deliveries, or the reason it ends.
pub type MemberItem = Result<Vec<Delivery>, Error>;

/// How to settle a set of leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOp {
    Ack,
    /// Give back for redelivery after `delay`, or after the subscription's
    /// backoff when `None`. Counts as a failed attempt: when attempts are used up
    /// the event moves to the dead-letter queue with `reason`.
    Nack {
        delay: Option<Duration>,
        reason: String,
    },
    /// Move straight to the dead-letter queue (a permanent failure).
    DeadLetter {
        reason: String,
    },
    /// Move the deadline to now + the duration; zero means nack now.
    ModifyDeadline(Duration),
}

/// Reason recorded when a lease runs out.
pub const DEADLINE_EXCEEDED: &str = "ack deadline exceeded";
/// Reason recorded when the member's stream ended while it held the lease on
/// the last allowed attempt (a consumer that crashes on the event, say).
pub const MEMBER_LEFT: &str = "member left with the lease";

/// Dead-letter counters shared by the actor and the admin path.
#[derive(Debug, Default)]
pub struct DlqCounters {
    /// Entries currently in the subscription's dead-letter queue.
    pub count: AtomicU64,
}

/// The result of a settle command.
#[derive(Debug, Default)]
pub struct SettleOutcome {
    /// Ack ids whose lease had expired or moved on, so nothing was done for them.
    pub stale: Vec<AckId>,
}

/// Counters and gauges of one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Events not yet settled (acked, dead-lettered or filtered).
    pub backlog: u64,
    pub in_flight: u64,
    /// Publish time of the oldest unsettled event, where it is in memory.
    pub oldest_unacked_ms: Option<u64>,
    /// Partitions whose oldest unsettled event has not been read yet, with its
    /// offset; the caller looks its publish time up.
    pub unread_floors: Vec<(PartitionId, Offset)>,
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub redelivered: u64,
    pub expired: u64,
    pub dead_lettered: u64,
    /// Events settled without delivery because they did not match the filter.
    pub filtered: u64,
    /// Events removed by retention before this subscription settled them.
    pub lost_to_retention: u64,
    /// Entries in the dead-letter queue now, and when the oldest was added
    /// (filled in by the broker).
    pub dead_letter_count: u64,
    pub oldest_dead_letter_ms: Option<u64>,
    pub members: u32,
}

enum Command {
    Join {
        max_in_flight: u32,
        tx: mpsc::Sender<MemberItem>,
        reply: oneshot::Sender<u64>,
    },
    Leave(u64),
    Settle {
        op: SettleOp,
        ids: Vec<AckId>,
        reply: oneshot::Sender<SettleOutcome>,
    },
    Stats(oneshot::Sender<SubscriptionStats>),
    /// Write the ack state now and answer once it is committed.
    Flush(oneshot::Sender<()>),
    UpdateMeta(Box<SubscriptionMeta>),
    /// Dead letters moved to the redrive queue (already persisted).
    Redriven(Vec<Redriven>),
    /// Repositions the partitions that have a target and persists their new
    /// state (synced) before replying.
    Seek {
        targets: Vec<Option<Offset>>,
        reply: oneshot::Sender<Result<()>>,
    },
    Stop {
        reason: StopReason,
        reply: oneshot::Sender<()>,
    },
}

/// Why an actor stops; decides whether state is flushed and what members hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Server shutdown: flush and sync the ack state.
    Shutdown,
    /// The subscription (or its topic) was deleted: its state is gone anyway.
    Deleted,
}

/// The handle the rest of the server holds for a running subscription actor.
#[derive(Debug)]
pub struct SubscriptionHandle {
    /// The current settings; the actor holds its own copy, updated through
    /// [`SubscriptionHandle::set_meta`].
    meta: ArcSwap<SubscriptionMeta>,
    pub topic: Arc<TopicState>,
    pub dlq: Arc<DlqCounters>,
    tx: mpsc::Sender<Command>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl SubscriptionHandle {
    /// Loads the persisted ack state and starts the actor.
    pub async fn start(
        log: Log,
        topic: Arc<TopicState>,
        meta: SubscriptionMeta,
    ) -> Result<Arc<Self>> {
        let partitions = {
            let log = log.clone();
            let topic = topic.clone();
            let id = meta.id;
            tokio::task::spawn_blocking(move || load_partitions(&log, &topic, id))
                .await
                .map_err(|_| Error::ShuttingDown)??
        };
        let (partitions, next_dlq_seq, dlq_count, redrive) = partitions;
        let dlq = Arc::new(DlqCounters {
            count: AtomicU64::new(dlq_count),
        });
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let mut actor = Actor::new(log, topic.clone(), meta.clone(), partitions, rx);
        actor.dlq = dlq.clone();
        actor.next_dlq_seq = next_dlq_seq;
        actor.redrive = redrive.into();
        let task = tokio::spawn(actor.run());
        Ok(Arc::new(SubscriptionHandle {
            meta: ArcSwap::from_pointee(meta),
            topic,
            dlq,
            tx,
            task: std::sync::Mutex::new(Some(task)),
        }))
    }

    pub fn id(&self) -> SubscriptionId {
        self.meta.load().id
    }

    pub fn meta(&self) -> Arc<SubscriptionMeta> {
        self.meta.load_full()
    }

    /// Applies new settings (already persisted by the caller) to the running
    /// actor: pause/resume, ack deadline, retry policy, ...
    pub async fn set_meta(&self, meta: SubscriptionMeta) -> Result<()> {
        self.meta.store(Arc::new(meta.clone()));
        self.send(Command::UpdateMeta(Box::new(meta))).await
    }

    /// Joins as a member that may hold `max_in_flight` unacked deliveries.
    pub async fn join(&self, max_in_flight: u32) -> Result<MemberStream> {
        // Capacity ~ credit: a member never has more batches queued than
        // unacked deliveries, so the actor's `try_send` does not hit a full channel
        // in normal operation, while a member that stops reading is still bounded.
        // +2: one spare batch slot, and one slot kept for the final status.
        let (tx, rx) = mpsc::channel(max_in_flight.max(1) as usize + 2);
        let (reply, id) = oneshot::channel();
        self.send(Command::Join {
            max_in_flight,
            tx,
            reply,
        })
        .await?;
        let member = id.await.map_err(|_| Error::ShuttingDown)?;
        Ok(MemberStream {
            rx,
            guard: LeaveGuard {
                tx: self.tx.clone(),
                member,
            },
        })
    }

    pub async fn settle(&self, op: SettleOp, ids: Vec<AckId>) -> Result<SettleOutcome> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Settle { op, ids, reply }).await?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// Hands persisted redrive-queue entries to the actor for delivery.
    pub async fn redriven(&self, entries: Vec<Redriven>) -> Result<()> {
        self.send(Command::Redriven(entries)).await
    }

    /// Repositions partitions (see `Actor::seek`); returns once the new
    /// positions are on disk.
    pub async fn seek(&self, targets: Vec<Option<Offset>>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Seek { targets, reply }).await?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    pub async fn stats(&self) -> Result<SubscriptionStats> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stats(reply)).await?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// Writes the ack state now (before a backup); returns once committed.
    /// A stopped actor has nothing left to write.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Flush(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the actor and waits for it. Idempotent.
    pub async fn stop(&self, reason: StopReason) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Stop { reason, reply }).await.is_ok() {
            let _ = rx.await;
        }
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Cancels the actor without letting it write anything more (crash tests).
    /// Waits until the task is gone: an abort only takes effect at the task's
    /// next await, and until then it could still see its members leave.
    pub async fn abort(&self) {
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    async fn send(&self, cmd: Command) -> Result<()> {
        self.tx.send(cmd).await.map_err(|_| Error::ShuttingDown)
    }
}

/// A member's stream of delivery batches. Dropping it leaves the subscription,
/// and its unacked leases go back to the queue at once.
pub struct MemberStream {
    rx: mpsc::Receiver<MemberItem>,
    guard: LeaveGuard,
}

impl MemberStream {
    pub async fn recv(&mut self) -> Option<MemberItem> {
        self.rx.recv().await
    }

    /// A batch that is already waiting, without blocking.
    pub fn try_recv(&mut self) -> Option<MemberItem> {
        self.rx.try_recv().ok()
    }

    pub fn member_id(&self) -> u64 {
        self.guard.member
    }
}

impl futures_core::Stream for MemberStream {
    type Item = MemberItem;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

struct LeaveGuard {
    tx: mpsc::Sender<Command>,
    member: u64,
}

impl Drop for LeaveGuard {
    fn drop(&mut self) {
        match self.tx.try_send(Command::Leave(self.member)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                // Never lose a leave: the leases would wait for their deadline.
                let tx = self.tx.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = tx.send(cmd).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// What an actor starts from: each partition's ack state, the next DLQ seq,
/// the DLQ size, and the redrive queue.
type Loaded = (Vec<PartitionAcks>, u64, u64, Vec<Redriven>);

/// Loads an actor's persisted state. Blocking.
fn load_partitions(log: &Log, topic: &TopicState, sub: SubscriptionId) -> Result<Loaded> {
    let mut redrive = Vec::new();
    let mut failure = None;
    log.scan_redrive(sub, |seq, value| {
        match DeadLetterEntry::decode(seq, value)
            .and_then(|e| e.event(topic.id()).map(|ev| (e, ev)))
        {
            Ok((e, ev)) => redrive.push(Redriven {
                seq,
                redrive_count: e.redrive_count,
                event: Arc::new(ev),
                entry: e,
            }),
            Err(source) => {
                failure = Some(Error::Corruption {
                    location: format!("{sub} redrive entry {seq}"),
                    source,
                });
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    // Seqs name DLQ entries and redrive-queue entries alike, so the next one
    // comes from the persisted high-water mark, never from what happens to be
    // stored now: after a purge or a redrive emptied the DLQ, "highest key + 1"
    // would hand out a seq that a pending redrive entry (or an operator's saved
    // id) still means. The max with the stored keys covers data dirs written
    // before the mark existed.
    let mut next_seq = match log.get_sub_state(&keys::dlq_seq_key(sub))? {
        Some(v) => {
            u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| Error::CorruptMetadata {
                        location: format!("{sub} dead-letter seq"),
                        reason: format!("{} bytes, expected 8", v.len()),
                    })?,
            )
        }
        None => 0,
    };
    if let Some(last) = redrive.iter().map(|r| r.seq).max() {
        next_seq = next_seq.max(last + 1);
    }
    let mut count = 0u64;
    log.scan_dlq(sub, 0, |key, _| {
        if let Some((_, seq)) = parse_dlq_key(key) {
            next_seq = next_seq.max(seq + 1);
            count += 1;
        }
        true
    })?;
    let parts = (0..topic.partition_count())
        .map(|p| {
            let start = topic.partitions[p as usize].start();
            let mut acks = match log.get_sub_state(&keys::sub_state_key(sub, p))? {
                Some(v) => PartitionAcks::decode(&v).map_err(|source| Error::Corruption {
                    location: format!("{sub} partition {p} ack state"),
                    source,
                })?,
                None => PartitionAcks::starting_at(start),
            };
            acks.raise_floor(start);
            Ok(acks)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((parts, next_seq, count, redrive))
}

struct Member {
    tx: mpsc::Sender<MemberItem>,
    max_in_flight: u32,
    in_flight: u32,
    /// [`StoredEvent::size_bytes`] of the leases it holds, and its bound
    /// (`Options::max_in_flight_bytes`).
    in_flight_bytes: usize,
    max_in_flight_bytes: usize,
}

impl Member {
    /// Has credit in events and in bytes (the event that crosses the byte bound
    /// still goes, so an event bigger than the bound is delivered alone), and
    /// room in its channel for one more batch. A member
    /// that stopped reading gets nothing more (leases that expire under it do
    /// not make it eligible again until it drains its channel), so the actor
    /// never leases events it cannot hand over.
    ///
    /// One slot always stays free for the final status ([`Actor::stop`]), so a
    /// member learns why its stream ended even when it was not reading.
    fn can_take(&self) -> bool {
        self.in_flight < self.max_in_flight
            && self.in_flight_bytes < self.max_in_flight_bytes
            && self.tx.capacity() > 1
    }

    fn hold(&mut self, event: &StoredEvent) {
        self.in_flight += 1;
        self.in_flight_bytes += event.size_bytes();
    }

    fn release(&mut self, event: &StoredEvent) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(event.size_bytes());
    }
}

/// Where a read of the log found damaged data.
#[derive(Debug)]
struct Damaged {
    partition: PartitionId,
    /// The read started here; the damage is at or after it.
    offset: Offset,
    cause: String,
}

/// Events read from the log and not yet handed out (partition buffers and the
/// KEY-ordering queues), in events and in bytes.
#[derive(Debug, Default)]
struct ReadAhead {
    events: usize,
    bytes: usize,
}

impl ReadAhead {
    fn add(&mut self, event: &StoredEvent) {
        self.events += 1;
        self.bytes += event.size_bytes();
    }

    fn remove(&mut self, event: &StoredEvent) {
        self.events -= 1;
        self.bytes -= event.size_bytes();
    }
}

struct Lease {
    member: u64,
    generation: u64,
    deadline: Instant,
    event: Arc<StoredEvent>,
    first_delivery_ms: u64,
    delivered_ms: u64,
    origin: Origin,
}

struct Partition {
    acks: PartitionAcks,
    /// Next offset to read from the log.
    cursor: Offset,
    /// Read, not yet delivered, in offset order.
    buffer: VecDeque<Arc<StoredEvent>>,
    dirty: bool,
}

type Key = (PartitionId, Offset);

/// Where a delivered event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The subscription's position in the log; attempts live in the ack state.
    Log,
    /// A redriven dead letter: its redrive-queue seq, how often it was
    /// redriven, and its delivery attempts since the redrive.
    Redrive {
        seq: u64,
        redrive_count: u32,
        attempts: u32,
    },
}

/// The next event to hand out.
struct Next {
    event: Arc<StoredEvent>,
    /// Set for redeliveries.
    first_delivery_ms: Option<u64>,
    origin: Origin,
}

/// A redriven dead letter waiting for its first delivery.
pub struct Redriven {
    pub seq: u64,
    pub redrive_count: u32,
    pub event: Arc<StoredEvent>,
    /// The stored queue entry; rewritten with the attempt count at each
    /// delivery, so attempts of redriven events survive restarts too.
    pub entry: DeadLetterEntry,
}

/// An event queued for redelivery.
struct Waiting {
    event: Arc<StoredEvent>,
    first_delivery_ms: u64,
    origin: Origin,
    /// Generation of the lease it came from, when that lease was given back
    /// because its member left (not expired, not nacked). Until the event goes
    /// to someone else, that ack id may still ack it: nobody else holds it, and
    /// it lets a consumer whose stream just dropped settle what it processed.
    released: Option<u64>,
}
/// What a read-ahead task returns: the partition and the events it read.
type FetchResult = Result<(PartitionId, Vec<StoredEvent>)>;

struct Actor {
    log: Log,
    topic: Arc<TopicState>,
    meta: SubscriptionMeta,
    rx: mpsc::Receiver<Command>,
    parts: Vec<Partition>,
    members: HashMap<u64, Member>,
    /// Member ids in join order, for round-robin dispatch.
    member_order: Vec<u64>,
    next_member: u64,
    rr_member: usize,
    rr_partition: usize,
    rr_fetch: usize,
    leases: HashMap<Key, Lease>,
    /// (deadline, partition, offset, generation); stale entries are skipped.
    deadlines: BinaryHeap<Reverse<(Instant, PartitionId, Offset, u64)>>,
    /// (due, seq, partition, offset) of events waiting for redelivery.
    retries: BinaryHeap<Reverse<(Instant, u64, PartitionId, Offset)>>,
    retry_seq: u64,
    /// Events waiting in `retries`, keyed for lookup.
    waiting: HashMap<Key, Waiting>,
    buffered: ReadAhead,
    fetch: Option<JoinHandle<FetchResult>>,
    /// Partition and cursor the running fetch started from; a result whose
    /// partition cursor moved meanwhile (a seek) is dropped.
    fetch_from: Option<(PartitionId, Offset)>,
    fetch_retry_at: Option<Instant>,
    /// Where a read hit damaged data: members' streams end with DATA_LOSS and
    /// nothing is read or delivered until a seek repositions the subscription.
    damaged: Option<Damaged>,
    flush_at: Option<Instant>,
    generation: u64,
    ack_deadline: Duration,
    stats: SubscriptionStats,
    dlq: Arc<DlqCounters>,
    next_dlq_seq: u64,
    /// Writes that must reach disk atomically with the next flush (dead-letter
    /// entries, written in the same batch as the ack state that settles them).
    pending_ops: Vec<Update>,
    /// Redriven dead letters not yet handed out, in redrive order.
    redrive: VecDeque<Redriven>,
    /// Stored entries of redriven events handed out and not yet settled.
    redrive_entries: HashMap<u64, DeadLetterEntry>,
    /// KEY ordering: keys with an event leased, waiting for redelivery, or next
    /// in `unblocked`. Another event of such a key waits in `blocked`.
    busy_keys: HashSet<String>,
    /// KEY ordering: events held back behind their busy key, in offset order.
    blocked: HashMap<String, VecDeque<Arc<StoredEvent>>>,
    /// KEY ordering: the next event of a key whose previous one was settled; its
    /// key stays busy, so nothing overtakes it.
    unblocked: VecDeque<Arc<StoredEvent>>,
}

enum Wake {
    Command(Option<Command>),
    Tail,
    Fetched(FetchResult),
    Timer,
}

impl Actor {
    fn new(
        log: Log,
        topic: Arc<TopicState>,
        meta: SubscriptionMeta,
        acks: Vec<PartitionAcks>,
        rx: mpsc::Receiver<Command>,
    ) -> Self {
        let parts = acks
            .into_iter()
            .map(|acks| Partition {
                cursor: acks.floor,
                acks,
                buffer: VecDeque::new(),
                dirty: false,
            })
            .collect();
        // Lease generations start at incarnation << 40, so an ack id minted by an
        // earlier run of the server can never match a lease of this run.
        let generation = log.incarnation() << 40;
        let ack_deadline = Duration::from_millis(meta.config.ack_deadline_ms);
        Actor {
            log,
            topic,
            meta,
            rx,
            parts,
            members: HashMap::new(),
            member_order: Vec::new(),
            next_member: 1,
            rr_member: 0,
            rr_partition: 0,
            rr_fetch: 0,
            leases: HashMap::new(),
            deadlines: BinaryHeap::new(),
            retries: BinaryHeap::new(),
            retry_seq: 0,
            waiting: HashMap::new(),
            buffered: ReadAhead::default(),
            fetch: None,
            fetch_from: None,
            fetch_retry_at: None,
            damaged: None,
            flush_at: None,
            generation,
            ack_deadline,
            stats: SubscriptionStats::default(),
            dlq: Arc::default(),
            next_dlq_seq: 0,
            pending_ops: Vec::new(),
            redrive: VecDeque::new(),
            redrive_entries: HashMap::new(),
            busy_keys: HashSet::new(),
            blocked: HashMap::new(),
            unblocked: VecDeque::new(),
        }
    }

    async fn run(mut self) {
        let mut tail: watch::Receiver<u64> = self.topic.watch_tail();
        loop {
            let now = Instant::now();
            self.follow_retention(now);
            self.expire_leases(now);
            self.dispatch(now);
            self.start_fetch(now);
            let timer = self.next_timer();
            let wake = tokio::select! {
                cmd = self.rx.recv() => Wake::Command(cmd),
                changed = tail.changed() => match changed {
                    Ok(()) => Wake::Tail,
                    Err(_) => Wake::Command(None),
                },
                res = async { self.fetch.as_mut().expect("guarded").await }, if self.fetch.is_some() => {
                    Wake::Fetched(res.unwrap_or_else(|_| Err(Error::ShuttingDown)))
                }
                _ = sleep_until(timer), if timer.is_some() => Wake::Timer,
            };
            match wake {
                Wake::Command(None) => break,
                Wake::Command(Some(Command::Stop { reason, reply })) => {
                    self.stop(reason).await;
                    let _ = reply.send(());
                    return;
                }
                Wake::Command(Some(Command::Settle { op, ids, reply })) => {
                    let outcome = self.settle(op, ids, Instant::now());
                    // A Nack that dead-lettered answers only once the DLQ entry is
                    // written, so an operator listing the DLQ right after sees it.
                    if !self.pending_ops.is_empty() {
                        self.flush_committed().await;
                    }
                    let _ = reply.send(outcome);
                }
                Wake::Command(Some(Command::Seek { targets, reply })) => {
                    // Everything not yet flushed goes first in the same synced
                    // batch, so no later lazy flush can overwrite the new
                    // positions with older state.
                    let mut ops = self.dirty_ops();
                    ops.extend(self.seek(targets));
                    let written = self.log.write(ops, true).await;
                    if written.is_ok() {
                        // Repositioned: the next read shows whether the
                        // damage is behind it.
                        self.damaged = None;
                    }
                    let _ = reply.send(written);
                }
                Wake::Command(Some(Command::Flush(reply))) => {
                    self.flush_committed().await;
                    let _ = reply.send(());
                }
                Wake::Command(Some(cmd)) => self.handle(cmd),
                Wake::Tail => {}
                Wake::Fetched(res) => {
                    self.fetch = None;
                    self.on_fetched(res);
                }
                Wake::Timer => {}
            }
            if self.flush_at.is_some_and(|t| t <= Instant::now()) {
                self.flush().await;
            }
        }
        self.stop(StopReason::Shutdown).await;
    }

    fn next_timer(&self) -> Option<Instant> {
        [
            self.deadlines.peek().map(|Reverse(d)| d.0),
            // A due retry only matters when someone could take it.
            self.retries
                .peek()
                .filter(|_| !self.meta.paused && self.has_credit())
                .map(|Reverse(r)| r.0),
            self.flush_at,
            self.fetch_retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Join {
                max_in_flight,
                tx,
                reply,
            } => {
                let id = self.next_member;
                self.next_member += 1;
                if self.damaged.is_some() {
                    // The stream ends at once with the reason.
                    let _ = tx.try_send(Err(self.damage_error()));
                    let _ = reply.send(id);
                    return;
                }
                self.members.insert(
                    id,
                    Member {
                        tx,
                        max_in_flight,
                        in_flight: 0,
                        in_flight_bytes: 0,
                        max_in_flight_bytes: self.log.options().max_in_flight_bytes,
                    },
                );
                self.member_order.push(id);
                let _ = reply.send(id);
            }
            Command::Leave(id) => self.remove_member(id, now),
            Command::Settle { .. } => unreachable!("handled in run"),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Redriven(entries) => self.redrive.extend(entries),
            Command::UpdateMeta(meta) => {
                self.ack_deadline = Duration::from_millis(meta.config.ack_deadline_ms);
                self.meta = *meta;
                if !self.key_ordered() {
                    self.busy_keys.clear();
                    for (_, q) in self.blocked.drain() {
                        self.unblocked.extend(q);
                    }
                }
            }
            Command::Stop { .. } | Command::Seek { .. } | Command::Flush(_) => {
                unreachable!("handled in run")
            }
        }
    }

    fn has_credit(&self) -> bool {
        self.members.values().any(Member::can_take)
    }

    /// Hands out eligible events to members with credit: redeliveries first (by due
    /// time), then fresh events round-robin across partitions.
    fn dispatch(&mut self, now: Instant) {
        if self.member_order.is_empty() || self.meta.paused {
            return;
        }
        let mut batches: HashMap<u64, Vec<Delivery>> = HashMap::new();
        while let Some(member) = self.next_member_with_credit() {
            let Some(next) = self.next_event(now) else {
                break;
            };
            let delivery = self.lease(member, next, now);
            batches.entry(member).or_default().push(delivery);
        }
        for (member, batch) in batches {
            let Some(m) = self.members.get(&member) else {
                continue;
            };
            if let Err(e) = m.tx.try_send(Ok(batch)) {
                // Closed: the member is gone. Full: it stopped reading beyond its
                // credit. Either way its leases are better off elsewhere.
                let gone = matches!(e, mpsc::error::TrySendError::Closed(_));
                let batch = match e {
                    mpsc::error::TrySendError::Closed(Ok(b))
                    | mpsc::error::TrySendError::Full(Ok(b)) => b,
                    _ => Vec::new(),
                };
                // The batch never reached the member, so this was not an
                // attempt: undo the lease and its count.
                for d in batch {
                    self.unlease((d.ack_id.partition, d.ack_id.offset), now);
                }
                if gone {
                    self.remove_member(member, now);
                }
            }
        }
    }

    fn next_member_with_credit(&mut self) -> Option<u64> {
        let n = self.member_order.len();
        for i in 0..n {
            let idx = (self.rr_member + i) % n;
            let id = self.member_order[idx];
            if self.members[&id].can_take() {
                self.rr_member = (idx + 1) % n;
                return Some(id);
            }
        }
        None
    }

    /// The next event to hand out: due redeliveries first, then redriven dead
    /// letters, then fresh events round-robin across partitions.
    fn next_event(&mut self, now: Instant) -> Option<Next> {
        if let Some(Reverse((due, _, p, o))) = self.retries.peek().copied() {
            if due <= now {
                self.retries.pop();
                if let Some(w) = self.waiting.remove(&(p, o)) {
                    self.stats.redelivered += 1;
                    return Some(Next {
                        event: w.event,
                        first_delivery_ms: Some(w.first_delivery_ms),
                        origin: w.origin,
                    });
                }
            }
        }
        // The first redriven event that may go now: never two leases on one
        // (partition, offset) (a seek can make it live in the log flow too), and
        // in KEY mode never two events of one key in flight.
        let eligible = self.redrive.iter().position(|r| {
            let key = (r.event.partition, r.event.offset);
            let taken = self.leases.contains_key(&key) || self.waiting.contains_key(&key);
            let key_busy = self.key_ordered() && self.busy_keys.contains(&r.event.key);
            !taken && !key_busy
        });
        if let Some(i) = eligible {
            {
                let r = self.redrive.remove(i).expect("in range");
                let attempts = r.entry.attempts;
                self.redrive_entries.insert(r.seq, r.entry);
                return Some(Next {
                    event: r.event,
                    first_delivery_ms: None,
                    origin: Origin::Redrive {
                        seq: r.seq,
                        redrive_count: r.redrive_count,
                        attempts,
                    },
                });
            }
        }
        if let Some(ev) = self.unblocked.pop_front() {
            self.buffered.remove(&ev);
            return Some(Next {
                event: ev,
                first_delivery_ms: None,
                origin: Origin::Log,
            });
        }
        let n = self.parts.len();
        let mut i = 0;
        while i < n {
            let p = (self.rr_partition + i) % n;
            let Some(ev) = self.parts[p].buffer.pop_front() else {
                i += 1;
                continue;
            };
            self.buffered.remove(&ev);
            // The filter is applied at hand-out time, so a filter change takes
            // effect for every event not yet delivered.
            if !self.meta.config.filter.matches(&ev) {
                let part = &mut self.parts[p];
                part.acks.settle(ev.offset);
                part.dirty = true;
                self.flush_at
                    .get_or_insert(now + self.log.options().ack_flush_interval);
                self.stats.filtered += 1;
                continue;
            }
            if self.key_ordered() && !ev.key.is_empty() && self.busy_keys.contains(&ev.key) {
                // Wait behind the key's event in flight; other keys pass.
                self.buffered.add(&ev);
                self.blocked
                    .entry(ev.key.clone())
                    .or_default()
                    .push_back(ev);
                continue;
            }
            self.rr_partition = (p + 1) % n;
            return Some(Next {
                event: ev,
                first_delivery_ms: None,
                origin: Origin::Log,
            });
        }
        None
    }

    fn lease(&mut self, member: u64, next: Next, now: Instant) -> Delivery {
        let Next {
            event,
            first_delivery_ms,
            mut origin,
        } = next;
        let delivered_ms = now_ms();
        if self.key_ordered() && !event.key.is_empty() {
            self.busy_keys.insert(event.key.clone());
        }
        let attempt = self.adjust_attempts((event.partition, event.offset), &mut origin, true);
        if attempt == 1 && first_delivery_ms.is_none() && matches!(origin, Origin::Log) {
            // Publish to first delivery: how far behind the consumers run.
            // Redriven dead letters are not first deliveries (their age would
            // read as lag); a seek back re-measures what it re-delivers.
            let lag_ms = delivered_ms.saturating_sub(event.publish_time);
            metrics::histogram!(crate::metric_names::DELIVERY_LATENCY).record(lag_ms as f64 / 1e3);
        }
        self.flush_at
            .get_or_insert(now + self.log.options().ack_flush_interval);
        self.generation += 1;
        let ack_id = AckId {
            subscription: self.meta.id,
            partition: event.partition,
            offset: event.offset,
            generation: self.generation,
        };
        let deadline = now + self.ack_deadline;
        self.push_deadline(Reverse((
            deadline,
            event.partition,
            event.offset,
            self.generation,
        )));
        self.leases.insert(
            (event.partition, event.offset),
            Lease {
                member,
                generation: self.generation,
                deadline,
                event: event.clone(),
                first_delivery_ms: first_delivery_ms.unwrap_or(delivered_ms),
                delivered_ms,
                origin,
            },
        );
        if let Some(m) = self.members.get_mut(&member) {
            m.hold(&event);
        }
        self.stats.delivered += 1;
        Delivery {
            event,
            ack_id,
            attempt,
        }
    }

    /// Ends a lease without settling and queues the event for redelivery at `due`.
    /// `released`: the member left, so the lease's ack id stays good for an ack
    /// until the event is handed out again.
    fn requeue(&mut self, key: Key, due: Instant, released: bool) {
        if let Some(lease) = self.take_lease(key) {
            self.retry_seq += 1;
            self.retries
                .push(Reverse((due, self.retry_seq, key.0, key.1)));
            self.waiting.insert(
                key,
                Waiting {
                    event: lease.event,
                    first_delivery_ms: lease.first_delivery_ms,
                    origin: lease.origin,
                    released: released.then_some(lease.generation),
                },
            );
        }
    }

    /// Takes back a lease whose delivery never reached its member (its channel
    /// was closed or full): the attempt is not counted, because no consumer
    /// saw the event, and it goes back for redelivery at once.
    fn unlease(&mut self, key: Key, now: Instant) {
        let Some(mut origin) = self.leases.get(&key).map(|l| l.origin) else {
            return;
        };
        self.adjust_attempts(key, &mut origin, false);
        if let Some(lease) = self.leases.get_mut(&key) {
            lease.origin = origin;
        }
        self.stats.delivered = self.stats.delivered.saturating_sub(1);
        self.requeue(key, now, false);
    }

    /// Counts a delivery attempt (`up`) or takes one back, where the event's
    /// attempts are persisted: the partition's ack state for log events, the
    /// redrive-queue entry for redriven ones. Returns the new count.
    fn adjust_attempts(&mut self, key: Key, origin: &mut Origin, up: bool) -> u32 {
        let step = |a: u32| {
            if up {
                a.saturating_add(1)
            } else {
                a.saturating_sub(1)
            }
        };
        match origin {
            Origin::Log => {
                let part = &mut self.parts[key.0 as usize];
                let a = part.acks.attempts.entry(key.1).or_insert(0);
                *a = step(*a);
                let n = *a;
                if n == 0 {
                    part.acks.attempts.remove(&key.1);
                }
                part.dirty = true;
                n
            }
            Origin::Redrive { seq, attempts, .. } => {
                *attempts = step(*attempts);
                if let Some(e) = self.redrive_entries.get_mut(seq) {
                    e.attempts = *attempts;
                    self.pending_ops.push(Update::PutRedrive {
                        sub: self.meta.id,
                        entry: e.clone(),
                    });
                }
                *attempts
            }
        }
    }

    fn expire_leases(&mut self, now: Instant) {
        while let Some(Reverse((deadline, p, o, generation))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let current = self
                .leases
                .get(&(p, o))
                .is_some_and(|l| l.generation == generation && l.deadline == deadline);
            if current {
                self.stats.expired += 1;
                self.fail((p, o), now, None, DEADLINE_EXCEEDED);
            }
        }
    }

    fn remove_member(&mut self, id: u64, now: Instant) {
        if self.members.remove(&id).is_none() {
            return;
        }
        self.member_order.retain(|m| *m != id);
        let held: Vec<Key> = self
            .leases
            .iter()
            .filter(|(_, l)| l.member == id)
            .map(|(k, _)| *k)
            .collect();
        for key in held {
            self.give_back(key, now, true, MEMBER_LEFT);
        }
    }

    /// A lease ends without a verdict from its member: the member left, or its
    /// batch could not be handed over. The delivery still used an attempt
    /// (counted when the lease was made), so once `max_delivery_attempts` are
    /// used up the event moves to the dead-letter queue with `reason`, like an
    /// expired or nacked one; otherwise it goes back for redelivery at once.
    /// `released`: the member left, so until the event goes out again its old
    /// ack id may still ack it.
    fn give_back(&mut self, key: Key, now: Instant, released: bool, reason: &str) {
        let Some(lease) = self.leases.get(&key) else {
            return;
        };
        if self.out_of_attempts(self.attempts(key, lease.origin)) {
            let lease = self.end_lease(key);
            let (first, last) = (lease.first_delivery_ms, lease.delivered_ms);
            self.dead_letter(&lease.event, lease.origin, first, last, reason, now);
        } else {
            self.requeue(key, now, released);
        }
    }

    fn settle(&mut self, op: SettleOp, ids: Vec<AckId>, now: Instant) -> SettleOutcome {
        let mut outcome = SettleOutcome::default();
        for id in ids {
            let key = (id.partition, id.offset);
            let live = self
                .leases
                .get(&key)
                .is_some_and(|l| l.generation == id.generation);
            let released = !live
                && self
                    .waiting
                    .get(&key)
                    .is_some_and(|w| w.released == Some(id.generation));
            if released {
                match &op {
                    SettleOp::Ack => {
                        let w = self.waiting.remove(&key).expect("checked released");
                        self.mark_acked(&w.event, w.origin, now);
                    }
                    SettleOp::DeadLetter { reason } => {
                        let w = self.waiting.remove(&key).expect("checked released");
                        let first = w.first_delivery_ms;
                        self.dead_letter(&w.event, w.origin, first, now_ms(), reason, now);
                    }
                    // Already queued for redelivery: nothing more to do.
                    SettleOp::Nack { .. } => {}
                    SettleOp::ModifyDeadline(d) if d.is_zero() => {}
                    SettleOp::ModifyDeadline(_) => outcome.stale.push(id),
                }
                continue;
            }
            if !live {
                let settled = self
                    .parts
                    .get(id.partition as usize)
                    .is_some_and(|p| p.acks.is_settled(id.offset));
                // Acking something already settled is a harmless repeat; anything
                // else on a dead lease must not touch the newer delivery.
                if !(op == SettleOp::Ack && settled) {
                    outcome.stale.push(id);
                }
                continue;
            }
            match &op {
                SettleOp::Ack => {
                    let lease = self.end_lease(key);
                    self.mark_acked(&lease.event, lease.origin, now);
                }
                SettleOp::Nack { delay, reason } => {
                    self.stats.nacked += 1;
                    let reason = if reason.is_empty() { "nacked" } else { reason };
                    self.fail(key, now, *delay, reason);
                }
                SettleOp::DeadLetter { reason } => {
                    let lease = self.end_lease(key);
                    let reason = if reason.is_empty() {
                        "dead-lettered by the consumer"
                    } else {
                        reason
                    };
                    let (first, last) = (lease.first_delivery_ms, lease.delivered_ms);
                    self.dead_letter(&lease.event, lease.origin, first, last, reason, now);
                }
                SettleOp::ModifyDeadline(d) if d.is_zero() => {
                    self.stats.nacked += 1;
                    self.fail(key, now, None, "nacked");
                }
                SettleOp::ModifyDeadline(d) => {
                    let lease = self.leases.get_mut(&key).expect("checked live");
                    lease.deadline = saturating_add(now, *d);
                    let entry = Reverse((lease.deadline, key.0, key.1, lease.generation));
                    self.push_deadline(entry);
                }
            }
        }
        outcome
    }

    /// Removes a live lease and gives its member the credit back.
    fn end_lease(&mut self, key: Key) -> Lease {
        self.take_lease(key).expect("caller checked the lease")
    }

    /// Removes the lease of `key`, if any, and gives its member the credit back.
    fn take_lease(&mut self, key: Key) -> Option<Lease> {
        let lease = self.leases.remove(&key)?;
        if let Some(m) = self.members.get_mut(&lease.member) {
            m.release(&lease.event);
        }
        Some(lease)
    }

    /// Deliveries of a leased event so far, this one included.
    fn attempts(&self, key: Key, origin: Origin) -> u32 {
        match origin {
            Origin::Log => self.parts[key.0 as usize]
                .acks
                .attempts
                .get(&key.1)
                .copied()
                .unwrap_or(0),
            Origin::Redrive { attempts, .. } => attempts,
        }
    }

    /// Whether `attempts` deliveries use up `max_delivery_attempts` (0 = unlimited).
    fn out_of_attempts(&self, attempts: u32) -> bool {
        let max = self.meta.config.max_delivery_attempts;
        max > 0 && attempts >= max
    }

    /// A delivery failed (nack or expired lease): redeliver after `delay` or the
    /// backoff, or dead-letter it once its attempts are used up.
    fn fail(&mut self, key: Key, now: Instant, delay: Option<Duration>, reason: &str) {
        let Some(lease) = self.leases.get(&key) else {
            return;
        };
        let attempts = self.attempts(key, lease.origin);
        if self.out_of_attempts(attempts) {
            let lease = self.end_lease(key);
            let (first, last) = (lease.first_delivery_ms, lease.delivered_ms);
            self.dead_letter(&lease.event, lease.origin, first, last, reason, now);
            return;
        }
        let delay = delay.unwrap_or_else(|| self.backoff(attempts));
        self.requeue(key, saturating_add(now, delay), false);
    }

    /// Exponential backoff for the redelivery after `attempts` deliveries:
    /// `min_backoff * 2^(attempts-1)`, capped at `max_backoff`, minus up to 20 %
    /// jitter (never below `min_backoff`) so that a burst of failures does not
    /// come back as a burst. No retry policy means at once.
    fn backoff(&self, attempts: u32) -> Duration {
        let c = &self.meta.config;
        if c.max_backoff_ms == 0 {
            return Duration::ZERO;
        }
        let exp = attempts.saturating_sub(1).min(40);
        let base = c
            .min_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(c.max_backoff_ms);
        let jitter = if base > 0 {
            rand::random_range(0..=base / 5)
        } else {
            0
        };
        Duration::from_millis((base - jitter).max(c.min_backoff_ms))
    }

    /// Moves an event to the dead-letter queue: the entry and the ack state that
    /// settles the offset go to disk in one batch (the next flush, due at once),
    /// so the event is never both pending and dead-lettered, nor neither.
    fn dead_letter(
        &mut self,
        event: &StoredEvent,
        origin: Origin,
        first_delivery_ms: u64,
        last_delivery_ms: u64,
        reason: &str,
        now: Instant,
    ) {
        let (attempts, redrive_count) = match origin {
            Origin::Log => {
                let part = &mut self.parts[event.partition as usize];
                let attempts = part.acks.attempts.get(&event.offset).copied().unwrap_or(0);
                part.acks.settle(event.offset);
                part.dirty = true;
                self.release_key(&event.key);
                (attempts, 0)
            }
            Origin::Redrive {
                seq,
                redrive_count,
                attempts,
            } => {
                // Leaves the redrive queue in the same batch as it re-enters the DLQ.
                self.redrive_entries.remove(&seq);
                self.pending_ops.push(Update::DropRedrive {
                    sub: self.meta.id,
                    seq,
                });
                self.release_key(&event.key);
                (attempts, redrive_count)
            }
        };
        let entry = DeadLetterEntry {
            seq: self.next_dlq_seq,
            partition: event.partition,
            offset: event.offset,
            attempts,
            redrive_count,
            first_delivery_ms,
            last_delivery_ms,
            dead_letter_ms: now_ms(),
            reason: reason.to_string(),
            record: DeadLetterEntry::record_of(event),
        };
        self.next_dlq_seq += 1;
        // The high-water mark (`next_dlq_seq`) goes in the same batch as the entry it covers.
        self.pending_ops.push(Update::DeadLetter {
            sub: self.meta.id,
            entry,
        });
        self.flush_at = Some(now);
        self.dlq.count.fetch_add(1, AtomicOrdering::Relaxed);
        self.stats.dead_lettered += 1;
        tracing::debug!(
            subscription = %self.meta.name,
            partition = event.partition,
            offset = event.offset,
            attempts,
            reason,
            "event dead-lettered"
        );
    }

    /// Adds a deadline entry. Entries of settled or extended leases are skipped
    /// lazily when they come due; when they outnumber the live leases the heap is
    /// rebuilt, so its size follows the leases in flight, not the throughput.
    fn push_deadline(&mut self, entry: Reverse<(Instant, PartitionId, Offset, u64)>) {
        self.deadlines.push(entry);
        if self.deadlines.len() > 2 * self.leases.len() + 1024 {
            self.deadlines = self
                .leases
                .iter()
                .map(|(&(p, o), l)| Reverse((l.deadline, p, o, l.generation)))
                .collect();
        }
    }

    /// Moves partitions to new positions: their leases, pending redeliveries and
    /// read-ahead are dropped, and everything from the target on is unsettled
    /// (attempt counts start over). Old ack ids of those partitions go stale.
    ///
    /// Redriven dead letters at or after the target are dropped too (queued,
    /// leased or waiting), with their stored redrive entries: the log hands
    /// them out again, so keeping them would deliver the event twice. Redriven
    /// dead letters before the target are untouched; an operator returned them
    /// explicitly and the seek does not reach them.
    fn seek(&mut self, targets: Vec<Option<Offset>>) -> Vec<Update> {
        let mut ops = Vec::new();
        for (p, target) in targets.into_iter().enumerate() {
            let Some(target) = target else { continue };
            let p_id = p as PartitionId;
            let survives = |key: &Key, origin: &Origin| {
                key.0 != p_id || (matches!(origin, Origin::Redrive { .. }) && key.1 < target)
            };
            let mut gone_redrives = Vec::new();
            let held: Vec<Key> = self
                .leases
                .iter()
                .filter(|(k, l)| !survives(k, &l.origin))
                .map(|(k, _)| *k)
                .collect();
            for key in held {
                if let Origin::Redrive { seq, .. } = self.end_lease(key).origin {
                    gone_redrives.push(seq);
                }
            }
            self.waiting.retain(|k, w| {
                let keep = survives(k, &w.origin);
                if let (false, Origin::Redrive { seq, .. }) = (keep, w.origin) {
                    gone_redrives.push(seq);
                }
                keep
            });
            self.redrive.retain(|r| {
                let keep = r.event.partition != p_id || r.event.offset < target;
                if !keep {
                    gone_redrives.push(r.seq);
                }
                keep
            });
            for seq in gone_redrives {
                self.redrive_entries.remove(&seq);
                ops.push(Update::DropRedrive {
                    sub: self.meta.id,
                    seq,
                });
            }
            let buffered = &mut self.buffered;
            self.unblocked.retain(|e| {
                let gone = e.partition == p_id;
                if gone {
                    buffered.remove(e);
                }
                !gone
            });
            self.blocked.retain(|_, q| {
                let gone = q.front().is_some_and(|e| e.partition == p_id);
                if gone {
                    q.iter().for_each(|e| buffered.remove(e));
                }
                !gone
            });
            // Keys of this partition are free again, except those a surviving
            // redriven event still holds.
            let topic = self.topic.clone();
            self.busy_keys.retain(|k| topic.route(k) != p_id);
            if self.key_ordered() {
                let still_busy = self
                    .leases
                    .iter()
                    .map(|(k, l)| (k, &l.event))
                    .chain(self.waiting.iter().map(|(k, w)| (k, &w.event)))
                    .filter(|(k, e)| k.0 == p_id && !e.key.is_empty())
                    .map(|(_, e)| e.key.clone())
                    .collect::<Vec<_>>();
                self.busy_keys.extend(still_busy);
            }
            let part = &mut self.parts[p];
            part.buffer.drain(..).for_each(|e| self.buffered.remove(&e));
            part.acks = PartitionAcks::starting_at(target);
            part.cursor = target;
            part.dirty = false;
            ops.push(Update::PutAckState {
                sub: self.meta.id,
                partition: p_id,
                acks: part.acks.clone(),
            });
        }
        ops
    }

    /// Moves partitions whose log start passed their floor (retention trimmed
    /// events this subscription never settled) up to the new start, counting
    /// the events lost without delivery.
    fn follow_retention(&mut self, now: Instant) {
        for p in 0..self.parts.len() {
            let start = self.topic.partitions[p].start();
            let part = &self.parts[p];
            if start <= part.acks.floor {
                continue;
            }
            let p_id = p as PartitionId;
            let in_memory = self
                .leases
                .keys()
                .chain(self.waiting.keys())
                .filter(|k| k.0 == p_id && k.1 < start)
                .count() as u64
                + part.buffer.iter().filter(|e| e.offset < start).count() as u64;
            let lost = part.acks.unsettled_below(start).saturating_sub(in_memory);
            let part = &mut self.parts[p];
            part.acks.raise_floor(start);
            part.cursor = part.cursor.max(start);
            part.dirty = true;
            self.stats.lost_to_retention += lost;
            self.flush_at
                .get_or_insert(now + self.log.options().ack_flush_interval);
        }
    }

    fn key_ordered(&self) -> bool {
        self.meta.config.ordering == Ordering::Key
    }

    /// KEY ordering: the event of `key` was settled; its next event (if any)
    /// goes next, and until it is leased the key stays busy.
    fn release_key(&mut self, key: &str) {
        if key.is_empty() || !self.busy_keys.contains(key) {
            return;
        }
        match self.blocked.get_mut(key).and_then(VecDeque::pop_front) {
            Some(next) => {
                if self.blocked.get(key).is_some_and(VecDeque::is_empty) {
                    self.blocked.remove(key);
                }
                self.unblocked.push_back(next);
            }
            None => {
                self.busy_keys.remove(key);
            }
        }
    }

    /// Records an ack in the partition's ack state; persisted by the next flush.
    fn mark_acked(&mut self, event: &StoredEvent, origin: Origin, now: Instant) {
        match origin {
            Origin::Log => {
                let part = &mut self.parts[event.partition as usize];
                part.acks.settle(event.offset);
                part.dirty = true;
                self.release_key(&event.key);
            }
            Origin::Redrive { seq, .. } => {
                self.redrive_entries.remove(&seq);
                self.pending_ops.push(Update::DropRedrive {
                    sub: self.meta.id,
                    seq,
                });
                self.release_key(&event.key);
            }
        }
        self.flush_at
            .get_or_insert(now + self.log.options().ack_flush_interval);
        self.stats.acked += 1;
    }

    /// Reads ahead from the log when members could use more events.
    fn start_fetch(&mut self, now: Instant) {
        let read_ahead_bytes = self.log.options().read_ahead_bytes;
        if self.fetch.is_some()
            || self.damaged.is_some()
            || self.members.is_empty()
            || self.meta.paused
            || self.buffered.events >= BUFFER_TARGET
            || self.buffered.bytes >= read_ahead_bytes
            || self.fetch_retry_at.is_some_and(|t| t > now)
        {
            return;
        }
        self.fetch_retry_at = None;
        // At least one event is read whatever this says, so an event bigger
        // than the whole read-ahead still gets through.
        let max_bytes = READ_BYTES.min(read_ahead_bytes - self.buffered.bytes);
        let window = self.log.options().max_unsettled_window;
        let n = self.parts.len();
        for i in 0..n {
            let p = (self.rr_fetch + i) % n;
            let part = &self.parts[p];
            let end = self.topic.partitions[p].end();
            if part.cursor < end && part.cursor.saturating_sub(part.acks.floor) < window {
                self.rr_fetch = (p + 1) % n;
                let max =
                    READ_BATCH.min((part.acks.floor + window).saturating_sub(part.cursor) as usize);
                let (log, topic, from) = (self.log.clone(), self.topic.clone(), part.cursor);
                let p = p as PartitionId;
                self.fetch_from = Some((p, from));
                self.fetch = Some(tokio::task::spawn_blocking(move || {
                    log.read(&topic, p, from, max, max_bytes)
                        .map(|evs| (p, evs))
                }));
                return;
            }
        }
    }

    fn on_fetched(&mut self, res: FetchResult) {
        let origin = self.fetch_from.take();
        if let Some((p, from)) = origin {
            if self.parts[p as usize].cursor != from {
                return; // the partition was repositioned while we read
            }
        }
        match res {
            Ok((_, events)) if events.is_empty() => {
                // Nothing readable although `end` said otherwise (a trim or delete
                // raced us): look again a little later instead of spinning.
                self.fetch_retry_at = Some(Instant::now() + Duration::from_millis(100));
            }
            Ok((p, events)) => {
                let part = &mut self.parts[p as usize];
                for ev in events {
                    part.cursor = ev.offset + 1;
                    // After a restart the cursor starts at the floor; skip what was
                    // settled above it.
                    if part.acks.is_settled(ev.offset) {
                        continue;
                    }
                    self.buffered.add(&ev);
                    part.buffer.push_back(Arc::new(ev));
                }
            }
            Err(e) if e.is_damage() => {
                let (partition, offset) = origin.unwrap_or_default();
                let damaged = Damaged {
                    partition,
                    offset,
                    cause: e.to_string(),
                };
                tracing::error!(subscription = %self.meta.name, topic = %self.topic.name(),
                    partition, offset, error = %e,
                    "damaged data on the subscription's read path; ending its streams with DATA_LOSS until it is sought past the damage");
                self.damaged = Some(damaged);
                let now = Instant::now();
                for member in std::mem::take(&mut self.member_order) {
                    if let Some(m) = self.members.get(&member) {
                        let _ = m.tx.try_send(Err(self.damage_error()));
                    }
                    self.remove_member(member, now);
                }
            }
            Err(e) => {
                tracing::error!(subscription = %self.meta.name, error = %e, "reading the log failed; retrying");
                self.fetch_retry_at = Some(Instant::now() + READ_RETRY);
            }
        }
    }

    /// The DATA_LOSS error a member gets while the subscription is damaged.
    fn damage_error(&self) -> Error {
        let d = self.damaged.as_ref().expect("called only while damaged");
        Error::DamagedRange {
            topic: self.topic.name().to_string(),
            partition: d.partition,
            offset: d.offset,
            cause: d.cause.clone(),
        }
    }

    fn stats(&self) -> SubscriptionStats {
        let mut s = self.stats.clone();
        s.in_flight = self.leases.len() as u64;
        s.members = self.members.len() as u32;
        s.backlog = self
            .parts
            .iter()
            .enumerate()
            .map(|(p, part)| part.acks.unsettled_below(self.topic.partitions[p].end()))
            .sum::<u64>()
            + self.redrive.len() as u64
            + self
                .leases
                .values()
                .map(|l| l.origin)
                .chain(self.waiting.values().map(|w| w.origin))
                .filter(|o| matches!(o, Origin::Redrive { .. }))
                .count() as u64;
        let in_memory = self
            .leases
            .values()
            .map(|l| &l.event)
            .chain(self.waiting.values().map(|w| &w.event))
            .chain(self.parts.iter().filter_map(|p| p.buffer.front()))
            .chain(self.unblocked.iter())
            .chain(self.blocked.values().filter_map(VecDeque::front));
        s.oldest_unacked_ms = in_memory.map(|e| e.publish_time).min();
        s.unread_floors = self
            .parts
            .iter()
            .enumerate()
            .filter(|(p, part)| {
                part.cursor <= part.acks.floor && part.acks.floor < self.topic.partitions[*p].end()
            })
            .map(|(p, part)| (p as PartitionId, part.acks.floor))
            .collect();
        s
    }

    fn dirty_ops(&mut self) -> Vec<Update> {
        let id = self.meta.id;
        let mut ops = std::mem::take(&mut self.pending_ops);
        ops.extend(
            self.parts
                .iter_mut()
                .enumerate()
                .filter(|(_, p)| p.dirty)
                .map(|(i, p)| {
                    p.dirty = false;
                    Update::PutAckState {
                        sub: id,
                        partition: i as PartitionId,
                        acks: p.acks.clone(),
                    }
                }),
        );
        ops
    }

    /// Persists changed ack state without waiting for the commit (and without a
    /// sync). The writer keeps queue order, so a later flush never loses to an
    /// earlier one.
    async fn flush(&mut self) {
        self.flush_at = None;
        let ops = self.dirty_ops();
        if !ops.is_empty() {
            if let Err(e) = self.log.write_nowait(ops).await {
                tracing::warn!(subscription = %self.meta.name, error = %e, "could not persist ack state");
            }
        }
    }

    /// Like [`Actor::flush`], but waits until the write is committed.
    async fn flush_committed(&mut self) {
        self.flush_at = None;
        let ops = self.dirty_ops();
        if !ops.is_empty() {
            if let Err(e) = self.log.write(ops, false).await {
                tracing::warn!(subscription = %self.meta.name, error = %e, "could not persist ack state");
            }
        }
    }

    async fn stop(&mut self, reason: StopReason) {
        if reason == StopReason::Shutdown {
            // Written (not synced) and awaited; the broker syncs the WAL once after
            // every subscription stopped, instead of one fsync per subscription.
            let ops = self.dirty_ops();
            if !ops.is_empty() {
                if let Err(e) = self.log.write(ops, false).await {
                    tracing::error!(subscription = %self.meta.name, error = %e, "final ack-state flush failed; unflushed acks will be redelivered");
                }
            }
        }
        for (_, m) in self.members.drain() {
            let err = match reason {
                StopReason::Shutdown => Error::ShuttingDown,
                StopReason::Deleted => Error::SubscriptionNotFound {
                    topic: self.topic.name().to_string(),
                    subscription: self.meta.name.clone(),
                },
            };
            let _ = m.tx.try_send(Err(err));
        }
        self.member_order.clear();
        if let Some(f) = self.fetch.take() {
            f.abort();
        }
    }
}

/// `t + d`, or a time far enough away to mean "never" when that overflows.
fn saturating_add(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(100 * 365 * 24 * 3600))
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

//! The subscription actor. See the module docs of [`crate::delivery`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ack_id::AckId;
use super::dead_letter::DeadLetterEntry;
use super::key_order::KeyOrder;
use super::leases::{Lease, Leases};
use super::members::{Handed, Members};
use super::persistence::{self, Loaded, Persistence};
use super::read_ahead::{Bounds, FetchResult, Fetched, ReadAhead};
use super::redrive::RedriveQueue;
use super::retries::{backoff, out_of_attempts, Retries, Waiting};
use super::{Key, Origin};
use crate::error::{Error, Result};
use crate::meta::{now_ms, Ordering, SubscriptionMeta};
use crate::store::{Log, TopicState};
use crate::types::{Offset, PartitionId, StoredEvent, SubscriptionId};
use crate::writer::Op;

/// Commands queued for one subscription before callers wait.
const COMMAND_QUEUE: usize = 1024;
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
        let loaded = {
            let log = log.clone();
            let topic = topic.clone();
            let id = meta.id;
            tokio::task::spawn_blocking(move || persistence::load(&log, &topic, id))
                .await
                .map_err(|_| Error::ShuttingDown)??
        };
        let dlq = loaded.dlq.clone();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let actor = Actor::new(log, topic.clone(), meta.clone(), loaded, rx);
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

/// Where a read of the log found damaged data.
#[derive(Debug)]
struct Damaged {
    partition: PartitionId,
    /// The read started here; the damage is at or after it.
    offset: Offset,
    cause: String,
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

struct Actor {
    log: Log,
    topic: Arc<TopicState>,
    meta: SubscriptionMeta,
    rx: mpsc::Receiver<Command>,
    persist: Persistence,
    members: Members,
    leases: Leases,
    retries: Retries,
    read_ahead: ReadAhead,
    /// Where a read hit damaged data: members' streams end with DATA_LOSS and
    /// nothing is read or delivered until a seek repositions the subscription.
    damaged: Option<Damaged>,
    stats: SubscriptionStats,
    redrive: RedriveQueue,
    keys: KeyOrder,
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
        loaded: Loaded,
        rx: mpsc::Receiver<Command>,
    ) -> Self {
        let Loaded {
            acks,
            next_dlq_seq,
            dlq,
            redrive,
        } = loaded;
        let read_ahead = ReadAhead::new(acks.iter().map(|a| a.floor));
        let flush_interval = log.options().ack_flush_interval;
        let persist = Persistence::new(meta.id, acks, next_dlq_seq, dlq, flush_interval);
        let mut redrive_queue = RedriveQueue::default();
        redrive_queue.extend(redrive);
        // Lease generations start at incarnation << 40, so an ack id minted by an
        // earlier run of the server can never match a lease of this run.
        let generation = log.incarnation() << 40;
        let ack_deadline = Duration::from_millis(meta.config.ack_deadline_ms);
        let max_in_flight_bytes = log.options().max_in_flight_bytes;
        let key_ordered = meta.config.ordering == Ordering::Key;
        Actor {
            log,
            topic,
            meta,
            rx,
            persist,
            members: Members::new(max_in_flight_bytes),
            leases: Leases::new(generation, ack_deadline),
            retries: Retries::default(),
            read_ahead,
            damaged: None,
            stats: SubscriptionStats::default(),
            redrive: redrive_queue,
            keys: KeyOrder::new(key_ordered),
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
                res = self.read_ahead.fetched(), if self.read_ahead.is_fetching() => Wake::Fetched(res),
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
                    if self.persist.has_pending() {
                        self.flush_committed().await;
                    }
                    let _ = reply.send(outcome);
                }
                Wake::Command(Some(Command::Seek { targets, reply })) => {
                    // Everything not yet flushed goes first in the same synced
                    // batch, so no later lazy flush can overwrite the new
                    // positions with older state.
                    let mut ops = self.persist.take_writes();
                    self.seek(targets, &mut ops);
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
                Wake::Fetched(res) => self.on_fetched(res),
                Wake::Timer => {}
            }
            if self.persist.flush_due(Instant::now()) {
                self.flush().await;
            }
        }
        self.stop(StopReason::Shutdown).await;
    }

    fn next_timer(&self) -> Option<Instant> {
        [
            self.leases.next_deadline(),
            // A due retry only matters when someone could take it.
            self.retries
                .next_due()
                .filter(|_| !self.meta.paused && self.has_credit()),
            self.persist.flush_at(),
            self.read_ahead.retry_at(),
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
                let id = self.members.new_id();
                if self.damaged.is_some() {
                    // The stream ends at once with the reason.
                    let _ = tx.try_send(Err(self.damage_error()));
                    let _ = reply.send(id);
                    return;
                }
                self.members.add(id, tx, max_in_flight);
                let _ = reply.send(id);
            }
            Command::Leave(id) => self.remove_member(id, now),
            Command::Settle { .. } => unreachable!("handled in run"),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Redriven(entries) => self.redrive.extend(entries),
            Command::UpdateMeta(meta) => {
                self.leases
                    .set_ack_deadline(Duration::from_millis(meta.config.ack_deadline_ms));
                self.meta = *meta;
                self.keys
                    .set_enabled(self.meta.config.ordering == Ordering::Key);
            }
            Command::Stop { .. } | Command::Seek { .. } | Command::Flush(_) => {
                unreachable!("handled in run")
            }
        }
    }

    fn has_credit(&self) -> bool {
        self.members.has_credit()
    }

    /// Hands out eligible events to members with credit: redeliveries first (by due
    /// time), then fresh events round-robin across partitions.
    fn dispatch(&mut self, now: Instant) {
        if self.members.is_empty() || self.meta.paused {
            return;
        }
        let mut batches: HashMap<u64, Vec<Delivery>> = HashMap::new();
        while let Some(member) = self.members.next_with_credit() {
            let Some(next) = self.next_event(now) else {
                break;
            };
            let delivery = self.lease(member, next, now);
            batches.entry(member).or_default().push(delivery);
        }
        for (member, batch) in batches {
            // Gone: the member's stream was dropped. Otherwise it stopped
            // reading beyond its credit. Either way its leases are better off
            // elsewhere.
            if let Handed::Refused { batch, gone } = self.members.hand(member, batch) {
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

    /// The next event to hand out: due redeliveries first, then redriven dead
    /// letters, then fresh events round-robin across partitions.
    fn next_event(&mut self, now: Instant) -> Option<Next> {
        if let Some(w) = self.retries.pop_due(now) {
            self.stats.redelivered += 1;
            return Some(Next {
                event: w.event,
                first_delivery_ms: Some(w.first_delivery_ms),
                origin: w.origin,
            });
        }
        // The first redriven event that may go now: never two leases on one
        // (partition, offset) (a seek can make it live in the log flow too), and
        // in KEY mode never two events of one key in flight.
        let redriven = self.redrive.hand_out(|r| {
            let key = (r.event.partition, r.event.offset);
            let taken = self.leases.contains(&key) || self.retries.contains(&key);
            !taken && !self.keys.must_wait(&r.event)
        });
        if let Some((event, origin)) = redriven {
            return Some(Next {
                event,
                first_delivery_ms: None,
                origin,
            });
        }
        if let Some(ev) = self.keys.pop_unblocked() {
            return Some(Next {
                event: ev,
                first_delivery_ms: None,
                origin: Origin::Log,
            });
        }
        let event = self.read_ahead.hand_out(|ev| {
            // The filter is applied at hand-out time, so a filter change takes
            // effect for every event not yet delivered.
            if !self.meta.config.filter.matches(&ev) {
                self.persist.settle((ev.partition, ev.offset), now);
                self.stats.filtered += 1;
                return None;
            }
            if self.keys.must_wait(&ev) {
                // Wait behind the key's event in flight; other keys pass.
                self.keys.hold_back(ev);
                return None;
            }
            Some(ev)
        })?;
        Some(Next {
            event,
            first_delivery_ms: None,
            origin: Origin::Log,
        })
    }

    fn lease(&mut self, member: u64, next: Next, now: Instant) -> Delivery {
        let Next {
            event,
            first_delivery_ms,
            mut origin,
        } = next;
        let delivered_ms = now_ms();
        self.keys.start(&event);
        let attempt = self.adjust_attempts((event.partition, event.offset), &mut origin, true);
        if attempt == 1 && first_delivery_ms.is_none() && matches!(origin, Origin::Log) {
            // Publish to first delivery: how far behind the consumers run.
            // Redriven dead letters are not first deliveries (their age would
            // read as lag); a seek back re-measures what it re-delivers.
            let lag_ms = delivered_ms.saturating_sub(event.publish_time);
            metrics::histogram!(crate::metric_names::DELIVERY_LATENCY).record(lag_ms as f64 / 1e3);
        }
        self.persist.flush_soon(now);
        let generation = self.leases.grant(
            member,
            event.clone(),
            first_delivery_ms.unwrap_or(delivered_ms),
            delivered_ms,
            origin,
            now,
        );
        let ack_id = AckId {
            subscription: self.meta.id,
            partition: event.partition,
            offset: event.offset,
            generation,
        };
        self.members.hold(member, &event);
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
            self.retries.schedule(
                key,
                due,
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
        self.leases.set_origin(&key, origin);
        self.stats.delivered = self.stats.delivered.saturating_sub(1);
        self.requeue(key, now, false);
    }

    /// Counts a delivery attempt (`up`) or takes one back, where the event's
    /// attempts are persisted: the partition's ack state for log events, the
    /// redrive-queue entry for redriven ones. Returns the new count.
    fn adjust_attempts(&mut self, key: Key, origin: &mut Origin, up: bool) -> u32 {
        match origin {
            Origin::Log => self.persist.count_attempt(key, up),
            Origin::Redrive { seq, attempts, .. } => {
                *attempts = if up {
                    attempts.saturating_add(1)
                } else {
                    attempts.saturating_sub(1)
                };
                if let Some(entry) = self.redrive.set_attempts(*seq, *attempts) {
                    self.persist.rewrite_redrive(*seq, entry);
                }
                *attempts
            }
        }
    }

    fn expire_leases(&mut self, now: Instant) {
        while let Some(key) = self.leases.next_expired(now) {
            self.stats.expired += 1;
            self.fail(key, now, None, DEADLINE_EXCEEDED);
        }
    }

    fn remove_member(&mut self, id: u64, now: Instant) {
        if !self.members.remove(id) {
            return;
        }
        for key in self.leases.held_by(id) {
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
        if out_of_attempts(&self.meta.config, self.attempts(key, lease.origin)) {
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
            let live = self.leases.is_live(&key, id.generation);
            let released = !live && self.retries.released_from(&key, id.generation);
            if released {
                match &op {
                    SettleOp::Ack => {
                        let w = self.retries.take(&key).expect("checked released");
                        self.mark_acked(&w.event, w.origin, now);
                    }
                    SettleOp::DeadLetter { reason } => {
                        let w = self.retries.take(&key).expect("checked released");
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
                let settled = self.persist.is_settled(key);
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
                    self.leases.extend(&key, saturating_add(now, *d));
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
        let lease = self.leases.take(&key)?;
        self.members.release(lease.member, &lease.event);
        Some(lease)
    }

    /// Deliveries of a leased event so far, this one included.
    fn attempts(&self, key: Key, origin: Origin) -> u32 {
        match origin {
            Origin::Log => self.persist.attempts(key),
            Origin::Redrive { attempts, .. } => attempts,
        }
    }

    /// A delivery failed (nack or expired lease): redeliver after `delay` or the
    /// backoff, or dead-letter it once its attempts are used up.
    fn fail(&mut self, key: Key, now: Instant, delay: Option<Duration>, reason: &str) {
        let Some(lease) = self.leases.get(&key) else {
            return;
        };
        let attempts = self.attempts(key, lease.origin);
        if out_of_attempts(&self.meta.config, attempts) {
            let lease = self.end_lease(key);
            let (first, last) = (lease.first_delivery_ms, lease.delivered_ms);
            self.dead_letter(&lease.event, lease.origin, first, last, reason, now);
            return;
        }
        let delay = delay.unwrap_or_else(|| backoff(&self.meta.config, attempts));
        self.requeue(key, saturating_add(now, delay), false);
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
                let key = (event.partition, event.offset);
                let attempts = self.persist.attempts(key);
                self.persist.settle(key, now);
                self.keys.release(&event.key);
                (attempts, 0)
            }
            Origin::Redrive {
                seq,
                redrive_count,
                attempts,
            } => {
                // Leaves the redrive queue in the same batch as it re-enters the DLQ.
                self.redrive.settled(seq);
                self.persist.drop_redrive(seq);
                self.keys.release(&event.key);
                (attempts, redrive_count)
            }
        };
        let entry = |seq| DeadLetterEntry {
            seq,
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
        self.persist.add_dead_letter(entry, now);
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

    /// Moves partitions to new positions: their leases, pending redeliveries and
    /// read-ahead are dropped, and everything from the target on is unsettled
    /// (attempt counts start over). Old ack ids of those partitions go stale.
    ///
    /// Redriven dead letters at or after the target are dropped too (queued,
    /// leased or waiting), with their stored redrive entries: the log hands
    /// them out again, so keeping them would deliver the event twice. Redriven
    /// dead letters before the target are untouched; an operator returned them
    /// explicitly and the seek does not reach them.
    fn seek(&mut self, targets: Vec<Option<Offset>>, ops: &mut Vec<Op>) {
        for (p, target) in targets.into_iter().enumerate() {
            let Some(target) = target else { continue };
            let p_id = p as PartitionId;
            let survives = |key: &Key, origin: &Origin| {
                key.0 != p_id || (matches!(origin, Origin::Redrive { .. }) && key.1 < target)
            };
            let mut gone_redrives = Vec::new();
            let held = self.leases.keys_where(|k, l| !survives(k, &l.origin));
            for key in held {
                if let Origin::Redrive { seq, .. } = self.end_lease(key).origin {
                    gone_redrives.push(seq);
                }
            }
            self.retries.retain(|k, w| {
                let keep = survives(k, &w.origin);
                if let (false, Origin::Redrive { seq, .. }) = (keep, w.origin) {
                    gone_redrives.push(seq);
                }
                keep
            });
            gone_redrives.extend(self.redrive.drop_from(p_id, target));
            for &seq in &gone_redrives {
                self.redrive.settled(seq);
            }
            // Keys of this partition are free again, except those a surviving
            // redriven event still holds.
            let still_out = self
                .leases
                .iter()
                .map(|(k, l)| (k, &l.event))
                .chain(self.retries.iter().map(|(k, w)| (k, &w.event)))
                .filter(|(k, _)| k.0 == p_id)
                .map(|(_, e)| e.key.as_str());
            let topic = &self.topic;
            self.keys
                .reset_partition(p_id, |k| topic.route(k), still_out);
            self.read_ahead.reposition(p_id, target);
            self.persist.reposition(p_id, target, gone_redrives, ops);
        }
    }

    /// Moves partitions whose log start passed their floor (retention trimmed
    /// events this subscription never settled) up to the new start, counting
    /// the events lost without delivery.
    fn follow_retention(&mut self, now: Instant) {
        for p in 0..self.persist.partitions() {
            let start = self.topic.partitions[p].start();
            let p_id = p as PartitionId;
            if start <= self.persist.floor(p_id) {
                continue;
            }
            let in_memory = self
                .leases
                .iter()
                .map(|(k, _)| k)
                .chain(self.retries.iter().map(|(k, _)| k))
                .filter(|k| k.0 == p_id && k.1 < start)
                .count() as u64
                + self.read_ahead.buffered_below(p_id, start);
            let lost = self.persist.follow_start(p_id, start, in_memory, now);
            self.read_ahead.skip_to(p_id, start);
            self.stats.lost_to_retention += lost;
        }
    }

    /// Records an ack in the partition's ack state; persisted by the next flush.
    fn mark_acked(&mut self, event: &StoredEvent, origin: Origin, now: Instant) {
        match origin {
            Origin::Log => {
                self.persist.settle((event.partition, event.offset), now);
                self.keys.release(&event.key);
            }
            Origin::Redrive { seq, .. } => {
                self.redrive.settled(seq);
                self.persist.drop_redrive(seq);
                self.keys.release(&event.key);
            }
        }
        self.persist.flush_soon(now);
        self.stats.acked += 1;
    }

    /// Reads ahead from the log when members could use more events.
    fn start_fetch(&mut self, now: Instant) {
        if self.damaged.is_some() || self.members.is_empty() || self.meta.paused {
            return;
        }
        let options = self.log.options();
        let (persist, topic) = (&self.persist, &self.topic);
        let read = self.read_ahead.next_read(
            now,
            self.keys.held(),
            options.read_ahead_bytes,
            options.max_unsettled_window,
            |p| Bounds {
                floor: persist.floor(p as PartitionId),
                end: topic.partitions[p].end(),
            },
        );
        if let Some(read) = read {
            self.read_ahead.start(read, &self.log, &self.topic);
        }
    }

    fn on_fetched(&mut self, res: FetchResult) {
        let persist = &self.persist;
        let is_settled = |p, o| persist.is_settled((p, o));
        match self.read_ahead.on_fetched(res, is_settled) {
            Fetched::Done => {}
            Fetched::Damaged {
                partition,
                offset,
                error: e,
            } => {
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
                for member in self.members.take_order() {
                    self.members.notify(member, self.damage_error());
                    self.remove_member(member, now);
                }
            }
            Fetched::Failed(e) => {
                tracing::error!(subscription = %self.meta.name, error = %e, "reading the log failed; retrying");
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
        let partitions = (0..self.persist.partitions()).map(|p| {
            let acks = self.persist.acks(p as PartitionId);
            (p, acks, self.topic.partitions[p].end())
        });
        s.backlog = partitions
            .clone()
            .map(|(_, acks, end)| acks.unsettled_below(end))
            .sum::<u64>()
            + self.redrive.queued() as u64
            + self
                .leases
                .iter()
                .map(|(_, l)| l.origin)
                .chain(self.retries.iter().map(|(_, w)| w.origin))
                .filter(|o| matches!(o, Origin::Redrive { .. }))
                .count() as u64;
        let in_memory = self
            .leases
            .iter()
            .map(|(_, l)| &l.event)
            .chain(self.retries.iter().map(|(_, w)| &w.event))
            .chain(self.read_ahead.oldest())
            .chain(self.keys.oldest());
        s.oldest_unacked_ms = in_memory.map(|e| e.publish_time).min();
        s.unread_floors = partitions
            .filter(|(p, acks, end)| {
                self.read_ahead.cursor(*p as PartitionId) <= acks.floor && acks.floor < *end
            })
            .map(|(p, acks, _)| (p as PartitionId, acks.floor))
            .collect();
        s
    }

    /// Persists changed ack state without waiting for the commit (and without a
    /// sync). The writer keeps queue order, so a later flush never loses to an
    /// earlier one.
    async fn flush(&mut self) {
        let ops = self.persist.take_flush();
        if !ops.is_empty() {
            if let Err(e) = self.log.write_nowait(ops).await {
                tracing::warn!(subscription = %self.meta.name, error = %e, "could not persist ack state");
            }
        }
    }

    /// Like [`Actor::flush`], but waits until the write is committed.
    async fn flush_committed(&mut self) {
        let ops = self.persist.take_flush();
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
            let ops = self.persist.take_writes();
            if !ops.is_empty() {
                if let Err(e) = self.log.write(ops, false).await {
                    tracing::error!(subscription = %self.meta.name, error = %e, "final ack-state flush failed; unflushed acks will be redelivered");
                }
            }
        }
        let (topic, subscription) = (self.topic.name(), &self.meta.name);
        self.members.close_all(|| match reason {
            StopReason::Shutdown => Error::ShuttingDown,
            StopReason::Deleted => Error::SubscriptionNotFound {
                topic: topic.to_string(),
                subscription: subscription.clone(),
            },
        });
        self.read_ahead.abort();
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

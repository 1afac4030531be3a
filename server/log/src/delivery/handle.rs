//! The handle of a running subscription actor, the member streams it feeds,
//! and the values that cross between them and the rest of the server.

use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::ack_id::AckId;
use super::actor;
use super::dead_letter::DeadLetterEntry;
use super::persistence;
use crate::error::{Error, Result};
use crate::meta::SubscriptionMeta;
use crate::store::Log;
use crate::topic::TopicState;
use crate::types::{Offset, PartitionId, StoredEvent, SubscriptionId};

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

pub use eventbus_broker::SettleOp;

/// Reason recorded when a lease runs out.
pub use eventbus_broker::dead_letter::DEADLINE_EXCEEDED;
/// Reason recorded when the member's stream ended while it held the lease on
/// the last allowed attempt.
pub use eventbus_broker::dead_letter::MEMBER_LEFT;

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

/// What the handle and the member streams ask of the actor.
pub(super) enum Command {
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
        let task = actor::spawn(log, topic.clone(), meta.clone(), loaded, rx);
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

/// A redriven dead letter waiting for its first delivery.
pub struct Redriven {
    pub seq: u64,
    pub redrive_count: u32,
    pub event: Arc<StoredEvent>,
    /// The stored queue entry; rewritten with the attempt count at each
    /// delivery, so attempts of redriven events survive restarts too.
    pub entry: DeadLetterEntry,
}

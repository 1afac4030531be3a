//! The subscription actor: the one task that drives a subscription's parts.
//! It takes commands, asks the parts (leases, retries, key order, read-ahead,
//! redrive queue, members, persistence) and wires their answers together;
//! the parts own the state. See the module docs of [`crate::delivery`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ack_id::AckId;
use super::handle::{Command, Delivery, StopReason, SubscriptionStats, MEMBER_LEFT};
use super::key_order::KeyOrder;
use super::leases::Leases;
use super::members::{Handed, Members};
use super::persistence::{Loaded, Persistence};
use super::read_ahead::{Bounds, FetchResult, Fetched, ReadAhead};
use super::redrive::RedriveQueue;
use super::retries::Retries;
use super::Origin;
use crate::error::Error;
use crate::meta::{now_ms, Ordering, SubscriptionMeta};
use crate::store::Log;
use crate::topic::{LiveReader, TopicState};
use crate::types::{Offset, PartitionId, StoredEvent, UnixMillis};

mod reposition;
mod settle;

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

/// Starts the actor of a subscription from its loaded state; it serves `rx`.
pub(super) fn spawn(
    log: Log,
    topic: Arc<TopicState>,
    meta: SubscriptionMeta,
    loaded: Loaded,
    rx: mpsc::Receiver<Command>,
) -> JoinHandle<()> {
    tokio::spawn(Actor::new(log, topic, meta, loaded, rx).run())
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
    /// Publish-to-first-delivery lag, registered once: looking the histogram
    /// up in the recorder per delivery was ~3 % of a consume run's CPU.
    delivery_latency: metrics::Histogram,
    /// Counts this subscription as a live reader of its topic while it has
    /// members, so the topic keeps a hot tail.
    live: LiveReader,
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
            live: LiveReader::new(topic.clone()),
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
            delivery_latency: metrics::histogram!(crate::metric_names::DELIVERY_LATENCY),
        }
    }

    async fn run(mut self) {
        let mut tail: watch::Receiver<u64> = self.topic.watch_tail();
        loop {
            let now = Instant::now();
            self.follow_retention(now);
            self.expire_leases(now);
            self.dispatch(now);
            // A read from the hot tail is done at once: hand its events out
            // and read on while there is room.
            while self.start_fetch(now) {
                self.dispatch(now);
            }
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
            self.live.set(!self.members.is_empty());
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
                // Counted before the answer: what is published once the
                // member has joined is kept hot for it.
                self.live.set(true);
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
        // One wall-clock read per round, not per event (it was ~1.4 % of a
        // consume run's CPU); the round takes microseconds.
        let now_wall_ms = now_ms();
        while let Some(member) = self.members.next_with_credit() {
            let Some(next) = self.next_event(now) else {
                break;
            };
            let delivery = self.lease(member, next, now, now_wall_ms);
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

    fn lease(
        &mut self,
        member: u64,
        next: Next,
        now: Instant,
        delivered_ms: UnixMillis,
    ) -> Delivery {
        let Next {
            event,
            first_delivery_ms,
            mut origin,
        } = next;
        self.keys.start(&event);
        let attempt = self.adjust_attempts((event.partition, event.offset), &mut origin, true);
        if attempt == 1 && first_delivery_ms.is_none() && matches!(origin, Origin::Log) {
            // Publish to first delivery: how far behind the consumers run.
            // Redriven dead letters are not first deliveries (their age would
            // read as lag); a seek back re-measures what it re-delivers.
            let lag_ms = delivered_ms.saturating_sub(event.publish_time);
            self.delivery_latency.record(lag_ms as f64 / 1e3);
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

    fn remove_member(&mut self, id: u64, now: Instant) {
        if !self.members.remove(id) {
            return;
        }
        for key in self.leases.held_by(id) {
            self.give_back(key, now, true, MEMBER_LEFT);
        }
    }

    /// Reads ahead from the log when members could use more events. True
    /// when a read was served from the hot tail and is buffered already.
    fn start_fetch(&mut self, now: Instant) -> bool {
        if self.damaged.is_some() || self.members.is_empty() || self.meta.paused {
            return false;
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
        let Some(read) = read else {
            return false;
        };
        match self.read_ahead.start(read, &self.log, &self.topic) {
            Some(res) => {
                self.on_fetched(res);
                true
            }
            None => false,
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

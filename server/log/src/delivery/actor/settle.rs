//! How leases end: settled by their member (ack, nack, dead-letter, a new
//! deadline), expired, or given back when the member left or its batch could
//! not be handed over; and the attempt counting that decides between a
//! redelivery and the dead-letter queue.

use std::time::Duration;

use tokio::time::Instant;

use super::super::ack_id::AckId;
use super::super::dead_letter::DeadLetterEntry;
use super::super::handle::{SettleOp, SettleOutcome, DEADLINE_EXCEEDED};
use super::super::leases::Lease;
use super::super::retries::Waiting;
use super::super::{Key, Origin};
use super::{saturating_add, Actor};
use crate::meta::now_ms;
use crate::types::StoredEvent;

impl Actor {
    /// Ends a lease without settling and queues the event for redelivery at `due`.
    /// `released`: the member left, so the lease's ack id stays good for an ack
    /// until the event is handed out again.
    pub(super) fn requeue(&mut self, key: Key, due: Instant, released: bool) {
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
    pub(super) fn unlease(&mut self, key: Key, now: Instant) {
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
    pub(super) fn adjust_attempts(&mut self, key: Key, origin: &mut Origin, up: bool) -> u32 {
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

    pub(super) fn expire_leases(&mut self, now: Instant) {
        while let Some(key) = self.leases.next_expired(now) {
            self.stats.expired += 1;
            self.fail(key, now, None, DEADLINE_EXCEEDED);
        }
    }

    /// A lease ends without a verdict from its member: the member left, or its
    /// batch could not be handed over. The delivery still used an attempt
    /// (counted when the lease was made), so once `max_delivery_attempts` are
    /// used up the event moves to the dead-letter queue with `reason`, like an
    /// expired or nacked one; otherwise it goes back for redelivery at once.
    /// `released`: the member left, so until the event goes out again its old
    /// ack id may still ack it.
    pub(super) fn give_back(&mut self, key: Key, now: Instant, released: bool, reason: &str) {
        let Some(lease) = self.leases.get(&key) else {
            return;
        };
        if self
            .meta
            .config
            .out_of_attempts(self.attempts(key, lease.origin))
        {
            let lease = self.end_lease(key);
            let (first, last) = (lease.first_delivery_ms, lease.delivered_ms);
            self.dead_letter(&lease.event, lease.origin, first, last, reason, now);
        } else {
            self.requeue(key, now, released);
        }
    }

    pub(super) fn settle(&mut self, op: SettleOp, ids: Vec<AckId>, now: Instant) -> SettleOutcome {
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
    pub(super) fn end_lease(&mut self, key: Key) -> Lease {
        self.take_lease(key).expect("caller checked the lease")
    }

    /// Removes the lease of `key`, if any, and gives its member the credit back.
    pub(super) fn take_lease(&mut self, key: Key) -> Option<Lease> {
        let lease = self.leases.take(&key)?;
        self.members.release(lease.member, &lease.event);
        Some(lease)
    }

    /// Deliveries of a leased event so far, this one included.
    pub(super) fn attempts(&self, key: Key, origin: Origin) -> u32 {
        match origin {
            Origin::Log => self.persist.attempts(key),
            Origin::Redrive { attempts, .. } => attempts,
        }
    }

    /// A delivery failed (nack or expired lease): redeliver after `delay` or the
    /// backoff, or dead-letter it once its attempts are used up.
    pub(super) fn fail(&mut self, key: Key, now: Instant, delay: Option<Duration>, reason: &str) {
        let Some(lease) = self.leases.get(&key) else {
            return;
        };
        let attempts = self.attempts(key, lease.origin);
        if self.meta.config.out_of_attempts(attempts) {
            let lease = self.end_lease(key);
            let (first, last) = (lease.first_delivery_ms, lease.delivered_ms);
            self.dead_letter(&lease.event, lease.origin, first, last, reason, now);
            return;
        }
        let delay = delay.unwrap_or_else(|| self.meta.config.backoff(attempts));
        self.requeue(key, saturating_add(now, delay), false);
    }

    /// Moves an event to the dead-letter queue: the entry and the ack state that
    /// settles the offset go to disk in one batch (the next flush, due at once),
    /// so the event is never both pending and dead-lettered, nor neither.
    pub(super) fn dead_letter(
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

    /// Records an ack in the partition's ack state; persisted by the next flush.
    pub(super) fn mark_acked(&mut self, event: &StoredEvent, origin: Origin, now: Instant) {
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
}

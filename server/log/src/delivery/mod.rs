//! The delivery engine: one actor task per subscription.
//!
//! The actor owns all mutable delivery state of its subscription (leases, retry
//! timers, per-partition ack state), so nothing on the delivery path takes a
//! lock. Subscribe streams ("members"), acks and admin calls talk to it through
//! a bounded command channel.
//!
//! See `ARCHITECTURE.md` ("Delivery engine") for what is persisted when and what a
//! crash can cost.
//!
//! # Layout
//! * `handle`: [`SubscriptionHandle`] and [`MemberStream`], the commands they
//!   send, and the values they exchange with the rest of the server.
//! * `actor`: the task that receives commands and drives the parts below.
//! * `leases`: the lease table and its deadline heap.
//! * `retries`: events waiting for redelivery, backoff and the attempts limit.
//! * `key_order`: KEY ordering (busy keys, held-back events).
//! * `read_ahead`: cursors, read-ahead buffers and their bounds, the log read.
//! * `redrive`: redriven dead letters waiting and handed out.
//! * `members`: the Subscribe streams, their credit, and whose turn it is.
//! * `persistence`: ack state, the writes that go with it, flush timing, loading.
//! * `acks`, `dead_letter`, `ack_id`: the persisted and wire formats.

pub(crate) mod ack_id;
pub(crate) mod acks;
mod actor;
pub(crate) mod dead_letter;
mod handle;
mod key_order;
mod leases;
mod members;
pub(crate) mod persistence;
mod read_ahead;
mod redrive;
mod retries;

pub use handle::{
    Delivery, DlqCounters, MemberItem, MemberStream, Redriven, SettleOp, SettleOutcome, StopReason,
    SubscriptionHandle, SubscriptionStats, DEADLINE_EXCEEDED,
};

use crate::types::{Offset, PartitionId};

/// An event's place in the log: what leases, redeliveries and ack ids name.
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

/// What events read ahead and not yet handed out weigh: how many, and their
/// [`StoredEvent::size_bytes`] (the read-ahead is bounded in both).
///
/// [`StoredEvent::size_bytes`]: crate::types::StoredEvent::size_bytes
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Footprint {
    events: usize,
    bytes: usize,
}

impl Footprint {
    fn add(&mut self, event: &crate::types::StoredEvent) {
        self.events += 1;
        self.bytes += event.size_bytes();
    }

    fn remove(&mut self, event: &crate::types::StoredEvent) {
        self.events -= 1;
        self.bytes -= event.size_bytes();
    }

    fn plus(self, other: Footprint) -> Footprint {
        Footprint {
            events: self.events + other.events,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// Events for the unit tests of the delivery parts.
#[cfg(test)]
fn test_event(
    partition: PartitionId,
    offset: Offset,
    key: &str,
    payload: usize,
) -> crate::types::StoredEvent {
    crate::types::StoredEvent {
        topic_id: crate::types::TopicId(1),
        partition,
        offset,
        publish_time: 1_000 + offset,
        key: key.to_string(),
        event_type: String::new(),
        payload: bytes::Bytes::from(vec![0u8; payload]),
        content_type: String::new(),
        attributes: Default::default(),
        idempotency_key: String::new(),
        event_time: None,
    }
}

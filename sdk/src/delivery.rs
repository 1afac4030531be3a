//! A received [`Delivery`]: the [`Message`] plus the [`Lease`] that settles it.

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::event::Message;
use crate::settle::{Settler, Verdict};
use crate::v1;

/// The right to settle one delivery. While it is held (not settled, not
/// dropped) its ack deadline is extended automatically, up to the
/// subscription's `max_lease_duration`.
///
/// Dropping it without settling nacks the delivery (the subscription's retry
/// policy decides when it comes back).
pub struct Lease {
    ack_id: String,
    settler: Settler,
    settled: bool,
}

impl Lease {
    pub(crate) fn new(ack_id: String, settler: Settler) -> Lease {
        settler.hold(&ack_id);
        Lease {
            ack_id,
            settler,
            settled: false,
        }
    }

    /// The server's ack id of this lease.
    pub fn ack_id(&self) -> &str {
        &self.ack_id
    }

    /// Acknowledges: the event is done and never redelivered. Acks are
    /// batched with others; this waits for the call that carries it.
    ///
    /// Fails with [`Error::LeaseLost`](crate::Error::LeaseLost) when the lease
    /// expired or the event was redelivered meanwhile.
    pub async fn ack(self) -> Result<()> {
        self.settle(Verdict::Ack).await
    }

    /// Acknowledges without waiting for the call that carries the ack: it
    /// returns once the ack is queued (waiting only while the queue is
    /// full), so the caller needs no task of its own per ack. The outcome is
    /// counted in [`Subscription::settle_stats`](crate::Subscription::settle_stats);
    /// a failed ack is logged, and its event comes back like any unacked
    /// one. This is Pub/Sub's `Ack()` beside its `AckWithResult()`.
    ///
    /// Fails only when the subscription is gone.
    pub async fn ack_queued(mut self) -> Result<()> {
        self.settled = true;
        let ack_id = std::mem::take(&mut self.ack_id);
        self.settler.queue(ack_id, Verdict::Ack).await
    }

    /// Negatively acknowledges: redeliver after the subscription's retry
    /// backoff (or dead-letter once attempts are used up).
    pub async fn nack(self) -> Result<()> {
        self.settle(Verdict::Nack {
            delay: None,
            reason: String::new(),
            dead_letter: false,
        })
        .await
    }

    /// Redeliver after `delay` (at most 10 minutes), overriding the retry
    /// policy for this delivery.
    pub async fn nack_after(self, delay: Duration) -> Result<()> {
        self.settle(Verdict::Nack {
            delay: Some(delay),
            reason: String::new(),
            dead_letter: false,
        })
        .await
    }

    /// Nack with a reason, stored in the dead-letter entry if this turns out
    /// to be the last attempt.
    pub async fn nack_with_reason(self, reason: impl Into<String>) -> Result<()> {
        self.settle(Verdict::Nack {
            delay: None,
            reason: reason.into(),
            dead_letter: false,
        })
        .await
    }

    /// Moves the event straight to the subscription's dead-letter queue: a
    /// permanent failure (invalid payload, ...) that retrying cannot fix.
    pub async fn dead_letter(self, reason: impl Into<String>) -> Result<()> {
        self.settle(Verdict::Nack {
            delay: None,
            reason: reason.into(),
            dead_letter: true,
        })
        .await
    }

    pub(crate) async fn settle(mut self, verdict: Verdict) -> Result<()> {
        self.settled = true;
        let ack_id = std::mem::take(&mut self.ack_id);
        self.settler.settle(ack_id, verdict).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.settled {
            self.settler.settle_detached(
                std::mem::take(&mut self.ack_id),
                Verdict::Nack {
                    delay: None,
                    reason: "dropped without ack or nack".into(),
                    dead_letter: false,
                },
            );
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("ack_id", &self.ack_id)
            .finish()
    }
}

/// One delivery from a subscription: the event and the lease to settle it.
///
/// Settle every delivery with [`ack`](Delivery::ack), [`nack`](Delivery::nack),
/// [`nack_after`](Delivery::nack_after) or
/// [`dead_letter`](Delivery::dead_letter). Use
/// [`into_parts`](Delivery::into_parts) to hand the message to one place and
/// keep the lease in another.
#[derive(Debug)]
pub struct Delivery {
    message: Message,
    lease: Lease,
}

impl Delivery {
    pub(crate) fn new(delivery: v1::Delivery, settler: Settler) -> Delivery {
        let event = delivery.event.unwrap_or_default();
        Delivery {
            message: Message::new(event, delivery.delivery_attempt),
            lease: Lease::new(delivery.ack_id, settler),
        }
    }

    /// The received event and its attempt number.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The event as sent by the server.
    pub fn event(&self) -> &v1::Event {
        self.message.event()
    }

    /// 1 for the first delivery, 2 for the first redelivery, and so on.
    pub fn attempt(&self) -> u32 {
        self.message.attempt()
    }

    /// The W3C trace context of the publish (the `traceparent` attribute):
    /// set by the producer, or taken by the server from the Publish call's
    /// `traceparent` metadata. Continue the producer's trace from it.
    pub fn traceparent(&self) -> Option<&str> {
        self.event()
            .attributes
            .get("traceparent")
            .map(String::as_str)
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        self.message.payload()
    }

    /// Decodes a JSON payload.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        self.message.json()
    }

    /// Decodes a protobuf payload.
    pub fn proto<M: prost::Message + Default>(&self) -> Result<M> {
        self.message.proto()
    }

    /// The server's ack id of this delivery.
    pub fn ack_id(&self) -> &str {
        self.lease.ack_id()
    }

    /// See [`Lease::ack`].
    pub async fn ack(self) -> Result<()> {
        self.lease.ack().await
    }

    /// See [`Lease::ack_queued`].
    pub async fn ack_queued(self) -> Result<()> {
        self.lease.ack_queued().await
    }

    /// See [`Lease::nack`].
    pub async fn nack(self) -> Result<()> {
        self.lease.nack().await
    }

    /// See [`Lease::nack_after`].
    pub async fn nack_after(self, delay: Duration) -> Result<()> {
        self.lease.nack_after(delay).await
    }

    /// See [`Lease::dead_letter`].
    pub async fn dead_letter(self, reason: impl Into<String>) -> Result<()> {
        self.lease.dead_letter(reason).await
    }

    /// Splits into the message and the lease.
    pub fn into_parts(self) -> (Message, Lease) {
        (self.message, self.lease)
    }
}

//! Deliveries to the members of a subscription, and how members settle them.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::types::StoredEvent;
use crate::BoxStream;

/// One leased event, sent to one member.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Arc<StoredEvent>,
    /// Names this lease in Ack, Nack and ModifyAckDeadline. Opaque to
    /// callers; the backend that issued it decodes it.
    pub ack_id: String,
    /// 1 for the first delivery.
    pub attempt: u32,
}

/// A member's place in a subscription: its id, and its deliveries in batches.
/// The stream ends (`None`) when the subscription is deleted, or yields an
/// error (shutting down, damaged data) and then ends. Dropping it leaves the
/// subscription; leases the member held come back after their deadline.
pub struct Membership {
    pub member_id: u64,
    pub deliveries: BoxStream<Result<Vec<Delivery>>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("member_id", &self.member_id)
            .finish_non_exhaustive()
    }
}

/// A member's bound on unsettled deliveries: `requested`, or `default` for
/// 0; more than `limit` is refused.
pub fn member_credit(requested: u32, default: u32, limit: u32) -> Result<u32> {
    if requested > limit {
        return Err(crate::Error::invalid(
            "max_in_flight",
            format!("{requested} exceeds the server limit of {limit}; use 0 for the default"),
        ));
    }
    Ok(match requested {
        0 => default,
        n => n,
    })
}

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

/// What a settle did not do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SettleOutcome {
    /// Ack ids (as given) whose lease had expired or moved on, so nothing
    /// was done for them.
    pub stale: Vec<String>,
}

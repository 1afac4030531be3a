//! Dead letters: events a subscription gave up on, kept for operators to
//! list, inspect, redrive or purge.

use crate::error::Result;
use crate::filter::any_type_matches;
use crate::limits::Limits;
use crate::types::{StoredEvent, UnixMillis};

/// One entry of a subscription's dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The entry's id in its queue: increasing, never reused.
    pub id: u64,
    pub event: StoredEvent,
    /// Delivery attempts made before it was dead-lettered.
    pub attempts: u32,
    /// How often it was redriven before.
    pub redrive_count: u32,
    pub first_delivery_ms: UnixMillis,
    pub last_delivery_ms: UnixMillis,
    pub dead_letter_ms: UnixMillis,
    /// The last nack reason, or why the lease ran out.
    pub reason: String,
}

/// Most bytes of entries (events plus their reasons) in one ListDeadLetters
/// page, whatever its page size: with the protobuf framing the response stays
/// under the 4 MiB that gRPC clients receive by default. A page always holds
/// at least one entry.
pub const MAX_PAGE_BYTES: usize = 3 << 20;

/// The reason of a dead letter whose last attempt ran out of time.
pub const DEADLINE_EXCEEDED: &str = "ack deadline exceeded";

/// The reason of a dead letter whose member's stream ended while it held
/// the lease of the last allowed attempt (a consumer that crashes on the
/// event, say).
pub const MEMBER_LEFT: &str = "member left with the lease";

impl DeadLetter {
    /// Bytes the entry adds to a page: its event and its reason, plus a
    /// margin for ids, times and framing.
    pub fn size_bytes(&self) -> usize {
        self.event.size_bytes() + self.reason.len() + 128
    }
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterQuery {
    /// Event type patterns (NATS wildcards); empty: any type.
    pub types: Vec<String>,
    /// Case-sensitive substring of the reason; empty: any reason.
    pub reason_contains: String,
    /// Dead-letter time range, start inclusive, end exclusive.
    pub start_ms: Option<UnixMillis>,
    pub end_ms: Option<UnixMillis>,
}

impl DeadLetterQuery {
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        let bytes = limits.check_type_patterns("filter.types", &self.types)?;
        limits.check_filter_bytes("filter", bytes + self.reason_contains.len())
    }

    pub fn matches(&self, dl: &DeadLetter) -> bool {
        any_type_matches(&self.types, &dl.event.event_type)
            && dl.reason.contains(&self.reason_contains)
            && self.start_ms.is_none_or(|s| dl.dead_letter_ms >= s)
            && self.end_ms.is_none_or(|e| dl.dead_letter_ms < e)
    }
}

/// The set of dead letters a purge or redrive selects.
#[derive(Debug, Clone)]
pub enum DeadLetterSelector {
    Ids(Vec<u64>),
    Filter(DeadLetterQuery),
    All,
}

/// One page of a dead-letter listing.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetter>,
    /// The id to continue after, when more may follow.
    pub next_after: Option<u64>,
}

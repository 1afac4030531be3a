//! Dead-letter queue administration: list, get, purge (and redrive, later).
//!
//! The actor appends entries; this side reads and deletes them. Deletions are
//! serialised with other admin changes by the broker's admin lock, so the
//! shared entry count stays exact.

use crate::delivery::dead_letter::DeadLetterEntry;
use crate::error::{Error, Result};
use crate::filter::any_type_matches;
use crate::keys::parse_dlq_key;
use crate::types::{StoredEvent, TopicId, UnixMillis};

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
    pub fn validate(&self, limits: &crate::limits::Limits) -> Result<()> {
        let bytes = limits.check_type_patterns("filter.types", &self.types)?;
        limits.check_filter_bytes("filter", bytes + self.reason_contains.len())
    }

    pub fn matches(&self, entry: &DeadLetterEntry, event: &StoredEvent) -> bool {
        any_type_matches(&self.types, &event.event_type)
            && entry.reason.contains(&self.reason_contains)
            && self.start_ms.is_none_or(|s| entry.dead_letter_ms >= s)
            && self.end_ms.is_none_or(|e| entry.dead_letter_ms < e)
    }
}

/// The set of dead letters a purge or redrive selects.
#[derive(Debug, Clone)]
pub enum DeadLetterSelector {
    Ids(Vec<u64>),
    Filter(DeadLetterQuery),
    All,
}

/// A decoded entry with its event.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub entry: DeadLetterEntry,
    pub event: StoredEvent,
}

/// Most bytes of entries (events plus their reasons) in one ListDeadLetters
/// page, whatever its page size: with the protobuf framing the response stays
/// under the 4 MiB that gRPC clients receive by default. A page always holds
/// at least one entry.
pub const MAX_PAGE_BYTES: usize = 3 << 20;

impl DeadLetter {
    /// Bytes the entry adds to a page: its event and its reason, plus a
    /// margin for ids, times and framing.
    pub fn size_bytes(&self) -> usize {
        self.event.size_bytes() + self.entry.reason.len() + 128
    }
}

/// Decodes a stored queue entry (its `dlq` key and value) with its event, the
/// event's checksum verified. Damage is `Corruption` / `CorruptMetadata`.
pub fn decode(topic: TopicId, key: &[u8], value: &[u8]) -> Result<DeadLetter> {
    let corrupt = |source| Error::Corruption {
        location: format!("dead letter {key:02x?}"),
        source,
    };
    let (_, seq) = parse_dlq_key(key).ok_or_else(|| Error::CorruptMetadata {
        location: format!("dead letter {key:02x?}"),
        reason: "malformed key".into(),
    })?;
    let entry = DeadLetterEntry::decode(seq, value).map_err(corrupt)?;
    let event = entry.event(topic).map_err(corrupt)?;
    Ok(DeadLetter { entry, event })
}

/// One dead letter by seq, if it exists. Blocking.
pub(crate) fn read(
    log: &crate::store::Log,
    sub: crate::types::SubscriptionId,
    topic: TopicId,
    seq: u64,
) -> Result<Option<DeadLetter>> {
    let mut found = None;
    log.scan_dlq(sub, seq, |k, v| {
        if parse_dlq_key(k).map(|(_, s)| s) == Some(seq) {
            found = Some(decode(topic, k, v));
        }
        false
    })?;
    found.transpose()
}

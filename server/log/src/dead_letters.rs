//! Stored dead letters: decoding a queue entry with its event, and reading one.
//!
//! The actor appends entries; this side reads and deletes them. Deletions are
//! serialised with other admin changes by the broker's admin lock, so the
//! shared entry count stays exact.

use crate::delivery::dead_letter::DeadLetterEntry;
use crate::error::{Error, Result};
use crate::keys::parse_dlq_key;
use crate::types::{StoredEvent, TopicId};

pub use eventbus_broker::dead_letter::{DeadLetter, MAX_PAGE_BYTES};

/// A decoded queue entry with its event: what redrive moves back.
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    pub entry: DeadLetterEntry,
    pub event: StoredEvent,
}

impl StoredDeadLetter {
    /// The entry as the contract reports it (without the stored record).
    pub fn public(self) -> DeadLetter {
        let e = self.entry;
        DeadLetter {
            id: e.seq,
            event: self.event,
            attempts: e.attempts,
            redrive_count: e.redrive_count,
            first_delivery_ms: e.first_delivery_ms,
            last_delivery_ms: e.last_delivery_ms,
            dead_letter_ms: e.dead_letter_ms,
            reason: e.reason,
        }
    }
}

/// Decodes a stored queue entry (its `dlq` key and value) with its event, the
/// event's checksum verified. Damage is `Corruption` / `CorruptMetadata`.
pub fn decode(topic: TopicId, key: &[u8], value: &[u8]) -> Result<StoredDeadLetter> {
    let corrupt = |source: crate::codec::CodecError| Error::Corruption {
        location: format!("dead letter {key:02x?}"),
        reason: source.to_string(),
    };
    let (_, seq) = parse_dlq_key(key).ok_or_else(|| Error::CorruptMetadata {
        location: format!("dead letter {key:02x?}"),
        reason: "malformed key".into(),
    })?;
    let entry = DeadLetterEntry::decode(seq, value).map_err(corrupt)?;
    let event = entry.event(topic).map_err(corrupt)?;
    Ok(StoredDeadLetter { entry, event })
}

/// One dead letter by seq, if it exists. Blocking.
pub(crate) fn read(
    log: &crate::store::Log,
    sub: crate::types::SubscriptionId,
    topic: TopicId,
    seq: u64,
) -> Result<Option<StoredDeadLetter>> {
    let mut found = None;
    log.scan_dlq(sub, seq, |k, v| {
        if parse_dlq_key(k).map(|(_, s)| s) == Some(seq) {
            found = Some(decode(topic, k, v));
        }
        false
    })?;
    found.transpose()
}

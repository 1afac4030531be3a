//! Dead-letter entries, stored in the `dlq` column family under
//! (subscription u32, seq u64) ([`crate::keys::dlq_key`]). Seqs grow with each
//! dead-lettering, so key order is dead-letter order and the first key is the
//! oldest entry.
//!
//! ```text
//! ver=1 u8 | partition u32 | offset u64 | attempts u32 | redrive_count u32
//!          | first_delivery_ms u64 | last_delivery_ms u64 | dead_letter_ms u64
//!          | reason (varint len + UTF-8) | record (sealed envelope, rest)
//! ```
//!
//! The event is kept as its sealed record envelope, CRC included, so a dead
//! letter is as verifiable as the log and independent of topic retention.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self, put_varint, CodecError, Reader};
use crate::types::{Offset, PartitionId, StoredEvent, TopicId, UnixMillis};

const VERSION: u8 = 1;
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterEntry {
    pub seq: u64,
    pub partition: PartitionId,
    pub offset: Offset,
    pub attempts: u32,
    pub redrive_count: u32,
    pub first_delivery_ms: UnixMillis,
    pub last_delivery_ms: UnixMillis,
    pub dead_letter_ms: UnixMillis,
    /// The last nack reason, or "ack deadline exceeded".
    pub reason: String,
    /// The sealed record envelope of the event.
    pub record: Bytes,
}

impl DeadLetterEntry {
    /// Re-seals `event` into a record envelope for storage in the DLQ.
    pub fn record_of(event: &StoredEvent) -> Bytes {
        let mut rec = codec::encode_record(&crate::types::NewEvent {
            key: event.key.clone(),
            event_type: event.event_type.clone(),
            payload: event.payload.clone(),
            content_type: event.content_type.clone(),
            attributes: event.attributes.clone(),
            idempotency_key: event.idempotency_key.clone(),
            event_time: event.event_time,
        });
        codec::seal_record(&mut rec, event.publish_time);
        rec.freeze()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::with_capacity(64 + self.reason.len() + self.record.len());
        b.put_u8(VERSION);
        b.put_u32(self.partition);
        b.put_u64(self.offset);
        b.put_u32(self.attempts);
        b.put_u32(self.redrive_count);
        b.put_u64(self.first_delivery_ms);
        b.put_u64(self.last_delivery_ms);
        b.put_u64(self.dead_letter_ms);
        put_varint(&mut b, self.reason.len() as u64);
        b.put_slice(self.reason.as_bytes());
        b.put_slice(&self.record);
        b.to_vec()
    }

    pub fn decode(seq: u64, value: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(value);
        let v = r.u8()?;
        if v != VERSION {
            return Err(CodecError::UnknownVersion(v));
        }
        let u32_ = |r: &mut Reader<'_>| -> Result<u32, CodecError> {
            Ok(u32::from_be_bytes(r.bytes(4)?.try_into().expect("4")))
        };
        let partition = u32_(&mut r)?;
        let offset = r.u64()?;
        let attempts = u32_(&mut r)?;
        let redrive_count = u32_(&mut r)?;
        let first_delivery_ms = r.u64()?;
        let last_delivery_ms = r.u64()?;
        let dead_letter_ms = r.u64()?;
        let reason = r.string()?;
        let record = Bytes::copy_from_slice(&value[r.pos..]);
        Ok(DeadLetterEntry {
            seq,
            partition,
            offset,
            attempts,
            redrive_count,
            first_delivery_ms,
            last_delivery_ms,
            dead_letter_ms,
            reason,
            record,
        })
    }

    /// The stored event, CRC-verified.
    pub fn event(&self, topic: TopicId) -> Result<StoredEvent, CodecError> {
        codec::decode_record(topic, self.partition, self.offset, self.record.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{dlq_key, parse_dlq_key};
    use crate::types::SubscriptionId;

    #[test]
    fn entries_round_trip_and_keep_the_event_verifiable() {
        let mut rec = codec::encode_record(&crate::types::NewEvent {
            event_type: "a.b".into(),
            payload: Bytes::from_static(b"poison"),
            ..Default::default()
        });
        codec::seal_record(&mut rec, 77);
        let e = DeadLetterEntry {
            seq: 9,
            partition: 2,
            offset: 40,
            attempts: 5,
            redrive_count: 1,
            first_delivery_ms: 1,
            last_delivery_ms: 2,
            dead_letter_ms: 3,
            reason: "validation failed".into(),
            record: rec.freeze(),
        };
        let back = DeadLetterEntry::decode(9, &e.encode()).unwrap();
        assert_eq!(back, e);
        let ev = back.event(TopicId(4)).unwrap();
        assert_eq!((ev.partition, ev.offset, ev.publish_time), (2, 40, 77));
        assert_eq!(&ev.payload[..], b"poison");
    }

    #[test]
    fn keys_order_by_seq_within_a_subscription() {
        assert!(dlq_key(SubscriptionId(1), 255) < dlq_key(SubscriptionId(1), 256));
        assert!(dlq_key(SubscriptionId(1), u64::MAX) < dlq_key(SubscriptionId(2), 0));
        assert_eq!(
            parse_dlq_key(&dlq_key(SubscriptionId(3), 7)),
            Some((SubscriptionId(3), 7))
        );
    }
}

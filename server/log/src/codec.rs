//! The on-disk record envelope, and the varint helpers the persisted state uses.
//!
//! ```text
//!  0        1            5                 13
//!  +--------+------------+-----------------+------------------------------------+
//!  | ver=1  | crc32c u32 | publish_ms u64  | body                               |
//!  +--------+------------+-----------------+------------------------------------+
//!            crc covers bytes 5..end (publish time and body)
//!
//!  body: flags u8 (bit 0: event_time present) [event_time u64]
//!        key, type, content_type, idempotency_key   (each: varint len + UTF-8)
//!        attribute count varint, then (key, value) pairs as above
//!        payload                                    (the rest, no length)
//! ```
//!
//! The publisher's handler encodes the body ([`encode_record`]) off the writer
//! thread; the writer only stamps the publish time and the checksum
//! ([`seal_record`]), so that publish times are assigned in offset order.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{NewEvent, Offset, PartitionId, StoredEvent, TopicId, UnixMillis};

pub const RECORD_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 13;
const FLAG_EVENT_TIME: u8 = 0b1;

/// Why a stored record (or other persisted state) could not be decoded.
/// Always means corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("record truncated")]
    Truncated,
    #[error("record holds invalid UTF-8")]
    InvalidUtf8,
    #[error("malformed encoding: {0}")]
    Malformed(&'static str),
}

/// Encodes `event` into an unsealed record: header space is reserved and zeroed.
pub fn encode_record(event: &NewEvent) -> BytesMut {
    let attrs_len: usize = event
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum();
    let mut buf = BytesMut::with_capacity(
        HEADER_LEN
            + 10
            + event.key.len()
            + event.event_type.len()
            + event.content_type.len()
            + event.idempotency_key.len()
            + attrs_len
            + event.payload.len()
            + 24,
    );
    buf.put_bytes(0, HEADER_LEN);
    buf[0] = RECORD_VERSION;
    match event.event_time {
        Some(t) => {
            buf.put_u8(FLAG_EVENT_TIME);
            buf.put_u64(t);
        }
        None => buf.put_u8(0),
    }
    put_str(&mut buf, &event.key);
    put_str(&mut buf, &event.event_type);
    put_str(&mut buf, &event.content_type);
    put_str(&mut buf, &event.idempotency_key);
    put_varint(&mut buf, event.attributes.len() as u64);
    for (k, v) in &event.attributes {
        put_str(&mut buf, k);
        put_str(&mut buf, v);
    }
    buf.put_slice(&event.payload);
    buf
}

/// Stamps the publish time and checksum into a record from [`encode_record`].
pub fn seal_record(record: &mut [u8], publish_ms: UnixMillis) {
    record[5..13].copy_from_slice(&publish_ms.to_be_bytes());
    let crc = crc32c::crc32c(&record[5..]);
    record[1..5].copy_from_slice(&crc.to_be_bytes());
}

/// Verifies and decodes a sealed record. `value` is shared, not copied: the payload
/// is a slice of it.
pub fn decode_record(
    topic_id: TopicId,
    partition: PartitionId,
    offset: Offset,
    value: Bytes,
) -> Result<StoredEvent, CodecError> {
    if value.len() < HEADER_LEN + 1 {
        return Err(CodecError::Truncated);
    }
    if value[0] != RECORD_VERSION {
        return Err(CodecError::UnknownVersion(value[0]));
    }
    let stored = u32::from_be_bytes(value[1..5].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&value[5..]);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    let publish_time = u64::from_be_bytes(value[5..13].try_into().expect("8 bytes"));
    let mut r = Reader {
        buf: &value,
        pos: HEADER_LEN,
    };
    let flags = r.u8()?;
    let event_time = if flags & FLAG_EVENT_TIME != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    let key = r.string()?;
    let event_type = r.string()?;
    let content_type = r.string()?;
    let idempotency_key = r.string()?;
    let attr_count = r.varint()?;
    let mut attributes = BTreeMap::new();
    for _ in 0..attr_count {
        let k = r.string()?;
        let v = r.string()?;
        attributes.insert(k, v);
    }
    let payload = value.slice(r.pos..);
    Ok(StoredEvent {
        topic_id,
        partition,
        offset,
        publish_time,
        key,
        event_type,
        payload,
        content_type,
        attributes,
        idempotency_key,
        event_time,
    })
}

/// Reads only the publish time of a sealed record (used by time seeks), after
/// verifying the checksum.
pub fn record_publish_time(value: &[u8]) -> Result<UnixMillis, CodecError> {
    if value.len() < HEADER_LEN {
        return Err(CodecError::Truncated);
    }
    let stored = u32::from_be_bytes(value[1..5].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&value[5..]);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    Ok(u64::from_be_bytes(
        value[5..13].try_into().expect("8 bytes"),
    ))
}

fn put_str(buf: &mut BytesMut, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.put_slice(s.as_bytes());
}

/// LEB128 unsigned varint.
pub fn put_varint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// A bounds-checked cursor over a byte slice.
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let bytes = self.bytes(8)?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(CodecError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(CodecError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Truncated)
    }

    pub fn string(&mut self) -> Result<String, CodecError> {
        let len = usize::try_from(self.varint()?).map_err(|_| CodecError::Truncated)?;
        let b = self.bytes(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError::InvalidUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewEvent {
        NewEvent {
            key: "user-1".into(),
            event_type: "order.created".into(),
            payload: Bytes::from_static(b"{\"id\":1}"),
            content_type: "application/json".into(),
            attributes: [("region".to_string(), "eu".to_string())].into(),
            idempotency_key: "idem-1".into(),
            event_time: Some(1_700_000_000_123),
        }
    }

    #[test]
    fn record_round_trips() {
        let ev = sample();
        let mut rec = encode_record(&ev);
        seal_record(&mut rec, 42);
        let got = decode_record(TopicId(1), 2, 3, rec.freeze()).unwrap();
        assert_eq!(got.publish_time, 42);
        assert_eq!(got.key, ev.key);
        assert_eq!(got.event_type, ev.event_type);
        assert_eq!(got.payload, ev.payload);
        assert_eq!(got.content_type, ev.content_type);
        assert_eq!(got.attributes, ev.attributes);
        assert_eq!(got.idempotency_key, ev.idempotency_key);
        assert_eq!(got.event_time, ev.event_time);
        assert_eq!(
            (got.topic_id, got.partition, got.offset),
            (TopicId(1), 2, 3)
        );
    }

    #[test]
    fn empty_event_round_trips() {
        let mut rec = encode_record(&NewEvent::default());
        seal_record(&mut rec, 0);
        let got = decode_record(TopicId(0), 0, 0, rec.freeze()).unwrap();
        assert!(got.payload.is_empty());
        assert_eq!(got.event_time, None);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut rec = encode_record(&sample());
        seal_record(&mut rec, 42);
        let rec = rec.freeze();
        for i in 1..rec.len() {
            let mut bad = rec.to_vec();
            bad[i] ^= 0x10;
            assert!(
                decode_record(TopicId(1), 0, 0, Bytes::from(bad)).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut rec = encode_record(&sample());
        seal_record(&mut rec, 1);
        rec[0] = 9;
        assert_eq!(
            decode_record(TopicId(1), 0, 0, rec.freeze()),
            Err(CodecError::UnknownVersion(9))
        );
    }

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(Reader::new(&b).varint().unwrap(), v);
        }
    }
}

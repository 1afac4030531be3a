//! Record batches: the value format of the `records` column family since
//! data-dir format 2.
//!
//! ```text
//!  0        1               5
//!  +--------+---------------+------------------------------------------------+
//!  | ver=2  | count u32 BE  | count × (len u32 BE, sealed record, see codec) |
//!  +--------+---------------+------------------------------------------------+
//!  key: record_key(topic, partition, base offset); record i has offset base + i
//! ```
//!
//! The writer puts the records one group commit adds to a partition into one
//! value (as Kafka's RecordBatch and Iggy's message batches do), so an event
//! costs a RocksDB memtable insert and WAL record per batch instead of one
//! each, and a reader takes a batch with one iterator step and one copy,
//! slicing the events out of it with `Bytes`. Every record keeps its own
//! envelope and checksum, so damage inside a batch is found per event, and a
//! damaged length or count fails the whole value as corruption.
//!
//! A value whose first byte is 1 is a single sealed record, as format 1 wrote
//! every event: a batch of one. Data dirs written before record batches are
//! read as they are, without a migration (see `store::open`).

use std::ops::Range;

use crate::codec::{CodecError, RECORD_VERSION};
use crate::types::Offset;

pub const BATCH_VERSION: u8 = 2;
const HEADER_LEN: usize = 5;
/// A batch stops growing past this many bytes, so a reader that needs one
/// event out of it copies at most this much and no value gets huge. A record
/// larger than this is a batch of its own.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// A batch being filled by the writer with consecutive offsets of one
/// partition.
pub struct BatchBuilder {
    base: Offset,
    count: u32,
    buf: Vec<u8>,
}

impl BatchBuilder {
    /// An empty batch whose first record will have offset `base`.
    pub fn new(base: Offset, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + capacity);
        buf.push(BATCH_VERSION);
        buf.extend_from_slice(&[0; 4]);
        BatchBuilder {
            base,
            count: 0,
            buf,
        }
    }

    pub fn base(&self) -> Offset {
        self.base
    }

    /// The offset the next record must have to join this batch.
    pub fn next_offset(&self) -> Offset {
        self.base + u64::from(self.count)
    }

    /// Whether a record of `len` bytes may still join (a batch is never
    /// refused its first record).
    pub fn has_room(&self, len: usize) -> bool {
        self.count == 0 || (self.buf.len() + 4 + len <= MAX_BATCH_BYTES && self.count < u32::MAX)
    }

    /// Appends a sealed record.
    pub fn push(&mut self, record: &[u8]) {
        self.buf
            .extend_from_slice(&(record.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(record);
        self.count += 1;
    }

    /// The finished value.
    pub fn finish(&mut self) -> &[u8] {
        self.buf[1..HEADER_LEN].copy_from_slice(&self.count.to_be_bytes());
        &self.buf
    }

    /// The records in it.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The value's buffer, once [`BatchBuilder::finish`]ed.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }
}

/// The records of one stored value, as byte ranges of it, in offset order.
/// Checks the framing only; each record's own checksum is checked when it
/// is decoded.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    value: &'a [u8],
    pos: usize,
    left: u32,
}

impl<'a> Records<'a> {
    /// Reads a value's header: a batch (format 2) or a single record
    /// (format 1).
    pub fn new(value: &'a [u8]) -> Result<Self, CodecError> {
        match value.first() {
            Some(&RECORD_VERSION) => Ok(Records {
                value,
                pos: 0,
                left: 1,
            }),
            Some(&BATCH_VERSION) => {
                let count = value
                    .get(1..HEADER_LEN)
                    .ok_or(CodecError::Truncated)?
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| CodecError::Truncated)?;
                if count == 0 {
                    return Err(CodecError::Malformed("empty record batch"));
                }
                Ok(Records {
                    value,
                    pos: HEADER_LEN,
                    left: count,
                })
            }
            Some(&v) => Err(CodecError::UnknownVersion(v)),
            None => Err(CodecError::Truncated),
        }
    }

    /// How many records are still to come: before iterating, all the value
    /// holds, as its header says.
    pub fn record_count(&self) -> u32 {
        self.left
    }

    /// The value's record count and its last record's range, checking its
    /// whole framing on the way.
    pub fn last(value: &'a [u8]) -> Result<(u32, Range<usize>), CodecError> {
        let records = Records::new(value)?;
        let count = records.record_count();
        let mut last = None;
        for r in records {
            last = Some(r?);
        }
        Ok((count, last.ok_or(CodecError::Truncated)?))
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Range<usize>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if self.value[0] == RECORD_VERSION {
            self.pos = self.value.len();
            return Some(Ok(0..self.value.len()));
        }
        let item = (|| {
            let len = self
                .value
                .get(self.pos..self.pos + 4)
                .ok_or(CodecError::Truncated)?;
            let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            let start = self.pos + 4;
            let end = start.checked_add(len).ok_or(CodecError::Truncated)?;
            if end > self.value.len() {
                return Err(CodecError::Truncated);
            }
            self.pos = end;
            if self.left == 0 && end != self.value.len() {
                return Err(CodecError::Malformed(
                    "bytes after the last record of a batch",
                ));
            }
            Ok(start..end)
        })();
        if item.is_err() {
            // Nothing after damaged framing can be trusted.
            self.left = 0;
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_record, encode_record, seal_record};
    use crate::types::{NewEvent, TopicId};
    use bytes::Bytes;

    fn record(payload: &'static str, publish_ms: u64) -> Vec<u8> {
        let mut r = encode_record(&NewEvent {
            payload: Bytes::from_static(payload.as_bytes()),
            ..Default::default()
        });
        seal_record(&mut r, publish_ms);
        r.to_vec()
    }

    fn batch(payloads: &[&'static str]) -> Vec<u8> {
        let mut b = BatchBuilder::new(10, 0);
        for (i, p) in payloads.iter().enumerate() {
            b.push(&record(p, i as u64));
        }
        b.finish().to_vec()
    }

    #[test]
    fn a_batch_round_trips_each_record_at_its_offset() {
        let value = Bytes::from(batch(&["a", "bb", "ccc"]));
        let ranges: Vec<_> = Records::new(&value).unwrap().map(Result::unwrap).collect();
        assert_eq!(ranges.len(), 3);
        for (i, (r, want)) in ranges.into_iter().zip(["a", "bb", "ccc"]).enumerate() {
            let ev = decode_record(TopicId(1), 0, 10 + i as u64, value.slice(r)).unwrap();
            assert_eq!(ev.payload, want.as_bytes());
            assert_eq!(ev.publish_time, i as u64);
        }
        let (count, last) = Records::last(&value).unwrap();
        assert_eq!(count, 3);
        assert_eq!(
            decode_record(TopicId(1), 0, 12, value.slice(last))
                .unwrap()
                .payload,
            "ccc"
        );
    }

    #[test]
    fn a_format_1_record_is_a_batch_of_one() {
        let value = record("old", 5);
        let ranges: Vec<_> = Records::new(&value).unwrap().map(Result::unwrap).collect();
        assert_eq!(ranges, vec![0..value.len()]);
        assert_eq!(Records::last(&value).unwrap(), (1, 0..value.len()));
    }

    #[test]
    fn damaged_framing_is_corruption_never_a_panic() {
        let good = batch(&["a", "bb", "ccc"]);
        // Every truncation and every flipped bit of the framing fails the
        // value or (inside a record) that record's checksum.
        for cut in 0..good.len() {
            let framing = Records::last(&good[..cut]);
            assert!(framing.is_err(), "cut at {cut} went unnoticed");
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                let bad = Bytes::from(bad);
                let decoded: Result<Vec<_>, _> = Records::new(&bad).and_then(|rs| {
                    rs.enumerate()
                        .map(|(j, r)| decode_record(TopicId(1), 0, j as u64, bad.slice(r?)))
                        .collect()
                });
                assert!(
                    decoded.is_err(),
                    "flip of bit {bit} at byte {i} went unnoticed"
                );
            }
        }
        assert!(
            Records::new(&[BATCH_VERSION, 0, 0, 0, 0]).is_err(),
            "empty batch"
        );
        assert!(Records::new(&[]).is_err());
        assert_eq!(
            Records::new(&[9]).unwrap_err(),
            CodecError::UnknownVersion(9)
        );
    }

    #[test]
    fn a_full_batch_refuses_more_but_never_its_first_record() {
        let mut b = BatchBuilder::new(0, 0);
        assert!(b.has_room(MAX_BATCH_BYTES * 2));
        b.push(&vec![0; MAX_BATCH_BYTES - 100]);
        assert!(!b.has_room(200));
        assert!(b.has_room(50));
        assert_eq!(b.next_offset(), 1);
    }
}

//! The two value formats of the `dedup` CF: a key entry's position, and a
//! group value's keys (see [`super`]).

use crate::codec::{put_varint, CodecError, Reader};
use crate::error::{Error, Result};
use crate::types::{Offset, PartitionId, UnixMillis};

/// The version byte that starts a group value.
pub(super) const GROUP_VALUE_V1: u8 = 1;

/// Where a key was first committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub partition: PartitionId,
    pub offset: Offset,
    pub publish_ms: UnixMillis,
}

impl Seen {
    pub(super) fn encode(&self) -> [u8; 20] {
        let mut v = [0u8; 20];
        v[0..4].copy_from_slice(&self.partition.to_be_bytes());
        v[4..12].copy_from_slice(&self.offset.to_be_bytes());
        v[12..20].copy_from_slice(&self.publish_ms.to_be_bytes());
        v
    }

    pub(super) fn decode(v: &[u8]) -> Option<Seen> {
        Some(Seen {
            partition: u32::from_be_bytes(v.get(0..4)?.try_into().ok()?),
            offset: u64::from_be_bytes(v.get(4..12)?.try_into().ok()?),
            publish_ms: u64::from_be_bytes(v.get(12..20)?.try_into().ok()?),
        })
    }
}

/// Appends one key to a group value: varint length, the key, varint
/// partition, offset u64, publish_ms u64.
pub(super) fn put_group_entry(value: &mut Vec<u8>, key: &str, seen: Seen) {
    put_varint(value, key.len() as u64);
    value.extend_from_slice(key.as_bytes());
    put_varint(value, u64::from(seen.partition));
    value.extend_from_slice(&seen.offset.to_be_bytes());
    value.extend_from_slice(&seen.publish_ms.to_be_bytes());
}

/// The keys of a group value, in order; a damaged value is DATA_LOSS.
pub(super) fn group_entries(value: &[u8]) -> Result<Vec<(&[u8], Seen)>> {
    let damaged = |_| Error::StorageCorruption("damaged idempotency-key group value".into());
    let mut r = Reader::new(value);
    if r.u8().map_err(damaged)? != GROUP_VALUE_V1 {
        return Err(damaged(CodecError::Truncated));
    }
    let mut entries = Vec::new();
    while !r.is_empty() {
        entries.push(group_entry(&mut r).map_err(damaged)?);
    }
    Ok(entries)
}

/// One key of a group value (see [`put_group_entry`]).
fn group_entry<'a>(r: &mut Reader<'a>) -> std::result::Result<(&'a [u8], Seen), CodecError> {
    let len = usize::try_from(r.varint()?).map_err(|_| CodecError::Truncated)?;
    let key = r.bytes(len)?;
    let partition = u32::try_from(r.varint()?).map_err(|_| CodecError::Truncated)?;
    let seen = Seen {
        partition,
        offset: r.u64()?,
        publish_ms: r.u64()?,
    };
    Ok((key, seen))
}

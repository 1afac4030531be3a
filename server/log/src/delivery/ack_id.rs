//! Ack ids: opaque to clients, they name exactly one lease.
//!
//! Layout before base64url (no padding): version u8 = 1, subscription u32,
//! partition u32, offset u64, lease generation u64, all big-endian (25 bytes,
//! 34 characters). The generation makes a stale ack id (from an expired lease, or
//! from an earlier server run) unable to settle a newer delivery of the same event.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::error::{Error, Result};
use crate::types::{Offset, PartitionId, SubscriptionId};

const VERSION: u8 = 1;
const LEN: usize = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckId {
    pub subscription: SubscriptionId,
    pub partition: PartitionId,
    pub offset: Offset,
    pub generation: u64,
}

impl AckId {
    pub fn encode(&self) -> String {
        let mut b = [0u8; LEN];
        b[0] = VERSION;
        b[1..5].copy_from_slice(&self.subscription.0.to_be_bytes());
        b[5..9].copy_from_slice(&self.partition.to_be_bytes());
        b[9..17].copy_from_slice(&self.offset.to_be_bytes());
        b[17..25].copy_from_slice(&self.generation.to_be_bytes());
        URL_SAFE_NO_PAD.encode(b)
    }

    pub fn decode(s: &str) -> Result<AckId> {
        let malformed = || {
            Error::invalid(
                "ack_ids",
                format!("{s:?} is not an ack id; pass the ack_id of a delivery unchanged"),
            )
        };
        let b = URL_SAFE_NO_PAD.decode(s).map_err(|_| malformed())?;
        if b.len() != LEN || b[0] != VERSION {
            return Err(malformed());
        }
        Ok(AckId {
            subscription: SubscriptionId(u32::from_be_bytes(b[1..5].try_into().expect("4"))),
            partition: u32::from_be_bytes(b[5..9].try_into().expect("4")),
            offset: u64::from_be_bytes(b[9..17].try_into().expect("8")),
            generation: u64::from_be_bytes(b[17..25].try_into().expect("8")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = AckId {
            subscription: SubscriptionId(7),
            partition: 3,
            offset: u64::MAX - 1,
            generation: 1 << 50,
        };
        let s = id.encode();
        assert_eq!(s.len(), 34);
        assert_eq!(AckId::decode(&s).unwrap(), id);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "!!!!", &"A".repeat(34), &"A".repeat(40)] {
            let err = AckId::decode(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidArgument {
                        field: "ack_ids",
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }
}

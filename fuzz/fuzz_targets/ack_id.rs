//! Ack ids (`AckId`): opaque strings that clients send back in Ack, Nack and
//! ModifyAckDeadline.
//!
//! Modes (first byte):
//! * 0, client bytes: `AckId::decode` on the rest (as UTF-8, lossily, since
//!   a protobuf string is UTF-8). A decoded id must re-encode to exactly the
//!   input (one id, one spelling: base64url without padding or stray
//!   bits); anything else is `InvalidArgument` on the `ack_ids` field.
//! * 1, encoder side: an arbitrary id round-trips and is 34 characters.
#![no_main]

use arbitrary::Arbitrary;
use eventbus_fuzz::{with_mode, within_budget, STORED_BYTES_FACTOR};
use eventbus_log::internals::ack_id::AckId;
use eventbus_log::{Error, SubscriptionId};

eventbus_fuzz::fuzz_modes!(seeds: seeds, modes: [client_bytes, encoder_side]);

fn client_bytes(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match within_budget(text.len(), STORED_BYTES_FACTOR, || AckId::decode(&text)) {
        Ok(id) => assert_eq!(id.encode(), text, "one ack id, one spelling"),
        Err(Error::InvalidArgument { field, reason }) => {
            assert_eq!(field, "ack_ids");
            assert!(!reason.is_empty());
        }
        Err(e) => panic!("a malformed ack id must be InvalidArgument: {e:?}"),
    }
}

#[derive(Debug, Arbitrary)]
struct Id {
    subscription: u32,
    partition: u32,
    offset: u64,
    generation: u64,
}

fn encoder_side(data: &[u8]) {
    let Some(id) = eventbus_fuzz::structured::<Id>(data) else {
        return;
    };
    let id = AckId {
        subscription: SubscriptionId(id.subscription),
        partition: id.partition,
        offset: id.offset,
        generation: id.generation,
    };
    let text = id.encode();
    assert_eq!(text.len(), 34);
    assert_eq!(AckId::decode(&text).expect("an encoded id decodes"), id);
}

/// Ack ids as deliveries carry them.
fn seeds() -> Vec<Vec<u8>> {
    [
        AckId {
            subscription: SubscriptionId(7),
            partition: 3,
            offset: 12_345,
            generation: 1,
        },
        AckId {
            subscription: SubscriptionId(u32::MAX),
            partition: 0,
            offset: u64::MAX - 1,
            generation: 1 << 50,
        },
    ]
    .iter()
    .map(|id| with_mode(0, id.encode().as_bytes()))
    .collect()
}

//! Dead-letter queue entries (`DeadLetterEntry`, also the format of redrive
//! entries) and the queue reader's `dead_letters::decode`, which checks the
//! key, the entry and the event's checksum together.
//!
//! Modes (first byte):
//! * 0, stored bytes: the next byte says how many of the following bytes
//!   are the key (`n % 16`), the rest is the value. Both decoders must not
//!   panic; a decoded entry must round-trip through `encode`, and a damaged
//!   one is `Corruption` or `CorruptMetadata` (DATA_LOSS on the wire).
//! * 1, encoder side: an arbitrary entry holding an arbitrary event is
//!   encoded and decoded through the reader; entry and event must survive.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use eventbus_fuzz::{with_mode, within_budget, ArbEvent, STORED_BYTES_FACTOR};
use eventbus_log::internals::codec::{encode_record, seal_record};
use eventbus_log::internals::dead_letter::DeadLetterEntry;
use eventbus_log::internals::dead_letters;
use eventbus_log::internals::keys::dlq_key;
use eventbus_log::{Error, NewEvent, SubscriptionId, TopicId};

const TOPIC: TopicId = TopicId(5);

eventbus_fuzz::fuzz_modes!(seeds: seeds, modes: [stored_bytes, encoder_side]);

fn stored_bytes(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(n % 16).min(rest.len()));
    let entry = within_budget(value.len(), STORED_BYTES_FACTOR, || {
        DeadLetterEntry::decode(42, value)
    });
    if let Ok(entry) = &entry {
        assert_eq!(
            DeadLetterEntry::decode(42, &entry.encode()).as_ref(),
            Ok(entry)
        );
    }
    let read = within_budget(data.len(), STORED_BYTES_FACTOR, || {
        dead_letters::decode(TOPIC, key, value)
    });
    match read {
        Ok(dl) => {
            let entry = entry.expect("the reader accepted an entry the entry decoder rejects");
            assert_eq!(dl.entry.record, entry.record);
            assert_eq!(dl.entry.reason, entry.reason);
            assert_eq!(
                (dl.event.partition, dl.event.offset),
                (entry.partition, entry.offset)
            );
        }
        Err(e) => assert!(
            matches!(e, Error::Corruption { .. } | Error::CorruptMetadata { .. }),
            "damaged stored bytes must be reported as corruption: {e:?}"
        ),
    }
}

#[derive(Debug, Arbitrary)]
struct EncoderInput {
    subscription: u32,
    seq: u64,
    partition: u32,
    offset: u64,
    attempts: u32,
    redrive_count: u32,
    first_delivery_ms: u64,
    last_delivery_ms: u64,
    dead_letter_ms: u64,
    publish_ms: u64,
    reason: String,
    event: ArbEvent,
}

fn encoder_side(data: &[u8]) {
    let Some(input) = eventbus_fuzz::structured::<EncoderInput>(data) else {
        return;
    };
    let (event, record) = input.event.seal(input.publish_ms);
    let entry = DeadLetterEntry {
        seq: input.seq,
        partition: input.partition,
        offset: input.offset,
        attempts: input.attempts,
        redrive_count: input.redrive_count,
        first_delivery_ms: input.first_delivery_ms,
        last_delivery_ms: input.last_delivery_ms,
        dead_letter_ms: input.dead_letter_ms,
        reason: input.reason,
        record,
    };
    let key = dlq_key(SubscriptionId(input.subscription), input.seq);
    let dl = dead_letters::decode(TOPIC, &key, &entry.encode()).expect("an encoded entry decodes");
    assert_eq!(dl.entry, entry);
    let position = (TOPIC, input.partition, input.offset);
    assert_eq!(
        dl.event,
        eventbus_fuzz::stored(&event, position, input.publish_ms)
    );
    // The stored record is the sealed event, byte for byte.
    assert_eq!(DeadLetterEntry::record_of(&dl.event), entry.record);
}

/// Entries as the delivery engine writes them: (key length, key, value).
fn seeds() -> Vec<Vec<u8>> {
    let mut record = encode_record(&eventbus_fuzz::sample_event());
    seal_record(&mut record, 1_700_000_000_000);
    let entry = DeadLetterEntry {
        seq: 9,
        partition: 2,
        offset: 40,
        attempts: 5,
        redrive_count: 1,
        first_delivery_ms: 1_700_000_000_100,
        last_delivery_ms: 1_700_000_000_200,
        dead_letter_ms: 1_700_000_000_300,
        reason: "validation failed".into(),
        record: record.freeze(),
    };
    let mut empty_record = encode_record(&NewEvent::default());
    seal_record(&mut empty_record, 0);
    let bare = DeadLetterEntry {
        reason: String::new(),
        record: Bytes::from(empty_record.to_vec()),
        ..entry.clone()
    };
    [entry, bare]
        .iter()
        .map(|e| {
            let key = dlq_key(SubscriptionId(3), e.seq);
            let mut input = vec![key.len() as u8];
            input.extend_from_slice(&key);
            input.extend_from_slice(&e.encode());
            with_mode(0, &input)
        })
        .collect()
}

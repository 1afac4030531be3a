//! The record envelope (`eventbus_log::internals::codec`): every event in the log and in
//! the dead-letter queue is one.
//!
//! Modes (first byte):
//! * 0, stored bytes: `decode_record` and `record_publish_time` on the rest,
//!   as read from RocksDB. Only a checksum-valid input gets past the header.
//! * 1, sealed body: the rest is a record body; the target stamps a header
//!   and checksum, so the fuzzer explores the body parser behind the CRC.
//! * 2, encoder side: an arbitrary event is encoded, sealed and decoded (all
//!   fields must survive), then one bit of it is flipped (must be rejected).
//! * 3, stored value: the rest is a `records` value (`internals::batch`: a
//!   record batch, or a format-1 single record); its framing and each record
//!   it frames are decoded, as a read does.
//! * 4, batch encoder side: arbitrary events are sealed into one batch and
//!   read back (every event at its offset), then one bit of the batch is
//!   flipped (its framing or a record's checksum must reject it).
//!
//! In modes 0 and 1 a decoded event must re-encode, as the dead-letter queue
//! does (`DeadLetterEntry::record_of`), to a record that decodes to the same
//! event.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use eventbus_fuzz::{with_mode, within_budget, ArbEvent, STORED_BYTES_FACTOR};
use eventbus_log::internals::batch::{BatchBuilder, Records};
use eventbus_log::internals::codec::{
    decode_record, encode_record, record_publish_time, seal_record, HEADER_LEN,
};
use eventbus_log::internals::dead_letter::DeadLetterEntry;
use eventbus_log::{NewEvent, StoredEvent, TopicId};

const TOPIC: TopicId = TopicId(7);
const PARTITION: u32 = 3;
const OFFSET: u64 = 11;

eventbus_fuzz::fuzz_modes!(seeds: seeds, modes: [stored_bytes, sealed_body, encoder_side, stored_value, batch_encoder_side]);

fn stored_bytes(value: &[u8]) {
    let bytes = Bytes::copy_from_slice(value);
    let decoded = within_budget(value.len(), STORED_BYTES_FACTOR, || {
        decode_record(TOPIC, PARTITION, OFFSET, bytes)
    });
    let publish_time = record_publish_time(value);
    if let Ok(event) = decoded {
        assert_eq!(publish_time, Ok(event.publish_time));
        re_encodes(&event);
    }
}

fn sealed_body(body: &[u8]) {
    let mut record = vec![0u8; HEADER_LEN];
    record[0] = eventbus_log::internals::codec::RECORD_VERSION;
    record.extend_from_slice(body);
    seal_record(&mut record, 1_700_000_000_000);
    stored_bytes(&record);
}

/// A decoded event re-encodes to a record that decodes to the same event.
fn re_encodes(event: &StoredEvent) {
    let again = DeadLetterEntry::record_of(event);
    let back = decode_record(TOPIC, PARTITION, OFFSET, again).expect("a re-encoded record decodes");
    assert_eq!(&back, event);
}

#[derive(Debug, Arbitrary)]
struct EncoderInput {
    event: ArbEvent,
    publish_ms: u64,
    flip_bit: usize,
}

fn encoder_side(data: &[u8]) {
    let Some(input) = eventbus_fuzz::structured::<EncoderInput>(data) else {
        return;
    };
    let (event, record) = input.event.seal(input.publish_ms);
    let got =
        decode_record(TOPIC, PARTITION, OFFSET, record.clone()).expect("an encoded event decodes");
    assert_eq!(
        got,
        eventbus_fuzz::stored(&event, (TOPIC, PARTITION, OFFSET), input.publish_ms)
    );
    assert_eq!(record_publish_time(&record), Ok(input.publish_ms));

    let bit = input.flip_bit % (record.len() * 8);
    let mut damaged = record.to_vec();
    damaged[bit / 8] ^= 1 << (bit % 8);
    assert!(
        decode_record(TOPIC, PARTITION, OFFSET, Bytes::from(damaged)).is_err(),
        "a flip of bit {bit} went unnoticed"
    );
}

fn stored_value(value: &[u8]) {
    let bytes = Bytes::copy_from_slice(value);
    let Ok(records) = Records::new(value) else {
        return;
    };
    let count = records.record_count();
    let mut framed = 0u32;
    for range in records {
        let Ok(range) = range else {
            return;
        };
        framed += 1;
        let record = bytes.slice(range);
        let decoded = within_budget(record.len(), STORED_BYTES_FACTOR, || {
            decode_record(TOPIC, PARTITION, OFFSET, record)
        });
        if let Ok(event) = decoded {
            re_encodes(&event);
        }
    }
    assert_eq!(framed, count, "a value framed whole holds its count");
}

#[derive(Debug, Arbitrary)]
struct BatchInput {
    events: Vec<ArbEvent>,
    publish_ms: u64,
    flip_bit: usize,
}

/// Every record of `value`, decoded at consecutive offsets from `OFFSET`.
fn read_batch(
    value: &Bytes,
) -> Result<Vec<StoredEvent>, eventbus_log::internals::codec::CodecError> {
    Records::new(value)?
        .zip(OFFSET..)
        .map(|(range, offset)| decode_record(TOPIC, PARTITION, offset, value.slice(range?)))
        .collect()
}

fn batch_encoder_side(data: &[u8]) {
    let Some(input) = eventbus_fuzz::structured::<BatchInput>(data) else {
        return;
    };
    let mut batch = BatchBuilder::new(OFFSET, 0);
    let mut want = Vec::new();
    for (event, offset) in input.events.into_iter().zip(OFFSET..) {
        let (event, record) = event.seal(input.publish_ms);
        if !batch.has_room(record.len()) {
            break;
        }
        batch.push(&record);
        want.push(eventbus_fuzz::stored(
            &event,
            (TOPIC, PARTITION, offset),
            input.publish_ms,
        ));
    }
    if want.is_empty() {
        return;
    }
    let value = Bytes::copy_from_slice(batch.finish());
    assert_eq!(read_batch(&value).expect("a sealed batch reads back"), want);

    let bit = input.flip_bit % (value.len() * 8);
    let mut damaged = value.to_vec();
    damaged[bit / 8] ^= 1 << (bit % 8);
    assert!(
        read_batch(&Bytes::from(damaged)).is_err(),
        "a flip of bit {bit} of a batch went unnoticed"
    );
}

/// Records of real events, as stored.
fn seeds() -> Vec<Vec<u8>> {
    let sealed = |event: &NewEvent, publish_ms: u64| {
        let mut r = encode_record(event);
        seal_record(&mut r, publish_ms);
        r.to_vec()
    };
    let full = eventbus_fuzz::sample_event();
    let empty = NewEvent::default();
    vec![
        with_mode(0, &sealed(&full, 1_700_000_000_456)),
        with_mode(0, &sealed(&empty, 0)),
        with_mode(1, &sealed(&full, 1)[HEADER_LEN..]),
        with_mode(1, &sealed(&empty, 1)[HEADER_LEN..]),
        with_mode(3, &{
            let mut batch = BatchBuilder::new(OFFSET, 0);
            batch.push(&sealed(&full, 5));
            batch.push(&sealed(&empty, 6));
            batch.finish().to_vec()
        }),
    ]
}

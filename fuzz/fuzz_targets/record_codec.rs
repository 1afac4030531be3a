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
//!
//! In modes 0 and 1 a decoded event must re-encode, as the dead-letter queue
//! does (`DeadLetterEntry::record_of`), to a record that decodes to the same
//! event.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use eventbus_fuzz::{with_mode, within_budget, ArbEvent, STORED_BYTES_FACTOR};
use eventbus_log::internals::codec::{
    decode_record, encode_record, record_publish_time, seal_record, HEADER_LEN,
};
use eventbus_log::internals::dead_letter::DeadLetterEntry;
use eventbus_log::{NewEvent, StoredEvent, TopicId};

const TOPIC: TopicId = TopicId(7);
const PARTITION: u32 = 3;
const OFFSET: u64 = 11;

eventbus_fuzz::fuzz_modes!(seeds: seeds, modes: [stored_bytes, sealed_body, encoder_side]);

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
    ]
}

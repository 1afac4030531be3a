//! The RocksDB key layout (`eventbus_log::internals::keys`) and the record envelope
//! (`eventbus_log::internals::codec`), in nanoseconds per operation. Pure CPU, no I/O.
//!
//! * `keys/record_key/{encode,parse}`: the 16-byte `records` key
//!   (topic id, partition, offset; big-endian so keys sort by offset).
//! * `keys/time_index_key/{encode,parse}`: the 24-byte `time_index` key.
//! * `codec/{encode_seal,decode}/256B`: a record as the writer stores it
//!   (encode + publish time + CRC32C) and as readers decode it (CRC check +
//!   fields; the payload is a shared slice, not a copy).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use eventbus_benches::events;
use eventbus_log::internals::{codec, keys};
use eventbus_log::TopicId;

fn key_layout(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let (topic, partition) = (TopicId(7), 3u32);
    let mut offset = 0u64;
    group.bench_function("record_key/encode", |b| {
        b.iter(|| {
            offset = offset.wrapping_add(1);
            keys::record_key(black_box(topic), black_box(partition), black_box(offset))
        })
    });
    let record = keys::record_key(topic, partition, 123_456_789);
    group.bench_function("record_key/parse", |b| {
        b.iter(|| keys::parse_record_key(black_box(&record[..])))
    });
    let mut ms = 1_700_000_000_000u64;
    group.bench_function("time_index_key/encode", |b| {
        b.iter(|| {
            ms = ms.wrapping_add(1);
            keys::time_index_key(
                black_box(topic),
                black_box(partition),
                black_box(ms),
                black_box(42),
            )
        })
    });
    let index = keys::time_index_key(topic, partition, 1_700_000_000_000, 42);
    group.bench_function("time_index_key/parse", |b| {
        b.iter(|| keys::parse_time_index_key(black_box(&index[..])))
    });
    group.finish();
}

fn record_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let event = events(1, 256).remove(0);
    group.bench_function("encode_seal/256B", |b| {
        b.iter(|| {
            let mut record = codec::encode_record(black_box(&event));
            codec::seal_record(&mut record, black_box(1_700_000_000_000));
            record
        })
    });
    let mut record = codec::encode_record(&event);
    codec::seal_record(&mut record, 1_700_000_000_000);
    let sealed: Bytes = record.freeze();
    group.bench_function("decode/256B", |b| {
        b.iter(|| {
            codec::decode_record(TopicId(7), 3, 42, black_box(sealed.clone())).expect("decode")
        })
    });
    group.finish();
}

criterion_group!(benches, key_layout, record_codec);
criterion_main!(benches);

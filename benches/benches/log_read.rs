//! Reads from a pre-filled single-partition log (100 000 events of 256 B;
//! 2 000 in test mode).
//!
//! * `read/sequential/batch_1024`: `Log::read` of 1024 consecutive events
//!   (one RocksDB iterator seek, then `next` + record decode per event), from a
//!   rolling start offset; events per second.
//! * `time_lookup/offset_for_time`: `Log::offset_for_time` for a pseudo-random
//!   time within the log: a `seek_for_prev` in the sparse time index (one entry
//!   per partition per 100 ms), then a forward scan of the records of at most
//!   one index interval. Its cost follows the events per 100 ms of publish
//!   time, so the fill is paced (batches of 200 every ~10 ms, about 2 000
//!   events per index interval); the fixture prints the density it got.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventbus_benches::{events, quick, runtime, size, TempLog};
use eventbus_log::internals::TopicState;
use eventbus_log::Durability;

const FILL_BATCH: usize = 200;
const READ_BATCH: usize = 1024;

struct Filled {
    log: TempLog,
    topic: Arc<TopicState>,
    events: u64,
    first_ms: u64,
    last_ms: u64,
}

fn fill(rt: &tokio::runtime::Runtime) -> Filled {
    let n = size(100_000, 2_000);
    let log = TempLog::open(Durability::Buffered);
    let topic = log.topic(rt, "bench", 1);
    let batch = events(FILL_BATCH, 256);
    rt.block_on(async {
        for _ in 0..n / FILL_BATCH {
            log.log.append(&topic, &batch).await.expect("append");
            if !quick() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let n = (n / FILL_BATCH * FILL_BATCH) as u64;
    let at = |offset| {
        log.log
            .read(&topic, 0, offset, 1, usize::MAX)
            .expect("read")[0]
            .publish_time
    };
    let (first_ms, last_ms) = (at(0), at(n - 1));
    let intervals = ((last_ms - first_ms) / 100).max(1);
    eprintln!(
        "log_read fixture: {n} events over {} ms of publish time, ~{} events per 100 ms index interval",
        last_ms - first_ms,
        n / intervals
    );
    Filled {
        log,
        topic,
        events: n,
        first_ms,
        last_ms,
    }
}

fn read(c: &mut Criterion) {
    let rt = runtime();
    let mut fixture: Option<Filled> = None;

    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(READ_BATCH as u64));
    let mut from = 0u64;
    group.bench_function(format!("sequential/batch_{READ_BATCH}"), |b| {
        let f = fixture.get_or_insert_with(|| fill(&rt));
        let last_start = f.events.saturating_sub(READ_BATCH as u64);
        b.iter(|| {
            let got = f
                .log
                .log
                .read(&f.topic, 0, from, READ_BATCH, usize::MAX)
                .expect("read");
            from = if from + (READ_BATCH as u64) > last_start {
                0
            } else {
                from + READ_BATCH as u64
            };
            got
        });
    });
    group.finish();

    let mut group = c.benchmark_group("time_lookup");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    group.bench_function("offset_for_time", |b| {
        let f = fixture.get_or_insert_with(|| fill(&rt));
        let span = f.last_ms - f.first_ms + 1;
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ms = f.first_ms + x % span;
            f.log
                .log
                .offset_for_time(&f.topic, 0, ms)
                .expect("offset_for_time")
        });
    });
    group.finish();

    if let Some(f) = fixture {
        f.log.close();
    }
}

criterion_group!(benches, read);
criterion_main!(benches);

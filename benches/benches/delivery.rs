//! The delivery engine's dispatch + ack path through `LogBroker`, without gRPC:
//! events per second from the log to a member and back as acks.
//!
//! A 4-partition topic is pre-filled with 20 000 events of 256 B (500 in test
//! mode). Each iteration creates a new subscription at the earliest position
//! (not timed), then times: join as one member with `max_in_flight` 10 000
//! (the server's limit), receive every batch and ack it with one `settle`
//! call per batch (ack ids encoded and decoded as a gRPC client would pass
//! them), until every event is acked. The subscription is deleted afterwards
//! (not timed). This covers the actor's log reads, lease bookkeeping, batch
//! hand-off, ack decoding and settle, and the lazy ack-state flush.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventbus_benches::{events, runtime, size};
use eventbus_log::delivery::SettleOp;
use eventbus_log::{Durability, LogBroker, NewSubscription, Options, TopicConfig};

const TOPIC: &str = "bench";
const MAX_IN_FLIGHT: u32 = 10_000;
const PUBLISH_BATCH: usize = 500;

struct Fixture {
    broker: LogBroker,
    dir: tempfile::TempDir,
    events: u64,
    next_sub: u64,
}

fn fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    let n = size(20_000, 500);
    assert_eq!(n % PUBLISH_BATCH, 0);
    let dir = tempfile::Builder::new()
        .prefix("eventbus-bench-")
        .tempdir()
        .expect("temp dir");
    let mut options = Options::new(dir.path());
    options.durability = Durability::Buffered;
    options.retention_interval = Duration::from_secs(3600);
    let broker = rt.block_on(async {
        let broker = LogBroker::open(options).await.expect("open broker");
        broker
            .create_topic(
                TOPIC,
                TopicConfig {
                    partitions: 4,
                    ..Default::default()
                },
            )
            .await
            .expect("create topic");
        let batch = events(PUBLISH_BATCH, 256);
        for _ in 0..n / PUBLISH_BATCH {
            broker.publish(TOPIC, &batch).await.expect("publish");
        }
        broker
    });
    Fixture {
        broker,
        dir,
        events: n as u64,
        next_sub: 0,
    }
}

/// Delivers and acks every event of the topic once through a new
/// subscription; returns the time from joining to the last ack.
async fn drain(f: &mut Fixture) -> Duration {
    f.next_sub += 1;
    let sub = format!("s{}", f.next_sub);
    f.broker
        .create_subscription(TOPIC, &sub, NewSubscription::default())
        .await
        .expect("create subscription");

    let start = Instant::now();
    let mut member = f
        .broker
        .subscribe(TOPIC, &sub, MAX_IN_FLIGHT)
        .await
        .expect("subscribe");
    let mut acked = 0u64;
    while acked < f.events {
        let batch = member.recv().await.expect("stream open").expect("batch");
        let ids: Vec<String> = batch.iter().map(|d| d.ack_id.encode()).collect();
        f.broker
            .settle(TOPIC, &sub, SettleOp::Ack, &ids)
            .await
            .expect("ack");
        acked += batch.len() as u64;
    }
    let elapsed = start.elapsed();

    drop(member);
    f.broker
        .delete_subscription(TOPIC, &sub)
        .await
        .expect("delete subscription");
    elapsed
}

fn delivery(c: &mut Criterion) {
    let rt = runtime();
    let mut fx: Option<Fixture> = None;
    let events = size(20_000, 500) as u64;

    let mut group = c.benchmark_group("delivery");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(events));
    group.bench_function(format!("deliver_ack/{events}_events"), |b| {
        let f = fx.get_or_insert_with(|| fixture(&rt));
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += drain(f).await;
                }
                total
            })
        });
    });
    group.finish();

    if let Some(Fixture { broker, dir, .. }) = fx {
        rt.block_on(broker.shutdown());
        drop(dir);
    }
}

criterion_group!(benches, delivery);
criterion_main!(benches);

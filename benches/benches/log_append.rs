//! Append throughput of the log (`Log::append`, through the group-commit
//! writer thread), in events per second.
//!
//! * `append/{fsync,buffered}/{256B,4KiB}/batch_{1,64,1024}`: one appender,
//!   one `append` call per iteration with a batch of that many events.
//! * `concurrent/{fsync,buffered}/appenders_{1,8,64}`: that many tasks append
//!   batches of one 256 B event at once; the writer folds whatever is queued
//!   into one write + one WAL sync (group commit), so fsync-mode throughput
//!   grows with concurrency although each append still waits for an fsync.
//!
//! In fsync mode every append waits for a WAL fsync (~2.5-5 ms on the
//! benchmark machine), so batch 1 manages a few hundred appends per second.
//! Sample counts (10) and measurement times (2 s) are kept small so the whole
//! suite runs in a few minutes; criterion's confidence intervals say how
//! noisy each number is. Each benchmark gets a fresh data dir.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventbus_benches::{events, runtime, TempLog};
use eventbus_log::internals::TopicState;
use eventbus_log::Durability;

/// Partitions of the benchmark topic (the server default).
const PARTITIONS: u32 = 4;

fn append(c: &mut Criterion) {
    let rt = runtime();
    for durability in [Durability::Fsync, Durability::Buffered] {
        let mut group = c.benchmark_group(format!("append/{durability}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for (payload, label) in [(256, "256B"), (4096, "4KiB")] {
            for batch in [1usize, 64, 1024] {
                let evs = events(batch, payload);
                let mut fixture: Option<(TempLog, Arc<TopicState>)> = None;
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_function(format!("{label}/batch_{batch}"), |b| {
                    let (log, topic) = fixture.get_or_insert_with(|| {
                        let log = TempLog::open(durability);
                        let topic = log.topic(&rt, "bench", PARTITIONS);
                        (log, topic)
                    });
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let start = Instant::now();
                            for _ in 0..iters {
                                log.log.append(topic, &evs).await.expect("append");
                            }
                            start.elapsed()
                        })
                    });
                });
                if let Some((log, _)) = fixture {
                    log.close();
                }
            }
        }
        group.finish();
    }
}

fn concurrent(c: &mut Criterion) {
    let rt = runtime();
    let evs = Arc::new(events(1, 256));
    for durability in [Durability::Fsync, Durability::Buffered] {
        let mut group = c.benchmark_group(format!("concurrent/{durability}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for appenders in [1usize, 8, 64] {
            let mut fixture: Option<(TempLog, Arc<TopicState>)> = None;
            group.throughput(Throughput::Elements(appenders as u64));
            group.bench_function(format!("appenders_{appenders}"), |b| {
                let (log, topic) = fixture.get_or_insert_with(|| {
                    let log = TempLog::open(durability);
                    let topic = log.topic(&rt, "bench", PARTITIONS);
                    (log, topic)
                });
                // One iteration = every appender appends one event; the
                // appenders run concurrently for `iters` rounds each.
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        let tasks: Vec<_> = (0..appenders)
                            .map(|_| {
                                let (log, topic, evs) =
                                    (log.log.clone(), topic.clone(), evs.clone());
                                tokio::spawn(async move {
                                    for _ in 0..iters {
                                        log.append(&topic, &evs).await.expect("append");
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("appender task");
                        }
                        start.elapsed()
                    })
                });
            });
            if let Some((log, _)) = fixture {
                log.close();
            }
        }
        group.finish();
    }
}

criterion_group!(benches, append, concurrent);
criterion_main!(benches);

//! The process-wide Prometheus recorder.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use super::names::*;

/// Seconds: 100 µs .. 60 s, roughly ×2.5 per bucket (fsync latencies on a
/// slow disk land in the 2-10 ms buckets).
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Events per group commit: 1 .. 16 Ki.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the histograms' recorded samples are folded into their
/// buckets. The exporter keeps every sample until then: without this, a
/// server nobody scrapes grew by 24 bytes per delivery and per publish
/// (+215 MiB of RSS over 3M events published and consumed), and the first
/// scrape after that spent 63 ms draining them on an async worker. Once a
/// second, on a thread of its own, a drain holds at most a second of samples.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Installs the recorder once per process and returns its handle. Servers
/// embedded in one process (tests) share it.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(COMMIT_BATCH_EVENTS.into()), BATCH_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(WAL_SYNC_EVENTS.into()), BATCH_BUCKETS)?
        // Gauges of deleted subscriptions disappear; counters stay, so a
        // quiet topic's rate() never sees a reset.
        .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(300)))
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_ok() {
        describe();
        spawn_upkeep(handle.clone())?;
    }
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Folds the histograms' samples into their buckets every
/// [`UPKEEP_EVERY`], for the life of the process (the recorder is global).
fn spawn_upkeep(handle: PrometheusHandle) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("eventbus-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        })?;
    Ok(())
}

fn describe() {
    use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h};
    c!(
        PUBLISHED_EVENTS,
        Unit::Count,
        "Events stored by Publish (duplicates excluded), per topic."
    );
    c!(
        PUBLISHED_BYTES,
        Unit::Bytes,
        "Payload bytes stored by Publish, per topic."
    );
    h!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Publish RPC latency, from request decoded to response."
    );
    h!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Storage group commit latency, including the WAL fsync."
    );
    h!(
        COMMIT_BATCH_EVENTS,
        Unit::Count,
        "Events written by one group commit."
    );
    h!(
        WAL_SYNC_DURATION,
        Unit::Seconds,
        "One WAL sync (write and fdatasync) in fsync mode; the count is the number of syncs."
    );
    h!(
        WAL_SYNC_EVENTS,
        Unit::Count,
        "Events acknowledged by one WAL sync: publish rate = this x syncs per second."
    );
    h!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Publish to first delivery of an event."
    );
    c!(
        READS,
        Unit::Count,
        "Log reads started by subscriptions, by source: hot_tail (newest committed batches, in memory) or rocksdb."
    );
    c!(RPC_REQUESTS, Unit::Count, "gRPC requests, per method.");
    c!(
        RPC_ERRORS,
        Unit::Count,
        "gRPC requests that ended with a non-OK status, per method and code."
    );
    g!(SUBSCRIBE_STREAMS, Unit::Count, "Open Subscribe streams.");
    c!(
        DELIVERED,
        Unit::Count,
        "Deliveries handed to members (including redeliveries)."
    );
    c!(ACKED, Unit::Count, "Deliveries acked.");
    c!(NACKED, Unit::Count, "Deliveries nacked.");
    c!(
        REDELIVERED,
        Unit::Count,
        "Deliveries that were a second or later attempt."
    );
    c!(
        DEAD_LETTERED,
        Unit::Count,
        "Events moved to the dead-letter queue."
    );
    c!(
        FILTERED,
        Unit::Count,
        "Events settled without delivery because the filter did not match."
    );
    g!(
        BACKLOG,
        Unit::Count,
        "Events not yet settled by the subscription."
    );
    g!(
        IN_FLIGHT,
        Unit::Count,
        "Deliveries leased to members and not yet settled."
    );
    g!(
        OLDEST_UNACKED_AGE,
        Unit::Seconds,
        "Age of the oldest unsettled event (0 when none)."
    );
    g!(PAUSED, Unit::Count, "1 while the subscription is paused.");
    g!(
        DLQ_SIZE,
        Unit::Count,
        "Entries in the subscription's dead-letter queue."
    );
    g!(
        DLQ_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest dead letter (0 when none)."
    );
    g!(
        STORAGE_SIZE,
        Unit::Bytes,
        "RocksDB SST files plus memtables."
    );
    g!(
        PENDING_COMPACTION,
        Unit::Bytes,
        "Bytes RocksDB estimates compaction still has to rewrite."
    );
    g!(
        DISK_TOTAL,
        Unit::Bytes,
        "Size of the filesystem holding the data dir."
    );
    g!(
        DISK_AVAILABLE,
        Unit::Bytes,
        "Bytes available to eventbus on that filesystem."
    );
    g!(READY, Unit::Count, "1 while /readyz passes.");
}

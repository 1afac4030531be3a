//! Names of the metrics this crate records through the `metrics` facade. The
//! server installs the Prometheus exporter; without one, recording is a no-op.

/// Histogram: seconds from a group's first command to its answer, including
/// the WAL sync in fsync mode.
pub const COMMIT_DURATION: &str = "eventbus_commit_duration_seconds";
/// Histogram: events written by one group commit.
pub const COMMIT_BATCH_EVENTS: &str = "eventbus_commit_batch_events";
/// Histogram: seconds one WAL sync (`FlushWAL(true)`: write + fdatasync)
/// took; its count is the number of syncs.
pub const WAL_SYNC_DURATION: &str = "eventbus_wal_sync_seconds";
/// Histogram: events acknowledged by one WAL sync (in fsync mode, publish
/// throughput = this × syncs per second).
pub const WAL_SYNC_EVENTS: &str = "eventbus_wal_sync_events";
/// Counter: the log reads subscriptions started, by where they were served
/// from (`from`: `hot_tail`, the newest committed batches in memory, or
/// `rocksdb`). Mostly `rocksdb` means subscriptions lag their topics.
pub const READS: &str = "eventbus_subscription_reads_total";
/// Histogram: seconds from publish to the first delivery of an event.
pub use eventbus_broker::metric_names::DELIVERY_LATENCY;

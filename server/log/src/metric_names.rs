//! Names of the metrics this crate records through the `metrics` facade. The
//! server installs the Prometheus exporter; without one, recording is a no-op.

/// Histogram: seconds from a group's first command to its answer, including
/// the WAL sync in fsync mode.
pub const COMMIT_DURATION: &str = "eventbus_commit_duration_seconds";
/// Histogram: events written by one group commit.
pub const COMMIT_BATCH_EVENTS: &str = "eventbus_commit_batch_events";
/// Histogram: seconds from publish to the first delivery of an event.
pub use eventbus_broker::metric_names::DELIVERY_LATENCY;

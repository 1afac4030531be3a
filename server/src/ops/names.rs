//! Metric names (Prometheus conventions: `_total` counters, base units).

pub use eventbus_log::metric_names::{COMMIT_BATCH_EVENTS, COMMIT_DURATION, DELIVERY_LATENCY};

pub const PUBLISHED_EVENTS: &str = "eventbus_published_events_total";
pub const PUBLISHED_BYTES: &str = "eventbus_published_bytes_total";
pub const PUBLISH_DURATION: &str = "eventbus_publish_duration_seconds";
pub const RPC_REQUESTS: &str = "eventbus_rpc_requests_total";
pub const RPC_ERRORS: &str = "eventbus_rpc_errors_total";
pub const SUBSCRIBE_STREAMS: &str = "eventbus_subscribe_streams";

pub const DELIVERED: &str = "eventbus_delivered_total";
pub const ACKED: &str = "eventbus_acked_total";
pub const NACKED: &str = "eventbus_nacked_total";
pub const REDELIVERED: &str = "eventbus_redelivered_total";
pub const DEAD_LETTERED: &str = "eventbus_dead_lettered_total";
pub const FILTERED: &str = "eventbus_filtered_total";
pub const BACKLOG: &str = "eventbus_subscription_backlog";
pub const IN_FLIGHT: &str = "eventbus_subscription_in_flight";
pub const OLDEST_UNACKED_AGE: &str = "eventbus_subscription_oldest_unacked_age_seconds";
pub const PAUSED: &str = "eventbus_subscription_paused";
pub const DLQ_SIZE: &str = "eventbus_dlq_size";
pub const DLQ_OLDEST_AGE: &str = "eventbus_dlq_oldest_age_seconds";

pub const STORAGE_SIZE: &str = "eventbus_storage_size_bytes";
pub const PENDING_COMPACTION: &str = "eventbus_storage_pending_compaction_bytes";
pub const DISK_TOTAL: &str = "eventbus_disk_total_bytes";
pub const DISK_AVAILABLE: &str = "eventbus_disk_available_bytes";
pub const READY: &str = "eventbus_ready";
/// Gauge per `state` (`ok`, `disk_full`, `failed`): 1 for the write path's
/// current state, 0 for the others (eventbus_broker::StorageHealth).
pub const STORAGE_STATE: &str = "eventbus_storage_state";
/// Gauge: the free-space reserve under which publishes are refused.
pub const DISK_RESERVE: &str = "eventbus_disk_reserve_bytes";
/// Counter: stored data found damaged when read, on any path (unary replies,
/// Subscribe and Replay streams); each is a DATA_LOSS to some caller.
pub const DATA_LOSS: &str = "eventbus_data_loss_total";

//! Metric names (Prometheus conventions: `_total` counters, base units).

pub use eventbus_log::metric_names::{
    COMMIT_BATCH_EVENTS, COMMIT_DURATION, DELIVERY_LATENCY, READS, WAL_SYNC_DURATION,
    WAL_SYNC_EVENTS,
};

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

/// Gauge per `backend` (`rocksdb`, `jetstream`): 1 for the backend that
/// serves.
pub const BACKEND: &str = "eventbus_backend";
/// Cluster mode only, refreshed at scrape time from the streams' leaders
/// (eventbus_broker::ClusterReport): streams eventbus keeps in JetStream.
pub const CLUSTER_STREAMS: &str = "eventbus_cluster_streams";
/// Streams whose leader did not answer: no writes to them until one is
/// elected.
pub const CLUSTER_STREAMS_WITHOUT_LEADER: &str = "eventbus_cluster_streams_without_leader";
/// Replicas not caught up with their leader, offline ones included.
pub const CLUSTER_REPLICAS_NOT_CURRENT: &str = "eventbus_cluster_replicas_not_current";
/// NATS servers with at least one replica not current or lagging.
pub const CLUSTER_LAGGING_PEERS: &str = "eventbus_cluster_lagging_peers";
/// Per `stream` (partitions, audit log, metadata buckets; not the
/// per-subscription dead-letter streams): current replicas, the leader
/// included (0 without a leader).
pub const CLUSTER_STREAM_REPLICAS_CURRENT: &str = "eventbus_cluster_stream_replicas_current";
/// Per `stream`, as above: the largest lag of a follower, in operations.
pub const CLUSTER_STREAM_REPLICA_LAG: &str = "eventbus_cluster_stream_replica_lag";

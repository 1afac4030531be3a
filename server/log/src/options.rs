//! Plain options for opening the store. The server maps its config onto these.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::limits::Limits;
use crate::types::Durability;

/// Everything the store and the delivery engine need to know up front.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory that holds the RocksDB files. Created if missing.
    pub data_dir: PathBuf,
    /// When a publish is acknowledged. Default: [`Durability::Fsync`].
    pub durability: Durability,
    /// Create unknown topics and subscriptions on first use. Default: true.
    /// The server turns this off and creates them at its gateway instead
    /// (`auth::scope`), where each creation has a principal to be counted
    /// against and recorded as its creator.
    pub auto_create: bool,
    /// Partitions of a topic created without an explicit count. Default: 4.
    pub default_partitions: u32,
    /// Largest encoded event accepted, in bytes. Default: 1 MiB.
    pub max_event_bytes: usize,
    /// Ack deadline of a subscription that does not set one. Default: 30 s.
    pub default_ack_deadline: Duration,
    /// Deliveries a Subscribe stream may hold unacked when it asks for 0. Default: 256.
    pub default_max_in_flight: u32,
    /// Upper bound on a stream's `max_in_flight`. Default: 10 000.
    pub max_in_flight_limit: u32,
    /// How often the delivery engine persists ack state. A crash can lose this much
    /// of the latest acks (they are then redelivered). Default: 20 ms.
    pub ack_flush_interval: Duration,
    /// Most unsettled event bytes ([`StoredEvent::size_bytes`]) one Subscribe
    /// stream may hold: past it the stream gets nothing new until acks, nacks
    /// or expiries bring it back under, whatever its `max_in_flight`. An event
    /// bigger than this still goes, alone. Bounds the server's memory per
    /// stream when events are big. Default: 32 MiB.
    ///
    /// [`StoredEvent::size_bytes`]: crate::StoredEvent::size_bytes
    pub max_in_flight_bytes: usize,
    /// Most event bytes a subscription reads ahead of its members (fetched from
    /// the log, not yet handed out). Default: 16 MiB.
    pub read_ahead_bytes: usize,
    /// Most bytes of recently committed record batches kept in memory, over
    /// all partitions (at most 4 MiB each), so subscriptions that keep up are
    /// fed without a RocksDB read. 0 turns the hot tail off. Default: 64 MiB.
    pub hot_tail_bytes: usize,
    /// How far a subscription may read ahead of its oldest unsettled event in one
    /// partition. Bounds the persisted settled-set and memory. Default: 100 000.
    pub max_unsettled_window: u64,
    /// How long an idempotency key deduplicates publishes to its topic.
    /// Default: 2 min.
    pub dedup_window: Duration,
    /// How often topic retention (max_age, max_bytes) is applied. Default: 10 s.
    pub retention_interval: Duration,
    /// How long audit records are kept; older ones are dropped at each
    /// retention pass. `None`: forever. Default: 90 days.
    pub audit_retention: Option<Duration>,
    /// Publishes are refused (RESOURCE_EXHAUSTED) while the data disk has less
    /// free space than this, so RocksDB always has room to flush and compact
    /// and never sees ENOSPC from a publish. 0 turns the check off.
    /// Default: 256 MiB.
    pub disk_reserve_bytes: u64,
    /// Memtable size of the records column family: how much is written before
    /// a flush to an SST file (a flush needs this much free disk). The WAL is
    /// kept under four times this. Default: 64 MiB.
    pub write_buffer_bytes: usize,
    /// Bounds on every size a client controls.
    pub limits: Limits,
}

impl Options {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Options {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            auto_create: true,
            default_partitions: 4,
            max_event_bytes: 1024 * 1024,
            default_ack_deadline: Duration::from_secs(30),
            default_max_in_flight: 256,
            max_in_flight_limit: 10_000,
            max_in_flight_bytes: 32 << 20,
            read_ahead_bytes: 16 << 20,
            hot_tail_bytes: 64 << 20,
            ack_flush_interval: Duration::from_millis(20),
            max_unsettled_window: 100_000,
            dedup_window: Duration::from_secs(120),
            retention_interval: Duration::from_secs(10),
            audit_retention: Some(Duration::from_secs(90 * 24 * 3600)),
            disk_reserve_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
            limits: Limits::default(),
        }
    }
}

pub use eventbus_broker::limits::{MAX_ACK_DEADLINE, MAX_PARTITIONS, MIN_ACK_DEADLINE};

//! What a backend reports about its storage: the state of its write path and
//! what it occupies.

/// The state of the write path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StorageHealth {
    #[default]
    Ok,
    /// The data disk has less free space than the configured reserve (or a
    /// write failed for lack of space): appends are refused, everything else
    /// goes on, and publishing resumes by itself once space is freed.
    DiskFull { free_bytes: u64, reserve_bytes: u64 },
    /// A WAL write or sync failed, or a writer thread died: no write is
    /// acknowledged any more until the process restarts.
    Failed { reason: String },
}

impl StorageHealth {
    /// Short label for metrics and status output.
    pub fn label(&self) -> &'static str {
        match self {
            StorageHealth::Ok => "ok",
            StorageHealth::DiskFull { .. } => "disk_full",
            StorageHealth::Failed { .. } => "failed",
        }
    }

    /// Every label, for gauges that must report 0 for the other states.
    pub const LABELS: [&'static str; 3] = ["ok", "disk_full", "failed"];

    /// What an operator should read: the state and what to do about it.
    pub fn describe(&self) -> String {
        match self {
            StorageHealth::Ok => "storage ok".into(),
            StorageHealth::DiskFull {
                free_bytes,
                reserve_bytes,
            } => format!(
                "data disk full: {} MiB free, under the reserve of {} MiB (disk-reserve-bytes); \
                 publishes are refused with RESOURCE_EXHAUSTED until space is freed",
                free_bytes >> 20,
                reserve_bytes >> 20
            ),
            StorageHealth::Failed { reason } => {
                format!("write path stopped after a storage failure, restart the process: {reason}")
            }
        }
    }
}

/// What the storage occupies, as the backend measures it (RocksDB: summed
/// over the column families).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Bytes in SST files (the data on disk, compressed).
    pub sst_bytes: u64,
    /// Bytes in memtables (written, not yet flushed to SST files).
    pub memtable_bytes: u64,
    /// Bytes RocksDB estimates compaction still has to rewrite.
    pub pending_compaction_bytes: u64,
}

/// The storage summary behind GetStatus and the storage gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageReport {
    pub health: StorageHealth,
    pub stats: StorageStats,
    /// Free space the backend keeps in reserve before it refuses publishes
    /// (0: none).
    pub disk_reserve_bytes: u64,
}

/// The storage backend that serves: [`Broker::backend`](crate::Broker::backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One node: RocksDB in the data dir (`eventbus serve`, the default).
    RocksDb,
    /// Cluster mode: a stateless gateway over a NATS JetStream cluster.
    JetStream,
}

impl Backend {
    /// The name status output and the `eventbus_backend` gauge use.
    pub fn label(self) -> &'static str {
        match self {
            Backend::RocksDb => "rocksdb",
            Backend::JetStream => "jetstream",
        }
    }
}

/// The replication health of the streams a cluster-mode backend keeps, as
/// their leaders report it ([`Broker::cluster`](crate::Broker::cluster)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterReport {
    /// Every stream eventbus keeps in the cluster, by name.
    pub streams: Vec<StreamHealth>,
}

/// One replicated stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHealth {
    pub name: String,
    /// The peer that leads it; `None` when no leader answered (an election
    /// under way, or too few peers left for a quorum).
    pub leader: Option<String>,
    /// Every peer holding a replica, the leader first; empty when no leader
    /// answered (only the leader reports its followers).
    pub replicas: Vec<ReplicaHealth>,
}

/// One replica of a stream, as its leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaHealth {
    /// The NATS server name of the peer.
    pub peer: String,
    pub leader: bool,
    /// Caught up with the leader (the leader always is).
    pub current: bool,
    /// The group considers the peer gone.
    pub offline: bool,
    /// Operations the peer is behind the leader.
    pub lag: u64,
    /// How long ago the leader last heard from the peer (0 for the leader).
    pub active_ago_ms: u64,
}

impl ClusterReport {
    /// Streams no leader answered for: nothing can be written to them.
    pub fn streams_without_leader(&self) -> usize {
        self.streams.iter().filter(|s| s.leader.is_none()).count()
    }

    /// Replicas, over all streams with a leader, that are not caught up
    /// (offline ones included).
    pub fn replicas_not_current(&self) -> usize {
        self.streams
            .iter()
            .flat_map(|s| &s.replicas)
            .filter(|r| !r.current)
            .count()
    }

    /// Peers holding at least one replica that is not current or lags,
    /// by name.
    pub fn lagging_peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self
            .streams
            .iter()
            .flat_map(|s| &s.replicas)
            .filter(|r| !r.current || r.lag > 0)
            .map(|r| r.peer.clone())
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }
}

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

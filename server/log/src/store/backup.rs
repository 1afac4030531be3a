//! Backups (RocksDB checkpoints) and the storage statistics of every column
//! family.

use std::path::Path;

use crate::error::{Error, Result};
use crate::keys::Cf;

use super::Log;

impl Log {
    /// Writes a RocksDB checkpoint of the whole store into `dir`, which must
    /// not exist: memtables are flushed, SST files hard-linked (copied across
    /// filesystems), the live WAL copied, so the checkpoint is a consistent
    /// store of everything written before it. Safe while the writer runs.
    /// Blocking: call off the async workers. Returns the backup's size.
    pub fn checkpoint(&self, dir: &Path) -> Result<u64> {
        rocksdb::checkpoint::Checkpoint::new(&*self.inner.db)?.create_checkpoint(dir)?;
        let mut size = 0;
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::FailedPrecondition(format!(
                "backup {} was written but cannot be listed: {e}",
                dir.display()
            ))
        })?;
        for entry in entries.flatten() {
            size += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
        Ok(size)
    }

    /// Sizes RocksDB reports for every column family: cheap in-memory
    /// properties, but they take RocksDB's mutex, so call them off the async
    /// worker threads.
    pub fn storage_stats(&self) -> StorageStats {
        let db = &self.inner.db;
        let mut stats = StorageStats::default();
        for cf in Cf::ALL {
            let handle = self.cf(cf);
            let prop = |name: &str| {
                db.property_int_value_cf(handle, name)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            stats.sst_bytes += prop("rocksdb.total-sst-files-size");
            stats.memtable_bytes += prop("rocksdb.cur-size-all-mem-tables");
            stats.pending_compaction_bytes += prop("rocksdb.estimate-pending-compaction-bytes");
        }
        stats
    }
}

/// What the storage occupies, summed over the column families.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Bytes in SST files (the data on disk, compressed).
    pub sst_bytes: u64,
    /// Bytes in memtables (written, not yet flushed to SST files).
    pub memtable_bytes: u64,
    /// Bytes RocksDB estimates compaction still has to rewrite.
    pub pending_compaction_bytes: u64,
}

//! Backups (RocksDB checkpoints) and the storage statistics of every column
//! family.

use std::path::Path;

use crate::error::{storage, Error, Result};
use crate::keys::Cf;

use super::Log;

impl Log {
    /// Writes a RocksDB checkpoint of the whole store into `dir`, which must
    /// not exist: memtables are flushed, SST files hard-linked (copied across
    /// filesystems), the live WAL copied, so the checkpoint is a consistent
    /// store of everything written before it. Safe while the writer runs.
    /// Blocking: call off the async workers. Returns the backup's size.
    pub fn checkpoint(&self, dir: &Path) -> Result<u64> {
        rocksdb::checkpoint::Checkpoint::new(&*self.inner.db)
            .map_err(storage)?
            .create_checkpoint(dir)
            .map_err(storage)?;
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

pub use eventbus_broker::StorageStats;

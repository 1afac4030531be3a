//! What the write path can do right now, shared by the writer, the syncer and
//! whoever reports health (the server's gRPC health and `/readyz`).
//!
//! ```text
//!            space freed (next check)
//!        ┌──────────────────────────────┐
//!        ▼                              │
//!      Ok ───── free space < reserve ─► DiskFull      appends refused with
//!        │      or a write hit ENOSPC     │           RESOURCE_EXHAUSTED; acks,
//!        │                                │           deletes and reads go on
//!        └── sync failed, other write ──► Failed      sticky until restart
//!            error, a thread panicked                 (fail-stop, "fsyncgate")
//! ```
//!
//! A failed sync is never retried: the kernel may have dropped the dirty pages
//! that failed to write, so a later successful sync proves nothing about them.
//! Out of space is different: nothing was acknowledged that did not reach the
//! WAL, and the condition clears by itself once space is freed, so it must
//! neither stop the process nor need a restart.

use std::sync::Arc;

use tokio::sync::watch;

pub use eventbus_broker::status::StorageHealth;

/// The shared cell. Cheap to clone; setters are safe from any thread.
#[derive(Debug, Clone)]
pub struct HealthCell {
    tx: Arc<watch::Sender<StorageHealth>>,
}

impl Default for HealthCell {
    fn default() -> Self {
        HealthCell {
            tx: Arc::new(watch::channel(StorageHealth::Ok).0),
        }
    }
}

impl HealthCell {
    pub fn get(&self) -> StorageHealth {
        self.tx.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<StorageHealth> {
        self.tx.subscribe()
    }

    /// The reason the write path stopped, if it did.
    pub fn failed(&self) -> Option<String> {
        match &*self.tx.borrow() {
            StorageHealth::Failed { reason } => Some(reason.clone()),
            _ => None,
        }
    }

    /// Stops the write path for good. The first reason wins: later failures
    /// are usually consequences of the first.
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let changed = self.tx.send_if_modified(|h| {
            if matches!(h, StorageHealth::Failed { .. }) {
                return false;
            }
            *h = StorageHealth::Failed {
                reason: reason.clone(),
            };
            true
        });
        if changed {
            tracing::error!(
                reason = %reason,
                "the write path is stopped until restart: no write will be acknowledged"
            );
        }
    }

    /// Out of space (never overrides a failure).
    pub fn disk_full(&self, free_bytes: u64, reserve_bytes: u64) {
        let changed = self.tx.send_if_modified(|h| match h {
            StorageHealth::Failed { .. } => false,
            StorageHealth::DiskFull { .. } | StorageHealth::Ok => {
                let was_ok = *h == StorageHealth::Ok;
                *h = StorageHealth::DiskFull {
                    free_bytes,
                    reserve_bytes,
                };
                was_ok
            }
        });
        if changed {
            tracing::error!(
                free_mib = free_bytes >> 20,
                reserve_mib = reserve_bytes >> 20,
                "data disk full: publishes are refused with RESOURCE_EXHAUSTED until space is freed"
            );
        }
    }

    /// Space is back (never clears a failure).
    pub fn space_ok(&self) {
        let changed = self.tx.send_if_modified(|h| {
            if matches!(h, StorageHealth::DiskFull { .. }) {
                *h = StorageHealth::Ok;
                true
            } else {
                false
            }
        });
        if changed {
            tracing::info!("data disk has room again: publishing resumed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_is_sticky_and_the_first_reason_wins() {
        let h = HealthCell::default();
        h.disk_full(1, 2);
        h.fail("fsync: EIO");
        h.fail("a consequence");
        h.space_ok();
        h.disk_full(1, 2);
        assert_eq!(
            h.get(),
            StorageHealth::Failed {
                reason: "fsync: EIO".into()
            }
        );
    }

    #[test]
    fn disk_full_clears_when_space_is_back() {
        let h = HealthCell::default();
        let mut rx = h.watch();
        h.disk_full(10 << 20, 64 << 20);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().label(), "disk_full");
        assert!(h.get().describe().contains("RESOURCE_EXHAUSTED"));
        h.space_ok();
        assert_eq!(*rx.borrow_and_update(), StorageHealth::Ok);
    }
}

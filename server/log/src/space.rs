//! The free-space reserve: appends are refused while the data disk has less
//! free space than `disk_reserve_bytes`, as etcd's space alarm does.
//!
//! Why a reserve, and not "write until ENOSPC and recover": RocksDB turns an
//! out-of-space WAL write into a background error that blocks every later
//! write until its own recovery runs (it polls for space every few seconds,
//! and the C API has no `Resume()`). A reserve checked before the write keeps
//! RocksDB from ever seeing ENOSPC from us, leaves room for the memtable
//! flushes and compactions that free space, and lets acks, dead-letter moves
//! and deletes (which shrink the data) go on while publishes wait. Publishing
//! resumes at the first check after space is freed, well within a second.
//!
//! The check costs one `statvfs` at most every [`CHECK_EVERY`] or every
//! reserve/8 bytes appended, whichever comes first, so the reserve cannot be
//! overrun by more than an eighth between checks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Longest time a free-space figure is trusted.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Free bytes of the filesystem holding `dir`, as an unprivileged writer
/// sees them.
pub fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Owned by the writer thread.
#[derive(Debug)]
pub struct SpaceGuard {
    dir: PathBuf,
    reserve: u64,
    checked_at: Option<Instant>,
    free: u64,
    appended_since: u64,
}

impl SpaceGuard {
    /// `reserve` 0 turns the guard off.
    pub fn new(dir: PathBuf, reserve: u64) -> Self {
        SpaceGuard {
            dir,
            reserve,
            checked_at: None,
            free: u64::MAX,
            appended_since: 0,
        }
    }

    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// `Err((free, reserve))` when an append of `bytes` must be refused.
    pub fn admit(&mut self, bytes: u64, now: Instant) -> Result<(), (u64, u64)> {
        if self.reserve == 0 {
            return Ok(());
        }
        let stale = self
            .checked_at
            .is_none_or(|t| now.duration_since(t) >= CHECK_EVERY)
            || self.appended_since >= self.reserve / 8;
        if stale {
            self.refresh(now);
        }
        let free = self.free.saturating_sub(self.appended_since);
        if free < self.reserve.saturating_add(bytes) {
            return Err((free, self.reserve));
        }
        self.appended_since += bytes;
        Ok(())
    }

    /// Forgets the last figure, so the next append looks again (after a
    /// write failed for lack of space).
    pub fn invalidate(&mut self) {
        self.checked_at = None;
    }

    fn refresh(&mut self, now: Instant) {
        self.checked_at = Some(now);
        self.appended_since = 0;
        self.free = match free_bytes(&self.dir) {
            Ok(free) => free,
            Err(e) => {
                // Cannot tell: let the write try, RocksDB reports the truth.
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot stat the data dir");
                u64::MAX
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_reserve_admits_everything() {
        let mut g = SpaceGuard::new("/nonexistent".into(), 0);
        assert!(g.admit(u64::MAX / 2, Instant::now()).is_ok());
    }

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        let mut g = SpaceGuard::new(dir.path().into(), free.saturating_mul(2).max(1));
        let (seen_free, reserve) = g.admit(1, Instant::now()).unwrap_err();
        assert!(seen_free <= free + (64 << 20), "{seen_free} vs {free}");
        assert_eq!(reserve, g.reserve());
    }

    #[test]
    fn appends_count_against_the_last_figure_until_the_next_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = SpaceGuard::new(dir.path().into(), 8000);
        let now = Instant::now();
        g.admit(0, now).unwrap();
        // Pretend the disk had just enough for 100 bytes over the reserve.
        g.free = 8100;
        g.admit(60, now).unwrap();
        assert!(g.admit(60, now).is_err(), "60 + 60 > 100");
    }
}

//! The kill loop with power cuts: the server's data dir lives on a
//! [`lossyfs`] filesystem mounted by this process, and every `kill -9` is
//! followed by a power cut, which drops every write and directory change the
//! server had not synced, before the restart. A kill alone keeps the page
//! cache, so only this catches a missing `fsync`.
//!
//! After the restart and before any client reaches the new server, the
//! verifier's [`cut`](super::verify::Verifier::cut) counts the acknowledged
//! publishes the cut took (none are allowed in fsync mode) and how long
//! before the kill they had been answered: the loss window of buffered mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lossyfs::{CutReport, LossyFs};
use tempfile::TempDir;

use super::verify::CutLoss;

/// A mounted lossy filesystem holding the data dir. Dropping it unmounts
/// (stop the server first) and removes its temp dirs.
pub struct PowerCut {
    fs: LossyFs,
    data: PathBuf,
    _dir: TempDir,
}

impl PowerCut {
    /// Mounts a fresh filesystem on a temp dir and creates the data dir in
    /// it, synced as a provisioned volume's would be: the server's own
    /// syncing starts inside it. Panics when FUSE cannot be mounted (see
    /// [`lossyfs::unusable`]).
    pub fn mount() -> PowerCut {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, mnt) = (dir.path().join("store"), dir.path().join("mnt"));
        std::fs::create_dir(&store).expect("create the store dir");
        std::fs::create_dir(&mnt).expect("create the mount point");
        let fs = LossyFs::mount(&store, &mnt).expect("mount lossyfs");
        let data = mnt.join("data");
        std::fs::create_dir(&data).expect("create the data dir");
        std::fs::File::open(&mnt)
            .and_then(|d| d.sync_all())
            .expect("fsync the mount's root");
        PowerCut {
            fs,
            data,
            _dir: dir,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Drops the unsynced state and remounts. Call with the server dead.
    /// With a `writeback` seed, a random half of the unsynced pages is made
    /// durable first (see [`LossyFs::power_cut_after_writeback`]).
    pub fn cut(&mut self, writeback: Option<u64>) -> CutReport {
        self.fs
            .power_cut_after_writeback(writeback)
            .expect("power cut (unmount and mount again)")
    }
}

/// The figures of all cuts of a run.
#[derive(Clone, Debug, Default)]
pub struct CutFigures {
    pub cuts: u32,
    /// Acknowledged publishes lost, all cuts together ...
    pub lost: u64,
    /// ... in this many cuts, at most this many in one.
    pub cuts_with_loss: u32,
    pub max_lost: u64,
    /// The oldest lost publish: answered this long before its kill.
    pub max_window: Option<Duration>,
    /// Per cut that lost something: (acknowledged publishes lost, window).
    pub per_cut: Vec<(u64, Duration)>,
    /// Offsets lost below ends read back before (a lower bound of the events lost).
    pub events_lost: u64,
    /// Unsynced data the cuts dropped: largest in one cut, and total.
    pub max_dirty_bytes: u64,
    pub dirty_bytes: u64,
    pub dir_changes: u64,
    /// Unsynced bytes written back before the cuts (with write back on).
    pub kept_bytes: u64,
}

impl CutFigures {
    pub fn add(&mut self, report: &CutReport, loss: &CutLoss) {
        self.cuts += 1;
        self.lost += loss.lost;
        self.max_lost = self.max_lost.max(loss.lost);
        if let Some(window) = loss.oldest {
            self.cuts_with_loss += 1;
            self.max_window = self.max_window.max(Some(window));
            self.per_cut.push((loss.lost, window));
        }
        self.events_lost += loss.events;
        self.max_dirty_bytes = self.max_dirty_bytes.max(report.dirty_bytes);
        self.dirty_bytes += report.dirty_bytes;
        self.dir_changes += report.dir_changes;
        self.kept_bytes += report.kept_bytes;
    }

    /// The median window of the cuts that lost something.
    pub fn median_window(&self) -> Option<Duration> {
        let mut w: Vec<Duration> = self.per_cut.iter().map(|(_, w)| *w).collect();
        w.sort();
        w.get(w.len() / 2).copied()
    }
}

impl std::fmt::Display for CutFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "power cuts {}: acknowledged publishes lost {} in {} cuts (at most {} in one), loss window up to {} ms before the kill (median {} ms), offsets lost below ends read before {}; unsynced data dropped {} bytes (at most {} in one cut), {} unsynced directory entries, {} unsynced bytes written back",
            self.cuts,
            self.lost,
            self.cuts_with_loss,
            self.max_lost,
            self.max_window.map_or(0, |d| d.as_millis()),
            self.median_window().map_or(0, |d| d.as_millis()),
            self.events_lost,
            self.dirty_bytes,
            self.max_dirty_bytes,
            self.dir_changes,
            self.kept_bytes
        )
    }
}

/// One line per cut for the cycle log.
pub fn describe(report: &CutReport, loss: &CutLoss) -> String {
    let window = match (loss.newest, loss.oldest) {
        (Some(n), Some(o)) => format!(
            ", answered {}-{} ms before the kill",
            n.as_millis(),
            o.as_millis()
        ),
        _ => String::new(),
    };
    format!(
        "power cut dropped {report} | acknowledged publishes lost {}{window}",
        loss.lost
    )
}

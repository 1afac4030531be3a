//! `lossyfs`: a FUSE filesystem that loses what was not synced, to test
//! durability against power loss. `kill -9` keeps the kernel's page cache, so
//! a program that forgets an `fsync` passes every kill test; under `lossyfs`
//! it loses data at the next [`LossyFs::power_cut`].
//!
//! It is a small in-memory filesystem (regular files and directories, no
//! links) whose synced file contents are kept in a store directory, one
//! object file per inode. What survives a cut is exactly what was synced:
//! file data and size by `fsync`/`fdatasync` of the file, directory entries
//! (creates, renames, unlinks) by `fsync` of the directory. See [`model`] for
//! the rules, and [`fuse`] for how kernel requests map onto them.
//!
//! The filesystem runs on a thread of the calling process (the `fuser`
//! crate, without libfuse: mounting `/dev/fuse` directly needs root). The
//! mount is undone when the [`LossyFs`] is dropped, also on a panic.

pub mod fuse;
pub mod model;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, MountOption};

pub use model::CutReport;

use fuse::{LossyFuse, Shared};
use model::Model;

/// A mounted lossy filesystem.
pub struct LossyFs {
    shared: Arc<Mutex<Shared>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

impl LossyFs {
    /// Mounts a new, empty filesystem at `mountpoint` (an existing empty
    /// directory) whose synced data goes to `store` (an existing empty
    /// directory, not under `mountpoint`).
    pub fn mount(store: &Path, mountpoint: &Path) -> io::Result<LossyFs> {
        let shared = Arc::new(Mutex::new(Shared {
            model: Model::new(store),
            powered: true,
        }));
        let session = session(&shared, mountpoint)?;
        Ok(LossyFs {
            shared,
            mountpoint: mountpoint.to_path_buf(),
            session: Some(session),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: every unsynced write and directory change is dropped,
    /// the filesystem is unmounted and mounted again, showing only what was
    /// synced. Stop (kill) every process using it first: the unmount fails
    /// while a file is open (the filesystem then stays mounted and powered
    /// off, answering EIO).
    pub fn power_cut(&mut self) -> io::Result<CutReport> {
        self.power_cut_after_writeback(None)
    }

    /// [`LossyFs::power_cut`], after a background write back that made each
    /// unsynced page durable with probability 1/2 (drawn from `seed`), in no
    /// particular order: see [`Model::power_cut_after_writeback`]. `None`
    /// writes nothing back.
    pub fn power_cut_after_writeback(&mut self, seed: Option<u64>) -> io::Result<CutReport> {
        let report = {
            let mut g = self.lock();
            g.powered = false;
            match seed {
                None => g.model.power_cut(),
                Some(seed) => {
                    // xorshift64*: enough for a fair coin, no dependency.
                    let mut x = seed | 1;
                    g.model.power_cut_after_writeback(|| {
                        x ^= x >> 12;
                        x ^= x << 25;
                        x ^= x >> 27;
                        x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 63 == 1
                    })
                }
            }
        };
        if let Some(s) = self.session.take() {
            end(s)?;
        }
        self.lock().powered = true;
        self.session = Some(session(&self.shared, &self.mountpoint)?);
        Ok(report)
    }

    /// Bytes written and not synced yet (whole pages).
    pub fn dirty_bytes(&self) -> u64 {
        self.lock().model.dirty_bytes()
    }

    /// Unmounts (unsynced data is dropped with the filesystem).
    pub fn unmount(mut self) -> io::Result<()> {
        self.session.take().map_or(Ok(()), end)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for LossyFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if end(s).is_err() {
                // Busy: detach it so nothing is left mounted.
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .status();
            }
        }
    }
}

/// Unmounts and waits for the filesystem thread. The thread ends when its
/// read of `/dev/fuse` fails: ENODEV after a plain unmount; once in CI
/// (kernel 6.18, several mounts torn down in parallel) ECONNABORTED, which
/// the kernel answers for a connection it marked aborted. Either way the
/// unmount had already succeeded and the filesystem is gone, so the thread's
/// error does not concern the caller; the unmount's own errors (EBUSY) do.
fn end(session: BackgroundSession) -> io::Result<()> {
    match session.umount_and_join() {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::CONNABORTED.raw_os_error()) => Ok(()),
        other => other,
    }
}

fn session(shared: &Arc<Mutex<Shared>>, mountpoint: &Path) -> io::Result<BackgroundSession> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("lossyfs".into()),
        MountOption::Subtype("lossyfs".into()),
    ];
    fuser::spawn_mount(
        LossyFuse {
            shared: shared.clone(),
        },
        mountpoint,
        &config,
    )
}

/// Why a FUSE filesystem cannot be mounted here (no `/dev/fuse`, not root,
/// no FUSE in the kernel), or `None` when it can: tries a mount in a temp dir.
pub fn unusable() -> Option<String> {
    let try_mount = || -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (store, mnt) = (dir.path().join("store"), dir.path().join("mnt"));
        std::fs::create_dir(&store)?;
        std::fs::create_dir(&mnt)?;
        LossyFs::mount(&store, &mnt)?.unmount()
    };
    try_mount()
        .err()
        .map(|e| format!("cannot mount a FUSE filesystem: {e}"))
}

//! The FUSE side: each kernel request becomes one call on the shared
//! [`Model`]. Attributes and entries are given a TTL of zero so the kernel
//! asks again every time (sizes change with every write); no writeback cache
//! is requested, so every `write(2)` reaches the model before it returns.
//! Locks are left to the kernel (no `FUSE_POSIX_LOCKS`), as RocksDB's LOCK
//! file needs only local `fcntl` locks.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::model::{libc_errno, Kind, Model};

const TTL: Duration = Duration::ZERO;

/// The model plus whether the power is off (every request fails with EIO
/// between a cut and the unmount).
#[derive(Debug)]
pub struct Shared {
    pub model: Model,
    pub powered: bool,
}

/// One mount's view of the shared state.
pub struct LossyFuse {
    pub shared: Arc<Mutex<Shared>>,
}

type Guard<'a> = MutexGuard<'a, Shared>;

impl LossyFuse {
    /// The state, or EIO when the power is off.
    fn lock(&self) -> Result<Guard<'_>, Errno> {
        let g = self.shared.lock().map_err(|_| Errno::EIO)?;
        if g.powered {
            Ok(g)
        } else {
            Err(Errno::EIO)
        }
    }
}

impl LossyFuse {
    /// Runs `f` on the model (EIO when the power is off).
    fn apply<T>(&self, f: impl FnOnce(&mut Model) -> Result<T, i32>) -> Result<T, Errno> {
        let mut g = self.lock()?;
        f(&mut g.model).map_err(errno)
    }

    /// `mknod`/`mkdir`: a new entry (volatile until its directory is synced).
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        reply: ReplyEntry,
    ) {
        let r = self.lock().and_then(|mut g| {
            let ino = g
                .model
                .create(parent.0, name, kind, (mode & 0o7777) as u16)
                .map_err(errno)?;
            attr(&g.model, ino, req)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn done(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn attr(model: &Model, ino: u64, req: &Request) -> Result<FileAttr, Errno> {
    let n = model.node(ino).map_err(errno)?;
    let (kind, nlink) = match n.kind {
        Kind::File => (FileType::RegularFile, model.links(ino).max(1)),
        Kind::Dir => (FileType::Directory, 2),
    };
    let size = n.size();
    Ok(FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: n.atime,
        mtime: n.mtime,
        ctime: n.ctime,
        crtime: n.ctime,
        kind,
        perm: n.perm,
        nlink,
        uid: req.uid(),
        gid: req.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    })
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// `S_IFMT` bits of a mode.
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;

impl Filesystem for LossyFuse {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.lock().and_then(|g| {
            let ino = g.model.lookup(parent.0, name).map_err(errno)?;
            attr(&g.model, ino, req)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().and_then(|g| attr(&g.model, ino.0, req)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.lock().and_then(|mut g| {
            let m = &mut g.model;
            if let Some(mode) = mode {
                m.set_perm(ino.0, (mode & 0o7777) as u16).map_err(errno)?;
            }
            if let Some(size) = size {
                m.truncate(ino.0, size).map_err(errno)?;
            }
            if atime.is_some() || mtime.is_some() {
                m.set_times(ino.0, atime.map(time), mtime.map(time))
                    .map_err(errno)?;
            }
            attr(m, ino.0, req)
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & S_IFMT != S_IFREG {
            return reply.error(Errno::EPERM);
        }
        self.make(req, parent, name, Kind::File, mode & !umask, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.make(req, parent, name, Kind::Dir, mode & !umask, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(reply, self.apply(|m| m.remove(parent.0, name, false)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(reply, self.apply(|m| m.remove(parent.0, name, true)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(errno(libc_errno::EINVAL));
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        done(
            reply,
            self.apply(|m| m.rename(parent.0, name, newparent.0, newname, no_replace)),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self
            .lock()
            .and_then(|mut g| g.model.opened(ino.0).map_err(errno))
        {
            Ok(()) => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.lock().and_then(|mut g| {
            let perm = (mode & !umask & 0o7777) as u16;
            let m = &mut g.model;
            let ino = m.create(parent.0, name, Kind::File, perm).map_err(errno)?;
            m.opened(ino).map_err(errno)?;
            attr(m, ino, req)
        });
        match r {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(a.ino.0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self
            .lock()
            .and_then(|mut g| g.model.read(ino.0, offset, size).map_err(errno))
        {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self
            .lock()
            .and_then(|mut g| g.model.write(ino.0, offset, data).map_err(errno))
        {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) persists nothing, as on a real filesystem.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut g) = self.lock() {
            g.model.released(ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(reply, self.apply(|m| m.sync_file(ino.0)));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self
            .lock()
            .and_then(|g| g.model.entries(ino.0).map_err(errno))
        {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        // Offsets: 1 after ".", 2 after "..", 3 + i after entry i.
        let dots = [(".", ino.0), ("..", ino.0)];
        let mut next = offset;
        while next < 2 {
            let (name, i) = dots[next as usize];
            if reply.add(INodeNo(i), next + 1, FileType::Directory, name) {
                return reply.ok();
            }
            next += 1;
        }
        for (i, (name, child, kind)) in entries.iter().enumerate().skip((next - 2) as usize) {
            let kind = match kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            };
            if reply.add(INodeNo(*child), i as u64 + 3, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(reply, self.apply(|m| m.sync_dir(ino.0)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The store's filesystem: the server checks free space before writes.
        let store = match self.lock() {
            Ok(g) => g.model.store().to_path_buf(),
            Err(e) => return reply.error(e),
        };
        match rustix::fs::statvfs(&store) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e.raw_os_error())),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        /// `FALLOC_FL_KEEP_SIZE`: reserve blocks only, which this model need not do.
        const KEEP_SIZE: i32 = 1;
        let r = self.lock().and_then(|mut g| match mode {
            0 => {
                let m = &mut g.model;
                let end = offset.saturating_add(length);
                if end > m.node(ino.0).map_err(errno)?.size() {
                    m.truncate(ino.0, end).map_err(errno)?;
                }
                Ok(())
            }
            KEEP_SIZE => Ok(()),
            _ => Err(errno(libc_errno::EOPNOTSUPP)),
        });
        done(reply, r);
    }
}

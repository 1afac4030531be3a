//! The filesystem's state: what a process sees now (the *volatile* view, as
//! in a kernel's page cache and dentry cache) and what would survive a power
//! cut (the *durable* view). Plain data, no FUSE: unit-tested on its own.
//!
//! # The model
//!
//! * A file's durable content is its object file in the store directory
//!   (`<store>/<inode>`). Writes and truncations never touch it: they land in
//!   the file's overlay, a map of 4 KiB pages plus a volatile size.
//!   `fsync`/`fdatasync` of the file writes its dirty pages and its size to
//!   the object file and empties the overlay. So a synced file keeps exactly
//!   what it had at its last sync.
//! * A directory has volatile entries (name -> inode) and durable entries.
//!   Creating, renaming and unlinking change the volatile entries only;
//!   `fsync` of the directory copies them to the durable ones. A file whose
//!   data was synced but whose directory entry never was is gone after a cut,
//!   as on ext4 or XFS without a directory fsync.
//! * [`Model::power_cut`] throws away every overlay and every volatile
//!   entry, and frees the inodes no durable entry reaches.
//!
//! This is stricter than a real filesystem, which may persist more than was
//! synced (a journal commit every few seconds), never less: anything a
//! program relies on without syncing it is lost here at every cut.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The page size of the overlay.
pub const PAGE: u64 = 4096;

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// An errno for the FUSE layer.
pub type Errno = i32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// One inode.
#[derive(Debug)]
pub struct Node {
    pub kind: Kind,
    pub perm: u16,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub atime: SystemTime,
    /// Open handles (the kernel's open files): an unlinked file stays
    /// readable while one is open.
    pub open: u32,
    file: FileState,
    dir: DirState,
}

#[derive(Debug, Default)]
struct FileState {
    /// The size a process sees.
    size: u64,
    /// The size of the object file: the synced content.
    durable_size: u64,
    /// The object file's bytes at or past this offset were cut off by a
    /// truncation since the last sync: they read as zeros.
    valid: u64,
    /// Written but not synced pages, by page index.
    pages: BTreeMap<u64, Box<[u8]>>,
    object: Option<File>,
}

#[derive(Debug, Default)]
struct DirState {
    entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

/// What a cut threw away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// The files with unsynced data (by name, largest first, at most 5) and
    /// the unsynced bytes of each.
    pub files: Vec<(String, u64)>,
    /// Bytes of unsynced pages dropped (whole pages).
    pub dirty_bytes: u64,
    /// Files that had unsynced data or an unsynced size.
    pub dirty_files: u64,
    /// Directory entries that differed from their durable state (created,
    /// renamed or unlinked and not synced).
    pub dir_changes: u64,
    /// Inodes freed because no durable entry reached them.
    pub freed_inodes: u64,
    /// Unsynced bytes that were written back (kept) instead of dropped.
    pub kept_bytes: u64,
}

impl std::fmt::Display for CutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} unsynced bytes in {} files",
            self.dirty_bytes, self.dirty_files
        )?;
        if !self.files.is_empty() {
            let files: Vec<String> = self.files.iter().map(|(n, b)| format!("{n} {b}")).collect();
            write!(f, " ({})", files.join(", "))?;
        }
        write!(
            f,
            ", {} unsynced directory entries, {} inodes freed",
            self.dir_changes, self.freed_inodes
        )?;
        if self.kept_bytes > 0 {
            write!(
                f,
                "; {} unsynced bytes written back before the cut",
                self.kept_bytes
            )?;
        }
        Ok(())
    }
}

/// The whole filesystem.
#[derive(Debug)]
pub struct Model {
    store: PathBuf,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
}

impl Node {
    fn new(kind: Kind, perm: u16) -> Node {
        let now = SystemTime::now();
        Node {
            kind,
            perm,
            mtime: now,
            ctime: now,
            atime: now,
            open: 0,
            file: FileState::default(),
            dir: DirState::default(),
        }
    }

    /// The size a process sees (0 for a directory).
    pub fn size(&self) -> u64 {
        match self.kind {
            Kind::File => self.file.size,
            Kind::Dir => 0,
        }
    }

    fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = now;
        self.ctime = now;
    }
}

impl Model {
    /// An empty filesystem whose synced file contents go to `store` (an
    /// existing, empty directory).
    pub fn new(store: &Path) -> Model {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(Kind::Dir, 0o755));
        Model {
            store: store.to_path_buf(),
            nodes,
            next_ino: ROOT + 1,
        }
    }

    /// Where synced file contents live.
    pub fn store(&self) -> &Path {
        &self.store
    }

    pub fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(libc_errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(libc_errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&DirState, Errno> {
        let n = self.node(ino)?;
        match n.kind {
            Kind::Dir => Ok(&n.dir),
            Kind::File => Err(libc_errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirState, Errno> {
        let n = self.node_mut(ino)?;
        match n.kind {
            Kind::Dir => Ok(&mut n.dir),
            Kind::File => Err(libc_errno::ENOTDIR),
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(libc_errno::ENOENT)
    }

    /// Volatile entries of a directory, in name order.
    pub fn entries(&self, dir: u64) -> Result<Vec<(OsString, u64, Kind)>, Errno> {
        Ok(self
            .dir(dir)?
            .entries
            .iter()
            .map(|(name, ino)| (name.clone(), *ino, self.nodes[ino].kind))
            .collect())
    }

    /// Volatile links to `ino` (for `st_nlink`).
    pub fn links(&self, ino: u64) -> u32 {
        let refs = self
            .nodes
            .values()
            .filter(|n| n.kind == Kind::Dir)
            .flat_map(|n| n.dir.entries.values())
            .filter(|i| **i == ino)
            .count();
        u32::try_from(refs).unwrap_or(u32::MAX)
    }

    /// Creates `name` in `parent` (volatile until the parent is synced).
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        perm: u16,
    ) -> Result<u64, Errno> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(libc_errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, Node::new(kind, perm));
        let p = self.node_mut(parent)?;
        p.dir.entries.insert(name.to_os_string(), ino);
        p.touch();
        Ok(ino)
    }

    /// Removes `name` from `parent`; `dir` says which kind it must be.
    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let n = self.node(ino)?;
        match (n.kind, dir) {
            (Kind::Dir, false) => return Err(libc_errno::EISDIR),
            (Kind::File, true) => return Err(libc_errno::ENOTDIR),
            (Kind::Dir, true) if !n.dir.entries.is_empty() => return Err(libc_errno::ENOTEMPTY),
            _ => {}
        }
        let p = self.node_mut(parent)?;
        p.dir.entries.remove(name);
        p.touch();
        self.collect(&[ino]);
        Ok(())
    }

    /// Moves `name` in `parent` to `new_name` in `new_parent`, replacing a
    /// file (or an empty directory) there unless `no_replace`.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let kind = self.node(ino)?.kind;
        let replaced = self.dir(new_parent)?.entries.get(new_name).copied();
        if let Some(old) = replaced {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc_errno::EEXIST);
            }
            let o = self.node(old)?;
            match (kind, o.kind) {
                (Kind::File, Kind::Dir) => return Err(libc_errno::EISDIR),
                (Kind::Dir, Kind::File) => return Err(libc_errno::ENOTDIR),
                (Kind::Dir, Kind::Dir) if !o.dir.entries.is_empty() => {
                    return Err(libc_errno::ENOTEMPTY)
                }
                _ => {}
            }
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_os_string(), ino);
        self.node_mut(parent)?.touch();
        self.node_mut(new_parent)?.touch();
        if let Some(old) = replaced {
            self.collect(&[old]);
        }
        Ok(())
    }

    pub fn set_perm(&mut self, ino: u64, perm: u16) -> Result<(), Errno> {
        let n = self.node_mut(ino)?;
        n.perm = perm;
        n.ctime = SystemTime::now();
        Ok(())
    }

    pub fn set_times(
        &mut self,
        ino: u64,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) -> Result<(), Errno> {
        let n = self.node_mut(ino)?;
        if let Some(t) = atime {
            n.atime = t;
        }
        if let Some(t) = mtime {
            n.mtime = t;
        }
        Ok(())
    }

    pub fn opened(&mut self, ino: u64) -> Result<(), Errno> {
        self.node_mut(ino)?.open += 1;
        Ok(())
    }

    pub fn released(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.open = n.open.saturating_sub(1);
        }
        self.collect(&[ino]);
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        let n = self.node_mut(ino)?;
        match n.kind {
            Kind::File => Ok(n),
            Kind::Dir => Err(libc_errno::EISDIR),
        }
    }

    /// Reads up to `len` bytes at `offset` of the volatile content.
    pub fn read(&mut self, ino: u64, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let n = self.file_mut(ino)?;
        let end = n.file.size.min(offset.saturating_add(u64::from(len)));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let take = ((PAGE - at % PAGE).min(end - at)) as usize;
            match n.file.pages.get(&index) {
                Some(page) => out.extend_from_slice(&page[in_page..in_page + take]),
                None => {
                    let page = n.file.durable_page(index).map_err(io_errno)?;
                    out.extend_from_slice(&page[in_page..in_page + take]);
                }
            }
            at += take as u64;
        }
        n.atime = SystemTime::now();
        Ok(out)
    }

    /// Writes `data` at `offset` into the overlay.
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let n = self.file_mut(ino)?;
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let take = (PAGE as usize - in_page).min(rest.len());
            let page = n.file.page_mut(index).map_err(io_errno)?;
            page[in_page..in_page + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            at += take as u64;
        }
        n.file.size = n.file.size.max(at);
        n.touch();
        Ok(())
    }

    /// Sets the volatile size (truncate or extend with zeros).
    pub fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let n = self.file_mut(ino)?;
        let f = &mut n.file;
        if size < f.size {
            // Zero the tail of the page the new end falls in, so a later
            // extension reads zeros there.
            if !size.is_multiple_of(PAGE) {
                let cut = (size % PAGE) as usize;
                let page = f.page_mut(size / PAGE).map_err(io_errno)?;
                page[cut..].fill(0);
            }
            let first_gone = size.div_ceil(PAGE);
            f.pages.retain(|index, _| *index < first_gone);
            f.valid = f.valid.min(size);
        }
        f.size = size;
        n.touch();
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file: its data and size become durable.
    pub fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        let store = self.store.clone();
        let n = self.file_mut(ino)?;
        n.file.sync(&store, ino).map_err(io_errno)
    }

    /// `fsync` of a directory: its entries become durable.
    pub fn sync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        let d = self.dir_mut(ino)?;
        let dropped: Vec<u64> = d
            .durable
            .values()
            .filter(|i| !d.entries.values().any(|e| e == *i))
            .copied()
            .collect();
        d.durable = d.entries.clone();
        self.collect(&dropped);
        Ok(())
    }

    /// The power cut: every unsynced write, size change and directory change
    /// is dropped; inodes no durable entry reaches are freed.
    pub fn power_cut(&mut self) -> CutReport {
        self.power_cut_after_writeback(|| false)
    }

    /// A power cut that comes after the kernel wrote back some dirty pages,
    /// in any order: each unsynced page for which `keep` says true is made
    /// durable first (extending the file's durable size to cover it, so the
    /// pages not kept before it read as zeros), as a kernel flushing its page
    /// cache in the background does. Files truncated since their last sync
    /// keep nothing. Directory changes are still all dropped.
    pub fn power_cut_after_writeback(&mut self, mut keep: impl FnMut() -> bool) -> CutReport {
        let mut kept = 0;
        for (ino, n) in &mut self.nodes {
            let f = &mut n.file;
            if f.pages.is_empty() || f.valid < f.durable_size {
                continue;
            }
            let chosen: Vec<u64> = f.pages.keys().copied().filter(|_| keep()).collect();
            for index in chosen {
                let page = f.pages.remove(&index).expect("a dirty page");
                let start = index * PAGE;
                let len = f.size.saturating_sub(start).min(PAGE);
                if len == 0 {
                    continue;
                }
                // A failed write back is a page the disk did not get.
                if f.write_back(&self.store, *ino, start, &page[..len as usize])
                    .is_ok()
                {
                    kept += PAGE;
                }
            }
        }
        let mut report = self.drop_unsynced();
        report.kept_bytes = kept;
        report
    }

    fn drop_unsynced(&mut self) -> CutReport {
        let mut report = CutReport::default();
        let names: HashMap<u64, OsString> = self
            .nodes
            .values()
            .flat_map(|n| n.dir.entries.iter().map(|(name, ino)| (*ino, name.clone())))
            .collect();
        for (ino, n) in &self.nodes {
            let bytes = n.file.pages.len() as u64 * PAGE;
            if bytes > 0 {
                let name = names.get(ino).map_or_else(
                    || format!("inode {ino}"),
                    |n| n.to_string_lossy().into_owned(),
                );
                report.files.push((name, bytes));
            }
        }
        report.files.sort_by_key(|f| std::cmp::Reverse(f.1));
        report.files.truncate(5);
        for n in self.nodes.values_mut() {
            let f = &mut n.file;
            if !f.pages.is_empty() || f.size != f.durable_size || f.valid < f.durable_size {
                report.dirty_files += 1;
            }
            report.dirty_bytes += f.pages.len() as u64 * PAGE;
            f.pages.clear();
            f.size = f.durable_size;
            f.valid = f.durable_size;
            let d = &mut n.dir;
            report.dir_changes += d
                .entries
                .iter()
                .filter(|(k, v)| d.durable.get(*k) != Some(*v))
                .count() as u64;
            report.dir_changes += d
                .durable
                .keys()
                .filter(|k| !d.entries.contains_key(*k))
                .count() as u64;
            d.entries = d.durable.clone();
            // The processes that had files open are gone.
            n.open = 0;
        }
        let before = self.nodes.len();
        let all: Vec<u64> = self.nodes.keys().copied().collect();
        self.collect(&all);
        report.freed_inodes = (before - self.nodes.len()) as u64;
        report
    }

    /// Frees those of `candidates` that no volatile or durable entry reaches
    /// and no handle holds open, with what only they reached.
    fn collect(&mut self, candidates: &[u64]) {
        if candidates.is_empty() {
            return;
        }
        let mut reached = HashSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            let Some(n) = self.nodes.get(&ino) else {
                continue;
            };
            for child in n.dir.entries.values().chain(n.dir.durable.values()) {
                if reached.insert(*child) {
                    stack.push(*child);
                }
            }
        }
        let open: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.open > 0)
            .map(|(i, _)| *i)
            .collect();
        for ino in open {
            if reached.insert(ino) {
                stack.push(ino);
            }
        }
        let gone: Vec<u64> = self
            .nodes
            .keys()
            .filter(|i| !reached.contains(i))
            .copied()
            .collect();
        for ino in gone {
            self.nodes.remove(&ino);
            let _ = std::fs::remove_file(self.store.join(ino.to_string()));
        }
    }

    /// Bytes of unsynced pages held in memory now.
    pub fn dirty_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| n.file.pages.len() as u64 * PAGE)
            .sum()
    }
}

impl FileState {
    /// The synced content of page `index` (zeros where there is none).
    fn durable_page(&mut self, index: u64) -> io::Result<Box<[u8]>> {
        let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
        let start = index * PAGE;
        let end = self.durable_size.min(self.valid).min(start + PAGE);
        if let (Some(object), true) = (&self.object, end > start) {
            object.read_exact_at(&mut page[..(end - start) as usize], start)?;
        }
        Ok(page)
    }

    fn page_mut(&mut self, index: u64) -> io::Result<&mut Box<[u8]>> {
        if !self.pages.contains_key(&index) {
            let page = self.durable_page(index)?;
            self.pages.insert(index, page);
        }
        Ok(self.pages.get_mut(&index).expect("inserted above"))
    }

    /// Makes `data` at `start` durable on its own (a page written back).
    fn write_back(&mut self, store: &Path, ino: u64, start: u64, data: &[u8]) -> io::Result<()> {
        self.open_object(store, ino)?;
        let object = self.object.as_ref().expect("opened above");
        object.write_all_at(data, start)?;
        let end = start + data.len() as u64;
        if end > self.durable_size {
            self.durable_size = end;
            self.valid = self.valid.max(end);
        }
        Ok(())
    }

    /// Opens (creating) the object file holding the synced content.
    fn open_object(&mut self, store: &Path, ino: u64) -> io::Result<()> {
        if self.object.is_none() {
            self.object = Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(store.join(ino.to_string()))?,
            );
        }
        Ok(())
    }

    fn sync(&mut self, store: &Path, ino: u64) -> io::Result<()> {
        if self.pages.is_empty()
            && self.size == self.durable_size
            && self.valid >= self.durable_size
        {
            return Ok(());
        }
        self.open_object(store, ino)?;
        let object = self.object.as_ref().expect("opened above");
        // Bytes cut off since the last sync must read as zeros after it.
        object.set_len(self.valid.min(self.durable_size))?;
        for (index, page) in &self.pages {
            let start = index * PAGE;
            if start >= self.size {
                continue;
            }
            let len = (self.size - start).min(PAGE) as usize;
            object.write_all_at(&page[..len], start)?;
        }
        object.set_len(self.size)?;
        self.pages.clear();
        self.durable_size = self.size;
        self.valid = self.size;
        Ok(())
    }
}

fn io_errno(e: io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc_errno::EIO)
}

/// The errnos used here (Linux values), so the model needs no libc.
pub mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const ENOTEMPTY: i32 = 39;
    pub const EOPNOTSUPP: i32 = 95;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> (tempfile::TempDir, Model) {
        let dir = tempfile::tempdir().expect("temp dir");
        let m = Model::new(dir.path());
        (dir, m)
    }

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn content(m: &mut Model, ino: u64) -> Vec<u8> {
        let size = m.node(ino).expect("node").size();
        m.read(ino, 0, size as u32).expect("read")
    }

    #[test]
    fn unsynced_writes_are_lost_and_synced_ones_kept() {
        let (_d, mut m) = model();
        let f = m.create(ROOT, name("wal"), Kind::File, 0o644).unwrap();
        m.sync_dir(ROOT).unwrap();
        m.write(f, 0, b"synced").unwrap();
        m.sync_file(f).unwrap();
        m.write(f, 6, &[7u8; 10_000]).unwrap();
        assert_eq!(content(&mut m, f).len(), 10_006);
        let cut = m.power_cut();
        assert_eq!(cut.dirty_files, 1);
        assert_eq!(m.lookup(ROOT, name("wal")), Ok(f));
        assert_eq!(content(&mut m, f), b"synced");
    }

    #[test]
    fn a_file_whose_directory_was_not_synced_is_gone() {
        let (_d, mut m) = model();
        let f = m.create(ROOT, name("sst"), Kind::File, 0o644).unwrap();
        m.write(f, 0, b"data").unwrap();
        m.sync_file(f).unwrap();
        m.power_cut();
        assert_eq!(m.lookup(ROOT, name("sst")), Err(libc_errno::ENOENT));
    }

    #[test]
    fn renames_and_unlinks_are_durable_only_after_a_directory_sync() {
        let (_d, mut m) = model();
        let old = m.create(ROOT, name("CURRENT"), Kind::File, 0o644).unwrap();
        m.write(old, 0, b"MANIFEST-1\n").unwrap();
        m.sync_file(old).unwrap();
        m.sync_dir(ROOT).unwrap();
        let new = m.create(ROOT, name("tmp"), Kind::File, 0o644).unwrap();
        m.write(new, 0, b"MANIFEST-2\n").unwrap();
        m.sync_file(new).unwrap();
        m.rename(ROOT, name("tmp"), ROOT, name("CURRENT"), false)
            .unwrap();
        let gone = m.create(ROOT, name("gone"), Kind::File, 0o644).unwrap();
        m.sync_dir(ROOT).unwrap();
        m.remove(ROOT, name("gone"), false).unwrap();
        // Cut before the directory sync of the unlink: the rename was synced.
        m.power_cut();
        let current = m.lookup(ROOT, name("CURRENT")).unwrap();
        assert_eq!(content(&mut m, current), b"MANIFEST-2\n");
        assert_eq!(m.lookup(ROOT, name("tmp")), Err(libc_errno::ENOENT));
        assert_eq!(m.lookup(ROOT, name("gone")), Ok(gone));
    }

    #[test]
    fn truncation_is_volatile_until_synced_and_extension_reads_zeros() {
        let (_d, mut m) = model();
        let f = m.create(ROOT, name("f"), Kind::File, 0o644).unwrap();
        m.sync_dir(ROOT).unwrap();
        m.write(f, 0, &[1u8; 5000]).unwrap();
        m.sync_file(f).unwrap();
        m.truncate(f, 10).unwrap();
        m.truncate(f, 5000).unwrap();
        let c = content(&mut m, f);
        assert_eq!(&c[..10], &[1u8; 10]);
        assert!(c[10..].iter().all(|b| *b == 0), "extended part reads zeros");
        m.power_cut();
        assert_eq!(
            content(&mut m, f),
            vec![1u8; 5000],
            "the cut restores the synced file"
        );
        m.truncate(f, 10).unwrap();
        m.sync_file(f).unwrap();
        m.truncate(f, 4097).unwrap();
        m.sync_file(f).unwrap();
        m.power_cut();
        let c = content(&mut m, f);
        assert_eq!(c.len(), 4097);
        assert!(c[10..].iter().all(|b| *b == 0));
    }

    #[test]
    fn written_back_pages_survive_and_the_gaps_read_zeros() {
        let (_d, mut m) = model();
        let f = m.create(ROOT, name("wal"), Kind::File, 0o644).unwrap();
        m.sync_dir(ROOT).unwrap();
        m.write(f, 0, b"synced").unwrap();
        m.sync_file(f).unwrap();
        m.write(f, 6, &[1u8; 3 * PAGE as usize]).unwrap();
        // Keep the second and fourth dirty pages (indexes 1 and 3).
        let mut n = 0;
        let cut = m.power_cut_after_writeback(|| {
            n += 1;
            n % 2 == 0
        });
        assert_eq!(cut.kept_bytes, 2 * PAGE);
        let c = content(&mut m, f);
        assert_eq!(c.len() as u64, 3 * PAGE + 6);
        assert_eq!(&c[..6], b"synced");
        assert!(
            c[6..PAGE as usize].iter().all(|b| *b == 0),
            "page 0's unsynced part was not kept"
        );
        assert!(c[PAGE as usize..2 * PAGE as usize].iter().all(|b| *b == 1));
        assert!(c[2 * PAGE as usize..3 * PAGE as usize]
            .iter()
            .all(|b| *b == 0));
        assert!(c[3 * PAGE as usize..].iter().all(|b| *b == 1));
    }

    #[test]
    fn an_unsynced_directory_loses_its_whole_subtree() {
        let (_d, mut m) = model();
        let dir = m.create(ROOT, name("data"), Kind::Dir, 0o755).unwrap();
        let f = m.create(dir, name("f"), Kind::File, 0o644).unwrap();
        m.write(f, 0, b"x").unwrap();
        m.sync_file(f).unwrap();
        m.sync_dir(dir).unwrap();
        let cut = m.power_cut();
        assert_eq!(cut.freed_inodes, 2);
        assert_eq!(m.lookup(ROOT, name("data")), Err(libc_errno::ENOENT));
    }
}

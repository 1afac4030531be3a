//! The synced high-water mark: the highest RocksDB sequence number known to be
//! in a synced WAL, kept in a small file of its own (`SYNCED_SEQ`) next to the
//! database.
//!
//! Why: RocksDB opens with `WALRecoveryMode::PointInTime`, which replays the
//! WAL up to its first damaged record and drops the rest. That is right for a
//! torn tail (the unsynced end of the log after `kill -9` or power loss), but
//! the same rule would silently drop acknowledged writes if the damage sat in
//! the synced part. Comparing the recovered sequence number with this mark
//! tells the two apart: recovering less than was synced means acknowledged
//! writes are gone, and [`check_recovered`] refuses to start.
//!
//! The mark may lag behind the truth (that only narrows what is detected),
//! never run ahead of it: a value is recorded only after the sync that covers
//! it succeeded. The syncer calls [`SyncedMark::advance`] after each WAL sync;
//! the keeper thread ([`SyncedMark::spawn_keeper`]) writes the file at most
//! every [`WRITE_EVERY`] (a `pwrite` into the page cache, so it survives
//! `kill -9`) and fsyncs it at most every [`SYNC_EVERY`] (so after a power cut
//! it lags by about that much). The keeper also syncs the WAL itself when
//! writes have waited that long without a sync (buffered durability, lazy ack
//! flushes): that bounds what a power cut can take in buffered mode, and lets
//! the mark cover those writes too. A failed sync there is fail-stop, like any
//! other.
//!
//! File format: two 24-byte slots, at offsets 0 and 4096 (separate sectors),
//! written alternately, each `seq u64 | generation u64 | magic u32 | crc32c
//! u32` (little endian, the checksum over the first 20 bytes). A torn write
//! damages one slot at most; the valid slot with the highest generation wins.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::DB;

use crate::error::{Error, Result};
use crate::health::HealthCell;

/// The file's name inside the data dir.
pub const FILE_NAME: &str = "SYNCED_SEQ";
/// How often the keeper writes a new mark into the file (page cache).
pub const WRITE_EVERY: Duration = Duration::from_millis(100);
/// How often the keeper fsyncs the file, and how long writes may wait for a
/// WAL sync before the keeper syncs the WAL itself.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

const SLOT_BYTES: usize = 24;
const SLOT_OFFSETS: [u64; 2] = [0, 4096];
const MAGIC: u32 = 0x4542_5351; // "EBSQ"

/// The mark, shared by the syncer (which advances it) and the keeper thread
/// (which persists it).
#[derive(Debug)]
pub struct SyncedMark {
    path: PathBuf,
    file: File,
    /// Highest sequence number covered by a successful WAL sync.
    synced: AtomicU64,
    /// Generation of the last slot written.
    generation: AtomicU64,
    stop: AtomicBool,
}

impl SyncedMark {
    /// Opens (or creates) the mark file in `dir` and reads the stored mark:
    /// `None` when the file is new or holds no valid slot yet.
    pub fn open(dir: &Path) -> Result<(Arc<SyncedMark>, Option<u64>)> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(&path, "open", e))?;
        let stored = read_slots(&file);
        let (seq, generation) = stored.unwrap_or((0, 0));
        let mark = Arc::new(SyncedMark {
            path,
            file,
            synced: AtomicU64::new(seq),
            generation: AtomicU64::new(generation),
            stop: AtomicBool::new(false),
        });
        Ok((mark, stored.map(|(seq, _)| seq)))
    }

    /// Where the mark lives (named in error messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that every write up to `seq` is in a synced WAL. Call only
    /// after the sync succeeded, with a sequence number read before it began.
    pub fn advance(&self, seq: u64) {
        self.synced.fetch_max(seq, Ordering::AcqRel);
    }

    /// The highest sequence number known to be synced.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Starts the keeper thread; it stops after [`SyncedMark::stop`], having
    /// written and fsynced the final mark.
    pub fn spawn_keeper(
        self: &Arc<Self>,
        db: Arc<DB>,
        health: HealthCell,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let mark = self.clone();
        std::thread::Builder::new()
            .name("eventbus-synced-mark".into())
            .spawn(move || mark.keep(&db, &health))
    }

    /// Asks the keeper to write the final mark and stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn keep(&self, db: &DB, health: &HealthCell) {
        let mut written = self.synced();
        let mut dirty = false;
        let mut last_fsync = Instant::now();
        let mut unsynced_since: Option<Instant> = None;
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            if health.failed().is_none() {
                // Writes that waited a whole SYNC_EVERY without a WAL sync
                // (buffered durability, lazy ack flushes) get one now.
                let latest = db.latest_sequence_number();
                if latest > self.synced() {
                    let since = *unsynced_since.get_or_insert_with(Instant::now);
                    if stopping || since.elapsed() >= SYNC_EVERY {
                        match db.flush_wal(true) {
                            Ok(()) => self.advance(latest),
                            Err(e) => health.fail(format!("WAL sync failed: {e}")),
                        }
                        unsynced_since = None;
                    }
                } else {
                    unsynced_since = None;
                }
            }
            let synced = self.synced();
            if synced > written {
                match self.write_slot(synced) {
                    Ok(()) => {
                        written = synced;
                        dirty = true;
                    }
                    Err(e) => tracing::warn!(path = %self.path.display(), error = %e,
                        "cannot write the synced mark; corruption inside the synced WAL may go undetected"),
                }
            }
            if dirty && (stopping || last_fsync.elapsed() >= SYNC_EVERY) {
                if let Err(e) = self.file.sync_data() {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot sync the synced mark");
                }
                dirty = false;
                last_fsync = Instant::now();
            }
            if stopping {
                return;
            }
            std::thread::sleep(WRITE_EVERY);
        }
    }

    fn write_slot(&self, seq: u64) -> std::io::Result<()> {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = encode_slot(seq, generation);
        self.file
            .write_all_at(&slot, SLOT_OFFSETS[(generation % 2) as usize])
    }
}

/// Fails when RocksDB recovered less than the mark says was synced: the
/// damage sits inside acknowledged data, and serving the shorter log would
/// lose those events silently (and hand their offsets out again).
pub fn check_recovered(recovered: u64, stored: Option<u64>, path: &Path) -> Result<()> {
    match stored {
        Some(synced) if recovered < synced => Err(Error::CorruptMetadata {
            location: path.display().to_string(),
            reason: format!(
                "the database recovered writes up to sequence number {recovered}, but writes up to \
                 {synced} had been synced and acknowledged: the write-ahead log is damaged or a file \
                 is missing inside its synced part. Refusing to start rather than serve a shorter \
                 log. Restore the data dir from a backup (eventbus restore), or, to accept the loss \
                 of those writes, delete {} and start again (see RUNBOOK.md, corruption)",
                path.display()
            ),
        }),
        _ => Ok(()),
    }
}

fn encode_slot(seq: u64, generation: u64) -> [u8; SLOT_BYTES] {
    let mut slot = [0u8; SLOT_BYTES];
    slot[0..8].copy_from_slice(&seq.to_le_bytes());
    slot[8..16].copy_from_slice(&generation.to_le_bytes());
    slot[16..20].copy_from_slice(&MAGIC.to_le_bytes());
    let crc = crc32c::crc32c(&slot[..20]);
    slot[20..24].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// `(seq, generation)` of a valid slot.
fn decode_slot(slot: &[u8; SLOT_BYTES]) -> Option<(u64, u64)> {
    let u32_at = |at: usize| u32::from_le_bytes(slot[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes"));
    if u32_at(16) != MAGIC || u32_at(20) != crc32c::crc32c(&slot[..20]) {
        return None;
    }
    Some((u64_at(0), u64_at(8)))
}

/// The valid slot with the highest generation, if any.
fn read_slots(file: &File) -> Option<(u64, u64)> {
    SLOT_OFFSETS
        .iter()
        .filter_map(|&offset| {
            let mut slot = [0u8; SLOT_BYTES];
            file.read_exact_at(&mut slot, offset).ok()?;
            decode_slot(&slot)
        })
        .max_by_key(|&(_, generation)| generation)
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::CorruptMetadata {
        location: path.display().to_string(),
        reason: format!("cannot {what} the synced mark: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_valid_slot_wins_and_a_torn_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mark, stored) = SyncedMark::open(dir.path()).unwrap();
        assert_eq!(stored, None, "a new file holds no mark");
        mark.write_slot(10).unwrap();
        mark.write_slot(25).unwrap();
        drop(mark);
        assert_eq!(SyncedMark::open(dir.path()).unwrap().1, Some(25));

        // Tear the newer slot (generation 2 lives at offset 0): the older one
        // still gives a lower bound.
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        file.write_all_at(&[0xff; 4], 2).unwrap();
        drop(file);
        let (mark, stored) = SyncedMark::open(dir.path()).unwrap();
        assert_eq!(stored, Some(10));
        // And writing goes on past the generation read back.
        mark.write_slot(30).unwrap();
        drop(mark);
        assert_eq!(SyncedMark::open(dir.path()).unwrap().1, Some(30));
    }

    #[test]
    fn recovering_less_than_was_synced_refuses_to_start() {
        let path = Path::new("/data/SYNCED_SEQ");
        assert!(check_recovered(100, None, path).is_ok());
        assert!(check_recovered(100, Some(100), path).is_ok());
        assert!(check_recovered(101, Some(100), path).is_ok());
        let err = check_recovered(99, Some(100), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("up to sequence number 99"), "{err}");
        assert!(err.contains("delete /data/SYNCED_SEQ"), "{err}");
    }

    #[test]
    fn advance_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mark, _) = SyncedMark::open(dir.path()).unwrap();
        mark.advance(7);
        mark.advance(3);
        assert_eq!(mark.synced(), 7);
    }
}

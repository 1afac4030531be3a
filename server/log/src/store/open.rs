//! Opening the store: the data dir, RocksDB and its column families, and
//! recovery of everything in memory (format version, id allocator,
//! incarnation, topics and their partition bounds). It never reads the
//! records themselves.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, IteratorMode, ReadOptions, DB};
use tokio::sync::{mpsc, Mutex};

use crate::batch::Records;
use crate::codec;
use crate::error::{storage, Error, Result};
use crate::health::HealthCell;
use crate::hot_tail::HotBudget;
use crate::keys::{self, Cf, MetaKind};
use crate::meta::TopicMeta;
use crate::options::Options;
use crate::space::SpaceGuard;
use crate::synced_mark::{self, SyncedMark};
use crate::topic::{PartitionBounds, TopicState};
use crate::types::{Durability, PartitionId, TopicId};
use crate::writer::{IdAllocator, Writer};

use super::audit::AuditClock;
use super::{corrupt_meta, Inner, Log};
use crate::dedup::Dedup;

/// On-disk format of this data dir. Bumped on incompatible layout changes.
/// 2: the `records` column family holds record batches ([`crate::batch`]).
/// 3: the `dedup` column family holds one group value per group commit
/// ([`crate::dedup`]).
const FORMAT_VERSION: u32 = 3;
/// Formats this build opens and upgrades in place, by restamping the
/// version only: format 1 stored one record per value, which is read as a
/// batch of one; formats 1 and 2 stored a key entry per idempotency key,
/// which is still looked up. A build that reads an older format only then
/// refuses the data dir, instead of missing the keys in group values.
const UPGRADABLE_FORMATS: [u32; 2] = [1, 2];
/// Commands queued for the writer before publishers wait (backpressure).
const WRITER_QUEUE: usize = 1024;

impl Log {
    /// Opens (or creates) the store. Blocking: call from `spawn_blocking`.
    ///
    /// Recovery cost is one metadata scan plus one seek per partition; it never
    /// reads the records themselves.
    pub fn open(options: Options) -> Result<Log> {
        create_dir_durably(&options.data_dir).map_err(|e| Error::CorruptMetadata {
            location: options.data_dir.display().to_string(),
            reason: format!("cannot create data dir: {e}"),
        })?;
        let (synced_mark, stored_mark) = SyncedMark::open(&options.data_dir)?;
        let db = Arc::new(open_db(&options.data_dir, options.write_buffer_bytes)?);
        // Before anything is written: did recovery keep every synced write?
        synced_mark::check_recovered(db.latest_sequence_number(), stored_mark, synced_mark.path())?;
        check_format_version(&db)?;
        let ids = read_ids(&db)?;
        let incarnation = next_incarnation(&db)?;
        let hot_budget = HotBudget::new(options.hot_tail_bytes);
        let topics = load_topics(&db, &hot_budget)?;
        let audit = AuditClock::load(&db)?;

        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
        let health = HealthCell::default();
        let dedup = Dedup::recover(
            &db,
            db.cf_handle(Cf::Dedup.name()).expect("dedup cf"),
            topics.values().map(|t| t.meta.id),
            crate::types::saturating_millis(options.dedup_window),
            crate::meta::now_ms(),
        )?;
        let writer = Writer::new(
            db.clone(),
            writer_rx,
            options.durability == Durability::Fsync,
            dedup,
            health.clone(),
            SpaceGuard::new(options.data_dir.clone(), options.disk_reserve_bytes),
            synced_mark.clone(),
        );
        let writer_thread = std::thread::Builder::new()
            .name("eventbus-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| corrupt_meta("writer thread", e.to_string()))?;
        let mark_keeper = synced_mark
            .spawn_keeper(db.clone(), health.clone())
            .map_err(|e| corrupt_meta("synced-mark thread", e.to_string()))?;

        tracing::info!(
            data_dir = %options.data_dir.display(),
            topics = topics.len(),
            incarnation,
            durability = %options.durability,
            "log opened"
        );
        Ok(Log {
            inner: Arc::new(Inner {
                db,
                options,
                writer_tx: Some(writer_tx),
                writer_thread: std::sync::Mutex::new(Some(writer_thread)),
                topics: ArcSwap::from_pointee(topics),
                admin: Mutex::new(ids),
                incarnation,
                health,
                synced_mark,
                mark_keeper: std::sync::Mutex::new(Some(mark_keeper)),
                audit: Mutex::new(audit),
                hot_budget,
            }),
        })
    }
}

/// Checks the data dir's format version, or stamps a new data dir with ours.
fn check_format_version(db: &DB) -> Result<()> {
    let meta_cf = db.cf_handle(Cf::Meta.name()).expect("meta cf");
    match db
        .get_cf(meta_cf, keys::meta_key(MetaKind::FormatVersion))
        .map_err(storage)?
    {
        Some(v) => {
            let version = u32::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| corrupt_meta("format version", "not 4 bytes"))?,
            );
            if UPGRADABLE_FORMATS.contains(&version) {
                tracing::info!(
                    from = version,
                    to = FORMAT_VERSION,
                    "upgrading the data dir's format in place; older builds will refuse it from now on"
                );
                stamp_format_version(db)?;
            } else if version != FORMAT_VERSION {
                return Err(corrupt_meta(
                    "format version",
                    format!("data dir has format {version}, this build reads {FORMAT_VERSION} and upgrades {UPGRADABLE_FORMATS:?}; run the build that wrote it (see RUNBOOK.md, planned maintenance)"),
                ));
            }
        }
        None => stamp_format_version(db)?,
    }
    Ok(())
}

/// Writes this build's format version, synced: the stamp must be durable
/// before any record in the new format is.
fn stamp_format_version(db: &DB) -> Result<()> {
    let meta_cf = db.cf_handle(Cf::Meta.name()).expect("meta cf");
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(
        meta_cf,
        keys::meta_key(MetaKind::FormatVersion),
        FORMAT_VERSION.to_be_bytes(),
        &opts,
    )
    .map_err(storage)
}

/// The persisted id allocator, or the first ids of a new data dir.
fn read_ids(db: &DB) -> Result<IdAllocator> {
    let meta_cf = db.cf_handle(Cf::Meta.name()).expect("meta cf");
    match db
        .get_cf(meta_cf, keys::meta_key(MetaKind::IdAllocator))
        .map_err(storage)?
    {
        Some(v) => {
            IdAllocator::decode(&v).ok_or_else(|| corrupt_meta("id allocator", "not 8 bytes"))
        }
        None => Ok(IdAllocator::FIRST),
    }
}

/// Bumps the incarnation (synced) and returns the new one; see
/// [`MetaKind::Incarnation`].
fn next_incarnation(db: &DB) -> Result<u64> {
    let meta_cf = db.cf_handle(Cf::Meta.name()).expect("meta cf");
    let incarnation = match db
        .get_cf(meta_cf, keys::meta_key(MetaKind::Incarnation))
        .map_err(storage)?
    {
        Some(v) => {
            u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| corrupt_meta("incarnation", "not 8 bytes"))?,
            ) + 1
        }
        None => 1,
    };
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.put_cf_opt(
        meta_cf,
        keys::meta_key(MetaKind::Incarnation),
        incarnation.to_be_bytes(),
        &wo,
    )
    .map_err(storage)?;
    Ok(incarnation)
}

/// Every topic with its partitions' bounds: one metadata scan plus two seeks
/// per partition.
fn load_topics(db: &DB, hot_budget: &Arc<HotBudget>) -> Result<HashMap<String, Arc<TopicState>>> {
    let meta_cf = db.cf_handle(Cf::Meta.name()).expect("meta cf");
    let mut topics = HashMap::new();
    let prefix = [MetaKind::Topic as u8];
    for item in db.iterator_cf(
        meta_cf,
        IteratorMode::From(&prefix, rocksdb::Direction::Forward),
    ) {
        let (k, v) = item.map_err(storage)?;
        if k.first() != Some(&(MetaKind::Topic as u8)) {
            break;
        }
        let meta: TopicMeta = serde_json::from_slice(&v).map_err(|e| {
            corrupt_meta(
                &format!("topic {:?}", String::from_utf8_lossy(&k[1..])),
                e.to_string(),
            )
        })?;
        let ends = (0..meta.partitions)
            .map(|p| partition_bounds(db, meta.id, p))
            .collect::<Result<Vec<_>>>()?;
        topics.insert(
            meta.name.clone(),
            Arc::new(TopicState::new(meta, ends, hot_budget)),
        );
    }
    Ok(topics)
}

/// The bounds of a partition: two seeks, no scan.
fn partition_bounds(db: &DB, topic: TopicId, partition: PartitionId) -> Result<PartitionBounds> {
    let cf = db.cf_handle(Cf::Records.name()).expect("records cf");
    let lower = keys::record_key(topic, partition, 0);
    let upper = keys::record_key(topic, partition, u64::MAX);
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(lower.to_vec());
    ro.set_iterate_upper_bound(upper.to_vec());
    let mut it = db.raw_iterator_cf_opt(cf, ro);
    // A key that does not parse must not make the partition look empty (its
    // offsets would be handed out again): refuse to start instead.
    let offset_of = |k: &[u8]| {
        keys::parse_record_key(k).map(|(_, _, o)| o).ok_or_else(|| {
            corrupt_meta(
                &format!("topic {topic} partition {partition}"),
                format!("malformed record key {k:02x?}"),
            )
        })
    };
    it.seek_to_last();
    let last_base = it.key().map(offset_of).transpose()?;
    // The last value's count gives the next offset, so its framing must be
    // sound: a guess would hand out offsets again. Its newest record's
    // publish time keeps publish times monotonic across the restart.
    let last = match (last_base, it.value()) {
        (Some(base), Some(v)) => {
            let (count, newest) = Records::last(v).map_err(|e| {
                corrupt_meta(
                    &format!("topic {topic} partition {partition} offset {base}"),
                    format!("the newest record batch is damaged ({e}); restore the data dir from a backup (see RUNBOOK.md, corruption)"),
                )
            })?;
            let publish_ms = codec::record_publish_time(&v[newest]).unwrap_or(0);
            Some((base + u64::from(count) - 1, publish_ms))
        }
        _ => None,
    };
    it.seek_to_first();
    let first = it.key().map(offset_of).transpose()?;
    it.status().map_err(storage)?;
    Ok(match (first, last) {
        (Some(f), Some((l, last_publish_ms))) => PartitionBounds {
            start: f,
            end: l + 1,
            last_publish_ms,
            bytes: db
                .get_approximate_sizes_cf(cf, &[rocksdb::Range::new(&lower, &upper)])
                .first()
                .copied()
                .unwrap_or(0),
        },
        _ => PartitionBounds::default(),
    })
}

/// Creates `dir` and its missing parents, and fsyncs the parent of each one
/// created: a new directory entry is durable only once its parent directory
/// is synced, and RocksDB syncs only the entries inside its own directory.
/// Without this, a power cut could take a freshly created data dir, with
/// every event acknowledged into it, and the server would start empty.
fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// WAL files kept for reuse once RocksDB no longer needs them.
const RECYCLED_WAL_FILES: usize = 4;

pub(crate) fn open_db(path: &Path, write_buffer_bytes: usize) -> Result<DB> {
    let mut db_opts = rocksdb::Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_background_jobs(2);
    db_opts.set_bytes_per_sync(1 << 20);
    // Keep the WAL bounded: column families with little traffic (meta, subs) must
    // not pin old WAL files forever. Four records memtables' worth (256 MiB
    // by default); a small memtable (the power-loss tier's) thus also makes
    // WAL files obsolete, and recycled, often.
    db_opts.set_max_total_wal_size(4 * write_buffer_bytes as u64);
    // After kill -9 or a power cut the WAL may end in a torn record: recover
    // the prefix before it (PointInTime), never skip past damage and replay
    // what follows (SkipAnyCorruptedRecords would reorder history). Damage
    // inside the synced part would make PointInTime drop acknowledged writes;
    // the synced mark (synced_mark.rs) detects that and refuses to start, and
    // RocksDB itself checks that no synced WAL file went missing or shrank.
    db_opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
    db_opts.set_track_and_verify_wals_in_manifest(true);
    // Reuse WAL files instead of creating new ones. An fdatasync of a file
    // that grew must also write its inode (the new size), a second device
    // write per sync; an overwrite inside a reused file does not. A sync
    // takes ~17 % less time and CPU once the first WAL files have been
    // recycled (BENCHMARKS.md, issue 15, seventh step). Recycled records
    // carry their file's log number, so at recovery stale records of the
    // file's earlier life end the log like a torn tail (PointInTime; RocksDB
    // turns recycling off for the two modes that cannot tell them apart).
    // The power-loss tier runs with a 1 MiB memtable, so files are recycled
    // between its cuts. Costs up to this many idle WAL files of disk.
    db_opts.set_recycle_log_file_num(RECYCLED_WAL_FILES);

    let mut table = BlockBasedOptions::default();
    table.set_block_size(16 * 1024);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);

    let cfs = Cf::ALL.iter().map(|&cf| {
        let mut o = rocksdb::Options::default();
        o.set_block_based_table_factory(&table);
        // The other column families hold small state; a quarter of the
        // records memtable is plenty. Every memtable size bounds the free disk
        // a flush needs, which is what RocksDB waits for before it recovers
        // from an out-of-space error by itself.
        o.set_write_buffer_size((write_buffer_bytes / 4).max(1 << 20));
        if cf == Cf::Dedup {
            // Point lookups of key entries come here only while some keys
            // of the window are key entries (see `dedup`); then nearly every
            // key is new, and a memtable bloom filter answers those without
            // a skiplist search.
            o.set_memtable_prefix_bloom_ratio(0.1);
            o.set_memtable_whole_key_filtering(true);
        }
        if cf == Cf::Records {
            // Records are written once in key order per partition and read mostly
            // sequentially; compress the bulk but keep the hot levels fast.
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
            o.set_write_buffer_size(write_buffer_bytes);
        }
        ColumnFamilyDescriptor::new(cf.name(), o)
    });
    // The `default` column family is unused, but opened anyway; left at
    // RocksDB's 64 MiB memtable it would raise the free space RocksDB waits
    // for before it recovers from ENOSPC.
    let mut default_cf = rocksdb::Options::default();
    default_cf.set_write_buffer_size(1 << 20);
    let cfs = cfs.chain(std::iter::once(ColumnFamilyDescriptor::new(
        rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
        default_cf,
    )));
    DB::open_cf_descriptors(&db_opts, path, cfs).map_err(storage)
}

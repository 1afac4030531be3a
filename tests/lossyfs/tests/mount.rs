//! The filesystem through the kernel: real `write`, `fsync`, `rename` and
//! directory `fsync` calls on a mounted `lossyfs`, then a power cut.
//! Skipped (with a message) where FUSE cannot be mounted.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use lossyfs::LossyFs;

fn mounted() -> Option<(tempfile::TempDir, LossyFs)> {
    if let Some(why) = lossyfs::unusable() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, mnt) = (dir.path().join("store"), dir.path().join("mnt"));
    fs::create_dir(&store).expect("store dir");
    fs::create_dir(&mnt).expect("mount dir");
    let fs = LossyFs::mount(&store, &mnt).expect("mount");
    Some((dir, fs))
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
}

#[test]
fn a_power_cut_keeps_exactly_what_was_synced() {
    let Some((_dir, mut fs)) = mounted() else {
        return;
    };
    let root = fs.mountpoint().to_path_buf();
    let db = root.join("db");
    fs::create_dir(&db).expect("mkdir");
    sync_dir(&root);

    // A log: one synced record, then one written but not synced.
    let mut wal = OpenOptions::new()
        .create(true)
        .append(true)
        .open(db.join("000001.log"))
        .expect("create log");
    sync_dir(&db);
    wal.write_all(b"record-1;").expect("write");
    wal.sync_data().expect("fdatasync");
    wal.write_all(b"record-2;").expect("write");
    // CURRENT replaced the RocksDB way: temp file, fsync, rename, dir fsync.
    fs::write(db.join("CURRENT"), b"MANIFEST-1\n").expect("write CURRENT");
    File::open(db.join("CURRENT")).unwrap().sync_all().unwrap();
    sync_dir(&db);
    fs::write(db.join("CURRENT.tmp"), b"MANIFEST-2\n").expect("write tmp");
    File::open(db.join("CURRENT.tmp"))
        .unwrap()
        .sync_all()
        .unwrap();
    fs::rename(db.join("CURRENT.tmp"), db.join("CURRENT")).expect("rename");
    sync_dir(&db);
    // Synced data, but its directory entry was never synced.
    let mut orphan = File::create(db.join("000002.sst")).expect("create sst");
    orphan.write_all(b"table").unwrap();
    orphan.sync_all().unwrap();
    // Read back before the cut: everything is visible.
    assert_eq!(
        fs::read(db.join("000001.log")).unwrap(),
        b"record-1;record-2;"
    );
    assert!(fs.dirty_bytes() > 0);
    drop((wal, orphan));

    let cut = fs.power_cut().expect("power cut");
    println!("cut dropped {cut}");
    assert_eq!(fs::read(db.join("000001.log")).unwrap(), b"record-1;");
    assert_eq!(fs::read(db.join("CURRENT")).unwrap(), b"MANIFEST-2\n");
    assert!(
        !db.join("000002.sst").exists(),
        "its directory entry was not synced"
    );
    assert!(!db.join("CURRENT.tmp").exists());
    assert_eq!(fs.dirty_bytes(), 0);
    assert!(cut.dirty_files >= 1 && cut.dir_changes >= 1, "{cut}");

    // The remounted filesystem works as before.
    fs::write(db.join("after"), b"x").expect("write after the cut");
    assert_eq!(fs::read(db.join("after")).unwrap(), b"x");
    let names: Vec<String> = fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    fs.unmount().expect("unmount");
}

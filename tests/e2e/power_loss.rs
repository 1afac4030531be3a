//! The power-loss tier's CI run: the kill loop with a power cut at every
//! kill (the data dir on the lossyfs FUSE filesystem, which drops every write
//! and directory change the server had not synced; in one run after writing
//! a random half of the unsynced pages back first). In fsync mode no
//! acknowledged publish may be lost; in buffered mode a cut may take the
//! unsynced suffix of each partition (its figures are printed), and nothing
//! else: no holes, no reused offsets, the server starts every time. The long
//! tier is `cargo xtask power-loss`; figures in RELIABILITY.md. Skipped, with
//! a message, where FUSE cannot be mounted (no /dev/fuse, not root).

use eventbus_tests::kill_loop::{self, Config, Durability};

const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");

async fn power_loss(cycles: u32, durability: Durability, writeback: bool) {
    if let Some(why) = lossyfs::unusable() {
        println!("SKIPPED: the power-loss tier needs a FUSE mount: {why}");
        return;
    }
    let mut config = Config::new(BIN, cycles, durability);
    config.power_cut = true;
    if writeback {
        // Half the unsynced pages reach the disk before the cut, and a 1 MiB
        // memtable makes RocksDB switch WAL files and write SSTs between cuts.
        config.writeback = true;
        config.write_buffer_bytes = Some(1 << 20);
    }
    let summary = kill_loop::run(config).await;
    assert!(
        summary.is_clean(),
        "the power-loss loop found faults:\n{summary}"
    );
    let power = summary.power.as_ref().expect("power cut figures");
    assert_eq!(power.cuts, cycles + 1, "a cut per kill:\n{summary}");
    if durability == Durability::Fsync {
        assert_eq!(power.lost, 0, "acknowledged publishes lost:\n{summary}");
    }
    // In buffered mode a cut may take every publish acknowledged since the
    // last WAL sync: count those as having run too.
    assert!(
        summary.acked_publishes + power.lost > 0 && summary.acks > 0,
        "the workload ran:\n{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_fsync_5_cycles() {
    power_loss(5, Durability::Fsync, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_fsync_5_cycles_with_writeback() {
    power_loss(5, Durability::Fsync, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_buffered_3_cycles() {
    power_loss(3, Durability::Buffered, false).await;
}

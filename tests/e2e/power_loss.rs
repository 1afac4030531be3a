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
        // At 3000 events/s the WAL passes its bound (4 memtables) every few
        // seconds, so obsolete WAL files are recycled and cuts land in
        // reused ones too.
        config.writeback = true;
        config.write_buffer_bytes = Some(1 << 20);
        config.rate = 3000;
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
    if eventbus_tests::skip_on_jetstream(
        "cuts power under RocksDB's WAL (a failpoint loses what was not fsynced); in cluster mode the gateway keeps nothing and each NATS node's own fsync is the engine's (cluster_faults:: kills nodes instead)",
    ) {
        return;
    }
    power_loss(5, Durability::Fsync, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_fsync_5_cycles_with_writeback() {
    if eventbus_tests::skip_on_jetstream(
        "cuts power under RocksDB's WAL (a failpoint loses what was not fsynced); in cluster mode the gateway keeps nothing and each NATS node's own fsync is the engine's (cluster_faults:: kills nodes instead)",
    ) {
        return;
    }
    power_loss(5, Durability::Fsync, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_buffered_3_cycles() {
    if eventbus_tests::skip_on_jetstream(
        "cuts power under RocksDB's WAL (a failpoint loses what was not fsynced); in cluster mode the gateway keeps nothing and each NATS node's own fsync is the engine's (cluster_faults:: kills nodes instead)",
    ) {
        return;
    }
    power_loss(3, Durability::Buffered, false).await;
}

/// A data dir the server creates on its first start must survive a power
/// cut like what it holds: an acknowledged publish in fsync mode is durable
/// only if every directory on its path is. Here nothing but the server
/// creates `data/` inside the mount.
///
/// Found by the power-loss tier: `Log::open` created the data dir with
/// `create_dir_all` and never fsynced its parent, and RocksDB syncs only the
/// entries inside the DB directory. After the cut the whole data dir was
/// gone and the server started on a new, empty store without a word: the
/// topic NOT_FOUND and the acknowledged publish lost. (ext4 and XFS usually
/// commit the mkdir with the first fsync inside it; POSIX does not promise
/// that.) Now the parent of every directory it creates is fsynced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_created_by_the_server_survives_a_power_cut() {
    if eventbus_tests::skip_on_jetstream(
        "cuts power under RocksDB's WAL (a failpoint loses what was not fsynced); in cluster mode the gateway keeps nothing and each NATS node's own fsync is the engine's (cluster_faults:: kills nodes instead)",
    ) {
        return;
    }
    if let Some(why) = lossyfs::unusable() {
        println!("SKIPPED: needs a FUSE mount: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, mnt) = (dir.path().join("store"), dir.path().join("mnt"));
    std::fs::create_dir(&store).expect("store dir");
    std::fs::create_dir(&mnt).expect("mount point");
    let mut fs = lossyfs::LossyFs::mount(&store, &mnt).expect("mount lossyfs");
    let data = mnt.join("data");

    let server = eventbus_tests::ChildServer::start(BIN, &data, &[]).await;
    let client = eventbus::Client::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    client
        .admin()
        .create_topic("t", 1)
        .await
        .expect("create topic");
    let published = client
        .publisher("t")
        .send(eventbus::Event::new("power.test", "acknowledged"))
        .await
        .expect("send")
        .await
        .expect("publish answered OK");
    server.kill9().await;
    let cut = fs.power_cut().expect("power cut");

    let server = eventbus_tests::ChildServer::try_start(BIN, &data, &[], &[])
        .await
        .unwrap_or_else(|why| panic!("after a cut that dropped {cut}: {why}"));
    let client = eventbus::Client::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    let topic = client.admin().get_topic("t").await;
    let end = topic
        .as_ref()
        .ok()
        .and_then(|t| t.partition_info.first())
        .map(|p| p.end_offset);
    assert_eq!(
        end,
        Some(published.offset + 1),
        "the acknowledged publish at offset {} is gone after a cut that dropped {cut}; GetTopic: {topic:?}",
        published.offset
    );
    drop(server);
}

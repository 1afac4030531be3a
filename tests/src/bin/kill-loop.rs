//! `kill-loop`: the Jepsen-style kill loop as a command, for the long tier.
//! `cargo xtask kill-loop --cycles 200 --durability fsync` builds and runs it;
//! see RELIABILITY.md for the figures and `eventbus_tests::kill_loop` for what
//! is checked. Exits 1 when any check fails. `--power-cut` adds a power cut
//! to every kill (`cargo xtask power-loss`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use eventbus_tests::kill_loop::{self, Config, Durability};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Fsync,
    Buffered,
}

#[derive(Parser, Debug)]
#[command(
    about = "kill -9 the eventbus server again and again under load, and verify nothing acknowledged is lost"
)]
struct Args {
    /// Kill/restart cycles.
    #[arg(long, default_value_t = 200)]
    cycles: u32,
    /// The server's durability mode.
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Mode,
    /// The server binary, run as `BIN serve`. Default: `eventbus-under-test`
    /// next to this binary.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Seed of the kill times and the consumers' choices (printed when random).
    #[arg(long)]
    seed: Option<u64>,
    /// Events per second, all publishers together.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Members of the consumer group.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Shortest time (ms) the server is up before a kill.
    #[arg(long, default_value_t = 300)]
    min_up_ms: u64,
    /// Longest time (ms) the server is up before a kill.
    #[arg(long, default_value_t = 3000)]
    max_up_ms: u64,
    /// Margin (ms) on top of the ack-flush-interval before a redelivered acked
    /// event counts as a floor regression.
    #[arg(long)]
    grace_margin_ms: Option<u64>,
    /// Read the whole log back every this many cycles (the others read the
    /// tail); the end always reads it all.
    #[arg(long, default_value_t = 10)]
    full_check_every: u32,
    /// Cut the power with every kill: the data dir is on a FUSE filesystem
    /// (lossyfs) that drops every unsynced write and directory change between
    /// the kill and the restart. Needs /dev/fuse and root.
    #[arg(long)]
    power_cut: bool,
    /// The server's write-buffer-bytes (memtable size, at least 1048576):
    /// small values make RocksDB flush and switch WAL files during the run.
    #[arg(long)]
    write_buffer_bytes: Option<usize>,
    /// With --power-cut: before each cut, write back a random half of the
    /// unsynced pages, in no order (a kernel flushing dirty pages in the
    /// background), instead of dropping them all.
    #[arg(long)]
    writeback: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let server_bin = args.server_bin.unwrap_or_else(|| {
        std::env::current_exe()
            .expect("current exe")
            .with_file_name("eventbus-under-test")
    });
    let durability = match args.durability {
        Mode::Fsync => Durability::Fsync,
        Mode::Buffered => Durability::Buffered,
    };
    let mut config = Config::new(server_bin, args.cycles, durability);
    config.seed = args.seed;
    config.rate = args.rate;
    config.partitions = args.partitions;
    config.members = args.members;
    config.full_check_every = args.full_check_every;
    config.power_cut = args.power_cut;
    config.write_buffer_bytes = args.write_buffer_bytes;
    config.writeback = args.writeback;
    config.up = (
        Duration::from_millis(args.min_up_ms),
        Duration::from_millis(args.max_up_ms.max(args.min_up_ms)),
    );
    if let Some(ms) = args.grace_margin_ms {
        config.grace_margin = Duration::from_millis(ms);
    }
    let summary = kill_loop::run(config).await;
    if !summary.is_clean() {
        std::process::exit(1);
    }
}

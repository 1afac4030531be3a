//! Shared fixtures of the criterion micro-benchmarks in `benches/benches/`.
//!
//! The benchmarks drive `eventbus-log` directly (no gRPC), each on a fresh
//! temporary data dir. Results and the commands live in `BENCHMARKS.md`.
//!
//! `cargo test --workspace --all-targets` also builds the bench targets and runs
//! each benchmark once in criterion's *test mode*; [`quick`] tells the fixtures
//! to use small datasets then, so that run stays a few seconds.

use std::time::Duration;

use bytes::Bytes;
use eventbus_log::internals::TopicState;
use eventbus_log::{Durability, Log, NewEvent, Options, TopicConfig};
use std::sync::Arc;
use tempfile::TempDir;

/// True when the benchmark runs as a smoke test rather than a measurement:
/// criterion's test mode (`cargo test`, i.e. no `--bench` argument) or an
/// unoptimised build. Fixtures then use small datasets.
pub fn quick() -> bool {
    cfg!(debug_assertions) || !std::env::args().any(|a| a == "--bench")
}

/// Picks the real or the quick size of a dataset.
pub fn size(real: usize, quick_size: usize) -> usize {
    if quick() {
        quick_size
    } else {
        real
    }
}

/// The runtime the benchmarks drive the engine from: multi-threaded like the
/// server's, two workers (the benchmark machine has two cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A payload of `len` bytes that does not compress (RocksDB compresses
/// SST files with LZ4/ZSTD; real payloads are rarely all zeroes).
pub fn payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// `n` events of `payload_len` bytes each, unkeyed (spread round-robin over
/// the partitions), with a type and a content type like real publishes.
pub fn events(n: usize, payload_len: usize) -> Vec<NewEvent> {
    let body = payload(payload_len, 42);
    (0..n)
        .map(|_| NewEvent {
            event_type: "order.created".into(),
            content_type: "application/octet-stream".into(),
            payload: body.clone(),
            ..Default::default()
        })
        .collect()
}

/// A freshly opened log on its own temporary data dir. Drop (or [`close`])
/// removes the dir.
///
/// [`close`]: TempLog::close
pub struct TempLog {
    pub log: Log,
    dir: TempDir,
}

impl TempLog {
    /// Opens a log with `durability` on a new temp dir. Blocking.
    pub fn open(durability: Durability) -> TempLog {
        let dir = tempfile::Builder::new()
            .prefix("eventbus-bench-")
            .tempdir()
            .expect("temp dir");
        let mut options = Options::new(dir.path());
        options.durability = durability;
        // Retention never runs during a benchmark.
        options.retention_interval = Duration::from_secs(3600);
        let log = Log::open(options).expect("open log");
        TempLog { log, dir }
    }

    /// Creates a topic with `partitions` partitions.
    pub fn topic(
        &self,
        rt: &tokio::runtime::Runtime,
        name: &str,
        partitions: u32,
    ) -> Arc<TopicState> {
        rt.block_on(self.log.create_topic(
            name,
            TopicConfig {
                partitions,
                ..Default::default()
            },
        ))
        .expect("create topic")
    }

    /// Closes the log (stopping its writer thread), then removes the dir.
    pub fn close(self) {
        let TempLog { log, dir } = self;
        log.close();
        drop(dir);
    }
}

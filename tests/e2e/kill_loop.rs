//! The kill loop's CI tier: 30 cycles of `kill -9` in fsync mode and 10 in
//! buffered mode against the real binary, under publishers and a consumer
//! group, checked after every restart (see `eventbus_tests::kill_loop`). The
//! long tier (200 cycles) is `cargo xtask kill-loop`; figures in RELIABILITY.md.

use eventbus_tests::kill_loop::{self, Config, Durability};

const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");

async fn kill_loop(cycles: u32, durability: Durability) {
    let summary = kill_loop::run(Config::new(BIN, cycles, durability)).await;
    assert!(summary.is_clean(), "the kill loop found faults:\n{summary}");
    assert!(
        summary.acked_publishes > 0 && summary.acks > 0,
        "the workload ran:\n{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_loop_fsync_30_cycles() {
    if eventbus_tests::skip_on_jetstream(
        "a kill -9 loop of the RocksDB server and its recovery; cluster mode's loop kills NATS nodes under load (cluster_faults::node_kill_loop_loses_nothing)",
    ) {
        return;
    }
    kill_loop(30, Durability::Fsync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_loop_buffered_10_cycles() {
    if eventbus_tests::skip_on_jetstream(
        "a kill -9 loop of the RocksDB server and its recovery; cluster mode's loop kills NATS nodes under load (cluster_faults::node_kill_loop_loses_nothing)",
    ) {
        return;
    }
    kill_loop(10, Durability::Buffered).await;
}

//! The consume phase: members of one subscription drain the backlog, acking
//! every event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventbus::Client;
use tokio::time::Instant;
use tokio_stream::StreamExt;

use super::{BenchArgs, Outcome};

pub async fn run(
    clients: &[Client],
    topic: &str,
    a: &BenchArgs,
    target: u64,
    timeout: Duration,
    o: &mut Outcome,
) -> anyhow::Result<()> {
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut members = tokio::task::JoinSet::new();
    for client in clients {
        let mut deliveries = super::member(client, topic, a.depth);
        let acked = acked.clone();
        members.spawn(async move {
            let mut acks = tokio::task::JoinSet::new();
            while let Some(Ok(d)) = deliveries.next().await {
                let acked = acked.clone();
                acks.spawn(async move {
                    if d.ack().await.is_ok() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                });
                while let Some(done) = acks.try_join_next() {
                    done.ok();
                }
            }
        });
    }
    let deadline = started + timeout;
    while acked.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    o.consume_secs = started.elapsed().as_secs_f64();
    o.consumed = acked.load(Ordering::Relaxed);
    if o.consumed < target {
        o.timed_out.push("consume");
    }
    members.abort_all();
    Ok(())
}

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
    let started = Instant::now();
    let mut members = tokio::task::JoinSet::new();
    let mut stats = Vec::new();
    for client in clients {
        let mut deliveries = super::member(client, topic, a);
        stats.push(deliveries.settle_stats());
        // Each ack is queued, not awaited: the next deliveries need not wait
        // for an ack's round trip, and no ack needs a task or a reply channel
        // of its own. The server's answers are counted in the settle stats.
        members.spawn(async move {
            while let Some(Ok(d)) = deliveries.next().await {
                if d.ack_queued().await.is_err() {
                    return;
                }
            }
        });
    }
    let acked = || stats.iter().map(|s| s.get().acked).sum();
    drained(members, acked, target, started + timeout, o).await;
    o.consume_secs = started.elapsed().as_secs_f64();
    Ok(())
}

/// A member's loop: every item of `items` is acked by `ack` in a task of
/// its own (the next deliveries need not wait for an ack's round trip), and
/// each ack that succeeds counts in `acked`. Ends with the stream.
pub(crate) async fn ack_each<T, E, S, F, A>(mut items: S, acked: Arc<AtomicU64>, ack: F)
where
    S: tokio_stream::Stream<Item = Result<T, E>> + Unpin,
    F: Fn(T) -> A,
    A: std::future::Future<Output = bool> + Send + 'static,
{
    let mut acks = tokio::task::JoinSet::new();
    while let Some(Ok(item)) = items.next().await {
        let (acked, done) = (acked.clone(), ack(item));
        acks.spawn(async move {
            if done.await {
                acked.fetch_add(1, Ordering::Relaxed);
            }
        });
        while let Some(done) = acks.try_join_next() {
            done.ok();
        }
    }
}

/// Waits until `acked()` counts `target` acks or `deadline` passes, records
/// the count (and a timeout) in `o`, then stops the members.
pub(crate) async fn drained(
    mut members: tokio::task::JoinSet<()>,
    acked: impl Fn() -> u64,
    target: u64,
    deadline: Instant,
    o: &mut Outcome,
) {
    while acked() < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    o.consumed = acked();
    if o.consumed < target {
        o.timed_out.push("consume");
    }
    members.abort_all();
}

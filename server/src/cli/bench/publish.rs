//! The publish phase: N connections × depth publishes in flight.

use std::collections::VecDeque;
use std::time::Duration;

use eventbus::{Client, Event, PublisherConfig};
use tokio::time::Instant;

use super::{BenchArgs, Outcome};

pub async fn run(
    clients: &[Client],
    topic: &str,
    a: &BenchArgs,
    timeout: Duration,
    o: &mut Outcome,
) -> anyhow::Result<()> {
    let n = clients.len() as u64;
    let started = Instant::now();
    let deadline = started + timeout;
    let mut workers = tokio::task::JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        // Split the messages evenly; the first ones take the remainder.
        let count = a.messages / n + u64::from((i as u64) < a.messages % n);
        let publisher = client.publisher_with(
            topic,
            PublisherConfig {
                idempotent: !a.no_idempotency,
                max_in_flight_batches: a.lanes.max(1),
                stream: !a.unary_publish,
                ..Default::default()
            },
        );
        let (depth, size) = (a.depth.max(1), a.payload);
        workers.spawn(async move {
            let body = bytes::Bytes::from(super::payload(size, 0));
            let (mut ok, mut err) = (0u64, 0u64);
            let mut in_flight = VecDeque::with_capacity(depth);
            for _ in 0..count {
                if Instant::now() > deadline {
                    break;
                }
                if in_flight.len() >= depth {
                    let h: eventbus::PublishHandle = in_flight.pop_front().expect("non-empty");
                    match h.await {
                        Ok(_) => ok += 1,
                        Err(_) => err += 1,
                    }
                }
                match publisher.send(Event::new("bench", body.clone())).await {
                    Ok(h) => in_flight.push_back(h),
                    Err(_) => err += 1,
                }
            }
            for h in in_flight {
                match tokio::time::timeout_at(deadline, h).await {
                    Ok(Ok(_)) => ok += 1,
                    _ => err += 1,
                }
            }
            (ok, err, publisher.stats().batches)
        });
    }
    while let Some(res) = workers.join_next().await {
        let (ok, err, calls) = res?;
        o.pub_calls += calls;
        o.pub_ok += ok;
        o.pub_err += err;
    }
    o.pub_secs = started.elapsed().as_secs_f64();
    if o.pub_ok + o.pub_err < a.messages {
        o.timed_out.push("publish");
    }
    Ok(())
}

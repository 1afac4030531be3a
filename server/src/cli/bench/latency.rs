//! The latency phase: one publisher paced at a fixed rate; members record
//! receipt time minus scheduled send time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::{Client, Event};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tokio_stream::StreamExt;

use super::{now_ns, payload, stamp_of, BenchArgs, Outcome};

pub struct Latency {
    pub sent: u64,
    /// Microseconds.
    pub hist: Histogram<u64>,
}

pub async fn run(
    clients: &[Client],
    a: &BenchArgs,
    timeout: Duration,
    o: &mut Outcome,
) -> anyhow::Result<()> {
    let topic = super::fresh_topic(&clients[0], "lat", a.partitions, true).await?;
    // 1 µs to 1 h at 3 significant digits. (`Histogram::new` starts tiny and
    // only grows on `record`; `saturating_record` would clamp instead.)
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        3_600_000_000,
        3,
    )?));
    let mut members = tokio::task::JoinSet::new();
    for client in clients {
        let mut deliveries = super::member(client, &topic, a);
        let hist = hist.clone();
        members.spawn(async move {
            while let Some(Ok(d)) = deliveries.next().await {
                let received = now_ns();
                let sent = stamp_of(d.payload());
                let us = received.saturating_sub(sent) / 1000;
                hist.lock()
                    .expect("not poisoned")
                    .saturating_record(us.max(1));
                tokio::spawn(d.ack());
            }
        });
    }
    // Let the members join before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let publisher = clients[0].publisher(&topic);
    let total = a.rate * a.latency_secs;
    let start_ns = now_ns();
    let interval_ns = 1_000_000_000 / a.rate.max(1);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent < total {
        tick.tick().await;
        let now = now_ns();
        // Everything scheduled up to now goes out, stamped with its schedule.
        while sent < total && start_ns + sent * interval_ns <= now {
            let scheduled = start_ns + sent * interval_ns;
            let p = publisher.clone();
            let body = payload(a.payload, scheduled);
            tokio::spawn(async move {
                let _ = p.publish(Event::new("bench", body)).await;
            });
            sent += 1;
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        let received = hist.lock().expect("not poisoned").len();
        if received >= sent || Instant::now() > deadline {
            if received < sent {
                o.timed_out.push("latency");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    members.abort_all();
    let hist = hist.lock().expect("not poisoned").clone();
    o.latency = Some(Latency { sent, hist });
    Ok(())
}

//! The flood phase: a neighbour that publishes as fast as it can, ignoring
//! RetryInfo. Run as another principal next to a latency run, it measures
//! whether its quota keeps it from the well-behaved publisher's latency
//! (benches/quota-isolation.sh, BENCHMARKS.md "Quotas").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use eventbus::v1::{PublishEvent, PublishRequest};
use eventbus::ClientBuilder;
use tokio::task::JoinSet;

use super::{connect, now_ns, payload, BenchArgs};

/// Events per flood publish: a batch of the size the SDK sends.
const BATCH: usize = 100;
/// Publishes each flood connection keeps in flight.
const DEPTH: usize = 8;

/// The running flood; its counts are read when it stops.
pub struct Flood {
    tasks: JoinSet<()>,
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

/// What the neighbour got through and what it was refused, in events.
pub struct FloodCounts {
    pub accepted: u64,
    pub refused: u64,
}

impl Flood {
    /// Starts `a.flood_connections` connections of `server` (with the
    /// neighbour's credentials), each publishing [`BATCH`]-event requests to
    /// its own topic.
    pub async fn start(server: &ClientBuilder, a: &BenchArgs) -> anyhow::Result<Flood> {
        let clients = connect(server, a.flood_connections).await?;
        let accepted = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let topic = format!("flood-{}-{}", std::process::id(), now_ns());
        let request = PublishRequest {
            topic,
            events: (0..BATCH)
                .map(|_| PublishEvent {
                    r#type: "flood".into(),
                    payload: payload(a.payload, 0).into(),
                    ..Default::default()
                })
                .collect(),
        };
        let mut tasks = JoinSet::new();
        for client in clients {
            for _ in 0..DEPTH {
                let (mut events, request) = (client.events(), request.clone());
                let (accepted, refused) = (accepted.clone(), refused.clone());
                tasks.spawn(async move {
                    loop {
                        let counter = match events.publish(request.clone()).await {
                            Ok(_) => &accepted,
                            Err(_) => &refused,
                        };
                        counter.fetch_add(BATCH as u64, Ordering::Relaxed);
                    }
                });
            }
        }
        Ok(Flood {
            tasks,
            accepted,
            refused,
        })
    }

    pub async fn stop(mut self) -> FloodCounts {
        self.tasks.shutdown().await;
        FloodCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

//! The kill loop's clients, all on the Rust SDK through one address (a proxy
//! whose target follows the restarted server):
//!
//! * publishers: numbered payloads `w<publisher>-<n>`, every other one keyed
//!   (so both routings are exercised), paced to a total rate; the SDK gives
//!   each event an idempotency key and retries UNAVAILABLE with it;
//! * a consumer group: members of one subscription that ack most deliveries
//!   and nack some, at once or after a delay. In drain mode they ack all.
//!
//! Every answer is written to the [`History`] with the instant it arrived.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus::{Client, Event, Publisher, PublisherConfig, RetryPolicy, SubscriberConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;

use super::history::{Acked, Delivered, History, Stored};

/// How often a publisher releases its share of the rate.
const TICK: Duration = Duration::from_millis(10);
/// Distinct keys of the keyed events.
const KEYS: u64 = 64;

/// What the consumers do with a delivery.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Ack,
    Nack,
    NackAfter(Duration),
}

/// Shape of the load.
#[derive(Clone, Debug)]
pub struct Load {
    pub topic: String,
    pub subscription: String,
    pub publishers: usize,
    /// Events per second, all publishers together.
    pub rate: u32,
    pub members: usize,
    /// Share of deliveries nacked (half of them with a delay); the rest are acked.
    pub nack_ratio: f64,
}

/// The running clients.
pub struct Workload {
    history: Arc<History>,
    stop_publishing: watch::Sender<bool>,
    stop_consuming: watch::Sender<bool>,
    drain: Arc<AtomicBool>,
    publishers: JoinSet<()>,
    consumers: JoinSet<()>,
    /// Clones of the SDK publishers, for their retry counters.
    sdk_publishers: Vec<Publisher>,
}

impl Workload {
    /// Starts publishers and members against `client`'s server.
    pub fn start(client: &Client, load: &Load, history: Arc<History>, seed: u64) -> Workload {
        let (stop_publishing, stop_p) = watch::channel(false);
        let (stop_consuming, stop_c) = watch::channel(false);
        let drain = Arc::new(AtomicBool::new(false));
        let mut publishers = JoinSet::new();
        let mut sdk_publishers = Vec::new();
        let per_tick = f64::from(load.rate) * TICK.as_secs_f64() / load.publishers.max(1) as f64;
        for w in 0..load.publishers {
            let publisher = client.publisher_with(
                load.topic.clone(),
                PublisherConfig {
                    // Retries of a batch in flight at the kill must outlast a
                    // restart; keep the backoff short so a cycle stays short.
                    retry: RetryPolicy {
                        min_backoff: Duration::from_millis(20),
                        max_backoff: Duration::from_millis(500),
                        ..RetryPolicy::default()
                    },
                    ..PublisherConfig::default()
                },
            );
            sdk_publishers.push(publisher.clone());
            publishers.spawn(publish(
                publisher,
                w,
                per_tick,
                history.clone(),
                stop_p.clone(),
            ));
        }
        let mut consumers = JoinSet::new();
        for m in 0..load.members {
            let subscription = client.subscribe_with(
                load.topic.clone(),
                load.subscription.clone(),
                SubscriberConfig {
                    max_in_flight: 128,
                    reconnect: RetryPolicy {
                        min_backoff: Duration::from_millis(20),
                        max_backoff: Duration::from_millis(500),
                        timeout: None,
                    },
                    ..SubscriberConfig::default()
                },
            );
            consumers.spawn(consume(
                subscription,
                history.clone(),
                drain.clone(),
                load.nack_ratio,
                StdRng::seed_from_u64(seed ^ (m as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                stop_c.clone(),
            ));
        }
        Workload {
            history,
            stop_publishing,
            stop_consuming,
            drain,
            publishers,
            consumers,
            sdk_publishers,
        }
    }

    /// Publish calls the SDK retried (each carries the same idempotency keys).
    pub fn publish_retries(&self) -> u64 {
        self.sdk_publishers.iter().map(|p| p.stats().retries).sum()
    }

    /// Stops publishing and waits until every publish has its outcome (OK,
    /// or failed after the SDK's retries).
    pub async fn finish_publishing(&mut self) {
        self.stop_publishing.send_replace(true);
        while self.publishers.join_next().await.is_some() {}
        debug_assert_eq!(History::count(&self.history.publishes_in_flight), 0);
    }

    /// From now on the members ack every delivery.
    pub fn drain(&self) {
        self.drain.store(true, Ordering::Relaxed);
    }

    /// Stops the members (after their pending settles).
    pub async fn stop(mut self) {
        self.stop_publishing.send_replace(true);
        self.stop_consuming.send_replace(true);
        while self.publishers.join_next().await.is_some() {}
        while self.consumers.join_next().await.is_some() {}
    }
}

/// One publisher: `per_tick` events every [`TICK`] until stopped, then waits
/// for the outcome of each.
async fn publish(
    publisher: Publisher,
    w: usize,
    per_tick: f64,
    history: Arc<History>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    // After a send blocked on a full queue (server down), do not burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting = JoinSet::new();
    let mut credit = 0.0;
    let mut n = 0u64;
    'run: loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break 'run,
        }
        credit += per_tick;
        while credit >= 1.0 {
            credit -= 1.0;
            let payload = format!("w{w}-{n}");
            let mut event = Event::new("killloop.keyless", payload.clone());
            if n.is_multiple_of(2) {
                event = event
                    .key(format!("k{}", (n / 2) % KEYS))
                    .event_type("killloop.keyed");
            }
            n += 1;
            history.publishes_in_flight.fetch_add(1, Ordering::Relaxed);
            // Waits while the lanes are full, e.g. while the server is down.
            let handle = tokio::select! {
                h = publisher.send(event) => h,
                _ = stop.changed() => {
                    history.publishes_in_flight.fetch_sub(1, Ordering::Relaxed);
                    break 'run;
                }
            };
            let history = history.clone();
            waiting.spawn(async move {
                let outcome = match handle {
                    Ok(h) => h.await,
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(p) => history.stored(Stored {
                        payload,
                        partition: p.partition,
                        offset: p.offset,
                        duplicate: p.duplicate,
                        answered: Instant::now(),
                    }),
                    // The outcome stays unknown: the event may be stored or not.
                    Err(e) => {
                        history.publish_failed(&e);
                    }
                }
                history.publishes_in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        while waiting.try_join_next().is_some() {}
    }
    while waiting.join_next().await.is_some() {}
}

/// One member: records each delivery, then settles it on its own task (so a
/// slow Ack never holds up the stream).
async fn consume(
    mut subscription: eventbus::Subscription,
    history: Arc<History>,
    drain: Arc<AtomicBool>,
    nack_ratio: f64,
    mut rng: StdRng,
    mut stop: watch::Receiver<bool>,
) {
    let mut settling = JoinSet::new();
    loop {
        let next = tokio::select! {
            d = subscription.next() => d,
            _ = stop.changed() => break,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                // Only errors that reconnecting cannot fix end the stream.
                history.client_error(format!("a member's subscription ended: {e}"));
                break;
            }
            None => break,
        };
        let event = delivery.event();
        let (partition, offset) = (event.partition, event.offset);
        history.delivered(Delivered {
            partition,
            offset,
            payload: String::from_utf8_lossy(&event.payload).into_owned(),
            attempt: delivery.attempt(),
            received: Instant::now(),
        });
        let roll: f64 = rng.random();
        let verdict = if drain.load(Ordering::Relaxed) || roll >= nack_ratio {
            Verdict::Ack
        } else if roll < nack_ratio / 2.0 {
            Verdict::Nack
        } else {
            Verdict::NackAfter(Duration::from_millis(rng.random_range(10..300)))
        };
        let history = history.clone();
        settling.spawn(async move {
            match verdict {
                Verdict::Ack => {
                    let called = Instant::now();
                    match delivery.ack().await {
                        Ok(()) => history.acked(Acked {
                            partition,
                            offset,
                            called,
                            answered: Instant::now(),
                        }),
                        Err(e) => history.ack_failed(&e),
                    }
                }
                Verdict::Nack => {
                    history.nacks.fetch_add(1, Ordering::Relaxed);
                    let _ = delivery.nack().await;
                }
                Verdict::NackAfter(delay) => {
                    history.nacks.fetch_add(1, Ordering::Relaxed);
                    history.delayed_nacks.fetch_add(1, Ordering::Relaxed);
                    let _ = delivery.nack_after(delay).await;
                }
            }
        });
        while settling.try_join_next().is_some() {}
    }
    while settling.join_next().await.is_some() {}
}

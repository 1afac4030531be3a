//! The batching [`Publisher`].
//!
//! Events go to one of `max_in_flight_batches` lanes: by key hash when the
//! event has a key (so one key always uses one lane). An event without a key
//! goes to the first lane whose queue holds less than a full batch (by count
//! or by bytes), so extra
//! lanes only open when one lane cannot keep up ("spill over"): spreading
//! events round-robin would hand each idle lane a batch of one and multiply
//! the calls (measured: 4 round-robin lanes made 4x the calls and published
//! 35-40 % fewer events/s than one lane at 4 x 64 in flight).
//! Each lane is a task with a bounded queue that sends one Publish RPC at a
//! time: whatever queued while the previous RPC was in flight (up to the batch
//! limits) becomes the next batch. So batches grow with load without a timer,
//! a retry holds back only its own lane, and events of one key reach the
//! server in the order they were published even across retries.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backoff::{Backoff, RetryPolicy};
use crate::client::Channel;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::publish_stream::PublishPath;
use crate::v1::{self, event_service_client::EventServiceClient};

/// How a [`Publisher`] batches and retries.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// Most events in one Publish call. Default 1000.
    pub max_batch_events: usize,
    /// Most encoded bytes in one Publish call. Default 1 MiB (the server
    /// accepts 4 MiB requests).
    pub max_batch_bytes: usize,
    /// How long a lane waits for more events before sending a batch that is
    /// not full. Default 0: send at once, batching whatever queued while the
    /// previous call was in flight.
    pub linger: Duration,
    /// Publish calls in flight at once (one per lane). Default 4. Keyless
    /// events use a second lane only while the first has a full batch
    /// queued, and so on.
    pub max_in_flight_batches: usize,
    /// Events queued per lane before `publish` waits (backpressure). Default
    /// 2 × `max_batch_events`.
    pub max_queued_per_lane: Option<usize>,
    /// Retries of UNAVAILABLE and other retryable failures. Keep `timeout`
    /// below the server's idempotency window (2 min by default), or a late
    /// retry could be stored twice.
    pub retry: RetryPolicy,
    /// Give each event without an idempotency key a random one, so retries
    /// cannot duplicate it. Default true.
    pub idempotent: bool,
    /// Send the batches as requests of one `PublishStream` (one per
    /// Publisher), which costs the server less per batch than a unary call.
    /// Default true; false, or a server without PublishStream: unary
    /// `Publish` calls. Ordering and retries are the same either way.
    pub stream: bool,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            max_batch_events: 1000,
            max_batch_bytes: 1 << 20,
            linger: Duration::ZERO,
            max_in_flight_batches: 4,
            max_queued_per_lane: None,
            retry: RetryPolicy::default(),
            idempotent: true,
            stream: true,
        }
    }
}

/// Where a published event was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Partition of the topic.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
    /// Server-assigned event id.
    pub event_id: String,
    /// True when the server recognised the idempotency key and this is the
    /// original event's position (nothing new was stored).
    pub duplicate: bool,
}

/// Counters of one publisher since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Publish calls that succeeded.
    pub batches: u64,
    /// Events stored (or recognised as duplicates) by those calls.
    pub events: u64,
    /// Publish calls retried after a retryable failure.
    pub retries: u64,
}

/// Publishes events to one topic with automatic batching, bounded in-flight
/// batches, backpressure and idempotent retries. Cheap to clone; clones share
/// the lanes. Events still queued when the last clone is dropped are sent;
/// call [`Publisher::close`] to wait for them.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    topic: String,
    lanes: Vec<mpsc::Sender<LaneMsg>>,
    /// A keyless event spills to the next lane once this many wait in one
    /// (a full batch, or the whole queue when that is smaller) ...
    spill_at: usize,
    /// ... or once this many bytes wait in it (a full batch by size).
    spill_at_bytes: usize,
    /// Encoded bytes waiting in each lane's queue.
    lane_bytes: Vec<Arc<AtomicUsize>>,
    next_lane: AtomicUsize,
    /// Makes the keys of events without one; `None`: not idempotent.
    keys: Option<KeyMaker>,
    closed: AtomicBool,
    stats: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    events: AtomicU64,
    retries: AtomicU64,
}

// Events are nearly every message; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum LaneMsg {
    Event(Pending),
    /// Answered once everything queued before it was answered.
    Flush(oneshot::Sender<()>),
}

struct Pending {
    event: v1::PublishEvent,
    size: usize,
    reply: oneshot::Sender<Result<Published>>,
}

impl Publisher {
    pub(crate) fn new(
        client: EventServiceClient<Channel>,
        topic: String,
        config: PublisherConfig,
    ) -> Publisher {
        let lanes_n = config.max_in_flight_batches.max(1);
        let max_batch_events = config.max_batch_events.max(1);
        let queue = config
            .max_queued_per_lane
            .unwrap_or(2 * max_batch_events)
            .max(1);
        let stats = Arc::new(Counters::default());
        let path = Arc::new(PublishPath::new(client, config.stream));
        let lane_bytes: Vec<Arc<AtomicUsize>> = (0..lanes_n)
            .map(|_| Arc::new(AtomicUsize::new(0)))
            .collect();
        let lanes = lane_bytes
            .iter()
            .map(|queued_bytes| {
                let (tx, rx) = mpsc::channel(queue);
                let lane = Lane {
                    rx,
                    path: path.clone(),
                    topic: topic.clone(),
                    max_events: max_batch_events,
                    max_bytes: config.max_batch_bytes.max(1),
                    linger: config.linger,
                    retry: config.retry.clone(),
                    stats: stats.clone(),
                    carry: None,
                    queued_bytes: queued_bytes.clone(),
                };
                tokio::spawn(lane.run());
                tx
            })
            .collect();
        Publisher {
            inner: Arc::new(Inner {
                topic,
                lanes,
                spill_at: max_batch_events.min(queue),
                spill_at_bytes: config.max_batch_bytes.max(1),
                lane_bytes,
                next_lane: AtomicUsize::new(0),
                keys: config.idempotent.then(KeyMaker::new),
                closed: AtomicBool::new(false),
                stats,
            }),
        }
    }

    /// The topic this publisher writes to.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// Publishes one event and waits until it is stored (durably, in the
    /// server's default mode). Many concurrent calls share Publish RPCs.
    pub async fn publish(&self, event: impl Into<Event>) -> Result<Published> {
        self.send(event).await?.await
    }

    /// Queues one event and returns as soon as it is accepted into a batch
    /// (waiting only when the queue is full). Await the handle for the
    /// result. Use it to keep many publishes in flight from one task.
    pub async fn send(&self, event: impl Into<Event>) -> Result<PublishHandle> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("publisher"));
        }
        let mut event = event.into().into_proto();
        if let Some(keys) = &self.inner.keys {
            if event.idempotency_key.is_empty() {
                event.idempotency_key = keys.next_key();
            }
        }
        let lane = self.lane_for(&event.key);
        let (reply, rx) = oneshot::channel();
        let size = event.encoded_len();
        self.inner.lane_bytes[lane].fetch_add(size, Ordering::Relaxed);
        self.inner.lanes[lane]
            .send(LaneMsg::Event(Pending { event, size, reply }))
            .await
            .map_err(|_| Error::Closed("publisher"))?;
        Ok(PublishHandle { rx })
    }

    /// Waits until every event queued before this call has its result.
    pub async fn flush(&self) {
        let mut waits = Vec::with_capacity(self.inner.lanes.len());
        for lane in &self.inner.lanes {
            let (tx, rx) = oneshot::channel();
            if lane.send(LaneMsg::Flush(tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }

    /// Stops accepting events (on every clone), then waits for the queued ones.
    pub async fn close(self) {
        self.inner.closed.store(true, Ordering::Release);
        self.flush().await;
    }

    /// Counters since the publisher was created.
    pub fn stats(&self) -> PublisherStats {
        let c = &self.inner.stats;
        PublisherStats {
            batches: c.batches.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    fn lane_for(&self, key: &str) -> usize {
        let n = self.inner.lanes.len();
        if key.is_empty() {
            let inner = &self.inner;
            return (0..n)
                .position(|i| {
                    let l = &inner.lanes[i];
                    l.max_capacity() - l.capacity() < inner.spill_at
                        && inner.lane_bytes[i].load(Ordering::Relaxed) < inner.spill_at_bytes
                })
                // Every lane has a full batch waiting: share the wait.
                .unwrap_or_else(|| self.inner.next_lane.fetch_add(1, Ordering::Relaxed) % n);
        }
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % n as u64) as usize
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.inner.topic)
            .field("lanes", &self.inner.lanes.len())
            .finish()
    }
}

/// The pending result of [`Publisher::send`].
#[must_use = "the event may still fail; await the handle to know"]
pub struct PublishHandle {
    rx: oneshot::Receiver<Result<Published>>,
}

impl Future for PublishHandle {
    type Output = Result<Published>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed("publisher"))))
    }
}

/// One lane: a queue and one Publish call at a time.
struct Lane {
    rx: mpsc::Receiver<LaneMsg>,
    path: Arc<PublishPath>,
    topic: String,
    max_events: usize,
    max_bytes: usize,
    linger: Duration,
    retry: RetryPolicy,
    stats: Arc<Counters>,
    /// An event taken from the queue that did not fit the last batch.
    carry: Option<Pending>,
    /// Encoded bytes in this lane's queue (for the spill-over choice).
    queued_bytes: Arc<AtomicUsize>,
}

impl Lane {
    async fn run(mut self) {
        loop {
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut flushes = Vec::new();
            let first = match self.carry.take() {
                Some(p) => LaneMsg::Event(p),
                None => match self.rx.recv().await {
                    Some(m) => self.dequeued(m),
                    None => return, // every Publisher clone is gone and the queue is empty
                },
            };
            match first {
                LaneMsg::Event(p) => {
                    bytes += p.size;
                    batch.push(p);
                    self.fill(&mut batch, &mut bytes, &mut flushes).await;
                }
                LaneMsg::Flush(tx) => flushes.push(tx),
            }
            if !batch.is_empty() {
                self.send(batch).await;
            }
            for f in flushes {
                let _ = f.send(());
            }
        }
    }

    /// Takes a message's bytes off the lane's queued-bytes count.
    fn dequeued(&self, m: LaneMsg) -> LaneMsg {
        if let LaneMsg::Event(p) = &m {
            self.queued_bytes.fetch_sub(p.size, Ordering::Relaxed);
        }
        m
    }

    /// Adds what is queued (and, with a linger, what arrives within it) until
    /// a limit is hit or a flush asks to send now.
    async fn fill(
        &mut self,
        batch: &mut Vec<Pending>,
        bytes: &mut usize,
        flushes: &mut Vec<oneshot::Sender<()>>,
    ) {
        let deadline = Instant::now() + self.linger;
        while batch.len() < self.max_events && *bytes < self.max_bytes {
            let msg = match self.rx.try_recv() {
                Ok(m) => self.dequeued(m),
                Err(_) if self.linger.is_zero() => return,
                Err(_) => match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(m)) => self.dequeued(m),
                    Ok(None) | Err(_) => return,
                },
            };
            match msg {
                LaneMsg::Event(p) => {
                    if *bytes + p.size > self.max_bytes {
                        self.carry = Some(p);
                        return;
                    }
                    *bytes += p.size;
                    batch.push(p);
                }
                LaneMsg::Flush(tx) => {
                    flushes.push(tx);
                    return;
                }
            }
        }
    }

    /// One Publish call for `batch`, retried with backoff while the failure
    /// is retryable; then every waiter gets its result.
    async fn send(&mut self, batch: Vec<Pending>) {
        let (events, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.event, p.reply)).unzip();
        let request = v1::PublishRequest {
            topic: self.topic.clone(),
            events,
        };
        let started = Instant::now();
        let mut backoff = Backoff::new(&self.retry);
        let outcome = loop {
            match self.path.publish(request.clone()).await {
                Ok(results) => break Ok(results),
                Err(status) => {
                    let err = Error::from(status);
                    if !err.is_retryable() || !self.retry.in_time(started) {
                        break Err(err);
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(topic = %self.topic, error = %err, "publish failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        };
        match outcome {
            Ok(results) if results.len() == replies.len() => {
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .events
                    .fetch_add(results.len() as u64, Ordering::Relaxed);
                for (r, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(Ok(Published {
                        partition: r.partition,
                        offset: r.offset,
                        event_id: r.event_id,
                        duplicate: r.duplicate,
                    }));
                }
            }
            Ok(results) => {
                let err = Error::Status(tonic::Status::internal(format!(
                    "server returned {} results for {} events",
                    results.len(),
                    replies.len()
                )));
                for reply in replies {
                    let _ = reply.send(Err(err.duplicate()));
                }
            }
            Err(err) => {
                for reply in replies {
                    let _ = reply.send(Err(err.duplicate()));
                }
            }
        }
    }
}

/// Makes the idempotency keys of a Publisher's events (its clones share
/// it): 32 hex digits, a random 64-bit prefix drawn once, then a counter
/// that starts at a random value. Two publishers' keys can only meet if
/// their prefixes are equal (2^-64 per pair) and their counters overlap. A
/// key costs no lock, clock or random draw: the UUIDv7s used before took a
/// process-wide lock in `uuid` and read the clock for every event (+0.35 µs
/// per event in the load tool, BENCHMARKS.md, issue 15 sixth step). A
/// publisher's keys ascend, which the server's key entries insert cheaply.
struct KeyMaker {
    prefix: u64,
    next: AtomicU64,
}

impl KeyMaker {
    fn new() -> Self {
        KeyMaker {
            prefix: rand::random(),
            next: AtomicU64::new(rand::random()),
        }
    }

    fn next_key(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut key = String::with_capacity(32);
        push_hex(&mut key, self.prefix);
        push_hex(&mut key, n);
        key
    }
}

/// Appends `v` as 16 lower-case hex digits.
fn push_hex(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(char::from(DIGITS[((v >> (shift * 4)) & 0xf) as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keys_are_hex_distinct_and_ascend_per_publisher() {
        let keys = KeyMaker::new();
        let (a, b) = (keys.next_key(), keys.next_key());
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(a[..16], b[..16], "one prefix per publisher");
        let count = |k: &str| u64::from_str_radix(&k[16..], 16).unwrap();
        assert_eq!(count(&b), count(&a).wrapping_add(1));
        let other = KeyMaker::new().next_key();
        assert_ne!(
            other[..16],
            a[..16],
            "another publisher draws its own prefix"
        );
    }

    #[test]
    fn hex_is_fixed_width() {
        let mut s = String::new();
        push_hex(&mut s, 0xab);
        assert_eq!(s, "00000000000000ab");
    }
}

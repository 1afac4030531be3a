//! Delivery on JetStream: a member pulls from the subscription's consumer
//! on every partition stream (and on its redrive stream), and settles
//! through the messages' reply subjects, from any gateway.
//!
//! * **Ack ids** are `<member id in hex>.<reply subject>`. The reply subject
//!   (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
//!   seq>...`) is all JetStream needs to settle the message, so any gateway
//!   can settle any lease; the server seals the id with its MAC, so it
//!   cannot be forged or moved to another subscription.
//! * **Settling**: Ack `+ACK`, Nack `-NAK {"delay": ...}` (the backoff when
//!   no delay is given), ModifyAckDeadline `+WPI` (the lease starts over
//!   with the subscription's ack deadline: JetStream cannot set another),
//!   dead-lettering `+TERM` after the entry is written. Each is sent as a
//!   request, so OK means the consumer's leader took it.
//! * **Attempts** are JetStream's delivery count. The gateway, not
//!   `max_deliver`, ends them: a nack on the last attempt dead-letters at
//!   once, and a redelivery past the last attempt (its lease expired) is
//!   dead-lettered instead of delivered. See [`crate::dead_letters`].
//! * **Each member's bound** (`max_in_flight`) is kept by its gateway: a
//!   pull asks for at most the member's free credit, and credit comes back
//!   when the lease is settled through this gateway or its deadline
//!   passes. Leases a member still holds when its stream ends are nacked,
//!   so another member gets them at once.
//! * **Each member's byte bound** (`max-in-flight-bytes`): a pulled
//!   message waits in the gateway until the member's leases hold fewer
//!   bytes than the bound; as on one node, the event that crosses the
//!   bound still goes, one per source.
//! * **Pulls**: a pull holds its permits until it ends, so a source that
//!   had events takes what is pending now and ends (`no_wait`), and a
//!   source whose last pull found nothing probes: it waits up to
//!   [`PULL_WAIT`] for one message holding no permit, and takes one when
//!   the message comes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use eventbus_broker::dead_letter::{DEADLINE_EXCEEDED, MEMBER_LEFT};
use eventbus_broker::{
    now_ms, BoxStream, Delivery, Error, Membership, Result, SettleOp, SettleOutcome, StoredEvent,
};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::dead_letters::{self, Record};
use crate::envelope::Envelope;
use crate::gateways::{Count, Gateways};
use crate::nats_error;
use crate::subscriptions::{SubscriptionMeta, Subscriptions};
use crate::topics::{partition_of_stream, stream_name, TopicMeta};

/// How long one pull waits for messages before it is renewed.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// How much longer than [`PULL_WAIT`] the gateway waits for a pull's end
/// before it gives up on it.
const PULL_GRACE: Duration = Duration::from_secs(2);
/// Most messages one pull asks for.
const MAX_PULL: usize = 256;
/// How often a member re-reads its subscription's settings (filter,
/// attempts, deadline), and whether the subscription still exists.
const SETTINGS_REFRESH: Duration = Duration::from_secs(1);
/// How long a pulled message may wait for the member's credit before its
/// lease is restarted.
const WAIT_RESTARTS_LEASE: Duration = Duration::from_secs(1);
/// How long a failing pull waits before it tries again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// One lease a member holds, as its gateway tracks it for credit.
struct Lease {
    reply: String,
    deadline: Instant,
    /// The event's [`StoredEvent::size_bytes`].
    bytes: usize,
    /// On the last allowed attempt: the dead letter the event becomes if
    /// the member leaves holding it, and that dead letter's message id.
    last: Option<(Record, String)>,
}

/// A member's credit: free permits, the leases that hold the others, and
/// the bytes those leases hold.
struct Credit {
    permits: Semaphore,
    leases: Mutex<Leases>,
    /// `max-in-flight-bytes`.
    max_bytes: usize,
    /// Woken when leases end and bytes become free.
    freed: tokio::sync::Notify,
}

struct Leases {
    by_reply: HashMap<String, Lease>,
    /// The sum of the leases' sizes.
    bytes: usize,
}

impl Credit {
    fn new(max_in_flight: u32, max_bytes: usize) -> Credit {
        Credit {
            permits: Semaphore::new(max_in_flight.max(1) as usize),
            leases: Mutex::new(Leases {
                by_reply: HashMap::new(),
                bytes: 0,
            }),
            max_bytes: max_bytes.max(1),
            freed: tokio::sync::Notify::new(),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(&self, reply: &str, deadline: Instant, bytes: usize, last: Option<(Record, String)>) {
        let mut leases = self.locked();
        leases.bytes += bytes;
        let old = leases.by_reply.insert(
            reply.to_string(),
            Lease {
                reply: reply.to_string(),
                deadline,
                bytes,
                last,
            },
        );
        if let Some(old) = old {
            leases.bytes -= old.bytes;
        }
    }

    /// Waits until the member's leases hold fewer bytes than its bound
    /// (the event that crosses the bound still goes, as on one node).
    async fn bytes_free(&self) {
        loop {
            let freed = self.freed.notified();
            if self.locked().bytes < self.max_bytes {
                return;
            }
            freed.await;
        }
    }

    /// Ends the lease on `reply`, giving its permit and bytes back.
    fn release(&self, reply: &str) {
        let removed = {
            let mut leases = self.locked();
            let removed = leases.by_reply.remove(reply);
            if let Some(l) = &removed {
                leases.bytes -= l.bytes;
            }
            removed.is_some()
        };
        if removed {
            self.permits.add_permits(1);
            self.freed.notify_waiters();
        }
    }

    /// Whether the member still holds the lease on `reply`.
    fn holds(&self, reply: &str) -> bool {
        self.locked().by_reply.contains_key(reply)
    }

    fn extend(&self, reply: &str, deadline: Instant) {
        if let Some(l) = self.locked().by_reply.get_mut(reply) {
            l.deadline = deadline;
        }
    }

    /// Gives back the permits and bytes of leases past their deadline:
    /// JetStream has taken those back for redelivery.
    fn expire(&self, now: Instant) {
        let expired = {
            let mut leases = self.locked();
            let (before, mut bytes) = (leases.by_reply.len(), leases.bytes);
            leases.by_reply.retain(|_, l| {
                let keep = l.deadline > now;
                if !keep {
                    bytes -= l.bytes;
                }
                keep
            });
            leases.bytes = bytes;
            before - leases.by_reply.len()
        };
        if expired > 0 {
            self.permits.add_permits(expired);
            self.freed.notify_waiters();
        }
    }

    /// Takes every lease the member holds (it is leaving).
    fn take_all(&self) -> Vec<Lease> {
        let mut leases = self.locked();
        leases.bytes = 0;
        leases.by_reply.drain().map(|(_, l)| l).collect()
    }
}

/// The members this gateway serves, by member id.
#[derive(Default)]
pub struct Members {
    /// Member id → its subscription's id and its credit.
    members: Mutex<HashMap<u64, (u32, Arc<Credit>)>>,
}

impl Members {
    fn get(&self, id: u64) -> Option<Arc<Credit>> {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|(_, c)| c.clone())
    }

    /// How many members of subscription `subscription_id` this gateway
    /// serves.
    pub fn count(&self, subscription_id: u32) -> u32 {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members
            .values()
            .filter(|(s, _)| *s == subscription_id)
            .count() as u32
    }
}

/// What the delivery side needs from the backend.
#[derive(Clone)]
pub struct Context {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub members: Arc<Members>,
    /// This gateway's per-subscription counts.
    pub gateways: Arc<Gateways>,
    /// Each member's byte bound (`max-in-flight-bytes`).
    pub max_in_flight_bytes: usize,
}

/// A parsed ack id.
#[derive(Debug, PartialEq, Eq)]
pub struct AckRef<'a> {
    pub member: u64,
    pub reply: &'a str,
    pub stream: &'a str,
    pub consumer: &'a str,
    pub delivered: u32,
    pub stream_seq: u64,
    pub consumer_seq: u64,
}

impl<'a> AckRef<'a> {
    /// Parses `<member hex>.<reply subject>`; None when it is not one.
    pub fn parse(id: &'a str) -> Option<AckRef<'a>> {
        let (member, reply) = id.split_once('.')?;
        let member = u64::from_str_radix(member, 16).ok()?;
        let tokens: Vec<&str> = reply.split('.').collect();
        if tokens.len() < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
            return None;
        }
        // v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
        // v2 adds <domain>.<account hash> before the stream, and a token at the end.
        let base = if tokens.len() == 9 { 2 } else { 4 };
        let t = |i: usize| tokens.get(base + i).copied();
        Some(AckRef {
            member,
            reply,
            stream: t(0)?,
            consumer: t(1)?,
            delivered: t(2)?.parse().ok()?,
            stream_seq: t(3)?.parse().ok()?,
            consumer_seq: t(4)?.parse().ok()?,
        })
    }
}

fn ack_id(member: u64, reply: &str) -> String {
    format!("{member:x}.{reply}")
}

/// Where a member's deliveries come from: a partition, or the redrive
/// stream.
#[derive(Clone, Copy, Debug)]
enum Source {
    Partition(u32),
    Redrive,
}

/// Starts a member: one pulling task per source, all feeding one stream.
pub async fn subscribe(
    ctx: Context,
    subscriptions: Arc<Subscriptions>,
    topic: Arc<TopicMeta>,
    meta: SubscriptionMeta,
    max_in_flight: u32,
) -> Result<Membership> {
    let member_id = rand::random::<u64>() >> 1;
    let credit = Arc::new(Credit::new(max_in_flight, ctx.max_in_flight_bytes));
    let mut sources = Vec::new();
    for p in 0..topic.partitions {
        let consumer = consumer_of(&ctx.js, &stream_name(topic.id, p), &meta).await?;
        sources.push((Source::Partition(p), consumer));
    }
    let redrive = consumer_of(&ctx.js, &dead_letters::redrive_stream_name(meta.id), &meta).await?;
    sources.push((Source::Redrive, redrive));

    ctx.members
        .members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(member_id, (meta.id, credit.clone()));
    let settings = Arc::new(ArcSwap::from_pointee(meta));
    let guard_settings = settings.clone();
    let (tx, rx) = mpsc::channel::<Result<Delivery>>(MAX_PULL);
    let per_source = (max_in_flight as usize / sources.len()).clamp(1, MAX_PULL);
    let mut tasks = Vec::new();
    for (source, consumer) in sources {
        let puller = Puller {
            ctx: ctx.clone(),
            topic: topic.clone(),
            settings: settings.clone(),
            credit: credit.clone(),
            member_id,
            source,
            consumer,
            per_pull: per_source,
            tx: tx.clone(),
        };
        tasks.push(tokio::spawn(puller.run()));
    }
    tasks.push(tokio::spawn(keep_settings(
        subscriptions,
        topic,
        settings,
        credit.clone(),
        tx,
    )));
    let guard = MemberGuard {
        ctx,
        member_id,
        credit,
        settings: guard_settings,
        tasks,
    };
    let deliveries = tokio_stream::wrappers::ReceiverStream::new(rx)
        .ready_chunks(MAX_PULL)
        .map(move |chunk| {
            let _keep = &guard;
            let mut batch = Vec::with_capacity(chunk.len());
            for d in chunk {
                batch.push(d?);
            }
            Ok(batch)
        });
    let deliveries: BoxStream<Result<Vec<Delivery>>> = Box::pin(deliveries);
    Ok(Membership {
        member_id,
        deliveries,
    })
}

async fn consumer_of(
    js: &jetstream::Context,
    stream: &str,
    meta: &SubscriptionMeta,
) -> Result<PullConsumer> {
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| nats_error("opening a stream to deliver from", e))?;
    stream
        .get_consumer(&meta.consumer())
        .await
        .map_err(|e| nats_error("opening a subscription's consumer", e))
}

/// Ends a member when its stream is dropped: stops its tasks, forgets it,
/// and gives back the leases it still holds: one on its last allowed
/// attempt becomes a dead letter (the member used that attempt: a consumer
/// that crashes on the event), any other is nacked so that another member
/// gets it now rather than after its deadline.
struct MemberGuard {
    ctx: Context,
    member_id: u64,
    credit: Arc<Credit>,
    settings: Arc<ArcSwap<SubscriptionMeta>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for MemberGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.ctx
            .members
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.member_id);
        let held = self.credit.take_all();
        if held.is_empty() {
            return;
        }
        let (ctx, meta) = (self.ctx.clone(), self.settings.load_full());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for lease in held {
                    match lease.last {
                        Some((mut record, msg_id)) => {
                            record.reason = MEMBER_LEFT.to_string();
                            // A failure leaves the message pending: it
                            // comes back past its last attempt and is
                            // dead-lettered then.
                            if let Err(e) =
                                dead_letter(&ctx, &meta, &msg_id, record, &lease.reply).await
                            {
                                tracing::warn!(error = %e, "dead-lettering a left lease");
                            }
                        }
                        None => {
                            let nak = Bytes::from(AckKind::Nak(None));
                            let _ = ctx.client.publish(lease.reply, nak).await;
                        }
                    }
                }
                let _ = ctx.client.flush().await;
            });
        }
    }
}

/// Re-reads the subscription's settings, expires leases, and ends the
/// member when the subscription is deleted.
async fn keep_settings(
    subscriptions: Arc<Subscriptions>,
    topic: Arc<TopicMeta>,
    settings: Arc<ArcSwap<SubscriptionMeta>>,
    credit: Arc<Credit>,
    tx: mpsc::Sender<Result<Delivery>>,
) {
    let mut tick = tokio::time::interval(SETTINGS_REFRESH);
    loop {
        tick.tick().await;
        credit.expire(Instant::now());
        let name = settings.load().name.clone();
        match subscriptions.get(&topic, &name).await {
            Ok((meta, _)) if meta.id == settings.load().id => settings.store(Arc::new(meta)),
            // Deleted (or deleted and made again: a new subscription).
            Ok(_) | Err(Error::SubscriptionNotFound { .. }) => {
                drop(tx);
                return;
            }
            // The cluster is briefly unavailable: keep the settings we have.
            Err(e) => tracing::debug!(error = %e, "re-reading subscription settings"),
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// Pulls one source for one member.
struct Puller {
    ctx: Context,
    topic: Arc<TopicMeta>,
    settings: Arc<ArcSwap<SubscriptionMeta>>,
    credit: Arc<Credit>,
    member_id: u64,
    source: Source,
    consumer: PullConsumer,
    per_pull: usize,
    tx: mpsc::Sender<Result<Delivery>>,
}

/// What became of one pulled message.
enum Handled {
    /// Delivered to the member: it holds the lease and a permit.
    Delivered,
    /// Settled here (filtered out, or dead-lettered): its permit is free.
    Settled,
    /// The member left before taking it: its lease was dropped, and the
    /// message is to be nacked ([`InHand`]).
    Left,
}

/// A pulled message not yet handed to the member. Dropped before
/// [`InHand::done`] (the member left, its task was aborted while the
/// message waited for credit), it is nacked, so it comes back at once
/// rather than after its ack deadline: the member's guard nacks only the
/// leases it holds, and this one never became a lease.
struct InHand {
    client: async_nats::Client,
    reply: Option<String>,
}

impl InHand {
    fn new(client: &async_nats::Client, message: &jetstream::Message) -> InHand {
        InHand {
            client: client.clone(),
            reply: message.reply.as_ref().map(|r| r.to_string()),
        }
    }

    /// Handed over, settled here, or left pending on purpose.
    fn done(mut self) {
        self.reply = None;
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.publish(reply, Bytes::from(AckKind::Nak(None))).await;
            });
        }
    }
}

impl Puller {
    async fn run(self) {
        // Whether the last pull found nothing. A pull holds the permits it
        // asks for until it ends (up to PULL_WAIT), so an idle source (the
        // redrive queue, mostly, or a quiet partition) probes instead: it
        // asks for one message holding no permit, and takes a permit only
        // when that message comes. The member's credit stays with the
        // sources that have events. Measured: with the redrive queue
        // holding its share in idle pulls, a member of one busy partition
        // got one event per 5 s pull round.
        let mut idle = matches!(self.source, Source::Redrive);
        loop {
            let probe = idle;
            if !probe {
                let Ok(first) = self.credit.permits.acquire().await else {
                    return;
                };
                first.forget();
            }
            let extra = if probe {
                0
            } else {
                let extra = self
                    .credit
                    .permits
                    .available_permits()
                    .min(self.per_pull - 1);
                match self.credit.permits.try_acquire_many(extra as u32) {
                    Ok(p) => {
                        p.forget();
                        extra
                    }
                    Err(_) => 0,
                }
            };
            let asked = 1 + extra;
            // Permits this pull holds: those taken for it, or the one a
            // probe takes when its message comes.
            let mut held = if probe { 0 } else { asked };
            let (mut kept, mut seen) = (0, 0);
            let pulled = self
                .pull(asked, probe, &mut held, &mut kept, &mut seen)
                .await;
            idle = seen == 0;
            match pulled {
                Ok(()) => {}
                Err(e) if e.is_damage() => {
                    self.credit.permits.add_permits(held - kept);
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, source = ?self.source, "pull failed; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
            self.credit.permits.add_permits(held - kept);
            if self.tx.is_closed() {
                return;
            }
        }
    }

    /// One pull of up to `asked` messages. `held` counts the permits the
    /// pull holds (a `probe` takes its one when its message comes), `kept`
    /// those the delivered messages keep, `seen` the messages that came.
    async fn pull(
        &self,
        asked: usize,
        probe: bool,
        held: &mut usize,
        kept: &mut usize,
        seen: &mut usize,
    ) -> Result<()> {
        // A source that had events takes what is pending now and ends
        // (no_wait): a pull that waited for the rest of its batch would
        // hold those permits for PULL_WAIT while other partitions of the
        // member have events. A probe waits, for one.
        let batch = if probe {
            self.consumer
                .batch()
                .max_messages(1)
                .expires(PULL_WAIT)
                .messages()
                .await
        } else {
            self.consumer
                .fetch()
                .max_messages(asked)
                .expires(PULL_WAIT)
                .messages()
                .await
        };
        let mut batch = batch.map_err(|e| nats_error("pulling deliveries", e))?;
        // A pull sent to a consumer leader that died, or during an
        // election, is never answered: the pull ends by the gateway's own
        // clock too, and the next one finds the new leader.
        let ends = tokio::time::Instant::now() + PULL_WAIT + PULL_GRACE;
        while let Ok(Some(message)) = tokio::time::timeout_at(ends, batch.next()).await {
            let message = message.map_err(|e| nats_error("pulling deliveries", e))?;
            *seen += 1;
            let in_hand = InHand::new(&self.ctx.client, &message);
            self.credit_for(&message, probe).await;
            if probe {
                *held += 1;
            }
            // An error (damage) leaves the message pending, as it was.
            match self.handle(message).await {
                Ok(Handled::Delivered) => {
                    *kept += 1;
                    in_hand.done();
                }
                Ok(Handled::Settled) => in_hand.done(),
                Ok(Handled::Left) => {
                    // Its lease's release gave its permit back already.
                    *kept += 1;
                    drop(in_hand);
                }
                Err(e) => {
                    in_hand.done();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Waits until the member may take `message`: its leases hold fewer
    /// bytes than its bound, and (for a probe) a permit is free. The
    /// message waits here, pulled but not handed over, so the member never
    /// holds more than its bound plus the one event that crosses it.
    /// JetStream's lease clock ran while it waited, so a long wait
    /// restarts it (`+WPI`), and the member gets the full deadline as with
    /// any delivery.
    async fn credit_for(&self, message: &jetstream::Message, probe: bool) {
        let asked = Instant::now();
        if probe {
            if let Ok(p) = self.credit.permits.acquire().await {
                p.forget();
            }
        }
        self.credit.bytes_free().await;
        if asked.elapsed() > WAIT_RESTARTS_LEASE {
            if let Some(reply) = &message.reply {
                let _ = settle_request(&self.ctx.client, reply, AckKind::Progress).await;
            }
        }
    }

    async fn handle(&self, message: jetstream::Message) -> Result<Handled> {
        let info = message
            .info()
            .map_err(|e| nats_error("reading a delivery", e))?;
        let (delivered, stream_seq, consumer_seq) = (
            u32::try_from(info.delivered).unwrap_or(u32::MAX),
            info.stream_sequence,
            info.consumer_sequence,
        );
        let publish_time = (info.published.unix_timestamp_nanos() / 1_000_000) as u64;
        let Some(reply) = message.reply.as_ref().map(|r| r.to_string()) else {
            return Err(Error::Storage("a delivery without a reply subject".into()));
        };
        let (event, record) = self.decode(&message, stream_seq, publish_time)?;
        let meta = self.settings.load_full();
        let config = &meta.config;
        if config.max_delivery_attempts > 0 && delivered > config.max_delivery_attempts {
            // The last attempt's lease ran out: this redelivery is the one
            // past the last, and goes to the dead-letter queue instead.
            let mut record = record;
            record.attempts = delivered - 1;
            record.reason = DEADLINE_EXCEEDED.to_string();
            let msg_id = dead_letter_msg_id(self.source, stream_seq, consumer_seq);
            dead_letter(&self.ctx, &meta, &msg_id, record, &reply).await?;
            return Ok(Handled::Settled);
        }
        if !config.filter.matches(&event) {
            // Settled without delivery; a lost ack only brings it back to
            // be filtered again.
            let _ = self
                .ctx
                .client
                .publish(reply, Bytes::from(AckKind::Ack))
                .await;
            self.ctx.gateways.count(meta.id, Count::Filtered);
            return Ok(Handled::Settled);
        }
        let deadline = Instant::now() + Duration::from_millis(config.ack_deadline_ms);
        let last = (config.max_delivery_attempts > 0 && delivered >= config.max_delivery_attempts)
            .then(|| {
                let mut record = record;
                record.attempts = delivered;
                let msg_id = dead_letter_msg_id(self.source, stream_seq, consumer_seq);
                (record, msg_id)
            });
        self.credit
            .lease(&reply, deadline, event.size_bytes(), last);
        let delivery = Delivery {
            event: Arc::new(event),
            ack_id: ack_id(self.member_id, &reply),
            attempt: delivered,
        };
        if self.tx.send(Ok(delivery)).await.is_err() {
            // The member left. Its guard nacks the leases it held when it
            // left, which this one may have joined since: drop it here,
            // and the caller nacks it.
            self.credit.release(&reply);
            return Ok(Handled::Left);
        }
        let redelivery = delivered > 1;
        if !redelivery && matches!(self.source, Source::Partition(_)) {
            // Publish to first delivery: how far behind the consumers run
            // (a redriven dead letter's age would read as lag).
            let lag_ms = now_ms().saturating_sub(publish_time);
            metrics::histogram!(eventbus_broker::metric_names::DELIVERY_LATENCY)
                .record(lag_ms as f64 / 1e3);
        }
        self.ctx
            .gateways
            .count(meta.id, Count::Delivered { redelivery });
        Ok(Handled::Delivered)
    }

    /// The event in a message, and a dead-letter record of it.
    fn decode(
        &self,
        message: &jetstream::Message,
        stream_seq: u64,
        publish_time: u64,
    ) -> Result<(StoredEvent, Record)> {
        match self.source {
            Source::Partition(p) => {
                let envelope = Envelope::decode_at(message.payload.clone(), || {
                    format!("{} sequence {stream_seq}", stream_name(self.topic.id, p))
                })?;
                let event =
                    envelope.into_event(self.topic.topic_id(), p, stream_seq - 1, publish_time);
                let record = Record::of_event(&event);
                Ok((event, record))
            }
            Source::Redrive => {
                let record = Record::decode_at(message.payload.clone(), || {
                    format!(
                        "{} sequence {stream_seq}",
                        dead_letters::redrive_stream_name(self.settings.load().id)
                    )
                })?;
                Ok((record.stored_event(self.topic.topic_id()), record))
            }
        }
    }
}

/// The message id of the dead letter a failed delivery becomes: the
/// delivery's own consumer sequence, so a retried write within the
/// duplicate window is not doubled.
fn dead_letter_msg_id(source: Source, stream_seq: u64, consumer_seq: u64) -> String {
    match source {
        Source::Partition(p) => format!("p{p}.{stream_seq}.{consumer_seq}"),
        Source::Redrive => format!("r.{stream_seq}.{consumer_seq}"),
    }
}

/// Writes the entry (acknowledged by the quorum), then terminates the
/// message. A failure in between leaves it pending, so it comes back and
/// is dead-lettered again: never lost.
async fn dead_letter(
    ctx: &Context,
    meta: &SubscriptionMeta,
    msg_id: &str,
    mut record: Record,
    reply: &str,
) -> Result<()> {
    let now = now_ms();
    record.dead_letter_ms = now;
    record.last_delivery_ms = now;
    if record.first_delivery_ms == 0 {
        record.first_delivery_ms = now;
    }
    dead_letters::write(&ctx.js, meta.id, msg_id, &record).await?;
    settle_request(&ctx.client, reply, AckKind::Term).await?;
    ctx.gateways.count(meta.id, Count::DeadLettered);
    Ok(())
}

/// Sends one settle to a reply subject and waits for the consumer leader's
/// answer. `Ok(false)`: nobody answered, the consumer is gone.
async fn settle_request(client: &async_nats::Client, reply: &str, kind: AckKind) -> Result<bool> {
    match client.request(reply.to_string(), Bytes::from(kind)).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(false),
        Err(e) => Err(nats_error("settling a delivery", e)),
    }
}

/// Settles leases of subscription `meta`, each through its reply subject.
pub async fn settle(
    ctx: &Context,
    topic: &TopicMeta,
    meta: &SubscriptionMeta,
    op: &SettleOp,
    ack_ids: &[String],
) -> Result<SettleOutcome> {
    let consumer = meta.consumer();
    let redrive = dead_letters::redrive_stream_name(meta.id);
    let mut parsed = Vec::with_capacity(ack_ids.len());
    for id in ack_ids {
        let ours = AckRef::parse(id).filter(|a| {
            a.consumer == consumer
                && (a.stream == redrive
                    || partition_of_stream(a.stream, topic.id, topic.partitions).is_some())
        });
        match ours {
            Some(a) => parsed.push(a),
            None => {
                return Err(Error::invalid(
                    "ack_ids",
                    format!(
                        "{:?} is not an ack id of subscription {:?}",
                        id.chars().take(64).collect::<String>(),
                        meta.name
                    ),
                ))
            }
        }
    }
    let settled =
        futures_util::future::join_all(parsed.iter().map(|a| settle_one(ctx, topic, meta, op, a)))
            .await;
    let mut outcome = SettleOutcome::default();
    for (id, result) in ack_ids.iter().zip(settled) {
        if !result? {
            outcome.stale.push(id.clone());
        }
    }
    Ok(outcome)
}

/// Settles one lease; false when it was stale.
async fn settle_one(
    ctx: &Context,
    topic: &TopicMeta,
    meta: &SubscriptionMeta,
    op: &SettleOp,
    a: &AckRef<'_>,
) -> Result<bool> {
    let credit = ctx.members.get(a.member);
    let config = &meta.config;
    // Counted as one node counts: acks, and nacks (those into the
    // dead-letter queue too), once the consumer's leader took them. The
    // leader answers a second ack of a message too: a lease this gateway
    // no longer holds for its member was settled already and is not
    // counted again (a member on another gateway: this one cannot tell).
    let fresh = credit.as_ref().is_none_or(|c| c.holds(a.reply));
    let counted = |done: bool, what: Count| {
        if done && fresh {
            ctx.gateways.count(meta.id, what);
        }
        done
    };
    let done = match op {
        SettleOp::Ack => counted(
            settle_request(&ctx.client, a.reply, AckKind::Ack).await?,
            Count::Acked,
        ),
        SettleOp::Nack { delay, reason } => {
            let done = if config.out_of_attempts(a.delivered) {
                dead_letter_lease(ctx, topic, meta, a, reason).await?
            } else {
                let delay = delay.unwrap_or_else(|| config.backoff(a.delivered));
                let delay = (!delay.is_zero()).then_some(delay);
                settle_request(&ctx.client, a.reply, AckKind::Nak(delay)).await?
            };
            counted(done, Count::Nacked)
        }
        SettleOp::DeadLetter { reason } => {
            let reason = if reason.is_empty() {
                "dead-lettered by the consumer"
            } else {
                reason
            };
            dead_letter_lease(ctx, topic, meta, a, reason).await?
        }
        SettleOp::ModifyDeadline(d) if d.is_zero() => {
            let done = if config.out_of_attempts(a.delivered) {
                dead_letter_lease(ctx, topic, meta, a, "nacked").await?
            } else {
                settle_request(&ctx.client, a.reply, AckKind::Nak(None)).await?
            };
            counted(done, Count::Nacked)
        }
        SettleOp::ModifyDeadline(_) => {
            let done = settle_request(&ctx.client, a.reply, AckKind::Progress).await?;
            if let Some(c) = &credit {
                c.extend(
                    a.reply,
                    Instant::now() + Duration::from_millis(config.ack_deadline_ms),
                );
            }
            return Ok(done);
        }
    };
    if let Some(c) = credit {
        c.release(a.reply);
    }
    Ok(done)
}

/// Dead-letters a leased message by its ack id: reads the event back from
/// its stream, writes the entry, terminates the message.
async fn dead_letter_lease(
    ctx: &Context,
    topic: &TopicMeta,
    meta: &SubscriptionMeta,
    a: &AckRef<'_>,
    reason: &str,
) -> Result<bool> {
    let stream = ctx
        .js
        .get_stream(a.stream)
        .await
        .map_err(|e| nats_error("opening a stream to dead-letter from", e))?;
    let message = match stream.get_raw_message(a.stream_seq).await {
        Ok(m) => m,
        // Removed by retention meanwhile: nothing left to dead-letter.
        Err(e)
            if e.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
        {
            return settle_request(&ctx.client, a.reply, AckKind::Term).await;
        }
        Err(e) => return Err(nats_error("reading an event to dead-letter", e)),
    };
    let location = || format!("{} sequence {}", a.stream, a.stream_seq);
    let (mut record, source) = if a.stream == dead_letters::redrive_stream_name(meta.id) {
        (
            Record::decode_at(message.payload, location)?,
            Source::Redrive,
        )
    } else {
        let p = partition_of_stream(a.stream, topic.id, topic.partitions).unwrap_or(0);
        let publish_time = (message.time.unix_timestamp_nanos() / 1_000_000) as u64;
        let envelope = Envelope::decode_at(message.payload, location)?;
        let event = envelope.into_event(topic.topic_id(), p, a.stream_seq - 1, publish_time);
        (Record::of_event(&event), Source::Partition(p))
    };
    record.attempts = a.delivered;
    record.reason = reason.to_string();
    let msg_id = dead_letter_msg_id(source, a.stream_seq, a.consumer_seq);
    dead_letter(ctx, meta, &msg_id, record, a.reply).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_ids_parse_both_reply_subject_forms_and_refuse_others() {
        let v1 = "$JS.ACK.EB_T1_P0.s3.2.41.57.1733150000000000000.0";
        let id = ack_id(0xabc, v1);
        let a = AckRef::parse(&id).unwrap();
        assert_eq!(
            a,
            AckRef {
                member: 0xabc,
                reply: v1,
                stream: "EB_T1_P0",
                consumer: "s3",
                delivered: 2,
                stream_seq: 41,
                consumer_seq: 57,
            }
        );
        let v2 = "$JS.ACK.hub.ACCHASH.EB_T1_P0.s3.1.9.10.1733150000000000000.0.xyz";
        let id = ack_id(1, v2);
        let a = AckRef::parse(&id).unwrap();
        assert_eq!(
            (a.stream, a.consumer, a.delivered, a.stream_seq),
            ("EB_T1_P0", "s3", 1, 9)
        );
        for bad in [
            "",
            "zz.$JS.ACK.a.b.1.2.3.4.5",
            "1.$JS.NAK.a.b.1.2.3.4.5",
            "1.$JS.ACK.a.b.x.2.3.4.5",
            "1.a.b",
        ] {
            assert_eq!(AckRef::parse(bad), None, "{bad}");
        }
    }
}

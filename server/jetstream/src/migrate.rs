//! The cluster side of `eventbus migrate`, which moves a single node's data
//! dir into cluster mode: topics created with their original offsets,
//! events appended at exactly those offsets, subscriptions created at their
//! positions, dead letters and redrive queues written entry by entry. The
//! command (`server/src/cli/migrate.rs`) reads the data dir and decides
//! what to copy; this module only writes, in the formats the gateway reads
//! ([`Envelope`], [`Record`], the topic and subscription buckets).

use std::collections::VecDeque;
use std::sync::Arc;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::HeaderMap;
use bytes::Bytes;
use eventbus_broker::{
    DeadLetter, Error, Offset, Result, Retention, StartPosition, StoredEvent, SubscriptionConfig,
    UnixMillis,
};
use prost::Message as _;

use crate::dead_letters::{self, Record};
use crate::envelope::Envelope;
use crate::subscriptions::{SubscriptionMeta, Subscriptions};
use crate::topics::{stream_name, subject, TopicMeta, Topics};
use crate::{audit, connect_client, nats_error, Options};

/// Publishes of one partition waiting for their acknowledgement at once.
/// Enough to keep a cluster's round trips out of the copy's speed, few
/// enough that a failure leaves little to sort out (each publish names the
/// sequence it must follow, so none of them can land out of place).
const IN_FLIGHT: usize = 256;

/// A partition's bounds in the cluster, as offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The first offset the stream holds (or would hold, when empty).
    pub start: Offset,
    /// One past the last offset it holds.
    pub end: Offset,
}

/// Writes into the cluster what `eventbus migrate` moves.
pub struct Importer {
    js: jetstream::Context,
    topics: Topics,
    subscriptions: Subscriptions,
}

/// What a moved subscription is: its settings and where it stands.
pub struct SubscriptionTemplate {
    pub name: String,
    pub config: SubscriptionConfig,
    pub paused: bool,
    pub start_position: StartPosition,
    pub created_ms: UnixMillis,
    pub creator: Option<String>,
    /// Per partition: the first offset to deliver.
    pub positions: Vec<Offset>,
}

impl Importer {
    /// Connects as a gateway does, opening (or creating) the buckets.
    pub async fn connect(options: Options) -> Result<Importer> {
        let (_client, js) = connect_client(&options).await?;
        let options = Arc::new(options);
        let topics = Topics::open(js.clone(), options.clone()).await?;
        let subscriptions = Subscriptions::open(js.clone(), options.clone()).await?;
        audit::open(&js, options.replicas).await?;
        Ok(Importer {
            js,
            topics,
            subscriptions,
        })
    }

    /// Topic `name` as the cluster has it, if it has it.
    pub async fn topic(&self, name: &str) -> Result<Option<Arc<TopicMeta>>> {
        match self.topics.load(name).await {
            Ok(meta) => Ok(Some(meta)),
            Err(Error::TopicNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates topic `name` with its partitions' offsets starting at
    /// `starts` (one per partition).
    pub async fn create_topic(
        &self,
        name: &str,
        retention: Retention,
        created_ms: UnixMillis,
        creator: Option<String>,
        starts: &[Offset],
    ) -> Result<Arc<TopicMeta>> {
        let meta = TopicMeta {
            id: 0,
            name: name.to_string(),
            partitions: starts.len() as u32,
            retention,
            created_ms,
            creator,
        };
        // Sequences are offsets + 1.
        let first_seqs: Vec<u64> = starts.iter().map(|s| s + 1).collect();
        self.topics.create_as(meta, &first_seqs).await
    }

    /// Partition `p`'s bounds in the cluster.
    pub async fn bounds(&self, topic: &TopicMeta, p: u32) -> Result<Bounds> {
        let mut stream = self.topics.stream(topic.id, p).await?;
        let info = stream
            .info()
            .await
            .map_err(|e| nats_error("reading a partition's state", e))?;
        // An empty stream has first = last + 1, as offsets start = end.
        Ok(Bounds {
            start: info.state.first_sequence.saturating_sub(1),
            end: info.state.last_sequence,
        })
    }

    /// Whether the message at `offset` of partition `p` is exactly what
    /// migrating `event` writes there.
    pub async fn holds(&self, topic: &TopicMeta, p: u32, event: &StoredEvent) -> Result<bool> {
        let stream = self.topics.stream(topic.id, p).await?;
        let message = stream
            .get_raw_message(event.offset + 1)
            .await
            .map_err(|e| nats_error("reading a migrated event", e))?;
        Ok(message.payload == body(event))
    }

    /// Appends `events`, consecutive offsets of partition `p` starting at
    /// the partition's end, each at its own offset. Every publish names the
    /// sequence it must follow (`Nats-Expected-Last-Sequence`), so a publish
    /// sent again, or one overtaken by a failure, is refused rather than
    /// stored in the wrong place. An event whose idempotency key is still
    /// in its window (published at or after `dedup_since`) carries it as
    /// `Nats-Msg-Id`, so the cluster keeps deduplicating it.
    ///
    /// A stream the cluster just created may not have elected its leader
    /// yet: its publishes find no responder ("no stream found"). That is
    /// waited out for up to [`NEW_STREAM_PATIENCE`], going on from what the
    /// stream holds (what went in before the failure stays; what was sent
    /// after it was refused by its expected sequence).
    pub async fn append(
        &self,
        topic: &TopicMeta,
        p: u32,
        mut events: &[StoredEvent],
        dedup_since: UnixMillis,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + NEW_STREAM_PATIENCE;
        loop {
            let error = match self.append_once(topic, p, events, dedup_since).await {
                Ok(()) => return Ok(()),
                Err(AppendError::Failed(e)) => return Err(e),
                Err(AppendError::NoStream(e)) if tokio::time::Instant::now() >= deadline => {
                    return Err(e)
                }
                Err(AppendError::NoStream(e)) => e,
            };
            tracing::debug!(error = %error, "no leader for a new stream yet; waiting");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let Ok(there) = self.bounds(topic, p).await else {
                continue;
            };
            let first = events.first().map_or(there.end, |e| e.offset);
            let stored = usize::try_from(there.end.saturating_sub(first)).unwrap_or(usize::MAX);
            events = &events[stored.min(events.len())..];
            if events.is_empty() {
                return Ok(());
            }
        }
    }

    async fn append_once(
        &self,
        topic: &TopicMeta,
        p: u32,
        events: &[StoredEvent],
        dedup_since: UnixMillis,
    ) -> std::result::Result<(), AppendError> {
        let subject = subject(topic.id, p);
        let mut waiting: VecDeque<(Offset, PublishAckFuture)> = VecDeque::new();
        for event in events {
            if waiting.len() == IN_FLIGHT {
                if let Some((offset, ack)) = waiting.pop_front() {
                    check_ack(topic, p, offset, ack).await?;
                }
            }
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Expected-Last-Sequence",
                event.offset.to_string().as_str(),
            );
            if !event.idempotency_key.is_empty() && event.publish_time >= dedup_since {
                headers.insert("Nats-Msg-Id", event.idempotency_key.as_str());
            }
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, body(event))
                .await
                .map_err(|e| AppendError::Failed(nats_error("copying an event", e)))?;
            waiting.push_back((event.offset, ack));
        }
        for (offset, ack) in waiting {
            check_ack(topic, p, offset, ack).await?;
        }
        Ok(())
    }

    /// Subscription `name` of `topic` as the cluster has it, if it has it.
    pub async fn subscription(
        &self,
        topic: &TopicMeta,
        name: &str,
    ) -> Result<Option<SubscriptionMeta>> {
        match self.subscriptions.get(topic, name).await {
            Ok((meta, _)) => Ok(Some(meta)),
            Err(Error::SubscriptionNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the subscription `t` describes, each partition's consumer
    /// starting at its position.
    pub async fn create_subscription(
        &self,
        topic: &TopicMeta,
        t: SubscriptionTemplate,
    ) -> Result<SubscriptionMeta> {
        let meta = SubscriptionMeta {
            id: 0,
            topic_id: topic.id,
            name: t.name,
            config: t.config,
            paused: t.paused,
            start_position: t.start_position,
            created_ms: t.created_ms,
            creator: t.creator,
        };
        let positions = t.positions;
        self.subscriptions
            .create_as(topic, meta, |p| DeliverPolicy::ByStartSequence {
                start_sequence: positions.get(p as usize).map_or(1, |o| o + 1),
            })
            .await
    }

    /// Per partition, the first offset the subscription will deliver
    /// (its consumer's start, while nothing was delivered).
    pub async fn positions(
        &self,
        topic: &TopicMeta,
        meta: &SubscriptionMeta,
    ) -> Result<Vec<Offset>> {
        let mut out = Vec::with_capacity(topic.partitions as usize);
        for p in 0..topic.partitions {
            let stream = self.topics.stream(topic.id, p).await?;
            let info = stream
                .consumer_info(meta.consumer())
                .await
                .map_err(|e| nats_error("reading a subscription's consumer", e))?;
            // The last sequence handed out; offsets are sequences - 1.
            out.push(info.delivered.stream_sequence);
        }
        Ok(out)
    }

    /// Entries in the subscription's dead-letter queue and redrive queue.
    pub async fn dead_letter_counts(&self, meta: &SubscriptionMeta) -> Result<(u64, u64)> {
        let (dlq, _) = dead_letters::count(&self.js, meta.id).await?;
        Ok((dlq, dead_letters::redrive_count(&self.js, meta.id).await?))
    }

    /// Appends `dl` to the subscription's dead-letter queue (it gets the
    /// queue's next id).
    pub async fn write_dead_letter(&self, meta: &SubscriptionMeta, dl: &DeadLetter) -> Result<()> {
        let record = Record::of_dead_letter(dl);
        dead_letters::write(&self.js, meta.id, &format!("migrate-d{}", dl.id), &record).await
    }

    /// Appends `dl`, a dead letter redriven and not yet delivered again, to
    /// the subscription's redrive queue.
    pub async fn write_redriven(&self, meta: &SubscriptionMeta, dl: &DeadLetter) -> Result<()> {
        let record = Record::of_dead_letter(dl);
        dead_letters::write_redriven(&self.js, meta.id, &format!("migrate-r{}", dl.id), &record)
            .await
    }
}

/// The message body of a moved event: the gateway's envelope, with the
/// original publish time.
fn body(event: &StoredEvent) -> Bytes {
    Bytes::from(Envelope::of_stored(event).encode_to_vec())
}

/// Waits for the acknowledgement of the event at `offset` and checks that
/// it landed there.
/// How long [`Importer::append`] waits for a new stream's leader.
const NEW_STREAM_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why one pass of [`Importer::append`] stopped.
enum AppendError {
    /// A publish found no stream leader to answer it: worth waiting for.
    NoStream(Error),
    Failed(Error),
}

async fn check_ack(
    topic: &TopicMeta,
    p: u32,
    offset: Offset,
    ack: PublishAckFuture,
) -> std::result::Result<(), AppendError> {
    let where_ = || format!("topic {:?} partition {p} offset {offset}", topic.name);
    let ack = ack.await.map_err(|e| {
        let no_stream =
            e.kind() == async_nats::jetstream::context::PublishErrorKind::StreamNotFound;
        let error = nats_error(
            "copying an event",
            format!(
                "{} ({e}); run migrate again: it goes on from what {} holds",
                where_(),
                stream_name(topic.id, p)
            ),
        );
        if no_stream {
            AppendError::NoStream(error)
        } else {
            AppendError::Failed(error)
        }
    })?;
    if ack.duplicate || ack.sequence != offset + 1 {
        return Err(AppendError::Failed(Error::FailedPrecondition(format!(
            "{} was stored at offset {} (duplicate: {}): another event in the cluster's \
             duplicate window has its idempotency key",
            where_(),
            ack.sequence.saturating_sub(1),
            ack.duplicate
        ))));
    }
    Ok(())
}

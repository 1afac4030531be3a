//! Dead letters on JetStream, which has none of its own.
//!
//! * Stream `EB_D<id>` (subject `eb.d<id>`) is subscription `<id>`'s
//!   dead-letter queue: one message per entry, the entry's id is its stream
//!   sequence (increasing, never reused: a purge keeps the sequence).
//! * Stream `EB_R<id>` (subject `eb.r<id>`, work-queue retention) holds
//!   redriven entries until the subscription's members take them; its
//!   consumer `s<id>` is read like one more partition.
//!
//! No advisory is needed, so none can be lost: the gateway that sees an
//! event fail its last attempt (a nack on it, or the redelivery that
//! follows an expired last lease) writes the entry, waits for the quorum's
//! PubAck and only then terminates the message (`+TERM`). A gateway that
//! dies in between leaves the message pending; it comes back after its
//! deadline and is dead-lettered again, so an entry is written at least
//! once and never lost. The write carries `Nats-Msg-Id` of the failed
//! delivery, so a retry within the duplicate window is not doubled.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use eventbus_broker::dead_letter::MAX_PAGE_BYTES;
use eventbus_broker::{
    DeadLetter, DeadLetterPage, DeadLetterQuery, DeadLetterSelector, Error, Result, StoredEvent,
    TopicId, UnixMillis,
};
use prost::Message;

use crate::envelope::Envelope;
use crate::subscriptions::SubscriptionMeta;
use crate::{nats_error, placement};

/// Entries read at most to fill one filtered page: a listing with a rare
/// filter returns what it found so far, and where to go on.
const MAX_SCANNED_PER_PAGE: usize = 10_000;

pub fn dlq_stream_name(id: u32) -> String {
    format!("EB_D{id}")
}

fn dlq_subject(id: u32) -> String {
    format!("eb.d{id}")
}

pub fn redrive_stream_name(id: u32) -> String {
    format!("EB_R{id}")
}

fn redrive_subject(id: u32) -> String {
    format!("eb.r{id}")
}

/// A dead letter as stored in a message body.
#[derive(Clone, PartialEq, Message)]
pub struct Record {
    #[prost(message, optional, tag = "1")]
    pub event: Option<Envelope>,
    #[prost(uint32, tag = "2")]
    pub partition: u32,
    #[prost(uint64, tag = "3")]
    pub offset: u64,
    #[prost(uint64, tag = "4")]
    pub publish_time: u64,
    #[prost(uint32, tag = "5")]
    pub attempts: u32,
    #[prost(uint32, tag = "6")]
    pub redrive_count: u32,
    #[prost(uint64, tag = "7")]
    pub first_delivery_ms: u64,
    #[prost(uint64, tag = "8")]
    pub last_delivery_ms: u64,
    #[prost(uint64, tag = "9")]
    pub dead_letter_ms: u64,
    #[prost(string, tag = "10")]
    pub reason: String,
}

impl Record {
    /// The event this record carries, as the contract sees it.
    pub fn stored_event(&self, topic_id: TopicId) -> StoredEvent {
        let e = self.event.clone().unwrap_or_default();
        StoredEvent {
            topic_id,
            partition: self.partition,
            offset: self.offset,
            publish_time: self.publish_time,
            key: e.key,
            event_type: e.event_type,
            payload: e.payload,
            content_type: e.content_type,
            attributes: e.attributes,
            idempotency_key: e.idempotency_key,
            event_time: e.event_time,
        }
    }

    pub fn of_event(event: &StoredEvent) -> Record {
        Record {
            // The record keeps the publish time itself.
            event: Some(Envelope {
                publish_time: None,
                ..Envelope::of_stored(event)
            }),
            partition: event.partition,
            offset: event.offset,
            publish_time: event.publish_time,
            ..Default::default()
        }
    }

    /// The record of a dead letter moved here from another store: its
    /// event and its whole delivery history (its id is the new queue's).
    pub fn of_dead_letter(dl: &DeadLetter) -> Record {
        Record {
            attempts: dl.attempts,
            redrive_count: dl.redrive_count,
            first_delivery_ms: dl.first_delivery_ms,
            last_delivery_ms: dl.last_delivery_ms,
            dead_letter_ms: dl.dead_letter_ms,
            reason: dl.reason.clone(),
            ..Record::of_event(&dl.event)
        }
    }

    fn public(self, id: u64, topic_id: TopicId) -> DeadLetter {
        DeadLetter {
            id,
            event: self.stored_event(topic_id),
            attempts: self.attempts,
            redrive_count: self.redrive_count,
            first_delivery_ms: self.first_delivery_ms,
            last_delivery_ms: self.last_delivery_ms,
            dead_letter_ms: self.dead_letter_ms,
            reason: self.reason,
        }
    }

    pub fn decode_at(body: Bytes, location: impl FnOnce() -> String) -> Result<Record> {
        Record::decode(body).map_err(|e| Error::corruption(location(), e))
    }
}

/// Makes the subscription's dead-letter and redrive streams.
pub async fn create_streams(
    js: &jetstream::Context,
    meta: &SubscriptionMeta,
    replicas: usize,
) -> Result<()> {
    let common = stream::Config {
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let dead_letters = stream::Config {
        name: dlq_stream_name(meta.id),
        subjects: vec![dlq_subject(meta.id)],
        ..common.clone()
    };
    placement::create_stream(js, dead_letters, "creating a dead-letter stream").await?;
    let redrives = stream::Config {
        name: redrive_stream_name(meta.id),
        subjects: vec![redrive_subject(meta.id)],
        retention: stream::RetentionPolicy::WorkQueue,
        ..common
    };
    placement::create_stream(js, redrives, "creating a redrive stream").await?;
    Ok(())
}

/// Deletes both streams of subscription `id`; one already gone is fine.
pub async fn delete_streams(js: &jetstream::Context, id: u32) {
    for name in [dlq_stream_name(id), redrive_stream_name(id)] {
        if let Err(e) = js.delete_stream(&name).await {
            tracing::debug!(stream = name, error = %e, "deleting a subscription stream");
        }
    }
}

pub async fn redrive_stream(js: &jetstream::Context, id: u32) -> Result<stream::Stream> {
    js.get_stream(redrive_stream_name(id))
        .await
        .map_err(|e| nats_error("opening a redrive stream", e))
}

async fn dlq_stream(js: &jetstream::Context, id: u32) -> Result<stream::Stream> {
    js.get_stream(dlq_stream_name(id))
        .await
        .map_err(|e| nats_error("opening a dead-letter stream", e))
}

/// Publishes `body` on `subject` with message id `msg_id` and waits for
/// the quorum's acknowledgement.
async fn publish_acked(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    body: Bytes,
) -> Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    crate::acked::publish(js, &subject, headers, body)
        .await
        .map_err(|e| nats_error("writing a dead letter", e))?;
    Ok(())
}

/// Writes one entry to subscription `id`'s queue, acknowledged by the
/// quorum. `msg_id` names the failed delivery (see the module doc).
pub async fn write(js: &jetstream::Context, id: u32, msg_id: &str, record: &Record) -> Result<()> {
    publish_acked(
        js,
        dlq_subject(id),
        msg_id,
        Bytes::from(record.encode_to_vec()),
    )
    .await
}

/// Writes one entry to subscription `id`'s redrive queue (a dead letter
/// sent back and not yet delivered again), acknowledged by the quorum.
pub async fn write_redriven(
    js: &jetstream::Context,
    id: u32,
    msg_id: &str,
    record: &Record,
) -> Result<()> {
    publish_acked(
        js,
        redrive_subject(id),
        msg_id,
        Bytes::from(record.encode_to_vec()),
    )
    .await
}

/// How many entries subscription `id`'s redrive queue holds.
pub async fn redrive_count(js: &jetstream::Context, id: u32) -> Result<u64> {
    let mut stream = redrive_stream(js, id).await?;
    let info = stream
        .info()
        .await
        .map_err(|e| nats_error("reading a redrive queue", e))?;
    Ok(info.state.messages)
}

/// The entries in queue `id` and when the oldest was added.
pub async fn count(js: &jetstream::Context, id: u32) -> Result<(u64, Option<UnixMillis>)> {
    let mut stream = dlq_stream(js, id).await?;
    let info = stream
        .info()
        .await
        .map_err(|e| nats_error("reading a dead-letter queue", e))?;
    let state = &info.state;
    let oldest = (state.messages > 0)
        .then(|| (state.first_timestamp.unix_timestamp_nanos() / 1_000_000) as u64);
    Ok((state.messages, oldest))
}

/// The entry at `seq` or after it, from the stream leader; None past the
/// end.
async fn next_entry(
    stream: &stream::Stream,
    id: u32,
    seq: u64,
    topic_id: TopicId,
) -> Result<Option<DeadLetter>> {
    let found = stream
        .raw_message_builder()
        .sequence(seq)
        .next_by_subject(dlq_subject(id))
        .send()
        .await;
    match found {
        Ok(m) => {
            let record = Record::decode_at(m.payload, || {
                format!("{} sequence {}", dlq_stream_name(id), m.sequence)
            })?;
            Ok(Some(record.public(m.sequence, topic_id)))
        }
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(nats_error("reading a dead-letter queue", e)),
    }
}

/// One page of entries matching `query` after id `after`.
pub async fn list(
    js: &jetstream::Context,
    meta: &SubscriptionMeta,
    after: Option<u64>,
    limit: usize,
    query: &DeadLetterQuery,
) -> Result<DeadLetterPage> {
    let stream = dlq_stream(js, meta.id).await?;
    let topic_id = TopicId(meta.topic_id);
    let mut page: Vec<DeadLetter> = Vec::new();
    let mut page_bytes = 0;
    let mut seq = after.map_or(1, |a| a + 1);
    for _ in 0..MAX_SCANNED_PER_PAGE {
        let Some(dl) = next_entry(&stream, meta.id, seq, topic_id).await? else {
            return Ok(DeadLetterPage {
                dead_letters: page,
                next_after: None,
            });
        };
        seq = dl.id + 1;
        if !query.matches(&dl) {
            continue;
        }
        // Bounded in bytes too, as on one node; the first entry always goes.
        let bytes = dl.size_bytes();
        if page.len() == limit || (!page.is_empty() && page_bytes + bytes > MAX_PAGE_BYTES) {
            let next_after = page.last().map(|d| d.id);
            return Ok(DeadLetterPage {
                dead_letters: page,
                next_after,
            });
        }
        page_bytes += bytes;
        page.push(dl);
    }
    // Scanned enough for one call: say where to go on.
    Ok(DeadLetterPage {
        dead_letters: page,
        next_after: Some(seq - 1),
    })
}

pub async fn get(js: &jetstream::Context, meta: &SubscriptionMeta, id: u64) -> Result<DeadLetter> {
    let stream = dlq_stream(js, meta.id).await?;
    match next_entry(&stream, meta.id, id, TopicId(meta.topic_id)).await? {
        Some(dl) if dl.id == id => Ok(dl),
        _ => Err(Error::DeadLetterNotFound {
            subscription: meta.name.clone(),
            id: id.to_string(),
        }),
    }
}

/// The existing entries `selector` names.
async fn select(
    js: &jetstream::Context,
    meta: &SubscriptionMeta,
    selector: &DeadLetterSelector,
) -> Result<Vec<DeadLetter>> {
    let stream = dlq_stream(js, meta.id).await?;
    let topic_id = TopicId(meta.topic_id);
    let mut out = Vec::new();
    match selector {
        DeadLetterSelector::Ids(ids) => {
            for &id in ids {
                match next_entry(&stream, meta.id, id, topic_id).await? {
                    Some(dl) if dl.id == id => out.push(dl),
                    _ => {}
                }
            }
        }
        DeadLetterSelector::Filter(_) | DeadLetterSelector::All => {
            let mut seq = 1;
            while let Some(dl) = next_entry(&stream, meta.id, seq, topic_id).await? {
                seq = dl.id + 1;
                let wanted = match selector {
                    DeadLetterSelector::Filter(q) => q.matches(&dl),
                    _ => true,
                };
                if wanted {
                    out.push(dl);
                }
            }
        }
    }
    Ok(out)
}

/// Deletes the selected entries (or, with `dry_run`, counts them).
pub async fn purge(
    js: &jetstream::Context,
    meta: &SubscriptionMeta,
    selector: &DeadLetterSelector,
    dry_run: bool,
) -> Result<u64> {
    let selected = select(js, meta, selector).await?;
    if dry_run {
        return Ok(selected.len() as u64);
    }
    let stream = dlq_stream(js, meta.id).await?;
    let mut purged = 0;
    for dl in selected {
        // Deleted meanwhile through another gateway: not counted.
        if stream
            .delete_message(dl.id)
            .await
            .map_err(|e| nats_error("purging a dead letter", e))?
        {
            purged += 1;
        }
    }
    Ok(purged)
}

/// Sends the selected entries back to the subscription (or, with
/// `dry_run`, counts them): each is written to the redrive stream under
/// message id `d<entry id>` and then deleted from the queue. A crash in
/// between leaves it in both; running the redrive again within the
/// duplicate window writes it once. `max_per_second` (0: unlimited) paces
/// the writes.
pub async fn redrive(
    js: &jetstream::Context,
    meta: &SubscriptionMeta,
    selector: &DeadLetterSelector,
    dry_run: bool,
    max_per_second: u32,
) -> Result<u64> {
    let selected = select(js, meta, selector).await?;
    if dry_run {
        return Ok(selected.len() as u64);
    }
    let stream = dlq_stream(js, meta.id).await?;
    let pace = (max_per_second > 0).then(|| Duration::from_secs_f64(1.0 / max_per_second as f64));
    let started = tokio::time::Instant::now();
    let mut moved = 0u64;
    for dl in selected {
        let mut record = Record::of_event(&dl.event);
        record.redrive_count = dl.redrive_count + 1;
        publish_acked(
            js,
            redrive_subject(meta.id),
            &format!("d{}", dl.id),
            Bytes::from(record.encode_to_vec()),
        )
        .await?;
        stream
            .delete_message(dl.id)
            .await
            .map_err(|e| nats_error("redriving a dead letter", e))?;
        moved += 1;
        if let Some(pace) = pace {
            tokio::time::sleep_until(started + pace * moved as u32).await;
        }
    }
    Ok(moved)
}

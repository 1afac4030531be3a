//! Publish on JetStream.
//!
//! Each event goes to the partition of its key, or, without a key, of its
//! idempotency key (deduplication is per stream, so a retry must reach the
//! same stream), else round-robin. Per partition, in request order:
//!
//! * one event: a JetStream publish, its idempotency key as `Nats-Msg-Id`;
//!   OK on the PubAck, which the stream leader sends once a quorum of
//!   replicas has it.
//! * several events without idempotency keys: one atomic batch (ADR-50:
//!   `Nats-Batch-Id`, `Nats-Batch-Sequence`, `Nats-Batch-Commit` on the
//!   last): all stored or none.
//! * several events where any has an idempotency key: one publish each, in
//!   order. JetStream refuses `Nats-Msg-Id` inside atomic batches, so here
//!   a failure part-way leaves a prefix stored; the client's retry (same
//!   keys) stores the rest and reports the prefix as duplicates.
//!
//! Partitions are published one after another; a publish spanning
//! partitions is atomic per partition, not across them (ARCHITECTURE.md,
//! "Backend conformance").

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use eventbus_broker::partitioner::{partition_for_key, Spreader};
use eventbus_broker::{AppendResult, Error, NewEvent, Published, Result};
use prost::Message as _;
use serde::Deserialize;

use crate::acked::{self, Unacked};
use crate::envelope::Envelope;
use crate::nats_error;
use crate::topics::{subject, TopicMeta};

/// The partition of an event.
fn route(e: &NewEvent, partitions: u32, spreader: &Spreader) -> u32 {
    if !e.key.is_empty() {
        partition_for_key(&e.key, partitions)
    } else if !e.idempotency_key.is_empty() {
        partition_for_key(&e.idempotency_key, partitions)
    } else {
        spreader.next(partitions)
    }
}

pub async fn publish(
    client: &async_nats::Client,
    js: &jetstream::Context,
    meta: &TopicMeta,
    spreader: &Spreader,
    events: &[NewEvent],
) -> Result<Published> {
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); meta.partitions as usize];
    for (i, e) in events.iter().enumerate() {
        groups[route(e, meta.partitions, spreader) as usize].push(i);
    }
    let mut results = vec![
        AppendResult {
            partition: 0,
            offset: 0,
            duplicate: false,
        };
        events.len()
    ];
    for (p, group) in groups.iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        let p = p as u32;
        let subject = subject(meta.id, p);
        let keyed = group.iter().any(|&i| !events[i].idempotency_key.is_empty());
        if group.len() == 1 || keyed {
            for &i in group {
                let (seq, duplicate) = publish_one(js, &subject, &events[i]).await?;
                results[i] = AppendResult {
                    partition: p,
                    offset: seq - 1,
                    duplicate,
                };
            }
        } else {
            let last = publish_batch(client, &subject, group.iter().map(|&i| &events[i])).await?;
            let first = last + 1 - group.len() as u64;
            for (j, &i) in group.iter().enumerate() {
                results[i] = AppendResult {
                    partition: p,
                    offset: first + j as u64 - 1,
                    duplicate: false,
                };
            }
        }
    }
    Ok(Published {
        topic_id: meta.topic_id(),
        results,
    })
}

fn body(e: &NewEvent) -> Bytes {
    Bytes::from(Envelope::of(e).encode_to_vec())
}

/// One event; its stream sequence and whether it was a duplicate.
async fn publish_one(js: &jetstream::Context, subject: &str, e: &NewEvent) -> Result<(u64, bool)> {
    let mut headers = HeaderMap::new();
    if !e.idempotency_key.is_empty() {
        headers.insert("Nats-Msg-Id", e.idempotency_key.as_str());
    }
    match acked::publish(js, subject, headers, body(e)).await {
        Ok(ack) => Ok((ack.sequence, ack.duplicate)),
        Err(Unacked::NoStream) => Err(no_stream()),
        Err(e) => Err(publish_error(e.to_string())),
    }
}

/// What the stream answers a batch commit with.
#[derive(Deserialize)]
struct BatchAck {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: u64,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    description: String,
}

/// An atomic batch of `events` (at most 1,000: the publish limit); the
/// sequence of its last message. Sent again under a new batch id while no
/// stream answers the subject (see [`acked`]): the stream drops a batch
/// that it did not see from its first message.
async fn publish_batch<'e>(
    client: &async_nats::Client,
    subject: &str,
    events: impl ExactSizeIterator<Item = &'e NewEvent> + Clone,
) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + acked::PATIENCE;
    let mut pause = std::time::Duration::from_millis(20);
    loop {
        match try_batch(client, subject, events.clone()).await {
            Err(BatchError::NoStream) => {
                if tokio::time::Instant::now() + pause > deadline {
                    return Err(no_stream());
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(250));
            }
            Err(BatchError::Failed(e)) => return Err(e),
            Ok(seq) => return Ok(seq),
        }
    }
}

enum BatchError {
    NoStream,
    Failed(Error),
}

async fn try_batch<'e>(
    client: &async_nats::Client,
    subject: &str,
    events: impl ExactSizeIterator<Item = &'e NewEvent>,
) -> std::result::Result<u64, BatchError> {
    let failed = |why: String| BatchError::Failed(publish_error(why));
    let n = events.len();
    let batch_id = format!("{:032x}", rand_id());
    let mut commit = None;
    for (j, e) in events.enumerate() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Batch-Id", batch_id.as_str());
        headers.insert("Nats-Batch-Sequence", (j + 1).to_string().as_str());
        if j + 1 < n {
            // Core publishes on one connection arrive in order; only the
            // commit is answered.
            client
                .publish_with_headers(subject.to_string(), headers, body(e))
                .await
                .map_err(|e| failed(e.to_string()))?;
        } else {
            headers.insert("Nats-Batch-Commit", "1");
            let reply = client
                .request_with_headers(subject.to_string(), headers, body(e))
                .await;
            commit = Some(match reply {
                Ok(reply) => reply,
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    return Err(BatchError::NoStream)
                }
                Err(e) => return Err(failed(e.to_string())),
            });
        }
    }
    let reply =
        commit.ok_or_else(|| BatchError::Failed(Error::invalid("events", "an empty batch")))?;
    let ack: BatchAck = serde_json::from_slice(&reply.payload)
        .map_err(|e| failed(format!("an unreadable batch acknowledgement: {e}")))?;
    if let Some(err) = ack.error {
        return Err(failed(err.description));
    }
    if ack.count != n as u64 || ack.seq < n as u64 {
        return Err(failed(format!(
            "the batch commit acknowledged {} of {n} events",
            ack.count
        )));
    }
    Ok(ack.seq)
}

fn rand_id() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    // Unique per gateway process and call: time, then a process-wide counter.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    nanos
        ^ (u128::from(std::process::id()) << 96)
        ^ u128::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// A publish that did not get its acknowledgement: nothing is known to be
/// stored, the client retries (with idempotency keys, safely).
fn publish_error(why: String) -> Error {
    nats_error("publishing", why)
}

/// No stream answered the partition's subject for [`acked::PATIENCE`]:
/// most likely the topic was deleted through another gateway. The caller
/// looks the topic up again, and answers UNAVAILABLE if it still exists.
fn no_stream() -> Error {
    Error::TopicNotFound(String::new())
}

pub fn check_size(i: usize, event: &NewEvent, max: usize) -> Result<()> {
    let len = Envelope::of(event).encoded_len();
    if len > max {
        return Err(Error::invalid(
            "events",
            format!("event {i} is {len} bytes encoded; the limit is {max} bytes (max-event-bytes)"),
        ));
    }
    Ok(())
}

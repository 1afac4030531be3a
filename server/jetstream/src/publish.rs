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
//! * several events where any has an idempotency key: one publish each
//!   (JetStream refuses `Nats-Msg-Id` inside atomic batches), pipelined so
//!   that no two events of one key are in flight together
//!   ([`publish_each`]). A failure part-way leaves some stored: never a
//!   key's later event without its earlier one. The client's retry (same
//!   keys) stores the rest and reports the others as duplicates.
//!
//! Partitions are published at once; a publish spanning partitions is
//! atomic per partition, not across them (ARCHITECTURE.md, "Backend
//! conformance").

use async_nats::jetstream::{self, context::PublishErrorKind};
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
    // Partitions are independent streams, so their publishes run at once.
    let per_partition = groups
        .iter()
        .enumerate()
        .filter(|(_, group)| !group.is_empty())
        .map(|(p, group)| publish_partition(client, js, meta.id, p as u32, group, events));
    let mut results = vec![
        AppendResult {
            partition: 0,
            offset: 0,
            duplicate: false,
        };
        events.len()
    ];
    // Every partition's outcome is awaited before an error returns.
    let outcomes = futures_util::future::join_all(per_partition).await;
    for placed in outcomes {
        for (i, result) in placed? {
            results[i] = result;
        }
    }
    Ok(Published {
        topic_id: meta.topic_id(),
        results,
    })
}

/// The events `group` (indexes into `events`) of partition `p`, each with
/// where it was stored.
async fn publish_partition(
    client: &async_nats::Client,
    js: &jetstream::Context,
    topic: u32,
    p: u32,
    group: &[usize],
    events: &[NewEvent],
) -> Result<Vec<(usize, AppendResult)>> {
    let subject = subject(topic, p);
    let keyed = group.iter().any(|&i| !events[i].idempotency_key.is_empty());
    let placed = |i: usize, seq: u64, duplicate: bool| {
        (
            i,
            AppendResult {
                partition: p,
                offset: seq - 1,
                duplicate,
            },
        )
    };
    if group.len() == 1 || keyed {
        let acks = publish_each(js, &subject, group.iter().map(|&i| &events[i])).await?;
        Ok(group
            .iter()
            .zip(acks)
            .map(|(&i, (seq, duplicate))| placed(i, seq, duplicate))
            .collect())
    } else {
        let last = publish_batch(client, &subject, group.iter().map(|&i| &events[i])).await?;
        let first = last + 1 - group.len() as u64;
        Ok(group
            .iter()
            .enumerate()
            .map(|(j, &i)| placed(i, first + j as u64, false))
            .collect())
    }
}

fn body(e: &NewEvent) -> Bytes {
    Bytes::from(Envelope::of(e).encode_to_vec())
}

/// Each event as its own publish (they carry idempotency keys, which
/// atomic batches refuse); each one's stream sequence and whether it was a
/// duplicate, in order.
///
/// The publishes are pipelined in waves: a wave holds the next event of
/// each key (every keyless event is its own), all sent at once on the one
/// connection and then acknowledged in order; an event whose key is already
/// in the wave waits for the next. So two events of one key are never in
/// flight together, and a failure cannot store a key's later event without
/// its earlier one: per-key order holds even when the client retries a call
/// that failed part-way (events of different keys may then be stored in
/// another order than the call's). One wave costs one round trip to the
/// stream leader instead of one per event.
async fn publish_each<'e>(
    js: &jetstream::Context,
    subject: &str,
    events: impl ExactSizeIterator<Item = &'e NewEvent>,
) -> Result<Vec<(u64, bool)>> {
    let events: Vec<&NewEvent> = events.collect();
    let mut acks = vec![(0, false); events.len()];
    let mut pending: Vec<usize> = (0..events.len()).collect();
    while !pending.is_empty() {
        let mut keys = std::collections::HashSet::new();
        let (wave, later): (Vec<usize>, Vec<usize>) = pending
            .into_iter()
            .partition(|&i| events[i].key.is_empty() || keys.insert(events[i].key.as_str()));
        let mut sent = Vec::with_capacity(wave.len());
        for &i in &wave {
            let publish = js
                .publish_with_headers(subject.to_string(), headers(events[i]), body(events[i]))
                .await;
            sent.push((i, publish));
        }
        // Every ack is awaited before an error returns: no publish is left
        // unobserved, and the first error is the one reported.
        let mut failed = None;
        let mut unanswered = Vec::new();
        for (i, publish) in sent {
            let acked = match publish {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => acks[i] = (ack.sequence, ack.duplicate),
                // Not stored: sent again below, patiently.
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound => unanswered.push(i),
                Err(e) => {
                    failed.get_or_insert(publish_error(e.to_string()));
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        for i in unanswered {
            acks[i] = publish_one(js, subject, events[i]).await?;
        }
        pending = later;
    }
    Ok(acks)
}

fn headers(e: &NewEvent) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if !e.idempotency_key.is_empty() {
        headers.insert("Nats-Msg-Id", e.idempotency_key.as_str());
    }
    headers
}

/// One event; its stream sequence and whether it was a duplicate.
async fn publish_one(js: &jetstream::Context, subject: &str, e: &NewEvent) -> Result<(u64, bool)> {
    match acked::publish(js, subject, headers(e), body(e)).await {
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

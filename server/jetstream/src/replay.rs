//! Replay on JetStream: each selected partition read in turn by an ordered
//! consumer (no ack state, recreated by the client if it falls behind),
//! from the start offset's sequence or start time, up to the end the
//! request names; batches of at most [`BATCH`] events. Type patterns are
//! matched in the gateway. A following replay then reads every partition's
//! new events as they are stored, one ordered consumer per partition.

use std::sync::Arc;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use eventbus_broker::filter::type_matches;
use eventbus_broker::{
    BoxStream, Error, ReplayEnd, ReplayItem, ReplayRequest, ReplayStart, Result,
};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use crate::envelope::Envelope;
use crate::nats_error;
use crate::topics::{stream_name, TopicMeta, Topics};

pub use eventbus_broker::replay::select_partitions;

/// Events per replay batch.
const BATCH: usize = 256;

pub async fn start(
    topics: &Topics,
    meta: Arc<TopicMeta>,
    partitions: Vec<u32>,
    request: ReplayRequest,
) -> Result<BoxStream<Result<ReplayItem>>> {
    // Each partition's end is fixed now, as on one node.
    let mut plan = Vec::with_capacity(partitions.len());
    for p in partitions {
        let mut stream = topics.stream(meta.id, p).await?;
        let state = stream
            .info()
            .await
            .map_err(|e| nats_error("reading a partition's state", e))?
            .state
            .clone();
        plan.push((p, stream, state.first_sequence, state.last_sequence));
    }
    // Bounded: a slow reader holds the reading task at the channel.
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for (p, stream, first, last) in &plan {
            if let Err(e) = read_partition(&meta, *p, stream, *first, *last, &request, &tx).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
        if tx.send(Ok(ReplayItem::CaughtUp)).await.is_err() {
            return;
        }
        if request.end == ReplayEnd::Follow {
            follow(meta, plan, request, tx).await;
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// After the history: every partition's new events as they are stored,
/// one ordered consumer per partition from just after the end it was read
/// to (or from the requested start offset, when that is further on). Ends
/// when the reader goes away; a broken consumer ends the replay with the
/// error.
async fn follow(
    meta: Arc<TopicMeta>,
    plan: Vec<(u32, Stream, u64, u64)>,
    request: ReplayRequest,
    tx: mpsc::Sender<Result<ReplayItem>>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (p, stream, _, last) in plan {
        let from = match request.start {
            ReplayStart::Offset(o) => (o + 1).max(last + 1),
            _ => last + 1,
        };
        let (meta, types, tx) = (meta.clone(), request.types.clone(), tx.clone());
        tasks.spawn(async move {
            if let Err(e) = follow_partition(&meta, p, &stream, from, &types, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
    // The tasks end with the reader (their sends fail) or with an error.
    tokio::select! {
        _ = tx.closed() => {}
        _ = tasks.join_next() => {}
    }
}

async fn follow_partition(
    meta: &TopicMeta,
    p: u32,
    stream: &Stream,
    from: u64,
    types: &[String],
    tx: &mpsc::Sender<Result<ReplayItem>>,
) -> Result<()> {
    use futures_util::FutureExt as _;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error("following a partition", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| nats_error("following a partition", e))?;
    while let Some(first) = messages.next().await {
        // What is already here goes in the same batch.
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            let message = message.map_err(|e| nats_error("following a partition", e))?;
            let info = message
                .info()
                .map_err(|e| nats_error("following a partition", e))?;
            let seq = info.stream_sequence;
            let publish_time = (info.published.unix_timestamp_nanos() / 1_000_000) as u64;
            let envelope = Envelope::decode_at(message.payload.clone(), || {
                format!("{} sequence {seq}", stream_name(meta.id, p))
            })?;
            if types.is_empty() || types.iter().any(|t| type_matches(t, &envelope.event_type)) {
                batch.push(envelope.into_event(meta.topic_id(), p, seq - 1, publish_time));
            }
            if batch.len() < BATCH {
                next = messages.next().now_or_never().flatten();
            }
        }
        if !batch.is_empty() && tx.send(Ok(ReplayItem::Events(batch))).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

async fn read_partition(
    meta: &TopicMeta,
    p: u32,
    stream: &Stream,
    first: u64,
    last: u64,
    request: &ReplayRequest,
    tx: &mpsc::Sender<Result<ReplayItem>>,
) -> Result<()> {
    // Sequences are offsets + 1.
    let start_seq = match request.start {
        ReplayStart::Earliest => first,
        ReplayStart::Offset(o) => (o + 1).max(first),
        ReplayStart::Time(_) => first,
    };
    let end_seq = match request.end {
        ReplayEnd::Offset(o) => o.min(last),
        _ => last,
    };
    if last == 0 || start_seq > end_seq {
        return Ok(());
    }
    if let ReplayStart::Time(ms) = request.start {
        // Nothing at or after the start time: an ordered consumer started
        // there would wait for the next publish.
        let newest = stream
            .get_raw_message(last)
            .await
            .map_err(|e| nats_error("replaying", e))?;
        if ((newest.time.unix_timestamp_nanos() / 1_000_000) as u64) < ms {
            return Ok(());
        }
    }
    let deliver_policy = match request.start {
        ReplayStart::Time(ms) => DeliverPolicy::ByStartTime {
            start_time: time_of(ms)?,
        },
        _ => DeliverPolicy::ByStartSequence {
            start_sequence: start_seq,
        },
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error("starting a replay", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| nats_error("starting a replay", e))?;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| nats_error("replaying", e))?;
        let info = message.info().map_err(|e| nats_error("replaying", e))?;
        let seq = info.stream_sequence;
        let publish_time = (info.published.unix_timestamp_nanos() / 1_000_000) as u64;
        if seq > end_seq {
            break;
        }
        if let ReplayEnd::Time(end) = request.end {
            if publish_time >= end {
                break;
            }
        }
        let envelope = Envelope::decode_at(message.payload.clone(), || {
            format!("{} sequence {seq}", stream_name(meta.id, p))
        })?;
        let done = seq == end_seq;
        if request.types.is_empty()
            || request
                .types
                .iter()
                .any(|t| type_matches(t, &envelope.event_type))
        {
            batch.push(envelope.into_event(meta.topic_id(), p, seq - 1, publish_time));
        }
        if batch.len() == BATCH || (done && !batch.is_empty()) {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.send(Ok(ReplayItem::Events(full))).await.is_err() {
                return Ok(());
            }
        }
        if done {
            break;
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(ReplayItem::Events(batch))).await;
    }
    Ok(())
}

fn time_of(ms: u64) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| Error::invalid("start_time", e.to_string()))
}

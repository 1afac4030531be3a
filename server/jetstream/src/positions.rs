//! Where a subscription stands on JetStream: seeking (a consumer reset,
//! ADR-60, per partition) and its statistics (read from the consumers and
//! its dead-letter stream).

use async_nats::jetstream::consumer::{pull, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, stream};
use eventbus_broker::{Error, Result, SeekTarget, SubscriptionInfo, SubscriptionStats};
use futures_util::StreamExt as _;

use crate::dead_letters;
use crate::gateways::Counts;
use crate::nats_error;
use crate::subscriptions::SubscriptionMeta;
use crate::topics::{stream_name, TopicMeta};

async fn partition_stream(
    js: &jetstream::Context,
    topic: &TopicMeta,
    p: u32,
) -> Result<stream::Stream> {
    js.get_stream(stream_name(topic.id, p))
        .await
        .map_err(|e| nats_error("opening a partition stream", e))
}

/// Moves the subscription: every partition the target names restarts at
/// its sequence; leases and pending redeliveries there are dropped, as a
/// seek on one node drops them.
pub async fn seek(
    js: &jetstream::Context,
    topic: &TopicMeta,
    meta: &SubscriptionMeta,
    target: SeekTarget,
) -> Result<()> {
    let n = topic.partitions;
    let mut targets: Vec<Option<u64>> = vec![None; n as usize];
    match &target {
        SeekTarget::Offsets(pairs) => {
            if pairs.is_empty() {
                return Err(Error::invalid("offsets", "name at least one partition"));
            }
            for &(p, o) in pairs {
                if p >= n {
                    return Err(Error::invalid(
                        "offsets",
                        format!(
                            "topic {:?} has partitions 0..{n}; {p} does not exist",
                            topic.name
                        ),
                    ));
                }
                if targets[p as usize].is_some() {
                    return Err(Error::invalid(
                        "offsets",
                        format!("partition {p} is named twice; name each partition once"),
                    ));
                }
                // Sequences are offsets + 1.
                targets[p as usize] = Some(o.saturating_add(1));
            }
        }
        _ => {
            for p in 0..n {
                targets[p as usize] = Some(sequence_for(js, topic, p, &target).await?);
            }
        }
    }
    for (p, seq) in targets.into_iter().enumerate() {
        let Some(seq) = seq else { continue };
        let stream = partition_stream(js, topic, p as u32).await?;
        let mut consumer: PullConsumer = stream
            .get_consumer(&meta.consumer())
            .await
            .map_err(|e| nats_error("opening a subscription's consumer", e))?;
        consumer
            .reset(Some(seq.max(1)))
            .await
            .map_err(|e| nats_error("moving a subscription's consumer", e))?;
    }
    Ok(())
}

/// The first sequence of partition `p` that `target` points at.
async fn sequence_for(
    js: &jetstream::Context,
    topic: &TopicMeta,
    p: u32,
    target: &SeekTarget,
) -> Result<u64> {
    let mut stream = partition_stream(js, topic, p).await?;
    let state = stream
        .info()
        .await
        .map_err(|e| nats_error("reading a partition's state", e))?
        .state
        .clone();
    let end = state.last_sequence + 1;
    Ok(match target {
        SeekTarget::Earliest => state.first_sequence.max(1),
        SeekTarget::Latest => end,
        SeekTarget::Time(ms) => {
            if state.messages == 0 {
                return Ok(end);
            }
            // Nothing at or after the time: the end. Otherwise an ordered
            // consumer starting there tells the first one's sequence.
            let last = stream
                .get_raw_message(state.last_sequence)
                .await
                .map_err(|e| nats_error("finding an offset by time", e))?;
            if ((last.time.unix_timestamp_nanos() / 1_000_000) as u64) < *ms {
                return Ok(end);
            }
            let start_time =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(*ms) * 1_000_000)
                    .map_err(|e| Error::invalid("time", e.to_string()))?;
            let consumer = stream
                .create_consumer(pull::OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartTime { start_time },
                    ..Default::default()
                })
                .await
                .map_err(|e| nats_error("finding an offset by time", e))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| nats_error("finding an offset by time", e))?;
            match messages.next().await {
                Some(Ok(m)) => m
                    .info()
                    .map(|i| i.stream_sequence)
                    .map_err(|e| nats_error("finding an offset by time", e))?,
                Some(Err(e)) => return Err(nats_error("finding an offset by time", e)),
                None => end,
            }
        }
        SeekTarget::Offsets(_) => unreachable!("offsets are handled by the caller"),
    })
}

/// The subscription with its statistics. JetStream keeps the gauges
/// (backlog, in flight, oldest unacked); the counters and members come
/// from the gateways that deliver and settle ([`crate::gateways`]), summed
/// into `counts`. `expired` stays 0: a gateway cannot tell a lease that ran
/// out from one settled through another gateway, and no client or metric
/// reads it.
pub async fn info(
    js: &jetstream::Context,
    topic: &TopicMeta,
    meta: SubscriptionMeta,
    counts: Counts,
) -> Result<SubscriptionInfo> {
    let mut stats = SubscriptionStats {
        delivered: counts.delivered,
        acked: counts.acked,
        nacked: counts.nacked,
        redelivered: counts.redelivered,
        dead_lettered: counts.dead_lettered,
        filtered: counts.filtered,
        members: u32::try_from(counts.members).unwrap_or(u32::MAX),
        ..Default::default()
    };
    let mut streams: Vec<String> = (0..topic.partitions)
        .map(|p| stream_name(topic.id, p))
        .collect();
    streams.push(dead_letters::redrive_stream_name(meta.id));
    for name in streams {
        let stream = js
            .get_stream(&name)
            .await
            .map_err(|e| nats_error("opening a stream", e))?;
        let info = stream
            .consumer_info(meta.consumer())
            .await
            .map_err(|e| nats_error("reading a subscription's consumer", e))?;
        stats.backlog += info.num_pending + info.num_ack_pending as u64;
        stats.in_flight += info.num_ack_pending as u64;
        if info.num_pending + info.num_ack_pending as u64 > 0 {
            // The oldest unsettled event is the one after the ack floor.
            if let Ok(m) = stream
                .get_raw_message(info.ack_floor.stream_sequence + 1)
                .await
            {
                let ms = (m.time.unix_timestamp_nanos() / 1_000_000) as u64;
                stats.oldest_unacked_ms = Some(stats.oldest_unacked_ms.map_or(ms, |o| o.min(ms)));
            }
        }
    }
    let (count, oldest) = dead_letters::count(js, meta.id).await?;
    stats.dead_letter_count = count;
    stats.oldest_dead_letter_ms = oldest;
    Ok(SubscriptionInfo {
        topic: topic.name.clone(),
        name: meta.name.clone(),
        id: meta.subscription_id(),
        config: meta.config,
        paused: meta.paused,
        start_position: meta.start_position,
        created_ms: meta.created_ms,
        creator: meta.creator,
        stats,
    })
}

//! `EventService/Replay`: read history without touching any subscription.
//!
//! The broker streams the selected partitions in bounded batches; a task
//! here converts each batch into messages of at most 4 MiB
//! ([`message_size`]), which default clients accept, and feeds a bounded
//! channel that is the response stream, so a slow reader backpressures the
//! broker. It stops when the client goes away or shutdown starts.

use eventbus_broker::replay::select_partitions;
use eventbus_broker::{
    BoxStream, Limits, ReplayEnd, ReplayItem, ReplayRequest as Replay, ReplayStart,
};
use eventbus_proto::v1::{replay_request, Event, ReplayRequest, ReplayResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::context::Call;
use super::convert::{self, timestamp_to_millis};
use super::message_size;
use super::status::{invalid, to_status};

pub type ReplayStream = ReceiverStream<Result<ReplayResponse, Status>>;

type Items = BoxStream<eventbus_broker::Result<ReplayItem>>;

pub async fn handle(
    call: &Call<'_>,
    shutdown: CancellationToken,
    req: ReplayRequest,
) -> Result<ReplayStream, Status> {
    let broker = &call.broker;
    let topic = broker.get_topic(&req.topic).await.map_err(to_status)?;
    let plan = parse(&req, topic.partition_count(), broker.limits())?;
    let start = match (&req.start, plan.start_time) {
        (_, Some(ms)) => ReplayStart::Time(ms),
        (Some(replay_request::Start::StartOffset(o)), _) => ReplayStart::Offset(*o),
        _ => ReplayStart::Earliest,
    };
    let end = match (&req.end, plan.end_time) {
        (_, Some(ms)) => ReplayEnd::Time(ms),
        (Some(replay_request::End::EndOffset(o)), _) => ReplayEnd::Offset(*o),
        _ if req.follow => ReplayEnd::Follow,
        _ => ReplayEnd::Tail,
    };
    let items = broker
        .replay(Replay {
            topic: req.topic.clone(),
            partitions: plan.partitions,
            start,
            end,
            types: req.types,
        })
        .await
        .map_err(to_status)?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        tokio::select! {
            res = forward(&req.topic, items, &tx) => {
                if let Err(status) = res {
                    let _ = tx.send(Err(status)).await;
                }
            }
            _ = shutdown.cancelled() => {
                let _ = tx.send(Err(to_status(eventbus_broker::Error::ShuttingDown))).await;
            }
            _ = tx.closed() => {}
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// What a Replay request selects, checked.
#[derive(Debug)]
pub struct Plan {
    /// The partitions to read, each below the topic's partition count.
    pub partitions: Vec<u32>,
    /// `start_time` in Unix milliseconds, when the replay starts at a time.
    pub start_time: Option<u64>,
    /// `end_time` in Unix milliseconds, when the replay ends at a time.
    pub end_time: Option<u64>,
}

/// The broker-free part of Replay, for a topic of `partition_count`
/// partitions: type patterns, start and end, and the partitions.
pub fn parse(req: &ReplayRequest, partition_count: u32, limits: &Limits) -> Result<Plan, Status> {
    limits
        .check_type_patterns("types", &req.types)
        .and_then(|bytes| limits.check_filter_bytes("types", bytes))
        .map_err(to_status)?;
    if req.follow && req.end.is_some() {
        return Err(invalid(
            "follow",
            "cannot be combined with end_offset or end_time",
        ));
    }
    let partitions =
        select_partitions(&req.topic, partition_count, &req.partitions).map_err(to_status)?;
    let end_time = match &req.end {
        Some(replay_request::End::EndTime(t)) => Some(timestamp_to_millis("end_time", t)?),
        _ => None,
    };
    let start_time = match &req.start {
        Some(replay_request::Start::StartTime(t)) => Some(timestamp_to_millis("start_time", t)?),
        _ => None,
    };
    Ok(Plan {
        partitions,
        start_time,
        end_time,
    })
}

/// Sends the broker's batches as responses until the replay ends, the
/// broker fails (its error ends the stream) or the client goes away.
async fn forward(
    topic: &str,
    mut items: Items,
    tx: &mpsc::Sender<Result<ReplayResponse, Status>>,
) -> Result<(), Status> {
    while let Some(item) = items.next().await {
        let messages = match item.map_err(to_status)? {
            ReplayItem::Events(read) => {
                let events: Vec<Event> = read.iter().map(|ev| convert::event(topic, ev)).collect();
                message_size::split(events)
                    .into_iter()
                    .map(|events| ReplayResponse {
                        events,
                        caught_up: false,
                    })
                    .collect()
            }
            ReplayItem::CaughtUp => vec![ReplayResponse {
                events: Vec::new(),
                caught_up: true,
            }],
        };
        for msg in messages {
            if tx.send(Ok(msg)).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

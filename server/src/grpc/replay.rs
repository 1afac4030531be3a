//! `EventService/Replay`: read history without touching any subscription.
//!
//! A spawned task reads each selected partition from its start to its end in
//! bounded batches and feeds a bounded channel; the handler returns that
//! channel as the stream, so a slow reader backpressures the task. It stops
//! when the client goes away or shutdown starts. Each batch goes out in
//! messages of at most 4 MiB ([`message_size`]), which default clients accept.

use std::sync::Arc;

use eventbus_log::filter::any_type_matches;
use eventbus_log::limits::Limits;
use eventbus_log::{Broker, TopicState};
use eventbus_proto::v1::{replay_request, Event, ReplayRequest, ReplayResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::convert::{self, timestamp_to_millis};
use super::message_size;
use super::status::{invalid, to_status};

pub type ReplayStream = ReceiverStream<Result<ReplayResponse, Status>>;

/// Events read per partition per step (sent in messages of at most 4 MiB).
const BATCH: usize = 256;

/// Where one partition's replay stops.
#[derive(Clone, Copy)]
enum End {
    Offset(u64),
    Time(u64),
    /// Follow mode: no end.
    Never,
}

struct Cursor {
    partition: u32,
    next: u64,
    end: End,
    done: bool,
}

pub async fn handle(
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    req: ReplayRequest,
) -> Result<ReplayStream, Status> {
    let topic = broker.log().existing_topic(&req.topic).map_err(to_status)?;
    let plan = parse(&req, topic.partition_count(), &broker.options().limits)?;
    let mut cursors = Vec::with_capacity(plan.partitions.len());
    for p in plan.partitions {
        let tail = &topic.partitions[p as usize];
        let next = match (&req.start, plan.start_time) {
            (_, Some(ms)) => broker
                .offset_for_time(topic.clone(), p, ms)
                .await
                .map_err(to_status)?,
            (Some(replay_request::Start::StartOffset(o)), _) => (*o).max(tail.start()),
            _ => tail.start(),
        };
        let end = match (&req.end, plan.end_time) {
            (_, Some(ms)) => End::Time(ms),
            (Some(replay_request::End::EndOffset(o)), _) => End::Offset(*o),
            _ if req.follow => End::Never,
            _ => End::Offset(tail.end()),
        };
        cursors.push(Cursor {
            partition: p,
            next,
            end,
            done: false,
        });
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        tokio::select! {
            res = run(&broker, &topic, cursors, &req.types, tx.clone()) => {
                if let Err(status) = res {
                    let _ = tx.send(Err(status)).await;
                }
            }
            _ = shutdown.cancelled() => {
                let _ = tx.send(Err(to_status(eventbus_log::Error::ShuttingDown))).await;
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
    let partitions: Vec<u32> = if req.partitions.is_empty() {
        (0..partition_count).collect()
    } else {
        let mut seen = vec![false; partition_count as usize];
        for &p in &req.partitions {
            let Some(seen) = seen.get_mut(p as usize) else {
                return Err(invalid(
                    "partitions",
                    format!(
                        "topic {:?} has partitions 0..{partition_count}; {p} does not exist",
                        req.topic
                    ),
                ));
            };
            if std::mem::replace(seen, true) {
                return Err(invalid(
                    "partitions",
                    format!("partition {p} is named twice; name each partition once"),
                ));
            }
        }
        req.partitions.clone()
    };
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

async fn run(
    broker: &Broker,
    topic: &Arc<TopicState>,
    mut cursors: Vec<Cursor>,
    types: &[String],
    tx: mpsc::Sender<Result<ReplayResponse, Status>>,
) -> Result<(), Status> {
    let mut tail = topic.watch_tail();
    let mut caught_up_sent = false;
    loop {
        // Mark the tail seen *before* reading, so a commit that lands after the
        // read still wakes the wait below.
        tail.borrow_and_update();
        let mut progressed = false;
        for c in cursors.iter_mut().filter(|c| !c.done) {
            let limit = match c.end {
                End::Offset(e) if c.next >= e => {
                    c.done = true;
                    continue;
                }
                End::Offset(e) => ((e - c.next) as usize).min(BATCH),
                End::Time(_) | End::Never => BATCH,
            };
            let read = broker
                .read(topic.clone(), c.partition, c.next, limit)
                .await
                .map_err(to_status)?;
            let Some(last) = read.last() else {
                // Nothing more now: bounded replays of a live tail are done.
                if !matches!(c.end, End::Never) {
                    c.done = true;
                }
                continue;
            };
            c.next = last.offset + 1;
            progressed = true;
            let mut events: Vec<Event> = Vec::with_capacity(read.len());
            for ev in &read {
                if let End::Time(ms) = c.end {
                    if ev.publish_time >= ms {
                        c.done = true;
                        break;
                    }
                }
                if any_type_matches(types, &ev.event_type) {
                    events.push(convert::event(topic.name(), ev));
                }
            }
            for events in message_size::split(events) {
                let msg = ReplayResponse {
                    events,
                    caught_up: false,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return Ok(());
                }
            }
        }
        let following = cursors.iter().any(|c| matches!(c.end, End::Never));
        if !progressed && !caught_up_sent && (following || cursors.iter().all(|c| c.done)) {
            caught_up_sent = true;
            if tx
                .send(Ok(ReplayResponse {
                    events: Vec::new(),
                    caught_up: true,
                }))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        if cursors.iter().all(|c| c.done) {
            return Ok(());
        }
        if !progressed {
            // Only followers get here: wait for the next commit.
            if tail.changed().await.is_err() || topic.is_deleted() {
                return Err(to_status(eventbus_log::Error::TopicNotFound(
                    topic.name().to_string(),
                )));
            }
        }
    }
}

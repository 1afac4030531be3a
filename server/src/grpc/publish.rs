//! `EventService/Publish`: append a batch of events to one topic.

use eventbus_broker::{Broker, Published};
use eventbus_proto::v1::{PublishEvent, PublishRequest, PublishResponse, PublishResult};
use std::time::Instant;

use eventbus_broker::Limits;
use eventbus_broker::{AppendResult, NewEvent};
use tonic::Status;

use crate::ops::trace::TRACEPARENT;
use crate::ops::{names, Ops};

use super::context::{Call, RequestContext};
use super::convert;
use super::status::to_status;

pub async fn handle(call: &Call<'_>, req: PublishRequest) -> Result<PublishResponse, Status> {
    let results = append(&call.ctx, &*call.broker, call.ops, &req.topic, req.events).await?;
    Ok(PublishResponse { results })
}

/// One Publish: of a unary call, or of one request of a PublishStream
/// (`publish_stream`), which goes through here too, so both check the same
/// limits and count the same metrics. `broker` is the caller's [`Scoped`]
/// broker: it charges the publish quota.
///
/// `traceparent`: the W3C trace context of the call (gRPC metadata), stored
/// with every event that does not carry its own, so consumers continue the
/// producer's trace.
///
/// [`Scoped`]: crate::auth::scope::Scoped
pub async fn append(
    ctx: &RequestContext,
    broker: &dyn Broker,
    ops: &Ops,
    topic: &str,
    events: Vec<PublishEvent>,
) -> Result<Vec<PublishResult>, Status> {
    let started = Instant::now();
    // The count was bounded on the wire already (see `wire`); the other
    // bounds apply to what the client sent, before the server adds its own
    // attributes (the trace context) and before a topic is auto-created.
    let mut events = parse_events(events, broker.limits())?;
    if let Some(tp) = &ctx.traceparent {
        for e in &mut events {
            e.attributes
                .entry(TRACEPARENT.to_string())
                .or_insert_with(|| tp.clone());
        }
    }
    let Published {
        topic_id,
        results: appended,
    } = broker.publish(topic, &events).await.map_err(to_status)?;
    record(ops, topic, &events, &appended, started);
    Ok(appended
        .into_iter()
        .map(|r| PublishResult {
            partition: r.partition,
            offset: r.offset,
            event_id: eventbus_broker::format_event_id(topic_id, r.partition, r.offset),
            duplicate: r.duplicate,
        })
        .collect())
}

/// The broker-free part of Publish: converts and checks every event. Takes
/// the events by value so payloads move into the domain type uncopied.
pub fn parse_events(events: Vec<PublishEvent>, limits: &Limits) -> Result<Vec<NewEvent>, Status> {
    limits
        .check_publish_count(events.len())
        .map_err(to_status)?;
    events
        .into_iter()
        .enumerate()
        .map(|(i, ev)| {
            let ev = convert::new_event(ev)?;
            limits.check_event(i, &ev).map_err(to_status)?;
            Ok(ev)
        })
        .collect()
}

/// Counts what was stored (duplicates excluded) and how long it took.
fn record(
    ops: &Ops,
    topic: &str,
    events: &[NewEvent],
    appended: &[AppendResult],
    started: Instant,
) {
    let (mut n, mut bytes) = (0u64, 0u64);
    for (e, r) in events.iter().zip(appended) {
        if !r.duplicate {
            n += 1;
            bytes += e.payload.len() as u64;
        }
    }
    let topic = ops.labels.topic(topic);
    metrics::counter!(names::PUBLISHED_EVENTS, "topic" => topic.clone()).increment(n);
    metrics::counter!(names::PUBLISHED_BYTES, "topic" => topic).increment(bytes);
    metrics::histogram!(names::PUBLISH_DURATION).record(started.elapsed().as_secs_f64());
}

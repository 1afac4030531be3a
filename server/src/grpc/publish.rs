//! `EventService/Publish`: append a batch of events to one topic.

use eventbus_log::Broker;
use eventbus_proto::v1::{PublishRequest, PublishResponse, PublishResult};
use tonic::Status;

use super::convert;
use super::status::to_status;

pub async fn handle(broker: &Broker, req: PublishRequest) -> Result<PublishResponse, Status> {
    let events = req
        .events
        .into_iter()
        .map(convert::new_event)
        .collect::<Result<Vec<_>, _>>()?;
    let (topic_id, appended) = broker
        .publish(&req.topic, &events)
        .await
        .map_err(to_status)?;
    Ok(PublishResponse {
        results: appended
            .into_iter()
            .map(|r| PublishResult {
                partition: r.partition,
                offset: r.offset,
                event_id: eventbus_log::format_event_id(topic_id, r.partition, r.offset),
                duplicate: r.duplicate,
            })
            .collect(),
    })
}

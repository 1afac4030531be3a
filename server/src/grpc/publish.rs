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
    let appended = broker
        .publish(&req.topic, &events)
        .await
        .map_err(to_status)?;
    let topic = broker.log().topic(&req.topic);
    let topic_id = topic.as_ref().map(|t| t.id());
    Ok(PublishResponse {
        results: appended
            .into_iter()
            .map(|r| PublishResult {
                partition: r.partition,
                offset: r.offset,
                event_id: topic_id
                    .map(|id| eventbus_log::format_event_id(id, r.partition, r.offset))
                    .unwrap_or_default(),
                duplicate: r.duplicate,
            })
            .collect(),
    })
}

//! `AdminService/CreateTopic`.

use eventbus_broker::Retention;
use eventbus_broker::TopicConfig;
use eventbus_proto::v1::{CreateTopicRequest, CreateTopicResponse};
use tonic::Status;

use super::context::Call;
use super::convert::{self, duration_from_proto, duration_to_millis};
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: CreateTopicRequest,
) -> Result<CreateTopicResponse, Status> {
    let config = parse(&req)?;
    let info = call
        .broker
        .create_topic(&req.topic, config)
        .await
        .map_err(to_status)?;
    Ok(CreateTopicResponse {
        topic: Some(convert::topic(&info)),
    })
}

/// The broker-free part of CreateTopic: the requested topic settings.
pub fn parse(req: &CreateTopicRequest) -> Result<TopicConfig, Status> {
    let retention = match &req.retention {
        None => Retention::default(),
        Some(r) => Retention {
            max_age_ms: r
                .max_age
                .as_ref()
                .map(|d| duration_from_proto("retention.max_age", d))
                .transpose()?
                .filter(|d| !d.is_zero())
                .map(|d| duration_to_millis("retention.max_age", d))
                .transpose()?,
            max_bytes: Some(r.max_bytes).filter(|b| *b > 0),
        },
    };
    Ok(TopicConfig {
        partitions: req.partitions,
        retention,
        // The caller's scope names it (auth::scope), not the request.
        creator: None,
    })
}

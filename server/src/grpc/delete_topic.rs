//! `AdminService/DeleteTopic`: removes the topic, its events and subscriptions.

use eventbus_log::Broker;
use eventbus_proto::v1::{DeleteTopicRequest, DeleteTopicResponse};
use tonic::Status;

use super::status::to_status;

pub async fn handle(
    broker: &Broker,
    req: DeleteTopicRequest,
) -> Result<DeleteTopicResponse, Status> {
    broker.delete_topic(&req.topic).await.map_err(to_status)?;
    Ok(DeleteTopicResponse {})
}

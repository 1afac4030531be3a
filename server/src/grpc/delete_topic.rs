//! `AdminService/DeleteTopic`: removes the topic, its events and subscriptions.

use eventbus_broker::Broker;
use eventbus_proto::v1::{DeleteTopicRequest, DeleteTopicResponse};
use tonic::Status;

use super::status::to_status;

pub async fn handle(
    broker: &dyn Broker,
    req: DeleteTopicRequest,
) -> Result<DeleteTopicResponse, Status> {
    broker.delete_topic(&req.topic).await.map_err(to_status)?;
    Ok(DeleteTopicResponse {})
}

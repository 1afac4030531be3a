//! `AdminService/DeleteTopic`: removes the topic, its events and subscriptions.

use eventbus_proto::v1::{DeleteTopicRequest, DeleteTopicResponse};
use tonic::Status;

use super::context::Call;
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: DeleteTopicRequest,
) -> Result<DeleteTopicResponse, Status> {
    call.broker
        .delete_topic(&req.topic)
        .await
        .map_err(to_status)?;
    Ok(DeleteTopicResponse {})
}

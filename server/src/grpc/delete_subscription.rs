//! `AdminService/DeleteSubscription`: removes the subscription and its state.

use eventbus_broker::Broker;
use eventbus_proto::v1::{DeleteSubscriptionRequest, DeleteSubscriptionResponse};
use tonic::Status;

use super::status::to_status;

pub async fn handle(
    broker: &dyn Broker,
    req: DeleteSubscriptionRequest,
) -> Result<DeleteSubscriptionResponse, Status> {
    broker
        .delete_subscription(&req.topic, &req.subscription)
        .await
        .map_err(to_status)?;
    Ok(DeleteSubscriptionResponse {})
}

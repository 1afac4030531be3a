//! `AdminService/DeleteSubscription`: removes the subscription and its state.

use eventbus_proto::v1::{DeleteSubscriptionRequest, DeleteSubscriptionResponse};
use tonic::Status;

use super::context::Call;
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: DeleteSubscriptionRequest,
) -> Result<DeleteSubscriptionResponse, Status> {
    call.broker
        .delete_subscription(&req.topic, &req.subscription)
        .await
        .map_err(to_status)?;
    Ok(DeleteSubscriptionResponse {})
}

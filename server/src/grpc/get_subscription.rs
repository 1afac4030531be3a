//! `AdminService/GetSubscription`: settings plus live statistics.

use eventbus_proto::v1::{GetSubscriptionRequest, GetSubscriptionResponse};
use tonic::Status;

use super::context::Call;
use super::convert;
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: GetSubscriptionRequest,
) -> Result<GetSubscriptionResponse, Status> {
    let info = call
        .broker
        .get_subscription(&req.topic, &req.subscription)
        .await
        .map_err(to_status)?;
    Ok(GetSubscriptionResponse {
        subscription: Some(convert::subscription(&info)),
    })
}

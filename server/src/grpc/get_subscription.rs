//! `AdminService/GetSubscription`: settings plus live statistics.

use eventbus_broker::Broker;
use eventbus_proto::v1::{GetSubscriptionRequest, GetSubscriptionResponse};
use tonic::Status;

use super::convert;
use super::status::to_status;

pub async fn handle(
    broker: &dyn Broker,
    req: GetSubscriptionRequest,
) -> Result<GetSubscriptionResponse, Status> {
    let info = broker
        .get_subscription(&req.topic, &req.subscription)
        .await
        .map_err(to_status)?;
    Ok(GetSubscriptionResponse {
        subscription: Some(convert::subscription(&info)),
    })
}

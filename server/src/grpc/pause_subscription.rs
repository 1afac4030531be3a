//! `AdminService/PauseSubscription`: stop new deliveries, keep held leases.

use eventbus_broker::Broker;
use eventbus_proto::v1::{PauseSubscriptionRequest, PauseSubscriptionResponse};
use tonic::Status;

use super::convert;
use super::status::to_status;

pub async fn handle(
    broker: &dyn Broker,
    req: PauseSubscriptionRequest,
) -> Result<PauseSubscriptionResponse, Status> {
    let info = broker
        .set_paused(&req.topic, &req.subscription, true)
        .await
        .map_err(to_status)?;
    Ok(PauseSubscriptionResponse {
        subscription: Some(convert::subscription(&info)),
    })
}

//! `AdminService/PauseSubscription`: stop new deliveries, keep held leases.

use eventbus_proto::v1::{PauseSubscriptionRequest, PauseSubscriptionResponse};
use tonic::Status;

use super::context::Call;
use super::convert;
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: PauseSubscriptionRequest,
) -> Result<PauseSubscriptionResponse, Status> {
    let info = call
        .broker
        .set_paused(&req.topic, &req.subscription, true)
        .await
        .map_err(to_status)?;
    Ok(PauseSubscriptionResponse {
        subscription: Some(convert::subscription(&info)),
    })
}

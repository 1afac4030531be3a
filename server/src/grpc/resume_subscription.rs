//! `AdminService/ResumeSubscription`: deliver again after a pause.

use eventbus_proto::v1::{ResumeSubscriptionRequest, ResumeSubscriptionResponse};
use tonic::Status;

use super::context::Call;
use super::convert;
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: ResumeSubscriptionRequest,
) -> Result<ResumeSubscriptionResponse, Status> {
    let info = call
        .broker
        .set_paused(&req.topic, &req.subscription, false)
        .await
        .map_err(to_status)?;
    Ok(ResumeSubscriptionResponse {
        subscription: Some(convert::subscription(&info)),
    })
}

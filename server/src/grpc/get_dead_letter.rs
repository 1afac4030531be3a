//! `AdminService/GetDeadLetter`: one entry of a subscription's DLQ.

use eventbus_proto::v1::{GetDeadLetterRequest, GetDeadLetterResponse};
use tonic::Status;

use super::context::Call;
use super::convert;
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: GetDeadLetterRequest,
) -> Result<GetDeadLetterResponse, Status> {
    let seq = convert::dead_letter_id("id", &req.id)?;
    let dl = call
        .broker
        .get_dead_letter(&req.topic, &req.subscription, seq)
        .await
        .map_err(to_status)?;
    Ok(GetDeadLetterResponse {
        dead_letter: Some(convert::dead_letter(&req.topic, &dl)),
    })
}

//! `EventService/Ack`: settle deliveries.

use eventbus_broker::SettleOp;
use eventbus_proto::v1::{AckRequest, AckResponse};
use tonic::Status;

use super::context::Call;
use super::status::{stale_to_status, to_status};

pub async fn handle(call: &Call<'_>, req: AckRequest) -> Result<AckResponse, Status> {
    let outcome = call
        .broker
        .settle(&req.topic, &req.subscription, SettleOp::Ack, &req.ack_ids)
        .await
        .map_err(to_status)?;
    stale_to_status("acked", req.ack_ids.len(), outcome)?;
    Ok(AckResponse {})
}

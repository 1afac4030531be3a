//! `EventService/Nack`: give deliveries back for redelivery.

use std::time::Duration;

use eventbus_log::delivery::SettleOp;
use eventbus_log::Broker;
use eventbus_proto::v1::{NackRequest, NackResponse};
use tonic::Status;

use super::ack::stale_to_status;
use super::convert::duration_from_proto;
use super::status::{to_status, unimplemented};

pub async fn handle(broker: &Broker, req: NackRequest) -> Result<NackResponse, Status> {
    if req.dead_letter {
        return Err(unimplemented("Nack with dead_letter=true"));
    }
    let delay = req
        .delay
        .as_ref()
        .map(|d| duration_from_proto("delay", d))
        .transpose()?
        .unwrap_or(Duration::ZERO);
    let outcome = broker
        .settle(
            &req.topic,
            &req.subscription,
            SettleOp::Nack { delay },
            &req.ack_ids,
        )
        .await
        .map_err(to_status)?;
    stale_to_status("nacked", req.ack_ids.len(), outcome)?;
    Ok(NackResponse {})
}

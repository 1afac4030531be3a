//! `EventService/Nack`: give deliveries back for redelivery.

use std::time::Duration;

use eventbus_broker::SettleOp;
use eventbus_proto::v1::{NackRequest, NackResponse};
use tonic::Status;

use super::context::Call;
use super::convert::duration_from_proto;
use super::status::{invalid, stale_to_status, to_status};

/// Longest accepted nack delay: the longest ack deadline.
const MAX_NACK_DELAY: Duration = eventbus_broker::limits::MAX_ACK_DEADLINE;

pub async fn handle(call: &Call<'_>, req: NackRequest) -> Result<NackResponse, Status> {
    let op = parse(&req)?;
    let outcome = call
        .broker
        .settle(&req.topic, &req.subscription, op, &req.ack_ids)
        .await
        .map_err(to_status)?;
    stale_to_status("nacked", req.ack_ids.len(), outcome)?;
    Ok(NackResponse {})
}

/// The broker-free part of Nack: what to do with the deliveries.
pub fn parse(req: &NackRequest) -> Result<SettleOp, Status> {
    let delay = req
        .delay
        .as_ref()
        .map(|d| duration_from_proto("delay", d))
        .transpose()?;
    // A parked event pins its partition's ack floor; bound how long it may park.
    if let Some(delay) = delay.filter(|d| *d > MAX_NACK_DELAY) {
        return Err(invalid(
            "delay",
            format!("{delay:?} is longer than the maximum of {MAX_NACK_DELAY:?}"),
        ));
    }
    let reason = req.reason.clone();
    Ok(if req.dead_letter {
        SettleOp::DeadLetter { reason }
    } else {
        SettleOp::Nack { delay, reason }
    })
}

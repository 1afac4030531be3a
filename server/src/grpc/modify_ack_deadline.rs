//! `EventService/ModifyAckDeadline`: extend or shorten leases.

use std::time::Duration;

use eventbus_broker::limits::MAX_ACK_DEADLINE;
use eventbus_broker::SettleOp;
use eventbus_proto::v1::{ModifyAckDeadlineRequest, ModifyAckDeadlineResponse};
use tonic::Status;

use super::context::Call;
use super::convert::duration_from_proto;
use super::status::{invalid, stale_to_status, to_status};

pub async fn handle(
    call: &Call<'_>,
    req: ModifyAckDeadlineRequest,
) -> Result<ModifyAckDeadlineResponse, Status> {
    let deadline = parse(&req)?;
    let outcome = call
        .broker
        .settle(
            &req.topic,
            &req.subscription,
            SettleOp::ModifyDeadline(deadline),
            &req.ack_ids,
        )
        .await
        .map_err(to_status)?;
    stale_to_status("extended", req.ack_ids.len(), outcome)?;
    Ok(ModifyAckDeadlineResponse {})
}

/// The broker-free part of ModifyAckDeadline: the new deadline, checked.
pub fn parse(req: &ModifyAckDeadlineRequest) -> Result<Duration, Status> {
    let Some(deadline) = req.ack_deadline.as_ref() else {
        return Err(invalid("ack_deadline", "is required; use 0s to nack now"));
    };
    let deadline = duration_from_proto("ack_deadline", deadline)?;
    if deadline > MAX_ACK_DEADLINE {
        return Err(invalid(
            "ack_deadline",
            format!("{deadline:?} is longer than the maximum of {MAX_ACK_DEADLINE:?}"),
        ));
    }
    Ok(deadline)
}

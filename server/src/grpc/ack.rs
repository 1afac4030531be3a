//! `EventService/Ack`: settle deliveries.

use eventbus_log::delivery::{SettleOp, SettleOutcome};
use eventbus_log::Broker;
use eventbus_proto::v1::{AckRequest, AckResponse};
use tonic::Status;

use super::status::to_status;

pub async fn handle(broker: &Broker, req: AckRequest) -> Result<AckResponse, Status> {
    let outcome = broker
        .settle(&req.topic, &req.subscription, SettleOp::Ack, &req.ack_ids)
        .await
        .map_err(to_status)?;
    stale_to_status("acked", req.ack_ids.len(), outcome)?;
    Ok(AckResponse {})
}

/// FAILED_PRECONDITION when some leases were no longer held; the others were
/// processed.
pub fn stale_to_status(verb: &str, total: usize, outcome: SettleOutcome) -> Result<(), Status> {
    if outcome.stale.is_empty() {
        return Ok(());
    }
    let sample: Vec<String> = outcome.stale.iter().take(5).map(|id| id.encode()).collect();
    Err(Status::failed_precondition(format!(
        "{} of {total} ack ids name leases that expired or were redelivered, so they were not {verb} \
         (the event will be or was delivered again); the other ids were {verb}. First stale ids: {}",
        outcome.stale.len(),
        sample.join(", ")
    )))
}

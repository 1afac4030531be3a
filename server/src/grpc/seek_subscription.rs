//! `AdminService/SeekSubscription`: move one subscription to earliest, latest,
//! a time, or per-partition offsets ("handler fixed, reprocess since 09:00").

use eventbus_broker::SeekTarget;
use eventbus_proto::v1::{
    self, seek_subscription_request::Target, SeekSubscriptionRequest, SeekSubscriptionResponse,
};
use tonic::Status;

use super::context::Call;
use super::convert::{self, timestamp_to_millis};
use super::status::{invalid, to_status};

pub async fn handle(
    call: &Call<'_>,
    req: SeekSubscriptionRequest,
) -> Result<SeekSubscriptionResponse, Status> {
    let target = parse(req.target)?;
    let info = call
        .broker
        .seek(&req.topic, &req.subscription, target)
        .await
        .map_err(to_status)?;
    Ok(SeekSubscriptionResponse {
        subscription: Some(convert::subscription(&info)),
    })
}

/// The broker-free part of SeekSubscription: where to move.
pub fn parse(target: Option<Target>) -> Result<SeekTarget, Status> {
    Ok(match target {
        None => {
            return Err(invalid(
                "target",
                "set one of start_position, time or offsets",
            ))
        }
        Some(Target::StartPosition(p)) => match v1::StartPosition::try_from(p) {
            Ok(v1::StartPosition::Earliest) => SeekTarget::Earliest,
            Ok(v1::StartPosition::Latest) => SeekTarget::Latest,
            _ => {
                return Err(invalid(
                    "start_position",
                    "use START_POSITION_EARLIEST or START_POSITION_LATEST",
                ))
            }
        },
        Some(Target::Time(t)) => SeekTarget::Time(timestamp_to_millis("time", &t)?),
        Some(Target::Offsets(o)) => {
            SeekTarget::Offsets(o.offsets.iter().map(|p| (p.partition, p.offset)).collect())
        }
    })
}

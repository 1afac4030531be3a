//! `AdminService/UpdateSubscription`: change the settings named in update_mask.

use eventbus_broker::SubscriptionUpdate;
use eventbus_proto::v1::{UpdateSubscriptionRequest, UpdateSubscriptionResponse};
use tonic::Status;

use super::context::Call;
use super::convert::{self, duration_from_proto};
use super::status::{invalid, to_status};

pub async fn handle(
    call: &Call<'_>,
    req: UpdateSubscriptionRequest,
) -> Result<UpdateSubscriptionResponse, Status> {
    let update = parse(&req)?;
    let info = call
        .broker
        .update_subscription(&req.topic, &req.subscription, update)
        .await
        .map_err(to_status)?;
    Ok(UpdateSubscriptionResponse {
        subscription: Some(convert::subscription(&info)),
    })
}

/// The broker-free part of UpdateSubscription: the changes its mask names.
pub fn parse(req: &UpdateSubscriptionRequest) -> Result<SubscriptionUpdate, Status> {
    let paths = req
        .update_mask
        .as_ref()
        .map(|m| m.paths.as_slice())
        .unwrap_or_default();
    if paths.is_empty() {
        return Err(invalid(
            "update_mask",
            "name the fields to change, e.g. [\"filter\"] or [\"ack_deadline\", \"retry_policy\"]",
        ));
    }
    let mut update = SubscriptionUpdate::default();
    for path in paths {
        match path.as_str() {
            "ack_deadline" => {
                update.ack_deadline = Some(
                    req.ack_deadline
                        .as_ref()
                        .map(|d| duration_from_proto("ack_deadline", d))
                        .transpose()?,
                )
            }
            "retry_policy" => update.retry_policy = Some(convert::retry_policy(req.retry_policy)?),
            "max_delivery_attempts" => update.max_delivery_attempts = Some(req.max_delivery_attempts),
            "filter" => update.filter = Some(convert::filter_from_proto(req.filter.clone())?),
            "ordering" => update.ordering = Some(convert::ordering(req.ordering)?),
            other => {
                return Err(invalid(
                    "update_mask",
                    format!(
                        "unknown path {other:?}; use ack_deadline, retry_policy, max_delivery_attempts, filter or ordering"
                    ),
                ))
            }
        }
    }
    Ok(update)
}

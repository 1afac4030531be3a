//! `AdminService/CreateSubscription`.

use eventbus_log::meta::Ordering;
use eventbus_log::{Broker, NewSubscription, RetryPolicy, StartPosition};
use eventbus_proto::v1::{self, CreateSubscriptionRequest, CreateSubscriptionResponse};
use tonic::Status;

use super::convert::{self, duration_from_proto};
use super::status::{invalid, to_status, unimplemented};

pub async fn handle(
    broker: &Broker,
    req: CreateSubscriptionRequest,
) -> Result<CreateSubscriptionResponse, Status> {
    let start_position = match v1::StartPosition::try_from(req.start_position) {
        Ok(v1::StartPosition::Unspecified | v1::StartPosition::Earliest) => StartPosition::Earliest,
        Ok(v1::StartPosition::Latest) => StartPosition::Latest,
        Err(_) => {
            return Err(invalid(
                "start_position",
                format!(
                "{} is not a StartPosition; use START_POSITION_EARLIEST or START_POSITION_LATEST",
                req.start_position
            ),
            ))
        }
    };
    let ordering = match v1::Ordering::try_from(req.ordering) {
        Ok(v1::Ordering::Unspecified | v1::Ordering::None) => Ordering::None,
        Ok(v1::Ordering::Key) => return Err(unimplemented("ORDERING_KEY")),
        Err(_) => {
            return Err(invalid(
                "ordering",
                format!(
                    "{} is not an Ordering; use ORDERING_NONE or ORDERING_KEY",
                    req.ordering
                ),
            ))
        }
    };
    if req
        .filter
        .as_ref()
        .is_some_and(|f| !f.types.is_empty() || !f.attributes.is_empty())
    {
        return Err(unimplemented("Subscription filters"));
    }
    let retry_policy = req
        .retry_policy
        .map(|p| -> Result<RetryPolicy, Status> {
            Ok(RetryPolicy {
                min_backoff: p
                    .min_backoff
                    .as_ref()
                    .map(|d| duration_from_proto("retry_policy.min_backoff", d))
                    .transpose()?,
                max_backoff: p
                    .max_backoff
                    .as_ref()
                    .map(|d| duration_from_proto("retry_policy.max_backoff", d))
                    .transpose()?,
            })
        })
        .transpose()?;
    let new = NewSubscription {
        start_position,
        ack_deadline: req
            .ack_deadline
            .as_ref()
            .map(|d| duration_from_proto("ack_deadline", d))
            .transpose()?,
        retry_policy,
        max_delivery_attempts: req.max_delivery_attempts,
        filter: Default::default(),
        ordering,
    };
    let info = broker
        .create_subscription(&req.topic, &req.subscription, new)
        .await
        .map_err(to_status)?;
    Ok(CreateSubscriptionResponse {
        subscription: Some(convert::subscription(&info)),
    })
}

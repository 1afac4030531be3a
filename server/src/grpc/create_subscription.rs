//! `AdminService/CreateSubscription`.

use eventbus_broker::{NewSubscription, StartPosition};
use eventbus_proto::v1::{self, CreateSubscriptionRequest, CreateSubscriptionResponse};
use tonic::Status;

use super::context::Call;
use super::convert::{self, duration_from_proto};
use super::status::{invalid, to_status};

pub async fn handle(
    call: &Call<'_>,
    req: CreateSubscriptionRequest,
) -> Result<CreateSubscriptionResponse, Status> {
    let new = parse(&req)?;
    let info = call
        .broker
        .create_subscription(&req.topic, &req.subscription, new)
        .await
        .map_err(to_status)?;
    Ok(CreateSubscriptionResponse {
        subscription: Some(convert::subscription(&info)),
    })
}

/// The broker-free part of CreateSubscription: the requested settings.
pub fn parse(req: &CreateSubscriptionRequest) -> Result<NewSubscription, Status> {
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
    let ordering = convert::ordering(req.ordering)?;
    let filter = convert::filter_from_proto(req.filter.clone())?;
    let retry_policy = convert::retry_policy(req.retry_policy)?;
    Ok(NewSubscription {
        start_position,
        ack_deadline: req
            .ack_deadline
            .as_ref()
            .map(|d| duration_from_proto("ack_deadline", d))
            .transpose()?,
        retry_policy,
        max_delivery_attempts: req.max_delivery_attempts,
        filter,
        ordering,
        // The caller's scope names it (auth::scope), not the request.
        creator: None,
    })
}

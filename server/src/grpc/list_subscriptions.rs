//! `AdminService/ListSubscriptions`.

use eventbus_log::Broker;
use eventbus_proto::v1::{ListSubscriptionsRequest, ListSubscriptionsResponse};
use tonic::Status;

use super::convert;
use super::paging::page;
use super::status::to_status;

pub async fn handle(
    broker: &Broker,
    req: ListSubscriptionsRequest,
) -> Result<ListSubscriptionsResponse, Status> {
    let all = broker
        .list_subscriptions(&req.topic)
        .await
        .map_err(to_status)?;
    let (subs, next_page_token) = page(all, req.page_size, &req.page_token, |s| {
        s.meta.name.as_str()
    })?;
    Ok(ListSubscriptionsResponse {
        subscriptions: subs.iter().map(convert::subscription).collect(),
        next_page_token,
    })
}

//! `AdminService/ListSubscriptions`: one page, with statistics for that page
//! only.

use eventbus_proto::v1::{ListSubscriptionsRequest, ListSubscriptionsResponse};
use tonic::Status;

use super::context::Call;
use super::convert;
use super::paging::PageRequest;
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: ListSubscriptionsRequest,
) -> Result<ListSubscriptionsResponse, Status> {
    let page = PageRequest::parse(call.broker.limits(), req.page_size, &req.page_token)?;
    let (subs, more) = call
        .broker
        .list_subscriptions(&req.topic, page.after.as_deref(), page.size)
        .await
        .map_err(to_status)?;
    Ok(ListSubscriptionsResponse {
        next_page_token: PageRequest::next_token(subs.last().map(|s| s.name.as_str()), more),
        subscriptions: subs.iter().map(convert::subscription).collect(),
    })
}

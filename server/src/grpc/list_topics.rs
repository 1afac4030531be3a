//! `AdminService/ListTopics`.

use eventbus_proto::v1::{ListTopicsRequest, ListTopicsResponse};
use tonic::Status;

use super::context::Call;
use super::convert;
use super::paging::PageRequest;
use super::status::to_status;

pub async fn handle(call: &Call<'_>, req: ListTopicsRequest) -> Result<ListTopicsResponse, Status> {
    let page = PageRequest::parse(call.broker.limits(), req.page_size, &req.page_token)?;
    let all = call.broker.list_topics().await.map_err(to_status)?;
    let (topics, next_page_token) = page.page(all, |t| t.name.as_str());
    Ok(ListTopicsResponse {
        topics: topics.iter().map(convert::topic).collect(),
        next_page_token,
    })
}

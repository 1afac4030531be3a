//! `AdminService/ListTopics`.

use eventbus_log::Broker;
use eventbus_proto::v1::{ListTopicsRequest, ListTopicsResponse};
use tonic::Status;

use super::convert;
use super::paging::PageRequest;

pub fn handle(broker: &Broker, req: ListTopicsRequest) -> Result<ListTopicsResponse, Status> {
    let page = PageRequest::parse(&broker.options().limits, req.page_size, &req.page_token)?;
    let (topics, next_page_token) = page.page(broker.list_topics(), |t| t.state.name());
    Ok(ListTopicsResponse {
        topics: topics.iter().map(|t| convert::topic(&t.state)).collect(),
        next_page_token,
    })
}

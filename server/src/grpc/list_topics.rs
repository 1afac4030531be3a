//! `AdminService/ListTopics`.

use eventbus_log::Broker;
use eventbus_proto::v1::{ListTopicsRequest, ListTopicsResponse};
use tonic::Status;

use super::convert;
use super::paging::page;

pub fn handle(broker: &Broker, req: ListTopicsRequest) -> Result<ListTopicsResponse, Status> {
    let (topics, next_page_token) =
        page(broker.list_topics(), req.page_size, &req.page_token, |t| {
            t.state.name()
        })?;
    Ok(ListTopicsResponse {
        topics: topics.iter().map(|t| convert::topic(&t.state)).collect(),
        next_page_token,
    })
}

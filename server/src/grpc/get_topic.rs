//! `AdminService/GetTopic`.

use eventbus_log::Broker;
use eventbus_proto::v1::{GetTopicRequest, GetTopicResponse};
use tonic::Status;

use super::convert;
use super::status::to_status;

pub fn handle(broker: &Broker, req: GetTopicRequest) -> Result<GetTopicResponse, Status> {
    let info = broker.get_topic(&req.topic).map_err(to_status)?;
    Ok(GetTopicResponse {
        topic: Some(convert::topic(&info.state)),
    })
}

//! `AdminService/GetTopic`.

use eventbus_broker::Broker;
use eventbus_proto::v1::{GetTopicRequest, GetTopicResponse};
use tonic::Status;

use super::convert;
use super::status::to_status;

pub async fn handle(broker: &dyn Broker, req: GetTopicRequest) -> Result<GetTopicResponse, Status> {
    let info = broker.get_topic(&req.topic).await.map_err(to_status)?;
    Ok(GetTopicResponse {
        topic: Some(convert::topic(&info)),
    })
}

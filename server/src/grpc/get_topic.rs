//! `AdminService/GetTopic`.

use eventbus_proto::v1::{GetTopicRequest, GetTopicResponse};
use tonic::Status;

use super::context::Call;
use super::convert;
use super::status::to_status;

pub async fn handle(call: &Call<'_>, req: GetTopicRequest) -> Result<GetTopicResponse, Status> {
    let info = call.broker.get_topic(&req.topic).await.map_err(to_status)?;
    Ok(GetTopicResponse {
        topic: Some(convert::topic(&info)),
    })
}

//! `AdminService/RedriveDeadLetters`: send dead letters back to their
//! subscription, exactly once, optionally rate-limited.

use eventbus_proto::v1::{RedriveDeadLettersRequest, RedriveDeadLettersResponse};
use tonic::Status;

use super::context::Call;
use super::purge_dead_letters::selector;
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: RedriveDeadLettersRequest,
) -> Result<RedriveDeadLettersResponse, Status> {
    let selector = selector(req.ids, req.filter, req.all)?;
    let count = call
        .broker
        .redrive_dead_letters(
            &req.topic,
            &req.subscription,
            selector,
            req.dry_run,
            req.max_per_second,
        )
        .await
        .map_err(to_status)?;
    Ok(RedriveDeadLettersResponse { count })
}

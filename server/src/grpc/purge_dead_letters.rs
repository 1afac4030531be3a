//! `AdminService/PurgeDeadLetters`: delete DLQ entries by ids, filter or all.

use eventbus_broker::DeadLetterSelector;
use eventbus_proto::v1::{DeadLetterFilter, PurgeDeadLettersRequest, PurgeDeadLettersResponse};
use tonic::Status;

use super::context::Call;
use super::convert;
use super::status::{invalid, to_status};

pub async fn handle(
    call: &Call<'_>,
    req: PurgeDeadLettersRequest,
) -> Result<PurgeDeadLettersResponse, Status> {
    let selector = selector(req.ids, req.filter, req.all)?;
    let count = call
        .broker
        .purge_dead_letters(&req.topic, &req.subscription, selector, req.dry_run)
        .await
        .map_err(to_status)?;
    Ok(PurgeDeadLettersResponse { count })
}

/// Exactly one of `ids`, `filter` and `all` must be given.
pub fn selector(
    ids: Vec<String>,
    filter: Option<DeadLetterFilter>,
    all: bool,
) -> Result<DeadLetterSelector, Status> {
    match (!ids.is_empty(), filter.is_some(), all) {
        (true, false, false) => Ok(DeadLetterSelector::Ids(
            ids.iter()
                .map(|id| convert::dead_letter_id("ids", id))
                .collect::<Result<_, _>>()?,
        )),
        (false, true, false) => Ok(DeadLetterSelector::Filter(convert::dead_letter_query(
            filter,
        )?)),
        (false, false, true) => Ok(DeadLetterSelector::All),
        _ => Err(invalid(
            "ids",
            "select dead letters with exactly one of ids, filter or all=true",
        )),
    }
}

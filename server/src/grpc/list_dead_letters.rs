//! `AdminService/ListDeadLetters`: pages through a subscription's DLQ, oldest
//! first, optionally filtered by event type, reason and time.

use eventbus_broker::DeadLetterQuery;
use eventbus_broker::Limits;
use eventbus_proto::v1::{ListDeadLettersRequest, ListDeadLettersResponse};
use tonic::Status;

use super::context::Call;
use super::convert;
use super::paging;
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: ListDeadLettersRequest,
) -> Result<ListDeadLettersResponse, Status> {
    let DeadLetterPage {
        after,
        limit,
        query,
    } = parse(&req, call.broker.limits())?;
    let page = call
        .broker
        .list_dead_letters(&req.topic, &req.subscription, after, limit, query)
        .await
        .map_err(to_status)?;
    Ok(ListDeadLettersResponse {
        dead_letters: page
            .dead_letters
            .iter()
            .map(|d| convert::dead_letter(&req.topic, d))
            .collect(),
        next_page_token: page.next_after.map_or_else(String::new, paging::seq_token),
    })
}

/// Which page of the queue a ListDeadLetters request asks for.
#[derive(Debug)]
pub struct DeadLetterPage {
    /// Start after this sequence number (`None`: from the oldest entry).
    pub after: Option<u64>,
    pub limit: usize,
    pub query: DeadLetterQuery,
}

/// The broker-free part of ListDeadLetters: page position, size and filter.
pub fn parse(req: &ListDeadLettersRequest, limits: &Limits) -> Result<DeadLetterPage, Status> {
    Ok(DeadLetterPage {
        after: paging::decode_seq_token(&req.page_token)?,
        limit: limits.page_size(req.page_size),
        query: convert::dead_letter_query(req.filter.clone())?,
    })
}

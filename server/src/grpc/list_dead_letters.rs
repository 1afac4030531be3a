//! `AdminService/ListDeadLetters`: pages through a subscription's DLQ, oldest
//! first, optionally filtered by event type, reason and time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use eventbus_log::Broker;
use eventbus_proto::v1::{ListDeadLettersRequest, ListDeadLettersResponse};
use tonic::Status;

use super::convert;
use super::status::{invalid, to_status};

pub async fn handle(
    broker: &Broker,
    req: ListDeadLettersRequest,
) -> Result<ListDeadLettersResponse, Status> {
    let limit = broker.options().limits.page_size(req.page_size);
    let after = if req.page_token.is_empty() {
        None
    } else {
        let bad = || {
            invalid(
                "page_token",
                "is not a token from a previous response; pass next_page_token unchanged",
            )
        };
        let raw = URL_SAFE_NO_PAD.decode(&req.page_token).map_err(|_| bad())?;
        Some(
            String::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?,
        )
    };
    let query = convert::dead_letter_query(req.filter)?;
    let (page, next) = broker
        .list_dead_letters(&req.topic, &req.subscription, after, limit, query)
        .await
        .map_err(to_status)?;
    Ok(ListDeadLettersResponse {
        dead_letters: page
            .iter()
            .map(|d| convert::dead_letter(&req.topic, d))
            .collect(),
        next_page_token: next
            .map_or_else(String::new, |seq| URL_SAFE_NO_PAD.encode(seq.to_string())),
    })
}

//! `EventService/SubscribeStream`: Subscribe, and settle on the same stream.
//!
//! The first request joins the subscription exactly as Subscribe does (same
//! permission check, same [`subscribe::DeliveryStream`]); every later request
//! is an Ack, Nack or ModifyAckDeadline of its own. Each settle passes the
//! unary call's permission check (audited when denied), validation and
//! broker call, and is answered with a [`SettleAnswer`] instead of a status,
//! so a lease error or a refused request leaves the stream open. What the
//! stream saves is the per-call cost of a unary RPC, paid today once per
//! batch of about 40 acks.
//!
//! As in [`super::publish_stream`], the work happens when tonic polls the
//! response stream: [`StreamRequests`] reads settles within its bounds and
//! runs them concurrently, and their answers are sent in turn with the
//! deliveries, so neither can starve the other. A message holds deliveries or answers,
//! never both, so each kind keeps its own bound on message size.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use eventbus_broker::{Broker, SettleOp};
use eventbus_proto::v1::subscribe_stream_request::Request;
use eventbus_proto::v1::{
    AckRequest, ModifyAckDeadlineRequest, NackRequest, SettleAnswer, SettleFailure,
    SubscribeRequest, SubscribeResponse, SubscribeStreamRequest, SubscribeStreamResponse,
};
use futures_core::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::context::RequestContext;
use super::guard::{Guarded, Need};
use super::message_size;
use super::status::{invalid, to_status};
use super::stream_requests::StreamRequests;
use super::subscribe::DeliveryStream;
use super::{modify_ack_deadline, nack};
use crate::auth::Permission;
use crate::ops::Ops;

/// Reads the stream's first request, which must join a subscription.
pub async fn first_request(
    requests: &mut Streaming<SubscribeStreamRequest>,
    shutdown: &CancellationToken,
) -> Result<SubscribeRequest, Status> {
    let first = tokio::select! {
        first = requests.message() => first?,
        _ = shutdown.cancelled() => return Err(to_status(eventbus_broker::Error::ShuttingDown)),
    };
    match first.and_then(|r| r.request) {
        Some(Request::Subscribe(subscribe)) => Ok(subscribe),
        _ => Err(invalid(
            "subscribe",
            "the first request of a SubscribeStream must be a `subscribe`; settle requests follow it",
        )),
    }
}

/// What every settle of one stream shares.
pub struct Shared {
    pub ctx: RequestContext,
    /// The caller's scoped broker (tenant names, sealed ack ids).
    pub broker: Arc<dyn Broker>,
    pub ops: Arc<Ops>,
    /// The subscription the stream joined, as the caller named it.
    pub topic: String,
    pub subscription: String,
}

pub struct SubscribeStream {
    deliveries: DeliveryStream,
    settles: StreamRequests<SubscribeStreamRequest, SettleAnswer>,
    /// An answer that did not fit the previous message.
    answer_carry: Option<SettleAnswer>,
    shared: Arc<Shared>,
    /// Whose turn it is when both deliveries and answers are ready.
    answers_first: bool,
    done: bool,
}

impl SubscribeStream {
    pub fn new(
        deliveries: DeliveryStream,
        requests: Streaming<SubscribeStreamRequest>,
        shared: Shared,
    ) -> Self {
        SubscribeStream {
            deliveries,
            settles: StreamRequests::new(requests),
            answer_carry: None,
            shared: Arc::new(shared),
            answers_first: false,
            done: false,
        }
    }

    /// Starts every settle that has arrived, within the stream's bounds. A
    /// second `subscribe` ends the input.
    fn read_settles(&mut self, cx: &mut Context<'_>) {
        let shared = &self.shared;
        self.settles.read(cx, |req| {
            if let Some(Request::Subscribe(_)) = req.request {
                return Err(invalid(
                    "subscribe",
                    "this stream already joined a subscription; open another stream to join another",
                ));
            }
            let shared = shared.clone();
            Ok(Box::pin(async move { answer(&shared, req).await }))
        });
    }

    /// The answers ready now, as many as fit one message of at most
    /// [`message_size::MAX_MESSAGE_BYTES`] (each lists at most
    /// max-ack-ids-per-call stale ids, but 64 of them could be more); the
    /// one that would cross it waits in `answer_carry` for the next.
    fn answers(&mut self, cx: &mut Context<'_>) -> Option<SubscribeStreamResponse> {
        let settles = &mut self.settles;
        let settled =
            message_size::next_message(&mut self.answer_carry, || match settles.poll_answer(cx) {
                Poll::Ready(answer) => answer,
                Poll::Pending => None,
            });
        (!settled.is_empty()).then(|| SubscribeStreamResponse {
            deliveries: Vec::new(),
            settled,
        })
    }
}

impl Stream for SubscribeStream {
    type Item = Result<SubscribeStreamResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        self.read_settles(cx);
        let answers_first = self.answers_first;
        if answers_first {
            if let Some(answers) = self.answers(cx) {
                self.answers_first = false;
                return Poll::Ready(Some(Ok(answers)));
            }
        }
        // Deliveries, and the ends Subscribe has: shutdown, credentials no
        // longer accepted, the subscription gone, damaged data.
        match Pin::new(&mut self.deliveries).poll_next(cx) {
            Poll::Ready(Some(Ok(SubscribeResponse { deliveries }))) => {
                self.answers_first = true;
                return Poll::Ready(Some(Ok(SubscribeStreamResponse {
                    deliveries,
                    settled: Vec::new(),
                })));
            }
            Poll::Ready(Some(Err(status))) => {
                self.done = true;
                return Poll::Ready(Some(Err(status)));
            }
            Poll::Ready(None) => {
                self.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if !answers_first {
            if let Some(answers) = self.answers(cx) {
                return Poll::Ready(Some(Ok(answers)));
            }
        }
        if self.settles.finished() && self.answer_carry.is_none() {
            // The client closed its side (OK) or a request ended the stream,
            // and every settle before that was answered.
            self.done = true;
            return Poll::Ready(self.settles.take_end().map(Err));
        }
        Poll::Pending
    }
}

/// Checks and applies one settle, and says how it went.
async fn answer(shared: &Shared, req: SubscribeStreamRequest) -> SettleAnswer {
    let request_id = req.request_id;
    match settle(shared, req.request).await {
        Ok(stale_ack_ids) => SettleAnswer {
            request_id,
            stale_ack_ids,
            failure: None,
        },
        Err(status) => SettleAnswer {
            request_id,
            stale_ack_ids: Vec::new(),
            failure: Some(SettleFailure {
                code: status.code() as i32,
                message: status.message().to_string(),
            }),
        },
    }
}

/// One settle request, as its unary call would run it; the stale ack ids.
async fn settle(shared: &Shared, request: Option<Request>) -> Result<Vec<String>, Status> {
    // Validation runs first but reports after the permission check, in the
    // unary calls' order.
    let (action, field, topic, subscription, ack_ids, op) = match request {
        Some(Request::Ack(r)) => {
            let op = Ok(SettleOp::Ack);
            (
                AckRequest::ACTION,
                "ack",
                r.topic,
                r.subscription,
                r.ack_ids,
                op,
            )
        }
        Some(Request::Nack(r)) => {
            let op = nack::parse(&r);
            (
                NackRequest::ACTION,
                "nack",
                r.topic,
                r.subscription,
                r.ack_ids,
                op,
            )
        }
        Some(Request::ModifyAckDeadline(r)) => {
            let op = modify_ack_deadline::parse(&r).map(SettleOp::ModifyDeadline);
            let action = ModifyAckDeadlineRequest::ACTION;
            (
                action,
                "modify_ack_deadline",
                r.topic,
                r.subscription,
                r.ack_ids,
                op,
            )
        }
        Some(Request::Subscribe(_)) | None => {
            return Err(invalid(
                "request",
                "set one of `ack`, `nack` or `modify_ack_deadline`",
            ))
        }
    };
    for (given, own, what) in [
        (&topic, &shared.topic, "topic"),
        (&subscription, &shared.subscription, "subscription"),
    ] {
        if !given.is_empty() && given != own {
            return Err(invalid(
                field,
                format!(
                    "names {what} `{given}`, but this stream joined `{own}`: leave it empty, \
                     or settle with the unary call"
                ),
            ));
        }
    }
    let need = Need::Topic(Permission::Subscribe, &shared.topic);
    if let Err(denied) = crate::auth::authorize(&shared.ctx.caller, action, need) {
        shared
            .ops
            .audit
            .denied(&shared.ctx, action, need.target(), denied.code())
            .await;
        return Err(denied);
    }
    let outcome = shared
        .broker
        .settle(&shared.topic, &shared.subscription, op?, &ack_ids)
        .await
        .map_err(to_status)?;
    Ok(outcome.stale)
}

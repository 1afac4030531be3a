//! `EventService/PublishStream`: many Publish requests over one stream.
//!
//! Each request is a Publish of its own: it passes the same permission check
//! (per request, since each names its topic), the caller's publish quota
//! (charged by the [`Scoped`] broker) and the same limits, through
//! [`publish::append`]. What the stream saves is the per-call cost of a unary
//! RPC: HTTP/2 headers and trailers, a stream and a task per call.
//!
//! Like [`super::subscribe`], the response stream does its work when tonic
//! polls it, in the connection's stream task: [`StreamRequests`] reads
//! requests within its bounds, drives their appends concurrently and yields
//! each answer as it completes.
//!
//! A request that fails is answered with a [`PublishFailure`] and the stream
//! goes on; the stream itself ends only when its input does (after the last
//! answer), when a message cannot be decoded or is over a wire limit (after
//! answering the requests before it), at shutdown (UNAVAILABLE) or when the
//! caller's credentials stop being accepted (UNAUTHENTICATED).
//!
//! [`Scoped`]: crate::auth::scope::Scoped

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use eventbus_broker::Broker;
use eventbus_proto::v1::{PublishFailure, PublishStreamRequest, PublishStreamResponse};
use futures_core::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::{Status, Streaming};
use tonic_types::StatusExt as _;

use super::context::RequestContext;
use super::guard::Guarded as _;
use super::publish;
use super::stream_requests::StreamRequests;
use crate::ops::Ops;

/// What every request of one stream shares.
struct Shared {
    ctx: RequestContext,
    /// The caller's scoped broker: tenant names, publish quota.
    broker: Arc<dyn Broker>,
    ops: Arc<Ops>,
}

pub struct PublishStream {
    requests: StreamRequests<PublishStreamRequest, PublishStreamResponse>,
    shared: Arc<Shared>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    refused: Pin<Box<dyn Future<Output = Status> + Send>>,
    done: bool,
}

impl PublishStream {
    pub fn new(
        ctx: RequestContext,
        broker: Arc<dyn Broker>,
        ops: Arc<Ops>,
        requests: Streaming<PublishStreamRequest>,
        shutdown: WaitForCancellationFutureOwned,
        refused: Pin<Box<dyn Future<Output = Status> + Send>>,
    ) -> Self {
        PublishStream {
            requests: StreamRequests::new(requests),
            shared: Arc::new(Shared { ctx, broker, ops }),
            shutdown: Box::pin(shutdown),
            refused,
            done: false,
        }
    }
}

impl Stream for PublishStream {
    type Item = Result<PublishStreamResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.shutdown.as_mut().poll(cx).is_ready() {
            self.done = true;
            let status = super::status::to_status(eventbus_broker::Error::ShuttingDown);
            return Poll::Ready(Some(Err(status)));
        }
        if let Poll::Ready(status) = self.refused.as_mut().poll(cx) {
            self.done = true;
            return Poll::Ready(Some(Err(status)));
        }
        let this = &mut *self;
        let shared = &this.shared;
        this.requests.read(cx, |req| {
            let shared = shared.clone();
            Ok(Box::pin(async move { answer(&shared, req).await }))
        });
        match this.requests.poll_answer(cx) {
            Poll::Ready(Some(response)) => Poll::Ready(Some(Ok(response))),
            // Nothing in flight: the stream ends once no request can come.
            Poll::Ready(None) if this.requests.finished() => {
                this.done = true;
                Poll::Ready(this.requests.take_end().map(Err))
            }
            // Waiting for requests: `read` registered the waker.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// Checks and appends one request, and says how it went.
async fn answer(shared: &Shared, req: PublishStreamRequest) -> PublishStreamResponse {
    let request_id = req.request_id;
    let outcome = async {
        let need = req.need();
        let action = PublishStreamRequest::ACTION;
        if let Err(denied) = crate::auth::authorize(&shared.ctx.caller, action, need) {
            shared
                .ops
                .audit
                .denied(&shared.ctx, action, need.target(), denied.code())
                .await;
            return Err(denied);
        }
        let ops = &*shared.ops;
        publish::append(&shared.ctx, &*shared.broker, ops, &req.topic, req.events).await
    }
    .await;
    match outcome {
        Ok(results) => PublishStreamResponse {
            request_id,
            results,
            failure: None,
        },
        Err(status) => PublishStreamResponse {
            request_id,
            results: Vec::new(),
            failure: Some(failure(&status)),
        },
    }
}

/// The failure a unary Publish would have returned as its status.
fn failure(status: &Status) -> PublishFailure {
    let retry_delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .and_then(|delay| prost_types::Duration::try_from(delay).ok());
    PublishFailure {
        code: status.code() as i32,
        message: status.message().to_string(),
        retry_delay,
    }
}

//! `EventService/PublishStream`: many Publish requests over one stream.
//!
//! Each request is a Publish of its own: it passes the same permission check
//! (per request, since each names its topic), the caller's publish quota
//! (charged by the [`Scoped`] broker) and the same limits, through
//! [`publish::append`]. What the stream saves is the per-call cost of a unary
//! RPC: HTTP/2 headers and trailers, a stream and a task per call.
//!
//! Like [`super::subscribe`], the response stream does its work when tonic
//! polls it, in the connection's stream task: it reads requests while fewer
//! than [`MAX_IN_FLIGHT`] are unanswered and they hold less than
//! [`MAX_IN_FLIGHT_BYTES`], drives their appends concurrently and yields each
//! answer as it completes. A client that sends faster than the server answers
//! is held back by HTTP/2 flow control once that much waits, so a stream
//! holds about as much memory as one large Publish, however fast it sends.
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
use eventbus_proto::prost::Message as _;
use eventbus_proto::v1::{PublishFailure, PublishStreamRequest, PublishStreamResponse};
use futures_core::Stream;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::{Status, Streaming};
use tonic_types::StatusExt as _;

use super::context::RequestContext;
use super::guard::Guarded as _;
use super::publish;
use crate::ops::Ops;

/// Requests of one stream the server works on at once; it reads no more
/// until one is answered. Matches the concurrent unary calls one HTTP/2
/// connection is allowed by default, so a stream is never slower than them.
pub const MAX_IN_FLIGHT: usize = 64;
/// ... and no more while the unanswered ones hold this many encoded bytes
/// (a request larger than this is still read, once the others are answered).
pub const MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// A request's answer, and its encoded size to give back to the budget.
type Answer = Pin<Box<dyn Future<Output = (PublishStreamResponse, usize)> + Send>>;

/// What every request of one stream shares.
struct Shared {
    ctx: RequestContext,
    /// The caller's scoped broker: tenant names, publish quota.
    broker: Arc<dyn Broker>,
    ops: Arc<Ops>,
}

pub struct PublishStream {
    requests: Streaming<PublishStreamRequest>,
    /// No more requests will be read: the client closed its side, or a
    /// message could not be decoded (then `end_with` holds why).
    input_done: bool,
    end_with: Option<Status>,
    in_flight: FuturesUnordered<Answer>,
    /// Encoded bytes of the requests in `in_flight`.
    in_flight_bytes: usize,
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
            requests,
            input_done: false,
            end_with: None,
            in_flight: FuturesUnordered::new(),
            in_flight_bytes: 0,
            shared: Arc::new(Shared { ctx, broker, ops }),
            shutdown: Box::pin(shutdown),
            refused,
            done: false,
        }
    }

    /// Starts every request that has arrived, up to [`MAX_IN_FLIGHT`] and
    /// [`MAX_IN_FLIGHT_BYTES`].
    fn read_requests(&mut self, cx: &mut Context<'_>) {
        while !self.input_done
            && self.in_flight.len() < MAX_IN_FLIGHT
            && self.in_flight_bytes < MAX_IN_FLIGHT_BYTES
        {
            match Pin::new(&mut self.requests).poll_next(cx) {
                Poll::Ready(Some(Ok(req))) => {
                    let bytes = req.encoded_len();
                    self.in_flight_bytes += bytes;
                    let shared = self.shared.clone();
                    let answer = async move { (answer(shared, req).await, bytes) };
                    self.in_flight.push(Box::pin(answer));
                }
                Poll::Ready(Some(Err(status))) => {
                    self.input_done = true;
                    self.end_with = Some(status);
                }
                Poll::Ready(None) => self.input_done = true,
                Poll::Pending => return,
            }
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
        self.read_requests(cx);
        match Pin::new(&mut self.in_flight).poll_next(cx) {
            Poll::Ready(Some((response, bytes))) => {
                self.in_flight_bytes -= bytes;
                Poll::Ready(Some(Ok(response)))
            }
            // Nothing in flight: the stream ends once no request can come.
            Poll::Ready(None) if self.input_done => {
                self.done = true;
                Poll::Ready(self.end_with.take().map(Err))
            }
            // Waiting for requests: `read_requests` registered the waker.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// Checks and appends one request, and says how it went.
async fn answer(shared: Arc<Shared>, req: PublishStreamRequest) -> PublishStreamResponse {
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

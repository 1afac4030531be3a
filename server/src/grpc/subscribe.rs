//! `EventService/Subscribe`: join a subscription and stream deliveries.
//!
//! The response stream polls the member's bounded channel directly, so a client
//! that stops reading is backpressured by HTTP/2 flow control and, behind it, by
//! its `max_in_flight` credit. When shutdown starts the stream ends with
//! UNAVAILABLE, telling clients to reconnect; when the caller's credentials
//! stop being accepted, with UNAUTHENTICATED.
//!
//! A batch from the delivery engine is sent as one or more messages of at most
//! 4 MiB each ([`message_size`]), converted one delivery at a time as they are
//! packed, so clients at default settings can always decode them.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use eventbus_broker::{BoxStream, Delivery};
use eventbus_proto::v1::{self, SubscribeRequest, SubscribeResponse};
use futures_core::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;

use super::context::Call;
use super::convert;
use super::message_size;
use super::status::to_status;
use crate::ops::OPEN_STREAMS;

pub async fn handle(
    call: &Call<'_>,
    shutdown: &CancellationToken,
    req: SubscribeRequest,
) -> Result<DeliveryStream, Status> {
    let member = call
        .broker
        .subscribe(&req.topic, &req.subscription, req.max_in_flight)
        .await
        .map_err(to_status)?;
    tracing::debug!(
        topic = req.topic,
        subscription = req.subscription,
        member = member.member_id,
        "member joined"
    );
    Ok(DeliveryStream {
        topic: req.topic,
        deliveries: member.deliveries,
        unsent: Vec::new().into_iter(),
        carry: None,
        shutdown: Box::pin(shutdown.clone().cancelled_owned()),
        refused: call.until_refused(),
        done: false,
        _open: OpenStream::new(),
    })
}

/// Counts the stream in [`OPEN_STREAMS`] (`eventbus_subscribe_streams`) while it exists.
struct OpenStream;

impl OpenStream {
    fn new() -> OpenStream {
        OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct DeliveryStream {
    topic: String,
    deliveries: BoxStream<eventbus_broker::Result<Vec<Delivery>>>,
    /// The rest of the current batch, not yet converted.
    unsent: std::vec::IntoIter<Delivery>,
    /// A converted delivery that did not fit the previous message.
    carry: Option<v1::Delivery>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Resolves when the caller's credentials stop being accepted (revoked
    /// by a reload of `[auth]`, or an expired token): the stream ends with
    /// UNAUTHENTICATED, so a revoked principal receives nothing more.
    refused: Pin<Box<dyn std::future::Future<Output = Status> + Send>>,
    done: bool,
    _open: OpenStream,
}

impl DeliveryStream {
    /// The next message of the current batch; empty when the batch is sent.
    fn next_message(&mut self) -> Vec<v1::Delivery> {
        let (topic, unsent) = (&self.topic, &mut self.unsent);
        message_size::next_message(&mut self.carry, || {
            unsent.next().map(|d| convert::delivery(topic, d))
        })
    }
}

impl Stream for DeliveryStream {
    type Item = Result<SubscribeResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.shutdown.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(to_status(eventbus_broker::Error::ShuttingDown))));
        }
        if let Poll::Ready(status) = self.refused.as_mut().poll(cx) {
            self.done = true;
            return Poll::Ready(Some(Err(status)));
        }
        loop {
            let deliveries = self.next_message();
            if !deliveries.is_empty() {
                return Poll::Ready(Some(Ok(SubscribeResponse { deliveries })));
            }
            match self.deliveries.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(batch))) => self.unsent = batch.into_iter(),
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(to_status(e))));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

//! How a [`crate::Publisher`]'s lanes send their batches: as requests of one
//! shared `PublishStream`, or as unary `Publish` calls.
//!
//! A stream costs the server less per batch than a unary call (no HTTP/2
//! headers, stream or task per call; BENCHMARKS.md). The lanes keep their
//! rule of one batch in flight each, so events of one key still reach the
//! server in order: the server answers a stream's requests in any order,
//! like concurrent calls.
//!
//! The stream opens at the first batch. When it ends (server shutdown, a
//! broken connection), every batch waiting on it fails with the stream's
//! status, the lanes retry as they retry a failed call, and the next batch
//! opens a new stream. A server without PublishStream (UNIMPLEMENTED) is
//! published to by unary calls from then on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::client::Channel;
use crate::v1::{self, event_service_client::EventServiceClient};

/// Requests queued for the stream before a lane's send waits; the lanes
/// have one batch in flight each, so this is never reached in practice.
const QUEUED_REQUESTS: usize = 64;

type Outcome = Result<Vec<v1::PublishResult>, Status>;

/// Shared by the lanes of one Publisher.
pub(crate) struct PublishPath {
    client: EventServiceClient<Channel>,
    /// Use unary Publish: configured, or the server has no PublishStream.
    unary: AtomicBool,
    stream: tokio::sync::Mutex<Option<Conn>>,
    next_id: AtomicU64,
}

/// One open PublishStream.
#[derive(Clone)]
struct Conn {
    requests: mpsc::Sender<v1::PublishStreamRequest>,
    waiting: Arc<Waiting>,
}

/// Requests sent on a stream and not yet answered, by request id.
#[derive(Default)]
struct Waiting {
    replies: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    /// Set once the stream ended: nothing more will be answered.
    ended: AtomicBool,
}

impl Waiting {
    fn take(&self, id: u64) -> Option<oneshot::Sender<Outcome>> {
        self.replies.lock().ok()?.remove(&id)
    }

    /// The stream ended: every waiting request fails with `status`.
    fn end(&self, status: &Status) {
        self.ended.store(true, Ordering::Release);
        let waiting = match self.replies.lock() {
            Ok(mut replies) => std::mem::take(&mut *replies),
            Err(_) => return,
        };
        for (_, reply) in waiting {
            let _ = reply.send(Err(Status::new(status.code(), status.message())));
        }
    }
}

impl PublishPath {
    pub(crate) fn new(client: EventServiceClient<Channel>, stream: bool) -> Self {
        PublishPath {
            client,
            unary: AtomicBool::new(!stream),
            stream: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// Publishes one batch; the results or the status a unary call would
    /// have failed with.
    pub(crate) async fn publish(&self, request: v1::PublishRequest) -> Outcome {
        if self.unary.load(Ordering::Relaxed) {
            return self.unary(request).await;
        }
        let conn = match self.conn().await {
            Ok(Some(conn)) => conn,
            Ok(None) => return self.unary(request).await,
            Err(status) => return Err(status),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut replies) = conn.waiting.replies.lock() {
            replies.insert(id, tx);
        }
        // Checked after registering: `end` either saw this request or ran
        // before, and then `ended` is set.
        if conn.waiting.ended.load(Ordering::Acquire) {
            conn.waiting.take(id);
            return Err(stream_ended());
        }
        let request = v1::PublishStreamRequest {
            topic: request.topic,
            events: request.events,
            request_id: id,
        };
        if conn.requests.send(request).await.is_err() {
            conn.waiting.take(id);
            return Err(stream_ended());
        }
        rx.await.unwrap_or_else(|_| Err(stream_ended()))
    }

    async fn unary(&self, request: v1::PublishRequest) -> Outcome {
        let mut client = self.client.clone();
        Ok(client.publish(request).await?.into_inner().results)
    }

    /// The open stream, opening one if there is none; None when the server
    /// has no PublishStream (publish unary from now on).
    async fn conn(&self) -> Result<Option<Conn>, Status> {
        let mut slot = self.stream.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.waiting.ended.load(Ordering::Acquire) {
                return Ok(Some(conn.clone()));
            }
        }
        let (requests, rx) = mpsc::channel(QUEUED_REQUESTS);
        let mut client = self.client.clone();
        let responses = match client.publish_stream(ReceiverStream::new(rx)).await {
            Ok(responses) => responses.into_inner(),
            Err(status) if status.code() == Code::Unimplemented => {
                tracing::debug!("the server has no PublishStream; publishing by unary calls");
                self.unary.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            Err(status) => return Err(status),
        };
        let conn = Conn {
            requests,
            waiting: Arc::new(Waiting::default()),
        };
        tokio::spawn(read_answers(responses, conn.waiting.clone()));
        *slot = Some(conn.clone());
        Ok(Some(conn))
    }
}

/// Hands each answer to its request, until the stream ends.
async fn read_answers(
    mut responses: tonic::Streaming<v1::PublishStreamResponse>,
    waiting: Arc<Waiting>,
) {
    let end = loop {
        match responses.message().await {
            Ok(Some(answer)) => {
                if let Some(reply) = waiting.take(answer.request_id) {
                    let _ = reply.send(match answer.failure {
                        None => Ok(answer.results),
                        Some(failure) => Err(failure_status(failure)),
                    });
                }
            }
            Ok(None) => break stream_ended(),
            Err(status) => break status,
        }
    };
    waiting.end(&end);
}

/// The stream ended before answering: the batch may or may not be stored,
/// as after a dropped connection, so it is retried (idempotency keys make
/// the retry exact).
fn stream_ended() -> Status {
    Status::unavailable("the PublishStream ended before answering; retrying")
}

/// The status a unary Publish would have failed with, with its RetryInfo.
fn failure_status(failure: v1::PublishFailure) -> Status {
    let code = Code::from_i32(failure.code);
    match failure
        .retry_delay
        .and_then(|d| std::time::Duration::try_from(d).ok())
    {
        Some(delay) => Status::with_error_details(
            code,
            failure.message,
            ErrorDetails::with_retry_info(Some(delay)),
        ),
        None => Status::new(code, failure.message),
    }
}

//! Settling over the subscription's own `SubscribeStream`.
//!
//! The session that opened the stream [`open`](SettleStream::open)s it here
//! with the stream's request sender, routes each [`v1::SettleAnswer`] it
//! reads back with [`answer`](SettleStream::answer), and
//! [`close`](SettleStream::close)s it when the stream ends. The settle task
//! [`send`](SettleStream::send)s each batch as one request and waits for its
//! answer. A batch finds no stream (none open yet, the server has no
//! SubscribeStream, or the stream ended before its answer) and then goes by
//! unary call, which is safe to repeat: acking a settled delivery is a no-op,
//! and one whose stream ended was released, so it comes back as a lost lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::v1::{self, subscribe_stream_request::Request};

/// Shared by a subscription's session and settle task.
#[derive(Clone, Default)]
pub(crate) struct SettleStream {
    open: Arc<Mutex<Option<Open>>>,
    next_id: Arc<AtomicU64>,
}

/// The stream open now.
struct Open {
    requests: mpsc::Sender<v1::SubscribeStreamRequest>,
    /// Settles sent and not answered yet, by request id.
    waiting: HashMap<u64, oneshot::Sender<v1::SettleAnswer>>,
}

impl SettleStream {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        // Nothing panics while holding the lock; a poisoned one is still
        // consistent.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream opened: settles go through `requests` from now on.
    pub(crate) fn open(&self, requests: mpsc::Sender<v1::SubscribeStreamRequest>) {
        *self.lock() = Some(Open {
            requests,
            waiting: HashMap::new(),
        });
    }

    /// The stream ended: the settles waiting on it learn so (and go by unary
    /// call), as do later ones until another stream opens.
    pub(crate) fn close(&self) {
        self.lock().take();
    }

    /// Hands an answer read from the stream to the settle that waits for it.
    pub(crate) fn answer(&self, answer: v1::SettleAnswer) {
        let reply = self
            .lock()
            .as_mut()
            .and_then(|open| open.waiting.remove(&answer.request_id));
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
    }

    /// Sends one settle on the open stream; its answer arrives on the
    /// returned receiver, which fails if the stream ends first. `None` when
    /// no stream is open.
    pub(crate) async fn send(
        &self,
        request: Request,
    ) -> Option<oneshot::Receiver<v1::SettleAnswer>> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let requests = {
            let mut open = self.lock();
            let open = open.as_mut()?;
            open.waiting.insert(request_id, reply);
            open.requests.clone()
        };
        let request = v1::SubscribeStreamRequest {
            request: Some(request),
            request_id,
        };
        if requests.send(request).await.is_err() {
            if let Some(open) = self.lock().as_mut() {
                open.waiting.remove(&request_id);
            }
            return None;
        }
        Some(answer)
    }
}

/// Closes the stream in [`SettleStream`] when the session's use of it ends,
/// however it ends (an error, the consumer leaving, the task aborted).
pub(crate) struct CloseOnDrop(pub(crate) SettleStream);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

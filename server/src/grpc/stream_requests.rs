//! The requests of a bidirectional stream (PublishStream, SubscribeStream's
//! settles), worked on concurrently within bounds.
//!
//! [`StreamRequests`] reads requests while fewer than [`MAX_IN_FLIGHT`] are
//! unanswered and they hold less than [`MAX_IN_FLIGHT_BYTES`] encoded, runs
//! each one's answer as a future, and yields the answers as they complete.
//! It reads nothing more once a bound is reached, so a client that sends
//! faster than the server answers is held back by HTTP/2 flow control, and a
//! stream holds about as much memory as one large unary request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use eventbus_proto::prost::Message;
use futures_core::Stream;
use futures_util::stream::FuturesUnordered;
use tonic::{Status, Streaming};

/// Requests of one stream the server works on at once; it reads no more
/// until one is answered. Matches the concurrent unary calls one HTTP/2
/// connection is allowed by default, so a stream is never slower than them.
pub const MAX_IN_FLIGHT: usize = 64;
/// ... and no more while the unanswered ones hold this many encoded bytes
/// (a request larger than this is still read, once the others are answered).
pub const MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// An answer on its way, and its request's encoded size.
type Pending<A> = Pin<Box<dyn Future<Output = (A, usize)> + Send>>;

pub struct StreamRequests<R, A> {
    requests: Streaming<R>,
    /// No more requests will be read: the client closed its side, or a
    /// request ended the input (then `end_with` holds why).
    input_done: bool,
    end_with: Option<Status>,
    in_flight: FuturesUnordered<Pending<A>>,
    /// Encoded bytes of the requests in `in_flight`.
    in_flight_bytes: usize,
}

impl<R: Message + Default + 'static, A: 'static> StreamRequests<R, A> {
    pub fn new(requests: Streaming<R>) -> Self {
        StreamRequests {
            requests,
            input_done: false,
            end_with: None,
            in_flight: FuturesUnordered::new(),
            in_flight_bytes: 0,
        }
    }

    /// Starts every request that has arrived, within the bounds: `start`
    /// turns one into the future of its answer, or into the status that
    /// ends the input (the requests before it are still answered). A
    /// message that cannot be decoded ends the input likewise.
    pub fn read<F>(&mut self, cx: &mut Context<'_>, mut start: F)
    where
        F: FnMut(R) -> Result<Pin<Box<dyn Future<Output = A> + Send>>, Status>,
    {
        while !self.input_done
            && self.in_flight.len() < MAX_IN_FLIGHT
            && self.in_flight_bytes < MAX_IN_FLIGHT_BYTES
        {
            match Pin::new(&mut self.requests).poll_next(cx) {
                Poll::Ready(Some(Ok(req))) => {
                    let bytes = req.encoded_len();
                    match start(req) {
                        Ok(answer) => {
                            self.in_flight_bytes += bytes;
                            self.in_flight
                                .push(Box::pin(async move { (answer.await, bytes) }));
                        }
                        Err(status) => self.end_input(status),
                    }
                }
                Poll::Ready(Some(Err(status))) => self.end_input(status),
                Poll::Ready(None) => self.input_done = true,
                Poll::Pending => return,
            }
        }
    }

    fn end_input(&mut self, status: Status) {
        self.input_done = true;
        self.end_with = Some(status);
    }

    /// The next answer that is ready. `Ready(None)` when nothing is in
    /// flight (then a waker is registered only if [`read`](Self::read) has
    /// one on the input).
    pub fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Option<A>> {
        match Pin::new(&mut self.in_flight).poll_next(cx) {
            Poll::Ready(Some((answer, bytes))) => {
                self.in_flight_bytes -= bytes;
                Poll::Ready(Some(answer))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether every request that will ever come was answered.
    pub fn finished(&self) -> bool {
        self.input_done && self.in_flight.is_empty()
    }

    /// Why the input ended, if a request or a message ended it (once).
    pub fn take_end(&mut self) -> Option<Status> {
        self.end_with.take()
    }
}

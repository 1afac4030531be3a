//! [`Replay`]: a topic's history as a stream of events, read by offset or
//! time range without touching any subscription.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures_core::Stream;

use crate::client::Client;
use crate::error::Result;
use crate::v1;

/// A point in each selected partition of a topic, for [`ReplayOptions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// This offset, in every selected partition.
    Offset(u64),
    /// The first event published at or after this time.
    Time(SystemTime),
}

/// What [`Client::replay`] reads. The default reads every partition from
/// the earliest retained event to the end as of the call, all types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Partitions to read. Empty: all of the topic's partitions.
    pub partitions: Vec<u32>,
    /// Where to start (inclusive). `None`: the earliest retained event.
    pub from: Option<Position>,
    /// Where to stop (exclusive). `None`: the end of each partition as of
    /// the call. Not allowed with `follow`.
    pub to: Option<Position>,
    /// Only events whose type matches one of these NATS-style patterns
    /// (`order.*`, `order.>`). Empty: any type.
    pub event_types: Vec<String>,
    /// After catching up with the tail, keep the stream open for new events
    /// until it is dropped.
    pub follow: bool,
}

impl ReplayOptions {
    fn into_request(self, topic: &str) -> v1::ReplayRequest {
        use v1::replay_request::{End, Start};
        v1::ReplayRequest {
            topic: topic.into(),
            partitions: self.partitions,
            start: self.from.map(|p| match p {
                Position::Offset(o) => Start::StartOffset(o),
                Position::Time(t) => Start::StartTime(t.into()),
            }),
            end: self.to.map(|p| match p {
                Position::Offset(o) => End::EndOffset(o),
                Position::Time(t) => End::EndTime(t.into()),
            }),
            types: self.event_types,
            follow: self.follow,
        }
    }
}

/// A [`Stream`] of a topic's events from [`Client::replay`], in offset order
/// within each partition. It ends after the selected range (unless
/// following), or with the first error. Dropping it cancels the call.
///
/// The server sends events in batches; [`Replay::next_batch`] takes the rest
/// of a batch at once, for callers that write in chunks.
pub struct Replay {
    stream: tonic::Streaming<v1::ReplayResponse>,
    /// The rest of the batch being yielded.
    batch: std::vec::IntoIter<v1::Event>,
    caught_up: bool,
}

impl Replay {
    /// True once the server said the replay reached the tail of every
    /// selected partition: with `follow`, what comes after is new events.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// The next events: the rest of the current batch, else the next
    /// non-empty batch from the server. `None` at the end of the replay.
    /// Errors: the status that ended the stream (for example UNAVAILABLE
    /// when the connection broke); the replay is over after it.
    pub async fn next_batch(&mut self) -> Option<Result<Vec<v1::Event>>> {
        if self.batch.len() > 0 {
            return Some(Ok(self.batch.by_ref().collect()));
        }
        loop {
            match self.stream.message().await {
                Ok(Some(msg)) => {
                    self.caught_up |= msg.caught_up;
                    if !msg.events.is_empty() {
                        return Some(Ok(msg.events));
                    }
                }
                Ok(None) => return None,
                Err(status) => return Some(Err(status.into())),
            }
        }
    }
}

impl Stream for Replay {
    type Item = Result<v1::Event>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<v1::Event>>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.batch.next() {
                return Poll::Ready(Some(Ok(event)));
            }
            match std::task::ready!(Pin::new(&mut this.stream).poll_next(cx)) {
                Some(Ok(msg)) => {
                    this.caught_up |= msg.caught_up;
                    this.batch = msg.events.into_iter();
                }
                Some(Err(status)) => return Poll::Ready(Some(Err(status.into()))),
                None => return Poll::Ready(None),
            }
        }
    }
}

impl Client {
    /// Reads `topic`'s history as `options` select, without touching any
    /// subscription. Errors (from the call or as the stream's item):
    /// NOT_FOUND (topic), INVALID_ARGUMENT (a partition the topic does not
    /// have or listed twice, a time out of range, `to` with `follow`,
    /// patterns out of bounds).
    ///
    /// ```no_run
    /// use tokio_stream::StreamExt;
    ///
    /// # async fn demo(client: eventbus::Client) -> eventbus::Result<()> {
    /// let mut events = client.replay("orders", Default::default()).await?;
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{}:{} {}", event.partition, event.offset, event.r#type);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn replay(&self, topic: &str, options: ReplayOptions) -> Result<Replay> {
        let stream = self
            .events()
            .replay(options.into_request(topic))
            .await?
            .into_inner();
        Ok(Replay {
            stream,
            batch: Vec::new().into_iter(),
            caught_up: false,
        })
    }
}

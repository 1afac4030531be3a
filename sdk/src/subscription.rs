//! [`Subscription`]: a reconnecting stream of deliveries, and
//! [`Subscription::run`] for handler-style consumers.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::{Backoff, RetryPolicy};
use crate::client::Client;
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::event::Message;
use crate::handler::HandlerError;
use crate::settle::{SettleConfig, SettleCounters, SettleStatsHandle, Settler};
use crate::settle_stream::{CloseOnDrop, SettleStream};
use crate::v1::{self, subscribe_stream_request};

/// Most ack ids in one settle call: the server names at most this many stale
/// leases in one FAILED_PRECONDITION.
pub const MAX_SETTLE_BATCH: usize = 64;

/// How a [`Subscription`] receives and settles.
#[derive(Clone, Debug)]
pub struct SubscriberConfig {
    /// Unsettled deliveries the server may have outstanding on this stream
    /// (flow control). Default 256.
    pub max_in_flight: u32,
    /// How long acks and nacks wait to share a call. Default 0: send at
    /// once; settles that arrive while a call is in flight share the next
    /// one, so batches grow with load without adding latency.
    pub settle_linger: Duration,
    /// Most ack ids in one settle call. Default and maximum 64: the server
    /// names at most 64 stale leases in one answer, and a larger call could
    /// not tell each id's fate.
    pub max_settle_batch: usize,
    /// Stop extending a lease after this long; the event is then redelivered
    /// when its deadline passes. Default 1 hour.
    pub max_lease_duration: Duration,
    /// Reconnect backoff when the stream breaks (UNAVAILABLE, connection
    /// loss, server restart). `timeout: None` (the default) keeps trying.
    pub reconnect: RetryPolicy,
    /// Retries of a settle call that failed retryably.
    pub settle_retry: RetryPolicy,
    /// Receive and settle on one `SubscribeStream` (default true): acks and
    /// nacks travel on the stream that brought the deliveries, which costs
    /// the server far less than a unary call per batch. False uses
    /// `Subscribe` and unary Ack/Nack calls, as does a server without
    /// SubscribeStream (detected by itself). Lease extensions are unary
    /// calls either way.
    pub settle_on_stream: bool,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            max_in_flight: 256,
            settle_linger: Duration::ZERO,
            max_settle_batch: MAX_SETTLE_BATCH,
            max_lease_duration: Duration::from_secs(3600),
            reconnect: RetryPolicy {
                min_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                timeout: None,
            },
            settle_retry: RetryPolicy {
                timeout: Some(Duration::from_secs(10)),
                ..RetryPolicy::default()
            },
            settle_on_stream: true,
        }
    }
}

/// A member of a subscription (consumer group): a [`Stream`] of
/// [`Delivery`]s that reconnects with backoff when the connection drops and
/// extends the leases of deliveries you hold.
///
/// It ends with an error only for failures that reconnecting cannot fix
/// (NOT_FOUND, INVALID_ARGUMENT, ...). Nothing is sent to the server until it
/// is first polled. Must be used within a Tokio runtime.
///
/// ```no_run
/// use tokio_stream::StreamExt;
/// # async fn demo(client: eventbus::Client) -> eventbus::Result<()> {
/// let mut deliveries = client.subscribe("orders", "billing");
/// while let Some(delivery) = deliveries.next().await {
///     let delivery = delivery?;
///     println!("{:?}", delivery.payload());
///     delivery.ack().await?;
/// }
/// # Ok(()) }
/// ```
pub struct Subscription {
    client: Client,
    topic: String,
    name: String,
    config: SubscriberConfig,
    rx: Option<mpsc::Receiver<Result<Delivery>>>,
    session: Option<AbortOnDrop>,
    /// The settle task's handle, once started (shared with the session).
    settler: Option<Settler>,
    counters: Arc<SettleCounters>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Subscription {
    pub(crate) fn new(
        client: Client,
        topic: String,
        name: String,
        config: SubscriberConfig,
    ) -> Subscription {
        Subscription {
            client,
            topic,
            name,
            config,
            rx: None,
            session: None,
            settler: None,
            counters: Arc::default(),
        }
    }

    /// Live counters of this subscription's acks and nacks, including the
    /// ones nobody waited for ([`Lease::ack_queued`](crate::Lease::ack_queued)).
    pub fn settle_stats(&self) -> SettleStatsHandle {
        SettleStatsHandle(self.counters.clone())
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The subscription name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn start(&mut self) -> &mut mpsc::Receiver<Result<Delivery>> {
        if self.rx.is_none() {
            let (tx, rx) = mpsc::channel(self.config.max_in_flight.max(1) as usize);
            let stream = SettleStream::default();
            let settler = Settler::spawn(
                self.client.events(),
                self.topic.clone(),
                self.name.clone(),
                SettleConfig {
                    linger: self.config.settle_linger,
                    max_batch: self.config.max_settle_batch.clamp(1, MAX_SETTLE_BATCH),
                    max_lease: self.config.max_lease_duration,
                    retry: self.config.settle_retry.clone(),
                },
                self.counters.clone(),
                stream.clone(),
            );
            self.settler = Some(settler.clone());
            let session = Session {
                client: self.client.clone(),
                topic: self.topic.clone(),
                name: self.name.clone(),
                config: self.config.clone(),
                tx,
                settler,
                stream,
                unary: AtomicBool::new(!self.config.settle_on_stream),
            };
            self.session = Some(AbortOnDrop(tokio::spawn(session.run())));
            self.rx = Some(rx);
        }
        self.rx.as_mut().expect("just set")
    }

    /// Runs `handler` for every delivery, at most `concurrency` at a time
    /// (each on its own Tokio task): `Ok` acks, an error nacks (with its
    /// delay, if it has one), and a [permanent](HandlerError::permanent)
    /// error dead-letters with the error's text as the reason. Acks are
    /// [queued](crate::Lease::ack_queued): a handler's slot is free for the
    /// next delivery while the Ack call is made; their outcomes are counted in
    /// [`settle_stats`](Subscription::settle_stats).
    ///
    /// Returns when the subscription ends with an error that reconnecting
    /// cannot fix, after the running handlers finished. See
    /// [`run_until`](Subscription::run_until) for a graceful stop.
    ///
    /// ```no_run
    /// # async fn demo(client: eventbus::Client) -> eventbus::Result<()> {
    /// use eventbus::HandlerError;
    /// client
    ///     .subscribe("orders", "billing")
    ///     .run(
    ///         |msg: eventbus::Message| async move {
    ///             let order: serde_json::Value = msg.json().map_err(HandlerError::permanent)?;
    ///             println!("order {order}");
    ///             Ok(())
    ///         },
    ///         16,
    ///     )
    ///     .await
    /// # }
    /// ```
    pub async fn run<F, Fut>(self, handler: F, concurrency: usize) -> Result<()>
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        self.run_until(handler, concurrency, std::future::pending())
            .await
    }

    /// Like [`run`](Subscription::run), until `shutdown` completes: then no
    /// new delivery is started, the running handlers finish and their
    /// deliveries are settled, and it returns `Ok(())`. Deliveries received
    /// but not started are released for redelivery. Use it for SIGTERM.
    ///
    /// ```no_run
    /// # async fn demo(client: eventbus::Client) -> eventbus::Result<()> {
    /// client
    ///     .subscribe("orders", "billing")
    ///     .run_until(
    ///         |_msg: eventbus::Message| async move { Ok(()) },
    ///         16,
    ///         async { tokio::signal::ctrl_c().await.ok(); },
    ///     )
    ///     .await
    /// # }
    /// ```
    pub async fn run_until<F, Fut, S>(
        mut self,
        handler: F,
        concurrency: usize,
        shutdown: S,
    ) -> Result<()>
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
        S: Future<Output = ()>,
    {
        let handler = Arc::new(handler);
        let concurrency = concurrency.max(1);
        let mut running = JoinSet::new();
        let rx = self.start();
        tokio::pin!(shutdown);
        let outcome = loop {
            while running.len() >= concurrency {
                let _ = running.join_next().await;
            }
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                Some(_) = running.join_next(), if !running.is_empty() => {}
                item = rx.recv() => match item {
                    Some(Ok(delivery)) => {
                        let handler = handler.clone();
                        running.spawn(async move {
                            let (message, lease) = delivery.into_parts();
                            let outcome = handler(message).await;
                            // An ack only needs a place in the queue: the
                            // slot is free for the next delivery while the
                            // call is made (the flush below waits for it).
                            let settled = match outcome {
                                Ok(()) => lease.ack_queued().await,
                                Err(e) => e.settle(lease).await,
                            };
                            if let Err(e) = settled {
                                tracing::debug!(error = %e, "could not settle a delivery");
                            }
                        });
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Err(Error::Closed("subscription")),
                },
            }
        };
        while running.join_next().await.is_some() {}
        // The handlers' queued acks are sent before this returns.
        if let Some(settler) = &self.settler {
            settler.flush().await;
        }
        outcome
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.start().poll_recv(cx)
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("name", &self.name)
            .finish()
    }
}

/// The background task of one subscription: (re)opens the stream and
/// forwards deliveries (and, on a SubscribeStream, routes settle answers).
struct Session {
    client: Client,
    topic: String,
    name: String,
    config: SubscriberConfig,
    tx: mpsc::Sender<Result<Delivery>>,
    settler: Settler,
    /// Where the settle task finds the open SubscribeStream.
    stream: SettleStream,
    /// Use Subscribe and unary settles: configured, or the server has no
    /// SubscribeStream.
    unary: AtomicBool,
}

/// Settle requests queued for the stream before the settle task waits: it
/// sends one batch at a time, so this is never reached in practice.
const QUEUED_SETTLES: usize = 16;

/// One message of a feed: deliveries, and settle answers.
type FeedMessage = (Vec<v1::Delivery>, Vec<v1::SettleAnswer>);

/// The response stream of Subscribe or of SubscribeStream.
enum Feed {
    Subscribe(tonic::Streaming<v1::SubscribeResponse>),
    SubscribeStream {
        responses: tonic::Streaming<v1::SubscribeStreamResponse>,
        /// Takes the stream out of the SettleStream when the feed ends.
        _close: CloseOnDrop,
    },
}

impl Feed {
    /// The next message's deliveries and settle answers. Cancel safe, as
    /// tonic's `Streaming::message` is.
    async fn message(&mut self) -> std::result::Result<Option<FeedMessage>, tonic::Status> {
        Ok(match self {
            Feed::Subscribe(s) => s.message().await?.map(|m| (m.deliveries, Vec::new())),
            Feed::SubscribeStream { responses, .. } => responses
                .message()
                .await?
                .map(|m| (m.deliveries, m.settled)),
        })
    }
}

impl Session {
    async fn run(self) {
        let settler = self.settler.clone();
        let mut backoff = Backoff::new(&self.config.reconnect);
        let started = tokio::time::Instant::now();
        loop {
            let err = match self.stream(&settler, &mut backoff).await {
                Ok(()) => return, // the consumer went away
                Err(e) => e,
            };
            if !err.is_retryable() || !self.config.reconnect.in_time(started) {
                let _ = self.tx.send(Err(err)).await;
                return;
            }
            tracing::debug!(topic = %self.topic, subscription = %self.name, error = %err, "subscription stream broke; reconnecting");
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Opens a SubscribeStream, or a Subscribe stream when configured or
    /// when the server has no SubscribeStream (UNIMPLEMENTED, remembered).
    async fn open(&self) -> Result<Feed> {
        let request = v1::SubscribeRequest {
            topic: self.topic.clone(),
            subscription: self.name.clone(),
            max_in_flight: self.config.max_in_flight,
        };
        if !self.unary.load(Ordering::Relaxed) {
            let (requests, rx) = mpsc::channel(QUEUED_SETTLES);
            let subscribe = v1::SubscribeStreamRequest {
                request: Some(subscribe_stream_request::Request::Subscribe(
                    request.clone(),
                )),
                request_id: 0,
            };
            // The channel is new and empty: this cannot fail.
            let _ = requests.try_send(subscribe);
            match self
                .client
                .events()
                .subscribe_stream(ReceiverStream::new(rx))
                .await
            {
                Ok(response) => {
                    self.stream.open(requests);
                    return Ok(Feed::SubscribeStream {
                        responses: response.into_inner(),
                        _close: CloseOnDrop(self.stream.clone()),
                    });
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    tracing::debug!(
                        "the server has no SubscribeStream; using Subscribe and unary settles"
                    );
                    self.unary.store(true, Ordering::Relaxed);
                }
                Err(status) => return Err(status.into()),
            }
        }
        let stream = self.client.events().subscribe(request).await?.into_inner();
        Ok(Feed::Subscribe(stream))
    }

    /// One stream, until it fails (`Err`) or the consumer is gone (`Ok`). A
    /// stream the server ends cleanly is treated as UNAVAILABLE.
    async fn stream(&self, settler: &Settler, backoff: &mut Backoff) -> Result<()> {
        let mut feed = self.open().await?;
        // The subscription exists now (it may have been auto-created): learn
        // its ack deadline, so held leases are extended in time.
        match self
            .client
            .admin()
            .get_subscription(&self.topic, &self.name)
            .await
        {
            Ok(sub) => {
                if let Some(d) = sub.ack_deadline {
                    settler.set_ack_deadline(Duration::new(
                        d.seconds.max(0) as u64,
                        d.nanos.max(0) as u32,
                    ));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not read the ack deadline; extending leases conservatively")
            }
        }
        // Deliveries read but not yet taken by the consumer. Reading goes on
        // while they wait, so a settle answer is never stuck behind them
        // (a consumer awaiting an ack would otherwise never make room). The
        // server's credit bounds them to max_in_flight; past that (leases
        // that expired and came back while the consumer stalled) reading
        // pauses.
        let mut unsent: VecDeque<Delivery> = VecDeque::new();
        let ended = self.read(&mut feed, &mut unsent, settler, backoff).await;
        // The stream is over: close it first, so that settles waiting on it
        // go by unary call, then hand the consumer what was read before the
        // end, as if each delivery had been handed over before the next
        // read. Their leases are released by the server; acking one settles
        // it if it was not redelivered yet, or says LeaseLost.
        drop(feed);
        if ended.is_err() {
            for delivery in unsent {
                if self.tx.send(Ok(delivery)).await.is_err() {
                    break;
                }
            }
        }
        ended
    }

    /// Reads `feed` until it fails (`Err`) or the consumer is gone (`Ok`),
    /// handing deliveries to the consumer and answers to the settles.
    async fn read(
        &self,
        feed: &mut Feed,
        unsent: &mut VecDeque<Delivery>,
        settler: &Settler,
        backoff: &mut Backoff,
    ) -> Result<()> {
        let most_unsent = self.config.max_in_flight.max(1) as usize;
        loop {
            tokio::select! {
                permit = self.tx.reserve(), if !unsent.is_empty() => {
                    let Ok(permit) = permit else { return Ok(()) };
                    if let Some(delivery) = unsent.pop_front() {
                        permit.send(Ok(delivery));
                    }
                }
                message = feed.message(), if unsent.len() < most_unsent => {
                    let Some((deliveries, answers)) = message? else {
                        return Err(Error::Status(tonic::Status::unavailable(
                            "the server ended the subscription stream",
                        )));
                    };
                    backoff.reset();
                    for answer in answers {
                        self.stream.answer(answer);
                    }
                    for d in deliveries {
                        let delivery = Delivery::new(d, settler.clone());
                        if !unsent.is_empty() {
                            unsent.push_back(delivery);
                            continue;
                        }
                        // The common case: the consumer has room.
                        match self.tx.try_send(Ok(delivery)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(Ok(delivery))) => unsent.push_back(delivery),
                            Err(_) => return Ok(()),
                        }
                    }
                }
                _ = self.tx.closed() => return Ok(()),
            }
        }
    }
}

//! Settling deliveries: batched Ack / Nack calls and automatic lease
//! extension, in one task per subscription.
//!
//! Every received delivery is registered as a held lease. Every
//! `extend_every` the task sends ModifyAckDeadline for all held leases younger
//! than `max_lease`, so a slow handler keeps its lease without doing anything.
//! Settling unregisters the lease at once (no more extensions) and queues the
//! ack id; the task sends queued ids in one call per kind after `linger`, or
//! as soon as `max_batch` are waiting. A "call" is a settle request on the
//! subscription's `SubscribeStream` while one is open ([`SettleStream`]),
//! else a unary Ack or Nack. Lease extensions always go by unary call: they
//! are rare (a third of the ack deadline apart) and must not wait behind a
//! stream being reopened.
//!
//! A settle either waits for the call that carries it ([`Settler::settle`]:
//! a reply channel per settle) or only for a place in the queue
//! ([`Settler::queue`]: no reply; its outcome is counted in
//! [`SettleStats`] and logged when it fails). [`Settler::flush`] waits until
//! everything queued before it was sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic_types::StatusExt;

use crate::backoff::{proto_duration, Backoff, RetryPolicy};
use crate::client::Channel;
use crate::error::{Error, Result};
use crate::settle_stream::SettleStream;
use crate::v1::{self, event_service_client::EventServiceClient, subscribe_stream_request};

/// Precondition-failure type the server uses for an ack id whose lease is gone.
const STALE_LEASE: &str = "STALE_LEASE";

/// How a delivery is settled.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    Ack,
    /// `delay: None` uses the subscription's retry policy.
    Nack {
        delay: Option<Duration>,
        reason: String,
        dead_letter: bool,
    },
}

enum Request {
    Settle {
        verdict: Verdict,
        ack_id: String,
        /// `None`: queued without waiting for the outcome.
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// Answered once every request queued before it was sent.
    Flush(oneshot::Sender<()>),
}

/// Counters of one subscription's settles since it was created, whether the
/// caller waited for them or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettleStats {
    /// Acks the server took.
    pub acked: u64,
    /// Nacks (and dead-letterings) the server took.
    pub nacked: u64,
    /// Settles that failed: the lease was lost (the event comes back) or the
    /// call failed after its retries.
    pub failed: u64,
}

/// A live view of one subscription's [`SettleStats`]: cheap to clone, and
/// readable from anywhere (a metrics exporter, a progress report) while the
/// subscription runs.
#[derive(Clone, Debug, Default)]
pub struct SettleStatsHandle(pub(crate) Arc<SettleCounters>);

impl SettleStatsHandle {
    /// The counters now.
    pub fn get(&self) -> SettleStats {
        self.0.snapshot()
    }
}

/// The shared counters behind [`SettleStats`].
#[derive(Debug, Default)]
pub(crate) struct SettleCounters {
    acked: AtomicU64,
    nacked: AtomicU64,
    failed: AtomicU64,
}

impl SettleCounters {
    pub(crate) fn snapshot(&self) -> SettleStats {
        SettleStats {
            acked: self.acked.load(Ordering::Relaxed),
            nacked: self.nacked.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    fn count(&self, verdict: &Verdict, result: &Result<()>) {
        let counter = match (result, verdict) {
            (Err(_), _) => &self.failed,
            (Ok(()), Verdict::Ack) => &self.acked,
            (Ok(()), Verdict::Nack { .. }) => &self.nacked,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Settings of the settle task.
#[derive(Clone, Debug)]
pub(crate) struct SettleConfig {
    pub linger: Duration,
    pub max_batch: usize,
    pub max_lease: Duration,
    pub retry: RetryPolicy,
}

/// Handle to a subscription's settle task. Cheap to clone; the task ends when
/// the last handle is dropped (after sending what is queued).
#[derive(Clone)]
pub(crate) struct Settler {
    tx: mpsc::Sender<Request>,
    held: Arc<Mutex<HashMap<String, Instant>>>,
    /// Lease extension: (deadline to request, how often). Set once the
    /// subscription's ack deadline is known.
    extension: Arc<Mutex<Extension>>,
}

#[derive(Clone, Copy, Debug)]
struct Extension {
    deadline: Duration,
    every: Duration,
}

impl Settler {
    pub(crate) fn spawn(
        client: EventServiceClient<Channel>,
        topic: String,
        subscription: String,
        config: SettleConfig,
        counters: Arc<SettleCounters>,
        stream: SettleStream,
    ) -> Settler {
        let (tx, rx) = mpsc::channel(config.max_batch.max(1) * 4);
        let held = Arc::new(Mutex::new(HashMap::new()));
        // Until the subscription's deadline is known: the server default
        // deadline, refreshed often enough for the smallest allowed one (1 s).
        let extension = Arc::new(Mutex::new(Extension {
            deadline: Duration::from_secs(30),
            every: Duration::from_millis(400),
        }));
        let task = Task {
            rx,
            client,
            topic,
            subscription,
            config,
            held: held.clone(),
            extension: extension.clone(),
            queued: Vec::new(),
            counters,
            stream,
        };
        tokio::spawn(task.run());
        Settler {
            tx,
            held,
            extension,
        }
    }

    /// Extends held leases to `ack_deadline` at a third of it, so an extension
    /// that is late by up to two thirds still lands in time.
    pub(crate) fn set_ack_deadline(&self, ack_deadline: Duration) {
        let deadline = ack_deadline.max(Duration::from_secs(1));
        *self.extension.lock().expect("not poisoned") = Extension {
            deadline,
            every: deadline / 3,
        };
    }

    pub(crate) fn hold(&self, ack_id: &str) {
        self.held
            .lock()
            .expect("not poisoned")
            .insert(ack_id.to_string(), Instant::now());
    }

    fn release(&self, ack_id: &str) {
        self.held.lock().expect("not poisoned").remove(ack_id);
    }

    /// Queues a settle and waits for the call that carries it.
    pub(crate) async fn settle(&self, ack_id: String, verdict: Verdict) -> Result<()> {
        self.release(&ack_id);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Settle {
                verdict,
                ack_id,
                reply: Some(reply),
            })
            .await
            .map_err(|_| Error::Closed("subscription"))?;
        rx.await.unwrap_or(Err(Error::Closed("subscription")))
    }

    /// Queues a settle, waiting only while the queue is full: no reply
    /// channel, and the caller is free before the call is made. The outcome
    /// goes to the counters (and a failure to the log).
    pub(crate) async fn queue(&self, ack_id: String, verdict: Verdict) -> Result<()> {
        self.release(&ack_id);
        self.tx
            .send(Request::Settle {
                verdict,
                ack_id,
                reply: None,
            })
            .await
            .map_err(|_| Error::Closed("subscription"))
    }

    /// Waits until every settle queued before this call was sent.
    pub(crate) async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Flush(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Settles without waiting (from `Drop`). If the queue is full the lease
    /// simply expires and the event is redelivered.
    pub(crate) fn settle_detached(&self, ack_id: String, verdict: Verdict) {
        self.release(&ack_id);
        let _ = self.tx.try_send(Request::Settle {
            verdict,
            ack_id,
            reply: None,
        });
    }
}

struct Task {
    rx: mpsc::Receiver<Request>,
    client: EventServiceClient<Channel>,
    topic: String,
    subscription: String,
    config: SettleConfig,
    held: Arc<Mutex<HashMap<String, Instant>>>,
    extension: Arc<Mutex<Extension>>,
    /// Settles waiting for the next call: (verdict, ack id, reply).
    queued: Vec<Queued>,
    counters: Arc<SettleCounters>,
    /// The subscription's SubscribeStream, when one is open.
    stream: SettleStream,
}

type Queued = (Verdict, String, Option<oneshot::Sender<Result<()>>>);

impl Task {
    async fn run(mut self) {
        let mut next_extension = Instant::now();
        let mut send_at: Option<Instant> = None;
        loop {
            let ext = *self.extension.lock().expect("not poisoned");
            tokio::select! {
                req = self.rx.recv() => match req {
                    Some(r) => {
                        let mut flushes: Vec<_> = self.take(r).into_iter().collect();
                        while self.queued.len() < self.config.max_batch {
                            match self.rx.try_recv() {
                                Ok(r) => flushes.extend(self.take(r)),
                                Err(_) => break,
                            }
                        }
                        if !flushes.is_empty() {
                            self.send_queued().await;
                            send_at = None;
                            for done in flushes {
                                let _ = done.send(());
                            }
                        } else if self.queued.len() >= self.config.max_batch || self.config.linger.is_zero() {
                            self.send_queued().await;
                            send_at = None;
                        } else {
                            send_at.get_or_insert(Instant::now() + self.config.linger);
                        }
                    }
                    None => {
                        self.send_queued().await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(send_at.unwrap_or_else(Instant::now)), if send_at.is_some() => {
                    self.send_queued().await;
                    send_at = None;
                }
                _ = tokio::time::sleep_until(next_extension) => {
                    self.extend(ext.deadline).await;
                    next_extension = Instant::now() + ext.every;
                }
            }
        }
    }

    /// Queues a settle; a flush is handed back, to be answered once what is
    /// queued was sent.
    fn take(&mut self, request: Request) -> Option<oneshot::Sender<()>> {
        match request {
            Request::Settle {
                verdict,
                ack_id,
                reply,
            } => {
                self.queued.push((verdict, ack_id, reply));
                None
            }
            Request::Flush(done) => Some(done),
        }
    }

    /// ModifyAckDeadline for every held lease younger than `max_lease`; older
    /// ones are let go (they expire and are redelivered).
    async fn extend(&mut self, deadline: Duration) {
        let ids: Vec<String> = {
            let mut held = self.held.lock().expect("not poisoned");
            let max = self.config.max_lease;
            held.retain(|_, since| since.elapsed() < max);
            held.keys().cloned().collect()
        };
        for chunk in ids.chunks(self.config.max_batch.max(1)) {
            let req = v1::ModifyAckDeadlineRequest {
                topic: self.topic.clone(),
                subscription: self.subscription.clone(),
                ack_ids: chunk.to_vec(),
                ack_deadline: Some(proto_duration(deadline)),
            };
            if let Err(status) = self.client.modify_ack_deadline(req).await {
                // Leases that are gone cannot be extended any more: stop trying.
                let stale = stale_ids(&status);
                if stale.is_empty() {
                    tracing::debug!(error = %status, "lease extension failed; retrying next round");
                } else {
                    let mut held = self.held.lock().expect("not poisoned");
                    for id in stale {
                        held.remove(&id);
                    }
                }
            }
        }
    }

    /// Sends the queued settles, one call per distinct verdict.
    async fn send_queued(&mut self) {
        let mut groups: Vec<(Verdict, Vec<Queued>)> = Vec::new();
        for q in self.queued.drain(..) {
            match groups.iter_mut().find(|(v, _)| *v == q.0) {
                Some((_, g)) => g.push(q),
                None => groups.push((q.0.clone(), vec![q])),
            }
        }
        for (verdict, group) in groups {
            let ids: Vec<String> = group.iter().map(|q| q.1.clone()).collect();
            let outcome = self.call(&verdict, ids).await;
            for (_, ack_id, reply) in group {
                let result = match &outcome {
                    Ok(()) => Ok(()),
                    Err(Outcome::Stale(stale)) if stale.contains(&ack_id) => {
                        Err(Error::LeaseLost { ack_id })
                    }
                    Err(Outcome::Stale(_)) => Ok(()),
                    Err(Outcome::Failed(e)) => Err(e.duplicate()),
                };
                self.counters.count(&verdict, &result);
                match reply {
                    Some(reply) => drop(reply.send(result)),
                    None => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "a queued settle failed; the event will be redelivered");
                        }
                    }
                }
            }
        }
    }

    async fn call(&mut self, verdict: &Verdict, ack_ids: Vec<String>) -> Result<(), Outcome> {
        if let Some(outcome) = self.stream_call(verdict, &ack_ids).await {
            return outcome;
        }
        let mut backoff = Backoff::new(&self.config.retry);
        let started = Instant::now();
        loop {
            let result = match verdict {
                Verdict::Ack => self
                    .client
                    .ack(v1::AckRequest {
                        topic: self.topic.clone(),
                        subscription: self.subscription.clone(),
                        ack_ids: ack_ids.clone(),
                    })
                    .await
                    .map(drop),
                Verdict::Nack {
                    delay,
                    reason,
                    dead_letter,
                } => self
                    .client
                    .nack(v1::NackRequest {
                        topic: self.topic.clone(),
                        subscription: self.subscription.clone(),
                        ack_ids: ack_ids.clone(),
                        delay: delay.map(proto_duration),
                        reason: reason.clone(),
                        dead_letter: *dead_letter,
                    })
                    .await
                    .map(drop),
            };
            let status = match result {
                Ok(()) => return Ok(()),
                Err(status) => status,
            };
            let stale = stale_ids(&status);
            if !stale.is_empty() {
                return Err(Outcome::Stale(stale));
            }
            let err = Error::from(status);
            if !err.is_retryable() || !self.config.retry.in_time(started) {
                return Err(Outcome::Failed(err));
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

impl Task {
    /// Settles on the subscription's stream. `None` when that could not
    /// tell: no stream was open, it ended before the answer, or the answer
    /// is a retryable failure; the unary call (with its retries) decides.
    async fn stream_call(
        &self,
        verdict: &Verdict,
        ack_ids: &[String],
    ) -> Option<Result<(), Outcome>> {
        let ack_ids = ack_ids.to_vec();
        let request = match verdict {
            Verdict::Ack => subscribe_stream_request::Request::Ack(v1::AckRequest {
                ack_ids,
                ..Default::default()
            }),
            Verdict::Nack {
                delay,
                reason,
                dead_letter,
            } => subscribe_stream_request::Request::Nack(v1::NackRequest {
                ack_ids,
                delay: delay.map(proto_duration),
                reason: reason.clone(),
                dead_letter: *dead_letter,
                ..Default::default()
            }),
        };
        let answer = self.stream.send(request).await?.await.ok()?;
        if let Some(failure) = answer.failure {
            let err = Error::from(tonic::Status::new(failure.code.into(), failure.message));
            return (!err.is_retryable()).then_some(Err(Outcome::Failed(err)));
        }
        if answer.stale_ack_ids.is_empty() {
            Some(Ok(()))
        } else {
            Some(Err(Outcome::Stale(answer.stale_ack_ids)))
        }
    }
}

enum Outcome {
    /// FAILED_PRECONDITION naming these ack ids; the others were settled.
    Stale(Vec<String>),
    Failed(Error),
}

/// Ack ids the server reported as stale leases. Empty for other errors, and
/// for a FAILED_PRECONDITION without details, which then fails every id of
/// the call with that status.
fn stale_ids(status: &tonic::Status) -> Vec<String> {
    if status.code() != tonic::Code::FailedPrecondition {
        return Vec::new();
    }
    status
        .get_details_precondition_failure()
        .map(|pf| {
            pf.violations
                .into_iter()
                .filter(|v| v.r#type == STALE_LEASE)
                .map(|v| v.subject)
                .collect()
        })
        .unwrap_or_default()
}

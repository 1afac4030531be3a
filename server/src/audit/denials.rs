//! Denied calls, recorded in batches under a budget.
//!
//! A client can make denied calls as fast as the network allows, so their
//! records must not cost a synced write each, nor grow the log without
//! bound. Each denial first passes a token bucket ([`Budget`], `governor`):
//! within it the record joins a bounded queue, and a task appends whatever
//! queued within [`BATCH_EVERY`] as ONE synced write, then releases every
//! call waiting for it. Over the budget, or with the queue full, the denial
//! is only counted; the next batch carries one
//! [`DENIALS_DROPPED`](eventbus_broker::audit::DENIALS_DROPPED) record with
//! the count. So a flood costs at most about 20 synced writes a second and
//! `per_second` records a second (plus one summary per batch), whatever its
//! rate.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use eventbus_broker::audit::DENIALS_DROPPED;
use eventbus_broker::{AuditRecord, Broker};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{mpsc, oneshot};

/// How long the batcher gathers denials after the first one before it
/// writes them.
pub const BATCH_EVERY: Duration = Duration::from_millis(50);
/// Denials waiting for the batcher; beyond it they are counted, not queued.
const QUEUE: usize = 1024;

/// How many denials are recorded one by one: a token bucket.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// One more record is allowed every this long, sustained.
    pub refill_every: Duration,
    /// Records in a burst ([`QUEUE`] at most are useful).
    pub burst: NonZeroU32,
}

impl Default for Budget {
    /// 100 records a second, bursts of 500: far above what mistyped
    /// credentials and misconfigured clients produce, and at most about
    /// 3 GB a day of records under a sustained flood.
    fn default() -> Self {
        Budget {
            refill_every: Duration::from_millis(10),
            burst: NonZeroU32::new(500).expect("non-zero"),
        }
    }
}

impl Budget {
    fn quota(&self) -> Quota {
        Quota::with_period(self.refill_every)
            .expect("a refill period above zero")
            .allow_burst(self.burst)
    }
}

/// What the batcher gets.
enum Queued {
    /// A denial's record, and the call waiting for it to be durable.
    Denial(Box<AuditRecord>, oneshot::Sender<()>),
    /// A denial was dropped: write the count even if nothing else comes.
    Dropped,
    /// Write what is queued now, then answer.
    Flush(oneshot::Sender<()>),
}

/// The denial side of the audit log: see the module docs.
pub struct Denials {
    tx: mpsc::Sender<Queued>,
    /// Taken by [`Denials::start`].
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    budget: Budget,
    limiter: DefaultDirectRateLimiter,
    /// Denials not recorded one by one since the last batch.
    dropped: Arc<AtomicU64>,
}

impl Denials {
    pub fn new(budget: Budget) -> Denials {
        let (tx, rx) = mpsc::channel(QUEUE);
        Denials {
            tx,
            rx: Mutex::new(Some(rx)),
            budget,
            limiter: RateLimiter::direct(budget.quota()),
            dropped: Arc::default(),
        }
    }

    /// Starts the batcher task, writing to `broker` while it exists. Only
    /// the first call starts one.
    pub fn start(&self, broker: Weak<dyn Broker>) {
        let rx = self.rx.lock().expect("not poisoned").take();
        if let Some(rx) = rx {
            let batcher = Batcher {
                broker,
                dropped: self.dropped.clone(),
                budget: self.budget,
            };
            tokio::spawn(batcher.run(rx));
        }
    }

    /// Records one denial: waits until its batch is written, or returns at
    /// once when it is over the budget (then it is counted).
    pub async fn record(&self, record: AuditRecord) {
        if self.limiter.check().is_err() {
            return self.drop_one();
        }
        let (done, written) = oneshot::channel();
        match self.tx.try_send(Queued::Denial(Box::new(record), done)) {
            Ok(()) => {
                let _ = written.await;
            }
            Err(_) => self.drop_one(),
        }
    }

    fn drop_one(&self) {
        // The first drop since the last batch wakes the batcher; later ones
        // are in the same count.
        if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            let _ = self.tx.try_send(Queued::Dropped);
        }
    }

    /// Writes whatever is queued, and waits for it.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Queued::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// The task that writes denials in batches.
struct Batcher {
    broker: Weak<dyn Broker>,
    dropped: Arc<AtomicU64>,
    budget: Budget,
}

impl Batcher {
    /// Runs until every [`Denials`] handle is gone.
    async fn run(self, mut rx: mpsc::Receiver<Queued>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + BATCH_EVERY;
            while !matches!(batch.last(), Some(Queued::Flush(_))) {
                tokio::select! {
                    next = rx.recv() => match next {
                        Some(item) => batch.push(item),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.write(batch).await;
        }
    }

    /// Appends the batch's records (and the count of dropped denials) in
    /// one write, then releases everyone waiting for it.
    async fn write(&self, batch: Vec<Queued>) {
        let mut records = Vec::new();
        let mut waiting = Vec::new();
        for item in batch {
            match item {
                Queued::Denial(record, done) => {
                    records.push(*record);
                    waiting.push(done);
                }
                Queued::Flush(done) => waiting.push(done),
                Queued::Dropped => {}
            }
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            records.push(self.dropped_record(dropped));
        }
        if !records.is_empty() {
            let count = records.len();
            match self.broker.upgrade() {
                Some(broker) => {
                    if let Err(e) = broker.append_audit(records).await {
                        tracing::error!(error = %e, records = count, "denial audit records not written");
                    }
                }
                None => tracing::warn!(
                    records = count,
                    "denial audit records not written: storage is closed"
                ),
            }
        }
        for done in waiting {
            let _ = done.send(());
        }
    }

    fn dropped_record(&self, dropped: u64) -> AuditRecord {
        AuditRecord {
            time_ms: super::now_ms(),
            action: DENIALS_DROPPED.to_string(),
            result: eventbus::code_name(tonic::Code::PermissionDenied).to_string(),
            detail: format!(
                "{dropped} denied calls not recorded one by one: over the denial budget \
                 (bursts of {}, then one every {:?})",
                self.budget.burst, self.budget.refill_every
            ),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventbus_broker::AuditQuery;

    async fn broker() -> (tempfile::TempDir, Arc<dyn Broker>) {
        let dir = tempfile::tempdir().unwrap();
        let broker = eventbus_log::LogBroker::open(eventbus_log::Options::new(dir.path()))
            .await
            .unwrap();
        (dir, Arc::new(broker))
    }

    fn denial(i: usize) -> AuditRecord {
        AuditRecord {
            principal: format!("p{i}"),
            action: "DeleteTopic".into(),
            result: "PERMISSION_DENIED".into(),
            ..Default::default()
        }
    }

    async fn stored(broker: &Arc<dyn Broker>) -> Vec<AuditRecord> {
        broker
            .list_audit(AuditQuery::default())
            .await
            .unwrap()
            .records
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_denials_within_the_budget_are_each_recorded_before_they_return() {
        let (_dir, broker) = broker().await;
        let denials = Arc::new(Denials::new(Budget::default()));
        denials.start(Arc::downgrade(&broker));
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let denials = denials.clone();
                tokio::spawn(async move { denials.record(denial(i)).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        // Every call returned, so every record is already stored.
        let mut principals: Vec<_> = stored(&broker)
            .await
            .into_iter()
            .map(|r| r.principal)
            .collect();
        principals.sort();
        let mut expected: Vec<_> = (0..20).map(|i| format!("p{i}")).collect();
        expected.sort();
        assert_eq!(principals, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_over_the_budget_is_counted_in_one_record() {
        let (_dir, broker) = broker().await;
        let budget = Budget {
            refill_every: Duration::from_secs(3600),
            burst: NonZeroU32::new(5).unwrap(),
        };
        let denials = Denials::new(budget);
        denials.start(Arc::downgrade(&broker));
        // One after another: the burst is recorded, the rest only counted.
        for i in 0..100 {
            denials.record(denial(i)).await;
        }
        denials.flush().await;
        let records = stored(&broker).await;
        let one_by_one = records.iter().filter(|r| r.action == "DeleteTopic").count();
        let summaries: Vec<_> = records
            .iter()
            .filter(|r| r.action == DENIALS_DROPPED)
            .collect();
        assert_eq!(one_by_one, 5);
        let dropped: usize = summaries
            .iter()
            .map(|r| {
                r.detail
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            })
            .sum();
        assert_eq!(one_by_one + dropped, 100, "{summaries:?}");
        // One summary per batch, not one per dropped call.
        assert!(
            !summaries.is_empty() && summaries.len() < 10,
            "{summaries:?}"
        );
        assert_eq!(summaries[0].result, "PERMISSION_DENIED");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_denial_before_start_is_written_once_started() {
        let (_dir, broker) = broker().await;
        let denials = Arc::new(Denials::new(Budget::default()));
        let call = {
            let denials = denials.clone();
            tokio::spawn(async move { denials.record(denial(1)).await })
        };
        tokio::task::yield_now().await;
        denials.start(Arc::downgrade(&broker));
        call.await.unwrap();
        assert_eq!(stored(&broker).await.len(), 1);
    }
}

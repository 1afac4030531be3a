//! `eventbus-jetstream`: cluster mode. The eventbus contract
//! ([`eventbus_broker::Broker`]) on a NATS JetStream cluster, so that the
//! server is a stateless gateway and every durable thing lives in
//! JetStream (Raft-replicated streams, R3, file storage, synced writes).
//!
//! What is built (issue 14, first step): topics ([`topics`]), publish
//! ([`publish`]), bounded replay ([`replay`]) and the audit log
//! ([`audit`]). Subscriptions, delivery and dead letters answer
//! UNIMPLEMENTED, naming the single-node mode as the way to get them today. ARCHITECTURE.md ("The broker
//! boundary", "Backend conformance") has the whole mapping.

pub mod audit;
pub mod envelope;
pub mod publish;
pub mod replay;
pub mod topics;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use eventbus_broker::*;
use tokio::sync::watch;

use topics::{TopicMeta, Topics};

/// How the gateway reaches and uses the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// `nats://host:port`, comma-separated; the client tries each.
    pub urls: String,
    /// Replicas of every stream and bucket: 3 in production (a quorum of 2
    /// acknowledges a publish), 1 for a single-node test server.
    pub replicas: usize,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// How long an idempotency key is remembered (the streams'
    /// `duplicate_window`).
    pub dedup_window: Duration,
    pub limits: Limits,
}

/// The JetStream backend.
pub struct JetStreamBroker {
    client: async_nats::Client,
    js: jetstream::Context,
    topics: Topics,
    options: Arc<Options>,
    spreader: eventbus_broker::partitioner::Spreader,
    health: watch::Sender<StorageHealth>,
}

/// A NATS failure as the contract sees it: retryable storage trouble
/// (UNAVAILABLE), with what was being done.
pub(crate) fn nats_error(doing: &str, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{doing}: NATS JetStream: {e}"))
}

fn not_yet(what: &str) -> Error {
    Error::Unimplemented(format!(
        "{what} is not available in cluster mode yet (issue 14); run `eventbus serve` \
         with the default RocksDB storage for it"
    ))
}

impl JetStreamBroker {
    /// Connects to the cluster and opens (or creates) the metadata bucket.
    pub async fn connect(options: Options) -> Result<JetStreamBroker> {
        let servers = options
            .urls
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::invalid(
                    "nats-url",
                    format!(
                        "{:?}: {e}; give nats://host:port, comma-separated",
                        options.urls
                    ),
                )
            })?;
        let client = async_nats::ConnectOptions::new()
            .name("eventbus-gateway")
            .retry_on_initial_connect()
            .connect(servers)
            .await
            .map_err(|e| nats_error("connecting", e))?;
        let js = jetstream::new(client.clone());
        let options = Arc::new(options);
        let topics = Topics::open(js.clone(), options.clone()).await?;
        audit::open(&js, options.replicas).await?;
        Ok(JetStreamBroker {
            client,
            js,
            topics,
            options,
            spreader: Default::default(),
            health: watch::Sender::new(StorageHealth::Ok),
        })
    }

    /// A topic with its partitions' bounds, from each stream's state.
    async fn topic_info(&self, meta: &TopicMeta) -> Result<TopicInfo> {
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            let mut stream = self.topics.stream(meta.id, p).await?;
            let info = stream
                .info()
                .await
                .map_err(|e| nats_error("reading a partition's state", e))?;
            // Offsets are sequences - 1; an empty stream has first = last + 1.
            partitions.push(PartitionBounds {
                start: info.state.first_sequence.saturating_sub(1),
                end: info.state.last_sequence,
            });
        }
        Ok(TopicInfo {
            name: meta.name.clone(),
            id: meta.topic_id(),
            partitions,
            retention: meta.retention,
            created_ms: meta.created_ms,
            creator: meta.creator.clone(),
        })
    }
}

#[async_trait]
impl Broker for JetStreamBroker {
    fn limits(&self) -> &Limits {
        &self.options.limits
    }

    async fn publish(&self, topic: &str, events: &[NewEvent]) -> Result<Published> {
        names::validate_topic_name(topic)?;
        self.options.limits.check_publish_count(events.len())?;
        for (i, e) in events.iter().enumerate() {
            self.options.limits.check_event(i, e)?;
        }
        let meta = self.topics.get(topic).await?;
        match publish::publish(&self.client, &self.js, &meta, &self.spreader, events).await {
            // A topic deleted (or recreated) through another gateway: look
            // it up again once.
            Err(Error::TopicNotFound(_)) => {
                let meta = self.topics.load(topic).await?;
                publish::publish(&self.client, &self.js, &meta, &self.spreader, events).await
            }
            other => other,
        }
    }

    async fn replay(&self, request: ReplayRequest) -> Result<BoxStream<Result<ReplayItem>>> {
        let meta = self.topics.get(&request.topic).await?;
        let partitions =
            replay::select_partitions(&request.topic, meta.partitions, &request.partitions)?;
        replay::start(&self.topics, meta, partitions, request).await
    }

    async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        names::validate_topic_name(name)?;
        let meta = self.topics.create(name, config).await?;
        self.topic_info(&meta).await
    }

    async fn get_topic(&self, name: &str) -> Result<TopicInfo> {
        names::validate_topic_name(name)?;
        let meta = self.topics.load(name).await?;
        self.topic_info(&meta).await
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let mut out = Vec::new();
        for meta in self.topics.list().await? {
            out.push(self.topic_info(&meta).await?);
        }
        Ok(out)
    }

    async fn delete_topic(&self, name: &str) -> Result<()> {
        names::validate_topic_name(name)?;
        self.topics.delete(name).await
    }

    async fn create_subscription(
        &self,
        _topic: &str,
        _name: &str,
        _new: NewSubscription,
    ) -> Result<SubscriptionInfo> {
        Err(not_yet("CreateSubscription"))
    }

    async fn get_subscription(&self, _topic: &str, _name: &str) -> Result<SubscriptionInfo> {
        Err(not_yet("GetSubscription"))
    }

    async fn list_subscriptions(
        &self,
        topic: &str,
        _after: Option<&str>,
        _limit: usize,
    ) -> Result<(Vec<SubscriptionInfo>, bool)> {
        // A topic exists or not; it has no subscriptions yet in this mode.
        self.topics.get(topic).await?;
        Ok((Vec::new(), false))
    }

    async fn update_subscription(
        &self,
        _topic: &str,
        _name: &str,
        _update: SubscriptionUpdate,
    ) -> Result<SubscriptionInfo> {
        Err(not_yet("UpdateSubscription"))
    }

    async fn set_paused(
        &self,
        _topic: &str,
        _name: &str,
        _paused: bool,
    ) -> Result<SubscriptionInfo> {
        Err(not_yet("Pause/ResumeSubscription"))
    }

    async fn seek(
        &self,
        _topic: &str,
        _name: &str,
        _target: SeekTarget,
    ) -> Result<SubscriptionInfo> {
        Err(not_yet("SeekSubscription"))
    }

    async fn delete_subscription(&self, _topic: &str, _name: &str) -> Result<()> {
        Err(not_yet("DeleteSubscription"))
    }

    async fn subscribe(
        &self,
        _topic: &str,
        _name: &str,
        _max_in_flight: u32,
    ) -> Result<Membership> {
        Err(not_yet("Subscribe"))
    }

    async fn settle(
        &self,
        _topic: &str,
        _name: &str,
        _op: SettleOp,
        _ack_ids: &[String],
    ) -> Result<SettleOutcome> {
        Err(not_yet("Ack/Nack/ModifyAckDeadline"))
    }

    async fn list_dead_letters(
        &self,
        _topic: &str,
        _name: &str,
        _after: Option<u64>,
        _limit: usize,
        _query: DeadLetterQuery,
    ) -> Result<DeadLetterPage> {
        Err(not_yet("ListDeadLetters"))
    }

    async fn get_dead_letter(&self, _topic: &str, _name: &str, _id: u64) -> Result<DeadLetter> {
        Err(not_yet("GetDeadLetter"))
    }

    async fn purge_dead_letters(
        &self,
        _topic: &str,
        _name: &str,
        _selector: DeadLetterSelector,
        _dry_run: bool,
    ) -> Result<u64> {
        Err(not_yet("PurgeDeadLetters"))
    }

    async fn redrive_dead_letters(
        &self,
        _topic: &str,
        _name: &str,
        _selector: DeadLetterSelector,
        _dry_run: bool,
        _max_per_second: u32,
    ) -> Result<u64> {
        Err(not_yet("RedriveDeadLetters"))
    }

    fn health(&self) -> StorageHealth {
        self.health.borrow().clone()
    }

    fn watch_health(&self) -> watch::Receiver<StorageHealth> {
        self.health.subscribe()
    }

    async fn storage(&self) -> Result<StorageReport> {
        Err(not_yet("the storage report"))
    }

    async fn backup(&self, _dir: &Path) -> Result<u64> {
        Err(not_yet("CreateBackup (use JetStream stream snapshots)"))
    }

    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<()> {
        audit::append(&self.js, records).await
    }

    async fn list_audit(&self, query: AuditQuery) -> Result<AuditPage> {
        audit::list(&self.js, query).await
    }

    async fn flush(&self) {
        // Every publish was acknowledged by a quorum; nothing is buffered.
        let _ = self.client.flush().await;
    }
}

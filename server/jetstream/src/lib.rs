//! `eventbus-jetstream`: cluster mode. The eventbus contract
//! ([`eventbus_broker::Broker`]) on a NATS JetStream cluster, so that the
//! server is a stateless gateway and every durable thing lives in
//! JetStream (Raft-replicated streams, R3, file storage, synced writes).
//!
//! What is built (issue 14): topics ([`topics`]), publish ([`publish`]),
//! bounded replay ([`replay`]), subscriptions ([`subscriptions`]) with
//! delivery and settling ([`delivery`]), seek and statistics
//! ([`positions`]), dead letters ([`dead_letters`]), the audit log
//! ([`audit`]), the cluster's health ([`health`]) and subscription figures
//! summed over the gateways ([`gateways`]), backups as stream snapshots
//! ([`backup`]) and their restore ([`restore`]). ARCHITECTURE.md ("The
//! broker boundary", "Backend conformance") has the whole mapping.

pub mod acked;
pub mod audit;
pub mod backup;
pub mod buckets;
pub mod dead_letters;
pub mod delivery;
pub mod envelope;
pub mod gateways;
pub mod health;
pub mod migrate;
pub mod placement;
pub mod positions;
pub mod publish;
pub mod replay;
pub mod restore;
pub mod subscriptions;
pub mod topics;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use eventbus_broker::*;
use tokio::sync::watch;

use subscriptions::{SubscriptionMeta, Subscriptions};
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
    /// A member's `max_in_flight` when it asks for 0, and the most it may
    /// ask for.
    pub default_max_in_flight: u32,
    pub max_in_flight_limit: u32,
    /// The bytes a member's unsettled deliveries may hold
    /// (`max-in-flight-bytes`).
    pub max_in_flight_bytes: usize,
    /// The largest event, encoded (`max-event-bytes`).
    pub max_event_bytes: usize,
    /// The ack deadline of a subscription created without one.
    pub default_ack_deadline: Duration,
    pub limits: Limits,
}

/// How long the gateway waits for any answer from the cluster: a PubAck,
/// a settle's reply, an API call. A healthy cluster answers in
/// milliseconds; a stream leader that stops answering is replaced by Raft
/// after 4–9 s of silence, and a request still waiting on the old leader
/// then holds its client back for the rest of this wait. Measured:
/// publishing to a partition whose leader was paused resumed 5.1 s after
/// the new leader with the client's 5 s default, hence 3 s
/// (tests/e2e/cluster_faults.rs).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the gateway pings a NATS server that has sent it nothing.
/// The client leaves a server after three unanswered pings and connects to
/// another, so a node that stops answering (paused, partitioned, a dead
/// host without a reset) holds the gateway for about 3 s. The client's
/// default of 60 s held every publish and delivery for two minutes when
/// the node this gateway used was paused (tests/e2e/cluster_faults.rs).
/// Pings go only over a silent connection, so they cost nothing under load.
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// The JetStream backend.
pub struct JetStreamBroker {
    client: async_nats::Client,
    js: jetstream::Context,
    topics: Topics,
    subscriptions: Arc<Subscriptions>,
    delivery: delivery::Context,
    options: Arc<Options>,
    spreader: eventbus_broker::partitioner::Spreader,
    health: watch::Sender<StorageHealth>,
    /// Answers the other gateways' requests for this one's counts.
    answering: tokio::task::JoinHandle<()>,
}

impl Drop for JetStreamBroker {
    fn drop(&mut self) {
        // The task holds a subscription, which would keep the connection
        // open after the gateway is gone.
        self.answering.abort();
    }
}

/// A NATS failure as the contract sees it: retryable storage trouble
/// (UNAVAILABLE), with what was being done.
pub(crate) fn nats_error(doing: &str, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{doing}: NATS JetStream: {e}"))
}

/// Connects to the cluster at `options.urls` as a gateway does (the
/// gateway's timeouts and pings); `eventbus migrate` connects the same way.
pub async fn connect_client(options: &Options) -> Result<(async_nats::Client, jetstream::Context)> {
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
        .request_timeout(Some(REQUEST_TIMEOUT))
        .ping_interval(PING_INTERVAL)
        .connect(servers)
        .await
        .map_err(|e| nats_error("connecting", e))?;
    let js = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client.clone());
    Ok((client, js))
}

impl JetStreamBroker {
    /// Connects to the cluster and opens (or creates) the metadata bucket.
    pub async fn connect(options: Options) -> Result<JetStreamBroker> {
        let (client, js) = connect_client(&options).await?;
        let options = Arc::new(options);
        let topics = Topics::open(js.clone(), options.clone()).await?;
        let subscriptions = Arc::new(Subscriptions::open(js.clone(), options.clone()).await?);
        buckets::while_starting("opening the audit stream", || {
            audit::open(&js, options.replicas)
        })
        .await?;
        let members = Arc::new(delivery::Members::default());
        let gateways = Arc::new(gateways::Gateways::new(members.clone()));
        let answering = tokio::spawn(gateways.clone().serve(client.clone()));
        let delivery = delivery::Context {
            client: client.clone(),
            js: js.clone(),
            members,
            gateways,
            max_in_flight_bytes: options.max_in_flight_bytes,
        };
        Ok(JetStreamBroker {
            client,
            js,
            topics,
            subscriptions,
            delivery,
            options,
            spreader: Default::default(),
            health: watch::Sender::new(StorageHealth::Ok),
            answering,
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

    /// A topic's subscription named `name`.
    async fn subscription(
        &self,
        topic: &str,
        name: &str,
    ) -> Result<(Arc<TopicMeta>, SubscriptionMeta)> {
        names::validate_topic_name(topic)?;
        names::validate_name("subscription", name)?;
        let topic = self.topics.load(topic).await?;
        let (meta, _) = self.subscriptions.get(&topic, name).await?;
        Ok((topic, meta))
    }

    async fn subscription_info(
        &self,
        topic: &TopicMeta,
        meta: SubscriptionMeta,
    ) -> Result<SubscriptionInfo> {
        let counts = self.counts(&[meta.id]).await;
        let counts = counts.get(&meta.id).copied().unwrap_or_default();
        positions::info(&self.js, topic, meta, counts).await
    }

    /// The counts of `subscriptions` over every gateway that answers.
    async fn counts(&self, subscriptions: &[u32]) -> HashMap<u32, gateways::Counts> {
        self.delivery
            .gateways
            .gather(&self.client, subscriptions)
            .await
    }

    /// Checks a dead-letter selector's size and filter.
    fn check_selector(&self, selector: &DeadLetterSelector) -> Result<()> {
        match selector {
            DeadLetterSelector::Filter(q) => q.validate(&self.options.limits),
            DeadLetterSelector::Ids(ids) => self.options.limits.check_dead_letter_ids(ids.len()),
            DeadLetterSelector::All => Ok(()),
        }
    }
}

#[async_trait]
impl Broker for JetStreamBroker {
    fn limits(&self) -> &Limits {
        &self.options.limits
    }

    async fn publish(&self, topic: &str, events: &[NewEvent]) -> Result<Published> {
        names::validate_topic_name(topic)?;
        if events.is_empty() {
            return Err(Error::invalid("events", "must contain at least one event"));
        }
        self.options.limits.check_publish_count(events.len())?;
        for (i, e) in events.iter().enumerate() {
            self.options.limits.check_event(i, e)?;
            publish::check_size(i, e, self.options.max_event_bytes)?;
        }
        let meta = self.topics.get(topic).await?;
        match publish::publish(&self.client, &self.js, &meta, &self.spreader, events).await {
            // A topic deleted (or recreated) through another gateway: look
            // it up again once.
            Err(Error::TopicNotFound(_)) => {
                let meta = self.topics.load(topic).await?;
                match publish::publish(&self.client, &self.js, &meta, &self.spreader, events).await
                {
                    // The topic exists, but its streams do not answer.
                    Err(Error::TopicNotFound(_)) => Err(nats_error(
                        "publishing",
                        format!("no stream of topic {topic:?} answers; retry"),
                    )),
                    other => other,
                }
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
        if config.partitions > limits::MAX_PARTITIONS {
            return Err(Error::invalid(
                "partitions",
                format!(
                    "{} is too many; the maximum is {}",
                    config.partitions,
                    limits::MAX_PARTITIONS
                ),
            ));
        }
        self.options
            .limits
            .check_topic_count(self.topics.list().await?.len())?;
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
        let meta = self.topics.load(name).await?;
        self.topics.delete(name).await?;
        self.subscriptions.delete_all(&meta).await
    }

    async fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        new: NewSubscription,
    ) -> Result<SubscriptionInfo> {
        names::validate_topic_name(topic)?;
        names::validate_name("subscription", name)?;
        let config = SubscriptionConfig::of_new(
            &new,
            self.options.default_ack_deadline,
            &self.options.limits,
        )?;
        let topic = self.topics.load(topic).await?;
        let meta = self
            .subscriptions
            .create(&topic, name, config, new.start_position, new.creator)
            .await?;
        self.subscription_info(&topic, meta).await
    }

    async fn get_subscription(&self, topic: &str, name: &str) -> Result<SubscriptionInfo> {
        let (topic, meta) = self.subscription(topic, name).await?;
        self.subscription_info(&topic, meta).await
    }

    async fn list_subscriptions(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<SubscriptionInfo>, bool)> {
        names::validate_topic_name(topic)?;
        let topic = self.topics.load(topic).await?;
        let all = self.subscriptions.list(&topic).await?;
        let mut rest = all
            .into_iter()
            .filter(|m| after.is_none_or(|a| m.name.as_str() > a));
        let metas: Vec<SubscriptionMeta> = rest.by_ref().take(limit).collect();
        // One gather for the page, not one per subscription.
        let ids: Vec<u32> = metas.iter().map(|m| m.id).collect();
        let counts = self.counts(&ids).await;
        let mut page = Vec::new();
        for meta in metas {
            let c = counts.get(&meta.id).copied().unwrap_or_default();
            page.push(positions::info(&self.js, &topic, meta, c).await?);
        }
        Ok((page, rest.next().is_some()))
    }

    async fn update_subscription(
        &self,
        topic: &str,
        name: &str,
        update: SubscriptionUpdate,
    ) -> Result<SubscriptionInfo> {
        let update = update.check(self.options.default_ack_deadline, &self.options.limits)?;
        let (topic, _) = self.subscription(topic, name).await?;
        let meta = self
            .subscriptions
            .update(&topic, name, |m| update.apply(&mut m.config))
            .await?;
        self.subscription_info(&topic, meta).await
    }

    async fn set_paused(&self, topic: &str, name: &str, paused: bool) -> Result<SubscriptionInfo> {
        let (topic, _) = self.subscription(topic, name).await?;
        let meta = self
            .subscriptions
            .update(&topic, name, |m| m.paused = paused)
            .await?;
        self.subscription_info(&topic, meta).await
    }

    async fn seek(&self, topic: &str, name: &str, target: SeekTarget) -> Result<SubscriptionInfo> {
        let (topic, meta) = self.subscription(topic, name).await?;
        positions::seek(&self.js, &topic, &meta, target).await?;
        self.subscription_info(&topic, meta).await
    }

    async fn delete_subscription(&self, topic: &str, name: &str) -> Result<()> {
        let (topic, meta) = self.subscription(topic, name).await?;
        self.subscriptions.delete(&topic, name).await?;
        self.delivery.gateways.forget(meta.id);
        Ok(())
    }

    async fn subscribe(&self, topic: &str, name: &str, max_in_flight: u32) -> Result<Membership> {
        let max_in_flight = eventbus_broker::delivery::member_credit(
            max_in_flight,
            self.options.default_max_in_flight,
            self.options.max_in_flight_limit,
        )?;
        let (topic, meta) = self.subscription(topic, name).await?;
        delivery::subscribe(
            self.delivery.clone(),
            self.subscriptions.clone(),
            topic,
            meta,
            max_in_flight,
        )
        .await
    }

    async fn settle(
        &self,
        topic: &str,
        name: &str,
        op: SettleOp,
        ack_ids: &[String],
    ) -> Result<SettleOutcome> {
        self.options.limits.check_settle(&op, ack_ids.len())?;
        let (topic, meta) = self.subscription(topic, name).await?;
        delivery::settle(&self.delivery, &topic, &meta, &op, ack_ids).await
    }

    async fn list_dead_letters(
        &self,
        topic: &str,
        name: &str,
        after: Option<u64>,
        limit: usize,
        query: DeadLetterQuery,
    ) -> Result<DeadLetterPage> {
        query.validate(&self.options.limits)?;
        let (_, meta) = self.subscription(topic, name).await?;
        dead_letters::list(&self.js, &meta, after, limit, &query).await
    }

    async fn get_dead_letter(&self, topic: &str, name: &str, id: u64) -> Result<DeadLetter> {
        let (_, meta) = self.subscription(topic, name).await?;
        dead_letters::get(&self.js, &meta, id).await
    }

    async fn purge_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
    ) -> Result<u64> {
        self.check_selector(&selector)?;
        let (_, meta) = self.subscription(topic, name).await?;
        dead_letters::purge(&self.js, &meta, &selector, dry_run).await
    }

    async fn redrive_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
        max_per_second: u32,
    ) -> Result<u64> {
        self.check_selector(&selector)?;
        let (_, meta) = self.subscription(topic, name).await?;
        dead_letters::redrive(&self.js, &meta, &selector, dry_run, max_per_second).await
    }

    fn health(&self) -> StorageHealth {
        self.health.borrow().clone()
    }

    fn watch_health(&self) -> watch::Receiver<StorageHealth> {
        self.health.subscribe()
    }

    /// The bytes eventbus's streams hold (one replica's worth: each of the
    /// `nats-replicas` holds as much), read from the cluster; there is no
    /// local disk to reserve.
    async fn storage(&self) -> Result<StorageReport> {
        use futures_util::TryStreamExt as _;
        let mut streams = self.js.streams();
        let mut bytes = 0;
        while let Some(info) = streams
            .try_next()
            .await
            .map_err(|e| nats_error("listing streams", e))?
        {
            let name = &info.config.name;
            if health::is_ours(name) {
                bytes += info.state.bytes;
            }
        }
        Ok(StorageReport {
            health: self.health(),
            stats: StorageStats {
                sst_bytes: bytes,
                ..Default::default()
            },
            disk_reserve_bytes: 0,
        })
    }

    fn backend(&self) -> Backend {
        Backend::JetStream
    }

    async fn cluster(&self) -> Result<Option<ClusterReport>> {
        let server = self.client.server_info().server_name;
        health::report(&self.js, &server).await.map(Some)
    }

    async fn backup(&self, dir: &Path) -> Result<u64> {
        backup::backup(&self.client, &self.js, dir).await
    }

    async fn shared_secret(&self, name: &str) -> Result<Option<[u8; 32]>> {
        buckets::shared_secret(&self.js, name, self.options.replicas)
            .await
            .map(Some)
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

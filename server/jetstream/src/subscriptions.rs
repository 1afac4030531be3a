//! Subscriptions on JetStream: the settings in a KV bucket, the delivery
//! state in the engine's own durable pull consumers.
//!
//! * KV bucket `eventbus-subscriptions`: key `s<topic id>_<name in hex>`,
//!   value [`SubscriptionMeta`] as JSON; `next-id` is the id counter. A
//!   topic deleted and created again has a new id, so its old
//!   subscriptions can never reappear under it.
//! * Consumer `s<subscription id>` on every partition stream of the topic:
//!   explicit acks, `ack_wait` = the ack deadline, unlimited `max_deliver`
//!   (the gateway counts attempts itself, see [`crate::delivery`]), and
//!   `max_ack_pending` 1 for KEY ordering (the conformance table says why).
//!   Its ack floor and pending set are the subscription's position and
//!   leases, replicated with the stream.
//! * Stream `EB_D<id>` holds the dead letters, `EB_R<id>` the redriven
//!   events waiting for redelivery (a work queue with its own consumer
//!   `s<id>`), see [`crate::dead_letters`].
//! * Creation makes the consumers and streams first and the KV entry last
//!   (create-only), as topics do; deletion removes the entry first.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use eventbus_broker::{
    now_ms, Error, Ordering, Result, StartPosition, SubscriptionConfig, SubscriptionId, UnixMillis,
};
use serde::{Deserialize, Serialize};

use crate::buckets::{hex, keys_with_prefix, next_id, open_bucket, unhex};
use crate::topics::{stream_name, TopicMeta};
use crate::{dead_letters, nats_error, Options};

/// The KV bucket of subscription settings.
pub const SUBSCRIPTIONS_BUCKET: &str = "eventbus-subscriptions";
const NEXT_ID_KEY: &str = "next-id";

/// Leases a subscription may hold per partition when it does not order by
/// key. Each member's own bound (`max_in_flight`) is kept by its gateway.
const MAX_ACK_PENDING: i64 = 20_000;

/// A paused consumer is paused until this far ahead: in effect, until
/// resumed.
const PAUSED_FOR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A subscription as the cluster stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionMeta {
    pub id: u32,
    pub topic_id: u32,
    pub name: String,
    pub config: SubscriptionConfig,
    #[serde(default)]
    pub paused: bool,
    pub start_position: StartPosition,
    pub created_ms: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
}

impl SubscriptionMeta {
    pub fn subscription_id(&self) -> SubscriptionId {
        SubscriptionId(self.id)
    }

    /// The consumer's name on every stream of this subscription.
    pub fn consumer(&self) -> String {
        consumer_name(self.id)
    }
}

pub fn consumer_name(id: u32) -> String {
    format!("s{id}")
}

fn key_prefix(topic_id: u32) -> String {
    format!("s{topic_id}_")
}

fn key_of(topic_id: u32, name: &str) -> String {
    format!("{}{}", key_prefix(topic_id), hex(name))
}

/// The consumer of one partition (or of the redrive stream) for `meta`, as
/// it is created; updates change only what its settings change.
pub fn consumer_config(meta: &SubscriptionMeta, deliver_policy: DeliverPolicy) -> pull::Config {
    pull::Config {
        durable_name: Some(meta.consumer()),
        deliver_policy,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_millis(meta.config.ack_deadline_ms),
        max_deliver: -1,
        max_ack_pending: match meta.config.ordering {
            Ordering::Key => 1,
            Ordering::None => MAX_ACK_PENDING,
        },
        pause_until: meta
            .paused
            .then(|| time::OffsetDateTime::now_utc() + PAUSED_FOR),
        ..Default::default()
    }
}

/// The subscriptions: KV-backed, read fresh on every admin call (they
/// change through any gateway).
pub struct Subscriptions {
    js: jetstream::Context,
    kv: kv::Store,
    options: Arc<Options>,
}

impl Subscriptions {
    pub async fn open(js: jetstream::Context, options: Arc<Options>) -> Result<Subscriptions> {
        let kv = open_bucket(&js, SUBSCRIPTIONS_BUCKET, options.replicas).await?;
        Ok(Subscriptions { js, kv, options })
    }

    /// Subscription `name` of `topic`, with its KV revision.
    pub async fn get(&self, topic: &TopicMeta, name: &str) -> Result<(SubscriptionMeta, u64)> {
        let entry = self
            .kv
            .entry(key_of(topic.id, name))
            .await
            .map_err(|e| nats_error("reading subscription settings", e))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let meta = decode(&topic.name, name, &e.value)?;
                Ok((meta, e.revision))
            }
            _ => Err(Error::SubscriptionNotFound {
                topic: topic.name.clone(),
                subscription: name.to_string(),
            }),
        }
    }

    /// Every subscription of `topic`, sorted by name.
    pub async fn list(&self, topic: &TopicMeta) -> Result<Vec<SubscriptionMeta>> {
        let prefix = key_prefix(topic.id);
        let mut out = Vec::new();
        for key in keys_with_prefix(&self.kv, &prefix).await? {
            let Some(name) = key.strip_prefix(&prefix).and_then(unhex) else {
                continue;
            };
            match self.get(topic, &name).await {
                Ok((meta, _)) => out.push(meta),
                Err(Error::SubscriptionNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// How many subscriptions exist, on every topic.
    pub async fn count(&self) -> Result<usize> {
        Ok(keys_with_prefix(&self.kv, "s").await?.len())
    }

    pub async fn create(
        &self,
        topic: &TopicMeta,
        name: &str,
        config: SubscriptionConfig,
        start_position: StartPosition,
        creator: Option<String>,
    ) -> Result<SubscriptionMeta> {
        let meta = SubscriptionMeta {
            id: 0,
            topic_id: topic.id,
            name: name.to_string(),
            config,
            paused: false,
            start_position,
            created_ms: now_ms(),
            creator,
        };
        let deliver_policy = match start_position {
            StartPosition::Earliest => DeliverPolicy::All,
            StartPosition::Latest => DeliverPolicy::New,
        };
        self.create_as(topic, meta, |_| deliver_policy).await
    }

    /// Creates the subscription `meta` describes under a new id (its `id`
    /// and `topic_id` are set here), paused if it says so, its consumer on
    /// partition `p` starting where `deliver_policy(p)` says.
    pub async fn create_as(
        &self,
        topic: &TopicMeta,
        mut meta: SubscriptionMeta,
        deliver_policy: impl Fn(u32) -> DeliverPolicy,
    ) -> Result<SubscriptionMeta> {
        let name = meta.name.clone();
        if self.get(topic, &name).await.is_ok() {
            return Err(exists(topic, &name));
        }
        self.options
            .limits
            .check_subscription_count(self.count().await?)?;
        meta.id = next_id(&self.kv, SUBSCRIPTIONS_BUCKET, NEXT_ID_KEY).await?;
        meta.topic_id = topic.id;
        let made = self.make_consumers(topic, &meta, deliver_policy).await;
        let stored = match made {
            Ok(()) => self
                .kv
                .create(key_of(topic.id, &name), encode(&meta)?)
                .await
                .map_err(|e| {
                    if e.kind() == kv::CreateErrorKind::AlreadyExists {
                        exists(topic, &name)
                    } else {
                        nats_error("storing subscription settings", e)
                    }
                }),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            // Lost the name to another gateway, or failed half way: what
            // was made for this id belongs to nobody.
            self.remove_engine_state(topic, &meta).await;
            return Err(e);
        }
        tracing::info!(
            topic = topic.name,
            subscription = name,
            id = meta.id,
            "subscription created"
        );
        Ok(meta)
    }

    async fn make_consumers(
        &self,
        topic: &TopicMeta,
        meta: &SubscriptionMeta,
        deliver_policy: impl Fn(u32) -> DeliverPolicy,
    ) -> Result<()> {
        dead_letters::create_streams(&self.js, meta, self.options.replicas).await?;
        let redrive = dead_letters::redrive_stream(&self.js, meta.id).await?;
        redrive
            .create_consumer(consumer_config(meta, DeliverPolicy::All))
            .await
            .map_err(|e| nats_error("creating the redrive consumer", e))?;
        for p in 0..topic.partitions {
            let stream = self
                .js
                .get_stream(stream_name(topic.id, p))
                .await
                .map_err(|e| nats_error("opening a partition stream", e))?;
            stream
                .create_consumer(consumer_config(meta, deliver_policy(p)))
                .await
                .map_err(|e| nats_error("creating a partition consumer", e))?;
        }
        Ok(())
    }

    /// Changes the settings by compare-and-set (another gateway may change
    /// them at the same time), then applies them to the consumers.
    pub async fn update(
        &self,
        topic: &TopicMeta,
        name: &str,
        change: impl Fn(&mut SubscriptionMeta),
    ) -> Result<SubscriptionMeta> {
        for _ in 0..100 {
            let (mut meta, revision) = self.get(topic, name).await?;
            change(&mut meta);
            match self
                .kv
                .update(key_of(topic.id, name), encode(&meta)?, revision)
                .await
            {
                Ok(_) => {
                    self.apply_to_consumers(topic, &meta).await?;
                    return Ok(meta);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(nats_error("storing subscription settings", e)),
            }
        }
        Err(Error::Storage(
            "the subscription's settings stayed contended; retry".into(),
        ))
    }

    /// Puts ack wait, max ack pending and pause on every consumer of the
    /// subscription.
    async fn apply_to_consumers(&self, topic: &TopicMeta, meta: &SubscriptionMeta) -> Result<()> {
        let mut streams: Vec<String> = (0..topic.partitions)
            .map(|p| stream_name(topic.id, p))
            .collect();
        streams.push(dead_letters::redrive_stream_name(meta.id));
        for stream in streams {
            let stream = self
                .js
                .get_stream(&stream)
                .await
                .map_err(|e| nats_error("opening a stream", e))?;
            let info = stream
                .consumer_info(meta.consumer())
                .await
                .map_err(|e| nats_error("reading a consumer", e))?;
            let mut config = consumer_config(meta, info.config.deliver_policy);
            // Pausing goes through the pause API below; the update leaves
            // the consumer's pause as it is.
            config.pause_until = info.config.pause_until;
            stream
                .update_consumer(config)
                .await
                .map_err(|e| nats_error("updating a consumer", e))?;
            let paused = info.paused;
            if meta.paused && !paused {
                stream
                    .pause_consumer(
                        &meta.consumer(),
                        time::OffsetDateTime::now_utc() + PAUSED_FOR,
                    )
                    .await
                    .map_err(|e| nats_error("pausing a consumer", e))?;
            } else if !meta.paused && paused {
                stream
                    .resume_consumer(&meta.consumer())
                    .await
                    .map_err(|e| nats_error("resuming a consumer", e))?;
            }
        }
        Ok(())
    }

    pub async fn delete(&self, topic: &TopicMeta, name: &str) -> Result<()> {
        let (meta, _) = self.get(topic, name).await?;
        self.kv
            .purge(key_of(topic.id, name))
            .await
            .map_err(|e| nats_error("deleting subscription settings", e))?;
        self.remove_engine_state(topic, &meta).await;
        tracing::info!(
            topic = topic.name,
            subscription = name,
            "subscription deleted"
        );
        Ok(())
    }

    /// Deletes every subscription of a topic being deleted. Its consumers
    /// go with its streams; its entries and dead-letter streams go here.
    pub async fn delete_all(&self, topic: &TopicMeta) -> Result<()> {
        for meta in self.list(topic).await? {
            let _ = self.kv.purge(key_of(topic.id, &meta.name)).await;
            dead_letters::delete_streams(&self.js, meta.id).await;
        }
        Ok(())
    }

    /// Removes the consumers and streams of `meta`; what is already gone
    /// is fine, what fails is logged (it is orphaned, never reused: ids
    /// are not).
    async fn remove_engine_state(&self, topic: &TopicMeta, meta: &SubscriptionMeta) {
        for p in 0..topic.partitions {
            if let Ok(stream) = self.js.get_stream(stream_name(topic.id, p)).await {
                if let Err(e) = stream.delete_consumer(&meta.consumer()).await {
                    tracing::debug!(error = %e, "deleting a partition consumer");
                }
            }
        }
        dead_letters::delete_streams(&self.js, meta.id).await;
    }
}

fn exists(topic: &TopicMeta, name: &str) -> Error {
    Error::SubscriptionExists {
        topic: topic.name.clone(),
        subscription: name.to_string(),
    }
}

fn encode(meta: &SubscriptionMeta) -> Result<Bytes> {
    serde_json::to_vec(meta)
        .map(Bytes::from)
        .map_err(|e| Error::Storage(e.to_string()))
}

fn decode(topic: &str, name: &str, value: &[u8]) -> Result<SubscriptionMeta> {
    serde_json::from_slice(value).map_err(|e| Error::CorruptMetadata {
        location: format!("{SUBSCRIPTIONS_BUCKET}/{topic}/{name}"),
        reason: e.to_string(),
    })
}

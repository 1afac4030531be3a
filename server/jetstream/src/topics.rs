//! Topics on JetStream: one stream per partition, the topic's metadata in a
//! KV bucket, and a cache of it in the gateway.
//!
//! * Stream `EB_T<id>_P<p>` holds partition `p` of topic id `<id>` on the
//!   subject `eb.t<id>.p<p>`; offset = stream sequence - 1, dense because only
//!   the front is ever removed (retention), never a message in the middle
//!   (`deny_delete`).
//! * KV bucket `eventbus-topics`: key = `t_` + the topic name in hex (KV
//!   keys refuse names such as `a..b` or `a.` that topics allow), value =
//!   [`TopicMeta`] as JSON; key `next-id` is the id counter, advanced by
//!   compare-and-set, so ids are never reused even across gateways.
//! * Creation makes the streams first and the KV entry last (a create-only
//!   put): the entry is what makes a topic exist, so a topic is never seen
//!   half made, and two gateways creating one name cannot both win.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use eventbus_broker::{now_ms, Error, Result, Retention, TopicConfig, TopicId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::buckets::{hex, keys_with_prefix, next_id, open_bucket, unhex};
use crate::{nats_error, placement, Options};

/// The KV bucket of topic metadata.
pub const TOPICS_BUCKET: &str = "eventbus-topics";
/// The id counter's key (topic keys start with `t_`).
const NEXT_ID_KEY: &str = "next-id";
const TOPIC_KEY_PREFIX: &str = "t_";

/// The KV key of topic `name`.
fn key_of(name: &str) -> String {
    format!("{TOPIC_KEY_PREFIX}{}", hex(name))
}

/// The topic name of a KV key; None for other keys.
fn name_of(key: &str) -> Option<String> {
    unhex(key.strip_prefix(TOPIC_KEY_PREFIX)?)
}

/// A topic as the cluster stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: u32,
    pub name: String,
    pub partitions: u32,
    #[serde(default)]
    pub retention: Retention,
    pub created_ms: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
}

impl TopicMeta {
    pub fn topic_id(&self) -> TopicId {
        TopicId(self.id)
    }
}

/// Partition `p` of topic id `id`: its stream and its subject.
pub fn stream_name(id: u32, p: u32) -> String {
    format!("EB_T{id}_P{p}")
}

/// The partition whose stream [`stream_name`] named `name`, if it is one
/// of topic `id`'s `partitions`. Parsed, not formatted per partition: it
/// runs for every ack id a settle carries.
pub fn partition_of_stream(name: &str, id: u32, partitions: u32) -> Option<u32> {
    let (topic, partition) = name.strip_prefix("EB_T")?.split_once("_P")?;
    let p = partition.parse::<u32>().ok()?;
    (topic.parse::<u32>().ok()? == id && p < partitions).then_some(p)
}

pub fn subject(id: u32, p: u32) -> String {
    format!("eb.t{id}.p{p}")
}

/// The topics: KV-backed, cached per gateway.
pub struct Topics {
    js: jetstream::Context,
    kv: kv::Store,
    options: Arc<Options>,
    cache: ArcSwap<HashMap<String, Arc<TopicMeta>>>,
}

impl Topics {
    pub async fn open(js: jetstream::Context, options: Arc<Options>) -> Result<Topics> {
        let kv = open_bucket(&js, TOPICS_BUCKET, options.replicas).await?;
        Ok(Topics {
            js,
            kv,
            options,
            cache: ArcSwap::from_pointee(HashMap::new()),
        })
    }

    /// The topic named `name`, from the cache or the bucket.
    pub async fn get(&self, name: &str) -> Result<Arc<TopicMeta>> {
        if let Some(t) = self.cache.load().get(name) {
            return Ok(t.clone());
        }
        self.load(name).await
    }

    /// Reads `name` from the bucket, refreshing the cache (after another
    /// gateway deleted or recreated it).
    pub async fn load(&self, name: &str) -> Result<Arc<TopicMeta>> {
        let value = self
            .kv
            .get(key_of(name))
            .await
            .map_err(|e| nats_error("reading topic metadata", e))?;
        let Some(value) = value else {
            self.forget(name);
            return Err(Error::TopicNotFound(name.to_string()));
        };
        let meta: Arc<TopicMeta> = Arc::new(decode_meta(name, &value)?);
        self.cache.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(name.to_string(), meta.clone());
            m
        });
        Ok(meta)
    }

    pub fn forget(&self, name: &str) {
        if self.cache.load().contains_key(name) {
            self.cache.rcu(|m| {
                let mut m = HashMap::clone(m);
                m.remove(name);
                m
            });
        }
    }

    /// Every topic, sorted by name.
    pub async fn list(&self) -> Result<Vec<Arc<TopicMeta>>> {
        let keys = keys_with_prefix(&self.kv, TOPIC_KEY_PREFIX).await?;
        let mut out = Vec::new();
        for name in keys.iter().filter_map(|k| name_of(k)) {
            match self.load(&name).await {
                Ok(t) => out.push(t),
                // Deleted while listing.
                Err(Error::TopicNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn create(&self, name: &str, config: TopicConfig) -> Result<Arc<TopicMeta>> {
        if self.get(name).await.is_ok() {
            return Err(Error::TopicExists(name.to_string()));
        }
        let partitions = match config.partitions {
            0 => self.options.default_partitions,
            n => n,
        };
        let meta = TopicMeta {
            id: 0,
            name: name.to_string(),
            partitions,
            retention: config.retention,
            created_ms: now_ms(),
            creator: config.creator,
        };
        self.create_as(meta, &[]).await
    }

    /// Creates the topic `meta` describes under a new id (its `id` is
    /// ignored). Partition `p`'s stream starts at sequence
    /// `first_seqs[p]` when given (so that a topic moved here whose front
    /// retention removed keeps its offsets), else at 1.
    pub async fn create_as(
        &self,
        mut meta: TopicMeta,
        first_seqs: &[u64],
    ) -> Result<Arc<TopicMeta>> {
        let (name, partitions) = (meta.name.clone(), meta.partitions);
        let id = next_id(&self.kv, TOPICS_BUCKET, NEXT_ID_KEY).await?;
        meta.id = id;
        for p in 0..partitions {
            let mut config = self.stream_config(id, p, &meta.retention);
            config.first_sequence = first_seqs.get(p as usize).copied().filter(|&s| s > 1);
            placement::create_stream(&self.js, config, "creating a partition stream").await?;
        }
        let value =
            Bytes::from(serde_json::to_vec(&meta).map_err(|e| Error::Storage(e.to_string()))?);
        match self.kv.create(key_of(&name), value).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                // Another gateway won the name: our streams are orphans.
                self.delete_streams(id, partitions).await;
                return Err(Error::TopicExists(name));
            }
            Err(e) => {
                self.delete_streams(id, partitions).await;
                return Err(nats_error("storing topic metadata", e));
            }
        }
        tracing::info!(topic = name, id, partitions, "topic created");
        self.load(&name).await
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let meta = self.load(name).await?;
        self.kv
            .purge(key_of(name))
            .await
            .map_err(|e| nats_error("deleting topic metadata", e))?;
        self.forget(name);
        self.delete_streams(meta.id, meta.partitions).await;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Deletes a topic's partition streams; one that is already gone is fine.
    async fn delete_streams(&self, id: u32, partitions: u32) {
        for p in 0..partitions {
            if let Err(e) = self.js.delete_stream(stream_name(id, p)).await {
                tracing::warn!(stream = stream_name(id, p), error = %e, "deleting a partition stream failed; it is orphaned");
            }
        }
    }

    fn stream_config(&self, id: u32, p: u32, retention: &Retention) -> stream::Config {
        let max_age = retention
            .max_age_ms
            .map(Duration::from_millis)
            .unwrap_or_default();
        // JetStream refuses a duplicate window longer than max_age (a topic
        // keeping events for less than the dedup window could not be
        // created); a key older than max_age has no event left to double.
        let duplicate_window = match max_age.is_zero() {
            true => self.options.dedup_window,
            false => self.options.dedup_window.min(max_age),
        };
        stream::Config {
            name: stream_name(id, p),
            subjects: vec![subject(id, p)],
            storage: stream::StorageType::File,
            num_replicas: self.options.replicas,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age,
            max_bytes: retention
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            duplicate_window,
            allow_direct: true,
            allow_atomic_publish: true,
            // Offsets stay dense: nothing is removed but from the front.
            deny_delete: true,
            ..Default::default()
        }
    }

    /// The partition's stream, with its info.
    pub async fn stream(&self, id: u32, p: u32) -> Result<stream::Stream> {
        self.js
            .get_stream(stream_name(id, p))
            .await
            .map_err(|e| nats_error("opening a partition stream", e))
    }
}

fn decode_meta(name: &str, value: &[u8]) -> Result<TopicMeta> {
    serde_json::from_slice(value).map_err(|e| Error::CorruptMetadata {
        location: format!("{TOPICS_BUCKET}/{name}"),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_keys_round_trip_and_other_keys_are_not_topics() {
        for name in ["orders", "a..b", "acme/orders"] {
            assert_eq!(name_of(&key_of(name)).as_deref(), Some(name));
        }
        assert_eq!(name_of(NEXT_ID_KEY), None);
    }

    #[test]
    fn partition_streams_parse_back_only_for_their_topic() {
        assert_eq!(partition_of_stream(&stream_name(7, 2), 7, 3), Some(2));
        assert_eq!(partition_of_stream(&stream_name(7, 3), 7, 3), None);
        assert_eq!(partition_of_stream(&stream_name(8, 0), 7, 3), None);
        assert_eq!(partition_of_stream("EB_D7", 7, 3), None);
        assert_eq!(partition_of_stream("EB_T7_Px", 7, 3), None);
    }
}

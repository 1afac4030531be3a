//! Topic and subscription metadata: create and delete topics, allocate
//! subscription ids, load a topic's subscriptions. Every change is one synced
//! write through the writer, serialised by the admin lock.

use std::collections::HashMap;
use std::sync::Arc;

use rocksdb::IteratorMode;
use tokio::sync::oneshot;

use crate::error::{storage, Error, Result};
use crate::keys::{self, Cf};
use crate::meta::{now_ms, SubscriptionMeta, TopicMeta};
use crate::names::validate_topic_name;
use crate::options::MAX_PARTITIONS;
use crate::topic::{PartitionBounds, TopicConfig, TopicState};
use crate::types::TopicId;
use crate::writer::{Command, Update};

use super::{corrupt_meta, Log};

impl Log {
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<TopicState>> {
        validate_topic_name(name)?;
        let partitions = match config.partitions {
            0 => self.inner.options.default_partitions,
            n if n > MAX_PARTITIONS => {
                return Err(Error::invalid(
                    "partitions",
                    format!("{n} is too many; the maximum is {MAX_PARTITIONS}"),
                ))
            }
            n => n,
        };
        let mut ids = self.inner.admin.lock().await;
        if self.topic(name).is_some() {
            return Err(Error::TopicExists(name.to_string()));
        }
        self.inner
            .options
            .limits
            .check_topic_count(self.inner.topics.load().len())?;
        if ids.next_topic == u32::MAX {
            return Err(Error::ResourceExhausted("topic ids exhausted".into()));
        }
        let meta = TopicMeta {
            id: TopicId(ids.next_topic),
            name: name.to_string(),
            partitions,
            retention: config.retention,
            created_ms: now_ms(),
            creator: config.creator,
        };
        let mut next = *ids;
        next.next_topic += 1;
        self.write(
            vec![Update::PutTopic(meta.clone()), Update::PutIds(next)],
            true,
        )
        .await?;
        *ids = next;
        let state = Arc::new(TopicState::new(
            meta,
            vec![PartitionBounds::default(); partitions as usize],
            &self.inner.hot_budget,
        ));
        self.inner.topics.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(name.to_string(), state.clone());
            m
        });
        tracing::info!(topic = name, partitions, "topic created");
        Ok(state)
    }

    /// Deletes a topic, its records, its subscriptions' metadata and state, and
    /// `extra` ops the caller adds. Returns the removed topic.
    pub async fn delete_topic(
        &self,
        name: &str,
        subscriptions: &[SubscriptionMeta],
    ) -> Result<Arc<TopicState>> {
        validate_topic_name(name)?;
        let _ids = self.inner.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| Error::TopicNotFound(name.to_string()))?;
        let mut updates = vec![Update::DeleteTopic {
            id: topic.id(),
            name: name.to_string(),
        }];
        updates.extend(subscriptions.iter().map(Update::delete_subscription));
        let (reply, rx) = oneshot::channel();
        self.send(Command::DeleteTopic {
            topic: topic.clone(),
            updates,
            reply,
        })
        .await?;
        rx.await.map_err(|_| self.closed())??;
        self.inner.topics.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(name);
            m
        });
        tracing::info!(topic = name, "topic deleted");
        Ok(topic)
    }

    /// Allocates a subscription id and persists `meta` (with that id) plus
    /// the updates `extra` returns for it, in one synced batch.
    pub(crate) async fn create_subscription_meta(
        &self,
        mut meta: SubscriptionMeta,
        extra: impl FnOnce(&SubscriptionMeta) -> Vec<Update>,
    ) -> Result<SubscriptionMeta> {
        let mut ids = self.inner.admin.lock().await;
        if ids.next_subscription == u32::MAX {
            return Err(Error::ResourceExhausted(
                "subscription ids exhausted".into(),
            ));
        }
        meta.id = crate::types::SubscriptionId(ids.next_subscription);
        let mut next = *ids;
        next.next_subscription += 1;
        let mut updates = vec![Update::PutSubscription(meta.clone()), Update::PutIds(next)];
        updates.extend(extra(&meta));
        self.write(updates, true).await?;
        *ids = next;
        Ok(meta)
    }

    /// Every stored subscription of a topic. Blocking.
    pub(crate) fn load_subscriptions(&self, topic: TopicId) -> Result<Vec<SubscriptionMeta>> {
        let cf = self.cf(Cf::Meta);
        let prefix = keys::subscription_meta_prefix(topic);
        let mut out = Vec::new();
        for item in self
            .inner
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, rocksdb::Direction::Forward))
        {
            let (k, v) = item.map_err(storage)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let meta: SubscriptionMeta = serde_json::from_slice(&v).map_err(|e| {
                corrupt_meta(
                    &format!(
                        "subscription {:?}",
                        String::from_utf8_lossy(&k[prefix.len()..])
                    ),
                    e.to_string(),
                )
            })?;
            out.push(meta);
        }
        Ok(out)
    }
}

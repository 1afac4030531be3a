//! Topic and subscription metadata, persisted as JSON in the `meta` column family.
//!
//! Metadata changes rarely, so readability and forward compatibility (new fields
//! with serde defaults) matter more than compactness here.

use serde::{Deserialize, Serialize};

use crate::types::{StartPosition, SubscriptionId, TopicId, UnixMillis};

/// A topic's retention limits. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retention {
    pub max_age_ms: Option<u64>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: TopicId,
    pub name: String,
    pub partitions: u32,
    #[serde(default)]
    pub retention: Retention,
    pub created_ms: UnixMillis,
}

/// Delivery order guarantee of a subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ordering {
    /// No ordering between deliveries; maximum parallelism.
    #[default]
    None,
    /// At most one event per key in flight at a time.
    Key,
}

/// One condition on an event attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttributeCondition {
    Eq { key: String, value: String },
    Ne { key: String, value: String },
    In { key: String, values: Vec<String> },
    Exists { key: String, exists: bool },
    Prefix { key: String, prefix: String },
}

/// A subscription's event filter. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub types: Vec<String>,
    pub attributes: Vec<AttributeCondition>,
}

/// User-settable subscription settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscriptionConfig {
    pub ack_deadline_ms: u64,
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// 0 means unlimited.
    pub max_delivery_attempts: u32,
    pub filter: Filter,
    pub ordering: Ordering,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        SubscriptionConfig {
            ack_deadline_ms: 30_000,
            // No retry policy: redeliver at once.
            min_backoff_ms: 0,
            max_backoff_ms: 0,
            max_delivery_attempts: 5,
            filter: Filter::default(),
            ordering: Ordering::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionMeta {
    pub id: SubscriptionId,
    pub topic_id: TopicId,
    pub name: String,
    pub config: SubscriptionConfig,
    #[serde(default)]
    pub paused: bool,
    pub start_position: StartPosition,
    pub created_ms: UnixMillis,
}

// Ids serialize as plain numbers.
impl Serialize for TopicId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}
impl<'de> Deserialize<'de> for TopicId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(TopicId)
    }
}
impl Serialize for SubscriptionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}
impl<'de> Deserialize<'de> for SubscriptionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(SubscriptionId)
    }
}

pub fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(crate::types::saturating_millis)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_meta_round_trips_and_tolerates_missing_fields() {
        let meta = SubscriptionMeta {
            id: SubscriptionId(3),
            topic_id: TopicId(1),
            name: "billing".into(),
            config: SubscriptionConfig::default(),
            paused: true,
            start_position: StartPosition::Latest,
            created_ms: 5,
        };
        let json = serde_json::to_vec(&meta).unwrap();
        assert_eq!(
            serde_json::from_slice::<SubscriptionMeta>(&json).unwrap(),
            meta
        );
        // A record written before `paused` and most config existed still loads.
        let old = br#"{"id":3,"topic_id":1,"name":"b","config":{"ack_deadline_ms":5000},"start_position":"earliest","created_ms":1}"#;
        let m: SubscriptionMeta = serde_json::from_slice(old).unwrap();
        assert_eq!(m.config.ack_deadline_ms, 5000);
        assert_eq!(m.config.max_delivery_attempts, 5);
        assert!(!m.paused);
    }
}

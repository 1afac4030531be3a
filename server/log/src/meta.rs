//! Topic and subscription metadata, persisted as JSON in the `meta` column family.
//!
//! Metadata changes rarely, so readability and forward compatibility (new fields
//! with serde defaults) matter more than compactness here.

use serde::{Deserialize, Serialize};

pub use eventbus_broker::subscription::{Ordering, SubscriptionConfig};
pub use eventbus_broker::topic::Retention;
pub use eventbus_broker::types::now_ms;

use crate::types::{StartPosition, SubscriptionId, TopicId, UnixMillis};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: TopicId,
    pub name: String,
    pub partitions: u32,
    #[serde(default)]
    pub retention: Retention,
    pub created_ms: UnixMillis,
    /// The principal that created it; absent in records older than
    /// creation quotas, and for topics nobody in particular created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
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
    /// As [`TopicMeta::creator`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
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
            creator: Some("svc".into()),
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

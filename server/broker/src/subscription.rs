//! Subscriptions as the contract sees them: their settings, the changes an
//! admin can make, where a seek moves them, and what they report.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{StartPosition, SubscriptionId, UnixMillis};

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

/// A retry policy as requested; unset bounds take 1 s and 60 s.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryPolicy {
    pub min_backoff: Option<Duration>,
    pub max_backoff: Option<Duration>,
}

/// A change of subscription settings: `None` leaves a field as it is; an inner
/// `None` resets it to its default.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionUpdate {
    pub ack_deadline: Option<Option<Duration>>,
    pub retry_policy: Option<Option<RetryPolicy>>,
    pub max_delivery_attempts: Option<Option<u32>>,
    pub filter: Option<Filter>,
    pub ordering: Option<Ordering>,
}

/// Where SeekSubscription moves a subscription.
#[derive(Debug, Clone)]
pub enum SeekTarget {
    Earliest,
    Latest,
    /// The first event published at or after this time, per partition.
    Time(UnixMillis),
    /// Explicit (partition, offset) pairs; other partitions stay where they are.
    Offsets(Vec<(u32, u64)>),
}

/// Settings for a new subscription; `None` takes the default.
#[derive(Debug, Clone, Default)]
pub struct NewSubscription {
    pub start_position: StartPosition,
    pub ack_deadline: Option<Duration>,
    /// `None`: redeliver at once after a failure.
    pub retry_policy: Option<RetryPolicy>,
    pub max_delivery_attempts: Option<u32>,
    pub filter: Filter,
    pub ordering: Ordering,
    /// The principal creating it (see [`crate::TopicConfig::creator`]).
    pub creator: Option<String>,
}

/// A subscription at one moment: its settings and its statistics.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    pub topic: String,
    pub name: String,
    /// Unique per creation: a subscription deleted and created again under
    /// the same name gets a new id (counters keyed by it start over).
    pub id: SubscriptionId,
    pub config: SubscriptionConfig,
    pub paused: bool,
    pub start_position: StartPosition,
    pub created_ms: UnixMillis,
    /// The principal that created it, if one did.
    pub creator: Option<String>,
    pub stats: SubscriptionStats,
}

/// Counters and gauges of one subscription. Counters count since the
/// subscription's delivery engine started (a restart starts them over).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Events not yet settled (acked, dead-lettered or filtered).
    pub backlog: u64,
    pub in_flight: u64,
    /// Publish time of the oldest unsettled event.
    pub oldest_unacked_ms: Option<UnixMillis>,
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub redelivered: u64,
    pub expired: u64,
    pub dead_lettered: u64,
    /// Events settled without delivery because they did not match the filter.
    pub filtered: u64,
    /// Events removed by retention before this subscription settled them.
    pub lost_to_retention: u64,
    /// Entries in the dead-letter queue now, and when the oldest was added.
    pub dead_letter_count: u64,
    pub oldest_dead_letter_ms: Option<UnixMillis>,
    pub members: u32,
}

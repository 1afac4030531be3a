//! What [`Admin`](crate::Admin) creates and changes: topic settings,
//! subscription settings and updates, filters and start positions, as plain
//! Rust values. Converting them to the wire happens here and nowhere else.

use std::time::Duration;

use crate::backoff::proto_duration;
use crate::v1;

/// Settings for [`Admin::create_topic_with`](crate::Admin::create_topic_with).
/// Unset fields take the server's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicSettings {
    /// Number of partitions, 1-1024, fixed for the topic's life. 0 means the
    /// server's `default-partitions`.
    pub partitions: u32,
    /// Remove events older than this. `None`: no age limit.
    pub retention_max_age: Option<Duration>,
    /// Remove a partition's oldest events once it stores more than this many
    /// bytes. `None`: no size limit.
    pub retention_max_bytes: Option<u64>,
}

impl TopicSettings {
    pub(crate) fn into_request(self, topic: &str) -> v1::CreateTopicRequest {
        let retention = (self.retention_max_age.is_some() || self.retention_max_bytes.is_some())
            .then(|| v1::Retention {
                max_age: self.retention_max_age.map(proto_duration),
                max_bytes: self.retention_max_bytes.unwrap_or(0),
            });
        v1::CreateTopicRequest {
            topic: topic.into(),
            partitions: self.partitions,
            retention,
        }
    }
}

/// Where a new subscription starts reading its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The earliest retained event of each partition (the server's default).
    Earliest,
    /// After the last event of each partition: only events published from
    /// now on are delivered.
    Latest,
}

/// Redelivery backoff of a subscription after a nack or an expired ack
/// deadline: exponential from `min` to `max`, with jitter. An unset bound
/// takes the server's default (1 s for `min`; 60 s, or `min` if longer, for
/// `max`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedeliveryBackoff {
    /// Delay before the first redelivery.
    pub min: Option<Duration>,
    /// Upper bound of the delay; at most 10 min.
    pub max: Option<Duration>,
}

impl From<(Duration, Duration)> for RedeliveryBackoff {
    /// `(min, max)`.
    fn from((min, max): (Duration, Duration)) -> Self {
        RedeliveryBackoff {
            min: Some(min),
            max: Some(max),
        }
    }
}

impl RedeliveryBackoff {
    fn to_proto(self) -> v1::RetryPolicy {
        v1::RetryPolicy {
            min_backoff: self.min.map(proto_duration),
            max_backoff: self.max.map(proto_duration),
        }
    }
}

/// A condition on one event attribute, for a subscription's filter. Build it
/// with [`AttributeCondition::equals`] and its siblings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeCondition {
    /// The attribute tested; must not be empty.
    pub key: String,
    /// The test applied to its value.
    pub test: AttributeTest,
}

/// The test of an [`AttributeCondition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeTest {
    /// Present and equal to this value.
    Equals(String),
    /// Absent, or different from this value.
    NotEquals(String),
    /// Present and equal to one of these values (an empty list matches
    /// nothing).
    OneOf(Vec<String>),
    /// Present, with any value.
    Present,
    /// Absent.
    Absent,
    /// Present and starting with this prefix (case-sensitive).
    Prefix(String),
}

impl AttributeCondition {
    /// `key` is present and equal to `value`.
    pub fn equals(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(key, AttributeTest::Equals(value.into()))
    }

    /// `key` is absent or differs from `value`.
    pub fn not_equals(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(key, AttributeTest::NotEquals(value.into()))
    }

    /// `key` is present and equal to one of `values`.
    pub fn one_of<S: Into<String>>(
        key: impl Into<String>,
        values: impl IntoIterator<Item = S>,
    ) -> Self {
        Self::new(
            key,
            AttributeTest::OneOf(values.into_iter().map(Into::into).collect()),
        )
    }

    /// `key` is present, with any value.
    pub fn present(key: impl Into<String>) -> Self {
        Self::new(key, AttributeTest::Present)
    }

    /// `key` is absent.
    pub fn absent(key: impl Into<String>) -> Self {
        Self::new(key, AttributeTest::Absent)
    }

    /// `key` is present and starts with `prefix`.
    pub fn prefix(key: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self::new(key, AttributeTest::Prefix(prefix.into()))
    }

    fn new(key: impl Into<String>, test: AttributeTest) -> Self {
        AttributeCondition {
            key: key.into(),
            test,
        }
    }

    fn to_proto(&self) -> v1::AttributeCondition {
        use v1::attribute_condition::Condition;
        let condition = match &self.test {
            AttributeTest::Equals(v) => Condition::Eq(v.clone()),
            AttributeTest::NotEquals(v) => Condition::Ne(v.clone()),
            AttributeTest::OneOf(values) => Condition::In(v1::StringList {
                values: values.clone(),
            }),
            AttributeTest::Present => Condition::Exists(true),
            AttributeTest::Absent => Condition::Exists(false),
            AttributeTest::Prefix(p) => Condition::Prefix(p.clone()),
        };
        v1::AttributeCondition {
            key: self.key.clone(),
            condition: Some(condition),
        }
    }
}

/// The wire filter: unset when it would match every event.
fn filter(types: &[String], attributes: &[AttributeCondition]) -> Option<v1::Filter> {
    (!types.is_empty() || !attributes.is_empty()).then(|| v1::Filter {
        types: types.to_vec(),
        attributes: attributes
            .iter()
            .map(AttributeCondition::to_proto)
            .collect(),
    })
}

fn ordering(ordered_by_key: bool) -> i32 {
    if ordered_by_key {
        v1::Ordering::Key as i32
    } else {
        v1::Ordering::None as i32
    }
}

/// Settings for [`Admin::create_subscription`](crate::Admin::create_subscription).
/// Unset fields take the server's defaults (ack deadline 30 s, 5 attempts,
/// redeliver at once, start at the earliest retained event).
#[derive(Clone, Debug, Default)]
pub struct SubscriptionSettings {
    /// Lease length; 1 s to 10 min.
    pub ack_deadline: Option<Duration>,
    /// Redelivery backoff. `None`: redeliver at once.
    pub retry_backoff: Option<RedeliveryBackoff>,
    /// Deliveries before an event is dead-lettered; 0 means unlimited.
    pub max_delivery_attempts: Option<u32>,
    /// Only deliver events whose type matches one of these NATS-style
    /// patterns (`order.*`, `order.>`). Empty: any type.
    pub event_types: Vec<String>,
    /// Only deliver events for which all of these attribute conditions hold.
    pub attributes: Vec<AttributeCondition>,
    /// At most one event per key in flight.
    pub ordered_by_key: bool,
    /// Where delivery starts. `None`: the server's default, the earliest
    /// retained event.
    pub start: Option<StartPosition>,
    /// Same as `start: Some(StartPosition::Earliest)`; ignored when `start`
    /// is set.
    pub from_earliest: bool,
}

impl SubscriptionSettings {
    pub(crate) fn into_request(self, topic: &str, name: &str) -> v1::CreateSubscriptionRequest {
        let start = match self.start {
            Some(StartPosition::Earliest) => v1::StartPosition::Earliest,
            Some(StartPosition::Latest) => v1::StartPosition::Latest,
            None if self.from_earliest => v1::StartPosition::Earliest,
            None => v1::StartPosition::Unspecified,
        };
        v1::CreateSubscriptionRequest {
            topic: topic.into(),
            subscription: name.into(),
            start_position: start as i32,
            ack_deadline: self.ack_deadline.map(proto_duration),
            retry_policy: self.retry_backoff.map(RedeliveryBackoff::to_proto),
            max_delivery_attempts: self.max_delivery_attempts,
            filter: filter(&self.event_types, &self.attributes),
            ordering: ordering(self.ordered_by_key),
        }
    }
}

/// Changes for [`Admin::update_subscription`](crate::Admin::update_subscription):
/// only the settings named by a call on it change; the others keep their
/// values. Its cursor, leases and dead letters are not touched.
///
/// ```no_run
/// # async fn demo(admin: eventbus::Admin) -> eventbus::Result<()> {
/// use std::time::Duration;
/// use eventbus::SubscriptionUpdate;
///
/// admin
///     .update_subscription(
///         "orders",
///         "billing",
///         SubscriptionUpdate::new()
///             .ack_deadline(Duration::from_secs(60))
///             .max_delivery_attempts(10),
///     )
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct SubscriptionUpdate {
    request: v1::UpdateSubscriptionRequest,
    paths: Vec<&'static str>,
}

impl SubscriptionUpdate {
    /// No changes yet. Sending an update without any returns
    /// INVALID_ARGUMENT.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new lease length, 1 s to 10 min.
    pub fn ack_deadline(mut self, deadline: Duration) -> Self {
        self.request.ack_deadline = Some(proto_duration(deadline));
        self.touch("ack_deadline")
    }

    /// A new redelivery backoff; `None` redelivers at once.
    pub fn retry_backoff(mut self, backoff: Option<RedeliveryBackoff>) -> Self {
        self.request.retry_policy = backoff.map(RedeliveryBackoff::to_proto);
        self.touch("retry_policy")
    }

    /// A new number of deliveries before an event is dead-lettered; 0 means
    /// unlimited.
    pub fn max_delivery_attempts(mut self, attempts: u32) -> Self {
        self.request.max_delivery_attempts = Some(attempts);
        self.touch("max_delivery_attempts")
    }

    /// A new filter, for events not yet delivered: event type patterns (any
    /// may match; empty means any type) and attribute conditions (all must
    /// hold). Both empty removes the filter.
    pub fn filter(mut self, event_types: Vec<String>, attributes: Vec<AttributeCondition>) -> Self {
        self.request.filter = filter(&event_types, &attributes);
        self.touch("filter")
    }

    /// A new ordering guarantee: `true` keeps at most one event per key in
    /// flight.
    pub fn ordered_by_key(mut self, ordered: bool) -> Self {
        self.request.ordering = ordering(ordered);
        self.touch("ordering")
    }

    fn touch(mut self, path: &'static str) -> Self {
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
        self
    }

    pub(crate) fn into_request(self, topic: &str, name: &str) -> v1::UpdateSubscriptionRequest {
        v1::UpdateSubscriptionRequest {
            topic: topic.into(),
            subscription: name.into(),
            update_mask: Some(prost_types::FieldMask {
                paths: self.paths.into_iter().map(String::from).collect(),
            }),
            ..self.request
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_start_wins_over_from_earliest() {
        let settings = SubscriptionSettings {
            start: Some(StartPosition::Latest),
            from_earliest: true,
            ..Default::default()
        };
        let req = settings.into_request("t", "s");
        assert_eq!(req.start_position, v1::StartPosition::Latest as i32);
        let req = SubscriptionSettings::default().into_request("t", "s");
        assert_eq!(req.start_position, v1::StartPosition::Unspecified as i32);
        assert_eq!(req.filter, None);
    }

    #[test]
    fn filters_carry_types_and_attribute_conditions() {
        let settings = SubscriptionSettings {
            attributes: vec![
                AttributeCondition::equals("region", "eu"),
                AttributeCondition::absent("test"),
            ],
            ..Default::default()
        };
        let f = settings.into_request("t", "s").filter.unwrap();
        assert!(f.types.is_empty());
        use v1::attribute_condition::Condition;
        assert_eq!(
            f.attributes
                .iter()
                .map(|c| (c.key.as_str(), c.condition.clone().unwrap()))
                .collect::<Vec<_>>(),
            [
                ("region", Condition::Eq("eu".into())),
                ("test", Condition::Exists(false))
            ]
        );
    }

    #[test]
    fn an_update_names_each_changed_field_once() {
        let req = SubscriptionUpdate::new()
            .max_delivery_attempts(3)
            .retry_backoff(None)
            .max_delivery_attempts(4)
            .into_request("t", "s");
        assert_eq!(req.max_delivery_attempts, Some(4));
        assert_eq!(req.retry_policy, None);
        assert_eq!(
            req.update_mask.unwrap().paths,
            ["max_delivery_attempts", "retry_policy"]
        );
    }

    #[test]
    fn retention_is_sent_only_when_limited() {
        let req = TopicSettings::default().into_request("t");
        assert_eq!(req.retention, None);
        let req = TopicSettings {
            retention_max_bytes: Some(10),
            ..Default::default()
        }
        .into_request("t");
        assert_eq!(
            req.retention,
            Some(v1::Retention {
                max_age: None,
                max_bytes: 10
            })
        );
    }
}

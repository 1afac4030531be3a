//! [`Limits`]: the bound on every size a client controls, and the checks.
//!
//! A request over a bound is refused with [`Error::InvalidArgument`] naming the
//! field; a server-wide count at its cap with [`Error::LimitReached`]. Every
//! message names the limit's config key, so an operator knows what to raise
//! and a client knows what to split.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::filter::validate_type_pattern;
use crate::subscription::{AttributeCondition, Filter};
use crate::types::NewEvent;

/// Bounds on every size a client controls, each checked as early as possible:
/// counts on the wire before the request is decoded where one wire byte could
/// cost hundreds of heap bytes, the rest before anything is created or
/// written. Every field is a server config key (its name in kebab-case), and
/// every error message names that key. Requests over a bound are refused
/// with INVALID_ARGUMENT; the server-wide counts with RESOURCE_EXHAUSTED.
///
/// What each bound covers, and why its default, is documented once, on the
/// config key (`server/src/config.rs`) and in ARCHITECTURE.md's Limits table;
/// the values are here, in [`Limits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_events_per_publish: usize,
    pub max_attributes_per_event: usize,
    pub max_attribute_bytes: usize,
    pub max_key_bytes: usize,
    pub max_type_bytes: usize,
    pub max_content_type_bytes: usize,
    pub max_idempotency_key_bytes: usize,
    pub max_filter_patterns: usize,
    /// Also the values of one `in` condition.
    pub max_filter_conditions: usize,
    pub max_filter_bytes: usize,
    pub max_ack_ids_per_call: usize,
    pub max_reason_bytes: usize,
    /// Also the dead-letter `ids` of one Purge or Redrive.
    pub max_page_size: usize,
    pub max_topics: usize,
    pub max_subscriptions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // NATS JetStream's limit for one atomic batch: a cluster mode maps
            // one publish onto one batch.
            max_events_per_publish: 1000,
            max_attributes_per_event: 100,
            max_attribute_bytes: 64 * 1024,
            max_key_bytes: 1024,
            max_type_bytes: 256,
            max_content_type_bytes: 256,
            max_idempotency_key_bytes: 256,
            max_filter_patterns: 100,
            max_filter_conditions: 100,
            max_filter_bytes: 16 * 1024,
            max_ack_ids_per_call: 1000,
            max_reason_bytes: 1024,
            max_page_size: 1000,
            max_topics: 10_000,
            max_subscriptions: 10_000,
        }
    }
}

/// Page size of a List call that asks for 0.
const DEFAULT_PAGE_SIZE: usize = 100;

/// INVALID_ARGUMENT on `field`: `what`, then the limit and its config key.
fn over(field: &'static str, what: String, max: usize, key: &'static str) -> Error {
    Error::invalid(field, format!("{what}; the limit is {max} ({key})"))
}

impl Limits {
    /// The error for a request over a limit: INVALID_ARGUMENT on `field`,
    /// saying `what` and naming the limit `max` and its config `key`. For
    /// checks made outside this module (on the wire, before decoding).
    pub fn exceeded(field: &'static str, what: String, max: usize, key: &'static str) -> Error {
        over(field, what, max, key)
    }

    /// The number of events in one Publish.
    pub fn check_publish_count(&self, n: usize) -> Result<()> {
        let max = self.max_events_per_publish;
        if n > max {
            return Err(over(
                "events",
                format!("{n} events in one Publish; split the batch"),
                max,
                "max-events-per-publish",
            ));
        }
        Ok(())
    }

    /// The sizes of event `i` of a Publish that a client sets (the encoded
    /// size as a whole is `max-event-bytes`, checked when it is encoded).
    pub fn check_event(&self, i: usize, ev: &NewEvent) -> Result<()> {
        for (field, value, max, key) in [
            ("events.key", &ev.key, self.max_key_bytes, "max-key-bytes"),
            (
                "events.type",
                &ev.event_type,
                self.max_type_bytes,
                "max-type-bytes",
            ),
            (
                "events.content_type",
                &ev.content_type,
                self.max_content_type_bytes,
                "max-content-type-bytes",
            ),
            (
                "events.idempotency_key",
                &ev.idempotency_key,
                self.max_idempotency_key_bytes,
                "max-idempotency-key-bytes",
            ),
        ] {
            if value.len() > max {
                let name = field.trim_start_matches("events.");
                return Err(over(
                    field,
                    format!("event {i}: {name} is {} bytes", value.len()),
                    max,
                    key,
                ));
            }
        }
        let n = ev.attributes.len();
        if n > self.max_attributes_per_event {
            return Err(over(
                "events.attributes",
                format!("event {i} has {n} attributes"),
                self.max_attributes_per_event,
                "max-attributes-per-event",
            ));
        }
        if ev.attributes.keys().any(String::is_empty) {
            return Err(Error::invalid(
                "events.attributes",
                format!("event {i} has an attribute with an empty key; keys must be non-empty"),
            ));
        }
        let bytes: usize = ev.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > self.max_attribute_bytes {
            return Err(over(
                "events.attributes",
                format!("event {i} has {bytes} bytes of attribute keys and values"),
                self.max_attribute_bytes,
                "max-attribute-bytes",
            ));
        }
        Ok(())
    }

    /// The number of ack ids in one Ack, Nack or ModifyAckDeadline call.
    pub fn check_ack_ids(&self, n: usize) -> Result<()> {
        if n > self.max_ack_ids_per_call {
            return Err(over(
                "ack_ids",
                format!("{n} ack ids in one call; split them over several calls"),
                self.max_ack_ids_per_call,
                "max-ack-ids-per-call",
            ));
        }
        Ok(())
    }

    /// A settle call: at least one ack id, not too many, and a reason that
    /// fits. Every backend checks the same.
    pub fn check_settle(&self, op: &crate::SettleOp, ack_ids: usize) -> Result<()> {
        if ack_ids == 0 {
            return Err(Error::invalid(
                "ack_ids",
                "must contain at least one ack id",
            ));
        }
        self.check_ack_ids(ack_ids)?;
        if let crate::SettleOp::Nack { reason, .. } | crate::SettleOp::DeadLetter { reason } = op {
            self.check_reason(reason)?;
        }
        Ok(())
    }

    /// A Nack reason, which is stored with the dead letter it may become.
    pub fn check_reason(&self, reason: &str) -> Result<()> {
        if reason.len() > self.max_reason_bytes {
            return Err(over(
                "reason",
                format!("reason is {} bytes", reason.len()),
                self.max_reason_bytes,
                "max-reason-bytes",
            ));
        }
        Ok(())
    }

    /// Dead-letter ids named in one Purge or Redrive call.
    pub fn check_dead_letter_ids(&self, n: usize) -> Result<()> {
        if n > self.max_page_size {
            return Err(over(
                "ids",
                format!(
                    "{n} dead-letter ids in one call; send one page of ListDeadLetters at a time"
                ),
                self.max_page_size,
                "max-page-size",
            ));
        }
        Ok(())
    }

    /// Type patterns: their count and each one's syntax. Returns their bytes,
    /// which count towards the filter's [`Self::check_filter_bytes`].
    pub fn check_type_patterns(&self, field: &'static str, patterns: &[String]) -> Result<usize> {
        if patterns.len() > self.max_filter_patterns {
            return Err(over(
                field,
                format!("{} type patterns", patterns.len()),
                self.max_filter_patterns,
                "max-filter-patterns",
            ));
        }
        patterns
            .iter()
            .try_for_each(|p| validate_type_pattern(field, p))?;
        Ok(patterns.iter().map(String::len).sum())
    }

    /// The bytes of one filter's patterns, keys and values.
    pub fn check_filter_bytes(&self, field: &'static str, bytes: usize) -> Result<()> {
        if bytes > self.max_filter_bytes {
            return Err(over(
                field,
                format!("{bytes} bytes of patterns, keys and values"),
                self.max_filter_bytes,
                "max-filter-bytes",
            ));
        }
        Ok(())
    }

    /// A subscription filter: patterns and conditions, in count and bytes.
    pub fn check_filter(&self, f: &Filter) -> Result<()> {
        let max = self.max_filter_conditions;
        if f.attributes.len() > max {
            return Err(over(
                "filter.attributes",
                format!("{} attribute conditions", f.attributes.len()),
                max,
                "max-filter-conditions",
            ));
        }
        let mut bytes = 0;
        for c in &f.attributes {
            if c.key().is_empty() {
                return Err(Error::invalid(
                    "filter.attributes",
                    "every condition needs a non-empty key",
                ));
            }
            bytes += c.key().len();
            match c {
                AttributeCondition::Eq { value, .. } | AttributeCondition::Ne { value, .. } => {
                    bytes += value.len()
                }
                AttributeCondition::Prefix { prefix, .. } => bytes += prefix.len(),
                AttributeCondition::Exists { .. } => {}
                AttributeCondition::In { key, values } => {
                    if values.len() > max {
                        return Err(over(
                            "filter.attributes",
                            format!(
                                "the `in` condition on {key:?} lists {} values",
                                values.len()
                            ),
                            max,
                            "max-filter-conditions",
                        ));
                    }
                    bytes += values.iter().map(String::len).sum::<usize>();
                }
            }
        }
        bytes += self.check_type_patterns("filter.types", &f.types)?;
        self.check_filter_bytes("filter", bytes)
    }

    /// The page size of a List call: 0 means the default (100, or the limit
    /// when that is lower); larger values are capped to `max-page-size`.
    pub fn page_size(&self, requested: u32) -> usize {
        match requested as usize {
            0 => DEFAULT_PAGE_SIZE.min(self.max_page_size),
            n => n.min(self.max_page_size),
        }
    }

    /// Whether one more topic fits, with `existing` topics on the server.
    pub fn check_topic_count(&self, existing: usize) -> Result<()> {
        if existing >= self.max_topics {
            return Err(Error::LimitReached {
                limit: "max-topics",
                message: format!(
                    "the server holds {existing} topics, its limit (max-topics = {}); \
                     delete unused topics or raise max-topics",
                    self.max_topics
                ),
            });
        }
        Ok(())
    }

    /// Whether one more subscription fits, with `existing` on the server.
    pub fn check_subscription_count(&self, existing: usize) -> Result<()> {
        if existing >= self.max_subscriptions {
            return Err(Error::LimitReached {
                limit: "max-subscriptions",
                message: format!(
                    "the server holds {existing} subscriptions, its limit (max-subscriptions = {}); \
                     delete unused subscriptions or raise max-subscriptions",
                    self.max_subscriptions
                ),
            });
        }
        Ok(())
    }
}

/// Largest partition count a topic may have (both backends: JetStream
/// makes a stream per partition).
pub const MAX_PARTITIONS: u32 = 1024;
/// Shortest and longest accepted ack deadline.
pub const MIN_ACK_DEADLINE: Duration = Duration::from_secs(1);
pub const MAX_ACK_DEADLINE: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_events_per_publish: 2,
            max_attributes_per_event: 2,
            max_attribute_bytes: 8,
            max_key_bytes: 3,
            max_type_bytes: 3,
            max_content_type_bytes: 3,
            max_idempotency_key_bytes: 3,
            max_filter_patterns: 2,
            max_filter_conditions: 2,
            max_filter_bytes: 10,
            max_ack_ids_per_call: 2,
            max_reason_bytes: 3,
            max_page_size: 5,
            max_topics: 1,
            max_subscriptions: 1,
        }
    }

    /// The field and message of an INVALID_ARGUMENT.
    fn invalid(r: Result<()>) -> (&'static str, String) {
        match r {
            Err(Error::InvalidArgument { field, reason }) => (field, reason),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn each_event_field_is_bounded_and_named() {
        let l = limits();
        let ok = NewEvent {
            key: "k".into(),
            event_type: "t".into(),
            content_type: "c".into(),
            idempotency_key: "i".into(),
            attributes: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        };
        l.check_event(0, &ok).unwrap();
        type Change = fn(&mut NewEvent);
        let cases: [(Change, &str, &str); 7] = [
            (|e| e.key = "long".into(), "events.key", "max-key-bytes"),
            (
                |e| e.event_type = "long".into(),
                "events.type",
                "max-type-bytes",
            ),
            (
                |e| e.content_type = "long".into(),
                "events.content_type",
                "max-content-type-bytes",
            ),
            (
                |e| e.idempotency_key = "long".into(),
                "events.idempotency_key",
                "max-idempotency-key-bytes",
            ),
            (
                |e| {
                    e.attributes.insert("x".into(), "y".into());
                    e.attributes.insert("z".into(), "w".into());
                },
                "events.attributes",
                "max-attributes-per-event",
            ),
            (
                |e| {
                    e.attributes.insert("x".into(), "0123456789".into());
                },
                "events.attributes",
                "max-attribute-bytes",
            ),
            (
                |e| {
                    e.attributes.insert(String::new(), "v".into());
                },
                "events.attributes",
                "non-empty",
            ),
        ];
        for (change, field, needle) in cases {
            let mut e = ok.clone();
            change(&mut e);
            let (f, msg) = invalid(l.check_event(7, &e));
            assert_eq!(f, field);
            assert!(msg.contains(needle) && msg.contains("event 7"), "{msg}");
        }
    }

    #[test]
    fn counts_are_bounded_and_name_their_key() {
        let l = limits();
        l.check_publish_count(2).unwrap();
        assert!(invalid(l.check_publish_count(3))
            .1
            .contains("the limit is 2 (max-events-per-publish)"));
        l.check_ack_ids(2).unwrap();
        assert_eq!(invalid(l.check_ack_ids(3)).0, "ack_ids");
        l.check_reason("abc").unwrap();
        assert_eq!(invalid(l.check_reason("abcd")).0, "reason");
        l.check_dead_letter_ids(5).unwrap();
        assert!(invalid(l.check_dead_letter_ids(6))
            .1
            .contains("max-page-size"));
        assert_eq!((l.page_size(0), l.page_size(3), l.page_size(99)), (5, 3, 5));
        assert_eq!(Limits::default().page_size(0), 100);
    }

    #[test]
    fn filters_are_bounded_in_count_and_bytes() {
        let l = limits();
        let s = |s: &str| s.to_string();
        let eq = |k: &str, v: &str| AttributeCondition::Eq {
            key: s(k),
            value: s(v),
        };
        let ok = Filter {
            types: vec![s("a.*")],
            attributes: vec![eq("k", "v")],
        };
        l.check_filter(&ok).unwrap();
        for (f, field, key) in [
            (
                Filter {
                    types: vec![s("a"), s("b"), s("c")],
                    ..Default::default()
                },
                "filter.types",
                "max-filter-patterns",
            ),
            (
                Filter {
                    attributes: vec![eq("a", ""), eq("b", ""), eq("c", "")],
                    ..Default::default()
                },
                "filter.attributes",
                "max-filter-conditions",
            ),
            (
                Filter {
                    attributes: vec![AttributeCondition::In {
                        key: s("k"),
                        values: vec![s(""), s(""), s("")],
                    }],
                    ..Default::default()
                },
                "filter.attributes",
                "max-filter-conditions",
            ),
            (
                Filter {
                    types: vec![s("abcdef")],
                    attributes: vec![eq("k", "valu")],
                },
                "filter",
                "max-filter-bytes",
            ),
        ] {
            let (got, msg) = invalid(l.check_filter(&f));
            assert_eq!(got, field, "{msg}");
            assert!(msg.contains(key), "{msg}");
        }
        // Pattern syntax is still checked.
        let (_, msg) = invalid(l.check_type_patterns("types", &[s("a..b")]).map(drop));
        assert!(msg.contains("empty segment"), "{msg}");
        assert_eq!(l.check_type_patterns("types", &[s("a.*")]).unwrap(), 3);
    }

    #[test]
    fn server_wide_counts_are_limit_reached() {
        let l = limits();
        l.check_topic_count(0).unwrap();
        match l.check_topic_count(1) {
            Err(Error::LimitReached { limit, message }) => {
                assert_eq!(limit, "max-topics");
                assert!(message.contains("max-topics = 1"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            l.check_subscription_count(1),
            Err(Error::LimitReached {
                limit: "max-subscriptions",
                ..
            })
        ));
    }
}

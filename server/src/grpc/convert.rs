//! Conversions between wire types (`eventbus_proto::v1`) and the broker
//! contract's domain types (`eventbus_broker`). Validation of wire-only shapes
//! (timestamps, durations) lives here; domain rules live in the contract.

use std::time::Duration;

use eventbus_broker::{Delivery, NewEvent, StoredEvent, SubscriptionInfo, TopicInfo, UnixMillis};
use eventbus_proto::v1;
use tonic::Status;

use super::message_size;
use super::status::invalid;

pub fn millis_to_timestamp(ms: UnixMillis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// Seconds of 9999-12-31T23:59:59Z, the last second a protobuf `Timestamp` may
/// hold (google/protobuf/timestamp.proto).
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
/// 10 000 years, the longest protobuf `Duration` (google/protobuf/duration.proto).
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// A wire timestamp in Unix milliseconds. Only the protobuf range from 1970 on
/// is accepted, so the conversion can never overflow; the arithmetic is checked
/// anyway, because a wrapped time in release builds would be silently wrong.
pub fn timestamp_to_millis(
    field: &'static str,
    ts: &prost_types::Timestamp,
) -> Result<UnixMillis, Status> {
    let out_of_range = || {
        invalid(
            field,
            format!(
                "{}s {}ns is out of range; use a time from 1970-01-01T00:00:00Z to \
                 9999-12-31T23:59:59.999Z (seconds 0..={MAX_TIMESTAMP_SECONDS}, nanos 0..1000000000)",
                ts.seconds, ts.nanos
            ),
        )
    };
    if !(0..=MAX_TIMESTAMP_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(out_of_range());
    }
    u64::try_from(ts.seconds)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .and_then(|ms| ms.checked_add(ts.nanos as u64 / 1_000_000))
        .ok_or_else(out_of_range)
}

/// A wire duration, within the protobuf range (0 to 10 000 years), so that any
/// later conversion to milliseconds fits a `u64`.
pub fn duration_from_proto(
    field: &'static str,
    d: &prost_types::Duration,
) -> Result<Duration, Status> {
    if !(0..=MAX_DURATION_SECONDS).contains(&d.seconds) || !(0..1_000_000_000).contains(&d.nanos) {
        return Err(invalid(
            field,
            format!(
                "{}s {}ns is out of range; use a non-negative duration of at most \
                 {MAX_DURATION_SECONDS}s (seconds 0..={MAX_DURATION_SECONDS}, nanos 0..1000000000)",
                d.seconds, d.nanos
            ),
        ));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Milliseconds of a duration, or INVALID_ARGUMENT on `field` when they do not
/// fit a `u64` (never truncated: `as u64` would wrap a huge value into a small one).
pub fn duration_to_millis(field: &'static str, d: Duration) -> Result<u64, Status> {
    u64::try_from(d.as_millis()).map_err(|_| {
        invalid(
            field,
            format!("{d:?} is too long; it must fit in 2^64-1 milliseconds"),
        )
    })
}

pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A published event as a domain event. Refuses one that could not be
/// delivered to a client at default settings ([`message_size::check_deliverable`]).
pub fn new_event(ev: v1::PublishEvent) -> Result<NewEvent, Status> {
    message_size::check_deliverable(&ev)?;
    let event_time = ev
        .event_time
        .as_ref()
        .map(|t| timestamp_to_millis("events.event_time", t))
        .transpose()?;
    Ok(NewEvent {
        key: ev.key,
        event_type: ev.r#type,
        payload: ev.payload,
        content_type: ev.content_type,
        attributes: ev.attributes.into_iter().collect(),
        idempotency_key: ev.idempotency_key,
        event_time,
    })
}

pub fn event(topic: &str, ev: &StoredEvent) -> v1::Event {
    v1::Event {
        event_id: ev.event_id(),
        topic: topic.to_string(),
        partition: ev.partition,
        offset: ev.offset,
        key: ev.key.clone(),
        r#type: ev.event_type.clone(),
        payload: ev.payload.clone(),
        content_type: ev.content_type.clone(),
        attributes: ev
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        publish_time: Some(millis_to_timestamp(ev.publish_time)),
        event_time: ev.event_time.map(millis_to_timestamp),
    }
}

/// A leased event as sent on a Subscribe stream.
pub fn delivery(topic: &str, d: Delivery) -> v1::Delivery {
    v1::Delivery {
        event: Some(event(topic, &d.event)),
        ack_id: d.ack_id,
        delivery_attempt: d.attempt,
    }
}

pub fn topic(t: &TopicInfo) -> v1::Topic {
    v1::Topic {
        name: t.name.clone(),
        partitions: t.partition_count(),
        retention: Some(v1::Retention {
            max_age: t
                .retention
                .max_age_ms
                .map(|ms| duration_to_proto(Duration::from_millis(ms))),
            max_bytes: t.retention.max_bytes.unwrap_or(0),
        }),
        create_time: Some(millis_to_timestamp(t.created_ms)),
        creator: t.creator.clone().unwrap_or_default(),
        partition_info: t
            .partitions
            .iter()
            .enumerate()
            .map(|(p, bounds)| v1::PartitionInfo {
                partition: p as u32,
                start_offset: bounds.start,
                end_offset: bounds.end,
            })
            .collect(),
    }
}

pub fn subscription(info: &SubscriptionInfo) -> v1::Subscription {
    let SubscriptionInfo {
        name,
        config,
        paused,
        created_ms,
        ..
    } = info;
    let s = &info.stats;
    let now = eventbus_broker::now_ms();
    v1::Subscription {
        topic: info.topic.clone(),
        name: name.clone(),
        ack_deadline: Some(duration_to_proto(Duration::from_millis(
            config.ack_deadline_ms,
        ))),
        retry_policy: Some(v1::RetryPolicy {
            min_backoff: Some(duration_to_proto(Duration::from_millis(
                config.min_backoff_ms,
            ))),
            max_backoff: Some(duration_to_proto(Duration::from_millis(
                config.max_backoff_ms,
            ))),
        }),
        max_delivery_attempts: config.max_delivery_attempts,
        filter: filter_to_proto(&config.filter),
        ordering: match config.ordering {
            eventbus_broker::Ordering::None => v1::Ordering::None,
            eventbus_broker::Ordering::Key => v1::Ordering::Key,
        } as i32,
        paused: *paused,
        create_time: Some(millis_to_timestamp(*created_ms)),
        creator: info.creator.clone().unwrap_or_default(),
        stats: Some(v1::SubscriptionStats {
            backlog: s.backlog,
            in_flight: s.in_flight,
            oldest_unacked_age: s
                .oldest_unacked_ms
                .map(|t| duration_to_proto(Duration::from_millis(now.saturating_sub(t)))),
            delivered: s.delivered,
            acked: s.acked,
            nacked: s.nacked,
            redelivered: s.redelivered,
            dead_lettered: s.dead_lettered,
            filtered: s.filtered,
            dead_letter_count: s.dead_letter_count,
            oldest_dead_letter_age: s
                .oldest_dead_letter_ms
                .map(|t| duration_to_proto(Duration::from_millis(now.saturating_sub(t)))),
            lost_to_retention: s.lost_to_retention,
            members: s.members,
        }),
    }
}

/// A dead letter on the wire; its id is the decimal queue sequence number.
pub fn dead_letter(topic: &str, dl: &eventbus_broker::DeadLetter) -> v1::DeadLetter {
    v1::DeadLetter {
        id: dl.id.to_string(),
        event: Some(event(topic, &dl.event)),
        delivery_attempts: dl.attempts,
        reason: dl.reason.clone(),
        redrive_count: dl.redrive_count,
        first_delivery_time: Some(millis_to_timestamp(dl.first_delivery_ms)),
        last_delivery_time: Some(millis_to_timestamp(dl.last_delivery_ms)),
        dead_letter_time: Some(millis_to_timestamp(dl.dead_letter_ms)),
    }
}

/// Parses a dead-letter id (the decimal sequence number).
pub fn dead_letter_id(field: &'static str, id: &str) -> Result<u64, Status> {
    id.parse().map_err(|_| {
        invalid(
            field,
            format!("{id:?} is not a dead-letter id; use the id from ListDeadLetters"),
        )
    })
}

/// The wire filter as a query.
pub fn dead_letter_query(
    f: Option<v1::DeadLetterFilter>,
) -> Result<eventbus_broker::DeadLetterQuery, Status> {
    let f = f.unwrap_or_default();
    Ok(eventbus_broker::DeadLetterQuery {
        types: f.types,
        reason_contains: f.reason_contains,
        start_ms: optional_millis("filter.start_time", &f.start_time)?,
        end_ms: optional_millis("filter.end_time", &f.end_time)?,
    })
}

/// [`timestamp_to_millis`] of a time that may be unset.
pub fn optional_millis(
    field: &'static str,
    ts: &Option<prost_types::Timestamp>,
) -> Result<Option<UnixMillis>, Status> {
    ts.as_ref()
        .map(|t| timestamp_to_millis(field, t))
        .transpose()
}

/// The wire filter as a domain filter (validated later by the broker).
pub fn filter_from_proto(f: Option<v1::Filter>) -> Result<eventbus_broker::Filter, Status> {
    use eventbus_broker::AttributeCondition as C;
    use v1::attribute_condition::Condition;
    let f = f.unwrap_or_default();
    let attributes = f
        .attributes
        .into_iter()
        .map(|c| {
            let key = c.key;
            Ok(match c.condition {
                Some(Condition::Eq(value)) => C::Eq { key, value },
                Some(Condition::Ne(value)) => C::Ne { key, value },
                Some(Condition::In(list)) => C::In {
                    key,
                    values: list.values,
                },
                Some(Condition::Exists(exists)) => C::Exists { key, exists },
                Some(Condition::Prefix(prefix)) => C::Prefix { key, prefix },
                None => {
                    return Err(invalid(
                        "filter.attributes",
                        format!("condition on {key:?} sets none of eq, ne, in, exists, prefix"),
                    ))
                }
            })
        })
        .collect::<Result<_, Status>>()?;
    Ok(eventbus_broker::Filter {
        types: f.types,
        attributes,
    })
}

pub fn filter_to_proto(f: &eventbus_broker::Filter) -> Option<v1::Filter> {
    use eventbus_broker::AttributeCondition as C;
    use v1::attribute_condition::Condition;
    if f.is_empty() {
        return None;
    }
    let attributes = f
        .attributes
        .iter()
        .map(|c| {
            let condition = match c {
                C::Eq { value, .. } => Condition::Eq(value.clone()),
                C::Ne { value, .. } => Condition::Ne(value.clone()),
                C::In { values, .. } => Condition::In(v1::StringList {
                    values: values.clone(),
                }),
                C::Exists { exists, .. } => Condition::Exists(*exists),
                C::Prefix { prefix, .. } => Condition::Prefix(prefix.clone()),
            };
            v1::AttributeCondition {
                key: c.key().to_string(),
                condition: Some(condition),
            }
        })
        .collect();
    Some(v1::Filter {
        types: f.types.clone(),
        attributes,
    })
}

/// Parses a retry policy; `None` means "redeliver at once".
pub fn retry_policy(
    p: Option<v1::RetryPolicy>,
) -> Result<Option<eventbus_broker::RetryPolicy>, Status> {
    p.map(|p| {
        Ok(eventbus_broker::RetryPolicy {
            min_backoff: p
                .min_backoff
                .as_ref()
                .map(|d| duration_from_proto("retry_policy.min_backoff", d))
                .transpose()?,
            max_backoff: p
                .max_backoff
                .as_ref()
                .map(|d| duration_from_proto("retry_policy.max_backoff", d))
                .transpose()?,
        })
    })
    .transpose()
}

/// Parses the ordering enum.
pub fn ordering(value: i32) -> Result<eventbus_broker::Ordering, Status> {
    match v1::Ordering::try_from(value) {
        Ok(v1::Ordering::Unspecified | v1::Ordering::None) => Ok(eventbus_broker::Ordering::None),
        Ok(v1::Ordering::Key) => Ok(eventbus_broker::Ordering::Key),
        Err(_) => Err(invalid(
            "ordering",
            format!("{value} is not an Ordering; use ORDERING_NONE or ORDERING_KEY"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        let ts = millis_to_timestamp(1_700_000_000_123);
        assert_eq!(ts.seconds, 1_700_000_000);
        assert_eq!(ts.nanos, 123_000_000);
        assert_eq!(timestamp_to_millis("t", &ts).unwrap(), 1_700_000_000_123);
    }

    #[test]
    fn negative_times_and_durations_are_invalid_arguments() {
        let bad_ts = prost_types::Timestamp {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(
            timestamp_to_millis("t", &bad_ts).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let bad_d = prost_types::Duration {
            seconds: -5,
            nanos: 0,
        };
        assert_eq!(
            duration_from_proto("d", &bad_d).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let d = duration_from_proto(
            "d",
            &prost_types::Duration {
                seconds: 2,
                nanos: 5,
            },
        )
        .unwrap();
        assert_eq!(d, Duration::new(2, 5));
    }

    #[test]
    fn timestamps_outside_the_protobuf_range_are_invalid_not_wrapped() {
        for (seconds, nanos) in [
            (i64::MAX, 0),
            (MAX_TIMESTAMP_SECONDS + 1, 0),
            (0, 1_000_000_000),
            (0, -1),
        ] {
            let err =
                timestamp_to_millis("t", &prost_types::Timestamp { seconds, nanos }).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().contains("9999-12-31"), "{}", err.message());
        }
        let last = prost_types::Timestamp {
            seconds: MAX_TIMESTAMP_SECONDS,
            nanos: 999_999_999,
        };
        assert_eq!(
            timestamp_to_millis("t", &last).unwrap(),
            MAX_TIMESTAMP_SECONDS as u64 * 1000 + 999
        );
    }

    #[test]
    fn durations_outside_the_protobuf_range_are_invalid() {
        let huge = prost_types::Duration {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(
            duration_from_proto("d", &huge).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let max = prost_types::Duration {
            seconds: MAX_DURATION_SECONDS,
            nanos: 999_999_999,
        };
        let d = duration_from_proto("d", &max).unwrap();
        assert_eq!(duration_to_millis("d", d).unwrap(), d.as_millis() as u64);
        assert_eq!(
            duration_to_millis("d", Duration::MAX).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn publish_event_converts_without_losing_fields() {
        let ev = new_event(v1::PublishEvent {
            key: "k".into(),
            r#type: "a.b".into(),
            payload: bytes::Bytes::from_static(b"p"),
            content_type: "text/plain".into(),
            attributes: [("x".to_string(), "y".to_string())].into(),
            idempotency_key: "i".into(),
            event_time: Some(millis_to_timestamp(5_000)),
        })
        .unwrap();
        assert_eq!(ev.key, "k");
        assert_eq!(ev.event_type, "a.b");
        assert_eq!(&ev.payload[..], b"p");
        assert_eq!(ev.attributes["x"], "y");
        assert_eq!(ev.event_time, Some(5_000));
    }
}

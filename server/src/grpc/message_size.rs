//! Every message the server streams fits what gRPC clients accept by default.
//!
//! grpc-go, grpcio (Python), grpc-java and tonic refuse a received message over
//! 4 MiB unless the application raises the limit, and a client that refuses one
//! message of a Subscribe stream loses the stream: it reconnects and gets the
//! same deliveries again, forever. So Subscribe and Replay pack their items
//! into messages of at most [`MAX_MESSAGE_BYTES`], measured with prost's own
//! `encoded_len` of exactly what is about to be sent (envelope, ack id,
//! attributes and all). An item bigger than that would go alone; Publish makes
//! sure none is ([`check_deliverable`]), and `max-event-bytes` is capped
//! accordingly ([`MAX_EVENT_BYTES_CAP`]).

use eventbus_proto::v1;
use prost::Message;
use tonic::Status;

use super::status::invalid;

/// Largest message the server streams: the receive limit that gRPC clients
/// keep by default (the length of the protobuf message, not counting gRPC's
/// 5-byte frame header).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// What a delivery of an event may add to the size of the event as published
/// (its `PublishEvent` encoding), at most: the event id (34 bytes), the topic
/// name (up to 258), partition and offset (17), publish time (19), event time
/// re-encoded from milliseconds (+2), a traceparent attribute the server adds
/// (72), the ack id (36), the attempt (6) and the framing of `Event` in
/// `Delivery` and of `Delivery` in `SubscribeResponse` (10); 454 bytes, rounded
/// up. The idempotency key is not delivered, so it only makes this larger than
/// needed. `envelope_is_an_upper_bound` checks the arithmetic.
pub const DELIVERY_ENVELOPE_BYTES: usize = 1024;

/// Highest accepted `max-event-bytes`: an event of that size (its stored
/// record) plus the delivery envelope still fits [`MAX_MESSAGE_BYTES`], so a
/// client at default settings can receive any event the server accepts.
pub const MAX_EVENT_BYTES_CAP: usize = MAX_MESSAGE_BYTES - DELIVERY_ENVELOPE_BYTES;

/// Rejects an event whose delivery could exceed [`MAX_MESSAGE_BYTES`]. The
/// stored record (bounded by `max-event-bytes`) is slightly more compact than
/// the protobuf encoding when an event has many small attributes, so the
/// record bound alone does not guarantee this.
pub fn check_deliverable(ev: &v1::PublishEvent) -> Result<(), Status> {
    let published = ev.encoded_len();
    if published + DELIVERY_ENVELOPE_BYTES > MAX_MESSAGE_BYTES {
        return Err(invalid(
            "events",
            format!(
                "an event is {published} bytes encoded; with its delivery envelope ({DELIVERY_ENVELOPE_BYTES} bytes) \
                 it would exceed the {MAX_MESSAGE_BYTES} bytes that gRPC clients receive by default: \
                 make its payload or attributes smaller"
            ),
        ));
    }
    Ok(())
}

/// Bytes `item` adds to a message as an element of a repeated field with a
/// one-byte tag (`SubscribeResponse.deliveries`, `ReplayResponse.events`):
/// tag, length prefix, body.
fn element_len<M: Message>(item: &M) -> usize {
    prost::encoding::message::encoded_len(1, item)
}

/// The items of the next message: `carry` (an item that did not fit the
/// previous message) first, then items from `next`, as long as the message
/// stays within [`MAX_MESSAGE_BYTES`]. The item that would cross it is left in
/// `carry`. A single item bigger than the limit goes alone. Empty only when
/// there is nothing left.
pub fn next_message<M: Message>(
    carry: &mut Option<M>,
    mut next: impl FnMut() -> Option<M>,
) -> Vec<M> {
    let mut items = Vec::new();
    let mut size = 0;
    while let Some(item) = carry.take().or_else(&mut next) {
        let len = element_len(&item);
        if !items.is_empty() && size + len > MAX_MESSAGE_BYTES {
            *carry = Some(item);
            break;
        }
        size += len;
        items.push(item);
    }
    items
}

/// `items` cut into consecutive runs that each fit one message.
pub fn split<M: Message>(items: Vec<M>) -> Vec<Vec<M>> {
    let mut items = items.into_iter();
    let mut carry = None;
    std::iter::from_fn(|| Some(next_message(&mut carry, || items.next())))
        .take_while(|m| !m.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use eventbus_log::{StoredEvent, TopicId};

    use super::*;
    use crate::grpc::convert;

    fn event_of(size: usize) -> v1::Event {
        v1::Event {
            payload: Bytes::from(vec![0u8; size]),
            ..Default::default()
        }
    }

    #[test]
    fn messages_stay_within_the_limit_and_keep_order() {
        // 1 MB events: four fit in 4 MiB with their framing, five do not.
        let events: Vec<_> = (0..16).map(|_| event_of(1_000_000)).collect();
        let messages = split(events);
        assert_eq!(messages.iter().map(Vec::len).collect::<Vec<_>>(), [4; 4]);
        for m in &messages {
            let resp = v1::ReplayResponse {
                events: m.clone(),
                caught_up: false,
            };
            assert!(resp.encoded_len() <= MAX_MESSAGE_BYTES);
        }
        // Small items share messages; an oversized one goes alone.
        let sizes = [10, MAX_MESSAGE_BYTES, 10, 10];
        let messages = split(sizes.iter().map(|s| event_of(*s)).collect());
        let lens: Vec<Vec<usize>> = messages
            .iter()
            .map(|m| m.iter().map(|e| e.payload.len()).collect())
            .collect();
        assert_eq!(lens, [vec![10], vec![MAX_MESSAGE_BYTES], vec![10, 10]]);
        assert!(split(Vec::<v1::Event>::new()).is_empty());
    }

    #[test]
    fn a_message_of_the_exact_limit_is_filled() {
        let one = element_len(&event_of(1000));
        let fit = MAX_MESSAGE_BYTES / one;
        let messages = split((0..fit + 1).map(|_| event_of(1000)).collect());
        assert_eq!(messages[0].len(), fit);
        assert_eq!(messages[1].len(), 1);
    }

    /// The worst case of every field the envelope allowance covers: the
    /// longest topic name, the largest partition, offset and attempt, an
    /// event time whose milliseconds re-encode longer, a traceparent added by
    /// the server, and many tiny attributes.
    #[test]
    fn envelope_is_an_upper_bound() {
        let mut attributes: BTreeMap<String, String> = (0..500)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let published = v1::PublishEvent {
            key: "key".into(),
            r#type: "order.created".into(),
            payload: Bytes::from(vec![1u8; 3_000_000]),
            content_type: "application/json".into(),
            attributes: attributes.clone().into_iter().collect(),
            idempotency_key: String::new(),
            event_time: Some(prost_types::Timestamp {
                seconds: i64::from(u32::MAX),
                nanos: 1_000_000,
            }),
        };
        attributes.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        let stored = StoredEvent {
            topic_id: TopicId(u32::MAX),
            partition: u32::MAX,
            offset: u64::MAX,
            publish_time: u64::MAX / 1_000_000,
            key: published.key.clone(),
            event_type: published.r#type.clone(),
            payload: published.payload.clone(),
            content_type: published.content_type.clone(),
            attributes,
            idempotency_key: String::new(),
            event_time: Some(u64::from(u32::MAX) * 1000 + 999),
        };
        let delivery = v1::Delivery {
            event: Some(convert::event(&"t".repeat(255), &stored)),
            ack_id: "x".repeat(34),
            delivery_attempt: u32::MAX,
        };
        let sent = v1::SubscribeResponse {
            deliveries: vec![delivery],
        }
        .encoded_len();
        assert!(
            sent <= published.encoded_len() + DELIVERY_ENVELOPE_BYTES,
            "{sent} > {} + {DELIVERY_ENVELOPE_BYTES}",
            published.encoded_len()
        );
    }

    #[test]
    fn publish_refuses_an_event_that_could_not_be_delivered() {
        let fits = v1::PublishEvent {
            payload: Bytes::from(vec![0u8; MAX_EVENT_BYTES_CAP - 16]),
            ..Default::default()
        };
        check_deliverable(&fits).unwrap();
        // The same bytes as 1-byte attributes encode to far more.
        let attrs = v1::PublishEvent {
            attributes: (0..600_000)
                .map(|i| (format!("{i:x}"), "v".into()))
                .collect(),
            ..Default::default()
        };
        let err = check_deliverable(&attrs).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("4194304"), "{}", err.message());
    }
}

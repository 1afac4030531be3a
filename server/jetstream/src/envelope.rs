//! How an event is stored in a JetStream message: the payload and every
//! field of the event in one protobuf body, so nothing depends on header
//! name rules (attribute keys are case-sensitive; NATS header names are
//! not meant to be). The idempotency key also travels as `Nats-Msg-Id`,
//! where the stream's duplicate window sees it.

use std::collections::BTreeMap;

use bytes::Bytes;
use eventbus_broker::{
    Error, NewEvent, Offset, PartitionId, Result, StoredEvent, TopicId, UnixMillis,
};
use prost::Message;

/// One stored event, as encoded in a message body.
#[derive(Clone, PartialEq, Message)]
pub struct Envelope {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub event_type: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub payload: Bytes,
    #[prost(string, tag = "4")]
    pub content_type: String,
    #[prost(btree_map = "string, string", tag = "5")]
    pub attributes: BTreeMap<String, String>,
    #[prost(string, tag = "6")]
    pub idempotency_key: String,
    /// Milliseconds since the epoch; absent when the publisher set none.
    #[prost(uint64, optional, tag = "7")]
    pub event_time: Option<u64>,
    /// Milliseconds since the epoch: when the event was first published,
    /// set only on events `eventbus migrate` moved from a single node. The
    /// message's own timestamp is then the time of the move, and this is
    /// the publish time readers see. Absent on events published here.
    #[prost(uint64, optional, tag = "8")]
    pub publish_time: Option<u64>,
}

impl Envelope {
    pub fn of(e: &NewEvent) -> Envelope {
        Envelope {
            key: e.key.clone(),
            event_type: e.event_type.clone(),
            payload: e.payload.clone(),
            content_type: e.content_type.clone(),
            attributes: e.attributes.clone(),
            idempotency_key: e.idempotency_key.clone(),
            event_time: e.event_time,
            publish_time: None,
        }
    }

    /// A stored event as it is moved here from another store: everything,
    /// its publish time included.
    pub fn of_stored(e: &StoredEvent) -> Envelope {
        Envelope {
            key: e.key.clone(),
            event_type: e.event_type.clone(),
            payload: e.payload.clone(),
            content_type: e.content_type.clone(),
            attributes: e.attributes.clone(),
            idempotency_key: e.idempotency_key.clone(),
            event_time: e.event_time,
            publish_time: Some(e.publish_time),
        }
    }

    /// The stored event this envelope is, at its place in the topic;
    /// `publish_time` is the message's timestamp, which a moved event's own
    /// publish time overrides.
    pub fn into_event(
        self,
        topic_id: TopicId,
        partition: PartitionId,
        offset: Offset,
        publish_time: UnixMillis,
    ) -> StoredEvent {
        StoredEvent {
            topic_id,
            partition,
            offset,
            publish_time: self.publish_time.unwrap_or(publish_time),
            key: self.key,
            event_type: self.event_type,
            payload: self.payload,
            content_type: self.content_type,
            attributes: self.attributes,
            idempotency_key: self.idempotency_key,
            event_time: self.event_time,
        }
    }

    /// The body of a message at `location`, or DATA_LOSS when it does not
    /// decode.
    pub fn decode_at(body: Bytes, location: impl FnOnce() -> String) -> Result<Envelope> {
        Envelope::decode(body).map_err(|e| Error::corruption(location(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips_and_garbage_is_data_loss() {
        let e = NewEvent {
            key: "k".into(),
            event_type: "order.created".into(),
            payload: Bytes::from_static(b"{}"),
            content_type: "application/json".into(),
            attributes: [("Region".to_string(), "eu".to_string())].into(),
            idempotency_key: "i-1".into(),
            event_time: Some(7),
        };
        let body = Bytes::from(Envelope::of(&e).encode_to_vec());
        let back = Envelope::decode_at(body, String::new).unwrap();
        assert_eq!(back, Envelope::of(&e));
        let err =
            Envelope::decode_at(Bytes::from_static(&[0xff, 0xff]), || "here".into()).unwrap_err();
        assert!(err.is_damage(), "{err:?}");
    }
}

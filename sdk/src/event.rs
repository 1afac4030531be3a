//! Events going out ([`Event`]) and coming in ([`Message`]), with typed
//! payload helpers for serde JSON and prost messages.

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::v1;

/// `content_type` set by [`Event::json`].
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// `content_type` set by [`Event::proto`]; the message's full name follows as
/// `; proto=<package.Message>`.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/protobuf";

/// An event to publish. Build it with [`Event::new`], [`Event::json`] or
/// [`Event::proto`], then chain the optional parts.
///
/// ```
/// # fn demo() -> eventbus::Result<()> {
/// #[derive(serde::Serialize)]
/// struct OrderCreated { id: u64 }
/// let event = eventbus::Event::json("order.created", &OrderCreated { id: 7 })?
///     .key("order-7")
///     .attribute("region", "eu");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub(crate) inner: v1::PublishEvent,
}

impl Event {
    /// An event of `event_type` (dot-separated, e.g. `order.created`) with a raw
    /// payload.
    pub fn new(event_type: impl Into<String>, payload: impl Into<Bytes>) -> Event {
        Event {
            inner: v1::PublishEvent {
                r#type: event_type.into(),
                payload: payload.into(),
                ..Default::default()
            },
        }
    }

    /// An event whose payload is `value` as JSON (`content_type`
    /// `application/json`).
    pub fn json<T: Serialize + ?Sized>(event_type: impl Into<String>, value: &T) -> Result<Event> {
        let payload = serde_json::to_vec(value).map_err(|e| Error::Payload(e.to_string()))?;
        Ok(Event::new(event_type, payload).content_type(CONTENT_TYPE_JSON))
    }

    /// An event whose payload is the protobuf encoding of `message`, typed by
    /// the message's full name (e.g. `shop.v1.OrderCreated`).
    pub fn proto<M: prost::Message + prost::Name>(message: &M) -> Event {
        let name = M::full_name();
        Event::new(name.clone(), message.encode_to_vec())
            .content_type(format!("{CONTENT_TYPE_PROTOBUF}; proto={name}"))
    }

    /// Routing and ordering key: events with one key go to one partition, in
    /// publish order.
    pub fn key(mut self, key: impl Into<String>) -> Event {
        self.inner.key = key.into();
        self
    }

    /// Sets the event type (overrides the one given at construction).
    pub fn event_type(mut self, event_type: impl Into<String>) -> Event {
        self.inner.r#type = event_type.into();
        self
    }

    /// MIME type of the payload.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Event {
        self.inner.content_type = content_type.into();
        self
    }

    /// Adds an attribute (subscriptions can filter on attributes).
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Event {
        self.inner.attributes.insert(key.into(), value.into());
        self
    }

    /// Deduplicates retries on the server within its window. The publisher
    /// sets a random one when none is given.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Event {
        self.inner.idempotency_key = key.into();
        self
    }

    /// When the event happened at its source (the server records the publish
    /// time separately). Replay and seek by time use the publish time.
    pub fn event_time(mut self, time: SystemTime) -> Event {
        self.inner.event_time = Some(time.into());
        self
    }

    /// The wire form.
    pub fn into_proto(self) -> v1::PublishEvent {
        self.inner
    }
}

impl From<v1::PublishEvent> for Event {
    fn from(inner: v1::PublishEvent) -> Event {
        Event { inner }
    }
}

/// A received event and its delivery attempt (1 for the first delivery).
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    event: v1::Event,
    attempt: u32,
}

impl Message {
    pub(crate) fn new(event: v1::Event, attempt: u32) -> Message {
        Message { event, attempt }
    }

    /// The event as sent by the server.
    pub fn event(&self) -> &v1::Event {
        &self.event
    }

    /// Which delivery this is: 1 the first time, 2 after one nack or expired
    /// lease, and so on. Survives server restarts.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.event.payload
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event.r#type
    }

    /// The routing key (empty when none was set).
    pub fn key(&self) -> &str {
        &self.event.key
    }

    /// Server-assigned id, stable across redeliveries: use it to make
    /// handlers idempotent.
    pub fn event_id(&self) -> &str {
        &self.event.event_id
    }

    /// Partition and offset of the event in its topic.
    pub fn position(&self) -> (u32, u64) {
        (self.event.partition, self.event.offset)
    }

    /// One attribute.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.event.attributes.get(key).map(String::as_str)
    }

    /// All attributes.
    pub fn attributes(&self) -> &HashMap<String, String> {
        &self.event.attributes
    }

    /// Decodes a JSON payload.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.event.payload).map_err(|e| {
            Error::Payload(format!(
                "event {} ({}) is not the expected JSON: {e}",
                self.event.event_id, self.event.r#type
            ))
        })
    }

    /// Decodes a protobuf payload.
    pub fn proto<M: prost::Message + Default>(&self) -> Result<M> {
        M::decode(self.event.payload.clone()).map_err(|e| {
            Error::Payload(format!(
                "event {} ({}) is not the expected protobuf message: {e}",
                self.event.event_id, self.event.r#type
            ))
        })
    }

    /// The wire form.
    pub fn into_event(self) -> v1::Event {
        self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Order {
            id: u64,
        }
        let e = Event::json("order.created", &Order { id: 3 })
            .unwrap()
            .key("k")
            .attribute("a", "b")
            .into_proto();
        assert_eq!(e.content_type, CONTENT_TYPE_JSON);
        assert_eq!(e.key, "k");
        assert_eq!(e.attributes["a"], "b");
        let m = Message::new(
            v1::Event {
                payload: e.payload,
                ..Default::default()
            },
            1,
        );
        assert_eq!(m.json::<Order>().unwrap(), Order { id: 3 });
        assert!(matches!(m.json::<Vec<u8>>(), Err(Error::Payload(_))));
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct OrderShipped {
        #[prost(uint64, tag = "1")]
        id: u64,
    }

    impl prost::Name for OrderShipped {
        const NAME: &'static str = "OrderShipped";
        const PACKAGE: &'static str = "shop.v1";
    }

    #[test]
    fn proto_payload_is_typed_by_its_full_name() {
        let order = OrderShipped { id: 9 };
        let e = Event::proto(&order).into_proto();
        assert_eq!(e.r#type, "shop.v1.OrderShipped");
        assert_eq!(
            e.content_type,
            "application/protobuf; proto=shop.v1.OrderShipped"
        );
        let m = Message::new(
            v1::Event {
                payload: e.payload,
                ..Default::default()
            },
            1,
        );
        assert_eq!(m.proto::<OrderShipped>().unwrap(), order);
    }
}

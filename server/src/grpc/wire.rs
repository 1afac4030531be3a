//! Bounds a request's cost before prost builds it.
//!
//! One wire byte can become hundreds of heap bytes: an empty `PublishEvent` is
//! 2 bytes on the wire and a ~200-byte struct (plus its conversion) after
//! decoding, so a 16 MiB Publish of empty events used to take 3.5 GiB before
//! any check ran. [`PrescanCodec`] is tonic's prost codec plus one linear pass
//! over the message bytes tonic already holds, counting the repeated fields
//! that multiply (events, attributes per event, ack ids); a request over a
//! limit is refused before a single struct exists.
//!
//! Why a codec and not a tower layer: tonic hands the decoder the whole
//! message, decompressed, in one contiguous buffer, so the scan reads it in
//! place. A layer sees the HTTP body as frames: it would have to collect
//! them into a second buffer (a copy of every request) or parse the gRPC
//! framing and protobuf across frame boundaries itself.

use std::marker::PhantomData;

use eventbus_broker::Limits;
use eventbus_proto::bytes::Buf as _;
use eventbus_proto::prost::Message;
use eventbus_proto::v1::{
    AckRequest, ModifyAckDeadlineRequest, NackRequest, PublishRequest, PublishStreamRequest,
    SubscribeStreamRequest,
};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::status::to_status;

/// A request type whose counts are checked on the wire before it is decoded.
pub trait Prescan {
    /// Refuses `wire` (the encoded message) when it is over one of `limits`.
    fn prescan(wire: &[u8], limits: &Limits) -> Result<(), Status>;
}

/// `PublishRequest.events` (field 2) and `PublishEvent.attributes` (field 5).
const PUBLISH_EVENTS: u32 = 2;
const EVENT_ATTRIBUTES: u32 = 5;
/// `ack_ids` of Ack, Nack and ModifyAckDeadline (field 3 in all three).
const ACK_IDS: u32 = 3;
/// `SubscribeStreamRequest`'s settles: `ack`, `nack`, `modify_ack_deadline`.
const STREAM_SETTLES: [u32; 3] = [2, 3, 4];

impl Prescan for PublishRequest {
    fn prescan(wire: &[u8], limits: &Limits) -> Result<(), Status> {
        let (max_events, max_attrs) = (
            limits.max_events_per_publish,
            limits.max_attributes_per_event,
        );
        let mut events = 0usize;
        for field in Fields::new(wire) {
            let Field::Bytes(PUBLISH_EVENTS, event) = field.map_err(malformed)? else {
                continue;
            };
            if events == max_events {
                return Err(to_status(Limits::exceeded(
                    "events",
                    format!("more than {max_events} events in one Publish; split the batch"),
                    max_events,
                    "max-events-per-publish",
                )));
            }
            // An attribute entry takes at least 2 bytes: a short event cannot
            // hold too many, and is not walked.
            if event.len() / 2 > max_attrs
                && count_bytes_fields(event, EVENT_ATTRIBUTES, max_attrs)? > max_attrs
            {
                return Err(to_status(Limits::exceeded(
                    "events.attributes",
                    format!("event {events} has more than {max_attrs} attributes"),
                    max_attrs,
                    "max-attributes-per-event",
                )));
            }
            events += 1;
        }
        Ok(())
    }
}

/// A PublishStream request numbers `events` and their attributes as
/// PublishRequest does (the contract says so), so one scan serves both.
impl Prescan for PublishStreamRequest {
    fn prescan(wire: &[u8], limits: &Limits) -> Result<(), Status> {
        PublishRequest::prescan(wire, limits)
    }
}

/// Ack, Nack and ModifyAckDeadline: the number of ack ids.
fn prescan_ack_ids(wire: &[u8], limits: &Limits) -> Result<(), Status> {
    let max = limits.max_ack_ids_per_call;
    if count_bytes_fields(wire, ACK_IDS, max)? > max {
        return Err(too_many_ack_ids(max));
    }
    Ok(())
}

fn too_many_ack_ids(max: usize) -> Status {
    to_status(Limits::exceeded(
        "ack_ids",
        format!("more than {max} ack ids in one call; split them over several calls"),
        max,
        "max-ack-ids-per-call",
    ))
}

impl Prescan for AckRequest {
    fn prescan(wire: &[u8], limits: &Limits) -> Result<(), Status> {
        prescan_ack_ids(wire, limits)
    }
}

impl Prescan for NackRequest {
    fn prescan(wire: &[u8], limits: &Limits) -> Result<(), Status> {
        prescan_ack_ids(wire, limits)
    }
}

impl Prescan for ModifyAckDeadlineRequest {
    fn prescan(wire: &[u8], limits: &Limits) -> Result<(), Status> {
        prescan_ack_ids(wire, limits)
    }
}

/// A SubscribeStream settle holds one Ack, Nack or ModifyAckDeadline request;
/// prost merges repeats of a oneof's message field, so the ack ids of every
/// occurrence count together.
impl Prescan for SubscribeStreamRequest {
    fn prescan(wire: &[u8], limits: &Limits) -> Result<(), Status> {
        let max = limits.max_ack_ids_per_call;
        let mut ack_ids = 0;
        for field in Fields::new(wire) {
            if let Field::Bytes(number, settle) = field.map_err(malformed)? {
                if STREAM_SETTLES.contains(&number) {
                    ack_ids += count_bytes_fields(settle, ACK_IDS, max)?;
                    if ack_ids > max {
                        return Err(too_many_ack_ids(max));
                    }
                }
            }
        }
        Ok(())
    }
}

/// How many length-delimited fields numbered `number` `message` holds,
/// counting no further than `max + 1`.
fn count_bytes_fields(message: &[u8], number: u32, max: usize) -> Result<usize, Status> {
    let mut n = 0;
    for field in Fields::new(message) {
        if matches!(field.map_err(malformed)?, Field::Bytes(f, _) if f == number) {
            n += 1;
            if n > max {
                break;
            }
        }
    }
    Ok(n)
}

/// One top-level field of an encoded protobuf message.
#[derive(Debug, PartialEq)]
enum Field<'a> {
    /// A length-delimited field (string, bytes, message, packed): its number
    /// and contents.
    Bytes(u32, &'a [u8]),
    /// A varint or fixed-width field.
    Scalar,
}

/// Input prost would reject, or a group (proto2 only, which prost would skip
/// over, decoding what follows): the scan must not just stop there.
struct Malformed;

/// The INTERNAL status prost's own decode error gives.
fn malformed(_: Malformed) -> Status {
    Status::internal("failed to decode the request: malformed protobuf")
}

/// The top-level fields of an encoded message, in wire order; [`Malformed`]
/// ends the iteration. The item is small on purpose: this runs per field.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(message: &'a [u8]) -> Self {
        Fields { rest: message }
    }

    fn varint(&mut self) -> Option<u64> {
        // Keys and short lengths are one byte: the common case, kept cheap.
        if let Some((&b, rest)) = self.rest.split_first() {
            if b < 0x80 {
                self.rest = rest;
                return Some(u64::from(b));
            }
        }
        let mut value = 0u64;
        for (i, &b) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.rest = &self.rest[i + 1..];
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn field(&mut self) -> Option<Field<'a>> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).ok().filter(|n| *n > 0)?;
        match key & 7 {
            0 => self.varint().map(|_| Field::Scalar),
            1 => self.take(8).map(|_| Field::Scalar),
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                self.take(len).map(|b| Field::Bytes(number, b))
            }
            5 => self.take(4).map(|_| Field::Scalar),
            _ => None,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match self.field() {
            Some(f) => Some(Ok(f)),
            None => {
                self.rest = &[];
                Some(Err(Malformed))
            }
        }
    }
}

/// tonic's prost codec, with [`Prescan`] run on each request before decoding.
pub struct PrescanCodec<Resp, Req> {
    limits: Limits,
    _types: PhantomData<fn() -> (Resp, Req)>,
}

impl<Resp, Req> PrescanCodec<Resp, Req> {
    pub fn new(limits: Limits) -> Self {
        PrescanCodec {
            limits,
            _types: PhantomData,
        }
    }
}

impl<Resp, Req> Codec for PrescanCodec<Resp, Req>
where
    Resp: Message + Send + 'static,
    Req: Prescan + Message + Default + Send + 'static,
{
    type Encode = Resp;
    type Decode = Req;
    type Encoder = ProstEncoder<Resp>;
    type Decoder = PrescanDecoder<Req>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        PrescanDecoder {
            limits: self.limits,
            prost: ProstDecoder::default(),
        }
    }
}

pub struct PrescanDecoder<Req> {
    limits: Limits,
    prost: ProstDecoder<Req>,
}

impl<Req: Prescan + Message + Default> Decoder for PrescanDecoder<Req> {
    type Item = Req;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        if buf.chunk().len() == buf.remaining() {
            // Always the case with tonic: the message is one BytesMut.
            Req::prescan(buf.chunk(), &self.limits)?;
            return self.prost.decode(buf);
        }
        // A split buffer is gathered once (the only copy) and scanned whole.
        let whole = buf.copy_to_bytes(buf.remaining());
        Req::prescan(&whole, &self.limits)?;
        Req::decode(whole)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.prost.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventbus_proto::v1::PublishEvent;

    fn limits(events: usize, attrs: usize, ack_ids: usize) -> Limits {
        Limits {
            max_events_per_publish: events,
            max_attributes_per_event: attrs,
            max_ack_ids_per_call: ack_ids,
            ..Limits::default()
        }
    }

    fn publish(events: usize, attrs: usize) -> Vec<u8> {
        let event = PublishEvent {
            key: "k".into(),
            payload: vec![1u8; 300].into(),
            attributes: (0..attrs).map(|i| (format!("a{i}"), "v".into())).collect(),
            event_time: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 7,
            }),
            ..Default::default()
        };
        PublishRequest {
            topic: "t".into(),
            events: vec![event; events],
        }
        .encode_to_vec()
    }

    #[test]
    fn publish_counts_match_what_prost_decodes() {
        // The field numbers above are those of the generated types.
        PublishRequest::prescan(&publish(3, 2), &limits(3, 2, 1)).unwrap();
        let err = PublishRequest::prescan(&publish(4, 2), &limits(3, 2, 1)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains("max-events-per-publish"),
            "{}",
            err.message()
        );
        let err = PublishRequest::prescan(&publish(3, 3), &limits(3, 2, 1)).unwrap_err();
        assert!(
            err.message().contains("event 0 has more than 2 attributes")
                && err.message().contains("max-attributes-per-event"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn the_smallest_attribute_entries_are_counted() {
        // Event 0 holds `n` empty attribute entries, 2 bytes each (field 5,
        // length 0): the densest event a client can send.
        let request = |n: usize| {
            let mut event = Vec::new();
            for _ in 0..n {
                event.extend([0x2a, 0x00]);
            }
            let mut wire = vec![
                0x12,
                0x80 | (event.len() & 0x7f) as u8,
                (event.len() >> 7) as u8,
            ];
            wire.extend(event);
            wire
        };
        let l = Limits::default();
        assert_eq!(
            PublishRequest::decode(&request(100)[..]).unwrap().events[0]
                .attributes
                .len(),
            1
        );
        PublishRequest::prescan(&request(100), &l).unwrap();
        let err = PublishRequest::prescan(&request(101), &l).unwrap_err();
        assert!(
            err.message().contains("max-attributes-per-event"),
            "{err:?}"
        );
    }

    #[test]
    fn ack_ids_are_counted_in_all_three_settle_requests() {
        let ids = |n: usize| (0..n).map(|i| format!("id{i}")).collect::<Vec<_>>();
        let l = limits(1, 1, 2);
        let ack = |n| {
            AckRequest {
                topic: "t".into(),
                subscription: "s".into(),
                ack_ids: ids(n),
            }
            .encode_to_vec()
        };
        let nack = |n| {
            NackRequest {
                ack_ids: ids(n),
                reason: "r".into(),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let modify = |n| {
            ModifyAckDeadlineRequest {
                ack_ids: ids(n),
                ack_deadline: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }
            .encode_to_vec()
        };
        AckRequest::prescan(&ack(2), &l).unwrap();
        NackRequest::prescan(&nack(2), &l).unwrap();
        ModifyAckDeadlineRequest::prescan(&modify(2), &l).unwrap();
        for err in [
            AckRequest::prescan(&ack(3), &l),
            NackRequest::prescan(&nack(3), &l),
            ModifyAckDeadlineRequest::prescan(&modify(3), &l),
        ] {
            let err = err.unwrap_err();
            assert!(err.message().contains("max-ack-ids-per-call"), "{err:?}");
        }
    }

    #[test]
    fn a_subscribe_stream_settle_counts_the_ack_ids_of_every_occurrence() {
        use eventbus_proto::v1::subscribe_stream_request::Request;
        let ids = |n: usize| (0..n).map(|i| format!("id{i}")).collect::<Vec<_>>();
        let settle = |request| {
            SubscribeStreamRequest {
                request: Some(request),
                request_id: 7,
            }
            .encode_to_vec()
        };
        let ack = |n| {
            settle(Request::Ack(AckRequest {
                ack_ids: ids(n),
                ..Default::default()
            }))
        };
        let l = limits(1, 1, 2);
        SubscribeStreamRequest::prescan(&ack(2), &l).unwrap();
        let err = SubscribeStreamRequest::prescan(&ack(3), &l).unwrap_err();
        assert!(err.message().contains("max-ack-ids-per-call"), "{err:?}");
        // prost merges a repeated oneof message field: two `ack`s of 2 ids
        // each decode as one of 4, and count as 4.
        let twice = [ack(2), ack(2)].concat();
        let decoded = SubscribeStreamRequest::decode(&twice[..]).unwrap();
        assert!(matches!(decoded.request, Some(Request::Ack(a)) if a.ack_ids.len() == 4));
        assert!(SubscribeStreamRequest::prescan(&twice, &l).is_err());
        let nack = settle(Request::Nack(NackRequest {
            ack_ids: ids(3),
            ..Default::default()
        }));
        assert!(SubscribeStreamRequest::prescan(&nack, &l).is_err());
        let subscribe = settle(Request::Subscribe(Default::default()));
        SubscribeStreamRequest::prescan(&subscribe, &l).unwrap();
    }

    #[test]
    fn malformed_or_group_encoded_input_is_refused_like_prost_refuses_it() {
        let l = Limits::default();
        let mut truncated = publish(2, 1);
        truncated.pop();
        let overlong_varint = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        for wire in [&truncated[..], &overlong_varint] {
            assert!(PublishRequest::decode(wire).is_err());
            let err = PublishRequest::prescan(wire, &l).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Internal);
        }
        // A group (wire type 3, field 9) followed by events: prost skips the
        // group and decodes the events, so the scan must not stop quietly at it.
        let mut grouped = vec![0x4b, 0x4c];
        grouped.extend(publish(2000, 0));
        assert_eq!(
            PublishRequest::decode(&grouped[..]).unwrap().events.len(),
            2000
        );
        let err = PublishRequest::prescan(&grouped, &l).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        PublishRequest::prescan(&[], &l).unwrap();
    }
}

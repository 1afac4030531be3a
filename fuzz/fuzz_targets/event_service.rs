//! Every request of `eventbus.v1.EventService`: prost decode, then the
//! handler's broker-free parse step (`eventbus_server::grpc::parse`) and the
//! broker's pure checks (names, ack ids), as a server runs them.
//!
//! The first byte picks the RPC (`% 6`); the rest is the request message
//! (for Replay, after one byte that picks the topic's partition count). Properties:
//! decoding stays within the request budget, a rejection is INVALID_ARGUMENT
//! with a message, and an accepted request converts without losing or
//! changing a field (exact times and durations, no overflow).
#![no_main]

use std::collections::BTreeMap;

use eventbus_fuzz::{
    check_name, decode_request, exact_duration, exact_millis, expect_invalid_input, parsed,
    with_mode,
};
use eventbus_log::delivery::SettleOp;
use eventbus_log::internals::ack_id::AckId;
use eventbus_log::options::MAX_ACK_DEADLINE;
use eventbus_log::SubscriptionId;
use eventbus_proto::v1::{
    replay_request, AckRequest, ModifyAckDeadlineRequest, NackRequest, PublishEvent,
    PublishRequest, ReplayRequest, SubscribeRequest,
};
use eventbus_server::grpc::parse;
use prost::Message;

eventbus_fuzz::fuzz_modes!(
    seeds: seeds,
    modes: [publish, subscribe, ack, nack, modify_ack_deadline, replay]
);

fn publish(body: &[u8]) {
    let Some(req) = decode_request::<PublishRequest>(body) else {
        return;
    };
    check_name("topic", &req.topic);
    let wire = req.events.clone();
    parsed(
        parse::publish(req.events, &parse::Limits::default()),
        |events| {
            assert_eq!(events.len(), wire.len());
            for (e, w) in events.iter().zip(&wire) {
                assert_eq!(e.key, w.key);
                assert_eq!(e.event_type, w.r#type);
                assert_eq!(e.payload, w.payload);
                assert_eq!(e.content_type, w.content_type);
                assert_eq!(e.idempotency_key, w.idempotency_key);
                let attributes: BTreeMap<_, _> = w.attributes.clone().into_iter().collect();
                assert_eq!(e.attributes, attributes);
                assert_eq!(
                    e.event_time.map(i128::from),
                    w.event_time.as_ref().map(exact_millis),
                    "event_time changed in conversion"
                );
            }
        },
    );
}

fn subscribe(body: &[u8]) {
    let Some(req) = decode_request::<SubscribeRequest>(body) else {
        return;
    };
    check_name("topic", &req.topic);
    check_name("subscription", &req.subscription);
}

/// Names and ack ids, which the broker checks for Ack, Nack and
/// ModifyAckDeadline before it touches a lease.
fn settle_target(topic: &str, subscription: &str, ack_ids: &[String]) {
    check_name("topic", topic);
    check_name("subscription", subscription);
    for id in ack_ids {
        match AckId::decode(id) {
            Ok(decoded) => assert_eq!(&decoded.encode(), id),
            Err(e) => expect_invalid_input(&e),
        }
    }
}

fn ack(body: &[u8]) {
    let Some(req) = decode_request::<AckRequest>(body) else {
        return;
    };
    settle_target(&req.topic, &req.subscription, &req.ack_ids);
}

fn nack(body: &[u8]) {
    let Some(req) = decode_request::<NackRequest>(body) else {
        return;
    };
    settle_target(&req.topic, &req.subscription, &req.ack_ids);
    parsed(parse::nack(&req), |op| match op {
        SettleOp::DeadLetter { reason } => {
            assert!(req.dead_letter);
            assert_eq!(reason, req.reason);
        }
        SettleOp::Nack { delay, reason } => {
            assert!(!req.dead_letter);
            assert_eq!(reason, req.reason);
            assert_eq!(delay, req.delay.as_ref().map(exact_duration));
            assert!(delay.is_none_or(|d| d <= MAX_ACK_DEADLINE));
        }
        other => panic!("a nack became {other:?}"),
    });
}

fn modify_ack_deadline(body: &[u8]) {
    let Some(req) = decode_request::<ModifyAckDeadlineRequest>(body) else {
        return;
    };
    settle_target(&req.topic, &req.subscription, &req.ack_ids);
    parsed(parse::modify_ack_deadline(&req), |deadline| {
        let wire = req.ack_deadline.as_ref().expect("a deadline is required");
        assert_eq!(deadline, exact_duration(wire));
        assert!(deadline <= MAX_ACK_DEADLINE);
    });
}

fn replay(data: &[u8]) {
    let Some((&n, body)) = data.split_first() else {
        return;
    };
    let partition_count = 1 + u32::from(n % 16);
    let Some(req) = decode_request::<ReplayRequest>(body) else {
        return;
    };
    check_name("topic", &req.topic);
    parsed(
        parse::replay(&req, partition_count, &parse::Limits::default()),
        |plan| {
            assert!(!(req.follow && req.end.is_some()));
            assert!(plan.partitions.iter().all(|p| *p < partition_count));
            if req.partitions.is_empty() {
                assert_eq!(plan.partitions, (0..partition_count).collect::<Vec<_>>());
            } else {
                assert_eq!(plan.partitions, req.partitions);
            }
            let start = match &req.start {
                Some(replay_request::Start::StartTime(t)) => Some(exact_millis(t)),
                _ => None,
            };
            assert_eq!(plan.start_time.map(i128::from), start);
            let end = match &req.end {
                Some(replay_request::End::EndTime(t)) => Some(exact_millis(t)),
                _ => None,
            };
            assert_eq!(plan.end_time.map(i128::from), end);
        },
    );
}

/// One well-formed request per RPC, encoded by prost.
fn seeds() -> Vec<Vec<u8>> {
    let ack_id = AckId {
        subscription: SubscriptionId(1),
        partition: 0,
        offset: 7,
        generation: 1,
    }
    .encode();
    let event = eventbus_fuzz::sample_event();
    let publish = PublishRequest {
        topic: "orders".into(),
        events: vec![PublishEvent {
            key: event.key,
            r#type: event.event_type,
            payload: event.payload,
            content_type: event.content_type,
            attributes: event.attributes.into_iter().collect(),
            idempotency_key: event.idempotency_key,
            event_time: Some(parse::millis_to_timestamp(1_700_000_000_123)),
        }],
    };
    let deadline = Some(prost_types::Duration {
        seconds: 30,
        nanos: 0,
    });
    let (topic, subscription) = ("orders".to_string(), "billing".to_string());
    vec![
        with_mode(0, &publish.encode_to_vec()),
        with_mode(
            1,
            &SubscribeRequest {
                topic: topic.clone(),
                subscription: subscription.clone(),
                max_in_flight: 64,
            }
            .encode_to_vec(),
        ),
        with_mode(
            2,
            &AckRequest {
                topic: topic.clone(),
                subscription: subscription.clone(),
                ack_ids: vec![ack_id.clone()],
            }
            .encode_to_vec(),
        ),
        with_mode(
            3,
            &NackRequest {
                topic: topic.clone(),
                subscription: subscription.clone(),
                ack_ids: vec![ack_id.clone()],
                delay: deadline,
                reason: "downstream timeout".into(),
                dead_letter: false,
            }
            .encode_to_vec(),
        ),
        with_mode(
            4,
            &ModifyAckDeadlineRequest {
                topic: topic.clone(),
                subscription,
                ack_ids: vec![ack_id],
                ack_deadline: deadline,
            }
            .encode_to_vec(),
        ),
        // Replay on a topic of 4 partitions.
        with_mode(
            5,
            &with_mode(
                3,
                &ReplayRequest {
                    topic,
                    partitions: vec![0, 2],
                    types: vec!["order.*".into()],
                    follow: false,
                    start: Some(replay_request::Start::StartTime(
                        parse::millis_to_timestamp(1_700_000_000_000),
                    )),
                    end: Some(replay_request::End::EndOffset(100)),
                }
                .encode_to_vec(),
            ),
        ),
    ]
}

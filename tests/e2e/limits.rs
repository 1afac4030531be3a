//! Every client-controlled size is bounded: a request over a limit gets
//! INVALID_ARGUMENT (with a BadRequest detail naming the field) and a server-wide
//! count over its cap gets RESOURCE_EXHAUSTED; either message names the limit
//! and its config key. Out-of-range times and durations never overflow.

use eventbus_proto::bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use eventbus_tests::v1::{self, PublishRequest};
use eventbus_tests::TestServer;
use tonic::Code;

use crate::support::*;

/// The BadRequest field of an INVALID_ARGUMENT status.
fn bad_field(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    let details = status.get_error_details();
    let bad = details.bad_request().expect("a BadRequest detail");
    bad.field_violations[0].field.clone()
}

/// A timestamp whose seconds overflow when multiplied into milliseconds.
fn far_future() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: 0,
    }
}

#[tokio::test]
async fn out_of_range_timestamps_are_invalid_argument() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    publish(&mut events, "t", vec![event("", "x", "p")]).await;
    let _s = subscribe(&mut events, "t", "s", 1).await;

    let mut ev = event("", "x", "p");
    ev.event_time = Some(far_future());
    let err = assert_status(
        events
            .publish(PublishRequest {
                topic: "t".into(),
                events: vec![ev],
            })
            .await,
        Code::InvalidArgument,
        "9999-12-31",
    );
    assert_eq!(bad_field(&err), "events.event_time");

    assert_status(
        admin
            .seek_subscription(v1::SeekSubscriptionRequest {
                topic: "t".into(),
                subscription: "s".into(),
                target: Some(v1::seek_subscription_request::Target::Time(far_future())),
            })
            .await,
        Code::InvalidArgument,
        "9999-12-31",
    );
    assert_status(
        events
            .replay(v1::ReplayRequest {
                topic: "t".into(),
                start: Some(v1::replay_request::Start::StartTime(far_future())),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "9999-12-31",
    );
    assert_status(
        admin
            .list_dead_letters(v1::ListDeadLettersRequest {
                topic: "t".into(),
                subscription: "s".into(),
                filter: Some(v1::DeadLetterFilter {
                    end_time: Some(far_future()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "9999-12-31",
    );
    // The server is unharmed.
    publish(&mut events, "t", vec![event("", "x", "after")]).await;
}

/// Seconds whose milliseconds are 2^64 + 384: `as_millis() as u64` truncates
/// them to 384 ms, which would pass every "at most" check.
const WRAPPING_SECONDS: i64 = 18_446_744_073_709_552;

#[tokio::test]
async fn durations_too_long_for_milliseconds_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    let huge = prost_types::Duration {
        seconds: WRAPPING_SECONDS,
        nanos: 0,
    };
    let err = assert_status(
        admin
            .create_subscription(v1::CreateSubscriptionRequest {
                topic: "t".into(),
                subscription: "s".into(),
                retry_policy: Some(v1::RetryPolicy {
                    min_backoff: Some(duration(0.1)),
                    max_backoff: Some(huge),
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "out of range",
    );
    assert_eq!(bad_field(&err), "retry_policy.max_backoff");
    assert_status(
        admin
            .create_topic(v1::CreateTopicRequest {
                topic: "kept".into(),
                partitions: 1,
                retention: Some(v1::Retention {
                    max_age: Some(huge),
                    max_bytes: 0,
                }),
            })
            .await,
        Code::InvalidArgument,
        "out of range",
    );
}

/// Sends a pre-encoded request and returns the raw response, so that a test
/// can send a message it never builds as structs (millions of events).
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Calls `method` of EventService with an already encoded request body.
async fn call_raw(
    channel: tonic::transport::Channel,
    method: &'static str,
    body: Bytes,
) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A PublishRequest of `topic` and `n` empty events, encoded by hand: each
/// event is the 2 bytes `0x12 0x00` (field 2, length 0).
fn empty_events_request(topic: &str, n: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + topic.len() + 2 * n);
    b.put_u8(0x0a); // field 1 (topic), length-delimited
    b.put_u8(topic.len() as u8);
    b.put_slice(topic.as_bytes());
    for _ in 0..n {
        b.put_slice(&[0x12, 0x00]);
    }
    b.freeze()
}

/// Peak resident set size (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");

/// Issue 11, "Limits" test 1: a 16 MiB Publish of empty events (8 million
/// 2-byte submessages) is refused before prost materialises them; the
/// server's peak RSS grows by less than 64 MiB.
#[tokio::test]
async fn a_16_mib_publish_of_empty_events_is_refused_without_the_memory() {
    let (_dir, data) = eventbus_tests::temp_dir();
    let server = eventbus_tests::ChildServer::start(BIN, &data, &[]).await;
    let channel = server.channel().await;
    let mut events =
        eventbus_tests::v1::event_service_client::EventServiceClient::new(channel.clone());
    publish(&mut events, "rss", vec![event("k", "warm", "up")]).await;
    let before = peak_rss_kib(server.pid());

    // The default max-request-bytes is 16 MiB; fill it exactly.
    let n = (16 * 1024 * 1024 - 5) / 2;
    let body = empty_events_request("rss", n);
    assert!(body.len() <= 16 * 1024 * 1024);
    let res = call_raw(channel.clone(), "/eventbus.v1.EventService/Publish", body).await;
    let after = peak_rss_kib(server.pid());
    let grown_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    println!(
        "16 MiB publish of {n} empty events: peak RSS {} MiB -> {} MiB (+{grown_mib:.1} MiB)",
        before / 1024,
        after / 1024
    );
    let err = assert_status(res, Code::InvalidArgument, "max-events-per-publish");
    assert_eq!(bad_field(&err), "events");
    assert!(grown_mib < 64.0, "peak RSS grew by {grown_mib:.1} MiB");

    // Nothing was written, and the server still serves (same key, same
    // partition: the next offset is 1).
    let r = publish(&mut events, "rss", vec![event("k", "after", "x")]).await;
    assert_eq!(r[0].offset, 1);
}

/// Asserts the exact rejection of a request over a limit: `code`, a message
/// naming the config `key`, and (for INVALID_ARGUMENT) a BadRequest detail on
/// `field`, or (for RESOURCE_EXHAUSTED) a QuotaFailure naming the key.
fn assert_limit<T: std::fmt::Debug>(
    res: Result<T, tonic::Status>,
    code: Code,
    field: &str,
    key: &str,
) {
    let err = assert_status(res, code, key);
    if code == Code::InvalidArgument {
        assert_eq!(bad_field(&err), field, "{err:?}");
    } else {
        use tonic_types::StatusExt as _;
        let details = err.get_error_details();
        let quota = details.quota_failure().expect("a QuotaFailure detail");
        assert_eq!(quota.violations[0].subject, key);
    }
}

/// A server whose limits are small enough to hit with small requests.
async fn small_limits() -> TestServer {
    TestServer::start_with(eventbus_tests::DataDir::Fresh, |c| {
        c.max_events_per_publish = 3;
        c.max_attributes_per_event = 2;
        c.max_attribute_bytes = 16;
        c.max_filter_patterns = 2;
        c.max_filter_conditions = 2;
        c.max_filter_bytes = 32;
        c.max_ack_ids_per_call = 2;
        c.max_reason_bytes = 8;
        c.max_page_size = 2;
        c.max_topics = 3;
        c.max_subscriptions = 2;
    })
    .await
}

fn publish_req(topic: &str, events: Vec<v1::PublishEvent>) -> PublishRequest {
    PublishRequest {
        topic: topic.into(),
        events,
    }
}

#[tokio::test]
async fn publish_limits_are_invalid_argument_and_create_nothing() {
    let server = small_limits().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    let plain = || v1::PublishEvent {
        r#type: "t".into(),
        ..Default::default()
    };
    let with = |change: fn(&mut v1::PublishEvent)| {
        let mut e = plain();
        change(&mut e);
        vec![e]
    };
    let cases: Vec<(Vec<v1::PublishEvent>, &str, &str)> = vec![
        (
            vec![plain(), plain(), plain(), plain()],
            "events",
            "max-events-per-publish",
        ),
        (
            with(|e| {
                e.attributes = [("a", "1"), ("b", "2"), ("c", "3")]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into()
            }),
            "events.attributes",
            "max-attributes-per-event",
        ),
        (
            with(|e| e.attributes = [("k".to_string(), "x".repeat(16))].into()),
            "events.attributes",
            "max-attribute-bytes",
        ),
        (
            with(|e| e.key = "k".repeat(1025)),
            "events.key",
            "max-key-bytes",
        ),
        (
            with(|e| e.r#type = "t".repeat(257)),
            "events.type",
            "max-type-bytes",
        ),
        (
            with(|e| e.content_type = "c".repeat(257)),
            "events.content_type",
            "max-content-type-bytes",
        ),
        (
            with(|e| e.idempotency_key = "i".repeat(257)),
            "events.idempotency_key",
            "max-idempotency-key-bytes",
        ),
    ];
    for (batch, field, key) in cases {
        assert_limit(
            events.publish(publish_req("fresh", batch)).await,
            Code::InvalidArgument,
            field,
            key,
        );
    }
    // Checked before the topic is auto-created.
    assert_status(
        admin
            .get_topic(v1::GetTopicRequest {
                topic: "fresh".into(),
            })
            .await,
        Code::NotFound,
        "fresh",
    );
    // At the limits, everything is accepted.
    let mut full = plain();
    full.key = "k".repeat(1024);
    full.attributes = [
        ("a".to_string(), "1".repeat(7)),
        ("b".to_string(), "2".repeat(6)),
    ]
    .into();
    let r = publish(&mut events, "fresh", vec![full, plain(), plain()]).await;
    assert_eq!(r.len(), 3);
}

#[tokio::test]
async fn settle_limits_are_invalid_argument() {
    let server = small_limits().await;
    let mut events = server.events();
    publish(&mut events, "t", vec![event("", "x", "p")]).await;
    let mut stream = subscribe(&mut events, "t", "s", 1).await;
    let d = recv_n(&mut stream, 1).await.remove(0);
    let three = vec![d.ack_id.clone(); 3];
    assert_limit(
        events
            .ack(v1::AckRequest {
                topic: "t".into(),
                subscription: "s".into(),
                ack_ids: three.clone(),
            })
            .await,
        Code::InvalidArgument,
        "ack_ids",
        "max-ack-ids-per-call",
    );
    assert_limit(
        events
            .nack(v1::NackRequest {
                topic: "t".into(),
                subscription: "s".into(),
                ack_ids: three.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "ack_ids",
        "max-ack-ids-per-call",
    );
    assert_limit(
        events
            .modify_ack_deadline(v1::ModifyAckDeadlineRequest {
                topic: "t".into(),
                subscription: "s".into(),
                ack_ids: three,
                ack_deadline: Some(duration(10.0)),
            })
            .await,
        Code::InvalidArgument,
        "ack_ids",
        "max-ack-ids-per-call",
    );
    assert_limit(
        events
            .nack(v1::NackRequest {
                topic: "t".into(),
                subscription: "s".into(),
                ack_ids: vec![d.ack_id.clone()],
                dead_letter: true,
                reason: "r".repeat(9),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "reason",
        "max-reason-bytes",
    );
    // The lease is intact: two ids (the limit) are fine.
    events
        .ack(v1::AckRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ack_ids: vec![d.ack_id.clone(); 2],
        })
        .await
        .expect("ack at the limit");
}

#[tokio::test]
async fn filter_limits_are_invalid_argument_everywhere_filters_are_taken() {
    let server = small_limits().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    publish(&mut events, "t", vec![event("", "x", "p")]).await;
    let s = |s: &str| s.to_string();
    let eq = |k: &str, v: &str| v1::AttributeCondition {
        key: s(k),
        condition: Some(v1::attribute_condition::Condition::Eq(s(v))),
    };
    let filters = [
        (
            v1::Filter {
                types: vec![s("a"), s("b"), s("c")],
                attributes: vec![],
            },
            "filter.types",
            "max-filter-patterns",
        ),
        (
            v1::Filter {
                types: vec![],
                attributes: vec![eq("a", ""), eq("b", ""), eq("c", "")],
            },
            "filter.attributes",
            "max-filter-conditions",
        ),
        (
            v1::Filter {
                types: vec![],
                attributes: vec![v1::AttributeCondition {
                    key: s("k"),
                    condition: Some(v1::attribute_condition::Condition::In(v1::StringList {
                        values: vec![s(""); 3],
                    })),
                }],
            },
            "filter.attributes",
            "max-filter-conditions",
        ),
        (
            v1::Filter {
                types: vec![s(&"p".repeat(20))],
                attributes: vec![eq("key", &"v".repeat(10))],
            },
            "filter",
            "max-filter-bytes",
        ),
    ];
    admin
        .create_subscription(v1::CreateSubscriptionRequest {
            topic: "t".into(),
            subscription: "ok".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for (filter, field, key) in filters {
        assert_limit(
            admin
                .create_subscription(v1::CreateSubscriptionRequest {
                    topic: "t".into(),
                    subscription: "s".into(),
                    filter: Some(filter.clone()),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            field,
            key,
        );
        assert_limit(
            admin
                .update_subscription(v1::UpdateSubscriptionRequest {
                    topic: "t".into(),
                    subscription: "ok".into(),
                    filter: Some(filter),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![s("filter")],
                    }),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            field,
            key,
        );
    }
    let three = vec![s("a"), s("b"), s("c")];
    assert_limit(
        events
            .replay(v1::ReplayRequest {
                topic: "t".into(),
                types: three.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "types",
        "max-filter-patterns",
    );
    assert_limit(
        admin
            .list_dead_letters(v1::ListDeadLettersRequest {
                topic: "t".into(),
                subscription: "ok".into(),
                filter: Some(v1::DeadLetterFilter {
                    types: three,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "filter.types",
        "max-filter-patterns",
    );
    assert_limit(
        admin
            .purge_dead_letters(v1::PurgeDeadLettersRequest {
                topic: "t".into(),
                subscription: "ok".into(),
                filter: Some(v1::DeadLetterFilter {
                    reason_contains: "r".repeat(33),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "filter",
        "max-filter-bytes",
    );
}

#[tokio::test]
async fn duplicate_partitions_are_invalid_argument() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    publish(&mut events, "t", vec![event("", "x", "p")]).await;
    let _s = subscribe(&mut events, "t", "s", 1).await;
    assert_limit(
        events
            .replay(v1::ReplayRequest {
                topic: "t".into(),
                partitions: vec![1, 0, 1],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "partitions",
        "named twice",
    );
    let at = |partition| v1::PartitionOffset {
        partition,
        offset: 0,
    };
    assert_limit(
        admin
            .seek_subscription(v1::SeekSubscriptionRequest {
                topic: "t".into(),
                subscription: "s".into(),
                target: Some(v1::seek_subscription_request::Target::Offsets(
                    v1::PartitionOffsets {
                        offsets: vec![at(2), at(2)],
                    },
                )),
            })
            .await,
        Code::InvalidArgument,
        "offsets",
        "named twice",
    );
}

#[tokio::test]
async fn pages_are_capped_and_dead_letter_ids_bounded_by_max_page_size() {
    let server = small_limits().await;
    let mut admin = server.admin();
    for t in ["a", "b", "c"] {
        admin
            .create_topic(v1::CreateTopicRequest {
                topic: t.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // A page_size over the limit is capped (as the contract says), not refused.
    let page = admin
        .list_topics(v1::ListTopicsRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.topics.len(), 2);
    assert!(!page.next_page_token.is_empty());
    let _s = subscribe(&mut server.events(), "a", "s", 1).await;
    assert_limit(
        admin
            .purge_dead_letters(v1::PurgeDeadLettersRequest {
                topic: "a".into(),
                subscription: "s".into(),
                ids: vec!["1".into(), "2".into(), "3".into()],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "ids",
        "max-page-size",
    );
}

#[tokio::test]
async fn server_wide_counts_are_resource_exhausted_until_something_is_deleted() {
    let server = small_limits().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    let create = |t: &str| v1::CreateTopicRequest {
        topic: t.into(),
        ..Default::default()
    };
    for t in ["a", "b", "c"] {
        admin.create_topic(create(t)).await.unwrap();
    }
    assert_limit(
        admin.create_topic(create("d")).await,
        Code::ResourceExhausted,
        "",
        "max-topics",
    );
    // Auto-creation counts too.
    assert_limit(
        events
            .publish(publish_req("d", vec![event("", "x", "p")]))
            .await,
        Code::ResourceExhausted,
        "",
        "max-topics",
    );
    admin
        .delete_topic(v1::DeleteTopicRequest { topic: "c".into() })
        .await
        .unwrap();
    admin.create_topic(create("d")).await.unwrap();

    // Subscriptions are counted over all topics.
    let sub = |t: &str, s: &str| v1::CreateSubscriptionRequest {
        topic: t.into(),
        subscription: s.into(),
        ..Default::default()
    };
    admin.create_subscription(sub("a", "s1")).await.unwrap();
    admin.create_subscription(sub("b", "s2")).await.unwrap();
    assert_limit(
        admin.create_subscription(sub("d", "s3")).await,
        Code::ResourceExhausted,
        "",
        "max-subscriptions",
    );
    assert_limit(
        events
            .subscribe(v1::SubscribeRequest {
                topic: "a".into(),
                subscription: "auto".into(),
                max_in_flight: 0,
            })
            .await,
        Code::ResourceExhausted,
        "",
        "max-subscriptions",
    );
    admin
        .delete_subscription(v1::DeleteSubscriptionRequest {
            topic: "a".into(),
            subscription: "s1".into(),
        })
        .await
        .unwrap();
    admin.create_subscription(sub("d", "s3")).await.unwrap();
}

#[tokio::test]
async fn list_subscriptions_pages_with_stats() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    publish(&mut events, "t", vec![event("", "x", "p")]).await;
    let names = ["e", "a", "d", "b", "c"];
    for s in names {
        admin
            .create_subscription(v1::CreateSubscriptionRequest {
                topic: "t".into(),
                subscription: s.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = admin
            .list_subscriptions(v1::ListSubscriptionsRequest {
                topic: "t".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        for s in &page.subscriptions {
            assert_eq!(s.stats.as_ref().expect("stats").backlog, 1, "{s:?}");
        }
        pages.push(
            page.subscriptions
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
}

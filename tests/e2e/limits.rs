//! Every client-controlled size is bounded: a request over a limit gets
//! INVALID_ARGUMENT (with a BadRequest detail naming the field) and a server-wide
//! count over its cap gets RESOURCE_EXHAUSTED; either message names the limit
//! and its config key. Out-of-range times and durations never overflow.

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

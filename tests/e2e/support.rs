//! Small client-side helpers shared by the tests.

use std::collections::HashMap;
use std::time::Duration;

use eventbus_tests::v1::admin_service_client::AdminServiceClient;
use eventbus_tests::v1::event_service_client::EventServiceClient;
use eventbus_tests::v1::{self, Delivery, PublishEvent, PublishRequest, SubscribeRequest};
use eventbus_tests::TestServer;
use tonic::transport::Channel;
use tonic::Streaming;

/// Generous upper bound for anything that should happen "soon"; tests never
/// assert durations, they only refuse to hang.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Asserts that `res` failed with `code` and a message containing `needle`;
/// returns the status for further checks.
pub fn assert_status<T: std::fmt::Debug>(
    res: Result<T, tonic::Status>,
    code: tonic::Code,
    needle: &str,
) -> tonic::Status {
    let err = res.expect_err("expected an error");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(
        err.message().contains(needle),
        "message {:?} should mention {needle:?}",
        err.message()
    );
    err
}

pub fn event(key: &str, ty: &str, payload: impl Into<Vec<u8>>) -> PublishEvent {
    PublishEvent {
        key: key.to_string(),
        r#type: ty.to_string(),
        payload: payload.into().into(),
        content_type: "text/plain".into(),
        attributes: HashMap::from([("source".to_string(), "e2e".to_string())]),
        ..Default::default()
    }
}

/// Publishes `events` to `topic` and returns the results.
pub async fn publish(
    client: &mut EventServiceClient<Channel>,
    topic: &str,
    events: Vec<PublishEvent>,
) -> Vec<v1::PublishResult> {
    client
        .publish(PublishRequest {
            topic: topic.into(),
            events,
        })
        .await
        .expect("publish")
        .into_inner()
        .results
}

pub async fn subscribe(
    client: &mut EventServiceClient<Channel>,
    topic: &str,
    sub: &str,
    max_in_flight: u32,
) -> Streaming<v1::SubscribeResponse> {
    client
        .subscribe(SubscribeRequest {
            topic: topic.into(),
            subscription: sub.into(),
            max_in_flight,
        })
        .await
        .expect("subscribe")
        .into_inner()
}

/// Receives deliveries until `n` have arrived.
pub async fn recv_n(stream: &mut Streaming<v1::SubscribeResponse>, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while out.len() < n {
            let msg = stream
                .message()
                .await
                .expect("stream ok")
                .expect("stream open");
            out.extend(msg.deliveries);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("received only {} of {n} deliveries", out.len()));
    out
}

/// Asserts that nothing arrives on `stream` within `wait`.
pub async fn expect_silence(stream: &mut Streaming<v1::SubscribeResponse>, wait: Duration) {
    if let Ok(msg) = tokio::time::timeout(wait, stream.message()).await {
        let msg = msg.expect("stream ok");
        panic!("expected no deliveries, got {msg:?}");
    }
}

/// Acks `deliveries`, in calls of at most 1000 ids (the default
/// max-ack-ids-per-call).
pub async fn ack(
    client: &mut EventServiceClient<Channel>,
    topic: &str,
    sub: &str,
    deliveries: &[Delivery],
) {
    for chunk in deliveries.chunks(1000) {
        client
            .ack(v1::AckRequest {
                topic: topic.into(),
                subscription: sub.into(),
                ack_ids: chunk.iter().map(|d| d.ack_id.clone()).collect(),
            })
            .await
            .expect("ack");
    }
}

/// A subscription's stats, through any admin client (also a child server's).
pub async fn subscription_stats(
    admin: &mut AdminServiceClient<Channel>,
    topic: &str,
    sub: &str,
) -> v1::SubscriptionStats {
    admin
        .get_subscription(v1::GetSubscriptionRequest {
            topic: topic.into(),
            subscription: sub.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap()
        .stats
        .unwrap()
}

/// The first page of a subscription's dead-letter queue.
pub async fn dead_letters(server: &TestServer, topic: &str, sub: &str) -> Vec<v1::DeadLetter> {
    server
        .admin()
        .list_dead_letters(v1::ListDeadLettersRequest {
            topic: topic.into(),
            subscription: sub.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

pub fn payload(d: &Delivery) -> String {
    String::from_utf8(d.event.as_ref().expect("event").payload.to_vec()).expect("utf8")
}

/// `len` bytes that do not compress (xorshift64 from `seed`; the same bytes
/// for the same seed): RocksDB compresses SST files, so a test that must
/// fill a disk or damage a block needs payloads it cannot shrink.
pub fn incompressible_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

pub fn duration(secs: f64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: secs.trunc() as i64,
        nanos: (secs.fract() * 1e9) as i32,
    }
}

/// Every event of `topic` from offset 0 to the tail, in partition then
/// offset order.
pub async fn replay_all(channel: Channel, topic: &str) -> Vec<v1::Event> {
    let mut stream = EventServiceClient::new(channel)
        .replay(v1::ReplayRequest {
            topic: topic.into(),
            start: Some(v1::replay_request::Start::StartOffset(0)),
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner();
    let mut out = Vec::new();
    while let Some(page) = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("replay answers")
        .expect("replay ok")
    {
        out.extend(page.events);
    }
    out.sort_by_key(|e| (e.partition, e.offset));
    out
}

/// Every topic, by name.
pub async fn sorted_topics(channel: Channel) -> Vec<v1::Topic> {
    let mut t = AdminServiceClient::new(channel)
        .list_topics(v1::ListTopicsRequest::default())
        .await
        .expect("list topics")
        .into_inner()
        .topics;
    t.sort_by(|a, b| a.name.cmp(&b.name));
    t
}

/// Runs `eventbus <subcommand> <args>` (the binary under test), for at
/// most 2 minutes; (success, stdout, stderr).
pub async fn run_cli(subcommand: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_eventbus-under-test"))
            .arg(subcommand)
            .args(args)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{subcommand} finishes within 2 minutes"))
    .unwrap_or_else(|e| panic!("run {subcommand}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

//! PublishStream: each request of the stream is a Publish of its own,
//! answered by request id; a failed request does not end the stream.

use eventbus_tests::v1::{self, PublishStreamRequest, PublishStreamResponse};
use eventbus_tests::{DataDir, TestServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use crate::support::*;

pub fn request(id: u64, topic: &str, events: Vec<v1::PublishEvent>) -> PublishStreamRequest {
    PublishStreamRequest {
        topic: topic.into(),
        events,
        request_id: id,
    }
}

/// Opens a PublishStream fed from the returned sender.
pub async fn open(
    mut client: v1::event_service_client::EventServiceClient<tonic::transport::Channel>,
) -> (
    mpsc::Sender<PublishStreamRequest>,
    Streaming<PublishStreamResponse>,
) {
    let (tx, rx) = mpsc::channel(16);
    let answers = client
        .publish_stream(ReceiverStream::new(rx))
        .await
        .expect("PublishStream opens")
        .into_inner();
    (tx, answers)
}

/// The next answer, within PATIENCE.
pub async fn next_answer(answers: &mut Streaming<PublishStreamResponse>) -> PublishStreamResponse {
    tokio::time::timeout(PATIENCE, answers.message())
        .await
        .expect("an answer in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

fn events(n: usize) -> Vec<v1::PublishEvent> {
    (0..n)
        .map(|i| event(&format!("k{i}"), "order.created", format!("e{i}")))
        .collect()
}

#[tokio::test]
async fn each_request_is_a_publish_and_a_failed_one_leaves_the_stream_open() {
    let server = TestServer::start().await;
    let (tx, mut answers) = open(server.events()).await;
    tx.send(request(7, "t", events(3))).await.unwrap();
    tx.send(request(8, "t", Vec::new())).await.unwrap();
    tx.send(request(9, "u", events(2))).await.unwrap();
    let mut by_id = std::collections::HashMap::new();
    for _ in 0..3 {
        let a = next_answer(&mut answers).await;
        by_id.insert(a.request_id, a);
    }
    // The empty batch fails as a unary Publish would, and only it.
    let failed = by_id[&8].failure.as_ref().expect("request 8 failed");
    assert_eq!(failed.code, Code::InvalidArgument as i32, "{failed:?}");
    assert!(failed.message.contains("events"), "{failed:?}");
    assert!(by_id[&8].results.is_empty());
    for (id, n) in [(7, 3), (9, 2)] {
        let a = &by_id[&id];
        assert!(a.failure.is_none(), "{a:?}");
        assert_eq!(a.results.len(), n, "{a:?}");
        assert!(a.results.iter().all(|r| !r.event_id.is_empty()));
    }
    // The stream is still open after the failure: one more request.
    tx.send(request(10, "t", events(1))).await.unwrap();
    let a = next_answer(&mut answers).await;
    assert_eq!((a.request_id, a.results.len()), (10, 1), "{a:?}");
    // Closing the input ends the stream with OK once everything is answered.
    drop(tx);
    let end = tokio::time::timeout(PATIENCE, answers.message()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");

    // Everything answered OK is stored, in the order of each topic's results.
    let stored = replay_all(server.channel(), "t").await;
    let payloads: Vec<&[u8]> = stored.iter().map(|e| &e.payload[..]).collect();
    assert_eq!(payloads.len(), 4, "{payloads:?}");
    assert_eq!(replay_all(server.channel(), "u").await.len(), 2);
}

#[tokio::test]
async fn a_request_over_a_wire_limit_ends_the_stream_after_the_ones_before() {
    let server = TestServer::start_with(DataDir::Fresh, |c| c.max_events_per_publish = 5).await;
    let (tx, mut answers) = open(server.events()).await;
    tx.send(request(1, "t", events(5))).await.unwrap();
    tx.send(request(2, "t", events(6))).await.unwrap();
    let first = next_answer(&mut answers).await;
    assert_eq!((first.request_id, first.results.len()), (1, 5), "{first:?}");
    let end = tokio::time::timeout(PATIENCE, answers.message())
        .await
        .expect("the stream ends in time");
    assert_status(end, Code::InvalidArgument, "max-events-per-publish");
    assert_eq!(replay_all(server.channel(), "t").await.len(), 5);
}

#[tokio::test]
async fn a_message_over_max_request_bytes_ends_the_stream_with_out_of_range() {
    let server = TestServer::start_with(DataDir::Fresh, |c| {
        c.max_event_bytes = 64 * 1024;
        c.max_request_bytes = 128 * 1024;
    })
    .await;
    let (tx, mut answers) = open(server.events()).await;
    tx.send(request(1, "t", events(1))).await.unwrap();
    assert_eq!(next_answer(&mut answers).await.results.len(), 1);
    let big = (0..3)
        .map(|i| event("k", "t", vec![b'x'; 60 * 1024 + i]))
        .collect();
    tx.send(request(2, "t", big)).await.unwrap();
    let end = tokio::time::timeout(PATIENCE, answers.message())
        .await
        .expect("the stream ends in time");
    let status = end.expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(replay_all(server.channel(), "t").await.len(), 1);
}

/// The server holds at most 16 MiB of a stream's unanswered requests: the
/// third 9 MB request waits for an answer, then everything is stored.
#[tokio::test]
async fn requests_over_the_streams_byte_budget_are_read_in_turn() {
    let server = TestServer::start().await;
    let (tx, mut answers) = open(server.events()).await;
    let nine_mb = |i: u8| {
        (0..9)
            .map(|j| event(&format!("k{j}"), "t", vec![i; 1_000_000]))
            .collect()
    };
    for id in 1..=3 {
        tx.send(request(id, "t", nine_mb(id as u8))).await.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let a = next_answer(&mut answers).await;
        assert!(a.failure.is_none() && a.results.len() == 9, "{a:?}");
        ids.push(a.request_id);
    }
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(replay_all(server.channel(), "t").await.len(), 27);
}

#[tokio::test]
async fn the_stream_ends_with_unavailable_at_shutdown() {
    let mut server = TestServer::start().await;
    let (tx, mut answers) = open(server.events()).await;
    tx.send(request(1, "t", events(1))).await.unwrap();
    assert_eq!(next_answer(&mut answers).await.results.len(), 1);
    server.begin_shutdown();
    let end = tokio::time::timeout(PATIENCE, answers.message())
        .await
        .expect("the stream ends in time");
    assert_status(end, Code::Unavailable, "shutting down");
}

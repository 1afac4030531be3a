//! SubscribeStream: the first request joins a subscription, every later one
//! settles deliveries as its unary call would, answered by request id; a
//! failed settle does not end the stream.

use std::collections::HashMap;
use std::time::Duration;

use eventbus_tests::v1::subscribe_stream_request::Request;
use eventbus_tests::v1::{self, SubscribeStreamRequest, SubscribeStreamResponse};
use eventbus_tests::{DataDir, TestServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use crate::support::*;

fn join(topic: &str, sub: &str, max_in_flight: u32) -> SubscribeStreamRequest {
    SubscribeStreamRequest {
        request: Some(Request::Subscribe(v1::SubscribeRequest {
            topic: topic.into(),
            subscription: sub.into(),
            max_in_flight,
        })),
        request_id: 0,
    }
}

fn ack<'a>(
    id: u64,
    deliveries: impl IntoIterator<Item = &'a v1::Delivery>,
) -> SubscribeStreamRequest {
    SubscribeStreamRequest {
        request: Some(Request::Ack(v1::AckRequest {
            ack_ids: deliveries.into_iter().map(|d| d.ack_id.clone()).collect(),
            ..Default::default()
        })),
        request_id: id,
    }
}

/// Opens a SubscribeStream on `topic`/`sub`, fed from the returned sender.
async fn open(
    server: &TestServer,
    topic: &str,
    sub: &str,
    max_in_flight: u32,
) -> (
    mpsc::Sender<SubscribeStreamRequest>,
    Streaming<SubscribeStreamResponse>,
) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(join(topic, sub, max_in_flight)).await.unwrap();
    let stream = server
        .events()
        .subscribe_stream(ReceiverStream::new(rx))
        .await
        .expect("SubscribeStream opens")
        .into_inner();
    (tx, stream)
}

/// What arrived on a stream: deliveries, and settle answers by request id.
#[derive(Default)]
struct Received {
    deliveries: Vec<v1::Delivery>,
    answers: HashMap<u64, v1::SettleAnswer>,
}

impl Received {
    /// Reads until `deliveries` deliveries and `answers` answers arrived in
    /// all, within PATIENCE.
    async fn until(
        &mut self,
        stream: &mut Streaming<SubscribeStreamResponse>,
        deliveries: usize,
        answers: usize,
    ) {
        tokio::time::timeout(PATIENCE, async {
            while self.deliveries.len() < deliveries || self.answers.len() < answers {
                let msg = stream.message().await.expect("stream ok").expect("open");
                // A message holds one kind or the other.
                assert!(
                    msg.deliveries.is_empty() || msg.settled.is_empty(),
                    "{msg:?}"
                );
                self.deliveries.extend(msg.deliveries);
                for a in msg.settled {
                    assert!(
                        self.answers.insert(a.request_id, a).is_none(),
                        "answered twice"
                    );
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "got {} deliveries and {} answers",
                self.deliveries.len(),
                self.answers.len()
            )
        });
    }
}

#[tokio::test]
async fn settles_are_answered_by_id_and_a_failed_one_leaves_the_stream_open() {
    let server = TestServer::start().await;
    let mut events = server.events();
    let published = (0..5).map(|i| event("", "x", format!("{i}"))).collect();
    publish(&mut events, "t", published).await;
    let (tx, mut stream) = open(&server, "t", "s", 10).await;
    let mut got = Received::default();
    got.until(&mut stream, 5, 0).await;
    let d = got.deliveries.clone();

    tx.send(ack(1, &d[0..2])).await.unwrap();
    let nack = v1::NackRequest {
        ack_ids: vec![d[2].ack_id.clone()],
        delay: Some(duration(0.0)),
        ..Default::default()
    };
    tx.send(SubscribeStreamRequest {
        request: Some(Request::Nack(nack)),
        request_id: 2,
    })
    .await
    .unwrap();
    let extend = v1::ModifyAckDeadlineRequest {
        ack_ids: vec![d[3].ack_id.clone()],
        ack_deadline: Some(duration(60.0)),
        ..Default::default()
    };
    tx.send(SubscribeStreamRequest {
        request: Some(Request::ModifyAckDeadline(extend)),
        request_id: 3,
    })
    .await
    .unwrap();
    // Another subscription than the stream's, a malformed ack id, a
    // ModifyAckDeadline without its deadline, and a request with no settle:
    // each fails as its unary call would, alone.
    let mut elsewhere = ack(4, &d[4..5]);
    if let Some(Request::Ack(a)) = &mut elsewhere.request {
        a.subscription = "other".into();
    }
    tx.send(elsewhere).await.unwrap();
    let malformed = v1::AckRequest {
        ack_ids: vec!["not-an-ack-id".into()],
        ..Default::default()
    };
    tx.send(SubscribeStreamRequest {
        request: Some(Request::Ack(malformed)),
        request_id: 5,
    })
    .await
    .unwrap();
    let no_deadline = v1::ModifyAckDeadlineRequest {
        ack_ids: vec![d[4].ack_id.clone()],
        ..Default::default()
    };
    tx.send(SubscribeStreamRequest {
        request: Some(Request::ModifyAckDeadline(no_deadline)),
        request_id: 6,
    })
    .await
    .unwrap();
    tx.send(SubscribeStreamRequest {
        request: None,
        request_id: 7,
    })
    .await
    .unwrap();

    // The nacked event comes back on the stream, with its next attempt.
    got.until(&mut stream, 6, 7).await;
    for id in 1..=3 {
        let a = &got.answers[&id];
        assert!(a.failure.is_none() && a.stale_ack_ids.is_empty(), "{a:?}");
    }
    for (id, says) in [
        (4, "subscription"),
        (5, "ack"),
        (6, "ack_deadline"),
        (7, "request"),
    ] {
        let a = &got.answers[&id];
        let failure = a
            .failure
            .as_ref()
            .unwrap_or_else(|| panic!("{id} failed: {a:?}"));
        assert_eq!(failure.code, Code::InvalidArgument as i32, "{a:?}");
        assert!(failure.message.contains(says), "{id}: {a:?}");
    }
    let again = &got.deliveries[5];
    assert_eq!(payload(again), payload(&d[2]));
    assert_eq!(again.delivery_attempt, 2);

    // The stream is still open: settle the rest on it.
    let rest = [&d[3], &d[4], again];
    tx.send(ack(8, rest)).await.unwrap();
    got.until(&mut stream, 6, 8).await;
    let a = &got.answers[&8];
    assert!(a.failure.is_none() && a.stale_ack_ids.is_empty(), "{a:?}");

    // Closing the input ends the stream with OK, and nothing is left to
    // deliver: every event was acked.
    drop(tx);
    let end = tokio::time::timeout(PATIENCE, stream.message()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
    let mut after = subscribe(&mut events, "t", "s", 10).await;
    expect_silence(&mut after, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_stale_lease_is_named_in_the_answer() {
    if eventbus_tests::skip_on_jetstream(
        "an ack of a lease that expired is not reported stale: JetStream acks by sequence (ARCHITECTURE.md, Backend conformance)",
    ) {
        return;
    }
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    admin
        .create_subscription(v1::CreateSubscriptionRequest {
            topic: "slow".into(),
            subscription: "s".into(),
            ack_deadline: Some(duration(1.0)),
            ..Default::default()
        })
        .await
        .unwrap();
    publish(&mut events, "slow", vec![event("", "x", "only")]).await;
    let (tx, mut stream) = open(&server, "slow", "s", 10).await;
    let mut got = Received::default();
    // Not acked: the lease runs out and the event comes back.
    got.until(&mut stream, 2, 0).await;
    let (first, again) = (got.deliveries[0].clone(), got.deliveries[1].clone());
    assert_eq!(again.delivery_attempt, 2);
    tx.send(ack(1, [&first, &again])).await.unwrap();
    got.until(&mut stream, 2, 1).await;
    // Only the expired lease is named; the current one was acked.
    let a = &got.answers[&1];
    assert!(a.failure.is_none(), "{a:?}");
    assert_eq!(a.stale_ack_ids, vec![first.ack_id.clone()]);
    let mut after = subscribe(&mut events, "slow", "s", 10).await;
    expect_silence(&mut after, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn the_first_request_must_join_and_no_later_one_may() {
    let server = TestServer::start().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(SubscribeStreamRequest::default()).await.unwrap();
    let refused = server
        .events()
        .subscribe_stream(ReceiverStream::new(rx))
        .await;
    assert_status(refused, Code::InvalidArgument, "first request");

    // The first request is checked as Subscribe: a bad name is refused.
    let (tx, rx) = mpsc::channel(4);
    tx.send(join("bad topic!", "s", 10)).await.unwrap();
    let refused = server
        .events()
        .subscribe_stream(ReceiverStream::new(rx))
        .await;
    assert_status(refused, Code::InvalidArgument, "topic");

    let (tx, mut stream) = open(&server, "t", "s", 10).await;
    tx.send(join("t", "s", 10)).await.unwrap();
    let end = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("the stream ends in time");
    assert_status(end, Code::InvalidArgument, "already joined");
}

#[tokio::test]
async fn a_settle_over_max_ack_ids_ends_the_stream_after_the_ones_before() {
    let server = TestServer::start_with(DataDir::Fresh, |c| c.max_ack_ids_per_call = 2).await;
    let mut events = server.events();
    let published = (0..3).map(|i| event("", "x", format!("{i}"))).collect();
    publish(&mut events, "t", published).await;
    let (tx, mut stream) = open(&server, "t", "s", 10).await;
    let mut got = Received::default();
    got.until(&mut stream, 3, 0).await;
    let d = got.deliveries.clone();
    tx.send(ack(1, &d[0..2])).await.unwrap();
    tx.send(ack(2, &d)).await.unwrap();
    got.until(&mut stream, 3, 1).await;
    assert!(got.answers[&1].failure.is_none(), "{:?}", got.answers[&1]);
    let end = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("the stream ends in time");
    assert_status(end, Code::InvalidArgument, "max-ack-ids-per-call");
    // The stream's unsettled delivery was released: it comes back.
    let mut after = subscribe(&mut events, "t", "s", 10).await;
    let back = recv_n(&mut after, 1).await;
    assert_eq!(payload(&back[0]), payload(&d[2]));
}

#[tokio::test]
async fn closing_the_input_releases_the_unsettled_deliveries() {
    let server = TestServer::start().await;
    let mut events = server.events();
    let published = (0..3).map(|i| event("", "x", format!("{i}"))).collect();
    publish(&mut events, "t", published).await;
    let (tx, mut stream) = open(&server, "t", "s", 10).await;
    Received::default().until(&mut stream, 3, 0).await;
    drop(tx);
    let end = tokio::time::timeout(PATIENCE, stream.message()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
    // The default ack deadline is 30 s: they must come back long before.
    let mut after = subscribe(&mut events, "t", "s", 10).await;
    let back = recv_n(&mut after, 3).await;
    assert!(back.iter().all(|d| d.delivery_attempt == 2), "{back:?}");
}

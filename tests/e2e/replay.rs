//! Replay: history by offset or time, filtered by type, optionally following.

use std::collections::HashMap;
use std::time::Duration;

use eventbus_tests::v1::{self, replay_request, CreateTopicRequest, ReplayRequest, ReplayResponse};
use eventbus_tests::TestServer;
use tonic::{Code, Streaming};

use crate::support::*;

/// Reads a non-follow replay to its end: (events, saw caught_up).
async fn drain(mut s: Streaming<ReplayResponse>) -> (Vec<v1::Event>, bool) {
    let mut events = Vec::new();
    let mut caught_up = false;
    while let Some(msg) = tokio::time::timeout(PATIENCE, s.message())
        .await
        .expect("replay ends")
        .expect("ok")
    {
        assert!(!caught_up, "caught_up is the last message without follow");
        events.extend(msg.events);
        caught_up |= msg.caught_up;
    }
    (events, caught_up)
}

async fn setup() -> TestServer {
    let server = TestServer::start().await;
    server
        .admin()
        .create_topic(CreateTopicRequest {
            topic: "photos".into(),
            partitions: 2,
            retention: None,
        })
        .await
        .unwrap();
    let mut events = server.events();
    let batch = (0..30)
        .map(|i| {
            event(
                &format!("k{}", i % 5),
                if i % 3 == 0 {
                    "photo.added"
                } else {
                    "photo.tagged.v2"
                },
                format!("{i}"),
            )
        })
        .collect();
    publish(&mut events, "photos", batch).await;
    server
}

#[tokio::test]
async fn replay_reads_all_history_in_partition_order_and_filters_types() {
    let server = setup().await;
    let mut events = server.events();
    let req = ReplayRequest {
        topic: "photos".into(),
        ..Default::default()
    };
    let (all, caught_up) = drain(events.replay(req).await.unwrap().into_inner()).await;
    assert!(caught_up);
    assert_eq!(all.len(), 30);
    let mut last: HashMap<u32, u64> = HashMap::new();
    for e in &all {
        if let Some(prev) = last.insert(e.partition, e.offset) {
            assert_eq!(e.offset, prev + 1, "offset order within a partition");
        }
    }

    let req = ReplayRequest {
        topic: "photos".into(),
        types: vec!["photo.*".into()],
        ..Default::default()
    };
    let (added, _) = drain(events.replay(req).await.unwrap().into_inner()).await;
    assert_eq!(added.len(), 10);
    assert!(added.iter().all(|e| e.r#type == "photo.added"));
    let req = ReplayRequest {
        topic: "photos".into(),
        types: vec!["photo.>".into()],
        ..Default::default()
    };
    assert_eq!(
        drain(events.replay(req).await.unwrap().into_inner())
            .await
            .0
            .len(),
        30
    );

    // Replay touches no subscription: a new one still gets everything.
    let mut stream = subscribe(&mut events, "photos", "after-replay", 100).await;
    assert_eq!(recv_n(&mut stream, 30).await.len(), 30);
}

#[tokio::test]
async fn replay_by_offset_range_and_by_time() {
    let server = setup().await;
    let mut events = server.events();
    let req = ReplayRequest {
        topic: "photos".into(),
        partitions: vec![1],
        start: Some(replay_request::Start::StartOffset(2)),
        end: Some(replay_request::End::EndOffset(5)),
        ..Default::default()
    };
    let (got, _) = drain(events.replay(req).await.unwrap().into_inner()).await;
    assert_eq!(
        got.iter()
            .map(|e| (e.partition, e.offset))
            .collect::<Vec<_>>(),
        vec![(1, 2), (1, 3), (1, 4)]
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    let later = publish(
        &mut events,
        "photos",
        vec![
            event("k1", "photo.added", "late-1"),
            event("k2", "photo.added", "late-2"),
        ],
    )
    .await;
    assert_eq!(later.len(), 2);
    let (all, _) = drain(
        events
            .replay(ReplayRequest {
                topic: "photos".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let first_late = all
        .iter()
        .find(|e| &e.payload[..] == b"late-1")
        .unwrap()
        .publish_time
        .unwrap();
    let req = ReplayRequest {
        topic: "photos".into(),
        start: Some(replay_request::Start::StartTime(first_late)),
        ..Default::default()
    };
    let (since, _) = drain(events.replay(req).await.unwrap().into_inner()).await;
    let mut payloads: Vec<_> = since
        .iter()
        .map(|e| String::from_utf8(e.payload.to_vec()).unwrap())
        .collect();
    payloads.sort();
    assert_eq!(payloads, vec!["late-1", "late-2"]);

    let req = ReplayRequest {
        topic: "photos".into(),
        end: Some(replay_request::End::EndTime(first_late)),
        ..Default::default()
    };
    assert_eq!(
        drain(events.replay(req).await.unwrap().into_inner())
            .await
            .0
            .len(),
        30
    );
}

#[tokio::test]
async fn follow_reports_caught_up_then_streams_new_events() {
    let server = setup().await;
    let mut events = server.events();
    let req = ReplayRequest {
        topic: "photos".into(),
        follow: true,
        ..Default::default()
    };
    let mut s = events.replay(req).await.unwrap().into_inner();
    let mut history = 0;
    loop {
        let msg = tokio::time::timeout(PATIENCE, s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        history += msg.events.len();
        if msg.caught_up {
            break;
        }
    }
    assert_eq!(history, 30);
    publish(&mut events, "photos", vec![event("", "photo.added", "new")]).await;
    let msg = tokio::time::timeout(PATIENCE, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!msg.caught_up);
    assert_eq!(&msg.events[0].payload[..], b"new");
}

#[tokio::test]
async fn replay_bad_input() {
    let server = setup().await;
    let mut events = server.events();
    let code = |r: Result<tonic::Response<Streaming<ReplayResponse>>, tonic::Status>| {
        r.unwrap_err().code()
    };
    assert_eq!(
        code(
            events
                .replay(ReplayRequest {
                    topic: "nope".into(),
                    ..Default::default()
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            events
                .replay(ReplayRequest {
                    topic: "photos".into(),
                    partitions: vec![7],
                    ..Default::default()
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            events
                .replay(ReplayRequest {
                    topic: "photos".into(),
                    follow: true,
                    end: Some(replay_request::End::EndOffset(3)),
                    ..Default::default()
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            events
                .replay(ReplayRequest {
                    topic: "photos".into(),
                    types: vec!["a..b".into()],
                    ..Default::default()
                })
                .await
        ),
        Code::InvalidArgument
    );
}

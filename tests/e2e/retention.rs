//! Topic retention: max_age and max_bytes trim old events in the background;
//! subscriptions move up and count what they lost; DLQ entries stay.

use std::time::Duration;

use eventbus_tests::v1::{self, CreateTopicRequest, GetTopicRequest, Retention};
use eventbus_tests::{DataDir, TestServer};

use crate::support::*;

async fn start(server: &TestServer) -> u64 {
    let t = server
        .admin()
        .get_topic(GetTopicRequest { topic: "t".into() })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    t.partition_info[0].start_offset
}

async fn wait_for_start(server: &TestServer, at_least: u64) -> u64 {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let s = start(server).await;
            if s >= at_least {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("retention ran")
}

#[tokio::test]
async fn max_age_trims_and_subscriptions_count_their_losses() {
    let server = TestServer::start_with(DataDir::Fresh, |c| {
        c.retention_interval = Duration::from_millis(100)
    })
    .await;
    let mut admin = server.admin();
    admin
        .create_topic(CreateTopicRequest {
            topic: "t".into(),
            partitions: 1,
            retention: Some(Retention {
                max_age: Some(duration(1.0)),
                max_bytes: 0,
            }),
        })
        .await
        .unwrap();
    admin
        .create_subscription(v1::CreateSubscriptionRequest {
            topic: "t".into(),
            subscription: "slow".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        (0..5).map(|i| event("", "x", format!("old-{i}"))).collect(),
    )
    .await;
    // Dead-letter one event first: DLQ entries outlive retention.
    let mut dl_stream = subscribe(&mut events, "t", "dlq-holder", 10).await;
    let ds = recv_n(&mut dl_stream, 5).await;
    events
        .nack(v1::NackRequest {
            topic: "t".into(),
            subscription: "dlq-holder".into(),
            ack_ids: vec![ds[0].ack_id.clone()],
            dead_letter: true,
            ..Default::default()
        })
        .await
        .unwrap();
    ack(&mut events, "t", "dlq-holder", &ds[1..]).await;
    drop(dl_stream);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    publish(&mut events, "t", vec![event("", "x", "new")]).await;
    assert_eq!(
        wait_for_start(&server, 5).await,
        5,
        "all five old events trimmed, the newest kept"
    );

    let mut stream = subscribe(&mut events, "t", "slow", 10).await;
    let got = recv_n(&mut stream, 1).await;
    assert_eq!(payload(&got[0]), "new");
    let sub = admin
        .get_subscription(v1::GetSubscriptionRequest {
            topic: "t".into(),
            subscription: "slow".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    // Cluster mode does not count these: JetStream moves a consumer past
    // trimmed messages without saying so (ARCHITECTURE.md, Backend
    // conformance).
    let lost = if eventbus_tests::on_jetstream() { 0 } else { 5 };
    assert_eq!(sub.stats.unwrap().lost_to_retention, lost);
    let dlq = admin
        .list_dead_letters(v1::ListDeadLettersRequest {
            topic: "t".into(),
            subscription: "dlq-holder".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        dlq.dead_letters.len(),
        1,
        "dead letters are kept independently of retention"
    );
    // Replay starts at the retained start.
    let mut replay = events
        .replay(v1::ReplayRequest {
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = replay.message().await.unwrap().unwrap();
    assert_eq!(first.events[0].offset, 5);
}

#[tokio::test]
async fn max_bytes_keeps_the_newest_events_within_the_limit() {
    let server = TestServer::start_with(DataDir::Fresh, |c| {
        c.retention_interval = Duration::from_millis(100)
    })
    .await;
    server
        .admin()
        .create_topic(CreateTopicRequest {
            topic: "t".into(),
            partitions: 1,
            retention: Some(Retention {
                max_age: None,
                max_bytes: 4000,
            }),
        })
        .await
        .unwrap();
    let mut events = server.events();
    // Four calls one after the other: four stored batches of 10 events.
    // Retention removes whole batches, never the one holding the newest.
    for call in 0..4 {
        publish(
            &mut events,
            "t",
            (call * 10..call * 10 + 10)
                .map(|i| event("", "x", format!("{i:0>200}")))
                .collect(),
        )
        .await;
    }
    let s = wait_for_start(&server, 1).await;
    // ~250 bytes per record: about 16 fit in 4000 bytes.
    assert!((20..40).contains(&s), "start moved to {s}");
    assert_eq!(s % 10, 0, "a batch boundary: {s}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(start(&server).await, s, "stable once within the limit");
}

//! Clean restarts: acknowledged publishes survive, acked events stay acked.

use std::collections::HashSet;
use std::time::Duration;

use eventbus_tests::v1::{self, GetTopicRequest};
use eventbus_tests::TestServer;

use crate::support::*;

#[tokio::test]
async fn restart_keeps_publishes_and_does_not_redeliver_acked_events() {
    let server = TestServer::start().await;
    let mut events = server.events();
    let published = publish(
        &mut events,
        "ledger",
        (0..50)
            .map(|i| event(&format!("k{}", i % 7), "entry", format!("{i}")))
            .collect(),
    )
    .await;
    let mut stream = subscribe(&mut events, "ledger", "books", 1000).await;
    let got = recv_n(&mut stream, 50).await;
    // Ack 30 of them; 20 stay unacked across the restart.
    let (acked, unacked): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|d| payload(d).parse::<u32>().unwrap() < 30);
    ack(&mut events, "ledger", "books", &acked).await;
    drop(stream);

    let server = server.restart(|_| {}).await;
    let (mut events, mut admin) = (server.events(), server.admin());
    let topic = admin
        .get_topic(GetTopicRequest {
            topic: "ledger".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    let stored: u64 = topic
        .partition_info
        .iter()
        .map(|p| p.end_offset - p.start_offset)
        .sum();
    assert_eq!(stored, 50, "every acknowledged publish survived");

    let mut stream = subscribe(&mut events, "ledger", "books", 1000).await;
    let again = recv_n(&mut stream, unacked.len()).await;
    let want: HashSet<_> = unacked.iter().map(payload).collect();
    let have: HashSet<_> = again.iter().map(payload).collect();
    assert_eq!(have, want, "exactly the unacked events come back");
    assert!(
        again.iter().all(|d| d.delivery_attempt == 2),
        "attempt counts survive a restart"
    );
    expect_silence(&mut stream, Duration::from_millis(500)).await;

    // Offsets continue densely after the restart.
    let more = publish(&mut events, "ledger", vec![event("k0", "entry", "50")]).await;
    let before = published
        .iter()
        .filter(|r| r.partition == more[0].partition)
        .map(|r| r.offset)
        .max();
    assert_eq!(Some(more[0].offset), before.map(|o| o + 1));
}

#[tokio::test]
async fn topics_and_subscriptions_survive_a_restart() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    admin
        .create_topic(v1::CreateTopicRequest {
            topic: "kept".into(),
            partitions: 3,
            retention: None,
        })
        .await
        .unwrap();
    admin
        .create_subscription(v1::CreateSubscriptionRequest {
            topic: "kept".into(),
            subscription: "s".into(),
            ack_deadline: Some(duration(7.0)),
            ..Default::default()
        })
        .await
        .unwrap();
    let server = server.restart(|c| c.auto_create = false).await;
    let mut admin = server.admin();
    let topic = admin
        .get_topic(GetTopicRequest {
            topic: "kept".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    assert_eq!(topic.partitions, 3);
    let sub = admin
        .get_subscription(v1::GetSubscriptionRequest {
            topic: "kept".into(),
            subscription: "s".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(sub.ack_deadline.unwrap().seconds, 7);
}

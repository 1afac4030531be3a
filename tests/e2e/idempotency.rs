//! Idempotent publish: a repeated idempotency key within the window returns the
//! original position with duplicate=true and writes nothing.

use std::time::Duration;

use eventbus_tests::v1::{self, GetTopicRequest, PublishEvent};
use eventbus_tests::{DataDir, TestServer};

use crate::support::*;

fn idem(key: &str, payload: &str) -> PublishEvent {
    PublishEvent {
        idempotency_key: key.into(),
        ..event("", "x", payload)
    }
}

async fn stored(server: &TestServer) -> u64 {
    let t = server
        .admin()
        .get_topic(GetTopicRequest { topic: "t".into() })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    t.partition_info.iter().map(|p| p.end_offset).sum()
}

#[tokio::test]
async fn duplicates_return_the_original_position_even_after_restart() {
    let server = TestServer::start().await;
    let mut events = server.events();
    let first = publish(
        &mut events,
        "t",
        vec![idem("order-1", "a"), idem("order-2", "b")],
    )
    .await;
    assert!(first.iter().all(|r| !r.duplicate));
    // A retry of the same batch (e.g. after a timeout) plus a new event.
    let retry = publish(
        &mut events,
        "t",
        vec![
            idem("order-1", "a"),
            idem("order-2", "b"),
            idem("order-3", "c"),
        ],
    )
    .await;
    assert!(retry[0].duplicate && retry[1].duplicate && !retry[2].duplicate);
    assert_eq!(
        (retry[0].partition, retry[0].offset, &retry[0].event_id),
        (first[0].partition, first[0].offset, &first[0].event_id)
    );
    assert_eq!(stored(&server).await, 3);
    // Twice in one batch: the second is a duplicate of the first.
    let same = publish(
        &mut events,
        "t",
        vec![idem("order-4", "d"), idem("order-4", "d")],
    )
    .await;
    assert!(!same[0].duplicate && same[1].duplicate);
    assert_eq!(same[0].offset, same[1].offset);
    assert_eq!(stored(&server).await, 4);

    let server = server.restart(|_| {}).await;
    let mut events = server.events();
    let after = publish(&mut events, "t", vec![idem("order-1", "a")]).await;
    assert!(after[0].duplicate, "the window survives a restart");
    assert_eq!(after[0].offset, first[0].offset);
    assert_eq!(stored(&server).await, 4);
    // Only one copy is ever delivered.
    let mut stream = subscribe(&mut events, "t", "s", 100).await;
    recv_n(&mut stream, 4).await;
    expect_silence(&mut stream, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn keys_expire_after_the_window() {
    let server =
        TestServer::start_with(DataDir::Fresh, |c| c.dedup_window = Duration::from_secs(1)).await;
    let mut events = server.events();
    let first = publish(&mut events, "t", vec![idem("k", "a")]).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let later = publish(&mut events, "t", vec![idem("k", "a")]).await;
    assert!(
        !later[0].duplicate,
        "outside the window a key publishes again"
    );
    assert_ne!(
        (later[0].partition, later[0].offset),
        (first[0].partition, first[0].offset)
    );
    let _ = v1::PublishResult::default();
}

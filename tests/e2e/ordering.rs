//! ORDERING_KEY: at most one event per key in flight; other keys keep flowing.

use std::time::Duration;

use eventbus_tests::v1::{self, CreateSubscriptionRequest, CreateTopicRequest, Delivery};
use eventbus_tests::TestServer;

use crate::support::*;

async fn setup() -> TestServer {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    admin
        .create_topic(CreateTopicRequest {
            topic: "t".into(),
            partitions: 1,
            retention: None,
        })
        .await
        .unwrap();
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ordering: v1::Ordering::Key as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    server
}

fn names(ds: &[Delivery]) -> Vec<String> {
    let mut v: Vec<_> = ds.iter().map(payload).collect();
    v.sort();
    v
}

#[tokio::test]
async fn one_event_per_key_in_flight_and_the_next_waits_for_the_ack() {
    if eventbus_tests::skip_on_jetstream(
        "KEY ordering is one event per partition in flight on JetStream (max_ack_pending 1), so other keys of the partition wait too (ARCHITECTURE.md, Backend conformance)",
    ) {
        return;
    }
    let server = setup().await;
    let mut events = server.events();
    let batch = ["a:0", "a:1", "b:0", "a:2", "b:1", "c:0"]
        .iter()
        .map(|p| event(&p[..1], "x", p.to_string()))
        .collect();
    publish(&mut events, "t", batch).await;
    let mut stream = subscribe(&mut events, "t", "s", 100).await;
    let first = recv_n(&mut stream, 3).await;
    assert_eq!(names(&first), vec!["a:0", "b:0", "c:0"]);
    expect_silence(&mut stream, Duration::from_millis(300)).await;

    let a0 = first.iter().find(|d| payload(d) == "a:0").unwrap();
    ack(&mut events, "t", "s", std::slice::from_ref(a0)).await;
    assert_eq!(names(&recv_n(&mut stream, 1).await), vec!["a:1"]);

    // A nacked event comes back before its key's next event.
    let b0 = first.iter().find(|d| payload(d) == "b:0").unwrap();
    events
        .nack(v1::NackRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ack_ids: vec![b0.ack_id.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let again = recv_n(&mut stream, 1).await;
    assert_eq!(names(&again), vec!["b:0"]);
    assert_eq!(again[0].delivery_attempt, 2);
    ack(&mut events, "t", "s", &again).await;
    assert_eq!(names(&recv_n(&mut stream, 1).await), vec!["b:1"]);
}

#[tokio::test]
async fn a_poison_key_does_not_block_other_keys() {
    if eventbus_tests::skip_on_jetstream(
        "KEY ordering is one event per partition in flight on JetStream (max_ack_pending 1), so other keys of the partition wait too (ARCHITECTURE.md, Backend conformance)",
    ) {
        return;
    }
    let server = setup().await;
    let mut events = server.events();
    let mut batch = vec![
        event("poison", "x", "poison:0"),
        event("poison", "x", "poison:1"),
    ];
    batch.extend((0..20).map(|i| event(&format!("k{i}"), "x", format!("k{i}:0"))));
    publish(&mut events, "t", batch).await;
    let mut stream = subscribe(&mut events, "t", "s", 100).await;
    let got = recv_n(&mut stream, 21).await;
    let poison = got
        .iter()
        .find(|d| payload(d) == "poison:0")
        .unwrap()
        .clone();
    assert!(
        got.iter().all(|d| payload(d) != "poison:1"),
        "the poison key's second event waits"
    );
    let others: Vec<_> = got
        .into_iter()
        .filter(|d| payload(d) != "poison:0")
        .collect();
    assert_eq!(others.len(), 20, "every other key flowed");
    ack(&mut events, "t", "s", &others).await;
    // Dead-lettering the poison event releases the key.
    events
        .nack(v1::NackRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ack_ids: vec![poison.ack_id.clone()],
            dead_letter: true,
            reason: "poison".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(names(&recv_n(&mut stream, 1).await), vec!["poison:1"]);
}

#[tokio::test]
async fn key_ordering_holds_with_several_members() {
    let server = setup().await;
    let mut events = server.events();
    let batch = (0..60)
        .map(|i| event(&format!("k{}", i % 3), "x", format!("k{}:{}", i % 3, i / 3)))
        .collect();
    publish(&mut events, "t", batch).await;
    let mut a = subscribe(&mut events, "t", "s", 10).await;
    let mut b = subscribe(&mut events, "t", "s", 10).await;
    let mut next_seq = std::collections::HashMap::new();
    let mut total = 0;
    tokio::time::timeout(PATIENCE, async {
        while total < 60 {
            let ds = tokio::select! {
                m = a.message() => m.unwrap().unwrap().deliveries,
                m = b.message() => m.unwrap().unwrap().deliveries,
            };
            for d in &ds {
                let p = payload(d);
                let (k, seq) = p.split_once(':').unwrap();
                let want = next_seq.entry(k.to_string()).or_insert(0u32);
                assert_eq!(seq.parse::<u32>().unwrap(), *want, "key {k} in order");
                *want += 1;
            }
            total += ds.len();
            ack(&mut server.events(), "t", "s", &ds).await;
        }
    })
    .await
    .expect("all delivered");
}

//! Publish → Subscribe → Ack, consumer-group sharing, ordering, redelivery.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use eventbus_tests::v1::{
    self, CreateSubscriptionRequest, CreateTopicRequest, GetSubscriptionRequest,
};
use eventbus_tests::TestServer;

use crate::support::*;

#[tokio::test]
async fn publish_subscribe_ack() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    admin
        .create_topic(CreateTopicRequest {
            topic: "orders".into(),
            partitions: 2,
            retention: None,
        })
        .await
        .unwrap();
    let published = publish(
        &mut events,
        "orders",
        (0..10)
            .map(|i| event(&format!("k{i}"), "order.created", format!("e{i}")))
            .collect(),
    )
    .await;
    assert_eq!(published.len(), 10);
    for r in &published {
        assert!(r.partition < 2);
        assert!(!r.event_id.is_empty());
        assert!(!r.duplicate);
    }

    let mut stream = subscribe(&mut events, "orders", "billing", 100).await;
    let got = recv_n(&mut stream, 10).await;
    let payloads: HashSet<String> = got.iter().map(payload).collect();
    assert_eq!(payloads, (0..10).map(|i| format!("e{i}")).collect());
    for d in &got {
        let ev = d.event.as_ref().unwrap();
        assert_eq!(d.delivery_attempt, 1);
        assert_eq!(ev.topic, "orders");
        assert_eq!(ev.r#type, "order.created");
        assert_eq!(ev.content_type, "text/plain");
        assert_eq!(ev.attributes["source"], "e2e");
        assert!(ev.publish_time.is_some());
        let r = published
            .iter()
            .find(|r| r.event_id == ev.event_id)
            .expect("known event id");
        assert_eq!((r.partition, r.offset), (ev.partition, ev.offset));
    }
    ack(&mut events, "orders", "billing", &got).await;
    // Acking twice is a harmless no-op.
    ack(&mut events, "orders", "billing", &got).await;

    let sub = admin
        .get_subscription(GetSubscriptionRequest {
            topic: "orders".into(),
            subscription: "billing".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    let stats = sub.stats.unwrap();
    assert_eq!(stats.backlog, 0);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.delivered, 10);
    assert_eq!(stats.acked, 10);
    assert_eq!(stats.members, 1);
    expect_silence(&mut stream, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn members_split_the_work_and_subscriptions_each_get_everything() {
    let server = TestServer::start().await;
    let mut events = server.events();
    let n = 200;
    publish(
        &mut events,
        "jobs",
        (0..n).map(|i| event("", "job", format!("{i}"))).collect(),
    )
    .await;

    // Two members of "workers" with little credit each, so both must take part.
    let mut a = subscribe(&mut events, "jobs", "workers", 5).await;
    let mut b = subscribe(&mut events, "jobs", "workers", 5).await;
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    tokio::time::timeout(PATIENCE, async {
        while got_a.len() + got_b.len() < n {
            tokio::select! {
                m = a.message() => {
                    let ds = m.unwrap().unwrap().deliveries;
                    ack(&mut server.events(), "jobs", "workers", &ds).await;
                    got_a.extend(ds.iter().map(payload));
                }
                m = b.message() => {
                    let ds = m.unwrap().unwrap().deliveries;
                    ack(&mut server.events(), "jobs", "workers", &ds).await;
                    got_b.extend(ds.iter().map(payload));
                }
            }
        }
    })
    .await
    .expect("all events delivered");
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both members got work: {} / {}",
        got_a.len(),
        got_b.len()
    );
    let all: Vec<_> = got_a.iter().chain(&got_b).cloned().collect();
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), n, "no event went to two members");
    assert_eq!(unique.len(), n);

    // A second subscription independently gets every event.
    let mut audit = subscribe(&mut events, "jobs", "audit", 1000).await;
    let got = recv_n(&mut audit, n).await;
    let unique: HashSet<_> = got.iter().map(payload).collect();
    assert_eq!(unique.len(), n);
}

#[tokio::test]
async fn max_in_flight_bounds_unacked_deliveries() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        (0..20).map(|i| event("", "x", format!("{i}"))).collect(),
    )
    .await;
    let mut stream = subscribe(&mut events, "t", "s", 3).await;
    let first = recv_n(&mut stream, 3).await;
    assert_eq!(first.len(), 3);
    expect_silence(&mut stream, Duration::from_millis(300)).await;
    ack(&mut events, "t", "s", &first[..1]).await;
    let next = recv_n(&mut stream, 1).await;
    assert_eq!(next.len(), 1, "one ack frees exactly one slot");
}

#[tokio::test]
async fn per_key_order_within_a_partition() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    admin
        .create_topic(CreateTopicRequest {
            topic: "accounts".into(),
            partitions: 4,
            retention: None,
        })
        .await
        .unwrap();
    let keys = ["alice", "bob", "carol", "dave", "erin"];
    let mut results = Vec::new();
    // Interleave keys across several publish calls.
    for round in 0..10 {
        let batch = keys
            .iter()
            .flat_map(|k| {
                (0..3).map(move |i| event(k, "acct.changed", format!("{k}:{}", round * 3 + i)))
            })
            .collect();
        results.extend(publish(&mut events, "accounts", batch).await);
    }
    // Publish results: dense, strictly increasing offsets per partition.
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in &results {
        per_partition.entry(r.partition).or_default().push(r.offset);
    }
    for offsets in per_partition.values() {
        assert_eq!(*offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
    }

    let mut stream = subscribe(&mut events, "accounts", "projector", 1000).await;
    let got = recv_n(&mut stream, results.len()).await;
    let mut seen: BTreeMap<String, (u32, Vec<u32>)> = BTreeMap::new();
    for d in &got {
        let ev = d.event.as_ref().unwrap();
        let (key, seq) = payload(d)
            .split_once(':')
            .map(|(k, s)| (k.to_string(), s.parse::<u32>().unwrap()))
            .unwrap();
        assert_eq!(key, ev.key);
        let entry = seen.entry(key).or_insert((ev.partition, Vec::new()));
        assert_eq!(entry.0, ev.partition, "a key always maps to one partition");
        entry.1.push(seq);
    }
    for (key, (_, seqs)) in seen {
        assert_eq!(
            seqs,
            (0..30).collect::<Vec<_>>(),
            "key {key} delivered in publish order"
        );
    }
}

#[tokio::test]
async fn unacked_delivery_is_redelivered_after_the_deadline() {
    if eventbus_tests::skip_on_jetstream(
        "an ack of a lease that expired is not reported stale: JetStream acks by sequence (ARCHITECTURE.md, Backend conformance)",
    ) {
        return;
    }
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "slow".into(),
            subscription: "s".into(),
            ack_deadline: Some(duration(1.0)),
            ..Default::default()
        })
        .await
        .unwrap();
    publish(&mut events, "slow", vec![event("", "x", "only")]).await;
    let mut stream = subscribe(&mut events, "slow", "s", 10).await;
    let first = recv_n(&mut stream, 1).await.remove(0);
    assert_eq!(first.delivery_attempt, 1);
    // Not acked: the lease runs out and the same event comes back.
    let again = recv_n(&mut stream, 1).await.remove(0);
    assert_eq!(again.delivery_attempt, 2);
    assert_eq!(
        again.event.as_ref().unwrap().event_id,
        first.event.as_ref().unwrap().event_id
    );
    assert_ne!(again.ack_id, first.ack_id);

    // The expired lease can no longer settle anything...
    let err = events
        .ack(v1::AckRequest {
            topic: "slow".into(),
            subscription: "s".into(),
            ack_ids: vec![first.ack_id.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    // ...while the current one can.
    ack(&mut events, "slow", "s", std::slice::from_ref(&again)).await;
    expect_silence(&mut stream, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn nack_redelivers_at_once_with_the_next_attempt() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(&mut events, "t", vec![event("", "x", "retry-me")]).await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let first = recv_n(&mut stream, 1).await.remove(0);
    events
        .nack(v1::NackRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ack_ids: vec![first.ack_id.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let again = recv_n(&mut stream, 1).await.remove(0);
    assert_eq!(payload(&again), "retry-me");
    assert_eq!(again.delivery_attempt, 2);
}

#[tokio::test]
async fn closing_a_stream_hands_its_leases_to_another_member() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        (0..5).map(|i| event("", "x", format!("{i}"))).collect(),
    )
    .await;
    let mut first = subscribe(&mut events, "t", "s", 100).await;
    let held = recv_n(&mut first, 5).await;
    drop(first);
    // The default ack deadline is 30 s; the leases must come back long before.
    let mut second = subscribe(&mut events, "t", "s", 100).await;
    let got = recv_n(&mut second, 5).await;
    let a: HashSet<_> = held.iter().map(payload).collect();
    let b: HashSet<_> = got.iter().map(payload).collect();
    assert_eq!(a, b);
    assert!(got.iter().all(|d| d.delivery_attempt == 2));
}

#[tokio::test]
async fn latest_subscription_skips_existing_events() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    publish(&mut events, "t", vec![event("", "x", "old")]).await;
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "t".into(),
            subscription: "new-only".into(),
            start_position: v1::StartPosition::Latest as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    publish(&mut events, "t", vec![event("", "x", "new")]).await;
    let mut stream = subscribe(&mut events, "t", "new-only", 10).await;
    let got = recv_n(&mut stream, 1).await;
    assert_eq!(payload(&got[0]), "new");
    expect_silence(&mut stream, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_released_delivery_can_be_acked_until_someone_else_gets_it() {
    if eventbus_tests::skip_on_jetstream(
        "an ack of a lease that expired is not reported stale: JetStream acks by sequence (ARCHITECTURE.md, Backend conformance)",
    ) {
        return;
    }
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        vec![event("", "x", "a"), event("", "x", "b")],
    )
    .await;
    let mut first = subscribe(&mut events, "t", "s", 100).await;
    let held = recv_n(&mut first, 2).await;
    drop(first);
    // Nobody else holds them yet: the consumer that processed "a" may still ack it.
    let a = held.iter().find(|d| payload(d) == "a").unwrap();
    ack(&mut events, "t", "s", std::slice::from_ref(a)).await;
    // "b" goes to the next member; from then on the old ack id is stale.
    let mut second = subscribe(&mut events, "t", "s", 100).await;
    let got = recv_n(&mut second, 1).await;
    assert_eq!(payload(&got[0]), "b");
    let b_old = held.iter().find(|d| payload(d) == "b").unwrap();
    let err = events
        .ack(v1::AckRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ack_ids: vec![b_old.ack_id.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    expect_silence(&mut second, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn pause_keeps_leases_stops_deliveries_and_survives_restart() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    let sub = || v1::PauseSubscriptionRequest {
        topic: "t".into(),
        subscription: "s".into(),
    };
    publish(&mut events, "t", vec![event("", "x", "before")]).await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let held = recv_n(&mut stream, 1).await;
    let paused = admin.pause_subscription(sub()).await.unwrap().into_inner();
    assert!(paused.subscription.unwrap().paused);
    publish(&mut events, "t", vec![event("", "x", "during")]).await;
    expect_silence(&mut stream, Duration::from_millis(500)).await;
    // Leases held before the pause can still be settled.
    ack(&mut events, "t", "s", &held).await;
    drop(stream);

    let server = server.restart(|_| {}).await;
    let (mut events, mut admin) = (server.events(), server.admin());
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    expect_silence(&mut stream, Duration::from_millis(500)).await;
    let got = admin
        .get_subscription(GetSubscriptionRequest {
            topic: "t".into(),
            subscription: "s".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        got.subscription.unwrap().paused,
        "the pause survives a restart"
    );
    let resumed = admin
        .resume_subscription(v1::ResumeSubscriptionRequest {
            topic: "t".into(),
            subscription: "s".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.subscription.unwrap().paused);
    let d = recv_n(&mut stream, 1).await;
    assert_eq!(payload(&d[0]), "during");
}

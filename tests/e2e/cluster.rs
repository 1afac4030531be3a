//! Cluster mode (issue 14): the gRPC server as a gateway over a real 3-node
//! NATS JetStream cluster on 127.0.0.1 (`NatsCluster`: ports from the OS,
//! temp stores, stopped by PID). What only a cluster shows lives here: node
//! kills, several gateways, the fsync check. The rest of the contract runs
//! through the whole e2e suite with `E2E_BACKEND=jetstream`.

use std::collections::{BTreeMap, HashMap};

use eventbus_tests::nats::NatsCluster;
use eventbus_tests::v1::{self, CreateTopicRequest, PublishRequest, ReplayRequest};
use eventbus_tests::TestServer;
use tonic::Code;

use crate::support::*;

/// Reads a bounded replay of `topic` to its end, starting over after
/// UNAVAILABLE (a cluster electing leaders after a node restart), as a
/// client does.
async fn replay_all(server: &TestServer, topic: &str) -> Vec<v1::Event> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match try_replay(server, topic).await {
            Ok(events) => return events,
            Err(e) if e.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(e) => panic!("replay: {e:?}"),
        }
    }
}

async fn try_replay(server: &TestServer, topic: &str) -> Result<Vec<v1::Event>, tonic::Status> {
    let mut stream = server
        .events()
        .replay(ReplayRequest {
            topic: topic.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("replay ends in time")?
    {
        out.extend(msg.events);
    }
    Ok(out)
}

fn keyed(i: usize, idempotency: bool) -> v1::PublishEvent {
    let mut e = event(&format!("k{}", i % 7), "order.created", format!("e{i}"));
    if idempotency {
        e.idempotency_key = format!("id-{i}");
    }
    e
}

#[tokio::test]
async fn topics_publish_and_replay_through_jetstream_with_dense_offsets() {
    let cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .unwrap();
    let server = TestServer::gateway(&cluster).await;
    let mut admin = server.admin();
    admin
        .create_topic(CreateTopicRequest {
            topic: "orders".into(),
            partitions: 3,
            retention: None,
        })
        .await
        .expect("create topic");
    let err = admin
        .create_topic(CreateTopicRequest {
            topic: "orders".into(),
            partitions: 3,
            retention: None,
        })
        .await
        .expect_err("twice");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Single events, batches (atomic per partition) and idempotent ones.
    let mut events = server.events();
    let mut published = Vec::new();
    for i in 0..10 {
        published.extend(publish(&mut events, "orders", vec![keyed(i, false)]).await);
    }
    published.extend(
        publish(
            &mut events,
            "orders",
            (10..60).map(|i| keyed(i, false)).collect(),
        )
        .await,
    );
    published.extend(
        publish(
            &mut events,
            "orders",
            (60..80).map(|i| keyed(i, true)).collect(),
        )
        .await,
    );
    assert_eq!(published.len(), 80);
    // The same idempotent events again: duplicates, at their first place.
    let again = publish(
        &mut events,
        "orders",
        (60..80).map(|i| keyed(i, true)).collect(),
    )
    .await;
    for (first, dup) in published[60..].iter().zip(&again) {
        assert!(dup.duplicate, "{dup:?}");
        assert_eq!((dup.partition, dup.offset), (first.partition, first.offset));
    }

    // Offsets are dense per partition: 0..n, each once.
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in &published {
        by_partition.entry(r.partition).or_default().push(r.offset);
    }
    for (p, offsets) in &mut by_partition {
        offsets.sort_unstable();
        let want: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(*offsets, want, "partition {p}");
    }
    // The same key always lands in the same partition.
    let mut partition_of_key = HashMap::new();
    for (i, r) in published.iter().enumerate() {
        let key = format!("k{}", i % 7);
        assert_eq!(
            *partition_of_key.entry(key).or_insert(r.partition),
            r.partition
        );
    }

    // GetTopic reports the bounds; replay returns every event, intact.
    let topic = admin
        .get_topic(v1::GetTopicRequest {
            topic: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    let ends: u64 = topic.partition_info.iter().map(|p| p.end_offset).sum();
    assert_eq!(ends, 80);
    let replayed = replay_all(&server, "orders").await;
    assert_eq!(replayed.len(), 80);
    let mut payloads: Vec<String> = replayed
        .iter()
        .map(|e| String::from_utf8(e.payload.to_vec()).unwrap())
        .collect();
    payloads.sort();
    let mut want: Vec<String> = (0..80).map(|i| format!("e{i}")).collect();
    want.sort();
    assert_eq!(payloads, want);
    let e = &replayed[0];
    assert_eq!(e.r#type, "order.created");
    assert_eq!(e.attributes.get("source").map(String::as_str), Some("e2e"));

    // Delete: gone for every RPC.
    admin
        .delete_topic(v1::DeleteTopicRequest {
            topic: "orders".into(),
        })
        .await
        .unwrap();
    let err = admin
        .get_topic(v1::GetTopicRequest {
            topic: "orders".into(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// kill -9 of one of three nodes: publishes keep being acknowledged (after
/// a new leader, if the killed node led), and every acknowledged event is
/// there, on the survivors, after the node comes back.
#[tokio::test]
async fn acknowledged_events_survive_a_node_kill_9() {
    let mut cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .unwrap();
    let server = TestServer::gateway(&cluster).await;
    let mut events = server.events();
    let mut acked = 0;
    for i in 0..20 {
        publish(&mut events, "kill", vec![keyed(i, true)]).await;
        acked += 1;
    }
    cluster.kill9(0);
    // Retried with the same idempotency keys until acknowledged, as a
    // client does.
    for i in 20..60 {
        let req = PublishRequest {
            topic: "kill".into(),
            events: vec![keyed(i, true)],
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match events.publish(req.clone()).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no acknowledgement within {PATIENCE:?}: {e:?}"),
            }
        }
        acked += 1;
    }
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(0);
        cluster
    })
    .await
    .unwrap();
    if let Err(e) = try_replay(&server, "kill").await {
        for n in &cluster.nodes {
            eprintln!("--- {} ---\n{}", n.name, n.log_tail());
        }
        eprintln!("first replay after restart: {e:?}");
    }
    let replayed = replay_all(&server, "kill").await;
    let mut payloads: Vec<String> = replayed
        .iter()
        .map(|e| String::from_utf8(e.payload.to_vec()).unwrap())
        .collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), acked, "every acknowledged event, once");
    assert_eq!(replayed.len(), acked, "no event stored twice");
}

/// Two gateways on one cluster: members on both share a subscription's
/// work, an ack id issued by one gateway settles through the other (the
/// ack-id key and the leases live in the cluster), and when one gateway
/// goes away the leases its member held come back to the other member.
#[tokio::test]
async fn members_on_two_gateways_share_work_and_settle_each_others_leases() {
    let cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .unwrap();
    let a = TestServer::gateway(&cluster).await;
    let b = TestServer::gateway(&cluster).await;
    a.admin()
        .create_topic(CreateTopicRequest {
            topic: "work".into(),
            partitions: 2,
            retention: None,
        })
        .await
        .expect("create topic");
    b.admin()
        .create_subscription(v1::CreateSubscriptionRequest {
            topic: "work".into(),
            subscription: "s".into(),
            ack_deadline: Some(duration(2.0)),
            ..Default::default()
        })
        .await
        .expect("create subscription through the other gateway");
    let (mut events_a, mut events_b) = (a.events(), b.events());
    // Each member may hold 5: neither can take all 20 alone.
    let mut on_a = subscribe(&mut events_a, "work", "s", 5).await;
    let mut on_b = subscribe(&mut events_b, "work", "s", 5).await;
    publish(
        &mut events_a,
        "work",
        (0..20).map(|i| keyed(i, false)).collect(),
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    let mut from_a = 0;
    while seen.len() < 20 {
        tokio::select! {
            got = recv_n(&mut on_a, 1) => {
                from_a += got.len();
                // Settled through the other gateway.
                for d in &got { seen.insert(payload(d)); }
                ack(&mut events_b, "work", "s", &got).await;
            }
            got = recv_n(&mut on_b, 1) => {
                for d in &got { seen.insert(payload(d)); }
                ack(&mut events_a, "work", "s", &got).await;
            }
        }
    }
    assert!(
        from_a > 0 && from_a < 20,
        "both members worked: {from_a} on a"
    );
    assert_eq!(seen.len(), 20);

    // A's member holds leases when its gateway goes away: B's member gets
    // them (nacked by A on the way out, or after their deadline).
    publish(
        &mut events_b,
        "work",
        (20..23).map(|i| keyed(i, false)).collect(),
    )
    .await;
    let held = recv_n(&mut on_a, 1).await;
    drop(on_a);
    drop(events_a);
    drop(a);
    let mut rest = std::collections::BTreeSet::new();
    while rest.len() < 3 {
        let got = recv_n(&mut on_b, 1).await;
        for d in &got {
            rest.insert(payload(d));
        }
        ack(&mut events_b, "work", "s", &got).await;
    }
    assert!(rest.contains(&payload(&held[0])), "{rest:?}");
    let stats = subscription_stats(&mut b.admin(), "work", "s").await;
    assert_eq!((stats.backlog, stats.in_flight), (0, 0), "{stats:?}");
}

/// A gateway refuses to start on a NATS server that does not fsync every
/// write, saying what to set; with `nats-allow-unsynced` it starts and warns.
#[tokio::test]
async fn a_gateway_refuses_a_server_that_does_not_fsync_every_write() {
    use eventbus_tests::{temp_dir, ChildServer};
    const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");
    let cluster = tokio::task::spawn_blocking(|| NatsCluster::start_with(1, false))
        .await
        .unwrap();
    let (_dir, data) = temp_dir();
    let (urls, monitor) = (cluster.urls(), cluster.monitor_urls());
    let args = ["--storage", "jetstream", "--nats-url", urls.as_str()];
    let env = [
        ("EVENTBUS_NATS_MONITOR_URL", monitor.as_str()),
        ("EVENTBUS_NATS_REPLICAS", "1"),
    ];
    let refused = ChildServer::try_start(BIN, &data, &args, &env)
        .await
        .err()
        .expect("refused to start");
    assert!(
        refused.contains("does not fsync every write") && refused.contains("sync_interval: always"),
        "{refused}"
    );
    let mut env = env.to_vec();
    env.push(("EVENTBUS_NATS_ALLOW_UNSYNCED", "true"));
    let server = ChildServer::try_start(BIN, &data, &args, &env)
        .await
        .expect("starts with the override");
    let log = server.log_lines().join("\n");
    assert!(log.contains("running anyway"), "{log}");
    assert_eq!(server.terminate().await, Some(0));
}

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

/// A 3-node cluster with gateways `a` and `b`: `topic` (2 partitions)
/// made through `a`, its subscription `s` through `b`.
async fn two_gateways(
    topic: &str,
    ack_deadline: Option<prost_types::Duration>,
) -> (NatsCluster, TestServer, TestServer) {
    let cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .unwrap();
    let a = TestServer::gateway(&cluster).await;
    let b = TestServer::gateway(&cluster).await;
    a.admin()
        .create_topic(CreateTopicRequest {
            topic: topic.into(),
            partitions: 2,
            retention: None,
        })
        .await
        .expect("create topic");
    b.admin()
        .create_subscription(v1::CreateSubscriptionRequest {
            topic: topic.into(),
            subscription: "s".into(),
            ack_deadline,
            ..Default::default()
        })
        .await
        .expect("create subscription through the other gateway");
    (cluster, a, b)
}

/// Two gateways on one cluster: members on both share a subscription's
/// work, an ack id issued by one gateway settles through the other (the
/// ack-id key and the leases live in the cluster), and when one gateway
/// goes away the leases its member held come back to the other member.
#[tokio::test]
async fn members_on_two_gateways_share_work_and_settle_each_others_leases() {
    // The subscription is made through the other gateway.
    let (_cluster, a, b) = two_gateways("work", Some(duration(2.0))).await;
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

/// GetStatus through `server`; None while the cluster cannot answer (an
/// election after a node died), as a client polling it sees.
async fn cluster_status(server: &TestServer) -> Option<(String, v1::ClusterStatus)> {
    match server.admin().get_status(v1::GetStatusRequest {}).await {
        Ok(r) => {
            let r = r.into_inner();
            Some((r.backend, r.cluster.expect("a cluster section")))
        }
        Err(e) => {
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            None
        }
    }
}

/// Polls GetStatus until `done` holds for its cluster section.
async fn status_until(
    server: &TestServer,
    what: &str,
    done: impl Fn(&v1::ClusterStatus) -> bool,
) -> v1::ClusterStatus {
    let deadline = tokio::time::Instant::now() + 3 * PATIENCE;
    let mut last = None;
    loop {
        if let Some((backend, c)) = cluster_status(server).await {
            assert_eq!(backend, "jetstream");
            if done(&c) {
                return c;
            }
            last = Some(c);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never showed {what}; last: {last:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

fn healthy(c: &v1::ClusterStatus) -> bool {
    c.streams_without_leader == 0
        && c.replicas_not_current == 0
        && c.lagging_peers == 0
        && c.streams.iter().all(|s| {
            !s.leader.is_empty()
                && s.replicas.len() == 3
                && s.replicas.iter().all(|r| r.current && !r.offline)
        })
}

/// GetStatus and the metrics show the cluster: every stream led, with
/// three current replicas; after a kill -9 of one node the streams it held
/// report it as not current while status keeps answering; once it is back
/// its replicas catch up.
#[tokio::test]
async fn status_and_metrics_show_the_clusters_health_through_a_node_kill_9() {
    let mut cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .unwrap();
    let server = TestServer::gateway(&cluster).await;
    server
        .admin()
        .create_topic(CreateTopicRequest {
            topic: "health".into(),
            partitions: 2,
            retention: None,
        })
        .await
        .expect("create topic");
    let mut events = server.events();
    publish(
        &mut events,
        "health",
        (0..10).map(|i| keyed(i, false)).collect(),
    )
    .await;

    let c = status_until(&server, "a healthy cluster", healthy).await;
    let partitions: Vec<&str> = c
        .streams
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| n.starts_with("EB_T") && n.contains("_P"))
        .collect();
    assert_eq!(partitions.len(), 2, "{c:#?}");
    assert_eq!(c.stream_count as usize, c.streams.len());
    let nodes: std::collections::BTreeSet<&str> =
        cluster.nodes.iter().map(|n| n.name.as_str()).collect();
    for s in &c.streams {
        let peers: std::collections::BTreeSet<&str> =
            s.replicas.iter().map(|r| r.peer.as_str()).collect();
        assert_eq!(peers, nodes, "{s:?}");
        assert_eq!(s.replicas.iter().filter(|r| r.leader).count(), 1, "{s:?}");
        assert_eq!(s.replicas[0].peer, s.leader, "the leader comes first");
    }

    let (_, metrics) = eventbus_tests::http_get(server.metrics_addr, "/metrics").await;
    for series in [
        "eventbus_backend{backend=\"jetstream\"} 1",
        "eventbus_backend{backend=\"rocksdb\"} 0",
        "eventbus_cluster_streams_without_leader 0",
        "eventbus_cluster_replicas_not_current 0",
        "eventbus_cluster_lagging_peers 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} in:\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("eventbus_cluster_streams ")),
        "{metrics}"
    );
    for p in &partitions {
        for series in [
            format!("eventbus_cluster_stream_replicas_current{{stream=\"{p}\"}} 3"),
            format!("eventbus_cluster_stream_replica_lag{{stream=\"{p}\"}} 0"),
        ] {
            assert!(
                metrics.lines().any(|l| l == series),
                "{series} in:\n{metrics}"
            );
        }
    }

    // Kill a node; publishes after it leave its replicas behind.
    let victim = cluster.nodes[2].name.clone();
    cluster.kill9(2);
    for i in 10..20 {
        let req = PublishRequest {
            topic: "health".into(),
            events: vec![keyed(i, false)],
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while let Err(e) = events.publish(req.clone()).await {
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            assert!(tokio::time::Instant::now() < deadline, "{e:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let degraded = |c: &v1::ClusterStatus| {
        let partitions_behind = c
            .streams
            .iter()
            .filter(|s| partitions.contains(&s.name.as_str()))
            .filter(|s| {
                s.leader != victim
                    && s.replicas
                        .iter()
                        .any(|r| r.peer == victim && !r.current && !r.leader)
            })
            .count();
        partitions_behind == partitions.len()
            && c.replicas_not_current as usize >= partitions.len()
            && c.lagging_peer_names == [victim.clone()]
    };
    let c = status_until(&server, "the killed node's replicas not current", degraded).await;
    assert!(c.lagging_peers == 1, "{c:#?}");
    let (_, metrics) = eventbus_tests::http_get(server.metrics_addr, "/metrics").await;
    for p in &partitions {
        let series = format!("eventbus_cluster_stream_replicas_current{{stream=\"{p}\"}} 2");
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} in:\n{metrics}"
        );
    }
    assert!(
        !metrics
            .lines()
            .any(|l| l == "eventbus_cluster_replicas_not_current 0"),
        "{metrics}"
    );

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(2);
        cluster
    })
    .await
    .unwrap();
    status_until(&server, "every replica current again", healthy).await;
    drop(cluster);
}

/// Members on two gateways, each acking what it gets through its own
/// gateway and one nacking once: GetSubscription through either gateway
/// reports the counts summed over both, and both members.
#[tokio::test]
async fn subscription_figures_are_summed_over_the_gateways() {
    let (_cluster, a, b) = two_gateways("sums", None).await;
    let (mut events_a, mut events_b) = (a.events(), b.events());
    let mut on_a = subscribe(&mut events_a, "sums", "s", 5).await;
    let mut on_b = subscribe(&mut events_b, "sums", "s", 5).await;
    publish(
        &mut events_a,
        "sums",
        (0..20).map(|i| keyed(i, false)).collect(),
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    let (mut from_a, mut nacked) = (0, false);
    while seen.len() < 20 {
        tokio::select! {
            got = recv_n(&mut on_a, 1) => {
                from_a += got.len();
                for d in &got { seen.insert(payload(d)); }
                ack(&mut events_a, "sums", "s", &got).await;
            }
            got = recv_n(&mut on_b, 1) => {
                let mut got = &got[..];
                if !nacked {
                    // Comes back, to either member.
                    events_b
                        .nack(v1::NackRequest {
                            topic: "sums".into(),
                            subscription: "s".into(),
                            ack_ids: vec![got[0].ack_id.clone()],
                            delay: Some(duration(0.0)),
                            reason: "once".into(),
                            dead_letter: false,
                        })
                        .await
                        .expect("nack");
                    nacked = true;
                    got = &got[1..];
                }
                for d in got { seen.insert(payload(d)); }
                ack(&mut events_b, "sums", "s", got).await;
            }
        }
    }
    assert!(
        from_a > 0 && from_a < 20,
        "both members worked: {from_a} on a"
    );
    for (via, server) in [("a", &a), ("b", &b)] {
        let stats = subscription_stats(&mut server.admin(), "sums", "s").await;
        assert_eq!(
            (stats.acked, stats.nacked, stats.delivered, stats.members),
            (20, 1, 21, 2),
            "through {via}: {stats:?}"
        );
        assert_eq!(stats.redelivered, 1, "through {via}: {stats:?}");
        let listed = server
            .admin()
            .list_subscriptions(v1::ListSubscriptionsRequest {
                topic: "sums".into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .subscriptions;
        let listed = listed[0].stats.expect("stats");
        assert_eq!(
            (listed.acked, listed.members),
            (20, 2),
            "listed through {via}"
        );
    }
    // One member leaves: the other gateway no longer counts it.
    drop(on_a);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stats = subscription_stats(&mut b.admin(), "sums", "s").await;
        if stats.members == 1 {
            assert_eq!(stats.acked, 20, "{stats:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

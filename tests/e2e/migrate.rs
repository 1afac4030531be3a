//! `eventbus migrate`: a single node's data dir moved into a three-node
//! JetStream cluster by the real binary, then read back through a gateway
//! over real gRPC: the same topics, events at the same offsets with the
//! same publish times, subscriptions resuming where they stood, the same
//! dead letters; a second run changes nothing. And its refusals: a data
//! dir a server holds, a directory that is no data dir.

use std::collections::BTreeMap;
use std::path::Path;

use eventbus_tests::nats::NatsCluster;
use eventbus_tests::v1::{self, CreateSubscriptionRequest, CreateTopicRequest};
use eventbus_tests::{DataDir, TestServer};
use tonic::transport::Channel;

use crate::support::*;

/// A single-node server, whatever backend the harness switch asks for:
/// migrate reads a RocksDB data dir.
async fn single_node() -> TestServer {
    TestServer::start_with(DataDir::Fresh, |c| {
        c.storage = eventbus_server::config::Storage::Rocksdb;
        // Retention trims within the test (the "clicks" topic below).
        c.retention_interval = std::time::Duration::from_millis(100);
    })
    .await
}

/// An event without what depends on the store's topic id (its event id).
fn comparable(e: &v1::Event) -> v1::Event {
    v1::Event {
        event_id: String::new(),
        ..e.clone()
    }
}

/// A dead letter without its id (the cluster's queue numbers its own) and
/// its event's id.
fn comparable_dead_letter(d: &v1::DeadLetter) -> v1::DeadLetter {
    v1::DeadLetter {
        id: String::new(),
        event: d.event.as_ref().map(comparable),
        ..d.clone()
    }
}

/// A subscription's settings and state, without its statistics.
async fn settings(channel: Channel, topic: &str, sub: &str) -> v1::Subscription {
    let mut admin = v1::admin_service_client::AdminServiceClient::new(channel);
    let s = admin
        .get_subscription(v1::GetSubscriptionRequest {
            topic: topic.into(),
            subscription: sub.into(),
        })
        .await
        .expect("get subscription")
        .into_inner()
        .subscription
        .expect("subscription");
    v1::Subscription { stats: None, ..s }
}

fn migrate_args<'a>(data: &'a str, cluster: &'a (String, String)) -> Vec<&'a str> {
    vec![
        "--from",
        data,
        "--nats-url",
        &cluster.0,
        "--nats-monitor-url",
        &cluster.1,
        "--replicas",
        "3",
    ]
}

async fn create_sub(server: &TestServer, req: CreateSubscriptionRequest) {
    server
        .admin()
        .create_subscription(req)
        .await
        .expect("create subscription");
}

/// Per partition, the offsets of `deliveries`, sorted.
fn by_partition(deliveries: &[v1::Delivery]) -> BTreeMap<u32, Vec<u64>> {
    let mut out: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for d in deliveries {
        let e = d.event.as_ref().expect("event");
        out.entry(e.partition).or_default().push(e.offset);
    }
    for offsets in out.values_mut() {
        offsets.sort_unstable();
    }
    out
}

#[tokio::test]
async fn a_single_node_moves_into_a_cluster_and_a_second_run_changes_nothing() {
    // ---- the single node: topics, events, positions, dead letters, pause.
    let source = single_node().await;
    let mut admin = source.admin();
    admin
        .create_topic(CreateTopicRequest {
            topic: "orders".into(),
            partitions: 3,
            ..Default::default()
        })
        .await
        .expect("create orders");
    admin
        .create_topic(CreateTopicRequest {
            topic: "payments".into(),
            partitions: 1,
            retention: Some(v1::Retention {
                max_age: Some(duration(7.0 * 86400.0)),
                max_bytes: 0,
            }),
        })
        .await
        .expect("create payments");
    let mut events = source.events();
    let orders: Vec<_> = (0..30)
        .map(|i| {
            let mut e = event(
                &format!("customer-{i}"),
                "order.created",
                format!("order {i}"),
            );
            e.event_time = Some(prost_types::Timestamp {
                seconds: 1_700_000_000 + i,
                nanos: 0,
            });
            e
        })
        .collect();
    let published = publish(&mut events, "orders", orders).await;
    let mut per_partition = [0u64; 3];
    for r in &published {
        per_partition[r.partition as usize] += 1;
    }
    assert!(
        per_partition.iter().all(|&n| n > 0),
        "30 keys reach every partition: {per_partition:?}"
    );
    publish(
        &mut events,
        "payments",
        (0..5)
            .map(|i| event("", "payment.made", format!("payment {i}")))
            .collect(),
    )
    .await;

    create_sub(
        &source,
        CreateSubscriptionRequest {
            topic: "orders".into(),
            subscription: "billing".into(),
            ack_deadline: Some(duration(30.0)),
            max_delivery_attempts: Some(7),
            ..Default::default()
        },
    )
    .await;
    create_sub(
        &source,
        CreateSubscriptionRequest {
            topic: "orders".into(),
            subscription: "reports".into(),
            ack_deadline: Some(duration(45.0)),
            filter: Some(v1::Filter {
                types: vec!["order.*".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    create_sub(
        &source,
        CreateSubscriptionRequest {
            topic: "payments".into(),
            subscription: "ledger".into(),
            ack_deadline: Some(duration(30.0)),
            max_delivery_attempts: Some(2),
            ..Default::default()
        },
    )
    .await;

    // billing: partition 0 all acked, partition 1 its first half, partition
    // 2 nothing, so each partition stands somewhere else.
    // (A member that leaves gives its leases back: each stream stays open
    // until its deliveries are settled.)
    let mut billing = subscribe(&mut events, "orders", "billing", 100).await;
    let got = recv_n(&mut billing, 30).await;
    let mut to_ack = Vec::new();
    let mut expected_floor = [0u64; 3];
    for (p, offsets) in by_partition(&got) {
        let n = match p {
            0 => offsets.len(),
            1 => offsets.len() / 2,
            _ => 0,
        };
        expected_floor[p as usize] = n as u64;
        to_ack.extend(got.iter().filter(|d| {
            let e = d.event.as_ref().unwrap();
            e.partition == p && e.offset < n as u64
        }));
    }
    let to_ack: Vec<_> = to_ack.into_iter().cloned().collect();
    ack(&mut events, "orders", "billing", &to_ack).await;

    // ledger: offsets 0 and 1 nacked straight into the dead-letter queue,
    // 2 acked, 3 and 4 left (their leases given back when the member
    // leaves count one of their two attempts).
    let mut ledger = subscribe(&mut events, "payments", "ledger", 100).await;
    let got = recv_n(&mut ledger, 5).await;
    let at = |o: u64| {
        got.iter()
            .find(|d| d.event.as_ref().unwrap().offset == o)
            .expect("delivered")
            .clone()
    };
    for (o, reason) in [(0, "card declined"), (1, "unknown account")] {
        events
            .nack(v1::NackRequest {
                topic: "payments".into(),
                subscription: "ledger".into(),
                ack_ids: vec![at(o).ack_id],
                reason: reason.into(),
                dead_letter: true,
                ..Default::default()
            })
            .await
            .expect("nack");
    }
    ack(&mut events, "payments", "ledger", &[at(2)]).await;
    drop((billing, ledger));
    admin
        .pause_subscription(v1::PauseSubscriptionRequest {
            topic: "orders".into(),
            subscription: "reports".into(),
        })
        .await
        .expect("pause");

    // clicks: retention removed offsets 0..5, so its partition starts at
    // offset 5 and the cluster's stream must too (its first_seq).
    admin
        .create_topic(CreateTopicRequest {
            topic: "clicks".into(),
            partitions: 1,
            retention: Some(v1::Retention {
                max_age: Some(duration(1.0)),
                max_bytes: 0,
            }),
        })
        .await
        .expect("create clicks");
    publish(
        &mut events,
        "clicks",
        (0..5)
            .map(|i| event("", "click", format!("click {i}")))
            .collect(),
    )
    .await;
    // Retention keeps a partition's newest event: one more after the five
    // expired.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    publish(&mut events, "clicks", vec![event("", "click", "click 5")]).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let t = sorted_topics(source.channel()).await;
        let clicks = t.iter().find(|t| t.name == "clicks").expect("clicks");
        if clicks.partition_info[0].start_offset == 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never trimmed clicks"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let source_dead = eventually_dead_letters(&source, 2).await;
    let source_topics = sorted_topics(source.channel()).await;
    let source_orders = replay_all(source.channel(), "orders").await;
    let source_payments = replay_all(source.channel(), "payments").await;
    let mut source_settings = Vec::new();
    for (t, s) in [
        ("orders", "billing"),
        ("orders", "reports"),
        ("payments", "ledger"),
    ] {
        source_settings.push(settings(source.channel(), t, s).await);
    }
    let dir = source.stop().await;
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");

    // ---- migrate into three nodes.
    let cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .expect("start nats");
    let urls = (cluster.urls(), cluster.monitor_urls());
    let (ok, out, err) = run_cli("migrate", &migrate_args(data, &urls)).await;
    assert!(ok, "migrate failed:\n{out}\n{err}");
    assert!(
        out.contains("topics: 3 created")
            && out.contains("events: 36 copied")
            && out.contains("subscriptions: 3 created")
            && out.contains("dead letters: 2 copied")
            && out.contains("verified"),
        "summary: {out}"
    );

    // ---- read it back through a gateway.
    let gateway = TestServer::gateway(&cluster).await;
    let cluster_topics = sorted_topics(gateway.channel()).await;
    let shape = |ts: &[v1::Topic]| {
        ts.iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.partitions,
                    t.retention,
                    t.partition_info
                        .iter()
                        .map(|p| (p.partition, p.end_offset))
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&cluster_topics), shape(&source_topics));
    // First offsets too; clicks' one moved event may already have expired
    // in the cluster (max_age counts from the move).
    let starts = |ts: &[v1::Topic]| {
        ts.iter()
            .flat_map(|t| {
                t.partition_info
                    .iter()
                    .map(|p| (t.name.clone(), p.start_offset))
            })
            .collect::<Vec<_>>()
    };
    for (there, here) in starts(&cluster_topics)
        .into_iter()
        .zip(starts(&source_topics))
    {
        assert!(
            there == here || (here.0 == "clicks" && there.1 == here.1 + 1),
            "first offsets: cluster {there:?}, data dir {here:?}"
        );
    }
    for (name, before) in [("orders", &source_orders), ("payments", &source_payments)] {
        let after = replay_all(gateway.channel(), name).await;
        assert_eq!(
            after.iter().map(comparable).collect::<Vec<_>>(),
            before.iter().map(comparable).collect::<Vec<_>>(),
            "topic {name}: partition, offset, payload, key, type, attributes, publish and \
             event times"
        );
    }
    for before in &source_settings {
        let after = settings(gateway.channel(), &before.topic, &before.name).await;
        assert_eq!(&after, before, "settings and paused state kept");
    }
    assert_eq!(
        dead_letters(&gateway, "payments", "ledger")
            .await
            .iter()
            .map(comparable_dead_letter)
            .collect::<Vec<_>>(),
        source_dead
            .iter()
            .map(comparable_dead_letter)
            .collect::<Vec<_>>(),
        "the same dead letters: event, attempts, reason, times"
    );

    // Each subscription's next deliveries start where the single node left
    // off, partition by partition.
    let mut cluster_events = gateway.events();
    let backlog: u64 = (0..3).map(|p| per_partition[p] - expected_floor[p]).sum();
    let mut stream = subscribe(&mut cluster_events, "orders", "billing", 100).await;
    let again = by_partition(&recv_n(&mut stream, backlog as usize).await);
    expect_silence(&mut stream, std::time::Duration::from_millis(300)).await;
    for p in 0..3u32 {
        let want: Vec<u64> = (expected_floor[p as usize]..per_partition[p as usize]).collect();
        assert_eq!(
            again.get(&p).cloned().unwrap_or_default(),
            want,
            "billing partition {p} resumes at offset {}",
            expected_floor[p as usize]
        );
    }
    drop(stream);
    let mut stream = subscribe(&mut cluster_events, "payments", "ledger", 100).await;
    let ledger = by_partition(&recv_n(&mut stream, 2).await);
    assert_eq!(
        ledger.get(&0),
        Some(&vec![3, 4]),
        "ledger resumes at offset 3"
    );
    drop(stream);
    let mut stream = subscribe(&mut cluster_events, "orders", "reports", 100).await;
    expect_silence(&mut stream, std::time::Duration::from_millis(500)).await;
    drop(stream);
    drop(gateway);

    // ---- a second run: nothing to copy, nothing changed.
    let (ok, out, err) = run_cli("migrate", &migrate_args(data, &urls)).await;
    assert!(ok, "second migrate failed:\n{out}\n{err}");
    assert!(
        out.contains("nothing to do")
            && out.contains("topics: 0 created, 3 already there")
            && out.contains("events: 0 copied, 36 already there")
            && out.contains("dead letters: 0 copied"),
        "second summary: {out}"
    );
    let gateway = TestServer::gateway(&cluster).await;
    assert_eq!(
        shape(&sorted_topics(gateway.channel()).await),
        shape(&source_topics)
    );
    assert_eq!(dead_letters(&gateway, "payments", "ledger").await.len(), 2);

    // The trimmed partition goes on at its offset.
    let next = publish(
        &mut gateway.events(),
        "clicks",
        vec![event("", "click", "after")],
    )
    .await;
    assert_eq!(
        (next[0].partition, next[0].offset),
        (0, 6),
        "clicks goes on at offset 6"
    );
}

/// The source's dead letters once `n` are there (a nack's entry is written
/// by the subscription's next flush).
async fn eventually_dead_letters(server: &TestServer, n: usize) -> Vec<v1::DeadLetter> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let dls = dead_letters(server, "payments", "ledger").await;
        if dls.len() == n {
            return dls;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} dead letters, want {n}",
            dls.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn migrate_refuses_a_data_dir_in_use_and_a_directory_that_is_none() {
    let server = single_node().await;
    publish(&mut server.events(), "t", vec![event("k", "x", "one")]).await;
    let data = server.data_dir().join("data");
    let data_str = data.to_str().expect("utf-8 path").to_string();
    // Nothing listens on port 1: the refusal must come before any
    // connection attempt.
    let nowhere = ("nats://127.0.0.1:1".to_string(), String::new());
    let (ok, out, err) = run_cli("migrate", &migrate_args(&data_str, &nowhere)).await;
    assert!(!ok, "migrate ran on a data dir in use: {out}");
    assert!(
        err.contains("is in use") && err.contains("stop the server"),
        "stderr: {err}"
    );

    let empty = tempfile::tempdir().expect("temp dir");
    let empty_str = empty.path().to_str().expect("utf-8 path").to_string();
    let (ok, _, err) = run_cli("migrate", &migrate_args(&empty_str, &nowhere)).await;
    assert!(!ok);
    assert!(err.contains("not an eventbus data dir"), "stderr: {err}");
    assert!(
        std::fs::read_dir(empty.path()).unwrap().next().is_none(),
        "nothing was created in {}",
        empty.path().display()
    );

    // Once the server stopped, a dry run reads it and touches nothing.
    let dir = server.stop().await;
    assert!(Path::new(&data_str).starts_with(dir.path()));
    let (ok, out, err) = run_cli(
        "migrate",
        &["--from", &data_str, "--nats-url", &nowhere.0, "--dry-run"],
    )
    .await;
    assert!(ok, "dry run failed: {out}\n{err}");
    assert!(
        out.contains("topic t: ") && out.contains("would copy 1 topics, 1 events"),
        "dry run: {out}"
    );
}

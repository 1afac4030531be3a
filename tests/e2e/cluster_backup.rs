//! Cluster mode's CreateBackup (JetStream stream snapshots) and `eventbus
//! restore --nats-url` (stream restores), through a gateway over a real
//! 3-node NATS cluster and the real binary: a new cluster holds every event
//! at its offset, each subscription where it stood, the dead letters and
//! the audit log; the same backup onto one node with `--replicas 1`; and
//! the refusals: a cluster that already has the streams, a damaged file, a
//! path outside backup-root, the wrong kind of target.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use eventbus_tests::nats::NatsCluster;
use eventbus_tests::v1::{
    self, CreateBackupRequest, CreateSubscriptionRequest, CreateTopicRequest,
};
use eventbus_tests::{DataDir, TestServer};
use tonic::Code;

use crate::support::*;

/// A gateway over `cluster` with `replicas`, and backups under `root`.
async fn gateway(cluster: &NatsCluster, replicas: usize, root: Option<PathBuf>) -> TestServer {
    let (urls, monitor) = (cluster.urls(), cluster.monitor_urls());
    TestServer::start_with(DataDir::Fresh, move |c| {
        c.storage = eventbus_server::config::Storage::Jetstream;
        c.nats_url = urls;
        c.nats_monitor_url = monitor;
        c.nats_replicas = replicas;
        c.backup_root = root;
    })
    .await
}

/// Creates `topic`, retrying while the fresh cluster refuses R3 placement
/// (the meta leader can count a peer offline for a moment after it
/// formed: "no suitable peers for placement").
async fn create_topic(server: &TestServer, topic: &str, partitions: u32) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let created = server
            .admin()
            .create_topic(CreateTopicRequest {
                topic: topic.into(),
                partitions,
                retention: None,
            })
            .await;
        match created {
            Ok(_) => return,
            Err(e) if e.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("create topic {topic}: {e:?}"),
        }
    }
}

/// A topic's name, partitions and each partition's (start, end) offsets.
type Shape = (String, u32, Vec<(u64, u64)>);

fn shape(ts: &[v1::Topic]) -> Vec<Shape> {
    ts.iter()
        .map(|t| {
            let bounds = t
                .partition_info
                .iter()
                .map(|p| (p.start_offset, p.end_offset))
                .collect();
            (t.name.clone(), t.partitions, bounds)
        })
        .collect()
}

async fn audit_records(server: &TestServer) -> Vec<v1::AuditRecord> {
    server
        .admin()
        .list_audit_records(v1::ListAuditRecordsRequest::default())
        .await
        .expect("list audit records")
        .into_inner()
        .records
}

/// A subscription's settings, without its statistics.
async fn settings(server: &TestServer, topic: &str, sub: &str) -> v1::Subscription {
    let s = server
        .admin()
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

fn offset_of(d: &v1::Delivery) -> (u32, u64) {
    let e = d.event.as_ref().expect("event");
    (e.partition, e.offset)
}

#[tokio::test]
async fn a_cluster_backup_restores_events_positions_dead_letters_and_audit_into_a_new_cluster() {
    let started = Instant::now();
    let backups = tempfile::tempdir().expect("temp dir");
    let source_cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .expect("start nats");
    let source = gateway(&source_cluster, 3, Some(backups.path().to_path_buf())).await;

    // ---- two topics, keyed events, a subscription with a position, one
    // with dead letters.
    let mut admin = source.admin();
    for (topic, partitions) in [("orders", 3), ("payments", 2)] {
        create_topic(&source, topic, partitions).await;
    }
    let mut events = source.events();
    let orders = publish(
        &mut events,
        "orders",
        (0..30)
            .map(|i| {
                event(
                    &format!("customer-{}", i % 10),
                    "order.created",
                    format!("order {i}"),
                )
            })
            .collect(),
    )
    .await;
    let mut end = [0u64; 3];
    for r in &orders {
        end[r.partition as usize] = end[r.partition as usize].max(r.offset + 1);
    }
    assert!(
        end.iter().all(|&n| n > 1),
        "keys reach every partition: {end:?}"
    );
    publish(
        &mut events,
        "payments",
        (0..10)
            .map(|i| {
                event(
                    &format!("account-{i}"),
                    "payment.made",
                    format!("payment {i}"),
                )
            })
            .collect(),
    )
    .await;
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "orders".into(),
            subscription: "billing".into(),
            // Its unacked leases come back within a second of the restore.
            ack_deadline: Some(duration(1.0)),
            ..Default::default()
        })
        .await
        .expect("create billing");
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "payments".into(),
            subscription: "ledger".into(),
            // A nack on the only attempt dead-letters.
            max_delivery_attempts: Some(1),
            ..Default::default()
        })
        .await
        .expect("create ledger");

    // billing: the first half of each partition acked, the rest held and
    // given back when the member leaves.
    let mut billing = subscribe(&mut events, "orders", "billing", 100).await;
    let got = recv_n(&mut billing, 30).await;
    let floor: Vec<u64> = end.iter().map(|n| n / 2).collect();
    let to_ack: Vec<v1::Delivery> = got
        .iter()
        .filter(|d| {
            let (p, o) = offset_of(d);
            o < floor[p as usize]
        })
        .cloned()
        .collect();
    ack(&mut events, "orders", "billing", &to_ack).await;
    drop(billing);

    // ledger: three nacked into the dead-letter queue, the rest acked.
    let mut ledger = subscribe(&mut events, "payments", "ledger", 100).await;
    let got = recv_n(&mut ledger, 10).await;
    let (nacked, acked): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|d| ["payment 2", "payment 5", "payment 7"].contains(&payload(d).as_str()));
    events
        .nack(v1::NackRequest {
            topic: "payments".into(),
            subscription: "ledger".into(),
            ack_ids: nacked.iter().map(|d| d.ack_id.clone()).collect(),
            reason: "card declined".into(),
            ..Default::default()
        })
        .await
        .expect("nack");
    ack(&mut events, "payments", "ledger", &acked).await;
    drop(ledger);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let source_dead = loop {
        let dls = dead_letters(&source, "payments", "ledger").await;
        if dls.len() == 3 {
            break dls;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} dead letters",
            dls.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // blobs: 2 MiB that does not compress, so its snapshot and its
    // restore go in many chunks (flow control both ways).
    create_topic(&source, "blobs", 1).await;
    for batch in 0..8 {
        let blobs = (0..8)
            .map(|i| {
                let bytes = incompressible_bytes(32 * 1024, batch * 8 + i);
                let mut e = event("", "blob", bytes);
                e.idempotency_key = format!("blob-{batch}-{i}");
                e
            })
            .collect();
        publish(&mut events, "blobs", blobs).await;
    }
    let source_blobs = replay_all(source.channel(), "blobs").await;
    assert_eq!(source_blobs.len(), 64);

    let source_topics = sorted_topics(source.channel()).await;
    let source_orders = replay_all(source.channel(), "orders").await;
    let source_payments = replay_all(source.channel(), "payments").await;
    let source_settings = [
        settings(&source, "orders", "billing").await,
        settings(&source, "payments", "ledger").await,
    ];
    let source_audit = audit_records(&source).await;
    assert!(
        source_audit.len() >= 4
            && source_audit.iter().any(|r| r.action == "CreateTopic")
            && source_audit
                .iter()
                .any(|r| r.action == "CreateSubscription"),
        "audit records: {source_audit:?}"
    );

    // ---- the backup.
    let took = Instant::now();
    let resp = admin
        .create_backup(CreateBackupRequest { dir: "b1".into() })
        .await
        .expect("create backup")
        .into_inner();
    let backup_took = took.elapsed();
    let dir = PathBuf::from(&resp.dir);
    assert_eq!(dir, backups.path().canonicalize().unwrap().join("b1"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("manifest is JSON");
    let names: Vec<&str> = manifest["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    // Topic ids 1 to 3, subscription ids 1 and 2; partitions first, the
    // buckets last; no secrets bucket.
    assert_eq!(
        names,
        [
            "EB_T1_P0",
            "EB_T1_P1",
            "EB_T1_P2",
            "EB_T2_P0",
            "EB_T2_P1",
            "EB_T3_P0",
            "EB_D1",
            "EB_R1",
            "EB_D2",
            "EB_R2",
            "EB_AUDIT",
            "KV_eventbus-subscriptions",
            "KV_eventbus-topics"
        ]
    );
    let on_disk: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(resp.size_bytes, on_disk, "size_bytes is what the dir holds");
    let p0 = &manifest["streams"][0];
    assert_eq!(p0["messages"].as_u64(), Some(end[0]));
    assert_eq!(p0["last_seq"].as_u64(), Some(end[0]));
    assert_eq!(p0["config"]["num_replicas"].as_u64(), Some(3));
    assert_eq!(p0["sha256"].as_str().map(str::len), Some(64));
    let blob_stream = &manifest["streams"][5];
    assert_eq!(blob_stream["name"], "EB_T3_P0");
    assert!(
        blob_stream["bytes"].as_u64().unwrap() > 2 << 20,
        "{blob_stream}"
    );
    eprintln!(
        "cluster backup: {} streams, {} bytes in {backup_took:?}",
        names.len(),
        resp.size_bytes
    );

    // The handler's path rules hold as on one node.
    let again = admin
        .create_backup(CreateBackupRequest { dir: "b1".into() })
        .await
        .expect_err("the same dir twice");
    let missing_parent = admin
        .create_backup(CreateBackupRequest {
            dir: "no/such/b1".into(),
        })
        .await
        .expect_err("a missing parent");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert_eq!(
        again.message(),
        missing_parent.message().replace("no/such/b1", "b1")
    );
    assert_status(
        admin
            .create_backup(CreateBackupRequest {
                dir: "../b2".into(),
            })
            .await,
        Code::InvalidArgument,
        "backup-root",
    );

    // ---- what one backup catches half made (its snapshots are one
    // stream at a time), put together from two: a topic and a subscription
    // created and a topic deleted after b1, backed up as b2; the mix takes
    // the buckets (and the new subscription's queues) from b2 and every
    // other stream from b1, as if the changes had come while one backup
    // ran, between its partitions and its buckets.
    admin
        .create_topic(CreateTopicRequest {
            topic: "late".into(),
            partitions: 1,
            retention: None,
        })
        .await
        .expect("create late");
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "orders".into(),
            subscription: "late-sub".into(),
            ..Default::default()
        })
        .await
        .expect("create late-sub");
    admin
        .delete_topic(v1::DeleteTopicRequest {
            topic: "payments".into(),
        })
        .await
        .expect("delete payments");
    let b2 = PathBuf::from(
        admin
            .create_backup(CreateBackupRequest { dir: "b2".into() })
            .await
            .expect("second backup")
            .into_inner()
            .dir,
    );
    drop(source);
    let mixed = tempfile::tempdir().expect("temp dir");
    let m2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b2.join("manifest.json")).unwrap()).unwrap();
    let from_b2 = [
        "EB_D3",
        "EB_R3",
        "KV_eventbus-subscriptions",
        "KV_eventbus-topics",
    ];
    let mut streams = Vec::new();
    for (source_dir, m, later) in [(&dir, &manifest, false), (&b2, &m2, true)] {
        for s in m["streams"].as_array().unwrap() {
            let name = s["name"].as_str().unwrap();
            if from_b2.contains(&name) == later {
                let file = s["file"].as_str().unwrap();
                std::fs::copy(source_dir.join(file), mixed.path().join(file)).unwrap();
                streams.push(s.clone());
            }
        }
    }
    assert_eq!(streams.len(), 15, "b2 has late-sub's queues: {m2}");
    let mut m = manifest.clone();
    m["streams"] = serde_json::Value::Array(streams);
    std::fs::write(
        mixed.path().join("manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();

    // ---- refusals that touch no cluster: a damaged file, the wrong
    // target kind.
    let dir_str = dir.to_str().expect("utf-8 path").to_string();
    let damaged = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), damaged.path().join(entry.file_name())).unwrap();
    }
    let victim = damaged.path().join("EB_T1_P1.tar.s2");
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let damaged_str = damaged.path().to_str().unwrap().to_string();
    let (ok, out, err) = run_cli(
        "restore",
        &["--from", &damaged_str, "--nats-url", "nats://127.0.0.1:1"],
    )
    .await;
    assert!(!ok, "restored a damaged backup: {out}");
    assert!(
        err.contains("is damaged")
            && err.contains("EB_T1_P1.tar.s2")
            && err.contains("do not match manifest.json")
            && err.contains("Nothing was restored"),
        "stderr: {err}"
    );
    let data = damaged.path().join("data");
    let (ok, _, err) = run_cli(
        "restore",
        &["--from", &dir_str, "--data-dir", data.to_str().unwrap()],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("is a cluster-mode backup") && err.contains("--nats-url"),
        "stderr: {err}"
    );
    assert!(!data.exists());

    // ---- restore into a new 3-node cluster.
    let target = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .expect("start nats");
    let (urls, monitor) = (target.urls(), target.monitor_urls());
    let args = [
        "--from",
        &dir_str,
        "--nats-url",
        &urls,
        "--nats-monitor-url",
        &monitor,
    ];
    let took = Instant::now();
    let (ok, out, err) = run_cli("restore", &args).await;
    let restore_took = took.elapsed();
    assert!(ok, "restore failed:\n{out}\n{err}");
    assert!(
        out.contains("restored 13 streams")
            && out.contains("3 topics with 104 events, 2 subscriptions, 3 dead letters")
            && out.contains("EB_T1_P0: ")
            && out.contains("every replica holds its stream")
            && !out.contains("note:"),
        "summary: {out}"
    );
    eprintln!("cluster restore (3 nodes) took {restore_took:?}:\n{out}");

    // A second restore onto it names the streams it already has.
    let (ok, out, err) = run_cli("restore", &args).await;
    assert!(!ok, "restored twice: {out}");
    assert!(
        err.contains("already has 13 of the backup's streams")
            && err.contains("EB_AUDIT")
            && err.contains("nothing was restored"),
        "stderr: {err}"
    );

    // ---- a gateway over the restored cluster sees the same bus.
    let restored = gateway(&target, 3, None).await;
    assert_eq!(
        shape(&sorted_topics(restored.channel()).await),
        shape(&source_topics)
    );
    // Whole events: ids (topic id, partition, offset), payloads, keys,
    // publish times.
    assert_eq!(
        replay_all(restored.channel(), "orders").await,
        source_orders
    );
    assert_eq!(
        replay_all(restored.channel(), "payments").await,
        source_payments
    );
    assert_eq!(replay_all(restored.channel(), "blobs").await, source_blobs);
    assert_eq!(
        settings(&restored, "orders", "billing").await,
        source_settings[0]
    );
    assert_eq!(
        settings(&restored, "payments", "ledger").await,
        source_settings[1]
    );
    assert_eq!(
        dead_letters(&restored, "payments", "ledger").await,
        source_dead,
        "the same dead letters: ids, events, attempts, reasons"
    );
    let audit = audit_records(&restored).await;
    assert!(
        audit.len() >= source_audit.len() && audit[..source_audit.len()] == source_audit[..],
        "the audit log before the backup is kept:\n{source_audit:?}\n{audit:?}"
    );

    // billing resumes after its acked position: exactly the unacked
    // events come, the first of each partition at its floor.
    let mut events = restored.events();
    let backlog: u64 = (0..3).map(|p| end[p] - floor[p]).sum();
    let mut stream = subscribe(&mut events, "orders", "billing", 100).await;
    let again = recv_n(&mut stream, backlog as usize).await;
    expect_silence(&mut stream, Duration::from_millis(300)).await;
    let again = by_partition(&again);
    for p in 0..3usize {
        let want: Vec<u64> = (floor[p]..end[p]).collect();
        assert_eq!(
            again.get(&(p as u32)).cloned().unwrap_or_default(),
            want,
            "billing partition {p} resumes at offset {}",
            floor[p]
        );
    }
    drop(stream);
    // ledger settled everything: nothing comes.
    let mut stream = subscribe(&mut events, "payments", "ledger", 100).await;
    expect_silence(&mut stream, Duration::from_millis(500)).await;
    drop(stream);
    // Topics go on at their offsets.
    let next = publish(
        &mut events,
        "orders",
        vec![event("customer-0", "order.created", "after")],
    )
    .await;
    let p = next[0].partition as usize;
    assert_eq!(next[0].offset, end[p], "partition {p} goes on at its end");
    drop(restored);
    drop(target);

    // ---- the mixed backup onto one node, with --replicas 1: what was
    // half made is left out and said so.
    let single = tokio::task::spawn_blocking(|| NatsCluster::start(1))
        .await
        .expect("start nats");
    let (urls, monitor) = (single.urls(), single.monitor_urls());
    let mixed_str = mixed.path().to_str().unwrap().to_string();
    let (ok, out, err) = run_cli(
        "restore",
        &[
            "--from",
            &mixed_str,
            "--nats-url",
            &urls,
            "--nats-monitor-url",
            &monitor,
            "--replicas",
            "1",
        ],
    )
    .await;
    assert!(ok, "restore onto one node failed:\n{out}\n{err}");
    eprintln!("mixed restore (1 node):\n{out}");
    for line in [
        "EB_T1_P0: ",
        ", 1 replicas",
        "note: topic \"late\" left out: not all its partition streams are in the backup",
        "note: subscription \"late-sub\" of topic \"orders\" left out: its consumer is missing",
        "note: stream EB_T2_P0 left out: no topic or subscription in the backup refers to it",
        "note: stream EB_T2_P1 left out",
        "note: stream EB_D2 left out",
        "note: stream EB_R2 left out",
        "restored 11 streams",
        "2 topics with 94 events, 1 subscriptions, 0 dead letters",
    ] {
        assert!(out.contains(line), "{line:?} missing in:\n{out}");
    }
    assert!(!out.contains(", 3 replicas"), "{out}");
    let one = gateway(&single, 1, None).await;
    // blobs and orders; not payments.
    assert_eq!(
        shape(&sorted_topics(one.channel()).await),
        shape(&source_topics[..2])
    );
    assert_eq!(replay_all(one.channel(), "orders").await, source_orders);
    assert_eq!(replay_all(one.channel(), "blobs").await, source_blobs);
    assert_eq!(
        settings(&one, "orders", "billing").await,
        source_settings[0]
    );
    assert_status(
        one.admin()
            .get_subscription(v1::GetSubscriptionRequest {
                topic: "orders".into(),
                subscription: "late-sub".into(),
            })
            .await,
        Code::NotFound,
        "late-sub",
    );
    // The name is free again: made anew, with its own consumers.
    one.admin()
        .create_subscription(CreateSubscriptionRequest {
            topic: "orders".into(),
            subscription: "late-sub".into(),
            ..Default::default()
        })
        .await
        .expect("late-sub again");
    drop(one);
    eprintln!("whole test took {:?}", started.elapsed());
}

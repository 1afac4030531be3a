//! Online backup under load, offline restore, and the status summary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use eventbus_tests::v1::{
    self, CreateBackupRequest, CreateSubscriptionRequest, CreateTopicRequest, GetStatusRequest,
    GetSubscriptionRequest, ReplayRequest,
};
use eventbus_tests::{DataDir, TestServer};
use tonic::Code;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");

type Acked = Arc<Mutex<Vec<(u32, u64, String)>>>;

/// Every event of `topic`, per partition in offset order.
async fn read_all(server: &TestServer, topic: &str) -> HashMap<u32, Vec<v1::Event>> {
    let mut stream = server
        .events()
        .replay(ReplayRequest {
            topic: topic.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut by_partition: HashMap<u32, Vec<v1::Event>> = HashMap::new();
    while let Some(msg) = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("replay ends")
        .expect("replay reads every record (CRC-checked)")
    {
        for e in msg.events {
            by_partition.entry(e.partition).or_default().push(e);
        }
    }
    by_partition
}

#[tokio::test]
async fn a_backup_under_load_restores_every_event_acknowledged_before_it() {
    if eventbus_tests::skip_on_jetstream(
        "restores a RocksDB checkpoint into a data dir; cluster mode's backup (one snapshot per stream) and its restore into a new cluster are tested by cluster_backup::",
    ) {
        return;
    }
    let backups = tempfile::tempdir().unwrap();
    let root = backups.path().to_path_buf();
    let server = TestServer::start_with(DataDir::Fresh, |c| c.backup_root = Some(root)).await;
    let mut admin = server.admin();
    admin
        .create_topic(CreateTopicRequest {
            topic: "load".into(),
            partitions: 4,
            retention: None,
        })
        .await
        .unwrap();
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "load".into(),
            subscription: "audit".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Four publishers keep publishing until told to stop.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..4 {
        let (mut client, acked, stop) = (server.events(), acked.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..8)
                    .map(|j| event("", "load.test", format!("p{p}-{i}-{j}")))
                    .collect();
                let names: Vec<String> = batch
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.payload).into())
                    .collect();
                let results = publish(&mut client, "load", batch).await;
                let mut a = acked.lock().unwrap();
                for (r, name) in results.iter().zip(names) {
                    a.push((r.partition, r.offset, name));
                }
                i += 1;
            }
        }));
    }
    while acked.lock().unwrap().len() < 4_000 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Everything acknowledged up to here must be in the backup.
    let before: Vec<_> = acked.lock().unwrap().clone();
    let resp = admin
        .create_backup(CreateBackupRequest { dir: "b1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.size_bytes > 0);
    // The answer is where it went on the server: under the root.
    let dir = std::path::PathBuf::from(&resp.dir);
    assert_eq!(dir, backups.path().canonicalize().unwrap().join("b1"));
    let during = acked.lock().unwrap().len();
    while acked.lock().unwrap().len() < during + 1_000 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    assert!(
        acked.lock().unwrap().len() > before.len() + 1_000,
        "publishes continued during and after the backup"
    );

    // The same path again, a missing parent: one answer, which does not say
    // which of the two it was. A path outside the root or the data dir:
    // INVALID_ARGUMENT.
    let again = |d: String| {
        let mut admin = server.admin();
        async move {
            admin
                .create_backup(CreateBackupRequest { dir: d })
                .await
                .unwrap_err()
        }
    };
    let exists = again("b1".into()).await;
    let missing_parent = again("no/such/b1".into()).await;
    assert_eq!(exists.code(), Code::FailedPrecondition);
    assert_eq!(missing_parent.code(), Code::FailedPrecondition);
    assert_eq!(
        exists.message(),
        missing_parent.message().replace("no/such/b1", "b1")
    );
    let inside_data = server.data_dir().join("data").join("b4");
    assert_eq!(
        again(inside_data.display().to_string()).await.code(),
        Code::InvalidArgument
    );
    assert_eq!(again("../b5".into()).await.code(), Code::InvalidArgument);

    // restore refuses a target inside the backup, and leaves nothing behind.
    let inside = std::process::Command::new(BIN)
        .args(["restore", "--from"])
        .arg(&dir)
        .arg("--data-dir")
        .arg(dir.join("nested"))
        .output()
        .unwrap();
    assert!(!inside.status.success());
    assert!(String::from_utf8_lossy(&inside.stderr).contains("inside the backup"));
    assert!(!dir.join("nested").exists());

    // Restore offline with the CLI into a new data dir, and serve it.
    let restored = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["restore", "--from"])
        .arg(&dir)
        .arg("--data-dir")
        .arg(restored.path().join("data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("topic load: 4 partitions"), "{stdout}");
    let original = read_all(&server, "load").await;
    let copy = TestServer::start_with(DataDir::Reuse(restored), |_| {}).await;
    let events = read_all(&copy, "load").await;

    // Dense offsets from 0 in every partition, each a prefix of the original.
    let mut restored_count = 0;
    for (p, evs) in &events {
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e.offset, i as u64, "partition {p} is dense");
            assert_eq!(
                e.payload, original[p][i].payload,
                "{p}:{i} matches the original"
            );
        }
        restored_count += evs.len();
    }
    // Every event acknowledged before the backup started is there.
    for (p, o, name) in &before {
        let got = events
            .get(p)
            .and_then(|evs| evs.get(*o as usize))
            .unwrap_or_else(|| panic!("acked event {name} at {p}:{o} missing from the backup"));
        assert_eq!(String::from_utf8_lossy(&got.payload), *name);
    }
    assert!(restored_count >= before.len());
    // The subscription came along, and the restored server takes new events.
    copy.admin()
        .get_subscription(GetSubscriptionRequest {
            topic: "load".into(),
            subscription: "audit".into(),
        })
        .await
        .unwrap();
    let r = publish(
        &mut copy.events(),
        "load",
        vec![event("", "load.test", "after")],
    )
    .await;
    assert_eq!(r[0].offset, events[&r[0].partition].len() as u64);
}

#[tokio::test]
async fn status_summarises_topics_subscriptions_and_disk() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(
        &mut events,
        "status-orders",
        (0..5)
            .map(|i| event("", "order.created", format!("o{i}")))
            .collect(),
    )
    .await;
    server
        .admin()
        .create_subscription(CreateSubscriptionRequest {
            topic: "status-orders".into(),
            subscription: "billing".into(),
            start_position: v1::StartPosition::Earliest as i32,
            max_delivery_attempts: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut stream = subscribe(&mut events, "status-orders", "billing", 10).await;
    let got = recv_n(&mut stream, 5).await;
    ack(&mut events, "status-orders", "billing", &got[..3]).await;
    events
        .nack(v1::NackRequest {
            topic: "status-orders".into(),
            subscription: "billing".into(),
            ack_ids: vec![got[3].ack_id.clone()],
            dead_letter: true,
            ..Default::default()
        })
        .await
        .unwrap();

    let status = server
        .admin()
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let t = status
        .topics
        .iter()
        .find(|t| t.topic.as_ref().unwrap().name == "status-orders")
        .expect("topic listed");
    assert_eq!(t.events, 5);
    let sub = &t.subscriptions[0];
    assert_eq!(sub.name, "billing");
    let st = sub.stats.unwrap();
    assert_eq!((st.backlog, st.in_flight, st.dead_letter_count), (1, 1, 1));
    assert!(st.oldest_unacked_age.is_some() && st.oldest_dead_letter_age.is_some());
    let storage = status.storage.unwrap();
    assert!(storage.data_dir.ends_with("data"));
    if eventbus_tests::on_jetstream() {
        // A gateway has no disk of its own: the cluster section stands in.
        assert!(storage.storage_bytes > 0, "{storage:?}");
        assert!(status.cluster.is_some());
    } else {
        assert!(
            storage.disk_total_bytes >= storage.disk_available_bytes
                && storage.disk_total_bytes > 0
        );
    }

    // The CLI prints the same summary. (tokio's Command: the in-process
    // server shares this test's thread and must keep running meanwhile.)
    let out = tokio::process::Command::new(BIN)
        .args(["--server", &format!("http://{}", server.addr), "status"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("status-orders"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("status-orders") && l.contains("billing")),
        "{text}"
    );
    assert!(text.contains("disk "), "{text}");
}

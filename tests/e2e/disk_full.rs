//! A full data disk: publishes get RESOURCE_EXHAUSTED (never OK for a write
//! that did not happen), consumers keep draining, health stays SERVING, and
//! publishing resumes by itself once space is freed.
//!
//! Test config (documented in RELIABILITY.md): the data dir sits on a 64 MiB
//! tmpfs next to a 24 MiB ballast file; the server runs with
//! `write-buffer-bytes = 4 MiB` (so every memtable flush, and RocksDB's own
//! recovery headroom, fits in what is left) and `disk-reserve-bytes = 16 MiB`
//! (or 0, to let writes hit ENOSPC inside RocksDB). Events are 60 KB, four
//! per call. Mounting needs root (CI runs as root); elsewhere set
//! `EVENTBUS_SKIP_TMPFS_TESTS=1` to skip these tests, loudly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eventbus_tests::v1::event_service_client::EventServiceClient;
use eventbus_tests::v1::{
    self, CreateSubscriptionRequest, CreateTopicRequest, GetStatusRequest, PublishRequest,
    ReplayRequest, StorageState,
};
use eventbus_tests::{http_get, ChildServer};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");
const EVENT_BYTES: usize = 60_000;

/// A tmpfs mounted on a fresh temp dir, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying so) when the caller asked to skip these tests.
    fn mount(size_mib: u32) -> Option<Tmpfs> {
        if std::env::var_os("EVENTBUS_SKIP_TMPFS_TESTS").is_some() {
            eprintln!("SKIPPED: disk-full test (EVENTBUS_SKIP_TMPFS_TESTS is set)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed (needs root); set EVENTBUS_SKIP_TMPFS_TESTS=1 to skip"
        );
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn ballast(dir: &Path, mib: usize) -> PathBuf {
    let path = dir.join("ballast");
    std::fs::write(&path, vec![0xA5u8; mib << 20]).expect("write ballast");
    path
}

/// One call of four events, payload `"<call>-<i>-"` then pseudo-random
/// bytes up to 60 KB, each with its own idempotency key (so a refused call
/// sent again must be stored, not taken for a duplicate). The bytes do not
/// compress: the WAL is bounded (four memtables), so it is the SST files
/// that fill the disk, and compressible payloads would never fill it.
fn batch(call: usize) -> Vec<v1::PublishEvent> {
    (0..4)
        .map(|i| {
            let mut payload = format!("{call}-{i}-").into_bytes();
            let seed = (call as u64) << 8 | i as u64;
            payload.extend(incompressible_bytes(EVENT_BYTES - payload.len(), seed));
            v1::PublishEvent {
                idempotency_key: format!("fill-{call}-{i}"),
                ..event("", "fill", payload)
            }
        })
        .collect()
}

/// Every partition's offsets run from 0 with no hole: a refused write gave
/// back the offsets it had taken.
fn assert_dense(stored: &BTreeMap<(u32, u64), Vec<u8>>) {
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for &(partition, offset) in stored.keys() {
        let expected = next.entry(partition).or_insert(0);
        assert_eq!(
            offset, *expected,
            "partition {partition}: a hole before offset {offset}"
        );
        *expected += 1;
    }
}

/// Publishes until the disk stays full (ten refusals in a row: a memtable
/// flush that drops a WAL file can free room for a few more); returns what was
/// acknowledged ((partition, offset) -> payload) and the last refusal. Every
/// refusal must be RESOURCE_EXHAUSTED.
async fn fill(
    events: &mut EventServiceClient<Channel>,
) -> (BTreeMap<(u32, u64), Vec<u8>>, tonic::Status, usize) {
    let mut acked = BTreeMap::new();
    let mut refused = 0;
    for call in 0..10_000 {
        let req = PublishRequest {
            topic: "t".into(),
            events: batch(call),
        };
        let b = req.events.clone();
        match events.publish(req).await {
            Ok(r) => {
                refused = 0;
                for (res, ev) in r.into_inner().results.iter().zip(b) {
                    acked.insert((res.partition, res.offset), ev.payload.to_vec());
                }
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
                if refused == 10 {
                    return (acked, status, call);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("the disk never filled up");
}

async fn serving(channel: Channel) -> ServingStatus {
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    ServingStatus::try_from(resp.status).expect("known status")
}

async fn storage_state(server: &ChildServer) -> (StorageState, String) {
    let mut admin = v1::admin_service_client::AdminServiceClient::new(server.channel().await);
    let st = admin
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .storage
        .expect("storage");
    (st.state(), st.state_reason)
}

/// Every event in the topic, by (partition, offset).
async fn replay_all(channel: Channel) -> BTreeMap<(u32, u64), Vec<u8>> {
    let mut events = EventServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut stream = events
        .replay(ReplayRequest {
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner();
    let mut out = BTreeMap::new();
    while let Some(msg) = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("replay ends")
        .expect("replay ok")
    {
        for e in msg.events {
            out.insert((e.partition, e.offset), e.payload.to_vec());
        }
    }
    out
}

/// Publishes one small event every 50 ms until one is accepted; returns how
/// long that took. Every refusal must be RESOURCE_EXHAUSTED.
async fn time_to_first_publish(events: &mut EventServiceClient<Channel>) -> Duration {
    let freed = Instant::now();
    loop {
        let req = PublishRequest {
            topic: "t".into(),
            events: vec![event("", "after", "back")],
        };
        match events.publish(req).await {
            Ok(_) => return freed.elapsed(),
            Err(s) => assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}"),
        }
        assert!(freed.elapsed() < PATIENCE, "publishing never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(tmpfs: &Tmpfs, reserve: &str) -> ChildServer {
    let server = ChildServer::start_with_env(
        BIN,
        &tmpfs.path().join("data"),
        &[],
        &[
            ("EVENTBUS_DISK_RESERVE_BYTES", reserve),
            ("EVENTBUS_WRITE_BUFFER_BYTES", "4194304"),
        ],
    )
    .await;
    let mut admin = v1::admin_service_client::AdminServiceClient::new(server.channel().await);
    admin
        .create_topic(CreateTopicRequest {
            topic: "t".into(),
            partitions: 2,
            retention: None,
        })
        .await
        .expect("create topic");
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ..Default::default()
        })
        .await
        .expect("create subscription");
    server
}

#[tokio::test]
async fn a_full_disk_refuses_publishes_keeps_serving_and_recovers_by_itself() {
    if eventbus_tests::skip_on_jetstream(
        "fills the data dir's own disk (statvfs reserve, ENOSPC in RocksDB); in cluster mode storage is the cluster's and its limits are the streams' max_bytes",
    ) {
        return;
    }
    let Some(tmpfs) = Tmpfs::mount(64) else {
        return;
    };
    let ballast = ballast(tmpfs.path(), 24);
    let server = start(&tmpfs, "16777216").await;
    let mut events = EventServiceClient::new(server.channel().await);

    let (acked, refusal, _) = fill(&mut events).await;
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    assert!(
        refusal.message().contains("disk-reserve-bytes"),
        "the message names the setting: {}",
        refusal.message()
    );
    // Degraded, not down: SERVING, ready (with the reason), status and metric.
    assert_eq!(
        serving(server.channel().await).await,
        ServingStatus::Serving
    );
    let (code, body) = http_get(server.metrics_addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("degraded") && body.contains("disk full"),
        "{body}"
    );
    let (state, reason) = storage_state(&server).await;
    assert_eq!(state, StorageState::DiskFull, "{reason}");
    let (_, metrics) = http_get(server.metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("eventbus_storage_state{state=\"disk_full\"} 1"),
        "{metrics}"
    );

    // Consumers keep draining while the disk is full.
    let mut stream = subscribe(&mut events, "t", "s", 8).await;
    let got = recv_n(&mut stream, 8).await;
    ack(&mut events, "t", "s", &got).await;
    drop(stream);

    // Free space: publishing resumes without a restart.
    std::fs::remove_file(&ballast).expect("remove ballast");
    let took = time_to_first_publish(&mut events).await;
    println!(
        "disk full (reserve 16 MiB): {} events acknowledged before the refusal; \
         publishing resumed {} ms after the ballast was removed",
        acked.len(),
        took.as_millis()
    );
    assert_eq!(storage_state(&server).await.0, StorageState::Ok);

    // Exactly the acknowledged events are stored, each where it was answered.
    let stored = replay_all(server.channel().await).await;
    let mut expected = acked;
    let extra: Vec<_> = stored
        .iter()
        .filter(|(k, _)| !expected.contains_key(k))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    assert_eq!(extra.len(), 1, "only the one publish after recovery is new");
    assert_eq!(extra[0].1, b"back");
    expected.extend(extra);
    assert_eq!(
        stored, expected,
        "an acknowledged event is missing or changed"
    );
    assert_dense(&stored);
}

#[tokio::test]
async fn enospc_inside_rocksdb_is_refused_not_fatal_and_recovers() {
    if eventbus_tests::skip_on_jetstream(
        "fills the data dir's own disk (statvfs reserve, ENOSPC in RocksDB); in cluster mode storage is the cluster's and its limits are the streams' max_bytes",
    ) {
        return;
    }
    let Some(tmpfs) = Tmpfs::mount(64) else {
        return;
    };
    let ballast = ballast(tmpfs.path(), 24);
    // No reserve: the WAL write itself fails with ENOSPC.
    let server = start(&tmpfs, "0").await;
    let mut events = EventServiceClient::new(server.channel().await);
    let (mut acked, refusal, refused_call) = fill(&mut events).await;
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    assert_eq!(
        serving(server.channel().await).await,
        ServingStatus::Serving
    );
    assert_eq!(storage_state(&server).await.0, StorageState::DiskFull);

    std::fs::remove_file(&ballast).expect("remove ballast");
    // RocksDB clears its own background error once there is room for a
    // memtable flush; it looks every 5 s.
    let took = time_to_first_publish(&mut events).await;
    println!(
        "disk full (no reserve, ENOSPC in RocksDB): {} events acknowledged; \
         publishing resumed {} ms after the ballast was removed",
        acked.len(),
        took.as_millis()
    );
    // The last refused call, sent again with the same idempotency keys:
    // its write failed inside RocksDB after it had taken offsets and keys,
    // so it must now be stored as new, at the next offsets.
    let again = events
        .publish(PublishRequest {
            topic: "t".into(),
            events: batch(refused_call),
        })
        .await
        .expect("the refused call, sent again")
        .into_inner();
    for (res, ev) in again.results.iter().zip(batch(refused_call)) {
        assert!(!res.duplicate, "a refused event is no duplicate: {res:?}");
        acked.insert((res.partition, res.offset), ev.payload.to_vec());
    }
    let stored = replay_all(server.channel().await).await;
    for (k, payload) in &acked {
        assert_eq!(stored.get(k), Some(payload), "acknowledged event {k:?}");
    }
    assert_eq!(stored.len(), acked.len() + 1);
    assert_dense(&stored);
}

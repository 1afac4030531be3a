//! The corruption matrix (issue 11): damage done to copies of a stopped data
//! dir, then the real server started on each copy. Allowed outcomes: every
//! acknowledged event served intact, the server refusing to start with a
//! message that says why, or DATA_LOSS for the damaged range. Never a log
//! that is silently shorter or different.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eventbus_tests::v1::admin_service_client::AdminServiceClient;
use eventbus_tests::v1::event_service_client::EventServiceClient;
use eventbus_tests::v1::{
    seek_subscription_request::Target, CreateSubscriptionRequest, CreateTopicRequest,
    PublishRequest, ReplayRequest, SeekSubscriptionRequest, StartPosition, SubscribeRequest,
};
use eventbus_tests::{http_get, temp_dir, ChildServer};
use tempfile::TempDir;
use tonic::Code;

use crate::support::{event, incompressible_bytes};

const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");
const PARTITIONS: u32 = 2;
const CALLS: usize = 40;
const EVENTS_PER_CALL: usize = 10;
/// Incompressible, so the WAL and the SST files hold real bytes to damage.
const PAYLOAD_BYTES: usize = 8 * 1024;

type Events = BTreeMap<(u32, u64), Vec<u8>>;

/// A stopped data dir and every event it acknowledged.
struct Golden {
    _dir: TempDir,
    data: PathBuf,
    events: Events,
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// `kill -9` right after the last publish: everything is in the WAL.
    Kill,
    /// Memtables small enough that records reach an SST file (one, so no
    /// compaction reads it again at the next start); then SIGTERM.
    FlushedThenTerm,
}

fn payload(i: usize) -> Vec<u8> {
    incompressible_bytes(PAYLOAD_BYTES, i as u64 + 1)
}

async fn golden(stop: Stop) -> Golden {
    let (dir, data) = temp_dir();
    let env: &[(&str, &str)] = match stop {
        Stop::Kill => &[],
        Stop::FlushedThenTerm => &[("EVENTBUS_WRITE_BUFFER_BYTES", "2097152")],
    };
    let server = ChildServer::start_with_env(BIN, &data, &[], env).await;
    let channel = server.channel().await;
    let mut admin = AdminServiceClient::new(channel.clone());
    admin
        .create_topic(CreateTopicRequest {
            topic: "t".into(),
            partitions: PARTITIONS,
            ..Default::default()
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
    let mut events = EventServiceClient::new(channel);
    let mut acked = Events::new();
    for call in 0..CALLS {
        let batch: Vec<_> = (0..EVENTS_PER_CALL)
            .map(|i| call * EVENTS_PER_CALL + i)
            .map(|n| event(&format!("k{n}"), "job", payload(n)))
            .collect();
        let sent: Vec<Vec<u8>> = batch.iter().map(|e| e.payload.to_vec()).collect();
        let results = events
            .publish(PublishRequest {
                topic: "t".into(),
                events: batch,
            })
            .await
            .expect("publish")
            .into_inner()
            .results;
        for (r, p) in results.into_iter().zip(sent) {
            acked.insert((r.partition, r.offset), p);
        }
    }
    match stop {
        Stop::Kill => {
            // The synced mark is written (page cache) every 100 ms.
            tokio::time::sleep(Duration::from_millis(500)).await;
            server.kill9().await;
        }
        Stop::FlushedThenTerm => {
            let flushed = tokio::time::timeout(Duration::from_secs(20), async {
                while files(&data, ".sst").iter().map(|f| len(f)).sum::<u64>() < 1 << 20 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            assert!(flushed.is_ok(), "records reached SST files");
            assert_eq!(server.terminate().await, Some(0));
        }
    }
    Golden {
        _dir: dir,
        data,
        events: acked,
    }
}

/// The files in `dir` whose name ends with `suffix`, largest first.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| p.to_string_lossy().ends_with(suffix));
    found.sort_by_key(|p| std::cmp::Reverse(len(p)));
    found
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// One kind of damage, applied to one file of a copy.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Inverts the byte at this fraction of the file.
    Flip(f64),
    /// Cuts the file at this fraction of its length.
    Truncate(f64),
    /// Cuts the last byte.
    DropLastByte,
    /// Appends bytes that are no valid record: a torn, unsynced append.
    AppendGarbage(usize),
}

fn damage(file: &Path, how: Damage) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = |f: f64| ((bytes.len() as f64 * f) as usize).min(bytes.len() - 1);
    match how {
        Damage::Flip(f) => {
            let i = at(f);
            bytes[i] ^= 0xff;
        }
        Damage::Truncate(f) => bytes.truncate(at(f)),
        Damage::DropLastByte => {
            bytes.pop();
        }
        Damage::AppendGarbage(n) => bytes.extend((0..n).map(|i| (i * 31 + 7) as u8)),
    }
    std::fs::write(file, bytes).unwrap();
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The server would not start; its message.
    Refused(String),
    /// Started and served every acknowledged event, byte for byte.
    ServedAll,
    /// Started, served what it could (all of it intact) and DATA_LOSS for the rest.
    DataLoss(String),
}

/// Starts the server on `data` and reads the whole topic back. Panics on
/// anything outside the allowed outcomes.
async fn outcome(data: &Path, acked: &Events) -> Outcome {
    let server = match ChildServer::try_start(BIN, data, &[], &[]).await {
        Ok(server) => server,
        Err(output) => return Outcome::Refused(output),
    };
    let mut events =
        EventServiceClient::new(server.channel().await).max_decoding_message_size(64 << 20);
    let mut stream = events
        .replay(ReplayRequest {
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .expect("replay starts")
        .into_inner();
    let mut read = Events::new();
    let ended = loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                for e in msg.events {
                    read.insert((e.partition, e.offset), e.payload.to_vec());
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    for (at, payload) in &read {
        assert_eq!(
            acked.get(at),
            Some(payload),
            "event {at:?} was served, but not as acknowledged"
        );
    }
    let result = match ended {
        Ok(()) => {
            let missing: Vec<_> = acked.keys().filter(|k| !read.contains_key(k)).collect();
            assert!(
                missing.is_empty(),
                "a silently shorter log: {} acknowledged events missing, first {:?}",
                missing.len(),
                missing.first()
            );
            Outcome::ServedAll
        }
        Err(status) => {
            assert_eq!(status.code(), Code::DataLoss, "{status:?}");
            Outcome::DataLoss(status.message().to_string())
        }
    };
    server.terminate().await;
    result
}

/// Runs `cases` of damage to the largest file ending in `suffix`, each on a
/// fresh copy of `golden`, and returns the outcomes (also printed).
async fn matrix(golden: &Golden, suffix: &str, cases: &[Damage]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for &how in cases {
        let scratch = tempfile::tempdir().unwrap();
        let copy = scratch.path().join("data");
        copy_dir(&golden.data, &copy);
        let target = files(&copy, suffix)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("a *{suffix} file in the data dir"));
        damage(&target, how);
        let result = outcome(&copy, &golden.events).await;
        let short = match &result {
            Outcome::Refused(msg) => format!("refused to start: {}", first_error_line(msg)),
            Outcome::ServedAll => "served all acknowledged events".to_string(),
            Outcome::DataLoss(msg) => format!("DATA_LOSS: {msg}"),
        };
        println!(
            "corruption: {suffix} {how:?} ({} bytes, {} events acknowledged): {short}",
            len(&golden.data.join(target.file_name().unwrap())),
            golden.events.len()
        );
        outcomes.push(result);
    }
    outcomes
}

/// The line of a refused start that says why.
fn first_error_line(output: &str) -> String {
    output
        .lines()
        .find(|l| l.contains("rror"))
        .unwrap_or(output)
        .chars()
        .take(400)
        .collect()
}

fn assert_refused_clearly(outcomes: &[Outcome]) {
    for o in outcomes {
        match o {
            Outcome::Refused(msg) => assert!(
                msg.contains("Refusing to start")
                    || msg.contains("Corruption")
                    || msg.contains("corrupt"),
                "the refusal says why: {msg}"
            ),
            other => panic!("expected a refusal to start, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_torn_wal_tail_recovers_every_acknowledged_event() {
    if eventbus_tests::skip_on_jetstream(
        "damages RocksDB's files (WAL, MANIFEST, SST blocks); in cluster mode storage is JetStream's, whose replicas are compared by cluster_faults::",
    ) {
        return;
    }
    let golden = golden(Stop::Kill).await;
    let outcomes = matrix(
        &golden,
        ".log",
        &[Damage::AppendGarbage(7), Damage::AppendGarbage(40_000)],
    )
    .await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::ServedAll),
        "{outcomes:?}"
    );
}

/// PointInTime recovery stops at the first damaged WAL record; the synced
/// mark (SYNCED_SEQ) shows that acknowledged writes were after it.
#[tokio::test]
async fn damage_inside_the_synced_wal_refuses_to_start() {
    if eventbus_tests::skip_on_jetstream(
        "damages RocksDB's files (WAL, MANIFEST, SST blocks); in cluster mode storage is JetStream's, whose replicas are compared by cluster_faults::",
    ) {
        return;
    }
    let golden = golden(Stop::Kill).await;
    let outcomes = matrix(
        &golden,
        ".log",
        &[
            Damage::Flip(0.25),
            Damage::Flip(0.5),
            Damage::Flip(0.75),
            Damage::Truncate(0.1),
            Damage::Truncate(0.5),
            Damage::Truncate(0.9),
            Damage::DropLastByte,
        ],
    )
    .await;
    assert_refused_clearly(&outcomes);
}

#[tokio::test]
async fn a_damaged_manifest_refuses_to_start() {
    if eventbus_tests::skip_on_jetstream(
        "damages RocksDB's files (WAL, MANIFEST, SST blocks); in cluster mode storage is JetStream's, whose replicas are compared by cluster_faults::",
    ) {
        return;
    }
    let golden = golden(Stop::FlushedThenTerm).await;
    let manifest = std::fs::read_dir(&golden.data)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.starts_with("MANIFEST-"))
        .expect("a MANIFEST file");
    // A flip inside an edit fails its checksum and refuses the start. One
    // that lands in the last edit may be taken for a torn tail, which
    // RocksDB drops; that is acceptable only when nothing acknowledged went
    // with it, which `outcome` checked (ServedAll). Which edit a position
    // falls in depends on the layout, so: no silent loss at any position,
    // and the damage is caught at most.
    let flips = [0.1, 0.3, 0.45, 0.6, 0.9].map(Damage::Flip);
    let flipped = matrix(&golden, &manifest, &flips).await;
    let refused: Vec<Outcome> = flipped
        .iter()
        .filter(|o| !matches!(o, Outcome::ServedAll))
        .cloned()
        .collect();
    assert_refused_clearly(&refused);
    assert!(
        refused.len() * 2 > flipped.len(),
        "most flips are caught: {flipped:?}"
    );
    // A MANIFEST cut at a record boundary may lose only edits the data dir
    // can do without; `outcome` has checked that nothing acknowledged is
    // missing when the server starts.
    let cut = matrix(&golden, &manifest, &[Damage::Truncate(0.5)]).await;
    assert!(
        matches!(cut[0], Outcome::Refused(_) | Outcome::ServedAll),
        "{cut:?}"
    );
}

/// A member stream of subscription `s` on topic `t`.
async fn join(
    events: &mut EventServiceClient<tonic::transport::Channel>,
    max_in_flight: u32,
) -> tonic::Streaming<eventbus_tests::v1::SubscribeResponse> {
    events
        .subscribe(SubscribeRequest {
            topic: "t".into(),
            subscription: "s".into(),
            max_in_flight,
        })
        .await
        .expect("subscribe")
        .into_inner()
}

/// A flipped byte inside an SST data block: the server starts (RocksDB reads
/// data blocks lazily), then every read of the damaged range is DATA_LOSS:
/// Replay, and Subscribe, whose members' streams end with it instead of
/// waiting forever. Seeking the subscription past the damage resumes it.
/// (Had a compaction read the block first, RocksDB would have stopped all
/// writes, and the write path with them: health NOT_SERVING.)
#[tokio::test]
async fn a_damaged_sst_block_is_data_loss_on_every_read_path() {
    if eventbus_tests::skip_on_jetstream(
        "damages RocksDB's files (WAL, MANIFEST, SST blocks); in cluster mode storage is JetStream's, whose replicas are compared by cluster_faults::",
    ) {
        return;
    }
    let golden = golden(Stop::FlushedThenTerm).await;
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("data");
    copy_dir(&golden.data, &copy);
    let sst = files(&copy, ".sst")
        .into_iter()
        .next()
        .expect("an SST file");
    damage(&sst, Damage::Flip(0.3));
    let outcome = outcome(&copy, &golden.events).await;
    println!("corruption: .sst Flip(0.3): {outcome:?}");
    let Outcome::DataLoss(message) = outcome else {
        panic!("expected DATA_LOSS from Replay, got {outcome:?}");
    };
    assert!(message.contains("damaged"), "{message}");

    let server = ChildServer::start(BIN, &copy, &[]).await;
    let channel = server.channel().await;
    let mut events = EventServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let mut stream = join(&mut events, 10_000).await;
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the subscription ends with a status instead of waiting forever");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(status.message().contains("seek it past"), "{status:?}");
    // A new member learns the same at once.
    let mut again = join(&mut events, 10).await;
    let err = again.message().await.expect_err("DATA_LOSS again");
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    // Counted for the DataLoss alert.
    let (_, metrics) = http_get(server.metrics_addr, "/metrics").await;
    let counted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("eventbus_data_loss_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("eventbus_data_loss_total in /metrics");
    assert!(counted >= 2.0, "both streams' DATA_LOSS counted: {counted}");

    // The operator's way out: seek past the damage (here: to the end).
    AdminServiceClient::new(channel)
        .seek_subscription(SeekSubscriptionRequest {
            topic: "t".into(),
            subscription: "s".into(),
            target: Some(Target::StartPosition(StartPosition::Latest as i32)),
        })
        .await
        .expect("seek");
    let mut resumed = join(&mut events, 10).await;
    events
        .publish(PublishRequest {
            topic: "t".into(),
            events: vec![event("", "job", "after the damage")],
        })
        .await
        .expect("publish");
    let msg = tokio::time::timeout(Duration::from_secs(10), resumed.message())
        .await
        .expect("delivery after the seek")
        .expect("no error after the seek")
        .expect("a message");
    let delivered = &msg.deliveries[0];
    assert_eq!(
        delivered.event.as_ref().unwrap().payload.as_ref(),
        b"after the damage"
    );
    server.terminate().await;
}

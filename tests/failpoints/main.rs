//! Storage faults injected with failpoints (the `fail` crate; compiled in only
//! with the `failpoints` feature) into a real server driven over real gRPC:
//!
//! * a failed WAL sync, a failed write, a panicking writer or syncer thread:
//!   fail-stop. The failing group and every later write get an error, never
//!   OK; gRPC health turns NOT_SERVING for every service; `/readyz` fails
//!   with the reason; a metric and an error log line say why; nothing comes
//!   back after the fault is gone, only a restart helps; every publish that
//!   was acknowledged before is still there after it.
//! * out of space on a write: RESOURCE_EXHAUSTED, not fatal, gone with the
//!   fault.
//!
//! Failpoints are process-wide, so every test holds a `FailScenario`, which
//! serialises them.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use eventbus_tests::v1::event_service_client::EventServiceClient;
use eventbus_tests::v1::{self, GetStatusRequest, PublishEvent, PublishRequest, ReplayRequest};
use eventbus_tests::{http_get, DataDir, TestServer};
use fail::FailScenario;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Every log line of the process, for the "a log line says why" checks.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_writer(move || LogWriter(writer.clone()))
            .with_ansi(false)
            .init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(needle: &str) -> bool {
    String::from_utf8_lossy(&logs().lock().unwrap()).contains(needle)
}

fn event(i: usize) -> PublishEvent {
    PublishEvent {
        r#type: "t".into(),
        payload: format!("event-{i}").into_bytes().into(),
        ..Default::default()
    }
}

async fn publish(
    events: &mut EventServiceClient<Channel>,
    i: usize,
) -> Result<v1::PublishResult, tonic::Status> {
    let req = PublishRequest {
        topic: "t".into(),
        events: vec![event(i)],
    };
    events
        .publish(req)
        .await
        .map(|r| r.into_inner().results.remove(0))
}

/// Events of topic `t` by (partition, offset).
async fn stored(server: &TestServer) -> BTreeMap<(u32, u64), Vec<u8>> {
    let mut stream = server
        .events()
        .replay(ReplayRequest {
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner();
    let mut out = BTreeMap::new();
    while let Some(msg) = stream.message().await.expect("replay ok") {
        for e in msg.events {
            out.insert((e.partition, e.offset), e.payload.to_vec());
        }
    }
    out
}

async fn health(server: &TestServer, service: &str) -> ServingStatus {
    let resp = HealthClient::new(server.channel())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health")
        .into_inner();
    ServingStatus::try_from(resp.status).expect("known status")
}

/// A publisher's event number and the answer it got.
type Answer = (usize, Result<v1::PublishResult, tonic::Status>);

/// Publishers running while the fault hits: every answer is recorded.
struct Load {
    tasks: Vec<tokio::task::JoinHandle<Vec<Answer>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Load {
    fn start(server: &TestServer, publishers: usize) -> Load {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = (0..publishers)
            .map(|p| {
                let mut events = server.events();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    let mut i = p * 1_000_000;
                    while !*stopped.borrow() {
                        answers.push((i, publish(&mut events, i).await));
                        i += 1;
                    }
                    answers
                })
            })
            .collect();
        Load { tasks, stop }
    }

    async fn finish(self) -> Vec<Answer> {
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.expect("publisher"));
        }
        all
    }
}

/// The common scenario of every fail-stop fault: load, the fault, checks.
async fn fail_stop(failpoint: &str, action: &str, log_needle: &str) {
    logs();
    let scenario = FailScenario::setup();
    let server = TestServer::start().await;
    let mut events = server.events();
    for i in 0..20 {
        publish(&mut events, i).await.expect("healthy publish");
    }
    let load = Load::start(&server, 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    fail::cfg(failpoint, action).unwrap();
    // Wait for the first failure a client sees.
    let failed = loop {
        match publish(&mut events, 999_999).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(s) => break s,
        }
    };
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    let answers = load.finish().await;
    // From now on nothing is acknowledged, also once the fault is gone.
    fail::remove(failpoint);
    for i in 0..10 {
        let s = publish(&mut events, 2_000_000 + i)
            .await
            .expect_err("no OK after the write path stopped");
        assert_eq!(s.code(), Code::Unavailable, "{s:?}");
        assert!(
            s.message().contains("restart"),
            "the message says what to do: {}",
            s.message()
        );
    }

    // Health says so, everywhere.
    for service in ["", "eventbus.v1.EventService", "eventbus.v1.AdminService"] {
        assert_eq!(
            health(&server, service).await,
            ServingStatus::NotServing,
            "health of {service:?}"
        );
    }
    let (code, body) = http_get(server.metrics_addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("write path stopped"), "{body}");
    let (_, metrics) = http_get(server.metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("eventbus_storage_state{state=\"failed\"} 1"),
        "{metrics}"
    );
    let status = server
        .admin()
        .get_status(GetStatusRequest {})
        .await
        .expect("status still answers")
        .into_inner()
        .storage
        .expect("storage");
    assert_eq!(status.state(), v1::StorageState::Failed);
    assert!(
        status.state_reason.contains(log_needle),
        "{}",
        status.state_reason
    );
    assert!(logged(log_needle), "no log line {log_needle:?}");
    assert!(logged("the write path is stopped until restart"));

    // A restart brings it back, with every acknowledged publish.
    let acked: BTreeMap<(u32, u64), Vec<u8>> = answers
        .iter()
        .filter_map(|(i, r)| r.as_ref().ok().map(|r| ((r.partition, r.offset), *i)))
        .map(|(k, i)| (k, format!("event-{i}").into_bytes()))
        .collect();
    let errors = answers.iter().filter(|(_, r)| r.is_err()).count();
    println!(
        "{failpoint}={action}: {} publishes acknowledged under load, {errors} refused",
        acked.len()
    );
    let dir = server.stop().await;
    let server = TestServer::start_with(DataDir::Reuse(dir), |_| {}).await;
    let all = stored(&server).await;
    for (k, payload) in &acked {
        assert_eq!(all.get(k), Some(payload), "acknowledged publish {k:?} lost");
    }
    publish(&mut server.events(), 3_000_000)
        .await
        .expect("publishes work again after the restart");
    assert_eq!(health(&server, "").await, ServingStatus::Serving);
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_sync_stops_the_write_path() {
    fail_stop("syncer::sync", "return", "WAL sync failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_stops_the_write_path() {
    fail_stop("writer::write", "return", "RocksDB write failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_writer_thread_stops_the_write_path() {
    fail_stop("writer::panic", "panic", "the writer thread panicked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_syncer_thread_stops_the_write_path() {
    fail_stop("syncer::sync", "panic", "the syncer thread panicked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_space_on_a_write_is_refused_but_not_fatal() {
    logs();
    let scenario = FailScenario::setup();
    let server = TestServer::start().await;
    let mut events = server.events();
    let before = publish(&mut events, 0).await.expect("healthy publish");
    fail::cfg("writer::write", "return(enospc)").unwrap();
    let s = publish(&mut events, 1).await.expect_err("disk full");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert_eq!(health(&server, "").await, ServingStatus::Serving);
    let (code, body) = http_get(server.metrics_addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("disk full"), "{body}");
    fail::remove("writer::write");
    let after = publish(&mut events, 2).await.expect("resumes with space");
    let all = stored(&server).await;
    assert_eq!(
        all.get(&(before.partition, before.offset)),
        Some(&b"event-0".to_vec())
    );
    assert_eq!(
        all.get(&(after.partition, after.offset)),
        Some(&b"event-2".to_vec())
    );
    assert_eq!(all.len(), 2, "the refused publish wrote nothing");
    drop(server);
    scenario.teardown();
}

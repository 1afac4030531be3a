//! `/metrics`, `/healthz` and `/readyz` on the HTTP side port.

use std::collections::HashMap;
use std::time::Duration;

use eventbus_tests::v1::admin_service_client::AdminServiceClient;
use eventbus_tests::v1::event_service_client::EventServiceClient;
use eventbus_tests::v1::{self, CreateSubscriptionRequest, CreateTopicRequest};
use eventbus_tests::{http_get, temp_dir, ChildServer, TestServer};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");

/// Prometheus text -> {"name{labels}": value}, labels as the exporter prints them.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no series {series} in the scrape"))
}

/// A child process, so no other test shares its metrics registry and every
/// counter must match the workload exactly.
#[tokio::test]
async fn metrics_match_a_known_workload_exactly() {
    let (_dir, data) = temp_dir();
    let server = ChildServer::start(BIN, &data, &[]).await;
    let channel = server.channel().await;
    let mut events = EventServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel.clone());

    admin
        .create_topic(CreateTopicRequest {
            topic: "orders".into(),
            partitions: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let again = admin
        .create_topic(CreateTopicRequest {
            topic: "orders".into(),
            partitions: 2,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "orders".into(),
            subscription: "billing".into(),
            max_delivery_attempts: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();

    // 3 Publish calls: 10 events of 7 bytes, one duplicate of an idempotency key.
    let mut published = 0;
    for call in 0..3 {
        let batch: Vec<_> = (0..4)
            .filter(|i| call * 4 + i < 10)
            .map(|i| {
                event(
                    "",
                    "order.created",
                    format!("order-{}", call * 4 + i)[..7].to_string(),
                )
            })
            .collect();
        published += publish(&mut events, "orders", batch).await.len();
    }
    assert_eq!(published, 10);
    let mut dup = event("", "order.created", "dupdup!");
    dup.idempotency_key = "k1".into();
    publish(&mut events, "orders", vec![dup.clone()]).await;
    let again = publish(&mut events, "orders", vec![dup]).await;
    assert!(again[0].duplicate);

    // 11 stored events: ack 10 at once, nack the last one twice -> dead letter.
    let mut stream = subscribe(&mut events, "orders", "billing", 100).await;
    let first = recv_n(&mut stream, 11).await;
    let poison = first
        .iter()
        .find(|d| payload(d) == "dupdup!")
        .expect("the idempotent event")
        .clone();
    let rest: Vec<_> = first
        .iter()
        .filter(|d| d.ack_id != poison.ack_id)
        .cloned()
        .collect();
    ack(&mut events, "orders", "billing", &rest).await;
    let nack = |d: &v1::Delivery| v1::NackRequest {
        topic: "orders".into(),
        subscription: "billing".into(),
        ack_ids: vec![d.ack_id.clone()],
        reason: "boom".into(),
        ..Default::default()
    };
    events.nack(nack(&poison)).await.unwrap();
    let second = recv_n(&mut stream, 1).await;
    assert_eq!(second[0].delivery_attempt, 2);
    events.nack(nack(&second[0])).await.unwrap();
    // A client error for the error counter.
    let bad = events
        .publish(v1::PublishRequest {
            topic: "Not A Topic!".into(),
            events: vec![event("", "t", "x")],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let (status, body) = http_get(server.metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    let m = parse(&body);
    let sub = r#"{topic="orders",subscription="billing"}"#;
    assert_eq!(
        get(&m, r#"eventbus_published_events_total{topic="orders"}"#),
        11.0
    );
    assert_eq!(
        get(&m, r#"eventbus_published_bytes_total{topic="orders"}"#),
        77.0
    );
    assert_eq!(get(&m, &format!("eventbus_delivered_total{sub}")), 12.0);
    assert_eq!(get(&m, &format!("eventbus_acked_total{sub}")), 10.0);
    assert_eq!(get(&m, &format!("eventbus_nacked_total{sub}")), 2.0);
    assert_eq!(get(&m, &format!("eventbus_redelivered_total{sub}")), 1.0);
    assert_eq!(get(&m, &format!("eventbus_dead_lettered_total{sub}")), 1.0);
    assert_eq!(get(&m, &format!("eventbus_filtered_total{sub}")), 0.0);
    assert_eq!(get(&m, &format!("eventbus_subscription_backlog{sub}")), 0.0);
    assert_eq!(
        get(&m, &format!("eventbus_subscription_in_flight{sub}")),
        0.0
    );
    assert_eq!(get(&m, &format!("eventbus_dlq_size{sub}")), 1.0);
    assert!(get(&m, &format!("eventbus_dlq_oldest_age_seconds{sub}")) >= 0.0);
    assert_eq!(get(&m, &format!("eventbus_subscription_paused{sub}")), 0.0);
    assert_eq!(get(&m, "eventbus_subscribe_streams"), 1.0);
    assert_eq!(
        get(&m, r#"eventbus_rpc_requests_total{method="Publish"}"#),
        6.0
    );
    assert_eq!(
        get(&m, r#"eventbus_rpc_requests_total{method="Nack"}"#),
        2.0
    );
    assert_eq!(
        get(
            &m,
            r#"eventbus_rpc_errors_total{method="CreateTopic",code="ALREADY_EXISTS"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            r#"eventbus_rpc_errors_total{method="Publish",code="INVALID_ARGUMENT"}"#
        ),
        1.0
    );
    if !eventbus_tests::on_jetstream() {
        // 11 events reached storage in 4 group commits (one per storing
        // call). A gateway has neither group commits nor a disk of its own.
        assert_eq!(get(&m, "eventbus_commit_batch_events_sum"), 11.0);
        // In fsync mode every one of them waited for a WAL sync.
        assert_eq!(get(&m, "eventbus_wal_sync_events_sum"), 11.0);
        assert!(get(&m, "eventbus_wal_sync_seconds_count") >= 1.0);
        assert!(get(&m, "eventbus_disk_total_bytes") >= get(&m, "eventbus_disk_available_bytes"));
        // The events were published before anyone subscribed: nothing was
        // kept hot for them, and RocksDB served the reads.
        assert!(reads(&m, "rocksdb") >= 1.0, "{body}");
        assert_eq!(reads(&m, "hot_tail"), 0.0);
    }
    assert_eq!(get(&m, "eventbus_delivery_latency_seconds_count"), 11.0);
    assert_eq!(get(&m, "eventbus_publish_duration_seconds_count"), 5.0);
    assert_eq!(get(&m, "eventbus_ready"), 1.0);
    assert!(get(&m, "eventbus_storage_size_bytes") > 0.0);
    assert!(body.contains("# TYPE eventbus_published_events_total counter"));
    assert!(body.contains("# HELP eventbus_subscription_backlog "));

    drop(stream);
    assert_eq!(server.terminate().await, Some(0));
}

/// Log reads started by subscriptions, by where they were served from.
fn reads(m: &HashMap<String, f64>, from: &str) -> f64 {
    let series = format!(r#"eventbus_subscription_reads_total{{from="{from}"}}"#);
    m.get(&series).copied().unwrap_or(0.0)
}

/// A subscriber that keeps up is fed from the hot tail: no read of what it
/// gets goes to RocksDB. A child process, for a registry of its own.
#[tokio::test]
async fn a_subscriber_that_keeps_up_is_fed_from_the_hot_tail() {
    if eventbus_tests::skip_on_jetstream("the hot tail is the RocksDB backend's") {
        return;
    }
    let (_dir, data) = temp_dir();
    let server = ChildServer::start(BIN, &data, &[]).await;
    let channel = server.channel().await;
    let mut events = EventServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel);
    admin
        .create_topic(CreateTopicRequest {
            topic: "live".into(),
            partitions: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "live".into(),
            subscription: "follower".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut stream = subscribe(&mut events, "live", "follower", 100).await;
    for round in 0..5 {
        let batch = (0..8)
            .map(|i| event(&format!("k{i}"), "tick", format!("r{round}-{i}")))
            .collect();
        publish(&mut events, "live", batch).await;
        let got = recv_n(&mut stream, 8).await;
        let mut payloads: Vec<_> = got.iter().map(payload).collect();
        payloads.sort();
        let mut want: Vec<_> = (0..8).map(|i| format!("r{round}-{i}")).collect();
        want.sort();
        assert_eq!(payloads, want);
        ack(&mut events, "live", "follower", &got).await;
    }
    let (_, body) = http_get(server.metrics_addr, "/metrics").await;
    let m = parse(&body);
    assert!(reads(&m, "hot_tail") >= 5.0, "{body}");
    assert_eq!(reads(&m, "rocksdb"), 0.0, "{body}");
    drop(stream);
    assert_eq!(server.terminate().await, Some(0));
}

/// Liveness and readiness at startup, and readiness failing first at
/// shutdown while the server still answers.
#[tokio::test]
async fn readiness_passes_once_open_and_fails_first_at_shutdown() {
    let mut server = TestServer::start_with(eventbus_tests::DataDir::Fresh, |c| {
        c.shutdown_delay = Duration::from_secs(2);
    })
    .await;
    assert_eq!(http_get(server.metrics_addr, "/healthz").await.0, 200);
    let (status, body) = http_get(server.metrics_addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    server.begin_shutdown();
    let mut not_ready = None;
    for _ in 0..200 {
        let (status, body) = http_get(server.metrics_addr, "/readyz").await;
        if status == 503 {
            not_ready = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(not_ready.as_deref(), Some("not ready: shutting down\n"));
    // Still live, and gRPC health agrees, while the shutdown delay runs.
    assert_eq!(http_get(server.metrics_addr, "/healthz").await.0, 200);
    let health = HealthClient::new(server.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::NotServing as i32);
    server.stop().await;
}

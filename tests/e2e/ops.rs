//! Health, reflection, listing and shutdown behaviour.

use eventbus_tests::v1::{self, CreateTopicRequest};
use eventbus_tests::TestServer;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1 as refl;
use tonic_reflection::pb::v1alpha as refl_alpha;

use crate::support::*;

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel());
    for service in ["", "eventbus.v1.EventService", "eventbus.v1.AdminService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_ends_streams_with_unavailable() {
    let mut server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let mut events = server.events();
    let mut stream = subscribe(&mut events, "t", "s", 10).await;

    server.begin_shutdown();
    let next = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("health update");
    let update = next
        .expect("watch ok")
        .expect("an update before the stream ends");
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    // An open Watch would hold graceful shutdown until the grace period ends.
    drop(watch);
    let end = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("stream ends");
    let err = end.expect_err("the stream ends with a status");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_both_services() {
    let server = TestServer::start().await;
    let want = [
        "eventbus.v1.EventService",
        "eventbus.v1.AdminService",
        "grpc.health.v1.Health",
    ];

    let mut client = refl::server_reflection_client::ServerReflectionClient::new(server.channel());
    let req = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            refl::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut resp = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(refl::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        msg.message_response
    else {
        panic!("unexpected reflection response {msg:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for w in want {
        assert!(names.iter().any(|n| n == w), "v1 lists {w}: {names:?}");
    }

    let mut client =
        refl_alpha::server_reflection_client::ServerReflectionClient::new(server.channel());
    let req = refl_alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            refl_alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut resp = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(refl_alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        msg.message_response
    else {
        panic!("unexpected reflection response {msg:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for w in want {
        assert!(names.iter().any(|n| n == w), "v1alpha lists {w}: {names:?}");
    }
}

#[tokio::test]
async fn list_topics_pages_through_all_topics() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    for i in 0..7 {
        admin
            .create_topic(CreateTopicRequest {
                topic: format!("topic-{i}"),
                partitions: 1,
                retention: None,
            })
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_topics(v1::ListTopicsRequest {
                page_size: 3,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.topics.len() <= 3);
        names.extend(page.topics.into_iter().map(|t| t.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        names,
        (0..7).map(|i| format!("topic-{i}")).collect::<Vec<_>>()
    );
}

/// GetStatus and the metrics name the backend that serves; only cluster
/// mode has a cluster section and cluster gauges (on the one-node NATS
/// server of `E2E_BACKEND=jetstream`, every stream led by it).
///
/// The server runs as its own process: the metrics registry is
/// process-wide, and the in-process servers of other tests (cluster-mode
/// gateways among them) would otherwise set the same gauges.
#[tokio::test]
async fn status_and_metrics_name_the_backend_and_only_cluster_mode_has_a_cluster() {
    let (_dir, data) = eventbus_tests::temp_dir();
    let nats = if eventbus_tests::on_jetstream() {
        Some(
            tokio::task::spawn_blocking(|| eventbus_tests::nats::NatsCluster::start(1))
                .await
                .expect("start nats"),
        )
    } else {
        None
    };
    let (urls, monitor) = nats
        .as_ref()
        .map(|c| (c.urls(), c.monitor_urls()))
        .unwrap_or_default();
    let (args, env): (Vec<&str>, Vec<(&str, &str)>) = match &nats {
        Some(_) => (
            vec!["--storage", "jetstream", "--nats-url", urls.as_str()],
            vec![
                ("EVENTBUS_NATS_MONITOR_URL", monitor.as_str()),
                ("EVENTBUS_NATS_REPLICAS", "1"),
            ],
        ),
        None => (vec![], vec![]),
    };
    let server = eventbus_tests::ChildServer::start_with_env(
        env!("CARGO_BIN_EXE_eventbus-under-test"),
        &data,
        &args,
        &env,
    )
    .await;
    let channel = server.channel().await;
    let admin = || v1::admin_service_client::AdminServiceClient::new(channel.clone());
    admin()
        .create_topic(CreateTopicRequest {
            topic: "which".into(),
            partitions: 1,
            retention: None,
        })
        .await
        .expect("create topic");
    let status = admin()
        .get_status(v1::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let (_, metrics) = eventbus_tests::http_get(server.metrics_addr, "/metrics").await;
    let has = |series: &str| metrics.lines().any(|l| l == series);
    if eventbus_tests::on_jetstream() {
        assert_eq!(status.backend, "jetstream");
        let cluster = status.cluster.expect("a cluster section");
        assert!(cluster.stream_count >= 1, "{cluster:?}");
        assert_eq!(cluster.streams_without_leader, 0, "{cluster:?}");
        assert!(
            cluster
                .streams
                .iter()
                .any(|s| s.name.starts_with("EB_T") && !s.leader.is_empty()),
            "{cluster:?}"
        );
        assert!(
            has("eventbus_backend{backend=\"jetstream\"} 1"),
            "{metrics}"
        );
        assert!(
            has("eventbus_cluster_streams_without_leader 0"),
            "{metrics}"
        );
    } else {
        assert_eq!(status.backend, "rocksdb");
        assert_eq!(status.cluster, None);
        assert!(has("eventbus_backend{backend=\"rocksdb\"} 1"), "{metrics}");
        assert!(
            has("eventbus_backend{backend=\"jetstream\"} 0"),
            "{metrics}"
        );
        assert!(
            !metrics.contains("eventbus_cluster_"),
            "no cluster gauges on one node:\n{metrics}"
        );
    }
}

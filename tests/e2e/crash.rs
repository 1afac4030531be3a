//! `kill -9`: the server binary as a child process, killed without warning.

use std::collections::{HashMap, HashSet};

use eventbus_tests::v1::admin_service_client::AdminServiceClient;
use eventbus_tests::v1::event_service_client::EventServiceClient;
use eventbus_tests::v1::{GetTopicRequest, ReplayRequest};
use eventbus_tests::{temp_dir, ChildServer};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");

#[tokio::test]
async fn every_acknowledged_publish_survives_kill_9() {
    let (_dir, data) = temp_dir();
    let server = ChildServer::start(BIN, &data, &[]).await;
    let channel = server.channel().await;

    // Eight concurrent publishers keep writing; we kill the server mid-stream.
    let mut tasks = Vec::new();
    for p in 0..8 {
        let mut client = EventServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000 {
                let req = vec![event(&format!("p{p}"), "crash.test", format!("{p}:{i}"))];
                match client
                    .publish(eventbus_tests::v1::PublishRequest {
                        topic: "durable".into(),
                        events: req,
                    })
                    .await
                {
                    Ok(r) => acked.push((format!("{p}:{i}"), r.into_inner().results[0].clone())),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    // Let some publishes land, then pull the plug.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    server.kill9().await;
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() > 50,
        "the workload ran ({} acked publishes)",
        acked.len()
    );

    let server = ChildServer::start(BIN, &data, &[]).await;
    let channel = server.channel().await;
    let topic = AdminServiceClient::new(channel.clone())
        .get_topic(GetTopicRequest {
            topic: "durable".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    let ends: HashMap<u32, u64> = topic
        .partition_info
        .iter()
        .map(|p| (p.partition, p.end_offset))
        .collect();
    for (payload, r) in &acked {
        assert!(
            r.offset < ends[&r.partition],
            "acked publish {payload} at {}:{} lost",
            r.partition,
            r.offset
        );
    }
    // And the records themselves read back intact: read everything via a fresh subscription.
    let total: u64 = ends.values().sum();
    let mut client = EventServiceClient::new(channel);
    let mut stream = subscribe(&mut client, "durable", "verify", 10_000).await;
    let got = recv_n(&mut stream, total as usize).await;
    let payloads: HashSet<String> = got.iter().map(payload).collect();
    for (p, _) in &acked {
        assert!(
            payloads.contains(p),
            "acked publish {p} readable after the crash"
        );
    }
    let _ = ReplayRequest::default();
    assert_eq!(server.terminate().await, Some(0), "SIGTERM exits 0");
}

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

/// Kill -9 in the middle of a paced redrive of 10,000 dead letters, restart,
/// redrive the rest: every entry comes back to the subscription exactly once.
#[tokio::test]
async fn a_redrive_interrupted_by_kill_9_finishes_exactly_once() {
    use eventbus_tests::v1::{self, NackRequest, RedriveDeadLettersRequest};
    const N: usize = 10_000;
    let (_dir, data) = temp_dir();
    let server = ChildServer::start(BIN, &data, &["--durability", "buffered"]).await;
    let channel = server.channel().await;
    let mut events = EventServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel.clone());
    for chunk in 0..(N / 1000) {
        let batch = (0..1000)
            .map(|i| event("", "job", format!("{}", chunk * 1000 + i)))
            .collect();
        publish(&mut events, "t", batch).await;
    }
    // Dead-letter everything.
    let mut stream = subscribe(&mut events, "t", "s", 2000).await;
    let mut dead = 0;
    while dead < N {
        let batch = stream.message().await.unwrap().unwrap().deliveries;
        dead += batch.len();
        // At most 1000 ack ids per call (max-ack-ids-per-call).
        for chunk in batch.chunks(1000) {
            events
                .nack(NackRequest {
                    topic: "t".into(),
                    subscription: "s".into(),
                    ack_ids: chunk.iter().map(|d| d.ack_id.clone()).collect(),
                    dead_letter: true,
                    reason: "bug".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    drop(stream);
    let all = || RedriveDeadLettersRequest {
        topic: "t".into(),
        subscription: "s".into(),
        all: true,
        ..Default::default()
    };
    // Paced at 4000/s, the redrive takes ~2.5 s; kill the server in the middle.
    let mut watch = admin.clone();
    let redrive = tokio::spawn(async move {
        admin
            .redrive_dead_letters(RedriveDeadLettersRequest {
                max_per_second: 4000,
                ..all()
            })
            .await
    });
    // Killed once the redrive is under way: some entries moved, most not.
    let started = tokio::time::Instant::now();
    loop {
        let left = watch
            .get_subscription(v1::GetSubscriptionRequest {
                topic: "t".into(),
                subscription: "s".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .subscription
            .and_then(|s| s.stats)
            .map_or(N as u64, |s| s.dead_letter_count);
        if left < N as u64 - 1000 {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the redrive never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.kill9().await;
    assert!(redrive.await.unwrap().is_err(), "the redrive was cut off");

    let server = ChildServer::start(BIN, &data, &["--durability", "buffered"]).await;
    let channel = server.channel().await;
    let mut admin = AdminServiceClient::new(channel.clone());
    let rest = admin
        .redrive_dead_letters(all())
        .await
        .unwrap()
        .into_inner()
        .count as usize;
    assert!(
        rest > 0 && rest < N,
        "the crash landed mid-redrive ({rest} left)"
    );
    let mut events = EventServiceClient::new(channel);
    let mut stream = subscribe(&mut events, "t", "s", 5000).await;
    let mut seen = HashSet::new();
    while seen.len() < N {
        let batch = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("all come back")
            .unwrap()
            .unwrap()
            .deliveries;
        for d in &batch {
            assert!(seen.insert(payload(d)), "{} came back twice", payload(d));
        }
        ack(&mut events, "t", "s", &batch).await;
    }
    expect_silence(&mut stream, std::time::Duration::from_millis(500)).await;
    let dlq = admin
        .list_dead_letters(v1::ListDeadLettersRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dlq.dead_letters.is_empty());
}

/// The SDK through a kill -9 and a restart (behind a proxy, so the address
/// stays): calls in flight when the server dies fail with whatever the
/// transport makes of the lost connection (tonic reports a request that hyper
/// cancelled as CANCELLED), and the SDK must retry them, not give up. Every
/// publish ends OK, and the subscription keeps delivering after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_publisher_and_subscription_ride_out_a_kill_9() {
    use eventbus::{Client, Event, SubscriptionSettings};
    use eventbus_tests::CuttableProxy;
    use tokio_stream::StreamExt;

    let (_dir, data) = temp_dir();
    let server = ChildServer::start(BIN, &data, &[]).await;
    let proxy = CuttableProxy::start(server.addr).await;
    let client = Client::builder(proxy.url()).connect_lazy().unwrap();
    client.admin().create_topic("t", 4).await.unwrap();
    client
        .admin()
        .create_subscription(
            "t",
            "s",
            SubscriptionSettings {
                from_earliest: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let publisher = client.publisher("t");
    let mut subscription = client.subscribe("t", "s");
    // Many publishes in flight at the kill, from several tasks.
    let mut tasks = Vec::new();
    for p in 0..4 {
        let publisher = publisher.clone();
        tasks.push(tokio::spawn(async move {
            let mut handles = Vec::new();
            for i in 0..400 {
                handles.push(publisher.send(Event::new("e", format!("{p}:{i}"))).await);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            let mut failed = Vec::new();
            for h in handles {
                if let Err(e) = async { h?.await }.await {
                    failed.push(e.to_string());
                }
            }
            failed
        }));
    }
    let first = tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("a delivery before the kill")
        .expect("stream open")
        .expect("delivery");
    first.ack().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.kill9().await;
    let server = ChildServer::start(BIN, &data, &[]).await;
    proxy.set_target(server.addr);
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await.unwrap());
    }
    assert!(
        failed.is_empty(),
        "publishes the SDK gave up on: {failed:?}"
    );
    // The subscription reconnected: it delivers an event published after the restart.
    publisher
        .publish(Event::new("e", "after"))
        .await
        .expect("publish after the restart");
    tokio::time::timeout(PATIENCE, async {
        while let Some(d) = subscription.next().await {
            let d = d.expect("the subscription survives the kill");
            let after = d.payload().as_ref() == b"after";
            tokio::spawn(d.ack());
            if after {
                return;
            }
        }
        panic!("the subscription ended");
    })
    .await
    .expect("the event published after the restart arrives");
    assert_eq!(server.terminate().await, Some(0), "SIGTERM exits 0");
}

/// After a restart every ack id of the previous run is stale. An Ack call
/// carrying many of them (what a consumer's queued acks look like after a
/// crash) must still get an answer the client can decode: FAILED_PRECONDITION
/// naming the stale ids, not a response whose headers break HTTP/2.
///
/// Found by the kill loop: the status details listed one PreconditionFailure
/// violation per stale id in `grpc-status-details-bin`, so 500 stale ids
/// made a ~80 KB trailer. The Rust client answers it with
/// GOAWAY(ENHANCE_YOUR_CALM, "header_list_way_too_large"), which kills the
/// whole connection, Subscribe streams included; a smaller excess resets the
/// call (INTERNAL "h2 protocol error"). A consumer group then livelocks: its
/// streams reconnect, their leases go to other members, those acks are stale
/// too, and so on. Now at most 64 ids are listed and the message gives the
/// total.
#[tokio::test]
async fn an_ack_of_many_stale_ids_gets_a_decodable_answer() {
    use eventbus_tests::v1::AckRequest;
    let (_dir, data) = temp_dir();
    let server = ChildServer::start(BIN, &data, &[]).await;
    let mut events = EventServiceClient::new(server.channel().await);
    let batch = (0..500).map(|i| event("", "job", format!("{i}"))).collect();
    publish(&mut events, "t", batch).await;
    let mut stream = subscribe(&mut events, "t", "s", 500).await;
    let ack_ids: Vec<String> = recv_n(&mut stream, 500)
        .await
        .into_iter()
        .map(|d| d.ack_id)
        .collect();
    drop(stream);
    server.kill9().await;
    let server = ChildServer::start(BIN, &data, &[]).await;
    let mut events = EventServiceClient::new(server.channel().await);
    if eventbus_tests::on_jetstream() {
        // Cluster mode's leases live in JetStream and outlive the gateway
        // (ARCHITECTURE.md, Backend conformance): nothing is stale.
        events
            .ack(AckRequest {
                topic: "t".into(),
                subscription: "s".into(),
                ack_ids,
            })
            .await
            .expect("leases outlive a gateway's kill -9");
        return;
    }
    let err = events
        .ack(AckRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ack_ids,
        })
        .await
        .expect_err("every id is stale after the restart");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().starts_with("500 of 500 ack ids"), "{err:?}");
    let listed = tonic_types::StatusExt::get_details_precondition_failure(&err)
        .expect("precondition failure details")
        .violations;
    assert_eq!(listed.len(), 64, "the first 64 stale ids are named");
    assert!(listed.iter().all(|v| v.r#type == "STALE_LEASE"));
    assert_eq!(server.terminate().await, Some(0), "SIGTERM exits 0");
}

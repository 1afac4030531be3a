//! Big events (issue 11, defect 5): every SubscribeResponse fits the 4 MiB
//! that gRPC clients accept by default, a stream's unsettled bytes are
//! bounded, and a lease its member left with counts as a used attempt, so an
//! event that keeps breaking its consumers ends in the dead-letter queue
//! instead of coming back forever.

use std::collections::HashSet;
use std::time::Duration;

use eventbus::{Client, SubscriberConfig};
use eventbus_tests::v1::event_service_client::EventServiceClient;
use eventbus_tests::v1::{self, CreateSubscriptionRequest, CreateTopicRequest};
use eventbus_tests::TestServer;
use tokio_stream::StreamExt;

use crate::support::*;

/// 1 MB, as in the report: five of them were one 5 MB message.
const BIG: usize = 1_000_000;
const COUNT: usize = 16;

/// A one-partition topic (one read-ahead then holds many events) with
/// `COUNT` events of `BIG` bytes, each filled with its index; returns their ids.
async fn publish_big(server: &TestServer, topic: &str) -> HashSet<String> {
    server
        .admin()
        .create_topic(CreateTopicRequest {
            topic: topic.into(),
            partitions: 1,
            retention: None,
        })
        .await
        .unwrap();
    let mut events = server.events();
    let mut ids = HashSet::new();
    for chunk in (0..COUNT).collect::<Vec<_>>().chunks(4) {
        let batch = chunk
            .iter()
            .map(|i| event("", "big", vec![*i as u8; BIG]))
            .collect();
        ids.extend(
            publish(&mut events, topic, batch)
                .await
                .into_iter()
                .map(|r| r.event_id),
        );
    }
    assert_eq!(ids.len(), COUNT);
    ids
}

fn assert_intact(payload: &[u8]) {
    assert_eq!(payload.len(), BIG);
    assert!(
        payload.iter().all(|b| *b == payload[0]),
        "payload is what was published"
    );
}

#[tokio::test]
async fn a_client_with_the_default_4_mib_limit_receives_1_mb_events() {
    let server = TestServer::start().await;
    let ids = publish_big(&server, "big").await;
    // tonic's default decoding limit is 4 MiB, like grpc-go's and grpcio's.
    let mut events = EventServiceClient::new(server.channel());
    let mut stream = subscribe(&mut events, "big", "s", 256).await;
    let mut got = HashSet::new();
    let mut messages = 0;
    tokio::time::timeout(PATIENCE, async {
        while got.len() < COUNT {
            let msg = stream
                .message()
                .await
                .expect("every message fits 4 MiB")
                .expect("stream open");
            messages += 1;
            for d in &msg.deliveries {
                let ev = d.event.as_ref().expect("event");
                assert_intact(&ev.payload);
                got.insert(ev.event_id.clone());
            }
            ack(&mut events, "big", "s", &msg.deliveries).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("received {} of {COUNT}", got.len()));
    assert_eq!(got, ids);
    // 4 MiB holds four 1 MB events with their envelopes, not five.
    assert!(messages >= COUNT / 4, "{messages} messages");
    expect_silence(&mut stream, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_sdk_with_default_settings_receives_1_mb_events() {
    let server = TestServer::start().await;
    let ids = publish_big(&server, "big").await;
    let client = Client::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    let mut deliveries = client.subscribe_with("big", "s", SubscriberConfig::default());
    let mut got = HashSet::new();
    tokio::time::timeout(PATIENCE, async {
        while got.len() < COUNT {
            let d = deliveries.next().await.expect("open").expect("delivery");
            assert_intact(d.payload());
            got.insert(d.event().event_id.clone());
            d.ack().await.expect("ack");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("received {} of {COUNT}", got.len()));
    assert_eq!(got, ids);
}

#[tokio::test]
async fn a_stream_holds_at_most_max_in_flight_bytes_unsettled() {
    const EVENT: usize = 64 * 1024;
    let server = TestServer::start_with(eventbus_tests::DataDir::Fresh, |c| {
        c.max_in_flight_bytes = 1 << 20;
    })
    .await;
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        (0..100).map(|_| event("", "x", vec![7u8; EVENT])).collect(),
    )
    .await;
    // Credit for 1000 events, but 1 MiB of 64 KiB events is 16 (the one that
    // crosses the bound still goes).
    let mut stream = subscribe(&mut events, "t", "s", 1000).await;
    let held = recv_until_silent(&mut stream).await;
    if eventbus_tests::on_jetstream() {
        // Each partition's pull takes its share of the free bytes, sized
        // before the others' deliveries land: the bound holds within
        // twice its size (ARCHITECTURE.md, Backend conformance).
        assert!(
            (16..=32).contains(&held.len()),
            "{} deliveries outstanding",
            held.len()
        );
        // Settling all but 12 frees about 4 events' worth.
        ack(&mut events, "t", "s", &held[12..]).await;
        let more = recv_until_silent(&mut stream).await;
        assert!(
            (4..=8).contains(&more.len()),
            "{} more after freeing 4 events' bytes",
            more.len()
        );
        return;
    }
    assert!(
        (16..=17).contains(&held.len()),
        "{} deliveries outstanding",
        held.len()
    );
    ack(&mut events, "t", "s", &held[..4]).await;
    let more = recv_until_silent(&mut stream).await;
    assert_eq!(more.len(), 4, "acks free exactly their bytes");
}

/// A dead-letter page of 1 MB events fits the 4 MiB a default client
/// receives, whatever page size was asked for; paging still returns them all.
#[tokio::test]
async fn dead_letter_pages_of_big_events_fit_a_default_client() {
    let server = TestServer::start().await;
    let ids = publish_big(&server, "big").await;
    let mut events = server.events();
    let mut stream = subscribe(&mut events, "big", "s", COUNT as u32).await;
    let (mut ack_ids, mut delivered) = (Vec::new(), Vec::new());
    while ack_ids.len() < COUNT {
        let msg = stream.message().await.expect("stream ok").expect("open");
        for d in msg.deliveries {
            delivered.push((d.event.expect("event").event_id, d.delivery_attempt));
            ack_ids.push(d.ack_id);
        }
    }
    assert!(
        delivered.iter().all(|(_, attempt)| *attempt == 1),
        "each event delivered once before the nack: {delivered:?}"
    );
    events
        .nack(v1::NackRequest {
            topic: "big".into(),
            subscription: "s".into(),
            ack_ids,
            dead_letter: true,
            ..Default::default()
        })
        .await
        .expect("dead-letter them all");
    // The plain generated client: the default 4 MiB receive limit.
    let mut admin =
        eventbus_tests::v1::admin_service_client::AdminServiceClient::new(server.channel());
    let (mut token, mut listed, mut pages) = (String::new(), HashSet::new(), 0);
    loop {
        let page = admin
            .list_dead_letters(v1::ListDeadLettersRequest {
                topic: "big".into(),
                subscription: "s".into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("a page a default client can decode")
            .into_inner();
        assert!(
            (1..=3).contains(&page.dead_letters.len()),
            "{} entries of 1 MB in one page",
            page.dead_letters.len()
        );
        pages += 1;
        for dl in page.dead_letters {
            let event = dl.event.expect("event");
            assert_intact(&event.payload);
            listed.insert(event.event_id);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, ids, "paging returns every dead letter once");
    assert!(pages >= COUNT / 3, "{pages} pages");
}

/// Everything that arrives until the stream is quiet for 500 ms.
async fn recv_until_silent(
    stream: &mut tonic::Streaming<v1::SubscribeResponse>,
) -> Vec<v1::Delivery> {
    let mut out = Vec::new();
    while let Ok(msg) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        out.extend(msg.expect("stream ok").expect("stream open").deliveries);
    }
    out
}

#[tokio::test]
async fn a_member_that_leaves_with_the_lease_uses_an_attempt() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "t".into(),
            subscription: "s".into(),
            max_delivery_attempts: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    publish(&mut events, "t", vec![event("", "x", "poison")]).await;
    // A consumer that crashes on the event: receives it, never settles it,
    // and its stream drops. Three times.
    for attempt in 1..=3 {
        let mut stream = subscribe(&mut events, "t", "s", 10).await;
        let got = recv_n(&mut stream, 1).await;
        assert_eq!(payload(&got[0]), "poison");
        assert_eq!(got[0].delivery_attempt, attempt);
        drop(stream);
    }
    // The third attempt was the last: the event is a dead letter now, and a
    // new member gets nothing.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let dead = loop {
        let dead = dead_letters(&server, "t", "s").await;
        if !dead.is_empty() || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead.len(), 1, "the event is dead-lettered");
    assert_eq!(dead[0].delivery_attempts, 3);
    assert_eq!(dead[0].reason, "member left with the lease");
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    expect_silence(&mut stream, Duration::from_millis(300)).await;
}

/// Long tier, not CI: the server's memory while a subscriber with a large
/// `max_in_flight` reads nothing, then reads slowly, with thousands of 1 MiB
/// events backlogged. Prints one line per phase; the figures are in
/// BENCHMARKS.md ("Slow subscriber, 1 MiB events"):
///
/// ```text
/// cargo test -p eventbus-tests --test e2e slow_subscriber_memory -- --ignored --nocapture
/// ```
///
/// `SLOW_SUB_EVENTS` sets the backlog (default 2000 events);
/// `SLOW_SUB_SERVER` runs another server binary (an older build, for a
/// before/after comparison). Not `EVENTBUS_*`: the server inherits the
/// environment and would refuse them as unknown config keys. Payloads repeat one byte, so the backlog costs
/// little disk after compression; in memory every event is its full size.
#[tokio::test]
#[ignore = "long tier: publishes GiBs; figures in BENCHMARKS.md"]
async fn slow_subscriber_memory() {
    use eventbus_tests::v1::admin_service_client::AdminServiceClient;
    use eventbus_tests::{temp_dir, ChildServer};

    const MIB: usize = 1 << 20;
    let events: usize = std::env::var("SLOW_SUB_EVENTS")
        .map(|v| v.parse().expect("SLOW_SUB_EVENTS is a number"))
        .unwrap_or(2000);
    let bin = std::env::var("SLOW_SUB_SERVER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_eventbus-under-test").to_string());
    let (dir, data) = temp_dir();
    // 1 MiB payloads need a little more than the default max-event-bytes;
    // buffered durability only makes the setup faster.
    let config = dir.path().join("eventbus.toml");
    std::fs::write(
        &config,
        "max-event-bytes = 2097152\ndurability = \"buffered\"\n",
    )
    .expect("write config");
    let server = ChildServer::start(&bin, &data, &["--config", config.to_str().unwrap()]).await;
    let channel = server.channel().await;
    let rss = |field: &str| -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
            .expect("/proc status");
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .expect("field");
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<usize>()
            .unwrap()
            / 1024
    };

    let mut publisher = EventServiceClient::new(channel.clone());
    for first in (0..events).step_by(8) {
        let batch = (first..(first + 8).min(events))
            .map(|i| event("", "big", vec![i as u8; MIB]))
            .collect();
        publish(&mut publisher, "big", batch).await;
    }
    let (base_rss, base_hwm) = (rss("VmRSS:"), rss("VmHWM:"));
    println!(
        "slow-subscriber: {events} events of 1 MiB backlogged; server RSS {base_rss} MiB (peak so far {base_hwm} MiB)"
    );

    let mut admin = AdminServiceClient::new(channel.clone());
    // A client that accepts messages of any size, so the server is measured.
    let mut consumer = EventServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut stream = subscribe(&mut consumer, "big", "slow", 10_000).await;

    // Phase 1: the subscriber reads nothing for 10 s.
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(rss("VmRSS:"));
    }
    let held = subscription_stats(&mut admin, "big", "slow")
        .await
        .in_flight;
    println!(
        "slow-subscriber: not reading for 10 s: {held} deliveries in flight, server RSS max {peak} MiB (+{} MiB)",
        peak.saturating_sub(base_rss)
    );
    let mut worst = peak;

    // Phase 2: it reads one message every 250 ms and acks it, for 20 s.
    // Leases that waited in the server longer than the ack deadline are stale
    // by the time they are read (FAILED_PRECONDITION); they are counted.
    let (mut peak, mut received, mut stale) = (0, 0, 0);
    for _ in 0..80 {
        let msg = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("a message within PATIENCE")
            .expect("stream ok")
            .expect("stream open");
        received += msg.deliveries.len();
        let acked = consumer
            .ack(v1::AckRequest {
                topic: "big".into(),
                subscription: "slow".into(),
                ack_ids: msg.deliveries.iter().map(|d| d.ack_id.clone()).collect(),
            })
            .await;
        match acked {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::FailedPrecondition => stale += 1,
            Err(e) => panic!("ack: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss("VmRSS:"));
    }
    let held = subscription_stats(&mut admin, "big", "slow")
        .await
        .in_flight;
    println!(
        "slow-subscriber: reading 4 messages/s: {received} received ({stale} acks stale), {held} in flight, server RSS max {peak} MiB (+{} MiB)",
        peak.saturating_sub(base_rss)
    );
    worst = worst.max(peak);
    let hwm = rss("VmHWM:");
    println!(
        "slow-subscriber: server peak RSS (VmHWM) {hwm} MiB; during the subscriber +{} MiB over the backlogged server",
        worst.saturating_sub(base_rss)
    );
    // read-ahead (16 MiB) + in-flight bytes (32 MiB) + messages being encoded,
    // with room for allocator slack; unbounded, it is the whole backlog.
    assert!(
        worst.saturating_sub(base_rss) < 256,
        "server memory grew by {} MiB with a slow subscriber",
        worst - base_rss
    );
    drop(stream);
    server.terminate().await;
}

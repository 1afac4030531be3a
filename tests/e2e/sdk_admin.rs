//! The SDK's admin surface against the real server: page streams over
//! several pages, UpdateSubscription, filters and start positions, the paced
//! redrive, Replay as a stream, GetStatus and CreateBackup.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use eventbus::{
    AttributeCondition, Client, DeadLetters, Event, Position, RedriveProgress, ReplayOptions,
    StartPosition, SubscriptionSettings, SubscriptionUpdate, TopicSettings,
};
use eventbus_tests::{DataDir, TestServer};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::sdk::client;
use crate::support::PATIENCE;

/// Publishes `(type, payload)` events to `topic`, in order.
async fn publish(client: &Client, topic: &str, events: &[(&str, &str)]) {
    let publisher = client.publisher(topic);
    for (ty, payload) in events {
        publisher
            .publish(Event::new(*ty, payload.to_string()))
            .await
            .expect("publish");
    }
}

/// Receives `n` deliveries of `topic`/`sub`, acks them, returns their payloads.
async fn receive(client: &Client, topic: &str, sub: &str, n: usize) -> Vec<String> {
    let mut deliveries = client.subscribe(topic, sub);
    let mut got = Vec::new();
    while got.len() < n {
        let d = tokio::time::timeout(PATIENCE, deliveries.next())
            .await
            .unwrap_or_else(|_| panic!("only {got:?} of {n} deliveries arrived"))
            .expect("stream open")
            .expect("delivery");
        got.push(String::from_utf8(d.payload().to_vec()).unwrap());
        d.ack().await.expect("ack");
    }
    got
}

/// Dead-letters every event of `topic` through `sub` (a fresh subscription
/// from the earliest event), with the reason `why <payload>`.
async fn dead_letter_all(client: &Client, topic: &str, sub: &str, n: usize) {
    let mut deliveries = client.subscribe(topic, sub);
    for _ in 0..n {
        let d = tokio::time::timeout(PATIENCE, deliveries.next())
            .await
            .expect("delivery in time")
            .expect("stream open")
            .expect("delivery");
        let why = format!("why {}", String::from_utf8_lossy(d.payload()));
        d.dead_letter(why).await.expect("dead-letter");
    }
}

#[tokio::test]
async fn page_streams_follow_the_server_tokens_across_pages() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let admin = client.admin();
    for name in ["e", "a", "d", "c", "b"] {
        admin.create_topic(name, 1).await.unwrap();
    }
    // The server really pages at this size.
    let first = admin
        .raw()
        .list_topics(eventbus::v1::ListTopicsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.topics.len(), 2);
    assert!(!first.next_page_token.is_empty());

    let names: Vec<String> = admin
        .topics()
        .page_size(2)
        .map(|t| t.unwrap().name)
        .collect()
        .await;
    assert_eq!(names, ["a", "b", "c", "d", "e"]);

    for name in ["s3", "s1", "s2"] {
        admin
            .create_subscription("a", name, SubscriptionSettings::default())
            .await
            .unwrap();
    }
    let subs: Vec<String> = admin
        .subscriptions("a")
        .page_size(1)
        .map(|s| s.unwrap().name)
        .collect()
        .await;
    assert_eq!(subs, ["s1", "s2", "s3"]);
    let err = admin
        .subscriptions("missing")
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    let events: Vec<(&str, &str)> = vec![
        ("order.created", "o1"),
        ("order.paid", "o2"),
        ("payment.failed", "p1"),
        ("order.created", "o3"),
        ("payment.failed", "p2"),
    ];
    publish(&client, "a", &events).await;
    dead_letter_all(&client, "a", "s1", events.len()).await;
    let mut all: Vec<String> = admin
        .dead_letters("a", "s1", Default::default())
        .page_size(2)
        .map(|d| d.unwrap().reason)
        .collect()
        .await;
    all.sort();
    assert_eq!(all, ["why o1", "why o2", "why o3", "why p1", "why p2"]);
    let filter = eventbus::v1::DeadLetterFilter {
        types: vec!["order.*".into()],
        ..Default::default()
    };
    let mut orders: Vec<String> = admin
        .dead_letters("a", "s1", filter)
        .page_size(1)
        .map(|d| d.unwrap().reason)
        .collect()
        .await;
    orders.sort();
    assert_eq!(orders, ["why o1", "why o2", "why o3"]);
}

#[tokio::test]
async fn update_subscription_changes_only_the_named_settings() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let admin = client.admin();
    admin
        .create_subscription(
            "t",
            "s",
            SubscriptionSettings {
                ack_deadline: Some(Duration::from_secs(10)),
                max_delivery_attempts: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let updated = admin
        .update_subscription(
            "t",
            "s",
            SubscriptionUpdate::new()
                .ack_deadline(Duration::from_secs(20))
                .filter(vec!["keep.*".into()], Vec::new()),
        )
        .await
        .unwrap();
    assert_eq!(updated.ack_deadline.unwrap().seconds, 20);
    assert_eq!(updated.max_delivery_attempts, 3, "not named, not changed");
    assert_eq!(updated.filter.as_ref().unwrap().types, ["keep.*"]);
    let read = admin.get_subscription("t", "s").await.unwrap();
    assert_eq!(read.ack_deadline, updated.ack_deadline);
    assert_eq!(read.filter, updated.filter);

    // The new filter applies to what is delivered next.
    publish(&client, "t", &[("drop.me", "x"), ("keep.me", "y")]).await;
    assert_eq!(receive(&client, "t", "s", 1).await, ["y"]);

    let err = admin
        .update_subscription("t", "s", SubscriptionUpdate::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    let err = admin
        .update_subscription(
            "t",
            "nope",
            SubscriptionUpdate::new().max_delivery_attempts(1),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
}

#[tokio::test]
async fn attribute_filters_and_an_explicit_start_position() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let admin = client.admin();
    admin
        .create_topic_with(
            "orders",
            TopicSettings {
                partitions: 1,
                retention_max_age: Some(Duration::from_secs(7 * 86400)),
                retention_max_bytes: None,
            },
        )
        .await
        .unwrap();
    let publisher = client.publisher("orders");
    let event = |payload: &str, region: &str| {
        Event::new("order", payload.to_string()).attribute("region", region)
    };
    publisher.publish(event("old-eu", "eu")).await.unwrap();

    let eu_from_now = SubscriptionSettings {
        start: Some(StartPosition::Latest),
        attributes: vec![AttributeCondition::equals("region", "eu")],
        ..Default::default()
    };
    let created = admin
        .create_subscription("orders", "eu-new", eu_from_now)
        .await
        .unwrap();
    let condition = &created.filter.as_ref().unwrap().attributes[0];
    assert_eq!(condition.key, "region");
    let not_us = SubscriptionSettings {
        start: Some(StartPosition::Earliest),
        attributes: vec![AttributeCondition::not_equals("region", "us")],
        ..Default::default()
    };
    admin
        .create_subscription("orders", "not-us", not_us)
        .await
        .unwrap();

    for (payload, region) in [("new-us", "us"), ("new-eu", "eu"), ("new-apac", "apac")] {
        publisher.publish(event(payload, region)).await.unwrap();
    }
    assert_eq!(receive(&client, "orders", "eu-new", 1).await, ["new-eu"]);
    let mut not_us = receive(&client, "orders", "not-us", 3).await;
    not_us.sort();
    assert_eq!(not_us, ["new-apac", "new-eu", "old-eu"]);
    let stats = admin
        .get_subscription("orders", "eu-new")
        .await
        .unwrap()
        .stats
        .unwrap();
    assert_eq!((stats.delivered, stats.acked), (1, 1));
}

#[tokio::test]
async fn paced_redrive_snapshots_the_selection_and_reports_progress() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let admin = client.admin();
    admin
        .create_subscription("t", "s", SubscriptionSettings::default())
        .await
        .unwrap();
    let events = [
        ("order.created", "o1"),
        ("order.created", "o2"),
        ("order.paid", "o3"),
        ("payment.failed", "p1"),
        ("payment.failed", "p2"),
    ];
    publish(&client, "t", &events).await;
    dead_letter_all(&client, "t", "s", events.len()).await;

    let seen: Arc<Mutex<Vec<RedriveProgress>>> = Arc::default();
    let log = Arc::clone(&seen);
    let filter = eventbus::v1::DeadLetterFilter {
        types: vec!["order.*".into()],
        ..Default::default()
    };
    let redriven = admin
        .redrive_paced("t", "s", DeadLetters::Matching(filter), 2, move |p| {
            log.lock().unwrap().push(p)
        })
        .await
        .unwrap();
    assert_eq!(redriven, 3);
    let progress = |selected, sent, redriven| RedriveProgress {
        selected,
        sent,
        redriven,
    };
    assert_eq!(
        *seen.lock().unwrap(),
        [progress(3, 0, 0), progress(3, 2, 2), progress(3, 3, 3)],
        "one report before the first chunk, one per chunk of max_per_second ids"
    );
    let stats = admin
        .get_subscription("t", "s")
        .await
        .unwrap()
        .stats
        .unwrap();
    assert_eq!((stats.dead_letter_count, stats.backlog), (2, 3));
    let mut again = receive(&client, "t", "s", 3).await;
    again.sort();
    assert_eq!(again, ["o1", "o2", "o3"]);

    // Unpaced, by id and for all: the rest.
    let ids: Vec<String> = admin
        .list_dead_letters("t", "s", Default::default(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids.len(), 2);
    let n = admin
        .redrive_paced("t", "s", DeadLetters::Ids(ids[..1].to_vec()), 0, |_| {})
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n = admin
        .redrive_paced("t", "s", DeadLetters::All, 0, |_| {})
        .await
        .unwrap();
    assert_eq!(n, 1);
    let stats = admin
        .get_subscription("t", "s")
        .await
        .unwrap()
        .stats
        .unwrap();
    assert_eq!(stats.dead_letter_count, 0);
}

#[tokio::test]
async fn replay_streams_a_range_and_follows_the_tail() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    client.admin().create_topic("log", 1).await.unwrap();
    let before: Vec<(&str, String)> = (0..10)
        .map(|i| (if i % 2 == 0 { "even" } else { "odd" }, format!("e{i}")))
        .collect();
    let before: Vec<(&str, &str)> = before.iter().map(|(t, p)| (*t, p.as_str())).collect();
    publish(&client, "log", &before).await;

    let range = ReplayOptions {
        from: Some(Position::Offset(3)),
        to: Some(Position::Offset(8)),
        ..Default::default()
    };
    let offsets: Vec<u64> = client
        .replay("log", range)
        .await
        .unwrap()
        .map(|e| e.unwrap().offset)
        .collect()
        .await;
    assert_eq!(offsets, [3, 4, 5, 6, 7]);

    let odd = ReplayOptions {
        event_types: vec!["odd".into()],
        ..Default::default()
    };
    let mut replay = client.replay("log", odd).await.unwrap();
    let mut payloads = Vec::new();
    while let Some(batch) = replay.next_batch().await {
        payloads.extend(
            batch
                .unwrap()
                .into_iter()
                .map(|e| String::from_utf8(e.payload.to_vec()).unwrap()),
        );
    }
    assert_eq!(payloads, ["e1", "e3", "e5", "e7", "e9"]);
    assert!(replay.caught_up());

    // Nothing was published in the future.
    let future = ReplayOptions {
        from: Some(Position::Time(
            SystemTime::now() + Duration::from_secs(3600),
        )),
        ..Default::default()
    };
    let none: Vec<_> = client.replay("log", future).await.unwrap().collect().await;
    assert!(none.is_empty(), "{none:?}");

    let follow = ReplayOptions {
        from: Some(Position::Offset(9)),
        follow: true,
        ..Default::default()
    };
    let mut tail = client.replay("log", follow).await.unwrap();
    let last = tokio::time::timeout(PATIENCE, tail.next()).await.unwrap();
    assert_eq!(last.unwrap().unwrap().offset, 9);
    publish(&client, "log", &[("even", "e10")]).await;
    let new = tokio::time::timeout(PATIENCE, tail.next()).await.unwrap();
    assert_eq!(new.unwrap().unwrap().payload.as_ref(), b"e10");
    assert!(tail.caught_up());

    let err = match client
        .replay(
            "log",
            ReplayOptions {
                to: Some(Position::Offset(1)),
                follow: true,
                ..Default::default()
            },
        )
        .await
    {
        Ok(mut stream) => stream.next().await.unwrap().unwrap_err(),
        Err(err) => err,
    };
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
}

#[tokio::test]
async fn status_and_backup() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().to_path_buf();
    let server = TestServer::start_with(DataDir::Fresh, |c| c.backup_root = Some(root)).await;
    let client = client(&server).await;
    let admin = client.admin();
    admin
        .create_subscription("orders", "billing", SubscriptionSettings::default())
        .await
        .unwrap();
    publish(&client, "orders", &[("n", "1"), ("n", "2")]).await;

    let status = admin.status().await.unwrap();
    let orders = status
        .topics
        .iter()
        .find(|t| t.topic.as_ref().unwrap().name == "orders")
        .expect("orders in the status");
    assert_eq!(orders.events, 2);
    assert_eq!(orders.subscriptions.len(), 1);
    assert_eq!(orders.subscriptions[0].name, "billing");
    assert_eq!(orders.subscriptions[0].stats.unwrap().backlog, 2);
    let storage = status.storage.unwrap();
    assert_eq!(storage.state(), eventbus::v1::StorageState::Ok);
    assert!(storage.storage_bytes > 0 || storage.disk_total_bytes > 0);

    let backup = admin.create_backup("backup").await.unwrap();
    let dir = parent.path().canonicalize().unwrap().join("backup");
    assert_eq!(backup.dir, dir.to_str().unwrap());
    assert!(backup.size_bytes > 0);
    // A RocksDB checkpoint, or in cluster mode one snapshot per stream
    // and their manifest.
    let marker = if eventbus_tests::on_jetstream() {
        "manifest.json"
    } else {
        "CURRENT"
    };
    assert!(dir.join(marker).exists());
    let err = admin.create_backup("backup").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    let err = admin.create_backup("../outside").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
}

//! Bad input gets a precise status and a message that says what to fix.

use eventbus_tests::v1::{
    self, CreateSubscriptionRequest, CreateTopicRequest, PublishRequest, SubscribeRequest,
};
use eventbus_tests::{DataDir, TestServer};
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn invalid_names_are_invalid_argument() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    let long = "x".repeat(256);
    for (name, needle) in [
        ("", "empty"),
        (long.as_str(), "maximum"),
        ("bad name", "contains"),
        ("-x", "start"),
    ] {
        assert_status(
            events
                .publish(PublishRequest {
                    topic: name.into(),
                    events: vec![event("", "x", "p")],
                })
                .await,
            Code::InvalidArgument,
            needle,
        );
        assert_status(
            admin
                .create_topic(CreateTopicRequest {
                    topic: name.into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            needle,
        );
        assert_status(
            events
                .subscribe(SubscribeRequest {
                    topic: "ok".into(),
                    subscription: name.into(),
                    max_in_flight: 0,
                })
                .await,
            Code::InvalidArgument,
            needle,
        );
        assert_status(
            admin
                .create_subscription(CreateSubscriptionRequest {
                    topic: "ok".into(),
                    subscription: name.into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            needle,
        );
    }
}

#[tokio::test]
async fn unknown_topic_or_subscription_is_not_found_without_auto_create() {
    let server = TestServer::start_with(DataDir::Fresh, |c| c.auto_create = false).await;
    let (mut events, mut admin) = (server.events(), server.admin());
    assert_status(
        events
            .publish(PublishRequest {
                topic: "nope".into(),
                events: vec![event("", "x", "p")],
            })
            .await,
        Code::NotFound,
        "CreateTopic",
    );
    assert_status(
        events
            .subscribe(SubscribeRequest {
                topic: "nope".into(),
                subscription: "s".into(),
                max_in_flight: 0,
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        admin
            .get_topic(v1::GetTopicRequest {
                topic: "nope".into(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        admin
            .delete_topic(v1::DeleteTopicRequest {
                topic: "nope".into(),
            })
            .await,
        Code::NotFound,
        "nope",
    );

    admin
        .create_topic(CreateTopicRequest {
            topic: "exists".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_status(
        events
            .subscribe(SubscribeRequest {
                topic: "exists".into(),
                subscription: "ghost".into(),
                max_in_flight: 0,
            })
            .await,
        Code::NotFound,
        "CreateSubscription",
    );
    assert_status(
        admin
            .get_subscription(v1::GetSubscriptionRequest {
                topic: "exists".into(),
                subscription: "ghost".into(),
            })
            .await,
        Code::NotFound,
        "ghost",
    );
    assert_status(
        events
            .ack(v1::AckRequest {
                topic: "exists".into(),
                subscription: "ghost".into(),
                ack_ids: vec!["AQAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()],
            })
            .await,
        Code::NotFound,
        "ghost",
    );
}

#[tokio::test]
async fn oversized_event_is_invalid_argument() {
    let server = TestServer::start_with(DataDir::Fresh, |c| c.max_event_bytes = 4096).await;
    let mut events = server.events();
    assert_status(
        events
            .publish(PublishRequest {
                topic: "t".into(),
                events: vec![event("", "x", vec![0u8; 5000])],
            })
            .await,
        Code::InvalidArgument,
        "limit is 4096",
    );
    // Nothing of a rejected batch is written, not even its valid events.
    let ok = publish(&mut events, "t", vec![event("", "x", "small")]).await;
    assert_eq!(ok[0].offset, 0);
}

#[tokio::test]
async fn empty_publish_is_invalid_argument() {
    let server = TestServer::start().await;
    assert_status(
        server
            .events()
            .publish(PublishRequest {
                topic: "t".into(),
                events: vec![],
            })
            .await,
        Code::InvalidArgument,
        "at least one event",
    );
}

#[tokio::test]
async fn malformed_ack_ids_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(&mut events, "t", vec![event("", "x", "p")]).await;
    let _stream = subscribe(&mut events, "t", "s", 10).await;
    for bad in ["", "not-an-ack-id", "AAAA"] {
        assert_status(
            events
                .ack(v1::AckRequest {
                    topic: "t".into(),
                    subscription: "s".into(),
                    ack_ids: vec![bad.into()],
                })
                .await,
            Code::InvalidArgument,
            "ack id",
        );
    }
    assert_status(
        events
            .ack(v1::AckRequest {
                topic: "t".into(),
                subscription: "s".into(),
                ack_ids: vec![],
            })
            .await,
        Code::InvalidArgument,
        "at least one",
    );
}

#[tokio::test]
async fn ack_id_of_another_subscription_is_rejected() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(&mut events, "t", vec![event("", "x", "p")]).await;
    let mut a = subscribe(&mut events, "t", "a", 10).await;
    let _b = subscribe(&mut events, "t", "b", 10).await;
    let d = recv_n(&mut a, 1).await;
    assert_status(
        events
            .ack(v1::AckRequest {
                topic: "t".into(),
                subscription: "b".into(),
                ack_ids: vec![d[0].ack_id.clone()],
            })
            .await,
        Code::InvalidArgument,
        "another subscription",
    );
}

#[tokio::test]
async fn duplicate_creates_are_already_exists() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    admin
        .create_topic(CreateTopicRequest {
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_status(
        admin
            .create_topic(CreateTopicRequest {
                topic: "t".into(),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
        "already exists",
    );
    let sub = CreateSubscriptionRequest {
        topic: "t".into(),
        subscription: "s".into(),
        ..Default::default()
    };
    admin.create_subscription(sub.clone()).await.unwrap();
    assert_status(
        admin.create_subscription(sub).await,
        Code::AlreadyExists,
        "already exists",
    );
}

#[tokio::test]
async fn out_of_range_settings_are_invalid_argument() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    assert_status(
        admin
            .create_topic(CreateTopicRequest {
                topic: "t".into(),
                partitions: 5000,
                retention: None,
            })
            .await,
        Code::InvalidArgument,
        "maximum",
    );
    assert_status(
        admin
            .create_subscription(CreateSubscriptionRequest {
                topic: "t".into(),
                subscription: "s".into(),
                ack_deadline: Some(duration(0.5)),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "ack_deadline",
    );
    assert_status(
        events
            .subscribe(SubscribeRequest {
                topic: "t".into(),
                subscription: "s".into(),
                max_in_flight: 1_000_000,
            })
            .await,
        Code::InvalidArgument,
        "max_in_flight",
    );
}

#[tokio::test]
async fn delete_topic_removes_events_and_subscriptions() {
    let server = TestServer::start().await;
    let (mut events, mut admin) = (server.events(), server.admin());
    publish(&mut events, "gone", vec![event("", "x", "p")]).await;
    let _s = subscribe(&mut events, "gone", "s", 10).await;
    admin
        .delete_topic(v1::DeleteTopicRequest {
            topic: "gone".into(),
        })
        .await
        .unwrap();
    assert_status(
        admin
            .get_topic(v1::GetTopicRequest {
                topic: "gone".into(),
            })
            .await,
        Code::NotFound,
        "gone",
    );
    // Re-creating the name starts from scratch.
    let r = publish(&mut events, "gone", vec![event("", "x", "fresh")]).await;
    assert_eq!(r[0].offset, 0);
    let list = admin
        .list_subscriptions(v1::ListSubscriptionsRequest {
            topic: "gone".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.subscriptions.is_empty());
}

#[tokio::test]
async fn absurd_nack_delay_is_invalid_argument_and_harmless() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(&mut events, "t", vec![event("", "x", "p")]).await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let d = recv_n(&mut stream, 1).await.remove(0);
    for seconds in [i64::MAX, 3601] {
        assert_status(
            events
                .nack(v1::NackRequest {
                    topic: "t".into(),
                    subscription: "s".into(),
                    ack_ids: vec![d.ack_id.clone()],
                    delay: Some(prost_types::Duration { seconds, nanos: 0 }),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "delay",
        );
    }
    // The subscription still works: the lease is intact and can be acked.
    ack(&mut events, "t", "s", std::slice::from_ref(&d)).await;
}

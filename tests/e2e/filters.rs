//! Subscription filters and UpdateSubscription.

use std::collections::HashMap;
use std::time::Duration;

use eventbus_tests::v1::{
    self, attribute_condition::Condition, AttributeCondition, CreateSubscriptionRequest,
};
use eventbus_tests::TestServer;
use tonic::Code;

use crate::support::*;

fn with_attrs(ty: &str, payload: &str, attrs: &[(&str, &str)]) -> v1::PublishEvent {
    v1::PublishEvent {
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..event("", ty, payload)
    }
}

async fn sub_stats(server: &TestServer, sub: &str) -> v1::Subscription {
    server
        .admin()
        .get_subscription(v1::GetSubscriptionRequest {
            topic: "t".into(),
            subscription: sub.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap()
}

#[tokio::test]
async fn non_matching_events_are_settled_without_delivery_and_counted() {
    let server = TestServer::start().await;
    let filter = v1::Filter {
        types: vec!["order.*".into()],
        attributes: vec![AttributeCondition {
            key: "tier".into(),
            condition: Some(Condition::Eq("gold".into())),
        }],
    };
    server
        .admin()
        .create_subscription(CreateSubscriptionRequest {
            topic: "t".into(),
            subscription: "gold-orders".into(),
            filter: Some(filter.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        vec![
            with_attrs("order.created", "match-1", &[("tier", "gold")]),
            with_attrs("order.created", "wrong-tier", &[("tier", "silver")]),
            with_attrs("user.created", "wrong-type", &[("tier", "gold")]),
            with_attrs("order.paid", "match-2", &[("tier", "gold")]),
            with_attrs("order.paid.v2", "too-deep", &[("tier", "gold")]),
        ],
    )
    .await;
    let mut stream = subscribe(&mut events, "t", "gold-orders", 10).await;
    let got = recv_n(&mut stream, 2).await;
    let mut payloads: Vec<_> = got.iter().map(payload).collect();
    payloads.sort();
    assert_eq!(payloads, vec!["match-1", "match-2"]);
    expect_silence(&mut stream, Duration::from_millis(300)).await;
    ack(&mut events, "t", "gold-orders", &got).await;
    let sub = sub_stats(&server, "gold-orders").await;
    assert_eq!(sub.filter, Some(filter));
    let stats = sub.stats.unwrap();
    assert_eq!((stats.filtered, stats.delivered, stats.backlog), (3, 2, 0));
}

#[tokio::test]
async fn update_subscription_changes_the_filter_for_undelivered_events() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        vec![event("", "a.x", "a"), event("", "b.x", "b")],
    )
    .await;
    let updated = admin
        .update_subscription(v1::UpdateSubscriptionRequest {
            topic: "t".into(),
            subscription: "s".into(),
            filter: Some(v1::Filter {
                types: vec!["b.>".into()],
                attributes: vec![],
            }),
            ack_deadline: Some(duration(12.0)),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["filter".into(), "ack_deadline".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(updated.ack_deadline.unwrap().seconds, 12);
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let got = recv_n(&mut stream, 1).await;
    assert_eq!(payload(&got[0]), "b");
    expect_silence(&mut stream, Duration::from_millis(300)).await;

    // The change survives a restart.
    drop(stream);
    let server = server.restart(|_| {}).await;
    let sub = sub_stats(&server, "s").await;
    assert_eq!(sub.ack_deadline.unwrap().seconds, 12);
    assert_eq!(sub.filter.unwrap().types, vec!["b.>".to_string()]);
}

#[tokio::test]
async fn update_and_filter_bad_input() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    admin
        .create_subscription(CreateSubscriptionRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let upd = |paths: Vec<&str>| v1::UpdateSubscriptionRequest {
        topic: "t".into(),
        subscription: "s".into(),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.into_iter().map(String::from).collect(),
        }),
        ..Default::default()
    };
    assert_eq!(
        admin
            .update_subscription(upd(vec![]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        admin
            .update_subscription(upd(vec!["color"]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let bad_pattern = v1::UpdateSubscriptionRequest {
        filter: Some(v1::Filter {
            types: vec!["a.>.c".into()],
            attributes: vec![],
        }),
        ..upd(vec!["filter"])
    };
    assert_eq!(
        admin
            .update_subscription(bad_pattern)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let no_condition = CreateSubscriptionRequest {
        topic: "t".into(),
        subscription: "s2".into(),
        filter: Some(v1::Filter {
            types: vec![],
            attributes: vec![AttributeCondition {
                key: "k".into(),
                condition: None,
            }],
        }),
        ..Default::default()
    };
    assert_eq!(
        admin
            .create_subscription(no_condition)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Resetting max_delivery_attempts (unset, in the mask) restores the default.
    let reset = admin
        .update_subscription(upd(vec!["max_delivery_attempts"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.subscription.unwrap().max_delivery_attempts, 5);
}

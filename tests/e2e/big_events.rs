//! Big events (issue 11, defect 5): a lease its member left with counts as a
//! used attempt, so an event that keeps breaking its consumers ends in the
//! dead-letter queue instead of coming back forever.

use std::time::Duration;

use eventbus_tests::v1::CreateSubscriptionRequest;
use eventbus_tests::TestServer;

use crate::support::*;

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

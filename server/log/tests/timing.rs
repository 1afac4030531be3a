//! Redelivery timing with an injected clock: tokio's paused time drives the
//! delivery engine below gRPC, so "not before the deadline, and within 250 ms
//! after" is checked exactly, independent of machine load.

use std::time::Duration;

use bytes::Bytes;
use eventbus_log::delivery::{MemberStream, SettleOp};
use eventbus_log::{LogBroker, NewEvent, NewSubscription, Options, RetryPolicy};
use tokio::time::Instant;

const SLACK: Duration = Duration::from_millis(250);

async fn broker(dir: &std::path::Path) -> LogBroker {
    let mut o = Options::new(dir);
    o.durability = eventbus_log::Durability::Buffered;
    LogBroker::open(o).await.unwrap()
}

fn ev(p: &str) -> NewEvent {
    NewEvent {
        event_type: "t".into(),
        payload: Bytes::copy_from_slice(p.as_bytes()),
        ..Default::default()
    }
}

async fn next(m: &mut MemberStream) -> (Instant, eventbus_log::delivery::Delivery) {
    let batch = m.recv().await.expect("open").expect("ok");
    assert_eq!(batch.len(), 1);
    (Instant::now(), batch.into_iter().next().unwrap())
}

fn within(elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected,
        "redelivered after {elapsed:?}, before {expected:?}"
    );
    assert!(
        elapsed <= expected + SLACK,
        "redelivered after {elapsed:?}, later than {expected:?} + 250 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn expired_leases_come_back_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    for (sub, secs) in [("one", 1), ("seven", 7)] {
        let new = NewSubscription {
            ack_deadline: Some(Duration::from_secs(secs)),
            ..Default::default()
        };
        b.create_subscription("t", sub, new).await.unwrap();
    }
    b.publish("t", &[ev("x")]).await.unwrap();
    for (sub, secs) in [("one", 1), ("seven", 7)] {
        let mut m = b.subscribe("t", sub, 10).await.unwrap();
        let (t0, d0) = next(&mut m).await;
        let (t1, d1) = next(&mut m).await;
        assert_eq!((d0.attempt, d1.attempt), (1, 2));
        within(t1 - t0, Duration::from_secs(secs));
    }
}

#[tokio::test(start_paused = true)]
async fn nack_delay_and_backoff_are_respected() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let new = NewSubscription {
        retry_policy: Some(RetryPolicy {
            min_backoff: Some(Duration::from_secs(2)),
            max_backoff: Some(Duration::from_secs(5)),
        }),
        max_delivery_attempts: Some(0),
        ..Default::default()
    };
    b.create_subscription("t", "s", new).await.unwrap();
    b.publish("t", &[ev("x")]).await.unwrap();
    let mut m = b.subscribe("t", "s", 10).await.unwrap();

    // An explicit delay overrides the policy.
    let (t0, d) = next(&mut m).await;
    let nack = |delay: Option<Duration>| SettleOp::Nack {
        delay,
        reason: String::new(),
    };
    b.settle(
        "t",
        "s",
        nack(Some(Duration::from_secs(3))),
        &[d.ack_id.encode()],
    )
    .await
    .unwrap();
    let (t1, d) = next(&mut m).await;
    within(t1 - t0, Duration::from_secs(3));

    // Policy backoff: min_backoff * 2^(attempt-1), capped at max, jitter at most
    // 20 % below but never under min_backoff.
    let mut t = t1;
    let mut d = d;
    for expected_max in [4, 5, 5] {
        b.settle("t", "s", nack(None), &[d.ack_id.encode()])
            .await
            .unwrap();
        let (tn, dn) = next(&mut m).await;
        let waited = tn - t;
        let max = Duration::from_secs(expected_max);
        assert!(
            waited >= Duration::from_secs(2),
            "backoff {waited:?} below min_backoff"
        );
        assert!(
            waited >= max.mul_f64(0.8) || max == Duration::from_secs(2),
            "backoff {waited:?} too short for {max:?}"
        );
        assert!(waited <= max + SLACK, "backoff {waited:?} above {max:?}");
        (t, d) = (tn, dn);
    }
    assert_eq!(d.attempt, 5);
}

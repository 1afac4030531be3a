//! Retries with backoff and the dead-letter queue.

use std::time::Duration;

use eventbus_tests::v1::{self, CreateSubscriptionRequest};
use eventbus_tests::TestServer;
use tonic::Code;

use crate::support::dead_letters as list;
use crate::support::*;

async fn create_sub(
    server: &TestServer,
    topic: &str,
    sub: &str,
    max_attempts: u32,
    ack_deadline: f64,
) {
    server
        .admin()
        .create_subscription(CreateSubscriptionRequest {
            topic: topic.into(),
            subscription: sub.into(),
            max_delivery_attempts: Some(max_attempts),
            ack_deadline: Some(duration(ack_deadline)),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn nack(
    server: &TestServer,
    topic: &str,
    sub: &str,
    d: &v1::Delivery,
    reason: &str,
    dead_letter: bool,
) {
    server
        .events()
        .nack(v1::NackRequest {
            topic: topic.into(),
            subscription: sub.into(),
            ack_ids: vec![d.ack_id.clone()],
            reason: reason.into(),
            dead_letter,
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn stats(server: &TestServer, topic: &str, sub: &str) -> v1::SubscriptionStats {
    subscription_stats(&mut server.admin(), topic, sub).await
}

#[tokio::test]
async fn exhausted_attempts_move_the_event_to_the_dlq() {
    let server = TestServer::start().await;
    create_sub(&server, "t", "s", 2, 30.0).await;
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        vec![
            event("k", "order.created", "poison"),
            event("k2", "order.created", "fine"),
        ],
    )
    .await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let got = recv_n(&mut stream, 2).await;
    let (poison, fine): (Vec<_>, Vec<_>) = got.into_iter().partition(|d| payload(d) == "poison");
    ack(&mut events, "t", "s", &fine).await;
    nack(&server, "t", "s", &poison[0], "db down", false).await;
    let again = recv_n(&mut stream, 1).await.remove(0);
    assert_eq!(again.delivery_attempt, 2);
    nack(&server, "t", "s", &again, "still down", false).await;
    expect_silence(&mut stream, Duration::from_millis(500)).await;

    let dls = list(&server, "t", "s").await;
    assert_eq!(dls.len(), 1);
    let dl = &dls[0];
    assert_eq!(dl.reason, "still down");
    assert_eq!(dl.delivery_attempts, 2);
    assert_eq!(dl.redrive_count, 0);
    let ev = dl.event.as_ref().unwrap();
    assert_eq!(&ev.payload[..], b"poison");
    assert_eq!(ev.offset, poison[0].event.as_ref().unwrap().offset);
    assert_eq!(ev.topic, "t");
    assert!(
        dl.first_delivery_time.is_some()
            && dl.last_delivery_time.is_some()
            && dl.dead_letter_time.is_some()
    );

    let s = stats(&server, "t", "s").await;
    assert_eq!((s.dead_letter_count, s.dead_lettered, s.backlog), (1, 1, 0));
    assert!(s.oldest_dead_letter_age.is_some());

    let one = server
        .admin()
        .get_dead_letter(v1::GetDeadLetterRequest {
            topic: "t".into(),
            subscription: "s".into(),
            id: dl.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letter
        .unwrap();
    assert_eq!(&one, dl);
}

#[tokio::test]
async fn nack_with_dead_letter_skips_the_retries() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        vec![event("", "user.signup", "bad-email")],
    )
    .await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let d = recv_n(&mut stream, 1).await.remove(0);
    nack(&server, "t", "s", &d, "validation: bad email", true).await;
    expect_silence(&mut stream, Duration::from_millis(300)).await;
    let dls = list(&server, "t", "s").await;
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0].reason, "validation: bad email");
    assert_eq!(dls[0].delivery_attempts, 1);
}

#[tokio::test]
async fn an_expired_last_attempt_is_dead_lettered_with_the_deadline_reason() {
    let server = TestServer::start().await;
    create_sub(&server, "t", "s", 1, 1.0).await;
    let mut events = server.events();
    publish(&mut events, "t", vec![event("", "x", "slow")]).await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    recv_n(&mut stream, 1).await;
    tokio::time::timeout(PATIENCE, async {
        while list(&server, "t", "s").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("dead-lettered after the deadline");
    assert_eq!(
        list(&server, "t", "s").await[0].reason,
        "ack deadline exceeded"
    );
    expect_silence(&mut stream, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn dead_letters_survive_a_restart_and_can_be_purged() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        (0..5)
            .map(|i| {
                event(
                    "",
                    if i % 2 == 0 { "a.even" } else { "b.odd" },
                    format!("{i}"),
                )
            })
            .collect(),
    )
    .await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    for d in recv_n(&mut stream, 5).await {
        nack(
            &server,
            "t",
            "s",
            &d,
            &format!("reason-{}", payload(&d)),
            true,
        )
        .await;
    }
    drop(stream);
    let server = server.restart(|_| {}).await;
    assert_eq!(list(&server, "t", "s").await.len(), 5);
    assert_eq!(stats(&server, "t", "s").await.dead_letter_count, 5);

    // Paging returns every entry once.
    let mut admin = server.admin();
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let page = admin
            .list_dead_letters(v1::ListDeadLettersRequest {
                topic: "t".into(),
                subscription: "s".into(),
                page_size: 2,
                page_token: token.clone(),
                filter: None,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.dead_letters.into_iter().map(|d| d.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);

    let purge = |filter: Option<v1::DeadLetterFilter>, all: bool, dry_run: bool| {
        v1::PurgeDeadLettersRequest {
            topic: "t".into(),
            subscription: "s".into(),
            ids: vec![],
            filter,
            all,
            dry_run,
        }
    };
    let by_type = Some(v1::DeadLetterFilter {
        types: vec!["a.*".into()],
        ..Default::default()
    });
    let dry = admin
        .purge_dead_letters(purge(by_type.clone(), false, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.count, 3, "a dry run counts the three a.even entries");
    assert_eq!(
        list(&server, "t", "s").await.len(),
        5,
        "a dry run changes nothing"
    );
    let done = admin
        .purge_dead_letters(purge(by_type, false, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.count, 3);
    let left = list(&server, "t", "s").await;
    assert!(left
        .iter()
        .all(|d| d.event.as_ref().unwrap().r#type == "b.odd"));
    let by_id = admin
        .purge_dead_letters(v1::PurgeDeadLettersRequest {
            ids: vec![left[0].id.clone()],
            ..purge(None, false, false)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.count, 1);
    let rest = admin
        .purge_dead_letters(purge(None, true, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.count, 1);
    assert_eq!(stats(&server, "t", "s").await.dead_letter_count, 0);
}

#[tokio::test]
async fn retry_policy_delays_redelivery() {
    let server = TestServer::start().await;
    server
        .admin()
        .create_subscription(CreateSubscriptionRequest {
            topic: "t".into(),
            subscription: "s".into(),
            retry_policy: Some(v1::RetryPolicy {
                min_backoff: Some(duration(1.0)),
                max_backoff: Some(duration(2.0)),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = server.events();
    publish(&mut events, "t", vec![event("", "x", "retry")]).await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let d = recv_n(&mut stream, 1).await.remove(0);
    nack(&server, "t", "s", &d, "", false).await;
    // min_backoff is a floor: nothing comes back before it.
    expect_silence(&mut stream, Duration::from_millis(800)).await;
    let again = recv_n(&mut stream, 1).await.remove(0);
    assert_eq!(again.delivery_attempt, 2);
}

#[tokio::test]
async fn dead_letter_bad_input() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(&mut events, "t", vec![event("", "x", "p")]).await;
    let _s = subscribe(&mut events, "t", "s", 10).await;
    let mut admin = server.admin();
    let get = |id: &str| v1::GetDeadLetterRequest {
        topic: "t".into(),
        subscription: "s".into(),
        id: id.into(),
    };
    assert_eq!(
        admin
            .get_dead_letter(get("12345"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        admin.get_dead_letter(get("nope")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let none = v1::PurgeDeadLettersRequest {
        topic: "t".into(),
        subscription: "s".into(),
        ..Default::default()
    };
    assert_eq!(
        admin.purge_dead_letters(none).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let bad_pattern = v1::ListDeadLettersRequest {
        topic: "t".into(),
        subscription: "s".into(),
        filter: Some(v1::DeadLetterFilter {
            types: vec!["a.>.b".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        admin
            .list_dead_letters(bad_pattern)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
}

async fn redrive(server: &TestServer, selector: v1::RedriveDeadLettersRequest) -> u64 {
    server
        .admin()
        .redrive_dead_letters(selector)
        .await
        .unwrap()
        .into_inner()
        .count
}

fn redrive_req() -> v1::RedriveDeadLettersRequest {
    v1::RedriveDeadLettersRequest {
        topic: "t".into(),
        subscription: "s".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn redrive_sends_dead_letters_back_once_with_attempts_reset() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        (0..4)
            .map(|i| {
                event(
                    "",
                    if i < 3 { "img.resize" } else { "img.other" },
                    format!("{i}"),
                )
            })
            .collect(),
    )
    .await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    for d in recv_n(&mut stream, 4).await {
        nack(&server, "t", "s", &d, "bug", true).await;
    }
    assert_eq!(list(&server, "t", "s").await.len(), 4);

    // A dry run moves nothing.
    let dry = redrive(
        &server,
        v1::RedriveDeadLettersRequest {
            all: true,
            dry_run: true,
            ..redrive_req()
        },
    )
    .await;
    assert_eq!(dry, 4);
    assert_eq!(list(&server, "t", "s").await.len(), 4);
    expect_silence(&mut stream, Duration::from_millis(300)).await;

    // Redrive only the type whose handler was fixed.
    let filter = Some(v1::DeadLetterFilter {
        types: vec!["img.resize".into()],
        ..Default::default()
    });
    assert_eq!(
        redrive(
            &server,
            v1::RedriveDeadLettersRequest {
                filter,
                ..redrive_req()
            }
        )
        .await,
        3
    );
    let back = recv_n(&mut stream, 3).await;
    assert!(back.iter().all(|d| d.delivery_attempt == 1));
    assert!(back
        .iter()
        .all(|d| d.event.as_ref().unwrap().r#type == "img.resize"));
    assert_eq!(list(&server, "t", "s").await.len(), 1);

    // Failing again puts it back in the DLQ with its redrive count kept.
    nack(&server, "t", "s", &back[0], "still broken", true).await;
    ack(&mut events, "t", "s", &back[1..]).await;
    let dls = list(&server, "t", "s").await;
    let again = dls
        .iter()
        .find(|d| d.reason == "still broken")
        .expect("back in the DLQ");
    assert_eq!(again.redrive_count, 1);
    expect_silence(&mut stream, Duration::from_millis(300)).await;
    let s = stats(&server, "t", "s").await;
    assert_eq!((s.dead_letter_count, s.backlog), (2, 0));
}

#[tokio::test]
async fn redriven_events_survive_a_restart_before_delivery() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(&mut events, "t", vec![event("", "x", "p")]).await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let d = recv_n(&mut stream, 1).await.remove(0);
    nack(&server, "t", "s", &d, "bug", true).await;
    drop(stream);
    assert_eq!(
        redrive(
            &server,
            v1::RedriveDeadLettersRequest {
                all: true,
                ..redrive_req()
            }
        )
        .await,
        1
    );
    let server = server.restart(|_| {}).await;
    let mut events = server.events();
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let back = recv_n(&mut stream, 1).await;
    assert_eq!(payload(&back[0]), "p");
    ack(&mut events, "t", "s", &back).await;
    drop(stream);
    // Acked: gone for good, also after another restart.
    let server = server.restart(|_| {}).await;
    let mut events = server.events();
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    expect_silence(&mut stream, Duration::from_millis(500)).await;
    assert!(list(&server, "t", "s").await.is_empty());
}

/// Issue 11, defect 1: dead-letter seqs came from "highest stored key + 1"
/// at start, so after a purge (or a redrive) emptied the queue and the server
/// restarted, a new dead letter got a purged entry's id back, and one still
/// pending in the redrive queue had its entry overwritten.
#[tokio::test]
async fn dead_letter_ids_are_never_reused_across_purge_redrive_and_restart() {
    let server = TestServer::start().await;
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        vec![event("", "x", "first"), event("", "x", "second")],
    )
    .await;
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let got = recv_n(&mut stream, 2).await;
    let (first, second): (Vec<_>, Vec<_>) = got.into_iter().partition(|d| payload(d) == "first");
    nack(&server, "t", "s", &first[0], "bug", true).await;
    let purged_id = list(&server, "t", "s").await[0].id.clone();
    let purge_all = v1::PurgeDeadLettersRequest {
        topic: "t".into(),
        subscription: "s".into(),
        all: true,
        ..Default::default()
    };
    server
        .admin()
        .purge_dead_letters(purge_all.clone())
        .await
        .unwrap();
    drop(stream);

    // An empty queue across a restart: the next id is still a new one, and
    // the saved id of the purged entry names nothing.
    let server = server.restart(|_| {}).await;
    let mut events = server.events();
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let second_again = recv_n(&mut stream, 1).await;
    assert_eq!(payload(&second_again[0]), "second");
    nack(&server, "t", "s", &second_again[0], "bug", true).await;
    let dls = list(&server, "t", "s").await;
    assert_eq!(dls.len(), 1);
    assert_ne!(dls[0].id, purged_id, "a purged entry's id came back");
    let stale = server
        .admin()
        .purge_dead_letters(v1::PurgeDeadLettersRequest {
            ids: vec![purged_id],
            all: false,
            ..purge_all.clone()
        })
        .await;
    match stale {
        Ok(r) => assert_eq!(r.into_inner().count, 0, "the old id purged a new entry"),
        Err(s) => assert_eq!(s.code(), Code::NotFound, "{s:?}"),
    }
    assert_eq!(list(&server, "t", "s").await.len(), 1);

    // Redrive it (its seq now names a redrive-queue entry), restart with an
    // empty DLQ, dead-letter it again and redrive once more: it must still
    // come back exactly once, nothing overwritten.
    drop(stream);
    let all = v1::RedriveDeadLettersRequest {
        all: true,
        ..redrive_req()
    };
    assert_eq!(redrive(&server, all.clone()).await, 1);
    let server = server.restart(|_| {}).await;
    let mut events = server.events();
    let mut stream = subscribe(&mut events, "t", "s", 10).await;
    let back = recv_n(&mut stream, 1).await;
    assert_eq!(payload(&back[0]), "second");
    nack(&server, "t", "s", &back[0], "still a bug", true).await;
    assert_eq!(redrive(&server, all).await, 1);
    let last = recv_n(&mut stream, 1).await;
    assert_eq!(payload(&last[0]), "second");
    ack(&mut events, "t", "s", &last).await;
    expect_silence(&mut stream, Duration::from_millis(300)).await;
    let s = stats(&server, "t", "s").await;
    assert_eq!((s.dead_letter_count, s.backlog), (0, 0));
    drop(second);
}

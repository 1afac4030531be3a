//! Every request of `eventbus.v1.AdminService`: prost decode, then the
//! handler's broker-free parse step (`eventbus_server::grpc::parse`) and the
//! broker's pure checks (names, filter patterns), as a server runs them.
//!
//! The first byte picks the RPC (`% 18`, in the order of the service); the
//! rest is the request message.
//! Properties: decoding stays within the request budget, a rejection is
//! INVALID_ARGUMENT with a message, and an accepted request converts without
//! losing or changing a field (exact times and durations, no overflow or
//! truncation, filters that convert back to what was sent).
#![no_main]

use eventbus_fuzz::{
    check_name, decode_request, exact_duration, exact_millis, expect_invalid_input, parsed,
    with_mode,
};
use eventbus_log::{DeadLetterQuery, DeadLetterSelector};
use eventbus_log::{Filter, Ordering};
use eventbus_log::{RetryPolicy, SeekTarget, StartPosition};
use eventbus_proto::v1::{
    self, seek_subscription_request::Target, CreateBackupRequest, CreateSubscriptionRequest,
    CreateTopicRequest, DeadLetterFilter, DeleteSubscriptionRequest, DeleteTopicRequest,
    GetDeadLetterRequest, GetStatusRequest, GetSubscriptionRequest, GetTopicRequest,
    ListDeadLettersRequest, ListSubscriptionsRequest, ListTopicsRequest, PauseSubscriptionRequest,
    PurgeDeadLettersRequest, RedriveDeadLettersRequest, ResumeSubscriptionRequest,
    SeekSubscriptionRequest, UpdateSubscriptionRequest,
};
use eventbus_server::grpc::parse;
use prost::Message;

eventbus_fuzz::fuzz_modes!(
    seeds: seeds,
    modes: [
        create_topic,
        get_topic,
        list_topics,
        delete_topic,
        create_subscription,
        get_subscription,
        list_subscriptions,
        update_subscription,
        delete_subscription,
        pause_subscription,
        resume_subscription,
        seek_subscription,
        list_dead_letters,
        get_dead_letter,
        redrive_dead_letters,
        purge_dead_letters,
        create_backup,
        get_status,
    ]
);

fn get_topic(body: &[u8]) {
    names_only::<GetTopicRequest>(body, |r| (&r.topic, None));
}

fn delete_topic(body: &[u8]) {
    names_only::<DeleteTopicRequest>(body, |r| (&r.topic, None));
}

fn get_subscription(body: &[u8]) {
    names_only::<GetSubscriptionRequest>(body, |r| (&r.topic, Some(&r.subscription)));
}

fn delete_subscription(body: &[u8]) {
    names_only::<DeleteSubscriptionRequest>(body, |r| (&r.topic, Some(&r.subscription)));
}

fn pause_subscription(body: &[u8]) {
    names_only::<PauseSubscriptionRequest>(body, |r| (&r.topic, Some(&r.subscription)));
}

fn resume_subscription(body: &[u8]) {
    names_only::<ResumeSubscriptionRequest>(body, |r| (&r.topic, Some(&r.subscription)));
}

fn redrive_dead_letters(body: &[u8]) {
    if let Some(r) = decode_request::<RedriveDeadLettersRequest>(body) {
        dead_letter_selection(&r.topic, &r.subscription, r.ids, r.filter, r.all);
    }
}

fn purge_dead_letters(body: &[u8]) {
    if let Some(r) = decode_request::<PurgeDeadLettersRequest>(body) {
        dead_letter_selection(&r.topic, &r.subscription, r.ids, r.filter, r.all);
    }
}

/// The server checks a backup's directory against the file system.
fn create_backup(body: &[u8]) {
    decode_request::<CreateBackupRequest>(body);
}

fn get_status(body: &[u8]) {
    decode_request::<GetStatusRequest>(body);
}

/// RPCs whose only client-controlled checks are the names.
fn names_only<M: Message + Default>(body: &[u8], names: impl Fn(&M) -> (&String, Option<&String>)) {
    let Some(req) = decode_request::<M>(body) else {
        return;
    };
    let (topic, subscription) = names(&req);
    check_name("topic", topic);
    if let Some(s) = subscription {
        check_name("subscription", s);
    }
}

fn create_topic(body: &[u8]) {
    let Some(req) = decode_request::<CreateTopicRequest>(body) else {
        return;
    };
    check_name("topic", &req.topic);
    parsed(parse::create_topic(&req), |config| {
        assert_eq!(config.partitions, req.partitions);
        let wire = req.retention.unwrap_or_default();
        let max_age = wire
            .max_age
            .as_ref()
            .map(exact_duration)
            .filter(|d| !d.is_zero());
        assert_eq!(
            config.retention.max_age_ms.map(u128::from),
            max_age.map(|d| d.as_millis()),
            "retention.max_age changed in conversion"
        );
        assert_eq!(
            config.retention.max_bytes,
            Some(wire.max_bytes).filter(|b| *b > 0)
        );
    });
}

fn list_topics(body: &[u8]) {
    let Some(req) = decode_request::<ListTopicsRequest>(body) else {
        return;
    };
    page_request(req.page_size, &req.page_token);
}

fn list_subscriptions(body: &[u8]) {
    let Some(req) = decode_request::<ListSubscriptionsRequest>(body) else {
        return;
    };
    check_name("topic", &req.topic);
    page_request(req.page_size, &req.page_token);
}

fn page_request(page_size: u32, token: &str) {
    let limits = parse::Limits::default();
    assert!((1..=limits.max_page_size).contains(&limits.page_size(page_size)));
    parsed(parse::decode_name_token(token), |after| {
        if let Some(name) = after {
            assert_eq!(parse::name_token(&name), token);
        }
    });
}

/// The filter checks the broker runs before it stores a filter, and the
/// conversion back to the wire (GetSubscription) gives what was sent.
fn filter_round_trip(filter: &Filter, wire: Option<&v1::Filter>) {
    if let Err(e) = filter.validate(&parse::Limits::default()) {
        expect_invalid_input(&e);
    }
    let sent = wire.filter(|f| !f.types.is_empty() || !f.attributes.is_empty());
    assert_eq!(parse::filter_to_proto(filter).as_ref(), sent);
}

fn ordering_of(wire: i32) -> Ordering {
    if wire == v1::Ordering::Key as i32 {
        Ordering::Key
    } else {
        Ordering::None
    }
}

fn retry_policy_matches(policy: Option<RetryPolicy>, wire: Option<&v1::RetryPolicy>) {
    assert_eq!(policy.is_some(), wire.is_some());
    if let (Some(p), Some(w)) = (policy, wire) {
        assert_eq!(p.min_backoff, w.min_backoff.as_ref().map(exact_duration));
        assert_eq!(p.max_backoff, w.max_backoff.as_ref().map(exact_duration));
    }
}

fn create_subscription(body: &[u8]) {
    let Some(req) = decode_request::<CreateSubscriptionRequest>(body) else {
        return;
    };
    check_name("topic", &req.topic);
    check_name("subscription", &req.subscription);
    parsed(parse::create_subscription(&req), |new| {
        let latest = req.start_position == v1::StartPosition::Latest as i32;
        assert_eq!(new.start_position == StartPosition::Latest, latest);
        assert_eq!(
            new.ack_deadline,
            req.ack_deadline.as_ref().map(exact_duration)
        );
        retry_policy_matches(new.retry_policy, req.retry_policy.as_ref());
        assert_eq!(new.max_delivery_attempts, req.max_delivery_attempts);
        assert_eq!(new.ordering, ordering_of(req.ordering));
        filter_round_trip(&new.filter, req.filter.as_ref());
    });
}

fn update_subscription(body: &[u8]) {
    let Some(req) = decode_request::<UpdateSubscriptionRequest>(body) else {
        return;
    };
    check_name("topic", &req.topic);
    check_name("subscription", &req.subscription);
    parsed(parse::update_subscription(&req), |update| {
        let paths = &req.update_mask.as_ref().expect("a mask is required").paths;
        let named = |p: &str| paths.iter().any(|q| q == p);
        assert_eq!(update.ack_deadline.is_some(), named("ack_deadline"));
        if let Some(d) = update.ack_deadline {
            assert_eq!(d, req.ack_deadline.as_ref().map(exact_duration));
        }
        assert_eq!(update.retry_policy.is_some(), named("retry_policy"));
        if let Some(p) = update.retry_policy {
            retry_policy_matches(p, req.retry_policy.as_ref());
        }
        assert_eq!(
            update.max_delivery_attempts.is_some(),
            named("max_delivery_attempts")
        );
        if let Some(m) = update.max_delivery_attempts {
            assert_eq!(m, req.max_delivery_attempts);
        }
        assert_eq!(update.filter.is_some(), named("filter"));
        if let Some(f) = &update.filter {
            filter_round_trip(f, req.filter.as_ref());
        }
        assert_eq!(update.ordering.is_some(), named("ordering"));
        if let Some(o) = update.ordering {
            assert_eq!(o, ordering_of(req.ordering));
        }
    });
}

fn seek_subscription(body: &[u8]) {
    let Some(req) = decode_request::<SeekSubscriptionRequest>(body) else {
        return;
    };
    check_name("topic", &req.topic);
    check_name("subscription", &req.subscription);
    parsed(
        parse::seek_subscription(req.target.clone()),
        |target| match (target, req.target.expect("a target is required")) {
            (SeekTarget::Earliest | SeekTarget::Latest, Target::StartPosition(_)) => {}
            (SeekTarget::Time(ms), Target::Time(t)) => {
                assert_eq!(
                    i128::from(ms),
                    exact_millis(&t),
                    "seek time changed in conversion"
                )
            }
            (SeekTarget::Offsets(got), Target::Offsets(o)) => {
                let sent: Vec<_> = o.offsets.iter().map(|p| (p.partition, p.offset)).collect();
                assert_eq!(got, sent);
            }
            (got, sent) => panic!("{sent:?} became {got:?}"),
        },
    );
}

/// The query checks the broker runs, and exact times.
fn dead_letter_query_matches(query: &DeadLetterQuery, wire: &DeadLetterFilter) {
    if let Err(e) = query.validate(&parse::Limits::default()) {
        expect_invalid_input(&e);
    }
    assert_eq!(query.types, wire.types);
    assert_eq!(query.reason_contains, wire.reason_contains);
    assert_eq!(
        query.start_ms.map(i128::from),
        wire.start_time.as_ref().map(exact_millis)
    );
    assert_eq!(
        query.end_ms.map(i128::from),
        wire.end_time.as_ref().map(exact_millis)
    );
}

fn list_dead_letters(body: &[u8]) {
    let Some(req) = decode_request::<ListDeadLettersRequest>(body) else {
        return;
    };
    check_name("topic", &req.topic);
    check_name("subscription", &req.subscription);
    let limits = parse::Limits::default();
    parsed(parse::list_dead_letters(&req, &limits), |page| {
        assert!((1..=limits.max_page_size).contains(&page.limit));
        assert_eq!(page.after.is_some(), !req.page_token.is_empty());
        dead_letter_query_matches(&page.query, &req.filter.unwrap_or_default());
    });
}

fn get_dead_letter(body: &[u8]) {
    let Some(req) = decode_request::<GetDeadLetterRequest>(body) else {
        return;
    };
    check_name("topic", &req.topic);
    check_name("subscription", &req.subscription);
    parsed(parse::dead_letter_id("id", &req.id), |seq| {
        assert_eq!(req.id.parse::<u64>(), Ok(seq));
    });
}

fn dead_letter_selection(
    topic: &str,
    subscription: &str,
    ids: Vec<String>,
    filter: Option<DeadLetterFilter>,
    all: bool,
) {
    check_name("topic", topic);
    check_name("subscription", subscription);
    let (count, wire_filter) = (ids.len(), filter.clone());
    parsed(
        parse::dead_letter_selector(ids, filter, all),
        |selector| match selector {
            DeadLetterSelector::Ids(seqs) => assert_eq!(seqs.len(), count),
            DeadLetterSelector::Filter(q) => {
                dead_letter_query_matches(&q, &wire_filter.expect("a filter was sent"))
            }
            DeadLetterSelector::All => assert!(all),
        },
    );
}

/// Well-formed requests, encoded by prost.
fn seeds() -> Vec<Vec<u8>> {
    let (topic, subscription) = ("orders".to_string(), "billing".to_string());
    let seconds = |s| {
        Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        })
    };
    let filter = v1::Filter {
        types: vec!["order.*".into(), "invoice.>".into()],
        attributes: vec![v1::AttributeCondition {
            key: "region".into(),
            condition: Some(v1::attribute_condition::Condition::In(v1::StringList {
                values: vec!["eu".into(), "us".into()],
            })),
        }],
    };
    let dlq_filter = DeadLetterFilter {
        types: vec!["order.>".into()],
        reason_contains: "timeout".into(),
        start_time: Some(parse::millis_to_timestamp(1_700_000_000_000)),
        end_time: None,
    };
    vec![
        with_mode(
            0,
            &CreateTopicRequest {
                topic: topic.clone(),
                partitions: 4,
                retention: Some(v1::Retention {
                    max_age: seconds(86_400),
                    max_bytes: 1 << 30,
                }),
            }
            .encode_to_vec(),
        ),
        with_mode(
            2,
            &ListTopicsRequest {
                page_size: 10,
                page_token: parse::name_token("orders"),
            }
            .encode_to_vec(),
        ),
        with_mode(
            4,
            &CreateSubscriptionRequest {
                topic: topic.clone(),
                subscription: subscription.clone(),
                start_position: v1::StartPosition::Latest as i32,
                ack_deadline: seconds(30),
                retry_policy: Some(v1::RetryPolicy {
                    min_backoff: seconds(1),
                    max_backoff: seconds(60),
                }),
                max_delivery_attempts: Some(5),
                filter: Some(filter.clone()),
                ordering: v1::Ordering::Key as i32,
            }
            .encode_to_vec(),
        ),
        with_mode(
            7,
            &UpdateSubscriptionRequest {
                topic: topic.clone(),
                subscription: subscription.clone(),
                ack_deadline: seconds(60),
                retry_policy: None,
                max_delivery_attempts: Some(3),
                filter: Some(filter),
                ordering: 0,
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["ack_deadline".into(), "filter".into()],
                }),
            }
            .encode_to_vec(),
        ),
        with_mode(
            11,
            &SeekSubscriptionRequest {
                topic: topic.clone(),
                subscription: subscription.clone(),
                target: Some(Target::Time(parse::millis_to_timestamp(1_700_000_000_000))),
            }
            .encode_to_vec(),
        ),
        with_mode(
            12,
            &ListDeadLettersRequest {
                topic: topic.clone(),
                subscription: subscription.clone(),
                page_size: 50,
                page_token: parse::seq_token(17),
                filter: Some(dlq_filter.clone()),
            }
            .encode_to_vec(),
        ),
        with_mode(
            13,
            &GetDeadLetterRequest {
                topic: topic.clone(),
                subscription: subscription.clone(),
                id: "17".into(),
            }
            .encode_to_vec(),
        ),
        with_mode(
            14,
            &RedriveDeadLettersRequest {
                topic: topic.clone(),
                subscription: subscription.clone(),
                ids: Vec::new(),
                filter: Some(dlq_filter),
                all: false,
                dry_run: true,
                max_per_second: 100,
            }
            .encode_to_vec(),
        ),
        with_mode(
            15,
            &PurgeDeadLettersRequest {
                topic,
                subscription,
                ids: vec!["3".into(), "4".into()],
                filter: None,
                all: false,
                dry_run: false,
            }
            .encode_to_vec(),
        ),
    ]
}

//! Authentication, grants, tenants and sealed ack ids (issue 13), over real
//! gRPC: every attack gets its exact status, and the server keeps serving.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use eventbus_server::auth::api_key::hash_key_hex;
use eventbus_server::auth::{ApiKeyConfig, AuthConfig, Grant, JwtConfig};
use eventbus_server::Config;
use eventbus_tests::v1::admin_service_client::AdminServiceClient;
use eventbus_tests::v1::event_service_client::EventServiceClient;
use eventbus_tests::v1::{self, PublishRequest, SubscribeRequest};
use eventbus_tests::{DataDir, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

use crate::support::{assert_status, event, recv_n, PATIENCE};

const ISSUER: &str = "https://issuer.eventbus.test";
const AUDIENCE: &str = "eventbus";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/jwt")
        .join(name)
}

fn grants(list: &[&str]) -> Vec<Grant> {
    list.iter()
        .map(|g| Grant::try_from(g.to_string()).unwrap())
        .collect()
}

fn key(principal: &str, secret: &str, tenant: Option<&str>, g: &[&str]) -> ApiKeyConfig {
    ApiKeyConfig {
        principal: principal.into(),
        sha256: hash_key_hex(secret),
        tenant: tenant.map(str::to_string),
        grants: grants(g),
    }
}

/// Keys: a publisher and a subscriber of `orders.>`, a global admin, and
/// the admins of tenants `acme` and `globex`.
fn auth_config(c: &mut Config) {
    c.auth = AuthConfig {
        api_keys: vec![
            key("pub", "key-pub-000000000000", None, &["publish:orders.>"]),
            key("sub", "key-sub-000000000000", None, &["subscribe:orders.>"]),
            key(
                "sub2",
                "key-sub2-00000000000",
                None,
                &["subscribe:orders.>"],
            ),
            key("ops", "key-ops-000000000000", None, &["admin:>"]),
            key("acme", "key-acme-00000000000", Some("acme"), &["admin:>"]),
            key(
                "globex",
                "key-globex-000000000",
                Some("globex"),
                &["admin:>"],
            ),
        ],
        jwt: Some(JwtConfig {
            jwks_file: Some(fixture("jwks.json")),
            jwks_url: None,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway_secs: 5,
            tenant_claim: "tenant".into(),
            grants_claim: "eventbus_grants".into(),
        }),
        ..AuthConfig::default()
    };
}

async fn server() -> TestServer {
    TestServer::start_with(DataDir::Fresh, auth_config).await
}

/// `msg` with `header: value`.
fn with<T>(msg: T, header: &'static str, value: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert(header, MetadataValue::try_from(value).unwrap());
    req
}

fn as_key<T>(msg: T, key: &str) -> Request<T> {
    with(msg, "x-api-key", key)
}

fn publish_req(topic: &str) -> PublishRequest {
    PublishRequest {
        topic: topic.into(),
        events: vec![event("k", "order.created", "x")],
    }
}

async fn publish_as(s: &TestServer, key: &str, topic: &str) -> Result<(), tonic::Status> {
    s.events()
        .publish(as_key(publish_req(topic), key))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let s = server().await;
    let mut events = s.events();
    // None at all.
    assert_status(
        events.publish(publish_req("orders.a")).await,
        Code::Unauthenticated,
        "no credentials",
    );
    // A wrong key; a revoked one is the same: its hash is not configured.
    assert_status(
        publish_as(&s, "key-pub-000000000001", "orders.a").await,
        Code::Unauthenticated,
        "API key",
    );
    // Something that is not a bearer token.
    assert_status(
        events
            .publish(with(publish_req("orders.a"), "authorization", "Basic abc"))
            .await,
        Code::Unauthenticated,
        "Bearer",
    );
    // Health needs no credentials (Kubernetes probes send none).
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, 1, "SERVING");
    // And the right key works.
    publish_as(&s, "key-pub-000000000000", "orders.a")
        .await
        .unwrap();
}

#[tokio::test]
async fn grants_decide_publish_subscribe_and_admin() {
    let s = server().await;
    publish_as(&s, "key-pub-000000000000", "orders.a")
        .await
        .unwrap();
    assert_status(
        publish_as(&s, "key-pub-000000000000", "payments").await,
        Code::PermissionDenied,
        "publish:payments",
    );
    assert_status(
        publish_as(&s, "key-sub-000000000000", "orders.a").await,
        Code::PermissionDenied,
        "publish:orders.a",
    );
    let subscribe = SubscribeRequest {
        topic: "orders.a".into(),
        subscription: "s".into(),
        max_in_flight: 10,
    };
    assert_status(
        s.events()
            .subscribe(as_key(subscribe.clone(), "key-pub-000000000000"))
            .await,
        Code::PermissionDenied,
        "subscribe:orders.a",
    );
    s.events()
        .subscribe(as_key(subscribe, "key-sub-000000000000"))
        .await
        .unwrap();

    // Every admin RPC without `admin` (the subscriber has only subscribe).
    let denied = admin_calls_as(&s, "key-sub-000000000000").await;
    assert_eq!(denied.len(), 10);
    for (rpc, res) in denied {
        let err = res.expect_err(rpc);
        assert_eq!(err.code(), Code::PermissionDenied, "{rpc}: {err:?}");
    }
    // The global admin may make all of them (some fail on their own terms,
    // none for a missing grant).
    for (rpc, res) in admin_calls_as(&s, "key-ops-000000000000").await {
        if let Err(err) = res {
            assert_ne!(err.code(), Code::PermissionDenied, "{rpc}: {err:?}");
        }
    }
    // The server still serves.
    publish_as(&s, "key-pub-000000000000", "orders.a")
        .await
        .unwrap();
}

fn ok<T>(r: Result<T, tonic::Status>) -> Result<(), tonic::Status> {
    r.map(|_| ())
}

/// Each mutating admin RPC on topic `orders.a` (subscription `s`), as `key`.
// The macro fills the same fields of requests with more and with no others.
#[allow(clippy::needless_update)]
async fn admin_calls_as(
    s: &TestServer,
    key: &str,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut a: AdminServiceClient<_> = s.admin();
    let (topic, subscription) = ("orders.a".to_string(), "s".to_string());
    // One call: its name, and the outcome of `method(request)` as `key`.
    macro_rules! call {
        ($name:literal, $method:ident, $request:expr) => {
            ($name, ok(a.$method(as_key($request, key)).await))
        };
    }
    macro_rules! on_subscription {
        ($name:literal, $method:ident, $request:ident) => {
            call!(
                $name,
                $method,
                v1::$request {
                    topic: topic.clone(),
                    subscription: subscription.clone(),
                    ..Default::default()
                }
            )
        };
    }
    vec![
        call!(
            "CreateTopic",
            create_topic,
            v1::CreateTopicRequest {
                topic: "orders.new".into(),
                ..Default::default()
            }
        ),
        on_subscription!(
            "UpdateSubscription",
            update_subscription,
            UpdateSubscriptionRequest
        ),
        on_subscription!(
            "PauseSubscription",
            pause_subscription,
            PauseSubscriptionRequest
        ),
        on_subscription!(
            "ResumeSubscription",
            resume_subscription,
            ResumeSubscriptionRequest
        ),
        on_subscription!(
            "SeekSubscription",
            seek_subscription,
            SeekSubscriptionRequest
        ),
        on_subscription!(
            "RedriveDeadLetters",
            redrive_dead_letters,
            RedriveDeadLettersRequest
        ),
        on_subscription!(
            "PurgeDeadLetters",
            purge_dead_letters,
            PurgeDeadLettersRequest
        ),
        call!(
            "CreateBackup",
            create_backup,
            v1::CreateBackupRequest {
                dir: "/nonexistent-eventbus-backup".into(),
            }
        ),
        on_subscription!(
            "DeleteSubscription",
            delete_subscription,
            DeleteSubscriptionRequest
        ),
        call!(
            "DeleteTopic",
            delete_topic,
            v1::DeleteTopicRequest {
                topic: topic.clone()
            }
        ),
    ]
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> serde_json::Value {
    json!({
        "sub": sub, "iss": ISSUER, "aud": AUDIENCE,
        "exp": now() + 600, "eventbus_grants": ["publish:orders.>"],
    })
}

fn sign(alg: Algorithm, kid: &str, key_file: &str, claims: &serde_json::Value) -> String {
    let pem = std::fs::read(fixture(key_file)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => unreachable!("test keys are asymmetric"),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

async fn publish_with_token(s: &TestServer, token: &str) -> Result<(), tonic::Status> {
    s.events()
        .publish(with(
            publish_req("orders.a"),
            "authorization",
            &format!("Bearer {token}"),
        ))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn jwts_verify_with_their_pinned_key_and_every_forgery_is_refused() {
    let s = server().await;
    // The three algorithms, each with its own key.
    for (alg, kid, file) in [
        (Algorithm::RS256, "rsa-1", "rsa.pem"),
        (Algorithm::ES256, "ec-1", "ec.pem"),
        (Algorithm::EdDSA, "ed-1", "ed.pem"),
    ] {
        let token = sign(alg, kid, file, &claims("svc"));
        publish_with_token(&s, &token)
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
    }
    let mut c = claims("svc");
    let mut attacks: Vec<(&str, String, &str)> = vec![
        ("malformed", "not.a.jwt".into(), "well-formed"),
        ("empty", String::new(), "well-formed"),
    ];
    // alg none, unsigned.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})),
        b64(&claims("svc"))
    );
    // jsonwebtoken does not even parse a header with `alg: none`.
    attacks.push(("alg none", none, "well-formed"));
    // Signed by a key the set does not hold, under a known kid.
    attacks.push((
        "bad signature",
        sign(Algorithm::RS256, "rsa-1", "other-rsa.pem", &claims("svc")),
        "signature",
    ));
    // HS256 with the RSA public key as the HMAC secret.
    let public = std::fs::read(fixture("rsa.pub.pem")).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("rsa-1".into());
    attacks.push((
        "HS/RS confusion",
        jsonwebtoken::encode(&hs, &claims("svc"), &EncodingKey::from_secret(&public)).unwrap(),
        "algorithm",
    ));
    c["exp"] = json!(now() - 3600);
    attacks.push((
        "expired",
        sign(Algorithm::RS256, "rsa-1", "rsa.pem", &c),
        "expired",
    ));
    let mut c = claims("svc");
    c["nbf"] = json!(now() + 3600);
    attacks.push((
        "not yet valid",
        sign(Algorithm::RS256, "rsa-1", "rsa.pem", &c),
        "not valid yet",
    ));
    let mut c = claims("svc");
    c["iss"] = json!("https://evil.test");
    attacks.push((
        "wrong issuer",
        sign(Algorithm::RS256, "rsa-1", "rsa.pem", &c),
        "issuer",
    ));
    let mut c = claims("svc");
    c["aud"] = json!("someone-else");
    attacks.push((
        "wrong audience",
        sign(Algorithm::RS256, "rsa-1", "rsa.pem", &c),
        "audience",
    ));
    attacks.push((
        "unknown kid",
        sign(Algorithm::RS256, "rsa-9", "rsa.pem", &claims("svc")),
        "key id",
    ));
    for (name, token, needle) in attacks {
        let err = publish_with_token(&s, &token).await.expect_err(name);
        assert_eq!(err.code(), Code::Unauthenticated, "{name}: {err:?}");
        assert!(err.message().contains(needle), "{name}: {err:?}");
        // The refusal never echoes the token.
        if !token.is_empty() {
            assert!(!err.message().contains(&token), "{name} echoed");
        }
    }
    // Grants from the claim: no subscribe grant.
    let token = sign(Algorithm::ES256, "ec-1", "ec.pem", &claims("svc"));
    let err = s
        .events()
        .subscribe(with(
            SubscribeRequest {
                topic: "orders.a".into(),
                subscription: "s".into(),
                max_in_flight: 1,
            },
            "authorization",
            &format!("Bearer {token}"),
        ))
        .await
        .expect_err("no subscribe grant");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    publish_with_token(&s, &token).await.unwrap();
}

#[tokio::test]
async fn tenants_cannot_name_list_or_learn_of_each_other() {
    let s = server().await;
    let (acme, globex) = ("key-acme-00000000000", "key-globex-000000000");
    let mut admin = s.admin();
    let create = |topic: &str, key: &str| {
        as_key(
            v1::CreateTopicRequest {
                topic: topic.into(),
                ..Default::default()
            },
            key,
        )
    };
    admin.create_topic(create("orders", acme)).await.unwrap();
    admin.create_topic(create("secret", acme)).await.unwrap();
    // The same name in another tenant is another topic.
    admin.create_topic(create("orders", globex)).await.unwrap();
    publish_as(&s, acme, "orders").await.unwrap();

    // By name: "exists in another tenant" answers as "does not exist".
    let get = |topic: &str| {
        as_key(
            v1::GetTopicRequest {
                topic: topic.into(),
            },
            globex,
        )
    };
    let elsewhere = admin.get_topic(get("secret")).await.unwrap_err();
    let nowhere = admin.get_topic(get("never")).await.unwrap_err();
    assert_eq!(elsewhere.code(), Code::NotFound);
    assert_eq!(nowhere.code(), Code::NotFound);
    assert_eq!(
        elsewhere.message().replace("secret", "X"),
        nowhere.message().replace("never", "X")
    );
    // Names of the server's namespace cannot be written by a tenant.
    let err = admin.get_topic(get("acme/secret")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // By listing.
    let list = |key: &str| as_key(v1::ListTopicsRequest::default(), key);
    let names = |r: v1::ListTopicsResponse| -> Vec<String> {
        r.topics.into_iter().map(|t| t.name).collect()
    };
    assert_eq!(
        names(admin.list_topics(list(acme)).await.unwrap().into_inner()),
        ["orders", "secret"]
    );
    assert_eq!(
        names(admin.list_topics(list(globex)).await.unwrap().into_inner()),
        ["orders"]
    );
    // The server-wide admin sees the tenants' namespaces.
    assert_eq!(
        names(
            admin
                .list_topics(list("key-ops-000000000000"))
                .await
                .unwrap()
                .into_inner()
        ),
        ["acme/orders", "acme/secret", "globex/orders"]
    );
    // By replay: globex's "orders" is its own, empty topic.
    let topic = admin
        .get_topic(as_key(
            v1::GetTopicRequest {
                topic: "orders".into(),
            },
            globex,
        ))
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    assert_eq!(topic.name, "orders");
    let committed: u64 = topic.partition_info.iter().map(|p| p.end_offset).sum();
    assert_eq!(committed, 0, "globex sees none of acme's events");
}

#[tokio::test]
async fn an_ack_id_settles_only_for_the_principal_it_was_delivered_to() {
    let s = server().await;
    publish_as(&s, "key-pub-000000000000", "orders.a")
        .await
        .unwrap();
    let mut events: EventServiceClient<_> = s.events();
    let mut stream = events
        .clone()
        .subscribe(as_key(
            SubscribeRequest {
                topic: "orders.a".into(),
                subscription: "s".into(),
                max_in_flight: 10,
            },
            "key-sub-000000000000",
        ))
        .await
        .unwrap()
        .into_inner();
    let delivery = tokio::time::timeout(PATIENCE, recv_n(&mut stream, 1))
        .await
        .unwrap()
        .remove(0);
    let ack = |id: &str, key: &str| {
        as_key(
            v1::AckRequest {
                topic: "orders.a".into(),
                subscription: "s".into(),
                ack_ids: vec![id.to_string()],
            },
            key,
        )
    };
    // Stolen by another principal with the same grants.
    assert_status(
        events
            .ack(ack(&delivery.ack_id, "key-sub2-00000000000"))
            .await,
        Code::PermissionDenied,
        "another principal",
    );
    // Forged: one character changed.
    let mut forged = delivery.ack_id.clone().into_bytes();
    forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_status(
        events.ack(ack(&forged, "key-sub-000000000000")).await,
        Code::InvalidArgument,
        "not an ack id",
    );
    // The owner acks it.
    events
        .ack(ack(&delivery.ack_id, "key-sub-000000000000"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_principal_over_its_quota_waits_and_the_others_do_not() {
    let s = TestServer::start_with(DataDir::Fresh, |c| {
        auth_config(c);
        c.max_events_per_publish = 5;
        c.auth.quotas.publish_events_per_second = 5;
        c.auth.quotas.subscribe_streams = 1;
    })
    .await;
    let five = |topic: &str| PublishRequest {
        topic: topic.into(),
        events: (0..5).map(|_| event("k", "order.created", "x")).collect(),
    };
    let mut events = s.events();
    events
        .publish(as_key(five("orders.a"), "key-pub-000000000000"))
        .await
        .unwrap();
    let err = events
        .publish(as_key(five("orders.a"), "key-pub-000000000000"))
        .await
        .expect_err("over the burst");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("publish-events-per-second"),
        "{err:?}"
    );
    use tonic_types::StatusExt as _;
    let retry = err.get_details_retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.is_some_and(|d| !d.is_zero()), "{retry:?}");
    // Another principal's bucket is its own.
    events
        .publish(as_key(five("orders.a"), "key-ops-000000000000"))
        .await
        .unwrap();

    // One Subscribe stream at a time.
    let subscribe = |name: &str| {
        as_key(
            SubscribeRequest {
                topic: "orders.a".into(),
                subscription: name.into(),
                max_in_flight: 1,
            },
            "key-sub-000000000000",
        )
    };
    let first = events.subscribe(subscribe("s1")).await.unwrap();
    let err = events
        .subscribe(subscribe("s2"))
        .await
        .expect_err("second stream");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("subscribe-streams"), "{err:?}");
    drop(first);
    // The slot frees when the server sees the stream end.
    let reopened = tokio::time::timeout(PATIENCE, async {
        loop {
            if events.subscribe(subscribe("s2")).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "the stream slot was never freed");
}

/// Topics and subscriptions count against their creator's quota, whether
/// created explicitly or by first use; deleting one frees room; another
/// principal has its own count; the creator shows in the answers.
#[tokio::test]
async fn creation_quotas_count_what_each_principal_created() {
    let s = TestServer::start_with(DataDir::Fresh, |c| {
        auth_config(c);
        c.auth.quotas.topics = 2;
        c.auth.quotas.subscriptions = 2;
    })
    .await;
    const PUB: &str = "key-pub-000000000000";
    const OPS: &str = "key-ops-000000000000";
    let mut admin = s.admin();
    let create_topic = |topic: &str, key: &str| {
        as_key(
            v1::CreateTopicRequest {
                topic: topic.into(),
                ..Default::default()
            },
            key,
        )
    };
    // One explicit, one on first publish: two, the quota.
    let created = admin
        .create_topic(create_topic("orders.a", OPS))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.topic.unwrap().creator, "ops");
    admin
        .create_topic(create_topic("orders.b", OPS))
        .await
        .unwrap();
    publish_as(&s, PUB, "orders.c").await.unwrap();
    publish_as(&s, PUB, "orders.d").await.unwrap();
    let got = admin
        .get_topic(as_key(
            v1::GetTopicRequest {
                topic: "orders.c".into(),
            },
            OPS,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.topic.unwrap().creator, "pub");

    // A third, either way, is refused with RetryInfo, and nothing is made.
    let err = publish_as(&s, PUB, "orders.e")
        .await
        .expect_err("third topic");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("auth.quotas.topics"), "{err:?}");
    use tonic_types::StatusExt as _;
    assert!(err.get_details_retry_info().is_some(), "{err:?}");
    let err = admin
        .create_topic(create_topic("orders.e", OPS))
        .await
        .expect_err("ops' third topic");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let missing = admin
        .get_topic(as_key(
            v1::GetTopicRequest {
                topic: "orders.e".into(),
            },
            OPS,
        ))
        .await
        .expect_err("not created");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // Deleting one of ops' topics frees room for ops.
    admin
        .delete_topic(as_key(
            v1::DeleteTopicRequest {
                topic: "orders.b".into(),
            },
            OPS,
        ))
        .await
        .unwrap();
    admin
        .create_topic(create_topic("orders.e", OPS))
        .await
        .unwrap();

    // Subscriptions: two, by request or by subscribing; a third is refused.
    let create_sub = |name: &str| {
        as_key(
            v1::CreateSubscriptionRequest {
                topic: "orders.a".into(),
                subscription: name.into(),
                ..Default::default()
            },
            OPS,
        )
    };
    let sub = admin.create_subscription(create_sub("s1")).await.unwrap();
    assert_eq!(sub.into_inner().subscription.unwrap().creator, "ops");
    let mut events = s.events();
    let stream = events
        .subscribe(as_key(
            SubscribeRequest {
                topic: "orders.a".into(),
                subscription: "s2".into(),
                max_in_flight: 1,
            },
            OPS,
        ))
        .await
        .unwrap();
    drop(stream);
    let err = admin
        .create_subscription(create_sub("s3"))
        .await
        .expect_err("third subscription");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("auth.quotas.subscriptions"),
        "{err:?}"
    );
}

/// A server without JWT leeway, and a token for `sub` with one grant that
/// expires in 2 s.
async fn with_expiring_token(sub: &str, grant: &str) -> (TestServer, String) {
    let s = TestServer::start_with(DataDir::Fresh, |c| {
        auth_config(c);
        c.auth.jwt.as_mut().unwrap().leeway_secs = 0;
    })
    .await;
    let mut c = claims(sub);
    c["exp"] = json!(now() + 2);
    c["eventbus_grants"] = json!([grant]);
    (s, sign(Algorithm::RS256, "rsa-1", "rsa.pem", &c))
}

/// A Subscribe stream lives no longer than the token that opened it: it
/// ends with UNAUTHENTICATED once `exp` (plus the leeway) has passed.
#[tokio::test]
async fn a_stream_opened_with_a_token_ends_when_the_token_expires() {
    let (s, token) = with_expiring_token("reader", "subscribe:orders.>").await;
    let mut stream = s
        .events()
        .subscribe(with(
            SubscribeRequest {
                topic: "orders.a".into(),
                subscription: "s".into(),
                max_in_flight: 1,
            },
            "authorization",
            &format!("Bearer {token}"),
        ))
        .await
        .expect("a valid token")
        .into_inner();
    let status = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("the stream ends once the token expires")
        .expect_err("with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
}

/// A PublishStream authenticates once, when it opens; it ends like a
/// Subscribe stream once its token expires, so an expired token publishes
/// nothing more.
#[tokio::test]
async fn a_publish_stream_opened_with_a_token_ends_when_the_token_expires() {
    use crate::publish_stream::{next_answer, request};
    let (s, token) = with_expiring_token("writer", "publish:orders.>").await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut answers = s
        .events()
        .publish_stream(with(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            "authorization",
            &format!("Bearer {token}"),
        ))
        .await
        .expect("a valid token")
        .into_inner();
    tx.send(request(1, "orders.a", vec![event("k", "t", "x")]))
        .await
        .unwrap();
    assert!(next_answer(&mut answers).await.failure.is_none());
    let status = tokio::time::timeout(PATIENCE, answers.message())
        .await
        .expect("the stream ends once the token expires")
        .expect_err("with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
}

/// `[auth]` reloads on SIGHUP: a removed key is refused at once, and a
/// Subscribe stream opened with it ends with UNAUTHENTICATED, so a revoked
/// principal receives nothing more; other keys keep working, and a config
/// that does not load leaves the previous one in force.
#[tokio::test]
async fn a_key_removed_by_a_reload_is_refused_and_its_open_stream_ends() {
    use eventbus_tests::{temp_dir, ChildServer};
    const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");
    const KEEP: &str = "key-keep-00000000000";
    const REVOKE: &str = "key-revoke-000000000";
    let (dir, data) = temp_dir();
    let file = dir.path().join("eventbus.toml");
    let write_config = |keys: &[(&str, &str)]| {
        let mut toml = String::new();
        for (principal, key) in keys {
            toml.push_str(&format!(
                "[[auth.api-keys]]\nprincipal = \"{principal}\"\nsha256 = \"{}\"\ngrants = [\"admin:>\"]\n",
                hash_key_hex(key)
            ));
        }
        std::fs::write(&file, toml).unwrap();
    };
    write_config(&[("keep", KEEP), ("revoke", REVOKE)]);
    let server = ChildServer::start(BIN, &data, &["--config", file.to_str().unwrap()]).await;
    let events = EventServiceClient::new(server.channel().await);
    let publish = |key: &'static str| {
        let mut events = events.clone();
        async move {
            events
                .publish(as_key(publish_req("orders.a"), key))
                .await
                .map(|_| ())
        }
    };
    publish(REVOKE).await.expect("configured");
    let mut stream = events
        .clone()
        .subscribe(as_key(
            SubscribeRequest {
                topic: "orders.a".into(),
                subscription: "s".into(),
                max_in_flight: 10,
            },
            REVOKE,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let first = recv_n(&mut stream, 1).await;
    assert_eq!(first.len(), 1);

    // A config that does not load changes nothing.
    std::fs::write(&file, "[[auth.api-keys]]\nprincipal = 7\n").unwrap();
    server.hangup();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    publish(REVOKE)
        .await
        .expect("the old [auth] stays in force");

    // Revoke: the key is refused, and the open stream ends.
    write_config(&[("keep", KEEP)]);
    server.hangup();
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the revoked principal's stream ends");
    let status = ended.expect("ends with a status, not silently");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let err = publish(REVOKE).await.expect_err("revoked");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    publish(KEEP).await.expect("another key keeps working");
    let log = server.log_lines().join("\n");
    assert!(log.contains("SIGHUP: [auth] reloaded"), "{log}");
    assert!(log.contains("reloading [auth] failed"), "{log}");
}

/// The server's whole log, at debug level, while valid and invalid keys and
/// tokens are used: none of them appears in any line.
#[tokio::test]
async fn no_token_or_key_ever_reaches_a_log_line() {
    let (keep, data_dir) = eventbus_tests::temp_dir();
    let config = keep.path().join("eventbus.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[auth.api-keys]]
principal = "pub"
sha256 = "{}"
grants = ["publish:orders.>"]

[auth.jwt]
jwks-file = "{}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
"#,
            hash_key_hex("key-pub-000000000000"),
            fixture("jwks.json").display()
        ),
    )
    .unwrap();
    let server = eventbus_tests::ChildServer::start_with_env(
        env!("CARGO_BIN_EXE_eventbus-under-test"),
        &data_dir,
        &["--config", config.to_str().unwrap()],
        &[("EVENTBUS_LOG_LEVEL", "debug")],
    )
    .await;
    let mut events = EventServiceClient::new(server.channel().await);
    let good = sign(Algorithm::RS256, "rsa-1", "rsa.pem", &claims("svc"));
    let forged = sign(Algorithm::RS256, "rsa-1", "other-rsa.pem", &claims("svc"));
    let secrets = [
        "key-pub-000000000000",
        "key-wrong-0000000000",
        good.as_str(),
        forged.as_str(),
    ];
    for key in &secrets[..2] {
        let _ = events.publish(as_key(publish_req("orders.a"), key)).await;
        let _ = events.publish(as_key(publish_req("payments"), key)).await;
    }
    for token in &secrets[2..] {
        let bearer = format!("Bearer {token}");
        let _ = events
            .publish(with(publish_req("orders.a"), "authorization", &bearer))
            .await;
    }
    let lines = server.log_lines();
    assert!(
        lines.iter().any(|l| l.contains("request failed")),
        "the refusals were logged at debug: {lines:?}"
    );
    for line in &lines {
        for secret in secrets {
            // The signature part alone would do: check the whole token and
            // its last segment.
            let tail = secret.rsplit('.').next().unwrap_or(secret);
            assert!(
                !line.contains(secret) && !line.contains(tail),
                "a secret reached the log: {line}"
            );
        }
    }
    server.terminate().await;
}

#[tokio::test]
async fn every_request_of_a_publish_stream_is_checked_for_grants_and_quota() {
    use crate::publish_stream::{next_answer, request};
    let s = TestServer::start_with(DataDir::Fresh, |c| {
        auth_config(c);
        c.max_events_per_publish = 5;
        c.auth.quotas.publish_events_per_second = 5;
    })
    .await;
    let five = || (0..5).map(|_| event("k", "order.created", "x")).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut answers = s
        .events()
        .publish_stream(as_key(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            "key-pub-000000000000",
        ))
        .await
        .unwrap()
        .into_inner();
    // One at a time, so the quota's bucket sees them in this order.
    tx.send(request(1, "orders.a", five())).await.unwrap();
    let ok = next_answer(&mut answers).await;
    assert!(ok.failure.is_none() && ok.results.len() == 5, "{ok:?}");
    // No grant on `payments`: this request only is refused.
    tx.send(request(2, "payments", vec![event("k", "t", "x")]))
        .await
        .unwrap();
    let denied = next_answer(&mut answers).await;
    let failure = denied.failure.expect("denied");
    assert_eq!(failure.code, Code::PermissionDenied as i32, "{failure:?}");
    assert!(failure.message.contains("publish:payments"), "{failure:?}");
    // Over the publish quota: RESOURCE_EXHAUSTED with how long to wait.
    tx.send(request(3, "orders.a", five())).await.unwrap();
    let shed = next_answer(&mut answers).await;
    let failure = shed.failure.expect("over quota");
    assert_eq!(failure.code, Code::ResourceExhausted as i32, "{failure:?}");
    assert!(
        failure.message.contains("publish-events-per-second"),
        "{failure:?}"
    );
    assert!(failure.retry_delay.is_some(), "{failure:?}");
    drop(tx);
}

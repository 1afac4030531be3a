//! The audit log: every mutating admin call leaves exactly one record,
//! synced before its answer (so `kill -9` right after the answers loses
//! none), read-only calls leave none; ListAuditRecords pages and filters;
//! `eventbus audit` prints it. The safe defaults of issue 13 live here too:
//! loopback only without authentication, backups only under backup-root.

use std::time::Duration;

use eventbus_tests::v1::admin_service_client::AdminServiceClient;
use eventbus_tests::v1::{self, seek_subscription_request::Target};
use eventbus_tests::{temp_dir, ChildServer, DataDir, TestServer};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Request};

const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");

/// What one audited call must leave in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    action: String,
    target: String,
    result: String,
    request_id: String,
    params_sha256: String,
}

/// An admin client that sends `x-api-key` when it has one.
type Admin = AdminServiceClient<InterceptedService<Channel, ApiKey>>;

#[derive(Clone)]
struct ApiKey(Option<MetadataValue<Ascii>>);

impl Interceptor for ApiKey {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            req.metadata_mut().insert("x-api-key", key.clone());
        }
        Ok(req)
    }
}

fn as_key(channel: Channel, key: Option<&str>) -> Admin {
    AdminServiceClient::with_interceptor(channel, ApiKey(key.map(|k| k.parse().unwrap())))
}

/// Makes admin calls with their own request ids and remembers what each
/// must leave in the audit log.
struct Calls {
    admin: Admin,
    expected: Vec<Expected>,
}

impl Calls {
    fn request<T: Message>(&self, msg: T) -> (Request<T>, String, String) {
        let request_id = format!("audit-test-{}", self.expected.len());
        let digest = format!("{:x}", Sha256::digest(msg.encode_to_vec()));
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("x-request-id", request_id.parse().unwrap());
        (req, request_id, digest)
    }

    fn expect(
        &mut self,
        action: &'static str,
        target: impl Into<String>,
        result: Result<(), tonic::Status>,
        request_id: String,
        params_sha256: String,
    ) {
        let code = result.err().map_or(Code::Ok, |s| s.code());
        self.expected.push(Expected {
            action: action.to_string(),
            target: target.into(),
            result: eventbus::code_name(code).to_string(),
            request_id,
            params_sha256,
        });
    }
}

/// One mutating admin call: sends `$msg` through `$method` and expects a
/// record of `$action` on `$target`.
macro_rules! audited {
    ($calls:expr, $method:ident, $action:literal, $target:expr, $msg:expr) => {{
        let target: String = ($target).into();
        let (req, id, digest) = $calls.request($msg);
        let result = $calls.admin.$method(req).await.map(|_| ());
        $calls.expect($action, target, result, id, digest);
    }};
}

/// 100 mutating admin calls of every kind, some failing, with read-only
/// calls in between. Returns what the log must hold, in order.
async fn hundred_mutating_calls(admin: Admin) -> Vec<Expected> {
    let mut calls = Calls {
        admin,
        expected: Vec::new(),
    };
    let sub = |t: usize| (format!("audit-t{t}"), "s".to_string());
    for t in 0..10 {
        let (topic, _) = sub(t);
        audited!(
            calls,
            create_topic,
            "CreateTopic",
            topic.clone(),
            v1::CreateTopicRequest {
                topic,
                partitions: 1,
                retention: None,
            }
        );
    }
    // A failure is recorded with its code.
    audited!(
        calls,
        create_topic,
        "CreateTopic",
        "audit-t0",
        v1::CreateTopicRequest {
            topic: "audit-t0".into(),
            ..Default::default()
        }
    );
    for t in 0..10 {
        let (topic, s) = sub(t);
        audited!(
            calls,
            create_subscription,
            "CreateSubscription",
            format!("{topic}/{s}"),
            v1::CreateSubscriptionRequest {
                topic,
                subscription: s,
                ..Default::default()
            }
        );
        // Read-only calls leave nothing.
        calls
            .admin
            .get_topic(v1::GetTopicRequest { topic: sub(t).0 })
            .await
            .unwrap();
    }
    for round in 0..16 {
        let (topic, s) = sub(round % 10);
        audited!(
            calls,
            update_subscription,
            "UpdateSubscription",
            format!("{topic}/{s}"),
            v1::UpdateSubscriptionRequest {
                topic,
                subscription: s,
                ack_deadline: Some(prost_types::Duration {
                    seconds: 10 + round as i64,
                    nanos: 0
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["ack_deadline".into()]
                }),
                ..Default::default()
            }
        );
    }
    calls
        .admin
        .list_topics(v1::ListTopicsRequest::default())
        .await
        .unwrap();
    calls
        .admin
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap();
    for t in 0..10 {
        let (topic, s) = sub(t);
        let target = format!("{topic}/{s}");
        audited!(
            calls,
            pause_subscription,
            "PauseSubscription",
            target.clone(),
            v1::PauseSubscriptionRequest {
                topic: topic.clone(),
                subscription: s.clone(),
            }
        );
        audited!(
            calls,
            resume_subscription,
            "ResumeSubscription",
            target.clone(),
            v1::ResumeSubscriptionRequest {
                topic: topic.clone(),
                subscription: s.clone(),
            }
        );
        audited!(
            calls,
            seek_subscription,
            "SeekSubscription",
            target.clone(),
            v1::SeekSubscriptionRequest {
                topic: topic.clone(),
                subscription: s.clone(),
                target: Some(Target::StartPosition(v1::StartPosition::Earliest as i32)),
            }
        );
        audited!(
            calls,
            redrive_dead_letters,
            "RedriveDeadLetters",
            target.clone(),
            v1::RedriveDeadLettersRequest {
                topic: topic.clone(),
                subscription: s.clone(),
                all: true,
                ..Default::default()
            }
        );
        audited!(
            calls,
            purge_dead_letters,
            "PurgeDeadLetters",
            target,
            v1::PurgeDeadLettersRequest {
                topic,
                subscription: s,
                all: true,
                ..Default::default()
            }
        );
    }
    for t in 5..10 {
        let (topic, s) = sub(t);
        audited!(
            calls,
            delete_subscription,
            "DeleteSubscription",
            format!("{topic}/{s}"),
            v1::DeleteSubscriptionRequest {
                topic: topic.clone(),
                subscription: s,
            }
        );
        audited!(
            calls,
            delete_topic,
            "DeleteTopic",
            topic.clone(),
            v1::DeleteTopicRequest { topic }
        );
    }
    audited!(
        calls,
        delete_topic,
        "DeleteTopic",
        "audit-missing",
        v1::DeleteTopicRequest {
            topic: "audit-missing".into(),
        }
    );
    audited!(
        calls,
        create_backup,
        "CreateBackup",
        "b1",
        v1::CreateBackupRequest { dir: "b1".into() }
    );
    audited!(
        calls,
        create_backup,
        "CreateBackup",
        "../b2",
        v1::CreateBackupRequest {
            dir: "../b2".into()
        }
    );
    assert_eq!(calls.expected.len(), 100);
    calls.expected
}

/// Every record, following the page tokens with a small page size.
async fn all_records(admin: &mut Admin) -> Vec<v1::AuditRecord> {
    let mut records = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_audit_records(v1::ListAuditRecordsRequest {
                page_size: 7,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.records.len() <= 7);
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            return records;
        }
        token = page.next_page_token;
    }
}

fn check(records: &[v1::AuditRecord], expected: &[Expected], principal: &str) {
    let got: Vec<Expected> = records
        .iter()
        .map(|r| Expected {
            action: r.action.clone(),
            target: r.target.clone(),
            result: r.result.clone(),
            request_id: r.request_id.clone(),
            params_sha256: r.params_sha256.clone(),
        })
        .collect();
    assert_eq!(got, expected, "the records, in call order");
    for r in records {
        assert_eq!((r.principal.as_str(), r.tenant.as_str()), (principal, ""));
    }
    assert!(records
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].time.unwrap().seconds <= w[1].time.unwrap().seconds));
}

#[tokio::test]
async fn a_hundred_mutating_admin_calls_leave_a_hundred_records_even_after_kill_9() {
    let (dir, data) = temp_dir();
    let backups = dir.path().join("backups");
    let env = [
        ("EVENTBUS_BACKUP_ROOT", backups.to_str().unwrap()),
        // Audit records are synced whatever the durability mode.
        ("EVENTBUS_DURABILITY", "buffered"),
    ];
    let server = ChildServer::start_with_env(BIN, &data, &[], &env).await;
    let expected = hundred_mutating_calls(as_key(server.channel().await, None)).await;
    // Right after the last answer.
    server.kill9().await;

    let server = ChildServer::start_with_env(BIN, &data, &[], &env).await;
    let mut admin = as_key(server.channel().await, None);
    let records = all_records(&mut admin).await;
    assert_eq!(records.len(), 100, "{records:#?}");
    check(&records, &expected, "anonymous");
    // Spot checks of the outcomes the calls had.
    let results: Vec<&str> = expected.iter().map(|e| e.result.as_str()).collect();
    assert_eq!(
        results.iter().filter(|r| **r == "ALREADY_EXISTS").count(),
        1
    );
    assert_eq!(results.iter().filter(|r| **r == "NOT_FOUND").count(), 1);
    assert_eq!(
        results.iter().filter(|r| **r == "INVALID_ARGUMENT").count(),
        1
    );
    assert_eq!(results.iter().filter(|r| **r == "OK").count(), 97);
    // A RocksDB checkpoint, or in cluster mode the snapshots' manifest.
    let marker = if eventbus_tests::on_jetstream() {
        "manifest.json"
    } else {
        "CURRENT"
    };
    assert!(backups.join("b1").join(marker).exists());

    // Reading the log is not itself recorded.
    assert_eq!(all_records(&mut admin).await.len(), 100);
    server.kill9().await;
}

/// Issue 13's count: with authentication on, 100 mutating admin calls by an
/// admin and 20 denied calls (10 without credentials, 10 without the grant)
/// leave exactly 120 records, also after a kill -9 right after the replies.
#[tokio::test]
async fn a_hundred_mutating_and_twenty_denied_calls_leave_120_records_after_kill_9() {
    let (dir, data) = temp_dir();
    let backups = dir.path().join("backups");
    let config = dir.path().join("eventbus.toml");
    let hash = |k: &str| eventbus_server::auth::api_key::hash_key_hex(k);
    std::fs::write(
        &config,
        format!(
            "backup-root = {:?}\n\
             [[auth.api-keys]]\nprincipal = \"ops\"\nsha256 = \"{}\"\ngrants = [\"admin:>\"]\n\
             [[auth.api-keys]]\nprincipal = \"reader\"\nsha256 = \"{}\"\ngrants = [\"subscribe:>\"]\n",
            backups.to_str().unwrap(),
            hash("ops-key-0123456789"),
            hash("reader-key-0123456789"),
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let env = [("EVENTBUS_DURABILITY", "buffered")];
    let server = ChildServer::start_with_env(BIN, &data, &args, &env).await;
    let channel = server.channel().await;
    let expected =
        hundred_mutating_calls(as_key(channel.clone(), Some("ops-key-0123456789"))).await;
    for (key, code) in [
        (None, Code::Unauthenticated),
        (Some("reader-key-0123456789"), Code::PermissionDenied),
    ] {
        let mut admin = as_key(channel.clone(), key);
        for i in 0..10 {
            let err = admin
                .delete_topic(v1::DeleteTopicRequest {
                    topic: format!("audit-t{i}"),
                })
                .await
                .expect_err("denied");
            assert_eq!(err.code(), code, "{err:?}");
        }
    }
    server.kill9().await;

    let server = ChildServer::start_with_env(BIN, &data, &args, &env).await;
    let mut admin = as_key(server.channel().await, Some("ops-key-0123456789"));
    let records = all_records(&mut admin).await;
    assert_eq!(records.len(), 120, "{records:#?}");
    check(&records[..100], &expected, "ops");
    let denied: Vec<(&str, &str, &str)> = records[100..]
        .iter()
        .map(|r| (r.principal.as_str(), r.action.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(
        denied[..10],
        [("anonymous", "DeleteTopic", "UNAUTHENTICATED"); 10]
    );
    assert_eq!(
        denied[10..],
        [("reader", "DeleteTopic", "PERMISSION_DENIED"); 10]
    );
    server.kill9().await;
}

#[tokio::test]
async fn list_audit_records_filters_by_time_and_principal_and_the_cli_prints_them() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    let before =
        prost_types::Timestamp::from(std::time::SystemTime::now() - Duration::from_secs(1));
    for t in ["audit-list-a", "audit-list-b", "audit-list-c"] {
        admin
            .create_topic(v1::CreateTopicRequest {
                topic: t.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let list = |req: v1::ListAuditRecordsRequest| {
        let mut admin = server.admin();
        async move { admin.list_audit_records(req).await }
    };
    let all = list(v1::ListAuditRecordsRequest {
        start_time: Some(before),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    let targets: Vec<&str> = all.records.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["audit-list-a", "audit-list-b", "audit-list-c"]);
    assert!(all.next_page_token.is_empty());

    let nobody = list(v1::ListAuditRecordsRequest {
        principal: "nobody".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert!(nobody.records.is_empty() && nobody.next_page_token.is_empty());
    let ended = list(v1::ListAuditRecordsRequest {
        end_time: Some(before),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert!(ended.records.is_empty());
    let bad = list(v1::ListAuditRecordsRequest {
        page_token: "not-a-token".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    // The CLI, as an operator runs it. (tokio's Command: the in-process
    // server shares this test's thread and must keep running meanwhile.)
    let cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["--server", &format!("http://{}", server.addr)])
            .args(args);
        cmd.output()
    };
    let out = cli(&["audit", "--principal", "anonymous"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l.contains("anonymous")
            && l.contains("CreateTopic")
            && l.contains("audit-list-b")
            && l.contains("OK")),
        "{text}"
    );
    let out = cli(&["--json", "audit", "--since", "1h"]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = json.as_array().expect("an array of records");
    assert_eq!(rows.len(), 3, "{json}");
    assert_eq!(rows[2]["target"], "audit-list-c");
    assert_eq!(rows[2]["result"], "OK");
    assert_eq!(rows[2]["params_sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn without_auth_a_non_loopback_address_is_refused_unless_insecure() {
    let (_dir, data) = temp_dir();
    for (flag, addr) in [("--listen", "0.0.0.0:0"), ("--metrics-listen", "[::]:0")] {
        let other = if flag == "--listen" {
            "--metrics-listen"
        } else {
            "--listen"
        };
        let out = tokio::process::Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(&data)
            .args([flag, addr, other, "127.0.0.1:0"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("without authentication") && stderr.contains("--insecure"),
            "{stderr}"
        );
        // Refused before anything was opened.
        assert!(!data.exists());
    }
    // --insecure is a known flag; on loopback it changes nothing.
    let server = ChildServer::start(BIN, &data, &["--insecure"]).await;
    assert_eq!(server.terminate().await, Some(0));
}

#[tokio::test]
async fn backups_are_written_only_under_the_backup_root() {
    let off = TestServer::start().await;
    let err = off
        .admin()
        .create_backup(v1::CreateBackupRequest { dir: "b1".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("backup-root"), "{err:?}");

    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc", root.path().join("etc-link")).unwrap();
    let path = root.path().to_path_buf();
    let server = TestServer::start_with(DataDir::Fresh, |c| c.backup_root = Some(path)).await;
    let name = format!("eventbus-audit-test-{}", std::process::id());
    let etc = std::path::Path::new("/etc").join(&name);
    let refusals = [
        (etc.display().to_string(), Code::InvalidArgument),
        (
            format!("../../../../../../../../etc/{name}"),
            Code::InvalidArgument,
        ),
        (format!("etc-link/{name}"), Code::FailedPrecondition),
        // Exists: refused like the rest, not ALREADY_EXISTS.
        ("etc-link".to_string(), Code::FailedPrecondition),
    ];
    for (dir, code) in refusals {
        let err = server
            .admin()
            .create_backup(v1::CreateBackupRequest { dir: dir.clone() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{dir}: {err:?}");
        assert!(!etc.exists(), "{dir} wrote to {}", etc.display());
    }
    // Every refusal is on record.
    let records = server
        .admin()
        .list_audit_records(v1::ListAuditRecordsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(records.len(), 4);
    assert!(records
        .iter()
        .all(|r| r.action == "CreateBackup" && r.result != "OK"));
}

//! The operator CLI (`eventbus topic|publish|subscribe|sub|dlq|replay`): runs
//! the real binary as a child process against a real server on 127.0.0.1:0
//! and checks stdout, stderr and exit codes, in table and `--json` modes.

use std::process::Stdio;

use eventbus_tests::v1;
use eventbus_tests::TestServer;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::support::*;

/// The result of one CLI run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success with a clean stderr (no progress bar, no notes) and
    /// returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "exit code; stdout: {} stderr: {}",
            self.stdout, self.stderr
        );
        assert_eq!(self.stderr, "", "stderr of a successful command");
        &self.stdout
    }

    /// Stdout as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    /// Stdout as JSON lines.
    fn json_lines(&self) -> Vec<Value> {
        self.ok()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// How to run the CLI: arguments, stdin, and where the server address comes from.
struct Cli<'a> {
    args: Vec<&'a str>,
    server: Option<String>,
    env_server: Option<String>,
    stdin: Option<&'a str>,
}

impl<'a> Cli<'a> {
    /// `eventbus --server http://<addr> <args>`.
    fn new(server: &TestServer, args: &[&'a str]) -> Cli<'a> {
        Cli {
            args: args.to_vec(),
            server: Some(format!("http://{}", server.addr)),
            env_server: None,
            stdin: None,
        }
    }

    fn stdin(mut self, input: &'a str) -> Self {
        self.stdin = Some(input);
        self
    }

    async fn run(self) -> Run {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventbus-under-test"));
        if let Some(server) = &self.server {
            cmd.arg("--server").arg(server);
        }
        cmd.args(&self.args)
            .env_remove("EVENTBUS_SERVER")
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(env) = &self.env_server {
            cmd.env("EVENTBUS_SERVER", env);
        }
        let mut child = cmd.spawn().expect("spawn eventbus-under-test");
        if let Some(input) = self.stdin {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(input.as_bytes())
                .await
                .expect("write stdin");
            drop(stdin);
        }
        let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`eventbus {}` did not finish", self.args.join(" ")))
            .expect("wait");
        Run {
            code: out.status.code().expect("exited normally"),
            stdout: String::from_utf8(out.stdout).expect("utf8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf8 stderr"),
        }
    }
}

async fn eventbus(server: &TestServer, args: &[&str]) -> Run {
    Cli::new(server, args).run().await
}

async fn stats(server: &TestServer, topic: &str, sub: &str) -> v1::SubscriptionStats {
    subscription_stats(&mut server.admin(), topic, sub).await
}

fn payloads(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|v| v["payload"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn topic_create_list_describe_delete() {
    let server = TestServer::start().await;

    let out = eventbus(&server, &["topic", "create", "orders", "--partitions", "3"]).await;
    assert_eq!(out.ok(), "created topic orders with 3 partitions\n");
    let created = eventbus(
        &server,
        &[
            "topic",
            "create",
            "audit",
            "--partitions",
            "1",
            "--retention-age",
            "7d",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(created["name"], "audit");
    assert_eq!(created["partitions"], 1);
    assert_eq!(created["retention"]["max_age_seconds"], 7.0 * 86400.0);

    let table = eventbus(&server, &["topic", "list"]).await;
    let lines: Vec<&str> = table.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("NAME    PARTITIONS  EVENTS  RETENTION      CREATED"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("audit   1           0       max age 7days  2"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("orders  3           0       forever        2"),
        "{lines:?}"
    );
    let listed = eventbus(&server, &["--json", "topic", "list"]).await.json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "orders"]);

    publish(
        &mut server.events(),
        "orders",
        vec![
            event("k1", "order.created", "a"),
            event("k1", "order.created", "b"),
        ],
    )
    .await;
    let described = eventbus(&server, &["topic", "describe", "orders", "--json"])
        .await
        .json();
    assert_eq!(described["events"], 2);
    assert_eq!(described["partition_info"].as_array().unwrap().len(), 3);
    let text = eventbus(&server, &["topic", "describe", "orders"]).await;
    assert!(
        text.ok().contains("events:      2 retained"),
        "{}",
        text.stdout
    );
    assert!(
        text.ok().contains("PARTITION  START  END  EVENTS"),
        "{}",
        text.stdout
    );

    let deleted = eventbus(&server, &["topic", "delete", "orders", "--json"])
        .await
        .json();
    assert_eq!(
        deleted,
        serde_json::json!({"topic": "orders", "deleted": true})
    );
    let gone = eventbus(&server, &["topic", "describe", "orders"]).await;
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("NOT_FOUND"), "{}", gone.stderr);
}

#[tokio::test]
async fn publish_from_argument_file_and_stdin() {
    let server = TestServer::start().await;
    eventbus(&server, &["topic", "create", "t", "--partitions", "1"])
        .await
        .ok();

    let one = eventbus(
        &server,
        &[
            "publish",
            "t",
            "{\"id\":1}",
            "--key",
            "cust-1",
            "--type",
            "order.created",
            "--attr",
            "source=cli",
            "--attr",
            "region=eu",
            "--content-type",
            "application/json",
            "--json",
        ],
    )
    .await
    .json_lines();
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0]["partition"].clone(), one[0]["offset"].clone()),
        (0.into(), 0.into())
    );
    assert_eq!(one[0]["duplicate"], false);

    // Three lines on stdin are three events, in order.
    let stdin = Cli::new(&server, &["publish", "t", "--type", "order.paid", "--json"])
        .stdin("first\nsecond\nthird\n")
        .run()
        .await
        .json_lines();
    let lines: Vec<_> = stdin
        .iter()
        .map(|r| (r["line"].as_u64(), r["offset"].as_u64()))
        .collect();
    assert_eq!(
        lines,
        [(Some(1), Some(1)), (Some(2), Some(2)), (Some(3), Some(3))]
    );

    // A file: blank lines skipped, a last line without newline kept; the
    // human summary counts them.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.txt");
    std::fs::write(&file, "fourth\n\nfifth").unwrap();
    let summary = eventbus(&server, &["publish", "t", "--file", file.to_str().unwrap()]).await;
    assert_eq!(summary.ok(), "published 2 events to t\n");

    // Replay shows every field as published.
    let events = eventbus(&server, &["replay", "t", "--json"])
        .await
        .json_lines();
    assert_eq!(
        payloads(&events),
        ["{\"id\":1}", "first", "second", "third", "fourth", "fifth"]
    );
    assert_eq!(events[0]["key"], "cust-1");
    assert_eq!(events[0]["type"], "order.created");
    assert_eq!(events[0]["content_type"], "application/json");
    assert_eq!(
        events[0]["attributes"],
        serde_json::json!({"region": "eu", "source": "cli"})
    );
    assert_eq!(events[0]["payload_encoding"], "utf8");
    assert_eq!(events[1]["type"], "order.paid");

    // An idempotency key makes a re-run of the same input publish nothing new.
    for _ in 0..2 {
        Cli::new(&server, &["publish", "t", "--idempotency-key", "batch-7"])
            .stdin("x\ny\n")
            .run()
            .await
            .ok();
    }
    let again = Cli::new(&server, &["publish", "t", "--idempotency-key", "batch-7"])
        .stdin("x\ny\n")
        .run()
        .await;
    assert_eq!(
        again.ok(),
        "published 2 events to t (2 of them duplicates, not stored again)\n"
    );
    let described = eventbus(&server, &["topic", "describe", "t", "--json"])
        .await
        .json();
    assert_eq!(described["events"], 8);
}

#[tokio::test]
async fn subscribe_max_ack_receives_and_settles() {
    let server = TestServer::start().await;
    eventbus(&server, &["topic", "create", "t", "--partitions", "2"])
        .await
        .ok();
    eventbus(
        &server,
        &["sub", "create", "t", "s", "--max-delivery-attempts", "10"],
    )
    .await
    .ok();
    Cli::new(&server, &["publish", "t", "--key", "k"])
        .stdin("one\ntwo\nthree\n")
        .run()
        .await
        .ok();

    // Without --ack it only looks: the lease ends with the command and the
    // event comes back with its attempt count raised.
    let peek = eventbus(&server, &["subscribe", "t", "s", "--max", "1", "--json"])
        .await
        .json_lines();
    assert_eq!(peek.len(), 1);
    assert_eq!(peek[0]["delivery_attempt"], 1);

    let got = eventbus(
        &server,
        &["subscribe", "t", "s", "--max", "3", "--ack", "--json"],
    )
    .await
    .json_lines();
    let mut received = payloads(&got);
    received.sort();
    assert_eq!(received, ["one", "three", "two"]);
    assert!(got
        .iter()
        .all(|d| !d["ack_id"].as_str().unwrap().is_empty()));
    let attempts: Vec<(u64, &str)> = got
        .iter()
        .map(|d| {
            (
                d["delivery_attempt"].as_u64().unwrap(),
                d["event_id"].as_str().unwrap(),
            )
        })
        .filter(|(attempt, _)| *attempt > 1)
        .collect();
    assert_eq!(attempts, [(2, peek[0]["event_id"].as_str().unwrap())]);
    let s = stats(&server, "t", "s").await;
    assert_eq!((s.backlog, s.in_flight, s.acked), (0, 0, 3));

    // The CLI's own view agrees.
    let described = eventbus(&server, &["sub", "describe", "t", "s", "--json"])
        .await
        .json();
    assert_eq!(described["stats"]["backlog"], 0);
    assert_eq!(described["stats"]["in_flight"], 0);
    assert_eq!(described["max_delivery_attempts"], 10);

    // Human output: one line per delivery with its attempt.
    Cli::new(&server, &["publish", "t", "--type", "x.y"])
        .stdin("four\n")
        .run()
        .await
        .ok();
    let text = eventbus(&server, &["subscribe", "t", "s", "--max", "1", "--ack"]).await;
    let line = text.ok().trim_end();
    assert!(line.contains("  x.y  attempt=1  four"), "{line}");
}

/// Dead-letters one event per (type, reason) through the gRPC API.
async fn dead_letter(server: &TestServer, topic: &str, sub: &str, items: &[(&str, &str, &str)]) {
    let mut events = server.events();
    publish(
        &mut events,
        topic,
        items
            .iter()
            .map(|(ty, payload, _)| event("", ty, *payload))
            .collect(),
    )
    .await;
    let mut stream = subscribe(&mut events, topic, sub, 100).await;
    let got = recv_n(&mut stream, items.len()).await;
    for d in &got {
        let p = payload(d);
        let (_, _, reason) = items.iter().find(|(_, payload, _)| *payload == p).unwrap();
        events
            .nack(v1::NackRequest {
                topic: topic.into(),
                subscription: sub.into(),
                ack_ids: vec![d.ack_id.clone()],
                reason: reason.to_string(),
                dead_letter: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn dlq_runbook_group_redrive_by_type_and_purge() {
    let server = TestServer::start().await;
    eventbus(&server, &["topic", "create", "orders", "--partitions", "2"])
        .await
        .ok();
    eventbus(&server, &["sub", "create", "orders", "billing"])
        .await
        .ok();
    dead_letter(
        &server,
        "orders",
        "billing",
        &[
            ("order.created", "o1", "db timeout"),
            ("order.created", "o2", "db timeout"),
            ("order.paid", "o3", "bad amount"),
            ("payment.failed", "p1", "db timeout"),
            ("payment.failed", "p2", "db timeout"),
        ],
    )
    .await;
    assert_eq!(
        stats(&server, "orders", "billing").await.dead_letter_count,
        5
    );

    // (a) Why is the DLQ growing? Count by type, then by reason.
    let by_type = eventbus(
        &server,
        &[
            "dlq",
            "list",
            "orders",
            "billing",
            "--group-by",
            "type",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(
        by_type,
        serde_json::json!({
            "group_by": "type",
            "total": 5,
            "groups": [
                {"type": "order.created", "count": 2},
                {"type": "payment.failed", "count": 2},
                {"type": "order.paid", "count": 1},
            ],
        })
    );
    let by_reason = eventbus(
        &server,
        &["dlq", "list", "orders", "billing", "--group-by", "reason"],
    )
    .await;
    assert_eq!(
        by_reason.ok(),
        "COUNT  REASON\n4      db timeout\n1      bad amount\n5 dead letters\n"
    );

    let listed = eventbus(&server, &["dlq", "list", "orders", "billing", "--json"])
        .await
        .json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 5);
    let o3 = listed
        .iter()
        .find(|e| e["event"]["payload"] == "o3")
        .unwrap();
    assert_eq!(o3["reason"], "bad amount");
    assert_eq!(o3["delivery_attempts"], 1);
    let table = eventbus(
        &server,
        &["dlq", "list", "orders", "billing", "--type", "order.paid"],
    )
    .await;
    let rows: Vec<&str> = table.ok().lines().collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[1].contains("order.paid") && rows[1].ends_with("bad amount"),
        "{rows:?}"
    );

    let id = o3["id"].as_str().unwrap();
    let shown = eventbus(&server, &["dlq", "show", "orders", "billing", id, "--json"])
        .await
        .json();
    assert_eq!(shown["event"]["payload"], "o3");
    let shown = eventbus(&server, &["dlq", "show", "orders", "billing", id]).await;
    assert!(shown.ok().ends_with("\n\no3\n"), "{}", shown.stdout);

    // (b) After the fix, redrive one event type: dry run first, nothing moves.
    let dry = eventbus(
        &server,
        &[
            "dlq",
            "redrive",
            "orders",
            "billing",
            "--type",
            "order.*",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(
        dry.ok(),
        "would redrive 3 dead letters of orders/billing (dry run, nothing changed)\n"
    );
    assert_eq!(
        stats(&server, "orders", "billing").await.dead_letter_count,
        5
    );
    let real = eventbus(
        &server,
        &[
            "dlq", "redrive", "orders", "billing", "--type", "order.*", "--json",
        ],
    )
    .await
    .json();
    assert_eq!(real, serde_json::json!({"count": 3, "dry_run": false}));
    let s = stats(&server, "orders", "billing").await;
    assert_eq!((s.dead_letter_count, s.backlog), (2, 3));
    // The redriven events are delivered again.
    let redelivered = eventbus(
        &server,
        &[
            "subscribe",
            "orders",
            "billing",
            "--max",
            "3",
            "--ack",
            "--json",
        ],
    )
    .await
    .json_lines();
    let mut got = payloads(&redelivered);
    got.sort();
    assert_eq!(got, ["o1", "o2", "o3"]);

    // Purge the rest: dry run, then for real.
    let dry = eventbus(
        &server,
        &[
            "dlq",
            "purge",
            "orders",
            "billing",
            "--all",
            "--dry-run",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(dry, serde_json::json!({"count": 2, "dry_run": true}));
    let purged = eventbus(&server, &["dlq", "purge", "orders", "billing", "--all"]).await;
    assert_eq!(purged.ok(), "purged 2 dead letters of orders/billing\n");
    let empty = eventbus(&server, &["dlq", "list", "orders", "billing", "--json"])
        .await
        .json();
    assert_eq!(empty, serde_json::json!([]));

    // Redrive and purge need exactly one way of selecting entries.
    for args in [
        &["dlq", "redrive", "orders", "billing"][..],
        &["dlq", "purge", "orders", "billing", "--all", "--id", "x"],
        &[
            "dlq", "redrive", "orders", "billing", "--all", "--type", "a.b",
        ],
    ] {
        let out = eventbus(&server, args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "");
    }
}

#[tokio::test]
async fn replay_by_offset_type_and_time() {
    let server = TestServer::start().await;
    eventbus(&server, &["topic", "create", "t", "--partitions", "1"])
        .await
        .ok();
    let mut events = server.events();
    publish(
        &mut events,
        "t",
        (0..6)
            .map(|i| {
                event(
                    "",
                    if i % 2 == 0 {
                        "order.created"
                    } else {
                        "payment.done"
                    },
                    format!("e{i}"),
                )
            })
            .collect(),
    )
    .await;

    let from2 = eventbus(&server, &["replay", "t", "--from", "2", "--json"])
        .await
        .json_lines();
    assert_eq!(payloads(&from2), ["e2", "e3", "e4", "e5"]);
    let offsets: Vec<u64> = from2
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3, 4, 5]);

    let typed = eventbus(
        &server,
        &["replay", "t", "--from", "1", "--type", "order.*", "--json"],
    )
    .await
    .json_lines();
    assert_eq!(payloads(&typed), ["e2", "e4"]);

    let range = eventbus(
        &server,
        &["replay", "t", "--from", "1", "--to", "3", "--json"],
    )
    .await
    .json_lines();
    assert_eq!(payloads(&range), ["e1", "e2"]);

    // Times: the last hour holds everything, a range in the future nothing.
    let hour = eventbus(
        &server,
        &[
            "replay",
            "t",
            "--from",
            "1h",
            "--type",
            "payment.>",
            "--json",
        ],
    )
    .await
    .json_lines();
    assert_eq!(payloads(&hour), ["e1", "e3", "e5"]);
    let none = eventbus(
        &server,
        &["replay", "t", "--from", "2999-01-01T00:00:00Z", "--json"],
    )
    .await;
    assert_eq!(none.ok(), "");

    let text = eventbus(&server, &["replay", "t", "--from", "5"]).await;
    let line = text.ok().trim_end();
    assert!(
        line.contains("  0:5  payment.done  source=e2e  e5"),
        "{line}"
    );

    // --to with --follow, or a malformed time, is a usage error.
    assert_eq!(
        eventbus(&server, &["replay", "t", "--to", "3", "--follow"])
            .await
            .code,
        2
    );
    assert_eq!(
        eventbus(&server, &["replay", "t", "--from", "last tuesday"])
            .await
            .code,
        2
    );
}

#[tokio::test]
async fn sub_pause_resume_seek_and_list() {
    let server = TestServer::start().await;
    eventbus(&server, &["topic", "create", "t", "--partitions", "1"])
        .await
        .ok();
    let created = eventbus(
        &server,
        &[
            "sub",
            "create",
            "t",
            "s",
            "--ack-deadline",
            "45s",
            "--type",
            "a.*",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(created["ack_deadline_seconds"], 45.0);
    assert_eq!(created["filter"]["types"], serde_json::json!(["a.*"]));
    eventbus(&server, &["sub", "create", "t", "all-events"])
        .await
        .ok();

    let paused = eventbus(&server, &["sub", "pause", "t", "s"]).await;
    assert_eq!(paused.ok(), "paused subscription t/s\n");
    let described = eventbus(&server, &["sub", "describe", "t", "s"]).await;
    assert!(
        described.ok().contains("paused:                 yes"),
        "{}",
        described.stdout
    );
    let resumed = eventbus(&server, &["sub", "resume", "t", "s", "--json"])
        .await
        .json();
    assert_eq!(resumed["paused"], false);

    let list = eventbus(&server, &["sub", "list", "t", "--json"])
        .await
        .json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["all-events", "s"]);
    let table = eventbus(&server, &["sub", "list", "t"]).await;
    assert!(
        table.ok().starts_with("NAME        PAUSED  BACKLOG"),
        "{}",
        table.stdout
    );

    let mut events = server.events();
    publish(
        &mut events,
        "t",
        (0..3).map(|i| event("", "a.b", format!("e{i}"))).collect(),
    )
    .await;
    let first = eventbus(
        &server,
        &["subscribe", "t", "s", "--max", "3", "--ack", "--json"],
    )
    .await
    .json_lines();
    assert_eq!(first.len(), 3);
    assert_eq!(stats(&server, "t", "s").await.backlog, 0);

    // Back to the start: everything is delivered again.
    let seek = eventbus(&server, &["sub", "seek", "t", "s", "--to", "earliest"]).await;
    assert_eq!(seek.ok(), "moved the cursor of subscription t/s\n");
    assert_eq!(stats(&server, "t", "s").await.backlog, 3);
    let again = eventbus(
        &server,
        &["subscribe", "t", "s", "--max", "3", "--ack", "--json"],
    )
    .await
    .json_lines();
    let mut offsets: Vec<u64> = again
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    offsets.sort();
    assert_eq!(offsets, [0, 1, 2]);

    // To an offset in partition 0: from offset 2 on.
    eventbus(&server, &["sub", "seek", "t", "s", "--to", "0:2"])
        .await
        .ok();
    let tail = eventbus(
        &server,
        &["subscribe", "t", "s", "--max", "1", "--ack", "--json"],
    )
    .await
    .json_lines();
    assert_eq!(tail[0]["offset"], 2);

    // To a time an hour ago (everything), then to the end.
    let sought = eventbus(&server, &["sub", "seek", "t", "s", "--to", "1h", "--json"])
        .await
        .json();
    assert_eq!(sought["stats"]["backlog"], 3);
    eventbus(&server, &["sub", "seek", "t", "s", "--to", "latest"])
        .await
        .ok();
    assert_eq!(stats(&server, "t", "s").await.backlog, 0);

    assert_eq!(
        eventbus(&server, &["sub", "seek", "t", "s", "--to", "somewhere"])
            .await
            .code,
        2
    );
}

#[tokio::test]
async fn errors_show_the_grpc_code_and_message_and_exit_1() {
    let server = TestServer::start().await;

    let missing = eventbus(&server, &["topic", "describe", "nope"]).await;
    assert_eq!(missing.code, 1);
    assert_eq!(missing.stdout, "");
    assert!(
        missing
            .stderr
            .starts_with("error: NOT_FOUND: topic \"nope\" not found"),
        "{}",
        missing.stderr
    );
    let missing = eventbus(&server, &["--json", "sub", "describe", "nope", "s"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("NOT_FOUND"), "{}", missing.stderr);

    let bad = eventbus(&server, &["topic", "create", "bad name"]).await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.starts_with("error: INVALID_ARGUMENT: "),
        "{}",
        bad.stderr
    );

    // An unreachable server: a port nobody listens on any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let down = Cli {
        args: vec!["topic", "list"],
        server: Some(addr),
        env_server: None,
        stdin: None,
    }
    .run()
    .await;
    assert_eq!(down.code, 1);
    assert!(
        down.stderr.starts_with("error: UNAVAILABLE: "),
        "{}",
        down.stderr
    );
    assert!(
        down.stderr.contains("hint: is the server running"),
        "{}",
        down.stderr
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let server = TestServer::start().await;
    for args in [
        &["topic", "frobnicate"][..],
        &["publish"],
        &["subscribe", "t"],
        &["publish", "t", "--attr", "novalue"],
        &["dlq", "list", "t", "s", "--group-by", "colour"],
    ] {
        let out = eventbus(&server, args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = Cli {
        args: vec!["topic", "list"],
        server: Some("http://not a uri".into()),
        env_server: None,
        stdin: None,
    }
    .run()
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);

    // --help documents the exit codes.
    let help = eventbus(&server, &["--help"]).await;
    assert!(help.ok().contains("Exit status:"), "{}", help.stdout);
}

#[tokio::test]
async fn eventbus_server_env_selects_the_server() {
    let server = TestServer::start().await;
    server
        .admin()
        .create_topic(v1::CreateTopicRequest {
            topic: "from-env".into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .unwrap();

    // host:port without a scheme, from the environment.
    let via_env = Cli {
        args: vec!["topic", "list", "--json"],
        server: None,
        env_server: Some(server.addr.to_string()),
        stdin: None,
    }
    .run()
    .await
    .json();
    assert_eq!(via_env[0]["name"], "from-env");

    // --server wins over the environment.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let flag_wins = Cli {
        args: vec!["topic", "list", "--json"],
        server: Some(server.addr.to_string()),
        env_server: Some(format!("127.0.0.1:{port}")),
        stdin: None,
    }
    .run()
    .await
    .json();
    assert_eq!(flag_wins[0]["name"], "from-env");
}

/// `eventbus bench` runs the peers' workload and prints one JSON line with
/// peerbench's field names. Tiny numbers: this checks behaviour, not speed.
#[tokio::test]
async fn bench_prints_one_peerbench_line() {
    let server = TestServer::start().await;
    let run = eventbus(
        &server,
        &[
            "bench",
            "--messages",
            "300",
            "--publishers",
            "2",
            "--depth",
            "8",
            "--rate",
            "200",
            "--latency-secs",
            "1",
            "--mode",
            "fsync",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON line");
    assert_eq!(line["peer"], "eventbus");
    assert_eq!(line["pub_acked"], 300);
    assert_eq!(line["pub_errors"], 0);
    assert_eq!(line["consumed"], 300);
    assert_eq!(line["lat_sent"], 200);
    assert_eq!(line["lat_received"], 200);
    for field in [
        "pub_msgs_s",
        "pub_mb_s",
        "consume_msgs_s",
        "lat_p50_us",
        "lat_p99_us",
        "lat_p999_us",
        "lat_max_us",
    ] {
        assert!(
            line[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {line}"
        );
    }
    assert!(line.get("timed_out").is_none(), "{line}");
}

//! `cargo xtask <task>`: project automation.
//!
//! | task           | what it does                                                        |
//! |----------------|---------------------------------------------------------------------|
//! | `bootstrap`    | installs missing system tools (libclang, node, buf): scripts/bootstrap.sh |
//! | `serve ARGS`   | bootstrap, then `eventbus serve ARGS`                               |
//! | `cluster ARGS` | cluster mode locally: 3 nats-server nodes (data in ./cluster-data) and `eventbus serve --storage jetstream ARGS` over them |
//! | `test`         | bootstrap (and scripts/bootstrap-nats.sh), lint-proto, every Rust test (plus the failpoint tests), the short fuzzing tier, the README tour, then `check` and `test-clients` |
//! | `lint`         | bootstrap, `cargo fmt --check` (also on `fuzz/`), `cargo clippy -D warnings`, then `deny` |
//! | `deny`         | `cargo deny --offline check advisories bans licenses sources` (deny.toml) against the RustSec snapshot in ../shared/advisory-db; installs cargo-deny and the snapshot first (scripts/bootstrap-deny.sh) |
//! | `fuzz [--time SECS] [--write-seeds] [TARGET...]` | builds the cargo fuzz targets of `fuzz/` and runs each for SECS s (default 15); fails on a crash |
//! | `lint-proto`   | `buf lint` on proto/ (STANDARD + COMMENTS) and `buf breaking` against main's proto/ |
//! | `tour`         | runs the README's `buf curl` tour against a real server            |
//! | `gen-clients`  | regenerates the Python, TypeScript and Go clients in sdk/{python,typescript,go} |
//! | `check`        | fails when `gen-clients` would change the checked-in generated code |
//! | `bench-compare` | eventbus (release) and Redis Streams / NATS JetStream (../shared/peerbench) on the same workload in one run; medians and ratios |
//! | `test-clients` | installs the client toolchains (scripts/bootstrap-clients.sh), then runs each language's smoke test and example against one real server |
//! | `kill-loop [--release] ARGS` | builds and runs the kill loop's long tier (`tests/src/bin/kill-loop.rs`: `--cycles 200 --durability fsync|buffered`, `--seed`, `--rate`, ...); figures in RELIABILITY.md. The CI tier runs inside `test` |
//! | `power-loss [--release] ARGS` | the kill loop with a power cut at every kill (`kill-loop --power-cut ARGS`: the data dir on the lossyfs FUSE filesystem, which drops unsynced writes); needs /dev/fuse and root; figures in RELIABILITY.md |
//! | `validate-deploy [--write]` | validates deploy/ (Dockerfile, kustomize + schemas, alerts with promtool, dashboard) and RUNBOOK.md offline; `--write` regenerates the PrometheusRule |

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

mod bench_cluster;
mod bench_compare;
mod clients;
mod cluster;
mod deploy;
mod fuzz;

/// What CI leaves out of the e2e run against the JetStream backend
/// (`E2E_BACKEND=jetstream`): the tests that start their own NATS cluster
/// (`cluster::`, `cluster_backup::`, `migrate::`: the first pass ran them
/// already, whatever the switch says) and one slow test (10,000 dead
/// letters redriven across a kill -9; its figures are no different on a
/// gateway). The full run is `E2E_BACKEND=jetstream cargo test --workspace
/// --test e2e` (README, "Testing"). Tests that cannot hold in cluster mode
/// skip with their reason; ARCHITECTURE.md, "Backend conformance", lists
/// them.
const JETSTREAM_E2E_SKIPS: &[&str] = &[
    "cluster::",
    "cluster_backup::",
    "migrate::",
    "crash::a_redrive_interrupted_by_kill_9_finishes_exactly_once",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(t, r)| (t.as_str(), r));
    match task {
        "bootstrap" => bootstrap(),
        "cluster" => cluster::main(rest),
        "serve" => {
            bootstrap()?;
            let mut cmd = eventbus_serve();
            cmd.args(rest);
            run(&mut cmd)
        }
        "test" => {
            bootstrap()?;
            // nats-server for the cluster-mode tests (tests/e2e/cluster.rs).
            run(Command::new("bash").arg(root().join("scripts/bootstrap-nats.sh")))?;
            lint_proto()?;
            deploy::validate()?;
            run(cargo().args(["test", "--workspace", "--all-targets"]))?;
            // The e2e suite again against the JetStream backend (a gateway
            // over a one-node NATS server per test); skips print their reason.
            run(cargo()
                .env("E2E_BACKEND", "jetstream")
                // --workspace: the same feature set as the run above, so
                // nothing is rebuilt.
                .args(["test", "--workspace", "--test", "e2e", "--"])
                .args(JETSTREAM_E2E_SKIPS.iter().flat_map(|t| ["--skip", t])))?;
            // Cluster-mode fault tests (node kill loop, all nodes killed, a
            // paused leader, the gateway's node paused, a killed gateway):
            // three nodes each, under load,
            // so on their own and one at a time.
            run(cargo().args([
                "test",
                "--workspace",
                "--test",
                "e2e",
                "--",
                "--ignored",
                "cluster_faults::",
                "--test-threads",
                "1",
            ]))?;
            // Injected storage faults: failpoints are compiled in only with
            // this feature, so they run as their own test binary.
            run(cargo().args([
                "test",
                "--package",
                "eventbus-tests",
                "--features",
                "failpoints",
                "--test",
                "failpoints",
            ]))?;
            // The SDK's documentation examples must compile (`--all-targets`
            // does not build doctests).
            run(cargo().args(["test", "--doc", "--package", "eventbus-sdk"]))?;
            // The short fuzzing tier: every target for fuzz::CI_SECONDS.
            fuzz::main(&[])?;
            tour()?;
            clients::bootstrap_clients()?;
            clients::check()?;
            clients::test_clients()
        }
        "lint" => {
            // clippy builds librocksdb-sys, which needs libclang: on a fresh
            // machine `lint` may run before anything else has bootstrapped.
            bootstrap()?;
            run(cargo().args(["fmt", "--all", "--", "--check"]))?;
            // fuzz/ is a workspace of its own.
            run(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))?;
            // With the failpoint tests, which only build with their feature.
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--features",
                "eventbus-tests/failpoints",
                "--",
                "-D",
                "warnings",
            ]))?;
            deny()
        }
        "deny" => deny(),
        "lint-proto" => {
            bootstrap()?;
            lint_proto()
        }
        "tour" => {
            bootstrap()?;
            tour()
        }
        "gen-clients" => {
            bootstrap()?;
            clients::bootstrap_clients()?;
            clients::gen_clients()
        }
        "check" => {
            bootstrap()?;
            clients::bootstrap_clients()?;
            clients::check()
        }
        "test-clients" => {
            bootstrap()?;
            clients::bootstrap_clients()?;
            build_workspace()?;
            clients::test_clients()
        }
        "validate-deploy" => {
            bootstrap()?;
            deploy::main(rest)
        }
        "bench-compare" => bench_compare::run(rest),
        "bench-cluster" => bench_cluster::run(rest),
        "kill-loop" => kill_loop(rest),
        "fuzz" => {
            bootstrap()?;
            fuzz::main(rest)
        }
        "power-loss" => {
            let mut args = vec!["--power-cut".to_string()];
            args.extend_from_slice(rest);
            kill_loop(&args)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <bootstrap | serve [ARGS] | test | lint | deny | lint-proto | tour \
                 | gen-clients | check | test-clients | bench-compare [ARGS] | kill-loop [ARGS] \
                 | power-loss [ARGS] | validate-deploy [--write] \
                 | fuzz [--time SECS] [--write-seeds] [TARGET...]>"
            );
            Ok(())
        }
    }
}

/// The checkout `cargo xtask` was run in: the nearest ancestor of the current
/// directory that holds `xtask/Cargo.toml`. Not `CARGO_MANIFEST_DIR`: with a
/// target dir shared between checkouts, Cargo may run an xtask binary built in
/// another checkout, whose baked-in path would point there.
fn root() -> PathBuf {
    let cwd = std::env::current_dir().expect("current dir");
    cwd.ancestors()
        .find(|d| d.join("xtask/Cargo.toml").is_file() && d.join("Cargo.toml").is_file())
        .unwrap_or(&cwd)
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// `cargo run ... eventbus serve`, for more arguments to follow.
fn eventbus_serve() -> Command {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--package",
        "eventbus-server",
        "--bin",
        "eventbus",
        "--",
        "serve",
    ]);
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed with {status}");
    Ok(())
}

fn bootstrap() -> Result<()> {
    run(Command::new("bash").arg(root().join("scripts/bootstrap.sh")))
}

/// The supply-chain gate: advisories (RustSec, offline snapshot), bans,
/// licenses and sources of every dependency, as deny.toml says. An advisory
/// may only be ignored there, with a written reason.
fn deny() -> Result<()> {
    run(Command::new("bash").arg(root().join("scripts/bootstrap-deny.sh")))?;
    // --offline needs the sources of every crate in Cargo.lock.
    run(cargo().args(["fetch", "--locked"]))?;
    run(cargo().args([
        "deny",
        "--offline",
        "check",
        "advisories",
        "bans",
        "licenses",
        "sources",
    ]))
}

fn buf() -> PathBuf {
    root().join(".tools/node_modules/.bin/buf")
}

/// `buf lint`, then `buf breaking` against the protos of the `main` branch
/// (`origin/main` in a clone without a local `main`). A change that breaks
/// wire or JSON compatibility (the WIRE_JSON rules of proto/buf.yaml) fails.
fn lint_proto() -> Result<()> {
    run(Command::new(buf())
        .args(["lint", "proto"])
        .current_dir(root()))?;
    eprintln!("xtask: buf lint passed");

    let Some(base) = ["main", "origin/main"].into_iter().find(|r| {
        Command::new("git")
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{r}^{{commit}}"),
            ])
            .current_dir(root())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }) else {
        eprintln!("xtask: no `main` or `origin/main` ref: skipping buf breaking");
        return Ok(());
    };
    let against = tempfile::tempdir()?;
    let archive = Command::new("git")
        .args(["archive", "--format=tar", base, "proto"])
        .current_dir(root())
        .output()?;
    ensure!(
        archive.status.success(),
        "git archive {base} proto failed: {}",
        String::from_utf8_lossy(&archive.stderr)
    );
    let mut tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(against.path())
        .stdin(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut tar.stdin.take().expect("piped"), &archive.stdout)?;
    ensure!(tar.wait()?.success(), "extracting {base}'s proto/ failed");
    run(Command::new(buf())
        .args(["breaking", "proto", "--against"])
        .arg(against.path().join("proto"))
        .current_dir(root()))
    .with_context(|| format!("proto/ breaks compatibility with {base}'s proto/"))?;
    eprintln!("xtask: buf breaking against {base} passed");
    Ok(())
}

/// Builds `eventbus` in release and returns its path.
/// The release `eventbus` binary, built here; or the one `BENCH_EVENTBUS_BIN`
/// names, so that a saved build (the "before" of a comparison) can be
/// measured in the same run as the peers.
fn release_eventbus() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BENCH_EVENTBUS_BIN") {
        let bin = PathBuf::from(bin);
        ensure!(bin.is_file(), "BENCH_EVENTBUS_BIN={}: no such file (the variable is not named EVENTBUS_*: the server reads those as config)", bin.display());
        return Ok(bin);
    }
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "eventbus-server",
        "--bin",
        "eventbus",
    ]))?;
    Ok(target_dir().join("release/eventbus"))
}

/// The body of `GET path` on 127.0.0.1:`port` when it answers 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let (head, body) = reply.split_once("\r\n\r\n")?;
    head.split(' ')
        .nth(1)
        .is_some_and(|code| code == "200")
        .then(|| body.to_string())
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A server child process that is stopped (SIGTERM, then SIGKILL) on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data_dir: &Path) -> Result<Server> {
        Server::start_bin(&target_dir().join("debug/eventbus"), data_dir, &[])
    }

    /// Starts `bin serve` on 127.0.0.1:0 with `extra` flags.
    fn start_bin(bin: &Path, data_dir: &Path, extra: &[&str]) -> Result<Server> {
        Server::start_with(Command::new(bin), data_dir, extra)
    }

    /// Starts `bin serve --storage jetstream` over the cluster at `urls`,
    /// whose monitoring ports (`monitors`) prove it syncs every write.
    fn start_gateway(bin: &Path, data_dir: &Path, urls: &str, monitors: &str) -> Result<Server> {
        let mut cmd = Command::new(bin);
        cmd.env("EVENTBUS_NATS_MONITOR_URL", monitors);
        Server::start_with(
            cmd,
            data_dir,
            &["--storage", "jetstream", "--nats-url", urls],
        )
    }

    fn start_with(mut cmd: Command, data_dir: &Path, extra: &[&str]) -> Result<Server> {
        let bin = PathBuf::from(cmd.get_program());
        let mut child = cmd
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                // Not the default 9090: parallel runs and a developer's own
                // server must not collide on the metrics port.
                "--metrics-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                bail!("server exited before serving")
            };
            let v: serde_json::Value = match serde_json::from_str(&line?) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v["fields"]["message"] == "eventbus serving" {
                break v["fields"]["addr"]
                    .as_str()
                    .context("addr field")?
                    .to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { child, addr })
    }

    /// SIGTERM and wait; the exit code must be 0.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn terminate(mut self) -> Result<()> {
        run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "server exited with {status} after SIGTERM"
                );
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "server did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the server binary for [`Server`]. Same package selection and targets
/// as `cargo test --workspace --all-targets`, so Cargo reuses that build instead
/// of resolving features differently.
fn build_workspace() -> Result<()> {
    run(cargo().args(["build", "--workspace", "--all-targets"]))
}

/// The kill loop's long tier: `kill-loop ARGS`, which runs the
/// `eventbus-under-test` binary built next to it. Dev profile by default (the
/// workspace build `cargo xtask test` already made); `--release` for release
/// binaries.
fn kill_loop(args: &[String]) -> Result<()> {
    let release = args.iter().any(|a| a == "--release");
    let profile = if release {
        run(cargo().args([
            "build",
            "--release",
            "--package",
            "eventbus-tests",
            "--bins",
        ]))?;
        "release"
    } else {
        build_workspace()?;
        "debug"
    };
    run(Command::new(target_dir().join(profile).join("kill-loop"))
        .args(args.iter().filter(|a| *a != "--release")))
}

/// Runs the README tour (the ```sh block after `<!-- tour -->`) verbatim against
/// a real server, with the port swapped for the one it got on 127.0.0.1:0.
fn tour() -> Result<()> {
    build_workspace()?;
    let readme = std::fs::read_to_string(root().join("README.md"))?;
    let start = readme
        .find("<!-- tour -->")
        .context("README has no <!-- tour --> marker")?;
    let block = readme[start..]
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .context("no ```sh block after the tour marker")?;

    let data = std::env::temp_dir().join(format!("eventbus-tour-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let server = Server::start(&data)?;
    let script = format!(
        "set -euo pipefail\nexport PATH=\"{}:$PATH\"\n{}",
        buf().parent().expect("bin dir").display(),
        block.replace("127.0.0.1:50051", &server.addr)
    );
    eprintln!("xtask: running the README tour against {}", server.addr);
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(root())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    ensure!(
        out.status.success(),
        "README tour failed ({}):\n{stdout}",
        out.status
    );
    for needle in [
        "\"offset\"",
        "\"ackId\"",
        "\"deliveryAttempt\": 1",
        "\"acked\": \"1\"",
        "\"backlog\": \"0\"",
    ] {
        ensure!(
            stdout.contains(needle),
            "README tour output lacks {needle}:\n{stdout}"
        );
    }
    server.terminate()?;
    let _ = std::fs::remove_dir_all(&data);
    eprintln!("xtask: README tour passed");
    Ok(())
}

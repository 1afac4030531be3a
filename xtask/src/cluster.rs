//! `cargo xtask cluster [SERVE ARGS]`: cluster mode on one machine, for
//! trying it out. Three nats-server 2.15 nodes (scripts/bootstrap-nats.sh)
//! on 127.0.0.1 with JetStream, synced writes and routes to each other,
//! their stores under `./cluster-data/`, then `eventbus serve --storage
//! jetstream` over them on 127.0.0.1:50051. Ctrl-C stops the gateway and
//! the nodes; the data stays for the next start.
//!
//! | node | client | cluster | monitoring |
//! |------|--------|---------|------------|
//! | n1   | 4222   | 6222    | 8222       |
//! | n2   | 4223   | 6223    | 8223       |
//! | n3   | 4224   | 6224    | 8224       |

use std::path::Path;
use std::process::{Child, Command};

use anyhow::{Context, Result};

use crate::{bootstrap, eventbus_serve, root, run};

const NODES: u16 = 3;

/// The nodes, stopped (SIGTERM) when this is dropped.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

pub fn main(serve_args: &[String]) -> Result<()> {
    bootstrap()?;
    let dir = root().join("cluster-data");
    let cluster = Cluster::start(&dir, 4222)?;
    let mut gateway = eventbus_serve();
    gateway
        .args(["--storage", "jetstream", "--nats-url", &cluster.urls])
        .arg("--data-dir")
        .arg(dir.join("gateway"))
        .env("EVENTBUS_NATS_MONITOR_URL", &cluster.monitors)
        .args(serve_args);
    run(&mut gateway)
}

/// Three running nodes and how to reach them.
pub struct Cluster {
    _nodes: Nodes,
    /// Client URLs, comma-separated (what `--nats-url` takes).
    pub urls: String,
    /// Monitoring URLs, comma-separated.
    pub monitors: String,
    monitor_ports: Vec<u16>,
}

impl Cluster {
    /// Starts three nodes with their stores under `dir`: node i listens
    /// for clients on `base + i`, for routes on `base + 2000 + i` and for
    /// monitoring on `base + 4000 + i` (4222 → 6222, 8222 as in NATS).
    pub fn start(dir: &Path, base: u16) -> Result<Cluster> {
        run(Command::new("bash").arg(root().join("scripts/bootstrap-nats.sh")))?;
        let bin = root().join(".tools/nats/bin/nats-server");
        let mut nodes = Nodes(Vec::new());
        for i in 0..NODES {
            let name = format!("n{}", i + 1);
            let store = dir.join(&name);
            std::fs::create_dir_all(&store)
                .with_context(|| format!("creating {}", store.display()))?;
            let routes: Vec<String> = (0..NODES)
                .filter(|&j| j != i)
                .map(|j| format!("\"nats-route://127.0.0.1:{}\"", base + 2000 + j))
                .collect();
            let config = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{}\"\nhttp: \"127.0.0.1:{}\"\n\
                 max_payload: 8388608\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
                 cluster {{\n  name: eventbus-local\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                base + i,
                base + 4000 + i,
                store.display(),
                base + 2000 + i,
                routes.join(", ")
            );
            let config_path = dir.join(format!("{name}.conf"));
            std::fs::write(&config_path, config)?;
            let log_path = dir.join(format!("{name}.log"));
            let log = std::fs::File::create(&log_path)?;
            eprintln!(
                "xtask: starting nats-server {name} (log: {})",
                log_path.display()
            );
            nodes.0.push(
                Command::new(&bin)
                    .arg("--config")
                    .arg(&config_path)
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("starting {}", bin.display()))?,
            );
        }
        let urls: Vec<String> = (0..NODES)
            .map(|i| format!("nats://127.0.0.1:{}", base + i))
            .collect();
        let monitor_ports: Vec<u16> = (0..NODES).map(|i| base + 4000 + i).collect();
        let monitors: Vec<String> = monitor_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        Ok(Cluster {
            _nodes: nodes,
            urls: urls.join(","),
            monitors: monitors.join(","),
            monitor_ports,
        })
    }

    /// Waits (up to 60 s) until the meta leader sees every node as a
    /// current peer: before that, an R3 stream cannot be placed.
    pub fn wait_formed(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let formed = self.monitor_ports.iter().any(|&port| {
                crate::http_get(port, "/jsz")
                    .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                    .and_then(|jsz| jsz["meta_cluster"]["replicas"].as_array().cloned())
                    .is_some_and(|peers| {
                        peers.len() == usize::from(NODES) - 1
                            && peers.iter().all(|p| p["current"] == true)
                    })
            });
            if formed {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        anyhow::bail!("the NATS cluster did not form within 60 s")
    }

    /// How many partition streams each node leads (`/jsz`), by node name.
    pub fn leaders(&self) -> std::collections::BTreeMap<String, usize> {
        let mut leaders = std::collections::BTreeMap::new();
        let Some(jsz) = crate::http_get(self.monitor_ports[0], "/jsz?accounts=true&streams=true")
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        else {
            return leaders;
        };
        let details = jsz["account_details"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for stream in details
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        {
            let name = stream["name"].as_str().unwrap_or_default();
            if name.starts_with("EB_T") || name.starts_with("BENCH") {
                if let Some(leader) = stream["cluster"]["leader"].as_str() {
                    *leaders.entry(leader.to_string()).or_default() += 1;
                }
            }
        }
        leaders
    }
}

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

use std::process::{Child, Command};

use anyhow::{Context, Result};

use crate::{bootstrap, eventbus_serve, root, run};

const NODES: u16 = 3;

/// The nodes, stopped (SIGTERM, then killed) when this is dropped.
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
    run(Command::new("bash").arg(root().join("scripts/bootstrap-nats.sh")))?;
    let dir = root().join("cluster-data");
    let bin = root().join(".tools/nats/bin/nats-server");
    let mut nodes = Nodes(Vec::new());
    for i in 0..NODES {
        let name = format!("n{}", i + 1);
        let store = dir.join(&name);
        std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
        let routes: Vec<String> = (0..NODES)
            .filter(|&j| j != i)
            .map(|j| format!("\"nats-route://127.0.0.1:{}\"", 6222 + j))
            .collect();
        let config = format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{}\"\nhttp: \"127.0.0.1:{}\"\n\
             max_payload: 8388608\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
             cluster {{\n  name: eventbus-local\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
            4222 + i,
            8222 + i,
            store.display(),
            6222 + i,
            routes.join(", ")
        );
        let config_path = dir.join(format!("{name}.conf"));
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        eprintln!("xtask: starting nats-server {name} (log: cluster-data/{name}.log)");
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
        .map(|i| format!("nats://127.0.0.1:{}", 4222 + i))
        .collect();
    let monitors: Vec<String> = (0..NODES)
        .map(|i| format!("http://127.0.0.1:{}", 8222 + i))
        .collect();
    let mut gateway = eventbus_serve();
    gateway
        .args(["--storage", "jetstream", "--nats-url", &urls.join(",")])
        .arg("--data-dir")
        .arg(dir.join("gateway"))
        .env("EVENTBUS_NATS_MONITOR_URL", monitors.join(","))
        .args(serve_args);
    run(&mut gateway)
}

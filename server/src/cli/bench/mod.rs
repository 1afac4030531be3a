//! `eventbus bench`: the peers' workload (see ../shared/peerbench) against a
//! running eventbus, through the Rust SDK over real gRPC. Prints one JSON
//! line with peerbench's field names, so results line up with Redis Streams
//! and NATS JetStream runs of the same workload.
//!
//! Phases, each on fresh topics:
//! * publish: `--publishers` connections, each keeping `--depth` publishes in
//!   flight, `--messages` events of `--payload` bytes in total.
//! * consume: a subscription (created before the publish phase) drained by
//!   `--publishers` members, acking every event.
//! * latency: one publisher paced at `--rate` for `--latency-secs`;
//!   latency = receipt time minus the *scheduled* send time, so a stall shows
//!   up as latency instead of as fewer sends (no coordinated omission).
//! * flood (not by default): publish as fast as possible, ignoring
//!   RetryInfo, for `--latency-secs` ([`flood`]); run as another principal
//!   next to a latency run, it is the quota-isolation measurement.

mod consume;
mod cpu;
mod flood;
mod jetstream;
mod latency;
mod publish;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use eventbus::{Client, ClientBuilder, SubscriberConfig, Subscription, SubscriptionSettings};

/// Flags (peerbench's names and defaults).
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Connections (publish) and subscription members (consume, latency).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Publishes in flight per connection; also the subscription members'
    /// max_in_flight.
    #[arg(long, default_value_t = 64)]
    pub depth: usize,
    /// Events published (and consumed) in total.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
    /// Offered rate of the latency phase, events per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Length of the latency phase in seconds (0 skips it).
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Phases to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "publish,consume,latency")]
    pub phases: Vec<Phase>,
    /// A phase that runs longer is cut; its rates are over what completed.
    #[arg(long, default_value_t = 60)]
    pub phase_timeout: u64,
    /// Label of the server's durability mode for the JSON line (fsync or os);
    /// the tool cannot see the server's config.
    #[arg(long, default_value = "fsync")]
    pub mode: String,
    /// Run number for the JSON line.
    #[arg(long, default_value_t = 1)]
    pub run: u32,
    /// Publish calls in flight per connection (the SDK publisher's lanes).
    /// The `--depth` publishes in flight are spread over them.
    #[arg(long, default_value_t = 4)]
    pub lanes: usize,
    /// Publish without idempotency keys (the peers have none). By default
    /// every event carries one, as the SDK does.
    #[arg(long)]
    pub no_idempotency: bool,
    /// Publish by unary Publish calls instead of the SDK's default, one
    /// PublishStream per connection (to measure what the stream saves).
    #[arg(long)]
    pub unary_publish: bool,
    /// Consume with Subscribe and unary Ack calls instead of the SDK's
    /// default, settling on one SubscribeStream per member (to measure what
    /// the stream saves).
    #[arg(long)]
    pub unary_settle: bool,
    /// Connections of the `flood` phase, each with 8 publishes of 100 events
    /// in flight.
    #[arg(long, default_value_t = 4)]
    pub flood_connections: usize,
    /// Run the publish and consume phases straight against these NATS
    /// JetStream servers (comma-separated URLs), without eventbus: one
    /// stream per partition, as a gateway lays a topic out. `--server` is
    /// not used then.
    #[arg(long, value_name = "NATS_URLS")]
    pub jetstream: Option<String>,
    /// Replicas of each stream with `--jetstream`.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// The server's process id, when it runs on this machine: the JSON line
    /// then gives its CPU time per event of the publish and consume phases
    /// (`pub_server_cpu_us`, `consume_server_cpu_us`), next to this tool's
    /// own (`*_client_cpu_us`).
    #[arg(long)]
    pub server_pid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Publish,
    Consume,
    Latency,
    /// Only a flooding neighbour, as this tool's own principal, for
    /// `--latency-secs`: run it as a separate process next to a latency run.
    Flood,
}

/// Nanoseconds since the first call: one clock for senders and receivers.
pub(crate) fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A payload of `size` bytes whose first 8 carry `stamp` (little endian).
pub(crate) fn payload(size: usize, stamp: u64) -> Vec<u8> {
    let mut p = vec![b'x'; size.max(8)];
    p[..8].copy_from_slice(&stamp.to_le_bytes());
    p
}

pub(crate) fn stamp_of(payload: &[u8]) -> u64 {
    payload
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

/// One connection per worker: the peers' clients use separate connections too.
pub(crate) async fn connect(server: &ClientBuilder, n: usize) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(
            server
                .clone()
                .connect()
                .await
                .context("connecting to the server")?,
        );
    }
    Ok(out)
}

/// Creates a topic and subscription with unique names for one phase.
pub(crate) async fn fresh_topic(
    client: &Client,
    label: &str,
    partitions: u32,
    subscription: bool,
) -> anyhow::Result<String> {
    let topic = format!("bench-{label}-{}-{}", std::process::id(), now_ns());
    client.admin().create_topic(&topic, partitions).await?;
    if subscription {
        client
            .admin()
            .create_subscription(&topic, "bench", SubscriptionSettings::default())
            .await?;
    }
    Ok(topic)
}

/// A member of the benchmark subscription, with `--depth` deliveries in
/// flight, settling as `--unary-settle` says.
pub(crate) fn member(client: &Client, topic: &str, a: &BenchArgs) -> Subscription {
    client.subscribe_with(
        topic,
        "bench",
        SubscriberConfig {
            max_in_flight: a.depth.max(1) as u32,
            settle_on_stream: !a.unary_settle,
            ..Default::default()
        },
    )
}

/// Results, in peerbench's field names.
#[derive(Default)]
pub(crate) struct Outcome {
    pub pub_ok: u64,
    pub pub_err: u64,
    pub pub_secs: f64,
    /// Publish RPCs the SDK made (its batches), to see the events per call.
    pub pub_calls: u64,
    pub consumed: u64,
    pub consume_secs: f64,
    pub latency: Option<latency::Latency>,
    pub flood: Option<flood::FloodCounts>,
    pub timed_out: Vec<&'static str>,
    pub pub_cpu: cpu::CpuPerEvent,
    pub consume_cpu: cpu::CpuPerEvent,
}

pub fn run(server: ClientBuilder, args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    now_ns();
    let line = runtime.block_on(bench(&server, &args))?;
    println!("{line}");
    Ok(())
}

async fn bench(server: &ClientBuilder, a: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    if let Some(urls) = &a.jetstream {
        let mut o = Outcome::default();
        jetstream::run(urls, a.replicas, a, &mut o).await?;
        let mut line = report(a, &o);
        line["peer"] = "jetstream-direct".into();
        line["replicas"] = a.replicas.into();
        return Ok(line);
    }
    let clients = connect(server, a.publishers).await?;
    let timeout = Duration::from_secs(a.phase_timeout);
    let mut o = Outcome::default();
    let wants = |p| a.phases.contains(&p);
    if wants(Phase::Publish) || wants(Phase::Consume) {
        let topic = fresh_topic(&clients[0], "load", a.partitions, true).await?;
        let mark = cpu::CpuMark::now(a.server_pid);
        publish::run(&clients, &topic, a, timeout, &mut o).await?;
        o.pub_cpu = mark.per_event(a.server_pid, o.pub_ok);
        if wants(Phase::Consume) {
            let mark = cpu::CpuMark::now(a.server_pid);
            consume::run(&clients, &topic, a, o.pub_ok, timeout, &mut o).await?;
            o.consume_cpu = mark.per_event(a.server_pid, o.consumed);
        }
    }
    if wants(Phase::Flood) {
        let flood = flood::Flood::start(server, a).await?;
        tokio::time::sleep(Duration::from_secs(a.latency_secs)).await;
        o.flood = Some(flood.stop().await);
    }
    if wants(Phase::Latency) && a.latency_secs > 0 {
        latency::run(&clients, a, timeout, &mut o).await?;
    }
    Ok(report(a, &o))
}

fn report(a: &BenchArgs, o: &Outcome) -> serde_json::Value {
    let mut j = serde_json::json!({
        "peer": "eventbus",
        "mode": a.mode,
        "run": a.run,
        "server": format!("eventbus {}", env!("CARGO_PKG_VERSION")),
        "payload": a.payload,
        "publishers": a.publishers,
        "depth": a.depth,
        "messages": a.messages,
        "partitions": a.partitions,
        "idempotency": !a.no_idempotency,
        "publish_stream": !a.unary_publish,
        "settle_stream": !a.unary_settle,
        "lanes": a.lanes,
    });
    let rate = |n: u64, secs: f64| {
        if secs > 0.0 {
            (n as f64 / secs).round()
        } else {
            0.0
        }
    };
    if o.pub_secs > 0.0 {
        j["pub_acked"] = o.pub_ok.into();
        j["pub_errors"] = o.pub_err.into();
        j["pub_calls"] = o.pub_calls.into();
        j["pub_msgs_s"] = rate(o.pub_ok, o.pub_secs).into();
        let mb = o.pub_ok as f64 * a.payload as f64 / 1e6 / o.pub_secs;
        j["pub_mb_s"] = ((mb * 10.0).round() / 10.0).into();
    }
    if o.consume_secs > 0.0 {
        j["consumed"] = o.consumed.into();
        j["consume_msgs_s"] = rate(o.consumed, o.consume_secs).into();
    }
    for (phase, cpu) in [("pub", o.pub_cpu), ("consume", o.consume_cpu)] {
        if let Some(us) = cpu.client_us {
            j[format!("{phase}_client_cpu_us")] = us.into();
        }
        if let Some(us) = cpu.server_us {
            j[format!("{phase}_server_cpu_us")] = us.into();
        }
    }
    if let Some(l) = &o.latency {
        j["lat_rate"] = a.rate.into();
        j["lat_sent"] = l.sent.into();
        j["lat_received"] = l.hist.len().into();
        for (k, q) in [
            ("lat_p50_us", 0.5),
            ("lat_p99_us", 0.99),
            ("lat_p999_us", 0.999),
        ] {
            j[k] = l.hist.value_at_quantile(q).into();
        }
        j["lat_max_us"] = l.hist.max().into();
    }
    if let Some(f) = &o.flood {
        j["flood_accepted"] = f.accepted.into();
        j["flood_refused"] = f.refused.into();
    }
    if !o.timed_out.is_empty() {
        j["timed_out"] = o.timed_out.clone().into();
    }
    j
}

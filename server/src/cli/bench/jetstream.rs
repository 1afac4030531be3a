//! `eventbus bench --jetstream nats://a:4222,...`: the publish and consume
//! phases straight against JetStream, with no gateway: the floor that
//! cluster mode's cost is measured against (issue 14, BENCHMARKS.md,
//! "Cluster mode").
//!
//! It mirrors what a gateway does for a topic of `--partitions` partitions:
//! one stream per partition (file storage, `--replicas`, synced writes as
//! the servers are configured), `--publishers` connections each keeping
//! `--depth` publishes in flight, round-robin over the streams, every one
//! waiting for its PubAck. Consume: one durable pull consumer per stream
//! (explicit ack), drained by `--publishers` members, each ack a request
//! answered by the consumer's leader, as the gateway settles.

use std::collections::VecDeque;
use std::future::IntoFuture as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream};
use tokio::time::Instant;

use super::{BenchArgs, Outcome};

/// The streams of one run: `<prefix>_P<p>` on subject `<prefix>.p<p>`.
struct Streams {
    prefix: String,
    count: u32,
}

impl Streams {
    fn name(&self, p: u32) -> String {
        format!("{}_P{p}", self.prefix)
    }

    fn subject(&self, p: u32) -> String {
        format!("{}.p{p}", self.prefix.to_lowercase())
    }
}

async fn connect(urls: &str) -> anyhow::Result<jetstream::Context> {
    let servers = urls
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{urls:?}: give nats://host:port, comma-separated"))?;
    let client = async_nats::connect(servers)
        .await
        .with_context(|| format!("connecting to NATS at {urls}"))?;
    Ok(jetstream::new(client))
}

pub async fn run(
    urls: &str,
    replicas: usize,
    a: &BenchArgs,
    o: &mut Outcome,
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(a.phase_timeout);
    let admin = connect(urls).await?;
    let streams = Streams {
        prefix: format!("BENCH{}", super::now_ns() ^ u64::from(std::process::id())),
        count: a.partitions.max(1),
    };
    for p in 0..streams.count {
        let stream = admin
            .create_stream(stream::Config {
                name: streams.name(p),
                subjects: vec![streams.subject(p)],
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .context("creating a stream")?;
        stream
            .create_consumer(pull::Config {
                durable_name: Some("bench".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .context("creating a consumer")?;
    }
    let streams = Arc::new(streams);
    publish(urls, &streams, a, timeout, o).await?;
    if a.phases.contains(&super::Phase::Consume) {
        consume(urls, &streams, a, o.pub_ok, timeout, o).await?;
    }
    for p in 0..streams.count {
        let _ = admin.delete_stream(streams.name(p)).await;
    }
    Ok(())
}

async fn publish(
    urls: &str,
    streams: &Arc<Streams>,
    a: &BenchArgs,
    timeout: Duration,
    o: &mut Outcome,
) -> anyhow::Result<()> {
    let n = a.publishers.max(1) as u64;
    let mut workers = tokio::task::JoinSet::new();
    let started = Instant::now();
    let deadline = started + timeout;
    for i in 0..n {
        let js = connect(urls).await?;
        let count = a.messages / n + u64::from(i < a.messages % n);
        let (depth, streams) = (a.depth.max(1), streams.clone());
        let subjects: Vec<String> = (0..streams.count).map(|p| streams.subject(p)).collect();
        let body = bytes::Bytes::from(super::payload(a.payload, 0));
        workers.spawn(async move {
            let (mut ok, mut err) = (0u64, 0u64);
            let mut in_flight = VecDeque::with_capacity(depth);
            for k in 0..count {
                if Instant::now() > deadline {
                    break;
                }
                if in_flight.len() >= depth {
                    let ack: jetstream::context::PublishAckFuture =
                        in_flight.pop_front().expect("non-empty");
                    match ack.await {
                        Ok(_) => ok += 1,
                        Err(_) => err += 1,
                    }
                }
                let subject = subjects[((k + i) % subjects.len() as u64) as usize].clone();
                match js.publish(subject, body.clone()).await {
                    Ok(ack) => in_flight.push_back(ack),
                    Err(_) => err += 1,
                }
            }
            for ack in in_flight {
                match tokio::time::timeout_at(deadline, ack.into_future()).await {
                    Ok(Ok(_)) => ok += 1,
                    _ => err += 1,
                }
            }
            (ok, err)
        });
    }
    while let Some(res) = workers.join_next().await {
        let (ok, err) = res?;
        o.pub_ok += ok;
        o.pub_err += err;
        o.pub_calls += ok + err;
    }
    o.pub_secs = started.elapsed().as_secs_f64();
    if o.pub_ok + o.pub_err < a.messages {
        o.timed_out.push("publish");
    }
    Ok(())
}

async fn consume(
    urls: &str,
    streams: &Arc<Streams>,
    a: &BenchArgs,
    target: u64,
    timeout: Duration,
    o: &mut Outcome,
) -> anyhow::Result<()> {
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut members = tokio::task::JoinSet::new();
    // Every member reads every stream, as the gateway's members of a group
    // share every partition.
    for _ in 0..a.publishers.max(1) {
        let js = connect(urls).await?;
        for p in 0..streams.count {
            let consumer: jetstream::consumer::PullConsumer = js
                .get_consumer_from_stream("bench", streams.name(p))
                .await
                .context("opening the consumer")?;
            let messages = consumer
                .stream()
                .max_messages_per_batch(a.depth.max(1))
                .messages()
                .await
                .context("pulling")?;
            members.spawn(super::consume::ack_each(
                messages,
                acked.clone(),
                |m| async move { m.double_ack().await.is_ok() },
            ));
        }
    }
    super::consume::drained(
        members,
        || acked.load(std::sync::atomic::Ordering::Relaxed),
        target,
        started + timeout,
        o,
    )
    .await;
    o.consume_secs = started.elapsed().as_secs_f64();
    Ok(())
}

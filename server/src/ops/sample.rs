//! Gauges and per-subscription counters sampled at scrape time from the
//! broker, so they are exact at the moment Prometheus reads them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use eventbus_broker::SubscriptionStats;
use eventbus_broker::{Backend, Broker, ClusterReport};

use super::names::*;
use super::Ops;

/// The filesystem holding the data dir.
#[derive(Debug, Clone, Copy)]
pub struct DiskUsage {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl DiskUsage {
    pub fn used_fraction(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        1.0 - self.available_bytes as f64 / self.total_bytes as f64
    }
}

pub fn disk_usage(dir: &Path) -> std::io::Result<DiskUsage> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(DiskUsage {
        total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
        // f_bavail: what an unprivileged process may still use.
        available_bytes: st.f_bavail.saturating_mul(st.f_frsize),
    })
}

/// The per-subscription counters, in the order of [`counts`].
const COUNTERS: [&str; 6] = [
    DELIVERED,
    ACKED,
    NACKED,
    REDELIVERED,
    DEAD_LETTERED,
    FILTERED,
];

fn counts(s: &SubscriptionStats) -> [u64; 6] {
    [
        s.delivered,
        s.acked,
        s.nacked,
        s.redelivered,
        s.dead_lettered,
        s.filtered,
    ]
}

/// Per (topic, subscription) label pair, summed: several subscriptions past
/// the label cap share `_other`.
#[derive(Default)]
struct SubTotals {
    /// Increases since the last scrape, in [`COUNTERS`] order.
    counts: [u64; 6],
    backlog: u64,
    in_flight: u64,
    oldest_unacked_age: f64,
    paused: u64,
    dlq_size: u64,
    dlq_oldest_age: f64,
}

/// Refreshes every sampled metric. Errors (a subscription deleted meanwhile)
/// skip that subscription.
pub async fn sample(ops: &Ops) {
    metrics::gauge!(SUBSCRIBE_STREAMS).set(super::OPEN_STREAMS.load(Ordering::Relaxed) as f64);
    let ready = ops.not_ready().is_none();
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    if let Ok(d) = disk_usage(ops.data_dir()) {
        metrics::gauge!(DISK_TOTAL).set(d.total_bytes as f64);
        metrics::gauge!(DISK_AVAILABLE).set(d.available_bytes as f64);
    }
    let Some(broker) = ops.broker() else { return };
    let state = broker.health();
    for label in eventbus_broker::StorageHealth::LABELS {
        let on = if label == state.label() { 1.0 } else { 0.0 };
        metrics::gauge!(STORAGE_STATE, "state" => label).set(on);
    }
    let backend = broker.backend();
    for b in [Backend::RocksDb, Backend::JetStream] {
        let on = if b == backend { 1.0 } else { 0.0 };
        metrics::gauge!(BACKEND, "backend" => b.label()).set(on);
    }
    sample_subscriptions(ops, broker.as_ref()).await;
    if let Ok(Some(cluster)) = broker.cluster().await {
        sample_cluster(&cluster);
    }
    if let Ok(report) = broker.storage().await {
        let st = report.stats;
        metrics::gauge!(DISK_RESERVE).set(report.disk_reserve_bytes as f64);
        metrics::gauge!(STORAGE_SIZE).set((st.sst_bytes + st.memtable_bytes) as f64);
        metrics::gauge!(PENDING_COMPACTION).set(st.pending_compaction_bytes as f64);
    }
}

async fn sample_subscriptions(ops: &Ops, broker: &dyn Broker) {
    let now_ms = eventbus_broker::now_ms();
    let age = |ms: Option<u64>| ms.map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1e3);
    let mut totals: HashMap<(String, String), SubTotals> = HashMap::new();
    // The actors count since they started; the exported counters must only
    // go up, also when a subscription is deleted and recreated under the same
    // name or shares the `_other` label: export the increase since the last
    // scrape, per subscription id.
    let mut all = Vec::new();
    for topic in broker.list_topics().await.unwrap_or_default() {
        if let Ok((subs, _)) = broker
            .list_subscriptions(&topic.name, None, usize::MAX)
            .await
        {
            all.push((topic.name, subs));
        }
    }
    // Locked only after the awaits: concurrent scrapes each export only
    // what the other has not.
    let mut seen = ops.counted.lock().expect("not poisoned");
    let mut still_there = std::collections::HashSet::new();
    for (name, subs) in &all {
        for sub in subs {
            let s = &sub.stats;
            let t = totals
                .entry(ops.labels.subscription(name, &sub.name))
                .or_default();
            let now = counts(s);
            still_there.insert(sub.id);
            let before = seen.insert(sub.id, now).unwrap_or_default();
            for ((total, n), b) in t.counts.iter_mut().zip(now).zip(before) {
                // A count below the last one means the actor restarted: all new.
                *total += if n >= b { n - b } else { n };
            }
            t.backlog += s.backlog;
            t.in_flight += s.in_flight;
            t.oldest_unacked_age = t.oldest_unacked_age.max(age(s.oldest_unacked_ms));
            t.paused += u64::from(sub.paused);
            t.dlq_size += s.dead_letter_count;
            t.dlq_oldest_age = t.dlq_oldest_age.max(age(s.oldest_dead_letter_ms));
        }
    }
    seen.retain(|id, _| still_there.contains(id));
    drop(seen);
    for ((topic, sub), t) in totals {
        let l = [("topic", topic), ("subscription", sub)];
        for (name, n) in COUNTERS.iter().zip(t.counts) {
            metrics::counter!(*name, &l).increment(n);
        }
        metrics::gauge!(BACKLOG, &l).set(t.backlog as f64);
        metrics::gauge!(IN_FLIGHT, &l).set(t.in_flight as f64);
        metrics::gauge!(OLDEST_UNACKED_AGE, &l).set(t.oldest_unacked_age);
        metrics::gauge!(PAUSED, &l).set(t.paused as f64);
        metrics::gauge!(DLQ_SIZE, &l).set(t.dlq_size as f64);
        metrics::gauge!(DLQ_OLDEST_AGE, &l).set(t.dlq_oldest_age);
    }
}

fn sample_cluster(c: &ClusterReport) {
    metrics::gauge!(CLUSTER_STREAMS).set(c.streams.len() as f64);
    metrics::gauge!(CLUSTER_STREAMS_WITHOUT_LEADER).set(c.streams_without_leader() as f64);
    metrics::gauge!(CLUSTER_REPLICAS_NOT_CURRENT).set(c.replicas_not_current() as f64);
    metrics::gauge!(CLUSTER_LAGGING_PEERS).set(c.lagging_peers().len() as f64);
    // Dead-letter and redrive streams (`EB_D<id>`, `EB_R<id>`) are one per
    // subscription: as labels they would grow with the subscriptions. The
    // totals above count them.
    let per_subscription = |n: &str| n.starts_with("EB_D") || n.starts_with("EB_R");
    for s in c.streams.iter().filter(|s| !per_subscription(&s.name)) {
        let l = [("stream", s.name.clone())];
        let current = s.replicas.iter().filter(|r| r.current).count();
        let lag = s.replicas.iter().map(|r| r.lag).max().unwrap_or(0);
        metrics::gauge!(CLUSTER_STREAM_REPLICAS_CURRENT, &l).set(current as f64);
        metrics::gauge!(CLUSTER_STREAM_REPLICA_LAG, &l).set(lag as f64);
    }
}

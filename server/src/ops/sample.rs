//! Gauges and per-subscription counters sampled at scrape time from the
//! broker, so they are exact at the moment Prometheus reads them.

use std::collections::HashMap;
use std::path::Path;

use eventbus_log::Broker;

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

/// Per (topic, subscription) label pair, summed: several subscriptions past
/// the label cap share `_other`.
#[derive(Default)]
struct SubTotals {
    delivered: u64,
    acked: u64,
    nacked: u64,
    redelivered: u64,
    dead_lettered: u64,
    filtered: u64,
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
    let ready = ops.not_ready().is_none();
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    if let Ok(d) = disk_usage(ops.data_dir()) {
        metrics::gauge!(DISK_TOTAL).set(d.total_bytes as f64);
        metrics::gauge!(DISK_AVAILABLE).set(d.available_bytes as f64);
    }
    let Some(broker) = ops.broker() else { return };
    sample_subscriptions(ops, &broker).await;
    let log = broker.log().clone();
    if let Ok(st) = tokio::task::spawn_blocking(move || log.storage_stats()).await {
        metrics::gauge!(STORAGE_SIZE).set((st.sst_bytes + st.memtable_bytes) as f64);
        metrics::gauge!(PENDING_COMPACTION).set(st.pending_compaction_bytes as f64);
    }
}

async fn sample_subscriptions(ops: &Ops, broker: &Broker) {
    let now_ms = eventbus_log::meta::now_ms();
    let age = |ms: Option<u64>| ms.map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1e3);
    let mut totals: HashMap<(String, String), SubTotals> = HashMap::new();
    for topic in broker.list_topics() {
        let name = &topic.state.meta.name;
        let Ok(subs) = broker.list_subscriptions(name).await else {
            continue;
        };
        for sub in subs {
            let s = &sub.stats;
            let t = totals
                .entry(ops.labels.subscription(name, &sub.meta.name))
                .or_default();
            t.delivered += s.delivered;
            t.acked += s.acked;
            t.nacked += s.nacked;
            t.redelivered += s.redelivered;
            t.dead_lettered += s.dead_lettered;
            t.filtered += s.filtered;
            t.backlog += s.backlog;
            t.in_flight += s.in_flight;
            t.oldest_unacked_age = t.oldest_unacked_age.max(age(s.oldest_unacked_ms));
            t.paused += u64::from(sub.meta.paused);
            t.dlq_size += s.dead_letter_count;
            t.dlq_oldest_age = t.dlq_oldest_age.max(age(s.oldest_dead_letter_ms));
        }
    }
    for ((topic, sub), t) in totals {
        let l = [("topic", topic), ("subscription", sub)];
        metrics::counter!(DELIVERED, &l).absolute(t.delivered);
        metrics::counter!(ACKED, &l).absolute(t.acked);
        metrics::counter!(NACKED, &l).absolute(t.nacked);
        metrics::counter!(REDELIVERED, &l).absolute(t.redelivered);
        metrics::counter!(DEAD_LETTERED, &l).absolute(t.dead_lettered);
        metrics::counter!(FILTERED, &l).absolute(t.filtered);
        metrics::gauge!(BACKLOG, &l).set(t.backlog as f64);
        metrics::gauge!(IN_FLIGHT, &l).set(t.in_flight as f64);
        metrics::gauge!(OLDEST_UNACKED_AGE, &l).set(t.oldest_unacked_age);
        metrics::gauge!(PAUSED, &l).set(t.paused as f64);
        metrics::gauge!(DLQ_SIZE, &l).set(t.dlq_size as f64);
        metrics::gauge!(DLQ_OLDEST_AGE, &l).set(t.dlq_oldest_age);
    }
}

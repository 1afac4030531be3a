//! `eventbus status`: one screen for an operator — topics with publish
//! rates, subscriptions with backlog, lag and dead letters, disk usage, the
//! backend and, in cluster mode, the streams' leaders and replicas.

use eventbus::v1::{ClusterStatus, GetStatusResponse, StorageState};
use serde_json::{json, Value};

use super::output::{dur_text, secs_json, Table};
use super::sub::{state_cells, subscription_json};
use super::Ctx;

pub async fn run(ctx: Ctx) -> anyhow::Result<()> {
    let status = ctx.admin.status().await?;
    if ctx.out.json {
        ctx.out.doc(&status_json(&status))
    } else {
        ctx.out.text(&status_text(&status))
    }
}

fn status_text(s: &GetStatusResponse) -> String {
    let mut topics = Table::new(&["TOPIC", "PARTITIONS", "EVENTS", "PUBLISH/S"]);
    let mut subs = Table::new(&[
        "TOPIC",
        "SUBSCRIPTION",
        "PAUSED",
        "BACKLOG",
        "IN-FLIGHT",
        "OLDEST-UNACKED",
        "DLQ",
        "OLDEST-DLQ",
        "MEMBERS",
    ]);
    for t in &s.topics {
        let topic = t.topic.clone().unwrap_or_default();
        topics.row(vec![
            topic.name.clone(),
            topic.partitions.to_string(),
            t.events.to_string(),
            format!("{:.1}", t.publish_rate),
        ]);
        for sub in &t.subscriptions {
            let st = sub.stats.unwrap_or_default();
            let mut row = vec![topic.name.clone(), sub.name.clone()];
            row.extend(state_cells(sub));
            row.push(dur_text(&st.oldest_dead_letter_age));
            row.push(st.members.to_string());
            subs.row(row);
        }
    }
    let storage = s.storage.clone().unwrap_or_default();
    let used = storage
        .disk_total_bytes
        .saturating_sub(storage.disk_available_bytes);
    let disk = format!(
        "data dir {}: storage {}, pending compaction {}, disk {} of {} used ({:.1} %)",
        storage.data_dir,
        bytes_text(storage.storage_bytes),
        bytes_text(storage.pending_compaction_bytes),
        bytes_text(used),
        bytes_text(storage.disk_total_bytes),
        if storage.disk_total_bytes == 0 {
            0.0
        } else {
            used as f64 * 100.0 / storage.disk_total_bytes as f64
        }
    );
    let state = match storage.state_reason.as_str() {
        "" => format!("storage: {}", storage_state_name(storage.state())),
        why => format!("storage: {}: {why}", storage_state_name(storage.state())),
    };
    let backend = match s.backend.as_str() {
        "" => "backend: unknown (an older server)".to_string(),
        b => format!("backend: {b}"),
    };
    let mut out = format!(
        "{}\n\n{}\n\n{backend}\n{disk}\n{state}",
        topics.render(),
        subs.render()
    );
    if let Some(c) = &s.cluster {
        out.push_str("\n\n");
        out.push_str(&cluster_text(c));
    }
    out
}

/// The cluster's health: the figures, then one row per stream (when the
/// caller may see them) with its leader, current replicas and lag.
fn cluster_text(c: &ClusterStatus) -> String {
    let mut out = format!(
        "cluster: {} streams, {} without a leader, {} replicas not current, {} lagging peers",
        c.stream_count, c.streams_without_leader, c.replicas_not_current, c.lagging_peers
    );
    if !c.lagging_peer_names.is_empty() {
        out.push_str(&format!(" ({})", c.lagging_peer_names.join(", ")));
    }
    if c.streams.is_empty() {
        return out;
    }
    let mut table = Table::new(&["STREAM", "LEADER", "CURRENT", "MAX-LAG", "NOT-CURRENT"]);
    for st in &c.streams {
        let current = st.replicas.iter().filter(|r| r.current).count();
        let not_current: Vec<String> = st
            .replicas
            .iter()
            .filter(|r| !r.current)
            .map(|r| {
                if r.offline {
                    format!("{} (offline)", r.peer)
                } else {
                    format!("{} (lag {})", r.peer, r.lag)
                }
            })
            .collect();
        table.row(vec![
            st.name.clone(),
            match st.leader.as_str() {
                "" => "NONE".to_string(),
                l => l.to_string(),
            },
            format!("{current}/{}", st.replicas.len()),
            st.replicas
                .iter()
                .map(|r| r.lag)
                .max()
                .unwrap_or(0)
                .to_string(),
            not_current.join(", "),
        ]);
    }
    format!("{out}\n{}", table.render())
}

/// `ok`, `disk_full`, `failed`: the names the metrics use too.
fn storage_state_name(state: StorageState) -> &'static str {
    match state {
        StorageState::Ok => "ok",
        StorageState::DiskFull => "disk_full",
        StorageState::Failed => "failed",
        StorageState::Unspecified => "unknown",
    }
}

fn status_json(s: &GetStatusResponse) -> Value {
    let storage = s.storage.clone().unwrap_or_default();
    json!({
        "topics": s.topics.iter().map(|t| {
            let topic = t.topic.clone().unwrap_or_default();
            json!({
                "name": topic.name,
                "partitions": topic.partitions,
                "events": t.events,
                "publish_rate": t.publish_rate,
                "subscriptions": t.subscriptions.iter().map(|sub| {
                    let mut v = subscription_json(sub);
                    let st = sub.stats.unwrap_or_default();
                    v["oldest_dead_letter_age_secs"] = secs_json(&st.oldest_dead_letter_age);
                    v
                }).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
        "storage": {
            "data_dir": storage.data_dir,
            "storage_bytes": storage.storage_bytes,
            "pending_compaction_bytes": storage.pending_compaction_bytes,
            "disk_total_bytes": storage.disk_total_bytes,
            "disk_available_bytes": storage.disk_available_bytes,
            "disk_reserve_bytes": storage.disk_reserve_bytes,
            "state": storage_state_name(storage.state()),
            "state_reason": storage.state_reason,
        },
        "backend": s.backend,
        "cluster": s.cluster.as_ref().map(cluster_json),
    })
}

fn cluster_json(c: &ClusterStatus) -> Value {
    json!({
        "stream_count": c.stream_count,
        "streams_without_leader": c.streams_without_leader,
        "replicas_not_current": c.replicas_not_current,
        "lagging_peers": c.lagging_peers,
        "lagging_peer_names": c.lagging_peer_names,
        "streams": c.streams.iter().map(|st| json!({
            "name": st.name,
            "leader": st.leader,
            "replicas": st.replicas.iter().map(|r| json!({
                "peer": r.peer,
                "leader": r.leader,
                "current": r.current,
                "offline": r.offline,
                "lag": r.lag,
                "last_active_age_secs": secs_json(&r.last_active_age),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// 1536 -> "1.5 KiB".
fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::bytes_text;

    #[test]
    fn sizes_read_like_df() {
        assert_eq!(bytes_text(0), "0 B");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(3 << 30), "3.0 GiB");
    }
}

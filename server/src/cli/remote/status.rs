//! `eventbus status`: one screen for an operator — topics with publish
//! rates, subscriptions with backlog, lag and dead letters, and disk usage.

use eventbus::v1::{GetStatusResponse, StorageState};
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
    format!(
        "{}\n\n{}\n\n{disk}\n{state}",
        topics.render(),
        subs.render()
    )
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

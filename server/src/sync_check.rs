//! Cluster mode's durability check at start. An acknowledged publish is on
//! disk only if every JetStream server fsyncs each write
//! (`jetstream { sync_interval: always }`), and that is a server setting no
//! stream config can ask for. So the gateway reads each server's `/jsz`
//! (its monitoring port, `nats-monitor-url`) and refuses to start when one
//! does not sync, unless `nats-allow-unsynced = true` accepts the risk (a
//! loud warning at every start). Without monitoring URLs it cannot check,
//! and says so.

use std::time::Duration;

use anyhow::Context as _;

/// What the servers at `monitor_urls` (comma-separated `http://host:port`)
/// say about syncing; Err when one does not sync and `allow_unsynced` is
/// false, or when one cannot be asked.
pub async fn check(monitor_urls: &str, allow_unsynced: bool) -> anyhow::Result<()> {
    let urls = split_urls(monitor_urls);
    if urls.is_empty() {
        tracing::warn!(
            "cluster mode: cannot check that the NATS servers fsync every write \
             (sync_interval: always); set nats-monitor-url to their monitoring ports"
        );
        return Ok(());
    }
    let client = monitor_client()?;
    let mut unsynced = Vec::new();
    for url in urls {
        let jsz = jsz(&client, url, "", "whether JetStream syncs every write").await?;
        if !syncs_always(&jsz) {
            unsynced.push(url.to_string());
        }
    }
    if unsynced.is_empty() {
        tracing::info!("cluster mode: every NATS server fsyncs each write (sync_interval: always)");
        return Ok(());
    }
    let what = format!(
        "NATS JetStream at {} does not fsync every write (sync_interval is not `always`), \
         so an acknowledged publish can be lost when a machine loses power",
        unsynced.join(", ")
    );
    anyhow::ensure!(
        allow_unsynced,
        "{what}; set `sync_interval: always` in each server's jetstream block, or start \
         with nats-allow-unsynced = true to accept the risk"
    );
    tracing::warn!("{what}; running anyway because nats-allow-unsynced = true");
    Ok(())
}

/// The comma-separated monitoring URLs, each trimmed, empty ones dropped.
pub fn split_urls(monitor_urls: &str) -> Vec<&str> {
    monitor_urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// An HTTP client for the monitoring ports: 5 s per request.
pub fn monitor_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?)
}

/// `GET <url>/jsz<query>` as JSON; `asking` says what for, in the error.
pub async fn jsz(
    client: &reqwest::Client,
    url: &str,
    query: &str,
    asking: &str,
) -> anyhow::Result<serde_json::Value> {
    let body = client
        .get(format!("{}/jsz{query}", url.trim_end_matches('/')))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("asking {url}/jsz {asking}"))?
        .bytes()
        .await
        .with_context(|| format!("reading {url}/jsz"))?;
    serde_json::from_slice(&body).with_context(|| format!("reading {url}/jsz"))
}

/// Whether a `/jsz` answer says the server syncs every write.
fn syncs_always(jsz: &serde_json::Value) -> bool {
    jsz["config"]["sync_always"].as_bool() == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_sync_always_counts() {
        let yes =
            serde_json::json!({"config": {"sync_always": true, "sync_interval": 120000000000u64}});
        let no = serde_json::json!({"config": {"sync_interval": 120000000000u64}});
        assert!(syncs_always(&yes));
        assert!(!syncs_always(&no));
        assert!(!syncs_always(&serde_json::json!({})));
    }
}

//! Retention of the RocksDB backend: a background task trims every topic.

use crate::meta::now_ms;
use crate::store::Log;

/// Applies every topic's retention each `retention_interval`, in the
/// background, through the same writer as publishes (one DeleteRange per
/// partition, never blocking the publish path for long). Subscriptions notice
/// the new start and count what they lose.
pub(super) async fn retention_loop(log: Log) {
    let mut tick = tokio::time::interval(log.options().retention_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for topic in log.topics() {
            let r = topic.meta.retention;
            if r.max_age_ms.is_none() && r.max_bytes.is_none() {
                continue;
            }
            for p in 0..topic.partition_count() {
                match log.apply_retention(&topic, p, now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(
                        topic = topic.name(),
                        partition = p,
                        removed = n,
                        "retention trimmed"
                    ),
                    Err(e) => {
                        tracing::warn!(topic = topic.name(), partition = p, error = %e, "retention failed")
                    }
                }
            }
        }
    }
}

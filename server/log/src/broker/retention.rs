//! Retention of the RocksDB backend: a background task trims every topic,
//! and the audit log.

use crate::meta::now_ms;
use crate::store::Log;

/// Applies every topic's retention each `retention_interval`, in the
/// background, through the same writer as publishes (one DeleteRange per
/// partition, never blocking the publish path for long). Subscriptions notice
/// the new start and count what they lose. Audit records older than
/// `audit_retention` go in the same pass.
pub(super) async fn retention_loop(log: Log) {
    let mut tick = tokio::time::interval(log.options().retention_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(keep) = log.options().audit_retention {
            let before_ms = now_ms().saturating_sub(crate::types::saturating_millis(keep));
            if let Err(e) = log.trim_audit(before_ms).await {
                tracing::warn!(error = %e, "audit retention failed");
            }
        }
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

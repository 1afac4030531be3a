//! The cluster's health as eventbus needs it: for every stream eventbus
//! keeps, its leader and how each replica follows (behind GetStatus and
//! the `eventbus_cluster_*` gauges).
//!
//! The stream names come from the meta leader (one paged call); each
//! stream's replication state only from the stream's own leader, so every
//! stream costs one STREAM.INFO request, a few at a time. A stream whose
//! leader does not answer within [`INFO_WAIT`] is reported without a
//! leader: that is what an election in progress, or a group below quorum,
//! looks like from outside, and the report must come back while it lasts.

use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamErrorKind, ErrorCode};
use eventbus_broker::{ClusterReport, ReplicaHealth, Result, StreamHealth};
use futures_util::{StreamExt as _, TryStreamExt as _};

use crate::nats_error;

/// How long one stream's leader has to answer. A healthy leader answers in
/// milliseconds; an election takes seconds, and the report must not wait
/// for it.
const INFO_WAIT: Duration = Duration::from_millis(1500);

/// STREAM.INFO requests in flight at once: enough to cover a few hundred
/// streams in well under a second, few enough not to queue up on the
/// cluster behind publishes.
const CONCURRENT_INFOS: usize = 8;

/// Whether a stream is one of eventbus's: topic partitions, dead-letter and
/// redrive streams, the audit log (`EB_`), and the metadata buckets.
pub fn is_ours(name: &str) -> bool {
    name.starts_with("EB_") || name.starts_with("KV_eventbus-")
}

/// Every eventbus stream's leader and replicas, by name.
/// `server` names the NATS server the gateway is connected to: a server
/// without clustering leads each of its streams alone.
pub async fn report(js: &jetstream::Context, server: &str) -> Result<ClusterReport> {
    let names: Vec<String> = js
        .stream_names()
        .try_filter(|n| futures_util::future::ready(is_ours(n)))
        .try_collect()
        .await
        .map_err(|e| nats_error("listing streams", e))?;
    let mut streams: Vec<StreamHealth> = futures_util::stream::iter(names)
        .map(|name| stream_health(js, server, name))
        .buffer_unordered(CONCURRENT_INFOS)
        .filter_map(futures_util::future::ready)
        .collect()
        .await;
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ClusterReport { streams })
}

/// One stream's health; `None` when it was deleted since it was listed.
async fn stream_health(
    js: &jetstream::Context,
    server: &str,
    name: String,
) -> Option<StreamHealth> {
    let leaderless = |name: String| StreamHealth {
        name,
        leader: None,
        replicas: Vec::new(),
    };
    let stream = match tokio::time::timeout(INFO_WAIT, js.get_stream(&name)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            if let GetStreamErrorKind::JetStream(j) = e.kind() {
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND {
                    return None;
                }
            }
            tracing::debug!(stream = %name, error = %e, "no stream info");
            return Some(leaderless(name));
        }
        Err(_) => return Some(leaderless(name)),
    };
    let cluster = stream.cached_info().cluster.clone().unwrap_or_default();
    let leader = match cluster.leader {
        Some(l) => l,
        // A server without clustering answered: the one replica is there.
        None if cluster.name.is_none() => server.to_string(),
        None => return Some(leaderless(name)),
    };
    let mut replicas = vec![ReplicaHealth {
        peer: leader.clone(),
        leader: true,
        current: true,
        offline: false,
        lag: 0,
        active_ago_ms: 0,
    }];
    // JetStream lists the followers only.
    replicas.extend(cluster.replicas.into_iter().map(|p| ReplicaHealth {
        peer: p.name,
        leader: false,
        current: p.current && !p.offline,
        offline: p.offline,
        lag: p.lag.unwrap_or(0),
        active_ago_ms: u64::try_from(p.active.as_millis()).unwrap_or(u64::MAX),
    }));
    Some(StreamHealth {
        name,
        leader: Some(leader),
        replicas,
    })
}

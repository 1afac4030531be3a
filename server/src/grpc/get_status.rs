//! `AdminService/GetStatus`: the one-screen summary behind `eventbus status`.

use std::time::Duration;

use eventbus_broker::{ClusterReport, StorageHealth, StorageReport};
use eventbus_proto::v1::{
    ClusterStatus, ClusterStream, GetStatusRequest, GetStatusResponse, StorageState, StorageStatus,
    StreamReplica, TopicStatus,
};
use tonic::Status;

use super::context::{Call, Caller};
use super::convert;
use super::status::to_status;
use crate::ops::sample;

pub async fn handle(call: &Call<'_>, _req: GetStatusRequest) -> Result<GetStatusResponse, Status> {
    let mut topics = Vec::new();
    for t in call.broker.list_topics().await.map_err(to_status)? {
        let name = t.name.as_str();
        let subscriptions = match call.broker.list_subscriptions(name, None, usize::MAX).await {
            Ok((subs, _)) => subs.iter().map(convert::subscription).collect(),
            // Deleted between the listing and now: leave it out.
            Err(eventbus_broker::Error::TopicNotFound(_)) => continue,
            Err(e) => return Err(to_status(e)),
        };
        topics.push(TopicStatus {
            topic: Some(convert::topic(&t)),
            events: t.retained_events(),
            publish_rate: call.ops.rates.rate(name),
            subscriptions,
        });
    }
    topics.sort_by(|a, b| {
        a.topic
            .as_ref()
            .map(|t| &t.name)
            .cmp(&b.topic.as_ref().map(|t| &t.name))
    });
    let StorageReport {
        health,
        stats: st,
        disk_reserve_bytes,
    } = call.broker.storage().await.map_err(to_status)?;
    let cluster = call.broker.cluster().await.map_err(to_status)?;
    let disk = sample::disk_usage(call.ops.data_dir()).ok();
    let state = match &health {
        StorageHealth::Ok => StorageState::Ok,
        StorageHealth::DiskFull { .. } => StorageState::DiskFull,
        StorageHealth::Failed { .. } => StorageState::Failed,
    };
    Ok(GetStatusResponse {
        topics,
        storage: Some(StorageStatus {
            data_dir: data_dir_for(&call.ctx.caller, call.ops.data_dir()),
            storage_bytes: st.sst_bytes + st.memtable_bytes,
            pending_compaction_bytes: st.pending_compaction_bytes,
            disk_total_bytes: disk.map_or(0, |d| d.total_bytes),
            disk_available_bytes: disk.map_or(0, |d| d.available_bytes),
            state: state as i32,
            state_reason: match health {
                StorageHealth::Ok => String::new(),
                h => h.describe(),
            },
            disk_reserve_bytes,
        }),
        backend: call.broker.backend().label().to_string(),
        cluster: cluster.map(|c| cluster_status(&c, call.ctx.caller.is_global_admin())),
    })
}

/// The cluster section; stream detail and peer names only for a caller
/// who may see the cluster's servers (`detail`), as for the data dir.
fn cluster_status(report: &ClusterReport, detail: bool) -> ClusterStatus {
    let lagging = report.lagging_peers();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    ClusterStatus {
        stream_count: count(report.streams.len()),
        streams_without_leader: count(report.streams_without_leader()),
        replicas_not_current: count(report.replicas_not_current()),
        lagging_peers: count(lagging.len()),
        streams: if !detail {
            Vec::new()
        } else {
            report
                .streams
                .iter()
                .map(|s| ClusterStream {
                    name: s.name.clone(),
                    leader: s.leader.clone().unwrap_or_default(),
                    replicas: s
                        .replicas
                        .iter()
                        .map(|r| StreamReplica {
                            peer: r.peer.clone(),
                            leader: r.leader,
                            current: r.current,
                            offline: r.offline,
                            lag: r.lag,
                            last_active_age: Some(convert::duration_to_proto(
                                Duration::from_millis(r.active_ago_ms),
                            )),
                        })
                        .collect(),
                })
                .collect()
        },
        lagging_peer_names: if detail { lagging } else { Vec::new() },
    }
}

/// The data dir as `caller` may see it: only a global admin learns where
/// the server keeps its files; anyone else gets an empty string.
fn data_dir_for(caller: &Caller, data_dir: &std::path::Path) -> String {
    if caller.is_global_admin() {
        data_dir.display().to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::auth::{Credential, Grant, Principal};

    fn principal(tenant: Option<&str>, grants: &[&str]) -> Caller {
        Caller::Principal(Arc::new(Principal {
            name: "p".into(),
            tenant: tenant.map(str::to_string),
            credential: Credential::ApiKey { hash: [0; 32] },
            grants: grants
                .iter()
                .map(|g| Grant::try_from(g.to_string()).unwrap())
                .collect(),
        }))
    }

    #[test]
    fn only_global_admins_see_the_data_dir() {
        let dir = Path::new("/var/lib/eventbus");
        assert_eq!(data_dir_for(&Caller::Anonymous, dir), "/var/lib/eventbus");
        assert_eq!(
            data_dir_for(&principal(None, &["admin:>"]), dir),
            "/var/lib/eventbus"
        );
        for caller in [
            principal(None, &["admin:orders.>", "publish:>"]),
            principal(Some("acme"), &["admin:>"]),
            principal(None, &[]),
        ] {
            assert_eq!(data_dir_for(&caller, dir), "", "{caller:?}");
        }
    }

    #[test]
    fn cluster_detail_is_for_global_admins_and_the_figures_for_everyone() {
        use eventbus_broker::{ReplicaHealth, StreamHealth};
        let replica = |peer: &str, leader: bool, current: bool| ReplicaHealth {
            peer: peer.into(),
            leader,
            current,
            offline: !current,
            lag: u64::from(!current) * 7,
            active_ago_ms: 0,
        };
        let report = ClusterReport {
            streams: vec![
                StreamHealth {
                    name: "EB_T1_P0".into(),
                    leader: Some("n1".into()),
                    replicas: vec![
                        replica("n1", true, true),
                        replica("n2", false, true),
                        replica("n3", false, false),
                    ],
                },
                StreamHealth {
                    name: "EB_T1_P1".into(),
                    leader: None,
                    replicas: vec![],
                },
            ],
        };
        let full = cluster_status(&report, true);
        assert_eq!(
            (
                full.stream_count,
                full.streams_without_leader,
                full.replicas_not_current,
                full.lagging_peers
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(full.lagging_peer_names, ["n3"]);
        assert_eq!(full.streams[0].replicas[2].lag, 7);
        assert_eq!(full.streams[1].leader, "");
        let summary = cluster_status(&report, false);
        assert_eq!(summary.replicas_not_current, 1);
        assert!(summary.streams.is_empty() && summary.lagging_peer_names.is_empty());
    }
}

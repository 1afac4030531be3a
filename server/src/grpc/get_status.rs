//! `AdminService/GetStatus`: the one-screen summary behind `eventbus status`.

use eventbus_broker::{StorageHealth, StorageReport};
use eventbus_proto::v1::{
    GetStatusRequest, GetStatusResponse, StorageState, StorageStatus, TopicStatus,
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
    })
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
}

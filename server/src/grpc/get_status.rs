//! `AdminService/GetStatus`: the one-screen summary behind `eventbus status`.

use eventbus_broker::{StorageHealth, StorageReport};
use eventbus_proto::v1::{
    GetStatusRequest, GetStatusResponse, StorageState, StorageStatus, TopicStatus,
};
use tonic::Status;

use super::context::Call;
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
            data_dir: call.ops.data_dir().display().to_string(),
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

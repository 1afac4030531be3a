//! Members joining a subscription, settling their leases, and the reads
//! the delivery path shares with seek and replay.

use std::sync::Arc;

use super::{blocking, LogBroker};
use crate::delivery::ack_id::AckId;
use crate::delivery::{MemberStream, SettleOp, SettleOutcome};
use crate::error::{Error, Result};
use crate::topic::TopicState;

impl LogBroker {
    /// Joins a subscription as a member (auto-creating it when enabled).
    pub async fn subscribe(
        &self,
        topic: &str,
        name: &str,
        max_in_flight: u32,
    ) -> Result<MemberStream> {
        let max_in_flight = eventbus_broker::delivery::member_credit(
            max_in_flight,
            self.options().default_max_in_flight,
            self.options().max_in_flight_limit,
        )?;
        let h = self.subscription_or_create(topic, name).await?;
        h.join(max_in_flight).await
    }

    /// Acks, nacks or extends leases named by encoded ack ids.
    pub async fn settle(
        &self,
        topic: &str,
        name: &str,
        op: SettleOp,
        ack_ids: &[String],
    ) -> Result<SettleOutcome> {
        self.options().limits.check_settle(&op, ack_ids.len())?;
        let h = self.subscription(topic, name)?;
        let ids = ack_ids
            .iter()
            .map(|s| {
                let id = AckId::decode(s)?;
                if id.subscription != h.id() {
                    return Err(Error::invalid(
                        "ack_ids",
                        format!("{s:?} belongs to another subscription; ack on the subscription that delivered it"),
                    ));
                }
                if id.partition >= h.topic.partition_count() {
                    return Err(Error::invalid("ack_ids", format!("{s:?} names a partition this topic does not have")));
                }
                Ok(id)
            })
            .collect::<Result<Vec<_>>>()?;
        h.settle(op, ids).await
    }

    /// The first offset at or after `ms` in one partition; see
    /// [`Log::offset_for_time`].
    pub(crate) async fn offset_for_time(
        &self,
        topic: Arc<TopicState>,
        partition: u32,
        ms: u64,
    ) -> Result<u64> {
        let log = self.log.clone();
        blocking(move || log.offset_for_time(&topic, partition, ms)).await
    }
}

//! The RocksDB backend behind the contract: [`eventbus_broker::Broker`] for
//! [`LogBroker`]. Each method is the inherent one, with the engine's own
//! types (member streams, ack ids) turned into the contract's at this edge.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use eventbus_broker::{
    AuditPage, AuditQuery, AuditRecord, Backend, BoxStream, Broker, DeadLetter, DeadLetterPage,
    DeadLetterQuery, DeadLetterSelector, Delivery, Limits, Membership, NewEvent, NewSubscription,
    Published, ReplayItem, ReplayRequest, SeekTarget, SettleOp, SettleOutcome, StorageHealth,
    StorageReport, SubscriptionInfo, SubscriptionUpdate, TopicConfig, TopicInfo,
};
use futures_core::Stream;
use tokio::sync::watch;

use super::LogBroker;
use crate::delivery::MemberStream;
use crate::error::{Error, Result};

#[async_trait]
impl Broker for LogBroker {
    fn limits(&self) -> &Limits {
        &self.options().limits
    }

    async fn publish(&self, topic: &str, events: &[NewEvent]) -> Result<Published> {
        let (topic_id, results) = LogBroker::publish(self, topic, events).await?;
        Ok(Published { topic_id, results })
    }

    async fn replay(&self, request: ReplayRequest) -> Result<BoxStream<Result<ReplayItem>>> {
        LogBroker::replay(self, request).await
    }

    async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        LogBroker::create_topic(self, name, config).await
    }

    async fn get_topic(&self, name: &str) -> Result<TopicInfo> {
        LogBroker::get_topic(self, name)
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        Ok(LogBroker::list_topics(self))
    }

    async fn delete_topic(&self, name: &str) -> Result<()> {
        LogBroker::delete_topic(self, name).await
    }

    async fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        new: NewSubscription,
    ) -> Result<SubscriptionInfo> {
        LogBroker::create_subscription(self, topic, name, new).await
    }

    async fn get_subscription(&self, topic: &str, name: &str) -> Result<SubscriptionInfo> {
        LogBroker::get_subscription(self, topic, name).await
    }

    async fn list_subscriptions(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<SubscriptionInfo>, bool)> {
        self.subscriptions_page(topic, after, limit).await
    }

    async fn update_subscription(
        &self,
        topic: &str,
        name: &str,
        update: SubscriptionUpdate,
    ) -> Result<SubscriptionInfo> {
        self.update_settings(topic, name, update).await
    }

    async fn set_paused(&self, topic: &str, name: &str, paused: bool) -> Result<SubscriptionInfo> {
        LogBroker::set_paused(self, topic, name, paused).await
    }

    async fn seek(&self, topic: &str, name: &str, target: SeekTarget) -> Result<SubscriptionInfo> {
        LogBroker::seek(self, topic, name, target).await
    }

    async fn delete_subscription(&self, topic: &str, name: &str) -> Result<()> {
        LogBroker::delete_subscription(self, topic, name).await
    }

    async fn subscribe(&self, topic: &str, name: &str, max_in_flight: u32) -> Result<Membership> {
        let member = LogBroker::subscribe(self, topic, name, max_in_flight).await?;
        Ok(Membership {
            member_id: member.member_id(),
            deliveries: Box::pin(Deliveries(member)),
        })
    }

    async fn settle(
        &self,
        topic: &str,
        name: &str,
        op: SettleOp,
        ack_ids: &[String],
    ) -> Result<SettleOutcome> {
        let outcome = LogBroker::settle(self, topic, name, op, ack_ids).await?;
        Ok(SettleOutcome {
            stale: outcome.stale.iter().map(|id| id.encode()).collect(),
        })
    }

    async fn list_dead_letters(
        &self,
        topic: &str,
        name: &str,
        after: Option<u64>,
        limit: usize,
        query: DeadLetterQuery,
    ) -> Result<DeadLetterPage> {
        LogBroker::list_dead_letters(self, topic, name, after, limit, query).await
    }

    async fn get_dead_letter(&self, topic: &str, name: &str, id: u64) -> Result<DeadLetter> {
        LogBroker::get_dead_letter(self, topic, name, id).await
    }

    async fn purge_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
    ) -> Result<u64> {
        LogBroker::purge_dead_letters(self, topic, name, selector, dry_run).await
    }

    async fn redrive_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
        max_per_second: u32,
    ) -> Result<u64> {
        LogBroker::redrive_dead_letters(self, topic, name, selector, dry_run, max_per_second).await
    }

    fn health(&self) -> StorageHealth {
        self.log.health()
    }

    fn watch_health(&self) -> watch::Receiver<StorageHealth> {
        self.log.watch_health()
    }

    fn backend(&self) -> Backend {
        Backend::RocksDb
    }

    async fn storage(&self) -> Result<StorageReport> {
        let log = self.log.clone();
        let stats = tokio::task::spawn_blocking(move || log.storage_stats())
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(StorageReport {
            health: self.log.health(),
            stats,
            disk_reserve_bytes: self.options().disk_reserve_bytes,
        })
    }

    async fn backup(&self, dir: &Path) -> Result<u64> {
        LogBroker::backup(self, dir).await
    }

    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<()> {
        self.log.append_audit(records).await
    }

    async fn list_audit(&self, query: AuditQuery) -> Result<AuditPage> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.audit_page(&query))
            .await
            .map_err(|_| Error::ShuttingDown)?
    }

    async fn flush(&self) {
        LogBroker::flush(self).await
    }
}

/// A member's batches with their ack ids encoded: the contract's deliveries.
struct Deliveries(MemberStream);

impl Stream for Deliveries {
    type Item = Result<Vec<Delivery>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx).map(|item| {
            item.map(|batch| {
                batch.map(|deliveries| {
                    deliveries
                        .into_iter()
                        .map(|d| Delivery {
                            event: d.event,
                            ack_id: d.ack_id.encode(),
                            attempt: d.attempt,
                        })
                        .collect()
                })
            })
        })
    }
}

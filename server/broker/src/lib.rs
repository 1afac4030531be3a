//! `eventbus-broker`: the backend-neutral contract of eventbus.
//!
//! The gRPC layer (`eventbus-server`) holds an `Arc<dyn Broker>` and nothing
//! else of the storage: every RPC becomes one call of the [`Broker`] trait,
//! with the plain domain types of this crate in and out. A backend implements
//! the trait:
//!
//! * `eventbus-log`: one node, RocksDB plus the in-process delivery engine
//!   (`eventbus serve`, the default);
//! * a NATS JetStream backend (issue 14): stateless gateways over a
//!   JetStream cluster. ARCHITECTURE.md ("The broker boundary") maps every
//!   method onto both, and lists what JetStream cannot match.
//!
//! What both backends share lives here too, so they cannot drift: the
//! checks on names ([`names`]), on every client-controlled size ([`limits`]),
//! type patterns and attribute filters ([`filter`]), and the one error type
//! ([`Error`]) that the server maps to gRPC status codes in one place.
//!
//! # Room for what comes next
//! Authorization (issue 13) stays above the trait: the server decides who
//! may call what before it calls the broker, so a backend never sees a
//! caller. State that several gateways must share is backend state: the
//! audit log ([`audit`], [`Broker::append_audit`]) is one, quota counters
//! will be another, so that on JetStream it lives in the cluster and on
//! RocksDB in the data dir.

pub mod audit;
pub mod dead_letter;
pub mod delivery;
pub mod error;
pub mod filter;
pub mod limits;
pub mod metric_names;
pub mod names;
pub mod partitioner;
pub mod replay;
pub mod status;
pub mod subscription;
pub mod topic;
pub mod types;

use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use futures_core::Stream;
use tokio::sync::watch;

pub use audit::{AuditCursor, AuditPage, AuditQuery, AuditRecord};
pub use dead_letter::{DeadLetter, DeadLetterPage, DeadLetterQuery, DeadLetterSelector};
pub use delivery::{Delivery, Membership, SettleOp, SettleOutcome};
pub use error::{Error, Result};
pub use limits::Limits;
pub use replay::{ReplayEnd, ReplayItem, ReplayRequest, ReplayStart};
pub use status::{
    Backend, ClusterReport, ReplicaHealth, StorageHealth, StorageReport, StorageStats, StreamHealth,
};
pub use subscription::{
    AttributeCondition, Filter, NewSubscription, Ordering, RetryPolicy, SeekTarget,
    SubscriptionConfig, SubscriptionInfo, SubscriptionStats, SubscriptionUpdate,
};
pub use topic::{PartitionBounds, Retention, TopicConfig, TopicInfo};
pub use types::*;

/// A boxed stream a backend hands out (deliveries, replayed events).
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send + 'static>>;

/// What a publish appended: the topic written to (event ids derive from its
/// id, see [`format_event_id`]) and one result per event, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub topic_id: TopicId,
    pub results: Vec<AppendResult>,
}

/// One eventbus backend: durable partitioned topics, and consumer groups over
/// them. Every method validates its input (the caller converts the wire
/// format but need not re-check names or limits) and answers with the
/// precise [`Error`]. Methods that change state return once the change is
/// durable by the backend's standard (RocksDB: synced WAL; JetStream: quorum).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// The bounds on every client-controlled size this backend enforces. The
    /// caller uses the same bounds to refuse oversized requests early.
    fn limits(&self) -> &Limits;

    // ---- events -------------------------------------------------------------

    /// Appends `events` to `topic` (auto-creating it when the backend allows),
    /// each to the partition of its key. Durable when it returns.
    async fn publish(&self, topic: &str, events: &[NewEvent]) -> Result<Published>;

    /// Reads history without touching any subscription, in bounded batches;
    /// the stream ends after the last event (or never, when following). A
    /// slow reader backpressures the backend.
    async fn replay(&self, request: ReplayRequest) -> Result<BoxStream<Result<ReplayItem>>>;

    // ---- topics -------------------------------------------------------------

    async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo>;
    async fn get_topic(&self, name: &str) -> Result<TopicInfo>;
    /// Every topic, sorted by name.
    async fn list_topics(&self) -> Result<Vec<TopicInfo>>;
    /// Deletes a topic with its subscriptions and their dead letters.
    async fn delete_topic(&self, name: &str) -> Result<()>;

    // ---- subscriptions -------------------------------------------------------

    /// Creates a subscription (the topic is auto-created when allowed).
    async fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        new: NewSubscription,
    ) -> Result<SubscriptionInfo>;
    async fn get_subscription(&self, topic: &str, name: &str) -> Result<SubscriptionInfo>;
    /// One page of a topic's subscriptions in name order: at most `limit`
    /// named after `after`, and whether more follow.
    async fn list_subscriptions(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<SubscriptionInfo>, bool)>;
    /// Applies the fields of `update` that are set; running members see the
    /// new settings at once.
    async fn update_subscription(
        &self,
        topic: &str,
        name: &str,
        update: SubscriptionUpdate,
    ) -> Result<SubscriptionInfo>;
    /// Stops (or resumes) new deliveries; leases already held stay valid.
    /// Persisted: a paused subscription stays paused across restarts.
    async fn set_paused(&self, topic: &str, name: &str, paused: bool) -> Result<SubscriptionInfo>;
    /// Moves the subscription's positions; what was in flight is dropped.
    async fn seek(&self, topic: &str, name: &str, target: SeekTarget) -> Result<SubscriptionInfo>;
    /// Deletes a subscription with its state and dead letters; its members'
    /// streams end.
    async fn delete_subscription(&self, topic: &str, name: &str) -> Result<()>;

    // ---- delivery -----------------------------------------------------------

    /// Joins a subscription as a member (auto-creating it when allowed). At
    /// most `max_in_flight` leases at a time (0: the backend's default).
    async fn subscribe(&self, topic: &str, name: &str, max_in_flight: u32) -> Result<Membership>;

    /// Acks, nacks, dead-letters or extends the leases named by `ack_ids`
    /// (from [`Delivery::ack_id`]). Ids whose lease is gone come back in
    /// [`SettleOutcome::stale`]; the others are settled.
    async fn settle(
        &self,
        topic: &str,
        name: &str,
        op: SettleOp,
        ack_ids: &[String],
    ) -> Result<SettleOutcome>;

    // ---- dead letters -------------------------------------------------------

    /// One page of the dead letters matching `query`, with ids after `after`;
    /// bounded by `limit` and by [`dead_letter::MAX_PAGE_BYTES`].
    async fn list_dead_letters(
        &self,
        topic: &str,
        name: &str,
        after: Option<u64>,
        limit: usize,
        query: DeadLetterQuery,
    ) -> Result<DeadLetterPage>;
    async fn get_dead_letter(&self, topic: &str, name: &str, id: u64) -> Result<DeadLetter>;
    /// Deletes the selected dead letters (or, with `dry_run`, counts them).
    async fn purge_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
    ) -> Result<u64>;
    /// Sends the selected dead letters back to this subscription only, each
    /// exactly once even across a crash (or, with `dry_run`, counts them);
    /// `max_per_second` (0: unlimited) paces them.
    async fn redrive_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
        max_per_second: u32,
    ) -> Result<u64>;

    // ---- operations ---------------------------------------------------------

    /// The write path's state now.
    fn health(&self) -> StorageHealth;
    /// Every change of [`Broker::health`].
    fn watch_health(&self) -> watch::Receiver<StorageHealth>;
    /// Health, size and reserve of the storage.
    async fn storage(&self) -> Result<StorageReport>;
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// The replication health of the backend's streams: `None` where
    /// nothing is replicated (one node).
    async fn cluster(&self) -> Result<Option<ClusterReport>> {
        Ok(None)
    }
    /// Writes an online backup into `dir` (absolute, new, on the server) while
    /// publishes continue. Returns its size in bytes.
    async fn backup(&self, dir: &Path) -> Result<u64>;
    // ---- audit log ------------------------------------------------------------

    /// Appends `records` to the audit log, durable when it returns whatever
    /// the backend's durability setting for events (RocksDB: a synced WAL
    /// write even with `durability = buffered`). Each record gets its id, and
    /// a time no earlier than the log's newest.
    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<()>;
    /// One page of the records `query` selects, oldest first; bounded by
    /// its limit, by [`audit::MAX_PAGE_BYTES`] and by the records looked at
    /// ([`audit::MAX_SCAN_RECORDS`]).
    async fn list_audit(&self, query: AuditQuery) -> Result<AuditPage>;

    /// A 32-byte secret named `name` that every gateway on this storage
    /// shares, made at random by the first to ask: in cluster mode the key
    /// ack ids are sealed with, so any gateway opens an ack id another
    /// issued. `None` where the server keeps its own (one node: a file in
    /// the data dir).
    async fn shared_secret(&self, _name: &str) -> Result<Option<[u8; 32]>> {
        Ok(None)
    }

    /// Stops every subscription's deliveries and makes their state durable:
    /// the first step of shutdown. The backend stays readable.
    async fn flush(&self);
}

//! `eventbus-log`: the storage and delivery engine of eventbus.
//!
//! A RocksDB-backed, partitioned, append-only log with group commit, plus the
//! delivery engine that turns it into consumer groups with leases, acks and
//! redelivery. There is no gRPC in this crate: the server maps RPCs onto
//! [`Broker`], which speaks domain types only.
//!
//! # Layout
//! * [`broker`]: the boundary the server talks to (publish, subscribe, settle, admin).
//! * `store` (crate-private): [`Log`]: open and recovery, topics, appends, reads, retention,
//!   backups; `topic`: [`TopicState`], a live topic's partition positions.
//! * `writer` (crate-private): the single group-commit writer thread, and the typed commands
//!   (`writer::Update`) that are the only way to write anything but an append;
//!   `dedup`: its idempotency check.
//! * [`delivery`]: one actor per subscription (leases, redelivery, ack state).
//! * [`keys`]: every RocksDB key layout and column family; [`codec`]: the record envelope;
//!   [`batch`]: the record batches the `records` column family stores
//!   (all public only for the benches and fuzz targets).
//! * [`export`]: an offline, read-only view of a whole data dir, for `eventbus migrate`.
//! * [`metric_names`]: what the engine records through the `metrics` facade.
//! * `hot_tail`: each partition's newest committed batches in memory, for subscribers that keep up.
//! * [`health`]: the write path's state (ok, disk full, failed); [`space`]: the free-space reserve;
//!   [`synced_mark`]: the synced high-water mark that tells a torn WAL tail from lost synced writes.
//! * [`limits`]: the bound on every client-controlled size, and its checks.
//! * [`meta`], [`options`], [`types`], [`names`], [`partitioner`], [`error`].

pub mod broker;
// The contract's shared modules, under the paths the engine has always used.
pub use eventbus_broker::{filter, limits, names, types};
pub(crate) mod batch;
pub(crate) mod codec;
pub(crate) mod dead_letters;
pub(crate) mod dedup;
pub mod delivery;
pub mod error;
pub mod export;
pub(crate) mod health;
pub(crate) mod hot_tail;
pub(crate) mod keys;
pub(crate) mod meta;
pub mod metric_names;
pub mod options;
pub(crate) use eventbus_broker::partitioner;
pub(crate) mod space;
pub(crate) mod store;
pub(crate) mod synced_mark;
mod topic;
pub(crate) mod writer;

/// Engine internals for the benchmarks (`benches/`) and the fuzz targets
/// (`fuzz/`), which measure and attack the storage formats directly. Not an
/// API: only with the `internals` feature, so nothing else reaches them.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub mod batch {
        pub use crate::batch::*;
    }
    pub mod codec {
        pub use crate::codec::*;
    }
    pub mod keys {
        pub use crate::keys::*;
    }
    pub mod dead_letters {
        pub use crate::dead_letters::*;
    }
    pub mod ack_id {
        pub use crate::delivery::ack_id::*;
    }
    pub mod acks {
        pub use crate::delivery::acks::*;
    }
    pub mod dead_letter {
        pub use crate::delivery::dead_letter::*;
    }
    pub use crate::topic::{PartitionTail, TopicState};
}

pub use broker::{LogBroker, NewSubscription, RetryPolicy, SeekTarget, SubscriptionUpdate};
pub use error::{Error, Result};
pub use eventbus_broker::{
    DeadLetterQuery, DeadLetterSelector, Filter, Ordering, SubscriptionInfo, TopicInfo,
};
pub use health::StorageHealth;
pub use options::Options;
// The store, for offline tools (`eventbus restore` checks a backup opens).
pub use store::{Log, StorageStats};
/// The file every data dir holds besides RocksDB's (offline tools check for it).
pub use synced_mark::FILE_NAME as SYNCED_MARK_FILE;
pub use topic::{TopicConfig, TopicState};
pub use types::*;

//! The one error type of the storage and delivery layer.
//!
//! Variants are things a caller can act on. The gRPC layer maps each one to a
//! status code in exactly one place (`server/src/grpc/status.rs`).

use crate::codec::CodecError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed. `field` names it, `reason` says what to fix.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    #[error("topic {0:?} not found")]
    TopicNotFound(String),

    #[error("subscription {subscription:?} on topic {topic:?} not found")]
    SubscriptionNotFound { topic: String, subscription: String },

    #[error("dead letter {id:?} not found in subscription {subscription:?}")]
    DeadLetterNotFound { subscription: String, id: String },

    #[error("topic {0:?} already exists")]
    TopicExists(String),

    #[error("subscription {subscription:?} on topic {topic:?} already exists")]
    SubscriptionExists { topic: String, subscription: String },

    /// Something other than a topic or subscription that must not exist yet
    /// (a backup directory).
    #[error("{0}")]
    AlreadyExists(String),

    /// The request is well-formed but the state does not allow it, e.g. an ack for
    /// a lease that expired and was handed to another member.
    #[error("{0}")]
    FailedPrecondition(String),

    /// A limit was hit (too many topics, members, ...).
    #[error("{0}")]
    ResourceExhausted(String),

    /// A server-wide count reached its configured cap. `limit` is the config
    /// key (e.g. `max-topics`); the message says what to delete or raise.
    #[error("{message}")]
    LimitReached {
        limit: &'static str,
        message: String,
    },

    /// A stored record failed its checksum or could not be decoded.
    #[error("corrupt data at {location}: {source}")]
    Corruption {
        location: String,
        #[source]
        source: CodecError,
    },

    /// Corrupt or unreadable metadata (not an event record).
    #[error("corrupt metadata at {location}: {reason}")]
    CorruptMetadata { location: String, reason: String },

    /// RocksDB found damaged data (a block checksum, a bad SST or WAL record)
    /// while reading it.
    #[error("stored data is damaged: {0}; the damaged range cannot be read (see RUNBOOK.md, corruption)")]
    StorageCorruption(String),

    /// A subscription's read of a partition hit damaged data, so its members'
    /// streams end with this until the subscription is sought past it.
    #[error("topic {topic:?} partition {partition} cannot be read at or after offset {offset}: {cause}. The subscription stopped delivering there: seek it past the damaged range (SeekSubscription), or restore the data dir from a backup (see RUNBOOK.md, corruption)")]
    DamagedRange {
        topic: String,
        partition: u32,
        offset: u64,
        cause: String,
    },

    /// RocksDB returned an error.
    #[error("storage error: {0}")]
    Storage(rocksdb::Error),

    /// The data disk has less free space than the reserve (or a write found
    /// it full). Publishing resumes by itself once space is freed.
    #[error("the data disk is full ({free_bytes} bytes free, reserve {reserve_bytes} bytes, disk-reserve-bytes): publishing resumes by itself once space is freed; delete data (topics, retention, dead letters) or grow the volume")]
    DiskFull { free_bytes: u64, reserve_bytes: u64 },

    /// A WAL write or sync failed earlier. The write path refuses all further
    /// writes until restart, because retrying a failed fsync and then
    /// acknowledging can silently lose data ("fsyncgate").
    #[error("the write path stopped after a storage failure; restart the server: {0}")]
    WriterFailed(String),

    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl Error {
    /// Stored data is damaged (DATA_LOSS for the caller), as opposed to a
    /// storage error that may pass.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corruption { .. }
                | Error::CorruptMetadata { .. }
                | Error::StorageCorruption(_)
                | Error::DamagedRange { .. }
        )
    }
}

impl From<rocksdb::Error> for Error {
    /// Damage is DATA_LOSS for the caller, never a retryable storage error.
    fn from(e: rocksdb::Error) -> Self {
        match e.kind() {
            rocksdb::ErrorKind::Corruption => Error::StorageCorruption(e.into_string()),
            _ => Error::Storage(e),
        }
    }
}

/// Whether a RocksDB error means the disk (or the space RocksDB may use) is
/// full. The C API reports only the message, e.g. "IO error: No space left on
/// device: While appending to file: ..." or "...: Max allowed space was reached".
pub(crate) fn is_no_space(message: &str) -> bool {
    message.contains("No space left on device")
        || message.contains("NoSpace")
        || message.contains("Max allowed space was reached")
}

impl Error {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Storage(_)
                | Error::ShuttingDown
                | Error::ResourceExhausted(_)
                | Error::DiskFull { .. }
        )
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

//! The one error type of the broker contract, whatever the backend.
//!
//! Variants are things a caller can act on. The gRPC layer maps each one to a
//! status code in exactly one place (`server/src/grpc/status.rs`). Backends
//! report their own failures through the neutral variants (`Storage`,
//! `Corruption`, `StorageCorruption`, `WriterFailed`) as text: the caller
//! acts on the kind, never on an engine's error type.

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
    #[error("corrupt data at {location}: {reason}")]
    Corruption { location: String, reason: String },

    /// Corrupt or unreadable metadata (not an event record).
    #[error("corrupt metadata at {location}: {reason}")]
    CorruptMetadata { location: String, reason: String },

    /// The storage engine found damaged data (RocksDB: a block checksum, a
    /// bad SST or WAL record) while reading it.
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

    /// The storage engine (or the cluster behind it) failed a request in a
    /// way that may pass: an I/O error, a timeout.
    #[error("storage error: {0}")]
    Storage(String),

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

    /// The caller is over one of its quotas; `retry_after` says when the
    /// same request may pass. Backends do not raise it; the caller's scope
    /// does.
    #[error("{message}")]
    QuotaExceeded {
        quota: &'static str,
        message: String,
        retry_after: std::time::Duration,
    },

    /// The caller may not touch this (an ack id delivered to another
    /// principal). Backends do not raise it; the caller's scope does.
    #[error("{0}")]
    PermissionDenied(String),

    /// This backend does not do this (yet); the message says what to use.
    #[error("{0}")]
    Unimplemented(String),
}

impl Error {
    /// A record that failed its checksum or decoding at `location`.
    pub fn corruption(location: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Error::Corruption {
            location: location.into(),
            reason: cause.to_string(),
        }
    }

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

impl Error {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Storage(_)
                | Error::ShuttingDown
                | Error::ResourceExhausted(_)
                | Error::QuotaExceeded { .. }
                | Error::DiskFull { .. }
        )
    }

    /// An [`Error::InvalidArgument`] for `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

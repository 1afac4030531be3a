//! The one error type of the SDK.

use tonic::Code;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to eventbus.
///
/// Use [`Error::is_retryable`] to decide whether trying again can help, and
/// [`Error::code`] for the gRPC status code when the server answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server (or the transport under a call) answered with a non-OK
    /// status. The message says what to fix.
    /// The status is also the error's `source()`, so error reporters that
    /// walk the chain reach the transport error behind an UNAVAILABLE.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[source] tonic::Status),

    /// The lease behind this ack id is no longer held: it expired, or the event
    /// was redelivered under a newer lease. This call did not settle the event;
    /// it will be (or already was) delivered again.
    #[error("the lease of ack id {ack_id} is no longer held (expired or redelivered); the event was not settled by this call")]
    LeaseLost {
        /// The ack id whose lease was lost.
        ack_id: String,
    },

    /// Could not establish a connection (bad address, refused, timed out).
    #[error("cannot connect to the server: {0}")]
    Connect(#[from] tonic::transport::Error),

    /// The caller passed something the SDK rejects before calling the server.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A payload could not be encoded or decoded (JSON or protobuf).
    #[error("payload: {0}")]
    Payload(String),

    /// The publisher or subscription was closed, or its background task ended.
    #[error("{0} is closed")]
    Closed(&'static str),
}

impl Error {
    /// The gRPC status code, when the error came from a call.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Status(s) => Some(s.code()),
            Error::LeaseLost { .. } => Some(Code::FailedPrecondition),
            _ => None,
        }
    }

    /// The status the server returned, if any.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Status(s) => Some(s),
            _ => None,
        }
    }

    /// True when the same call may succeed if tried again later (with backoff):
    /// the server was unavailable, overloaded or shutting down, the connection
    /// broke, or the call timed out. Input errors (INVALID_ARGUMENT,
    /// NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, ...) are not retryable.
    ///
    /// Retrying a publish is only exact with an idempotency key; the
    /// [`Publisher`](crate::Publisher) attaches one to every event.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status(s) => is_retryable_code(s.code()),
            Error::Connect(_) => true,
            _ => false,
        }
    }

    /// A copy for fanning one failure out to many waiters (a batch).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Status(s) => Error::Status(s.clone()),
            Error::LeaseLost { ack_id } => Error::LeaseLost {
                ack_id: ack_id.clone(),
            },
            Error::Connect(e) => Error::Status(tonic::Status::unavailable(e.to_string())),
            Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
            Error::Payload(m) => Error::Payload(m.clone()),
            Error::Closed(what) => Error::Closed(what),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status(status)
    }
}

/// Codes worth retrying. UNKNOWN and CANCELLED are included because a
/// connection that breaks mid-call (a server killed or restarted) surfaces as
/// UNKNOWN ("transport error") or, for a request hyper cancelled when its
/// connection closed, as CANCELLED ("operation was canceled"), rather than
/// UNAVAILABLE. The server never answers CANCELLED itself, and the SDK never
/// cancels its own calls with a status.
pub(crate) fn is_retryable_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
    )
}

/// The canonical upper-case name (`NOT_FOUND`), as grpcurl and buf curl print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes() {
        assert!(Error::Status(tonic::Status::unavailable("x")).is_retryable());
        assert!(Error::Status(tonic::Status::resource_exhausted("x")).is_retryable());
        // What tonic reports for a call whose connection died under it.
        assert!(Error::Status(tonic::Status::cancelled("operation was canceled")).is_retryable());
        assert!(!Error::Status(tonic::Status::invalid_argument("x")).is_retryable());
        assert!(!Error::Status(tonic::Status::not_found("x")).is_retryable());
        assert!(!Error::LeaseLost { ack_id: "a".into() }.is_retryable());
        assert!(!Error::Closed("publisher").is_retryable());
    }

    #[test]
    fn display_names_the_code() {
        let e = Error::Status(tonic::Status::not_found("topic \"t\" does not exist"));
        assert_eq!(e.to_string(), "NOT_FOUND: topic \"t\" does not exist");
        assert_eq!(e.code(), Some(Code::NotFound));
    }
}

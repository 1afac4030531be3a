//! The one place that turns [`eventbus_broker::Error`] into a gRPC status.
//!
//! The match is exhaustive on purpose: a new error variant does not compile until
//! someone decides its status code. Field errors carry a `BadRequest` detail
//! (google.rpc.error_details) so clients can point at the field.

use eventbus_broker::{Error, SettleOutcome};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub fn to_status(err: Error) -> Status {
    let message = err.to_string();
    match err {
        Error::InvalidArgument { field, reason } => Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request_violation(field, reason),
        ),
        Error::TopicNotFound(_) => Status::not_found(format!(
            "{message}; create it with AdminService/CreateTopic"
        )),
        Error::DeadLetterNotFound { .. } => Status::not_found(format!(
            "{message}; list the queue with AdminService/ListDeadLetters"
        )),
        Error::SubscriptionNotFound { .. } => Status::not_found(format!(
            "{message}; create it with AdminService/CreateSubscription"
        )),
        Error::TopicExists(_) | Error::SubscriptionExists { .. } | Error::AlreadyExists(_) => {
            Status::already_exists(message)
        }
        Error::FailedPrecondition(_) => Status::failed_precondition(message),
        Error::ResourceExhausted(_) => Status::resource_exhausted(message),
        Error::LimitReached { limit, .. } => Status::with_error_details(
            Code::ResourceExhausted,
            message.clone(),
            ErrorDetails::with_quota_failure_violation(limit, message),
        ),
        Error::Corruption { .. }
        | Error::CorruptMetadata { .. }
        | Error::StorageCorruption(_)
        | Error::DamagedRange { .. } => {
            // Counted here, where unary replies and stream endings (Subscribe,
            // Replay: their status travels in trailers) both pass.
            metrics::counter!(crate::ops::names::DATA_LOSS).increment(1);
            tracing::error!(error = %message, "data corruption detected");
            Status::data_loss(message)
        }
        Error::DiskFull { .. } => Status::resource_exhausted(message),
        Error::Storage(_) | Error::WriterFailed(_) => {
            tracing::error!(error = %message, "storage failure");
            Status::unavailable(message)
        }
        Error::PermissionDenied(_) => Status::permission_denied(message),
        Error::Unimplemented(_) => Status::unimplemented(message),
        Error::QuotaExceeded {
            quota, retry_after, ..
        } => {
            let mut details = ErrorDetails::with_retry_info(Some(retry_after));
            details.add_quota_failure_violation(quota, message.clone());
            Status::with_error_details(Code::ResourceExhausted, message, details)
        }
        Error::ShuttingDown => Status::unavailable(
            "the server is shutting down; retry on another instance or after restart",
        ),
    }
}

/// Precondition-failure type naming an ack id whose lease is no longer held.
/// Clients that batch settles read these to tell which ids failed.
pub const STALE_LEASE: &str = "STALE_LEASE";

/// Most stale ack ids one FAILED_PRECONDITION names. The details travel in
/// the `grpc-status-details-bin` trailer, and HTTP/2 clients cap the header
/// list (gRPC C-core and Java at 8 KiB; tonic answers a much larger one with
/// GOAWAY, killing every stream on the connection). 64 ids keep the trailer
/// near 4 KiB. The Rust SDK settles at most this many ids per call, so it
/// always learns the fate of each one.
pub const MAX_LISTED_STALE: usize = 64;

/// FAILED_PRECONDITION when some leases were no longer held; the other ids
/// were processed. The first [`MAX_LISTED_STALE`] stale ids are listed as
/// `PreconditionFailure` violations of type [`STALE_LEASE`] (subject: the ack
/// id), so a client that batched settles can fail exactly the ones concerned;
/// the message gives the total.
pub fn stale_to_status(verb: &str, total: usize, outcome: SettleOutcome) -> Result<(), Status> {
    if outcome.stale.is_empty() {
        return Ok(());
    }
    let stale = outcome.stale.len();
    let listed = stale.min(MAX_LISTED_STALE);
    let mut message = format!(
        "{stale} of {total} ack ids name leases that expired or were redelivered, so they were not \
         {verb} (the event will be or was delivered again); the other ids were {verb}."
    );
    if listed < stale {
        message.push_str(&format!(
            " The details list the first {listed} stale ids only: settle at most \
             {MAX_LISTED_STALE} ids per call to learn the fate of each."
        ));
    }
    let mut details = ErrorDetails::new();
    for id in &outcome.stale[..listed] {
        details.add_precondition_failure_violation(STALE_LEASE, id.clone(), "");
    }
    Err(Status::with_error_details(
        Code::FailedPrecondition,
        message,
        details,
    ))
}

/// A field error raised in the gRPC layer itself (wire-level validation).
pub fn invalid(field: &'static str, reason: impl Into<String>) -> Status {
    to_status(Error::InvalidArgument {
        field,
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: Error) -> Code {
        to_status(e).code()
    }

    #[test]
    fn every_variant_has_the_right_code() {
        assert_eq!(
            code(Error::InvalidArgument {
                field: "topic",
                reason: "x".into()
            }),
            Code::InvalidArgument
        );
        assert_eq!(code(Error::TopicNotFound("t".into())), Code::NotFound);
        assert_eq!(
            code(Error::SubscriptionNotFound {
                topic: "t".into(),
                subscription: "s".into()
            }),
            Code::NotFound
        );
        assert_eq!(code(Error::TopicExists("t".into())), Code::AlreadyExists);
        assert_eq!(
            code(Error::SubscriptionExists {
                topic: "t".into(),
                subscription: "s".into()
            }),
            Code::AlreadyExists
        );
        assert_eq!(
            code(Error::FailedPrecondition("x".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(Error::ResourceExhausted("x".into())),
            Code::ResourceExhausted
        );
        assert_eq!(
            code(Error::LimitReached {
                limit: "max-topics",
                message: "x".into()
            }),
            Code::ResourceExhausted
        );
        assert_eq!(
            code(Error::CorruptMetadata {
                location: "x".into(),
                reason: "y".into()
            }),
            Code::DataLoss
        );
        assert_eq!(code(Error::WriterFailed("io".into())), Code::Unavailable);
        assert_eq!(code(Error::ShuttingDown), Code::Unavailable);
    }

    #[test]
    fn limits_reached_carry_a_quota_failure_naming_the_config_key() {
        let status = to_status(Error::LimitReached {
            limit: "max-subscriptions",
            message: "full".into(),
        });
        let details = status.get_error_details();
        let quota = details.quota_failure().expect("quota failure detail");
        assert_eq!(quota.violations[0].subject, "max-subscriptions");
    }

    #[test]
    fn field_errors_carry_bad_request_details() {
        let status = invalid("topic", "must not be empty");
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request detail");
        assert_eq!(bad.field_violations[0].field, "topic");
        assert!(status.message().contains("must not be empty"));
    }
}

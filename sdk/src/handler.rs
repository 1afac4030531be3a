//! [`HandlerError`]: what a handler given to
//! [`Subscription::run`](crate::Subscription::run) returns on failure.

use std::fmt;
use std::time::Duration;

use crate::delivery::Lease;
use crate::error::Result;

/// A failed handler run. Retryable by default (the delivery is nacked and
/// comes back with backoff); [`permanent`](HandlerError::permanent) sends the
/// event to the dead-letter queue at once.
///
/// Any `std::error::Error` converts into a retryable `HandlerError`, so `?`
/// works in handlers. (`HandlerError` itself deliberately does not implement
/// `std::error::Error`, which is what makes that conversion possible.)
pub struct HandlerError {
    reason: String,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Retry(Option<Duration>),
    Permanent,
}

impl HandlerError {
    /// Try again after the subscription's retry backoff.
    pub fn retry(reason: impl fmt::Display) -> HandlerError {
        HandlerError {
            reason: reason.to_string(),
            kind: Kind::Retry(None),
        }
    }

    /// Try again after `delay` (at most 10 minutes).
    pub fn retry_after(reason: impl fmt::Display, delay: Duration) -> HandlerError {
        HandlerError {
            reason: reason.to_string(),
            kind: Kind::Retry(Some(delay)),
        }
    }

    /// Retrying cannot help (a malformed payload, a validation error): move
    /// the event to the dead-letter queue with this reason.
    pub fn permanent(reason: impl fmt::Display) -> HandlerError {
        HandlerError {
            reason: reason.to_string(),
            kind: Kind::Permanent,
        }
    }

    /// True for [`HandlerError::permanent`].
    pub fn is_permanent(&self) -> bool {
        self.kind == Kind::Permanent
    }

    /// The reason text (stored in the dead-letter entry).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub(crate) async fn settle(self, lease: Lease) -> Result<()> {
        use crate::settle::Verdict;
        let verdict = match self.kind {
            Kind::Permanent => Verdict::Nack {
                delay: None,
                reason: self.reason,
                dead_letter: true,
            },
            Kind::Retry(delay) => Verdict::Nack {
                delay,
                reason: self.reason,
                dead_letter: false,
            },
        };
        lease.settle(verdict).await
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> HandlerError {
        HandlerError::retry(e)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("reason", &self.reason)
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Permanent => write!(f, "permanent failure: {}", self.reason),
            Kind::Retry(_) => write!(f, "retryable failure: {}", self.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_gives_a_retryable_error() {
        fn parse(s: &str) -> Result<u32, HandlerError> {
            Ok(s.parse::<u32>()?)
        }
        let e = parse("x").unwrap_err();
        assert!(!e.is_permanent());
        assert!(e.reason().contains("invalid digit"));
        assert!(HandlerError::permanent("bad").is_permanent());
    }
}

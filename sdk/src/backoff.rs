//! Exponential backoff with jitter, shared by publish retries, settle retries
//! and subscription reconnects.

use std::time::Duration;

/// `d` as a protobuf Duration.
pub(crate) fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// How a background operation retries a retryable failure.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// First delay. Default 50 ms.
    pub min_backoff: Duration,
    /// Cap on the delay. Default 5 s.
    pub max_backoff: Duration,
    /// Give up once this much time passed since the first attempt. `None`
    /// retries forever. Default 60 s.
    pub timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl RetryPolicy {
    /// Whether the retry budget, counted from `started`, allows another try.
    pub(crate) fn in_time(&self, started: tokio::time::Instant) -> bool {
        self.timeout.is_none_or(|t| started.elapsed() < t)
    }
}

/// Delays that double from `min` to `max`, each drawn uniformly from
/// [d/2, d] so that many clients retrying together spread out.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(policy: &RetryPolicy) -> Backoff {
        let min = policy.min_backoff.max(Duration::from_millis(1));
        Backoff {
            min,
            max: policy.max_backoff.max(min),
            next: min,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(&RetryPolicy {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            timeout: None,
        });
        let caps = [100, 200, 400, 400];
        for cap in caps {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(cap), "{d:?} > {cap} ms");
            assert!(d >= Duration::from_millis(cap / 2), "{d:?} < {cap}/2 ms");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

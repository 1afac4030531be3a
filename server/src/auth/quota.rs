//! Quotas per principal: publish events/s and bytes/s (token buckets with a
//! burst, `governor`), open Subscribe streams, and the topics and
//! subscriptions it holds (those it created, counted at each creation).
//!
//! Over a quota the call is RESOURCE_EXHAUSTED with `RetryInfo` (when the
//! bucket has room again) and a `QuotaFailure` naming the quota, and nothing
//! is written. Buckets are per principal, so one principal over its quota
//! leaves the others untouched. Anonymous callers (no authentication
//! configured) have none.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use eventbus_broker::Error;

/// The `[auth.quotas]` table: what each principal may use. 0: unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuotaConfig {
    /// Events a principal may publish per second, on average.
    pub publish_events_per_second: u32,
    /// Events it may publish at once above the average. Default (0): one
    /// second's worth, and at least max-events-per-publish.
    pub publish_events_burst: u32,
    /// Bytes (payload, key, type, content type, attributes) per second.
    pub publish_bytes_per_second: u32,
    /// Bytes at once above the average. Default (0): one second's worth,
    /// and at least max-request-bytes, so the largest request can pass.
    pub publish_bytes_burst: u32,
    /// Subscribe streams a principal may hold open at once.
    pub subscribe_streams: u32,
    /// Topics a principal may hold: created by it (explicitly or on first
    /// use) and not deleted.
    pub topics: u32,
    /// Subscriptions a principal may hold, on all topics together.
    pub subscriptions: u32,
}

/// The live buckets and stream counts.
pub struct Quotas {
    events: Option<DefaultKeyedRateLimiter<String>>,
    bytes: Option<DefaultKeyedRateLimiter<String>>,
    streams: u32,
    open: Mutex<HashMap<String, Arc<Semaphore>>>,
    topics: u32,
    subscriptions: u32,
    /// One creation at a time per principal, so that two concurrent creates
    /// cannot both see room for one more.
    creating: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Principals refused a publish, until their bucket has room again: the
    /// RPC layer refuses their publishes before decoding them
    /// ([`Quotas::refused_until`]), so a flood over its quota costs the
    /// server a map lookup per request instead of a protobuf decode.
    penalized: Mutex<HashMap<String, (Instant, &'static str)>>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas").finish_non_exhaustive()
    }
}

fn bucket(rate: u32, burst: u32, floor: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst.max(rate.get()).max(floor)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl Quotas {
    /// `max_events` and `max_request_bytes` are the largest single request,
    /// which every burst must admit.
    pub fn new(config: &QuotaConfig, max_events: u32, max_request_bytes: u32) -> Quotas {
        Quotas {
            events: bucket(
                config.publish_events_per_second,
                config.publish_events_burst,
                max_events,
            ),
            bytes: bucket(
                config.publish_bytes_per_second,
                config.publish_bytes_burst,
                max_request_bytes,
            ),
            streams: config.subscribe_streams,
            open: Mutex::new(HashMap::new()),
            topics: config.topics,
            subscriptions: config.subscriptions,
            creating: Mutex::new(HashMap::new()),
            penalized: Mutex::new(HashMap::new()),
        }
    }

    /// The refusal for a publish by `principal` that arrives while it is
    /// still waiting out an earlier refusal; None once its wait is over (the
    /// buckets then decide), or when publishes have no quota.
    pub fn refused_until(&self, principal: &str) -> Option<Error> {
        if self.events.is_none() && self.bytes.is_none() {
            return None;
        }
        let mut penalized = self.penalized.lock().unwrap_or_else(|p| p.into_inner());
        let (until, quota) = *penalized.get(principal)?;
        let now = Instant::now();
        if now >= until {
            penalized.remove(principal);
            return None;
        }
        Some(exhausted(principal, quota, until - now))
    }

    fn penalize(&self, principal: &str, quota: &'static str, wait: Duration) {
        self.penalized
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(principal.to_string(), (Instant::now() + wait, quota));
    }

    /// The most topics, or subscriptions, one principal may hold; `None`
    /// for no limit.
    pub fn holding_limit(&self, kind: Holding) -> Option<u32> {
        let limit = match kind {
            Holding::Topics => self.topics,
            Holding::Subscriptions => self.subscriptions,
        };
        (limit > 0).then_some(limit)
    }

    /// `principal`'s turn to create something, held while it counts what it
    /// holds and creates.
    pub async fn creation_turn(&self, principal: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = self
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(principal.to_string())
            .or_default()
            .clone();
        turn.lock_owned().await
    }

    /// Refuses one more of `kind` when `principal` already holds `held`.
    pub fn may_create(&self, principal: &str, kind: Holding, held: usize) -> Result<(), Error> {
        let Some(limit) = self.holding_limit(kind) else {
            return Ok(());
        };
        if held < limit as usize {
            return Ok(());
        }
        let quota = match kind {
            Holding::Topics => "topics",
            Holding::Subscriptions => "subscriptions",
        };
        Err(Error::QuotaExceeded {
            quota,
            message: format!(
                "principal {principal:?} holds {held} {quota}, its quota \
                 (auth.quotas.{quota}); delete one it created first"
            ),
            // Nothing frees on its own: a retry helps only after a delete.
            retry_after: Duration::from_secs(60),
        })
    }

    /// Takes `events` events of `bytes` bytes from `principal`'s buckets, or
    /// says when to retry. Both buckets are checked before either is
    /// charged, so a refused publish costs nothing.
    pub fn publish(&self, principal: &str, events: usize, bytes: usize) -> Result<(), Error> {
        let key = principal.to_string();
        let checks = [
            (&self.events, events, "publish-events-per-second"),
            (&self.bytes, bytes, "publish-bytes-per-second"),
        ];
        for (limiter, n, quota) in checks {
            let Some(limiter) = limiter else { continue };
            let n = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX).max(1))
                .unwrap_or(NonZeroU32::MIN);
            match limiter.check_key_n(&key, n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    self.penalize(principal, quota, wait);
                    return Err(exhausted(principal, quota, wait));
                }
                Err(_) => return Err(exhausted(principal, quota, Duration::from_secs(1))),
            }
        }
        Ok(())
    }

    /// A slot for one more Subscribe stream of `principal`, held until the
    /// stream ends.
    pub fn open_stream(&self, principal: &str) -> Result<Option<OwnedSemaphorePermit>, Error> {
        if self.streams == 0 {
            return Ok(None);
        }
        let semaphore = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(principal.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.streams as usize)))
            .clone();
        semaphore
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| Error::QuotaExceeded {
                quota: "subscribe-streams",
                message: format!(
                    "principal {principal:?} has {} Subscribe streams open, its quota \
                     (auth.quotas.subscribe-streams); close one first",
                    self.streams
                ),
                retry_after: Duration::from_secs(1),
            })
    }
}

/// What a principal holds, counted by creation quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    Topics,
    Subscriptions,
}

fn exhausted(principal: &str, quota: &'static str, wait: Duration) -> Error {
    Error::QuotaExceeded {
        quota,
        message: format!(
            "principal {principal:?} is over its {quota} quota (auth.quotas); retry in {} ms",
            wait.as_millis().max(1)
        ),
        retry_after: wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_refuses_with_a_wait_per_principal() {
        let q = Quotas::new(
            &QuotaConfig {
                publish_events_per_second: 10,
                publish_events_burst: 20,
                ..Default::default()
            },
            5,
            1 << 20,
        );
        q.publish("a", 20, 0).unwrap();
        let Err(Error::QuotaExceeded { retry_after, .. }) = q.publish("a", 5, 0) else {
            panic!("over the burst");
        };
        assert!(retry_after > Duration::ZERO);
        // Another principal has its own bucket.
        q.publish("b", 20, 0).unwrap();
        // Until its wait is over, "a" is refused without touching a bucket.
        let Some(Error::QuotaExceeded { retry_after, .. }) = q.refused_until("a") else {
            panic!("a is waiting");
        };
        assert!(retry_after > Duration::ZERO);
        assert!(q.refused_until("b").is_none());
    }

    #[test]
    fn the_byte_burst_admits_the_largest_request() {
        let q = Quotas::new(
            &QuotaConfig {
                publish_bytes_per_second: 1000,
                ..Default::default()
            },
            1000,
            1 << 20,
        );
        q.publish("a", 1, 1 << 20).unwrap();
        assert!(q.publish("a", 1, 1 << 20).is_err());
    }

    #[test]
    fn holdings_are_refused_at_the_limit_and_unlimited_at_zero() {
        let q = Quotas::new(
            &QuotaConfig {
                topics: 2,
                ..Default::default()
            },
            1,
            1,
        );
        q.may_create("a", Holding::Topics, 1).unwrap();
        let Err(Error::QuotaExceeded { quota, .. }) = q.may_create("a", Holding::Topics, 2) else {
            panic!("at the limit");
        };
        assert_eq!(quota, "topics");
        q.may_create("a", Holding::Subscriptions, 1_000_000)
            .unwrap();
    }

    #[test]
    fn streams_are_counted_per_principal_until_dropped() {
        let q = Quotas::new(
            &QuotaConfig {
                subscribe_streams: 1,
                ..Default::default()
            },
            1,
            1,
        );
        let held = q.open_stream("a").unwrap();
        assert!(q.open_stream("a").is_err());
        assert!(q.open_stream("b").is_ok());
        drop(held);
        assert!(q.open_stream("a").unwrap().is_some());
    }
}

//! Subscriptions as the contract sees them: their settings, the changes an
//! admin can make, where a seek moves them, and what they report.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::{Limits, MAX_ACK_DEADLINE, MIN_ACK_DEADLINE};
use crate::types::{saturating_millis, StartPosition, SubscriptionId, UnixMillis};

/// Delivery order guarantee of a subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ordering {
    /// No ordering between deliveries; maximum parallelism.
    #[default]
    None,
    /// At most one event per key in flight at a time.
    Key,
}

/// One condition on an event attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttributeCondition {
    Eq { key: String, value: String },
    Ne { key: String, value: String },
    In { key: String, values: Vec<String> },
    Exists { key: String, exists: bool },
    Prefix { key: String, prefix: String },
}

/// A subscription's event filter. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub types: Vec<String>,
    pub attributes: Vec<AttributeCondition>,
}

/// User-settable subscription settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscriptionConfig {
    pub ack_deadline_ms: u64,
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// 0 means unlimited.
    pub max_delivery_attempts: u32,
    pub filter: Filter,
    pub ordering: Ordering,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        SubscriptionConfig {
            ack_deadline_ms: 30_000,
            // No retry policy: redeliver at once.
            min_backoff_ms: 0,
            max_backoff_ms: 0,
            max_delivery_attempts: 5,
            filter: Filter::default(),
            ordering: Ordering::None,
        }
    }
}

/// A retry policy as requested; unset bounds take 1 s and 60 s.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryPolicy {
    pub min_backoff: Option<Duration>,
    pub max_backoff: Option<Duration>,
}

/// A change of subscription settings: `None` leaves a field as it is; an inner
/// `None` resets it to its default.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionUpdate {
    pub ack_deadline: Option<Option<Duration>>,
    pub retry_policy: Option<Option<RetryPolicy>>,
    pub max_delivery_attempts: Option<Option<u32>>,
    pub filter: Option<Filter>,
    pub ordering: Option<Ordering>,
}

/// Where SeekSubscription moves a subscription.
#[derive(Debug, Clone)]
pub enum SeekTarget {
    Earliest,
    Latest,
    /// The first event published at or after this time, per partition.
    Time(UnixMillis),
    /// Explicit (partition, offset) pairs; other partitions stay where they are.
    Offsets(Vec<(u32, u64)>),
}

/// Settings for a new subscription; `None` takes the default.
#[derive(Debug, Clone, Default)]
pub struct NewSubscription {
    pub start_position: StartPosition,
    pub ack_deadline: Option<Duration>,
    /// `None`: redeliver at once after a failure.
    pub retry_policy: Option<RetryPolicy>,
    pub max_delivery_attempts: Option<u32>,
    pub filter: Filter,
    pub ordering: Ordering,
    /// The principal creating it (see [`crate::TopicConfig::creator`]).
    pub creator: Option<String>,
}

/// A subscription at one moment: its settings and its statistics.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    pub topic: String,
    pub name: String,
    /// Unique per creation: a subscription deleted and created again under
    /// the same name gets a new id (counters keyed by it start over).
    pub id: SubscriptionId,
    pub config: SubscriptionConfig,
    pub paused: bool,
    pub start_position: StartPosition,
    pub created_ms: UnixMillis,
    /// The principal that created it, if one did.
    pub creator: Option<String>,
    pub stats: SubscriptionStats,
}

/// Counters and gauges of one subscription. Counters count since the
/// subscription's delivery engine started (a restart starts them over).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Events not yet settled (acked, dead-lettered or filtered).
    pub backlog: u64,
    pub in_flight: u64,
    /// Publish time of the oldest unsettled event.
    pub oldest_unacked_ms: Option<UnixMillis>,
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub redelivered: u64,
    pub expired: u64,
    pub dead_lettered: u64,
    /// Events settled without delivery because they did not match the filter.
    pub filtered: u64,
    /// Events removed by retention before this subscription settled them.
    pub lost_to_retention: u64,
    /// Entries in the dead-letter queue now, and when the oldest was added.
    pub dead_letter_count: u64,
    pub oldest_dead_letter_ms: Option<UnixMillis>,
    pub members: u32,
}

// ---- settings every backend checks and applies the same way ----------------

impl SubscriptionConfig {
    /// The settings of a new subscription, checked; what it leaves unset
    /// takes the defaults (`default_ack_deadline` is the server's).
    pub fn of_new(
        new: &NewSubscription,
        default_ack_deadline: Duration,
        limits: &Limits,
    ) -> Result<SubscriptionConfig> {
        let (min_backoff_ms, max_backoff_ms) = backoff_bounds_ms(new.retry_policy)?;
        new.filter.validate(limits)?;
        Ok(SubscriptionConfig {
            ack_deadline_ms: ack_deadline_ms(new.ack_deadline, default_ack_deadline)?,
            min_backoff_ms,
            max_backoff_ms,
            max_delivery_attempts: new
                .max_delivery_attempts
                .unwrap_or(SubscriptionConfig::default().max_delivery_attempts),
            filter: new.filter.clone(),
            ordering: new.ordering,
        })
    }

    /// Whether `attempts` deliveries use up `max_delivery_attempts`
    /// (0 = unlimited).
    pub fn out_of_attempts(&self, attempts: u32) -> bool {
        let max = self.max_delivery_attempts;
        max > 0 && attempts >= max
    }

    /// Exponential backoff for the redelivery after `attempts` deliveries:
    /// `min_backoff * 2^(attempts-1)`, capped at `max_backoff`, minus up to
    /// 20 % jitter (never below `min_backoff`) so that a burst of failures
    /// does not come back as a burst. No retry policy means at once.
    pub fn backoff(&self, attempts: u32) -> Duration {
        if self.max_backoff_ms == 0 {
            return Duration::ZERO;
        }
        let exp = attempts.saturating_sub(1).min(40);
        let base = self
            .min_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms);
        let jitter = if base > 0 {
            rand::random_range(0..=base / 5)
        } else {
            0
        };
        Duration::from_millis((base - jitter).max(self.min_backoff_ms))
    }
}

/// A [`SubscriptionUpdate`] whose values were checked: applying it cannot
/// fail, so a backend can apply it inside its compare-and-set or its write.
#[derive(Debug, Clone)]
pub struct CheckedUpdate {
    ack_deadline_ms: Option<u64>,
    backoff_ms: Option<(u64, u64)>,
    max_delivery_attempts: Option<Option<u32>>,
    filter: Option<Filter>,
    ordering: Option<Ordering>,
}

impl SubscriptionUpdate {
    /// Checks every value the update sets.
    pub fn check(self, default_ack_deadline: Duration, limits: &Limits) -> Result<CheckedUpdate> {
        let ack_deadline_ms = self
            .ack_deadline
            .map(|d| ack_deadline_ms(d, default_ack_deadline))
            .transpose()?;
        let backoff_ms = self.retry_policy.map(backoff_bounds_ms).transpose()?;
        if let Some(f) = &self.filter {
            f.validate(limits)?;
        }
        Ok(CheckedUpdate {
            ack_deadline_ms,
            backoff_ms,
            max_delivery_attempts: self.max_delivery_attempts,
            filter: self.filter,
            ordering: self.ordering,
        })
    }
}

impl CheckedUpdate {
    /// Sets the fields the update names; the others stay.
    pub fn apply(&self, c: &mut SubscriptionConfig) {
        if let Some(ms) = self.ack_deadline_ms {
            c.ack_deadline_ms = ms;
        }
        if let Some((min, max)) = self.backoff_ms {
            (c.min_backoff_ms, c.max_backoff_ms) = (min, max);
        }
        if let Some(max) = self.max_delivery_attempts {
            c.max_delivery_attempts =
                max.unwrap_or(SubscriptionConfig::default().max_delivery_attempts);
        }
        if let Some(f) = &self.filter {
            c.filter = f.clone();
        }
        if let Some(o) = self.ordering {
            c.ordering = o;
        }
    }
}

/// A requested ack deadline (`None`: the server default), checked.
fn ack_deadline_ms(requested: Option<Duration>, default: Duration) -> Result<u64> {
    let d = requested.unwrap_or(default);
    if !(MIN_ACK_DEADLINE..=MAX_ACK_DEADLINE).contains(&d) {
        return Err(Error::invalid(
            "ack_deadline",
            format!("{d:?} is out of range; use {MIN_ACK_DEADLINE:?} to {MAX_ACK_DEADLINE:?}"),
        ));
    }
    Ok(saturating_millis(d))
}

/// Backoff bounds in ms for a requested policy; no policy is (0, 0): at once.
/// The bounds are compared as durations, before any conversion to ms, so a
/// huge value cannot wrap into a small one.
fn backoff_bounds_ms(policy: Option<RetryPolicy>) -> Result<(u64, u64)> {
    let Some(p) = policy else {
        return Ok((0, 0));
    };
    let min = p.min_backoff.unwrap_or(Duration::from_secs(1));
    let max = p
        .max_backoff
        .unwrap_or_else(|| Duration::from_secs(60).max(min));
    if min > max {
        return Err(Error::invalid(
            "retry_policy",
            format!("min_backoff ({min:?}) exceeds max_backoff ({max:?})"),
        ));
    }
    if max > MAX_ACK_DEADLINE {
        return Err(Error::invalid(
            "retry_policy.max_backoff",
            format!("{max:?} is longer than the maximum of {MAX_ACK_DEADLINE:?}"),
        ));
    }
    Ok((saturating_millis(min), saturating_millis(max)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_max_backoff_too_long_for_u64_millis_is_rejected_not_wrapped() {
        // 2^64 + 384 ms: truncated to u64 it would be 384 ms, under the cap.
        let wrapping = Duration::from_secs(18_446_744_073_709_552);
        let err = backoff_bounds_ms(Some(RetryPolicy {
            min_backoff: Some(Duration::from_millis(100)),
            max_backoff: Some(wrapping),
        }))
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    field: "retry_policy.max_backoff",
                    ..
                }
            ),
            "{err}"
        );
        let err = backoff_bounds_ms(Some(RetryPolicy {
            min_backoff: Some(wrapping),
            max_backoff: None,
        }))
        .unwrap_err();
        assert!(err.to_string().contains("longer than the maximum"), "{err}");
        assert_eq!(
            backoff_bounds_ms(Some(RetryPolicy::default())).unwrap(),
            (1_000, 60_000)
        );
        assert_eq!(backoff_bounds_ms(None).unwrap(), (0, 0));
    }

    #[test]
    fn attempts_run_out_at_the_maximum_unless_unlimited() {
        let mut c = SubscriptionConfig {
            max_delivery_attempts: 3,
            ..Default::default()
        };
        assert!(!c.out_of_attempts(2));
        assert!(c.out_of_attempts(3));
        assert!(c.out_of_attempts(4));
        c.max_delivery_attempts = 0;
        assert!(!c.out_of_attempts(u32::MAX));
    }

    #[test]
    fn backoff_doubles_with_jitter_within_the_policy() {
        let mut c = SubscriptionConfig::default();
        assert_eq!(c.backoff(3), Duration::ZERO, "no policy: at once");
        c.min_backoff_ms = 100;
        c.max_backoff_ms = 1_000;
        for _ in 0..200 {
            let first = c.backoff(1).as_millis() as u64;
            assert_eq!(first, 100, "never below the minimum");
            let third = c.backoff(3).as_millis() as u64;
            assert!((320..=400).contains(&third), "{third}");
            let capped = c.backoff(30).as_millis() as u64;
            assert!((800..=1_000).contains(&capped), "{capped}");
        }
        assert!(c.backoff(u32::MAX) <= Duration::from_millis(1_000));
    }
}

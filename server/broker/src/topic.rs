//! Topics as the contract sees them: settings in, snapshots out.

use serde::{Deserialize, Serialize};

use crate::types::{Offset, TopicId, UnixMillis};

/// A topic's retention limits. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retention {
    pub max_age_ms: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// Settings for a new topic.
#[derive(Debug, Clone, Default)]
pub struct TopicConfig {
    /// 0 means the server default.
    pub partitions: u32,
    pub retention: Retention,
    /// The principal creating it, kept so that per-principal creation
    /// quotas can count what each one holds. `None`: nobody in particular
    /// (no authentication configured, or an embedded caller).
    pub creator: Option<String>,
}

/// The offsets one partition retains: `start..end` (empty when equal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionBounds {
    /// The oldest retained offset.
    pub start: Offset,
    /// The offset the next event gets.
    pub end: Offset,
}

/// A topic at one moment, as admins see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// Event ids derive from it; never reused for another topic.
    pub id: TopicId,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionBounds>,
    pub retention: Retention,
    pub created_ms: UnixMillis,
    /// The principal that created it, if one did.
    pub creator: Option<String>,
}

impl TopicInfo {
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Events ever committed: the sum of the partitions' end offsets.
    pub fn committed_events(&self) -> u64 {
        self.partitions.iter().map(|p| p.end).sum()
    }

    /// Events retained, all partitions together.
    pub fn retained_events(&self) -> u64 {
        self.partitions.iter().map(|p| p.end - p.start).sum()
    }
}

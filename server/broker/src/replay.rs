//! Replay: reading a topic's history without touching any subscription.

use crate::error::{Error, Result};
use crate::types::{Offset, StoredEvent, UnixMillis};

/// What a replay reads. Built by the caller from a checked request.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub topic: String,
    /// The partitions to read, each named once and below the partition count.
    pub partitions: Vec<u32>,
    pub start: ReplayStart,
    pub end: ReplayEnd,
    /// Event type patterns (NATS wildcards); empty: every type.
    pub types: Vec<String>,
}

/// Where each partition's replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStart {
    /// The oldest retained event.
    Earliest,
    /// This offset, or the oldest retained one when it is gone.
    Offset(Offset),
    /// The first event published at or after this time.
    Time(UnixMillis),
}

/// Where each partition's replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayEnd {
    /// The partition's end when the replay starts.
    Tail,
    /// Before this offset.
    Offset(Offset),
    /// Before the first event published at or after this time.
    Time(UnixMillis),
    /// Never: after the history, follow new events as they commit.
    Follow,
}

/// What a replay stream yields.
#[derive(Debug, Clone)]
pub enum ReplayItem {
    /// Events of one partition, in offset order, that match the types.
    Events(Vec<StoredEvent>),
    /// Every bounded partition is read to its end, or (following) the
    /// history is read and new events follow as they commit. Sent once.
    CaughtUp,
}

/// The partitions a replay of `topic` (with `partition_count` partitions)
/// reads: every one when `requested` is empty, else those named, each once.
pub fn select_partitions(topic: &str, partition_count: u32, requested: &[u32]) -> Result<Vec<u32>> {
    if requested.is_empty() {
        return Ok((0..partition_count).collect());
    }
    let mut seen = vec![false; partition_count as usize];
    for &p in requested {
        let Some(seen) = seen.get_mut(p as usize) else {
            return Err(Error::invalid(
                "partitions",
                format!("topic {topic:?} has partitions 0..{partition_count}; {p} does not exist"),
            ));
        };
        if std::mem::replace(seen, true) {
            return Err(Error::invalid(
                "partitions",
                format!("partition {p} is named twice; name each partition once"),
            ));
        }
    }
    Ok(requested.to_vec())
}

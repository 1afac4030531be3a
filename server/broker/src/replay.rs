//! Replay: reading a topic's history without touching any subscription.

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

//! The delivery engine: one actor task per subscription.
//!
//! The actor owns all mutable delivery state of its subscription (leases, retry
//! timers, per-partition ack state), so nothing on the delivery path takes a
//! lock. Subscribe streams ("members"), acks and admin calls talk to it through
//! a bounded command channel.
//!
//! See `ARCHITECTURE.md` ("Delivery engine") for what is persisted when and what a
//! crash can cost.

pub mod ack_id;
pub mod acks;
mod actor;
pub mod dead_letter;

pub use actor::{
    Delivery, DlqCounters, MemberItem, MemberStream, Redriven, SettleOp, SettleOutcome, StopReason,
    SubscriptionHandle, SubscriptionStats, DEADLINE_EXCEEDED,
};

//! What the kill loop's clients observed, each with the instant it happened
//! on one monotonic clock: answered publishes, deliveries, acks that returned
//! OK, and the kills. The verifier judges the server against this record only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// A publish the server answered OK: where it says the event is.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The unique payload (`w<publisher>-<n>`).
    pub payload: String,
    pub partition: u32,
    pub offset: u64,
    /// Answered from the idempotency window (a retry of a stored event).
    pub duplicate: bool,
    /// When the OK arrived (for the loss window of a power cut).
    pub answered: Instant,
}

/// One event handed to a consumer.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub partition: u32,
    pub offset: u64,
    pub payload: String,
    pub attempt: u32,
    pub received: Instant,
}

/// An Ack call that returned OK for one delivery.
#[derive(Clone, Copy, Debug)]
pub struct Acked {
    pub partition: u32,
    pub offset: u64,
    /// When the consumer called ack (the server settled it after this) ...
    pub called: Instant,
    /// ... and when the OK came back (the server settled it before this).
    pub answered: Instant,
}

/// Everything recorded so far. Appended by the workload tasks, read by the
/// verifier under the same lock (short critical sections only).
#[derive(Default)]
pub struct Record {
    pub stored: Vec<Stored>,
    pub delivered: Vec<Delivered>,
    pub acked: Vec<Acked>,
    /// The instant just before each SIGKILL was sent.
    pub kills: Vec<Instant>,
}

/// The shared record plus counters that need no ordering.
#[derive(Default)]
pub struct History {
    record: Mutex<Record>,
    /// Publishes handed to the SDK and not answered yet.
    pub publishes_in_flight: AtomicU64,
    /// Publishes the SDK gave up on (the outcome stays unknown).
    pub publishes_failed: AtomicU64,
    /// Acks that did not return OK (lease lost to a restart, or gave up).
    pub acks_failed: AtomicU64,
    /// Of those, acks whose lease was gone (FAILED_PRECONDITION, STALE_LEASE).
    pub acks_lease_lost: AtomicU64,
    /// Nacks sent, with and without a delay.
    pub nacks: AtomicU64,
    pub delayed_nacks: AtomicU64,
    /// Client failures that end part of the workload (a member's stream
    /// ending with an error reconnecting cannot fix).
    client_errors: Mutex<Vec<String>>,
    /// The first few unexpected but tolerated failures, for the report.
    notes: Mutex<Vec<String>>,
}

impl History {
    pub fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().expect("history lock not poisoned")
    }

    pub fn stored(&self, s: Stored) {
        self.lock().stored.push(s);
    }

    pub fn delivered(&self, d: Delivered) {
        self.lock().delivered.push(d);
    }

    pub fn acked(&self, a: Acked) {
        self.lock().acked.push(a);
    }

    /// Marks the moment a SIGKILL is about to be sent; returns the publishes
    /// in flight at that moment (their outcome is unknown to the client).
    pub fn kill(&self, at: Instant) -> u64 {
        self.lock().kills.push(at);
        self.publishes_in_flight.load(Ordering::Relaxed)
    }

    /// Counts a publish the SDK gave up on; keeps the first few reasons.
    pub fn publish_failed(&self, e: &eventbus::Error) {
        if self.publishes_failed.fetch_add(1, Ordering::Relaxed) < 3 {
            self.client_error(format!("a publish failed after the SDK's retries: {e}"));
        }
    }

    /// Counts an Ack that did not return OK; keeps the first few reasons
    /// other than a lease lost to a restart (the expected one).
    pub fn ack_failed(&self, e: &eventbus::Error) {
        self.acks_failed.fetch_add(1, Ordering::Relaxed);
        if matches!(e, eventbus::Error::LeaseLost { .. }) {
            self.acks_lease_lost.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut notes = self.notes.lock().expect("history lock not poisoned");
            if notes.len() < 5 {
                let mut why = e.to_string();
                let mut source = e.status().and_then(std::error::Error::source);
                while let Some(s) = source {
                    why.push_str(&format!(": {s}"));
                    source = s.source();
                }
                notes.push(format!("an ack failed: {why}"));
            }
        }
    }

    pub fn notes(&self) -> Vec<String> {
        self.notes
            .lock()
            .expect("history lock not poisoned")
            .clone()
    }

    pub fn client_error(&self, what: String) {
        self.client_errors
            .lock()
            .expect("history lock not poisoned")
            .push(what);
    }

    pub fn client_errors(&self) -> Vec<String> {
        self.client_errors
            .lock()
            .expect("history lock not poisoned")
            .clone()
    }

    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

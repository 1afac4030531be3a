//! Per-partition ack state (`PartitionAcks`), persisted without a checksum
//! of its own in the `subs` column family and decoded at every subscription
//! start.
//!
//! Modes (first byte):
//! * 0, stored bytes: `PartitionAcks::decode` on the rest. A decoded state
//!   must be one the delivery engine can be in (every settled offset above
//!   the floor, attempts only at or above it) and must round-trip through
//!   `encode`.
//! * 1, encoder side: a state built by the engine's own operations (settle,
//!   deliver, raise the floor) from arbitrary steps must round-trip exactly,
//!   and every truncation of its encoding must be rejected.
#![no_main]

use arbitrary::Arbitrary;
use eventbus_fuzz::{with_mode, within_budget, STORED_BYTES_FACTOR};
use eventbus_log::internals::acks::PartitionAcks;

eventbus_fuzz::fuzz_modes!(seeds: seeds, modes: [stored_bytes, encoder_side]);

fn stored_bytes(value: &[u8]) {
    let decoded = within_budget(value.len(), STORED_BYTES_FACTOR, || {
        PartitionAcks::decode(value)
    });
    let Ok(acks) = decoded else {
        return;
    };
    assert!(
        acks.settled.iter().all(|&o| o > acks.floor),
        "settled offsets must lie above the floor (the floor itself is never settled): {acks:?}"
    );
    assert!(
        acks.attempts.keys().all(|&o| o >= acks.floor),
        "attempts below the floor: {acks:?}"
    );
    assert_eq!(PartitionAcks::decode(&acks.encode()).as_ref(), Ok(&acks));
}

/// One step of the delivery engine on a partition's ack state. Offsets are
/// relative to the floor, as the engine works within a bounded window above it.
#[derive(Debug, Arbitrary)]
enum Step {
    Settle(u16),
    /// A delivery of an unsettled offset counts an attempt.
    Deliver(u16),
    RaiseFloor(u16),
}

#[derive(Debug, Arbitrary)]
struct EncoderInput {
    start: u64,
    steps: Vec<Step>,
    cut: usize,
}

fn encoder_side(data: &[u8]) {
    let Some(input) = eventbus_fuzz::structured::<EncoderInput>(data) else {
        return;
    };
    // Offsets are dense from 0 and far from u64::MAX in any real log.
    let mut acks = PartitionAcks::starting_at(input.start >> 8);
    for step in input.steps {
        match step {
            Step::Settle(d) => {
                acks.settle(acks.floor + u64::from(d));
            }
            Step::Deliver(d) => {
                let offset = acks.floor + u64::from(d);
                if !acks.is_settled(offset) {
                    let a = acks.attempts.entry(offset).or_insert(0);
                    *a = a.saturating_add(1);
                }
            }
            Step::RaiseFloor(d) => acks.raise_floor(acks.floor + u64::from(d)),
        }
    }
    let encoded = acks.encode();
    assert_eq!(PartitionAcks::decode(&encoded), Ok(acks));
    let cut = input.cut % encoded.len();
    assert!(
        PartitionAcks::decode(&encoded[..cut]).is_err(),
        "a truncation to {cut} of {} bytes decoded",
        encoded.len()
    );
}

/// Encodings of states the engine writes.
fn seeds() -> Vec<Vec<u8>> {
    let fresh = PartitionAcks::starting_at(0);
    let mut busy = PartitionAcks::starting_at(1_000_000);
    for o in [1_000_002, 1_000_005, 1_100_000] {
        busy.settle(o);
    }
    busy.attempts.insert(1_000_000, 3);
    busy.attempts.insert(1_000_001, 1);
    vec![
        with_mode(0, &fresh.encode()),
        with_mode(0, &busy.encode()),
        with_mode(0, &PartitionAcks::starting_at(u64::MAX / 2).encode()),
    ]
}

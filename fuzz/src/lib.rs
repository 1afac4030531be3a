//! What the fuzz targets in `fuzz_targets/` share: an allocation budget, the
//! check that a rejection is a precise INVALID_ARGUMENT, structured inputs
//! for the encoder side, and the seed-corpus writer.
//!
//! Every target checks properties, not only "no panic":
//! * decoding never panics and rejects bad bytes with an error;
//! * decoding allocates at most a small multiple of the input's size
//!   ([`within_budget`]), so a length or count field of 2^60 cannot reserve
//!   2^60 bytes;
//! * where an encoder exists, what it encodes decodes to the same value, and
//!   what decodes re-encodes to something that decodes to the same value.
//!
//! A target picks a mode from its first input byte (raw stored bytes,
//! structured encoder input, ...), so that one binary covers one decoder and
//! CI runs few binaries.

use std::alloc::System;
use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use bytes::Bytes;
use cap::Cap;
use eventbus_log::{NewEvent, StoredEvent, TopicId};
#[doc(hidden)]
pub use libfuzzer_sys;

/// Declares the fuzz target of a binary: the first input byte picks one of
/// `modes` (each a `fn(&[u8])` given the rest of the input), and `seeds`
/// (`fn() -> Vec<Vec<u8>>`) serves [`write_seeds_if_asked`].
#[macro_export]
macro_rules! fuzz_modes {
    (seeds: $seeds:path, modes: [$($mode:path),+ $(,)?]) => {
        $crate::libfuzzer_sys::fuzz_target!(
            init: $crate::write_seeds_if_asked($seeds),
            |data: &[u8]| {
                const MODES: &[fn(&[u8])] = &[$($mode),+];
                if let Some((&mode, rest)) = data.split_first() {
                    MODES[usize::from(mode) % MODES.len()](rest);
                }
            }
        );
    };
}

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Heap any decoder may use whatever the input: small buffers, error
/// messages, a tree node or two.
const BASE_BUDGET: usize = 256 * 1024;

/// Runs `f` with a cap of `BASE_BUDGET + per_input_byte * input_len` bytes of
/// additional live heap. An allocation beyond it fails, which aborts the
/// process, and libFuzzer records the input as a crash ("memory allocation of
/// N bytes failed").
///
/// `per_input_byte` is the amplification a decoder may legitimately have:
/// each input byte can become part of a struct (a 2-byte protobuf
/// submessage becomes a struct of a few hundred bytes), but never a
/// reservation sized by a number read from the input.
pub fn within_budget<R>(input_len: usize, per_input_byte: usize, f: impl FnOnce() -> R) -> R {
    let budget = BASE_BUDGET.saturating_add(per_input_byte.saturating_mul(input_len));
    let limit = ALLOC.allocated().saturating_add(budget);
    ALLOC
        .set_limit(limit)
        .expect("the limit is above what is allocated");
    let out = f();
    ALLOC
        .set_limit(usize::MAX)
        .expect("raising the limit cannot fail");
    out
}

/// Budget factor for the storage decoders: strings and small maps built from
/// the input, nothing more.
pub const STORED_BYTES_FACTOR: usize = 64;

/// Budget factor for protobuf requests: prost turns a 2-byte empty submessage
/// into a struct of ~200 bytes in a `Vec` that may double.
pub const REQUEST_FACTOR: usize = 512;

/// Asserts that a rejected client request got INVALID_ARGUMENT with a message
/// that says what to fix.
pub fn expect_invalid_argument(status: &tonic::Status) {
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "a bad request must be INVALID_ARGUMENT: {status:?}"
    );
    assert!(!status.message().is_empty(), "an empty message: {status:?}");
}

/// Asserts that a domain rejection of client input is `InvalidArgument`.
pub fn expect_invalid_input(err: &eventbus_log::Error) {
    assert!(
        matches!(err, eventbus_log::Error::InvalidArgument { .. }),
        "client input must be rejected as InvalidArgument: {err:?}"
    );
}

/// An event for the encoder side: anything a publisher could send.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbEvent {
    pub key: String,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub content_type: String,
    pub attributes: BTreeMap<String, String>,
    pub idempotency_key: String,
    pub event_time: Option<u64>,
}

impl ArbEvent {
    /// The event, and its record as the writer seals it at `publish_ms`.
    pub fn seal(self, publish_ms: u64) -> (NewEvent, Bytes) {
        let event = NewEvent::from(self);
        let mut record = eventbus_log::internals::codec::encode_record(&event);
        eventbus_log::internals::codec::seal_record(&mut record, publish_ms);
        (event, record.freeze())
    }
}

/// Structured input for the encoder side, from all of `data`.
pub fn structured<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(arbitrary::Unstructured::new(data)).ok()
}

impl From<ArbEvent> for NewEvent {
    fn from(e: ArbEvent) -> NewEvent {
        NewEvent {
            key: e.key,
            event_type: e.event_type,
            payload: Bytes::from(e.payload),
            content_type: e.content_type,
            attributes: e.attributes,
            idempotency_key: e.idempotency_key,
            event_time: e.event_time,
        }
    }
}

/// `event` as the log stores it at (topic, partition, offset, publish time).
pub fn stored(
    event: &NewEvent,
    (topic_id, partition, offset): (TopicId, u32, u64),
    publish_time: u64,
) -> StoredEvent {
    StoredEvent {
        topic_id,
        partition,
        offset,
        publish_time,
        key: event.key.clone(),
        event_type: event.event_type.clone(),
        payload: event.payload.clone(),
        content_type: event.content_type.clone(),
        attributes: event.attributes.clone(),
        idempotency_key: event.idempotency_key.clone(),
        event_time: event.event_time,
    }
}

/// A typical event, for seeds.
pub fn sample_event() -> NewEvent {
    NewEvent {
        key: "user-1".into(),
        event_type: "order.created".into(),
        payload: Bytes::from_static(b"{\"id\":1}"),
        content_type: "application/json".into(),
        attributes: [("region".to_string(), "eu".to_string())].into(),
        idempotency_key: "idem-1".into(),
        event_time: Some(1_700_000_000_123),
    }
}

/// Environment variable that makes a target write its seeds and exit:
/// `EVENTBUS_FUZZ_WRITE_SEEDS=<dir> <target binary>`. `cargo xtask fuzz
/// --write-seeds` uses it to regenerate `fuzz/seeds/<target>/`.
pub const WRITE_SEEDS_ENV: &str = "EVENTBUS_FUZZ_WRITE_SEEDS";

/// Called from each target's `init`: when [`WRITE_SEEDS_ENV`] is set, writes
/// `seeds` (inputs made by the real encoders) as `seed-NN` files into that
/// directory and exits.
pub fn write_seeds_if_asked(seeds: impl FnOnce() -> Vec<Vec<u8>>) {
    let Some(dir) = std::env::var_os(WRITE_SEEDS_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    for (i, seed) in seeds().into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write a seed");
    }
    std::process::exit(0);
}

/// `mode` followed by `body`: the input of a target that selects its mode by
/// the first byte.
pub fn with_mode(mode: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(mode);
    v.extend_from_slice(body);
    v
}

/// Decodes a protobuf request as tonic would, within the request budget.
/// `None` when prost rejects the bytes (tonic answers that itself).
pub fn decode_request<M: prost::Message + Default>(body: &[u8]) -> Option<M> {
    within_budget(body.len(), REQUEST_FACTOR, || M::decode(body)).ok()
}

/// Checks what a handler's parse step did with a request: a rejection is
/// INVALID_ARGUMENT, a success is handed to `check`.
pub fn parsed<T>(result: Result<T, tonic::Status>, check: impl FnOnce(T)) {
    match result {
        Ok(value) => check(value),
        Err(status) => expect_invalid_argument(&status),
    }
}

/// The broker's name check, as every RPC that names a topic or subscription
/// runs it: a bad name is `InvalidArgument`.
pub fn check_name(field: &'static str, name: &str) {
    if let Err(e) = eventbus_log::names::validate_name(field, name) {
        expect_invalid_input(&e);
    }
}

/// The exact number of milliseconds a wire timestamp names (no overflow, no
/// wrap-around), to compare with what a conversion returned.
pub fn exact_millis(ts: &prost_types::Timestamp) -> i128 {
    i128::from(ts.seconds) * 1000 + i128::from(ts.nanos) / 1_000_000
}

/// The exact duration a wire duration names, for a valid (non-negative) one.
pub fn exact_duration(d: &prost_types::Duration) -> std::time::Duration {
    std::time::Duration::new(
        u64::try_from(d.seconds).expect("accepted durations are not negative"),
        u32::try_from(d.nanos).expect("accepted durations are not negative"),
    )
}

//! Creating a replicated stream through the moments in which the meta
//! leader cannot place it.
//!
//! Right after a cluster forms, or after a node restarts, the meta leader
//! counts a peer offline until that peer's next heartbeat reaches it, and
//! refuses an R3 stream with "no suitable peers for placement" (10005).
//! The window closes by itself within a few seconds. Creating a stream is
//! idempotent (the same config returns the stream that exists), so a
//! refused or timed-out creation is sent again for up to [`PATIENCE`]
//! before the caller sees an error. (CI once saw `eventbus migrate` fail
//! this way half-way through a cluster it had just found healthy.)

use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::{self, stream, ErrorCode};
use eventbus_broker::Result;

use crate::buckets::retrying;
use crate::nats_error;

/// How long a creation keeps trying while no peers can take the stream.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Creates the stream `config` describes (or finds it, if one with the
/// same config exists), retrying placement refusals and timeouts.
pub async fn create_stream(
    js: &jetstream::Context,
    config: stream::Config,
    doing: &str,
) -> Result<stream::Stream> {
    let pause = Duration::from_millis(250);
    let transient = |e: &CreateStreamError| is_transient(e.kind());
    retrying(doing, PATIENCE, pause, transient, || {
        js.create_stream(config.clone())
    })
    .await
    .map_err(|e| nats_error(doing, e))
}

fn is_transient(kind: CreateStreamErrorKind) -> bool {
    match kind {
        CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => true,
        CreateStreamErrorKind::JetStream(e) => e.error_code() == ErrorCode::CLUSTER_NO_PEERS,
        _ => false,
    }
}

//! Publishing to a stream and waiting for its quorum's acknowledgement,
//! through the short windows in which no server answers the subject.
//!
//! "No responders" means that no stream took the message, so sending it
//! again cannot store it twice. A healthy cluster answers it in two
//! windows that close by themselves: a stream that was just created, whose
//! interest has not yet reached every node over the routes, and a stream
//! whose leader is being elected after a node loss. Each lasts well under
//! a second here, so the publish is sent again for up to [`PATIENCE`]
//! before the caller gets an error. (CI once saw the first audit record
//! after startup refused this way, which failed a call that had been
//! applied.)

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, publish::PublishAck};
use async_nats::HeaderMap;
use bytes::Bytes;

/// How long a publish keeps trying while no stream answers its subject.
pub const PATIENCE: Duration = Duration::from_secs(2);

/// Why a publish got no acknowledgement.
#[derive(Debug)]
pub enum Unacked {
    /// No stream answered the subject for [`PATIENCE`]: nothing was stored.
    NoStream,
    /// Anything else: whether the message was stored is not known.
    Failed(jetstream::context::PublishError),
}

impl std::fmt::Display for Unacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unacked::NoStream => write!(
                f,
                "no stream answered the subject for {} s",
                PATIENCE.as_secs()
            ),
            Unacked::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Publishes `body` with `headers` on `subject` and waits for the PubAck.
pub async fn publish(
    js: &jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<PublishAck, Unacked> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut pause = Duration::from_millis(20);
    loop {
        // `Bytes` and `HeaderMap` clones share or copy a few small buffers;
        // the payload itself is not copied.
        let sent = js
            .publish_with_headers(subject.to_string(), headers.clone(), body.clone())
            .await;
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) => return Ok(ack),
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                if tokio::time::Instant::now() + pause > deadline {
                    return Err(Unacked::NoStream);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            Err(e) => return Err(Unacked::Failed(e)),
        }
    }
}

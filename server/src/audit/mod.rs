//! The audit log, server side: which calls are recorded, and how.
//!
//! * Mutating admin calls ([`Audited`]: create, update, delete, pause,
//!   resume, seek, redrive, purge, backup) go through [`mutating`], the one
//!   place that records them: it runs the handler, then appends one record
//!   with the call's result and waits until it is synced, and only then
//!   answers. Whatever the handler answered, OK or an error, is recorded.
//! * Denied calls (UNAUTHENTICATED, PERMISSION_DENIED) are recorded by the
//!   RPC layer's permission check through [`Audit::denied`], in batches
//!   ([`denials`]), so that a flood of them costs one synced write per batch
//!   and a bounded number of records, never one fsync per call.
//! * Read-only calls are not recorded.
//!
//! The records live in the backend ([`eventbus_broker::Broker::append_audit`]).
//!
//! # When the record cannot be written
//! The call fails with UNAVAILABLE, naming the cause. Audit records are
//! written by the same write path as everything else, so an append fails
//! only when that path stopped (a failed sync or write: fail-stop, health
//! NOT_SERVING, see ARCHITECTURE.md) or the server is shutting down:
//! states a client should meet with UNAVAILABLE and a retry elsewhere or
//! later, not INTERNAL (nothing is wrong with the request or the code). The
//! message says that the change may have been applied: the handler ran
//! first, so a retry may find it done (ALREADY_EXISTS, NOT_FOUND). No call
//! is answered OK without its record on disk.

pub mod denials;

use std::future::Future;
use std::sync::Weak;

use eventbus_broker::{AuditRecord, Broker};
use eventbus_proto::v1;
use sha2::{Digest as _, Sha256};
use tonic::{Code, Status};

use crate::grpc::context::{Call, RequestContext};
pub use denials::Denials;

/// The audit log handle the RPC layer and the handlers share (in
/// [`crate::ops::Ops`]).
pub struct Audit {
    denials: Denials,
}

impl Audit {
    /// A handle whose denials queue until [`Audit::start`].
    pub fn new() -> Audit {
        Audit {
            denials: Denials::new(denials::Budget::default()),
        }
    }

    /// Starts writing denials to `broker` (held weakly: shutdown needs the
    /// last strong reference to close the store).
    pub fn start(&self, broker: Weak<dyn Broker>) {
        self.denials.start(broker);
    }

    /// Records a call refused with `code` (UNAUTHENTICATED or
    /// PERMISSION_DENIED) by the permission check, before it answers:
    /// returns once the batch holding the record is synced (within about
    /// [`denials::BATCH_EVERY`] plus one fsync, shared by every denial of
    /// the batch). Over the denial budget ([`denials::Budget`]) the call is
    /// only counted, returns at once, and a [`eventbus_broker::audit::DENIALS_DROPPED`]
    /// record with the count follows in the next batch. Never fails: a
    /// denial's answer does not depend on its record.
    pub async fn denied(&self, ctx: &RequestContext, action: &str, target: &str, code: Code) {
        let record = record(ctx, action, target, String::new(), code);
        self.denials.record(record).await
    }

    /// Writes the denials queued so far and waits for them: at shutdown,
    /// before the store closes.
    pub async fn flush(&self) {
        self.denials.flush().await
    }
}

impl Default for Audit {
    fn default() -> Self {
        Audit::new()
    }
}

/// A record of `ctx`'s call to `action` on `target`, answered with `code`.
pub fn record(
    ctx: &RequestContext,
    action: &str,
    target: &str,
    params_sha256: String,
    code: Code,
) -> AuditRecord {
    AuditRecord {
        id: 0,
        time_ms: now_ms(),
        principal: ctx.caller.name().to_string(),
        tenant: ctx.caller.tenant().unwrap_or_default().to_string(),
        action: action.to_string(),
        target: target.to_string(),
        params_sha256,
        result: eventbus::code_name(code).to_string(),
        request_id: ctx.request_id.clone(),
        detail: String::new(),
    }
    .bounded()
}

/// Hex SHA-256 of `msg` encoded as protobuf.
pub fn params_sha256(msg: &impl prost::Message) -> String {
    let digest = Sha256::digest(msg.encode_to_vec());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, eventbus_broker::types::saturating_millis)
}

/// A mutating admin RPC's request: the action and target its audit record
/// names.
pub trait Audited: prost::Message {
    /// The RPC's name, e.g. `DeleteTopic`.
    const ACTION: &'static str;
    /// What the call acts on: a topic, `topic/subscription`, a backup dir.
    fn target(&self) -> String;
}

/// Runs `handler` for the mutating call `req` and records it: one audit
/// record with its result, synced, before the answer goes out. See the
/// module docs for what happens when the record cannot be written.
pub async fn mutating<'c, 'a, Req, Resp, Fut>(
    call: &'c Call<'a>,
    req: Req,
    handler: impl FnOnce(&'c Call<'a>, Req) -> Fut,
) -> Result<Resp, Status>
where
    Req: Audited,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let (target, digest) = (req.target(), params_sha256(&req));
    let answer = handler(call, req).await;
    let code = answer.as_ref().map_or_else(Status::code, |_| Code::Ok);
    let record = record(&call.ctx, Req::ACTION, &target, digest, code);
    if let Err(e) = call.broker.append_audit(vec![record]).await {
        tracing::error!(action = Req::ACTION, target, error = %e, "audit record not written");
        return Err(Status::unavailable(format!(
            "{} was answered {} but its audit record could not be written, so the call fails; \
             the change may have been applied: {e}",
            Req::ACTION,
            eventbus::code_name(code)
        )));
    }
    answer
}

fn topic_and_subscription(topic: &str, subscription: &str) -> String {
    format!("{topic}/{subscription}")
}

macro_rules! audited_by_topic {
    ($($req:ident => $action:literal),* $(,)?) => {$(
        impl Audited for v1::$req {
            const ACTION: &'static str = $action;
            fn target(&self) -> String {
                self.topic.clone()
            }
        }
    )*};
}

macro_rules! audited_by_subscription {
    ($($req:ident => $action:literal),* $(,)?) => {$(
        impl Audited for v1::$req {
            const ACTION: &'static str = $action;
            fn target(&self) -> String {
                topic_and_subscription(&self.topic, &self.subscription)
            }
        }
    )*};
}

audited_by_topic! {
    CreateTopicRequest => "CreateTopic",
    DeleteTopicRequest => "DeleteTopic",
}

audited_by_subscription! {
    CreateSubscriptionRequest => "CreateSubscription",
    UpdateSubscriptionRequest => "UpdateSubscription",
    DeleteSubscriptionRequest => "DeleteSubscription",
    PauseSubscriptionRequest => "PauseSubscription",
    ResumeSubscriptionRequest => "ResumeSubscription",
    SeekSubscriptionRequest => "SeekSubscription",
    RedriveDeadLettersRequest => "RedriveDeadLetters",
    PurgeDeadLettersRequest => "PurgeDeadLetters",
}

impl Audited for v1::CreateBackupRequest {
    const ACTION: &'static str = "CreateBackup";
    fn target(&self) -> String {
        self.dir.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_hex_sha256_of_the_encoded_request() {
        let req = v1::DeleteTopicRequest {
            topic: "orders".into(),
        };
        let digest = params_sha256(&req);
        assert_eq!(digest.len(), 64);
        assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));
        // Field 1, length 6, "orders".
        let expected = Sha256::digest(b"\x0a\x06orders");
        assert_eq!(digest, format!("{expected:x}"));
        let other = v1::DeleteTopicRequest {
            topic: "orders2".into(),
        };
        assert_ne!(params_sha256(&other), digest);
    }

    #[test]
    fn actions_are_the_rpc_names_and_targets_name_what_was_touched() {
        let seek = v1::SeekSubscriptionRequest {
            topic: "orders".into(),
            subscription: "billing".into(),
            ..Default::default()
        };
        assert_eq!(
            (v1::SeekSubscriptionRequest::ACTION, seek.target().as_str()),
            ("SeekSubscription", "orders/billing")
        );
        let backup = v1::CreateBackupRequest { dir: "b1".into() };
        assert_eq!(backup.target(), "b1");
    }

    #[test]
    fn a_record_carries_the_callers_context_and_the_code_name() {
        let ctx = RequestContext {
            request_id: "req-1".into(),
            ..Default::default()
        };
        let r = record(&ctx, "DeleteTopic", "orders", "ab".into(), Code::NotFound);
        assert_eq!(
            (
                r.principal.as_str(),
                r.tenant.as_str(),
                r.result.as_str(),
                r.request_id.as_str()
            ),
            ("anonymous", "", "NOT_FOUND", "req-1")
        );
        assert!(r.time_ms > 0);
    }
}

//! What every handler gets besides its request: who is calling, how to find
//! the call in logs and traces, and the broker to call.
//!
//! The RPC layer ([`crate::ops::rpc`], a tower layer around every service)
//! builds the [`RequestContext`] from the HTTP/2 headers and puts it into the
//! request's extensions; [`Call::split`] takes it out again next to the
//! message, so no handler reads metadata of its own. Authentication
//! (issue 13) fills [`Caller`] in the same layer, and the permission check
//! reads it here, before the handler runs.

use std::sync::Arc;

use eventbus_broker::Broker;
use tonic::Request;

use crate::auth::Principal;

use crate::ops::Ops;

/// Who sent a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Caller {
    /// No credentials were checked: the server has no authentication
    /// configured, and serves everyone (on loopback unless `--insecure`).
    #[default]
    Anonymous,
    /// A caller that proved who it is.
    Principal(Arc<Principal>),
}

impl Caller {
    /// The name audit records and logs show: the principal's, or
    /// `anonymous`.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Principal(p) => &p.name,
        }
    }

    /// Whether the caller may make server-wide calls (CreateBackup, the full
    /// GetStatus, the audit log): anyone on a server without authentication,
    /// else a principal bound to no tenant with `admin` on every topic.
    pub fn is_global_admin(&self) -> bool {
        match self {
            Caller::Anonymous => true,
            Caller::Principal(p) => {
                p.tenant.is_none()
                    && p.grants
                        .iter()
                        .any(|g| g.permission == crate::auth::Permission::Admin && g.topics == ">")
            }
        }
    }

    /// The tenant whose namespace the caller's names live in.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::Principal(p) => p.tenant.as_deref(),
        }
    }
}

/// The per-request facts the RPC layer gathered.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The client's `x-request-id`, or one the server made up; echoed in the
    /// response and carried by every log line of the call.
    pub request_id: String,
    /// The caller's W3C `traceparent`, when it sent a valid one.
    pub traceparent: Option<String>,
    pub caller: Caller,
}

/// One call of a handler: the context of its request and what it may use.
pub struct Call<'a> {
    pub ctx: RequestContext,
    pub broker: &'a dyn Broker,
    pub ops: &'a Ops,
}

impl<'a> Call<'a> {
    /// The call's context and its message. A request that did not pass the
    /// RPC layer (unit tests) gets an anonymous context without ids.
    pub fn split<T>(broker: &'a dyn Broker, ops: &'a Ops, req: Request<T>) -> (Call<'a>, T) {
        let ctx = req
            .extensions()
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_default();
        (Call { ctx, broker, ops }, req.into_inner())
    }
}

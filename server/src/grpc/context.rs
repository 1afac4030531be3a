//! What every handler gets besides its request: who is calling, how to find
//! the call in logs and traces, and the broker to call.
//!
//! The RPC layer ([`crate::ops::rpc`], a tower layer around every service)
//! builds the [`RequestContext`] from the HTTP/2 headers and puts it into the
//! request's extensions; [`Call::authorize`] takes it out again next to the
//! message, so no handler reads metadata of its own. Authentication
//! (issue 13) fills [`Caller`] in the same layer, and the permission check
//! reads it here, before the handler runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use eventbus_broker::Broker;
use tonic::Request;

use tonic::Status;

use super::guard::Guarded;
use crate::auth::ack_id::AckIdSealer;
use crate::auth::authenticate::Authenticator;
use crate::auth::quota::Quotas;
use crate::auth::scope::Scoped;
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
    /// The broker as this caller sees it ([`Scoped`]): its tenant's names,
    /// its topics in listings, its sealed ack ids.
    pub broker: Arc<dyn Broker>,
    pub ops: &'a Ops,
    gate: &'a Gate,
}

/// What every call is checked and scoped with, shared by both services.
#[derive(Debug, Clone)]
pub struct Gate {
    pub sealer: Arc<AckIdSealer>,
    pub quotas: Arc<Quotas>,
    /// Create unknown topics and subscriptions on first use (`auto-create`).
    pub auto_create: bool,
    /// The credentials accepted; None when the server authenticates no one.
    pub auth: Option<Arc<Authenticator>>,
}

impl<'a> Call<'a> {
    /// The call's context and its message, once the caller may make it: the
    /// one permission check every RPC passes ([`crate::auth::authorize`],
    /// with what [`Guarded::need`] says). A request that did not pass the
    /// RPC layer (unit tests) gets an anonymous context without ids.
    /// A denied call is recorded in the audit log before the answer.
    pub async fn authorize<T: Guarded>(
        broker: &Arc<dyn Broker>,
        gate: &'a Gate,
        ops: &'a Ops,
        req: Request<T>,
    ) -> Result<(Call<'a>, T), Status> {
        let ctx = req
            .extensions()
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_default();
        let msg = req.into_inner();
        let need = msg.need();
        if let Err(denied) = crate::auth::authorize(&ctx.caller, T::ACTION, need) {
            ops.audit
                .denied(&ctx, T::ACTION, need.target(), denied.code())
                .await;
            return Err(denied);
        }
        let broker: Arc<dyn Broker> =
            Arc::new(Scoped::new(broker.clone(), ctx.caller.clone(), gate));
        Ok((
            Call {
                ctx,
                broker,
                ops,
                gate,
            },
            msg,
        ))
    }

    /// Resolves, with the status to end a stream with, once the server no
    /// longer accepts this caller's credentials (a reload of `[auth]`, an
    /// expired token). Never, when nobody is authenticated.
    pub fn until_refused(&self) -> Pin<Box<dyn Future<Output = Status> + Send>> {
        self.gate.until_refused(&self.ctx.caller)
    }
}

impl Gate {
    /// Resolves, with the status to end a stream with, once the server no
    /// longer accepts `caller`'s credentials. Never, when nobody is
    /// authenticated.
    pub fn until_refused(&self, caller: &Caller) -> Pin<Box<dyn Future<Output = Status> + Send>> {
        match &self.auth {
            Some(auth) => Box::pin(auth.clone().until_refused(caller.clone())),
            None => Box::pin(std::future::pending()),
        }
    }
}

//! A tower layer around every gRPC call: the request's context (request id,
//! traceparent, caller: [`RequestContext`], put into the request's
//! extensions for the handler); a `rpc` tracing span carrying the
//! method, the request id (the client's `x-request-id`, or a new one, echoed in
//! the response) and the W3C trace id; request and error counters per method
//! and code; and one log line per failed call, at debug for client errors
//! and at error for server faults.
//!
//! It reads `grpc-status` from the response headers, which is where tonic
//! puts the status of every unary error and of a stream refused before its
//! first message (a "trailers-only" response). A stream that fails later
//! carries its status in the trailers and counts as a request only.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use prost::Message as _;
use prost_types::FileDescriptorSet;

use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::names::{RPC_ERRORS, RPC_REQUESTS};
use super::telemetry::HeaderExtractor;
use super::trace::{trace_id, valid_traceparent, TRACEPARENT};
use crate::auth::authenticate::Authenticator;
use crate::auth::quota::Quotas;
use crate::grpc::context::{Caller, RequestContext};
use crate::grpc::status::to_status;
use crate::transport::peer_identity;

/// The request-id header: taken from the client when present, echoed back.
pub const REQUEST_ID: &str = "x-request-id";
use eventbus::code_name;

/// The path of Publish, which a principal waiting out its publish quota is
/// refused before the request is decoded.
const PUBLISH_PATH: &str = "/eventbus.v1.EventService/Publish";

/// The layer; `auth` is None when the server authenticates no one. Refused
/// credentials are recorded in `ops`'s audit log.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    pub auth: Option<Arc<Authenticator>>,
    pub quotas: Arc<Quotas>,
    pub ops: Arc<super::Ops>,
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            auth: self.auth.clone(),
            quotas: self.quotas.clone(),
            ops: self.ops.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
    quotas: Arc<Quotas>,
    ops: Arc<super::Ops>,
}

impl<S, B> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let request_id = header(REQUEST_ID)
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_string);
        let traceparent = header(TRACEPARENT).and_then(valid_traceparent);
        let trace_id = traceparent.and_then(trace_id).unwrap_or_default();
        let span = tracing::info_span!("rpc", method, request_id = %request_id, trace_id);
        let (caller, refusal) = match &self.auth {
            Some(auth) if !Authenticator::is_open(req.uri().path()) => {
                match auth.authenticate(req.headers(), peer_identity(req.extensions())) {
                    Ok(caller) => (caller, None),
                    Err(status) => (Caller::Anonymous, Some(status)),
                }
            }
            _ => (Caller::Anonymous, None),
        };
        // Over its publish quota: refused before the body is decoded, and
        // not audited (a quota is not a denial).
        let over_quota = match (&caller, req.uri().path()) {
            (Caller::Principal(p), PUBLISH_PATH) => self.quotas.refused_until(&p.name),
            _ => None,
        };
        let context = RequestContext {
            request_id: request_id.clone(),
            traceparent: traceparent.map(str::to_string),
            caller,
        };
        // With OTLP export on, the span joins the caller's trace (a no-op
        // propagator otherwise).
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        let _ = span.set_parent(parent);
        // A refused call never reaches the service; it is audited first, so
        // only then is the context kept here instead of going with the call.
        let route = match (refusal, over_quota) {
            (Some(status), _) => Route::Refuse(status, context),
            (None, Some(over)) => Route::Shed(to_status(over)),
            (None, None) => {
                let mut req = req;
                req.extensions_mut().insert(context);
                let _entered = span.enter();
                Route::Serve(self.inner.call(req))
            }
        };
        let ops = self.ops.clone();
        Box::pin(
            async move {
                let mut res = match route {
                    Route::Serve(fut) => fut.await,
                    Route::Refuse(status, context) => {
                        ops.audit.denied(&context, method, "", status.code()).await;
                        Ok(status.into_http())
                    }
                    Route::Shed(status) => Ok(status.into_http()),
                };
                if let Ok(resp) = &mut res {
                    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
                        resp.headers_mut().insert(REQUEST_ID, v);
                    }
                    record(method, resp.headers());
                }
                res
            }
            .instrument(span),
        )
    }
}

/// Where the layer sends a request.
enum Route<F> {
    /// To the service.
    Serve(F),
    /// Refused credentials: answered here, and audited.
    Refuse(Status, RequestContext),
    /// Over a quota: answered here, not audited.
    Shed(Status),
}

/// Counts the call, and logs it when it failed.
fn record(method: &'static str, headers: &http::HeaderMap) {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let code = text("grpc-status")
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from);
    // An unknown method must not mint a label of its own.
    let method = if code == Some(Code::Unimplemented) {
        "unknown"
    } else {
        method
    };
    metrics::counter!(RPC_REQUESTS, "method" => method).increment(1);
    let Some(code) = code.filter(|c| *c != Code::Ok) else {
        return;
    };
    let code_name = code_name(code);
    metrics::counter!(RPC_ERRORS, "method" => method, "code" => code_name).increment(1);
    // grpc-message is percent-encoded on the wire.
    let detail = text("grpc-message").unwrap_or_default();
    let detail = percent_encoding::percent_decode_str(detail).decode_utf8_lossy();
    let detail = detail.as_ref();
    // Client errors are the caller's to fix (debug); faults are ours (error).
    match code {
        Code::Internal | Code::DataLoss | Code::Unknown => {
            tracing::error!(code = code_name, detail, "request failed: server fault")
        }
        Code::Unavailable => {
            tracing::warn!(code = code_name, detail, "request failed: unavailable")
        }
        _ => tracing::debug!(code = code_name, detail, "request failed: client error"),
    }
}

/// `/eventbus.v1.EventService/Publish` -> `Publish`; paths of other services
/// (reflection, health, anything unknown) get a fixed label, so a client
/// cannot create label values at will.
fn method_label(path: &str) -> &'static str {
    if path.starts_with("/grpc.health.") {
        return "health";
    }
    if path.starts_with("/grpc.reflection.") {
        return "reflection";
    }
    known_methods().get(path).copied().unwrap_or("unknown")
}

/// Every method the eventbus protos declare, by request path, with its name
/// as the label: read from the descriptor set compiled into the binary, so a
/// new RPC gets its own label without anyone keeping a list.
fn known_methods() -> &'static HashMap<String, &'static str> {
    static KNOWN: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let set =
            FileDescriptorSet::decode(eventbus_proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
        let mut known = HashMap::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    // Leaked once per declared method: labels must be 'static.
                    let label: &'static str = Box::leak(method.name().into());
                    known.insert(path, label);
                }
            }
        }
        known
    })
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn every_rpc_of_the_protos_has_its_own_label() {
        let names: Vec<&str> = super::known_methods().values().copied().collect();
        // The two services' RPCs, as eventbus.proto declares them today.
        for rpc in [
            "Publish",
            "PublishStream",
            "Subscribe",
            "Ack",
            "Replay",
            "CreateTopic",
            "GetStatus",
            "CreateBackup",
            "ListAuditRecords",
        ] {
            assert!(names.contains(&rpc), "{rpc} missing from {names:?}");
        }
        assert_eq!(names.len(), 27, "{names:?}");
    }

    #[test]
    fn only_known_methods_get_their_name() {
        assert_eq!(method_label("/eventbus.v1.EventService/Publish"), "Publish");
        assert_eq!(
            method_label("/eventbus.v1.AdminService/ListTopics"),
            "ListTopics"
        );
        assert_eq!(method_label("/eventbus.v1.EventService/Nope"), "unknown");
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "health");
        assert_eq!(method_label("/x.Y/Z"), "unknown");
    }
}

//! A tower layer counting gRPC requests and errors per method and code.
//!
//! It reads `grpc-status` from the response headers, which is where tonic
//! puts the status of every unary error and of a stream refused before its
//! first message (a "trailers-only" response). A stream that fails later
//! carries its status in the trailers and counts as a request only.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Code;
use tower::{Layer, Service};

use super::names::{RPC_ERRORS, RPC_REQUESTS};
use eventbus::code_name;

#[derive(Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
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
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if let Ok(resp) = &res {
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(Code::from);
                // An unknown method must not mint a label of its own.
                let method = if code == Some(Code::Unimplemented) {
                    "unknown"
                } else {
                    method
                };
                metrics::counter!(RPC_REQUESTS, "method" => method).increment(1);
                if let Some(code) = code.filter(|c| *c != Code::Ok) {
                    metrics::counter!(RPC_ERRORS, "method" => method, "code" => code_name(code))
                        .increment(1);
                }
            }
            res
        })
    }
}

/// `/eventbus.v1.EventService/Publish` -> `Publish`; paths of other services
/// (reflection, health, anything unknown) get a fixed label, so a client
/// cannot create label values at will.
fn method_label(path: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "Publish",
        "Subscribe",
        "Ack",
        "Nack",
        "ModifyAckDeadline",
        "Replay",
        "CreateTopic",
        "GetTopic",
        "ListTopics",
        "DeleteTopic",
        "CreateSubscription",
        "GetSubscription",
        "ListSubscriptions",
        "UpdateSubscription",
        "DeleteSubscription",
        "PauseSubscription",
        "ResumeSubscription",
        "SeekSubscription",
        "ListDeadLetters",
        "GetDeadLetter",
        "RedriveDeadLetters",
        "PurgeDeadLetters",
        "GetStatus",
        "CreateBackup",
    ];
    if path.starts_with("/grpc.health.") {
        return "health";
    }
    if path.starts_with("/grpc.reflection.") {
        return "reflection";
    }
    let Some(rest) = path.strip_prefix("/eventbus.v1.") else {
        return "unknown";
    };
    let name = rest.rsplit('/').next().unwrap_or_default();
    KNOWN
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::method_label;

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

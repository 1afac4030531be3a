//! The HTTP side port: `/metrics` (Prometheus text), `/healthz` (liveness:
//! the process answers) and `/readyz` (readiness: storage open, write path not
//! stopped, not shutting down; a full data disk is reported, not failed). It starts before storage opens, so a long
//! recovery reads as live but not ready.
//!
//! With `[tls]` set it speaks TLS with the server's certificate, but never
//! asks for a client certificate, even when the gRPC port requires one:
//! Kubernetes probes (`httpGet`, `scheme: HTTPS`) carry no credentials.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::{sample, Ops};
use crate::transport::HttpIncoming;

/// Serves until `shutdown` resolves.
pub async fn serve(
    ops: Arc<Ops>,
    incoming: HttpIncoming,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(ops);
    match incoming {
        HttpIncoming::Plain(c) => axum::serve(c, app).with_graceful_shutdown(shutdown).await,
        HttpIncoming::Tls(c) => axum::serve(c, app).with_graceful_shutdown(shutdown).await,
    }
}

async fn metrics(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    sample::sample(&ops).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ops.prometheus.render(),
    )
}

/// 503 with the reason when the server should get no traffic; 200 otherwise,
/// naming what is degraded (a full disk refuses publishes, but consumers
/// keep draining, so the server stays in rotation).
async fn readyz(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    match (ops.not_ready(), ops.degraded()) {
        (Some(why), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
        (None, Some(what)) => (StatusCode::OK, format!("ready, degraded: {what}\n")),
        (None, None) => (StatusCode::OK, "ready\n".to_string()),
    }
}

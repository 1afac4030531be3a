//! The process's tracing subscriber: human-readable or JSON logs filtered by
//! `RUST_LOG` (else the `log-level` config key), plus, when `otlp-endpoint`
//! is set, span export to an OpenTelemetry collector over OTLP/gRPC with W3C
//! trace-context propagation.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flushes exported spans when dropped (at shutdown).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("eventbus: flushing OTLP spans failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber. Call inside the tokio runtime: the OTLP
/// exporter's gRPC channel lives on it.
pub fn init(format: LogFormat, log_level: &str, otlp_endpoint: &str) -> anyhow::Result<Telemetry> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => EnvFilter::try_new(log_level)
            .with_context(|| format!("invalid log-level {log_level:?}"))?,
    };
    let provider = if otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(otlp_endpoint)
            .build()
            .with_context(|| format!("OTLP exporter for {otlp_endpoint}"))?;
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name("eventbus").build())
                .build(),
        )
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("eventbus")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::stdout().is_terminal();
    match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_ansi(false))
            .try_init(),
    }
    .context("a tracing subscriber is already installed")?;
    if let Some(endpoint) = (!otlp_endpoint.is_empty()).then_some(otlp_endpoint) {
        tracing::info!(endpoint, "exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

/// Reads W3C trace context from request headers for the propagator.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

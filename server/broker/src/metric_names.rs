//! Metric names both backends record through the `metrics` facade (the
//! server installs the Prometheus exporter; without one, recording is a
//! no-op).

/// Histogram: seconds from publish to the first delivery of an event.
pub const DELIVERY_LATENCY: &str = "eventbus_delivery_latency_seconds";

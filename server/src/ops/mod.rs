//! Operability: Prometheus metrics, the HTTP side port (`/metrics`,
//! `/healthz`, `/readyz`) and per-RPC request and error counts.
//!
//! Metric names live in [`names`]; the storage engine records its own
//! (commit, delivery latency) through the same `metrics` facade.

pub mod http;
pub mod labels;
pub mod names;
pub mod rates;
pub mod recorder;
pub mod rpc;
pub mod sample;
pub mod telemetry;
pub mod trace;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::sync::{Arc, OnceLock, Weak};

use eventbus_broker::{Broker, StorageHealth};
use metrics_exporter_prometheus::PrometheusHandle;

pub use labels::LabelCap;

/// Open Subscribe streams in this process; `/metrics` reports it as a gauge
/// at scrape time (a gauge only touched on open/close would age out of the
/// exporter while long-lived streams stay open).
pub static OPEN_STREAMS: AtomicI64 = AtomicI64::new(0);

/// What the HTTP side port and the gRPC handlers share.
pub struct Ops {
    pub prometheus: PrometheusHandle,
    pub labels: LabelCap,
    pub rates: rates::PublishRates,
    /// Per subscription id: the actor's counters at the last scrape.
    counted: Mutex<HashMap<eventbus_broker::SubscriptionId, [u64; 6]>>,
    data_dir: PathBuf,
    /// Weak: shutdown needs the last strong reference to close RocksDB.
    broker: OnceLock<Weak<dyn Broker>>,
    shutting_down: AtomicBool,
    /// The audit log: denials go through here (see [`crate::audit`]).
    pub audit: crate::audit::Audit,
}

impl Ops {
    pub fn new(
        prometheus: PrometheusHandle,
        max_label_values: usize,
        data_dir: PathBuf,
    ) -> Arc<Ops> {
        Arc::new(Ops {
            prometheus,
            labels: LabelCap::new(max_label_values),
            rates: rates::PublishRates::default(),
            counted: Mutex::default(),
            data_dir,
            broker: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            audit: crate::audit::Audit::new(),
        })
    }

    /// Storage is open: readiness may pass, scrapes sample it, and denials
    /// are written to its audit log.
    pub fn storage_opened(&self, broker: &Arc<dyn Broker>) {
        let _ = self.broker.set(Arc::downgrade(broker));
        self.audit.start(Arc::downgrade(broker));
    }

    /// Shutdown started: readiness fails from now on.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn broker(&self) -> Option<Arc<dyn Broker>> {
        self.broker.get().and_then(Weak::upgrade)
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Why the server should not get traffic now, if it should not: shutting
    /// down, storage not open yet, or the write path stopped (fail-stop; only
    /// a restart helps, so liveness fails too).
    pub fn not_ready(&self) -> Option<String> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Some("shutting down".into());
        }
        let Some(broker) = self.broker() else {
            return Some("storage is not open yet".into());
        };
        match broker.health() {
            h @ StorageHealth::Failed { .. } => Some(h.describe()),
            StorageHealth::Ok | StorageHealth::DiskFull { .. } => None,
        }
    }

    /// What is wrong although the server still takes traffic: a full data
    /// disk refuses publishes, but consumers keep draining.
    pub fn degraded(&self) -> Option<String> {
        match self.broker()?.health() {
            h @ StorageHealth::DiskFull { .. } => Some(h.describe()),
            _ => None,
        }
    }
}

/// Samples publish rates until the broker is gone (shutdown).
pub async fn run_rate_sampler(ops: Arc<Ops>) {
    let mut tick = tokio::time::interval(rates::SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let Some(broker) = ops.broker() else { return };
        ops.rates
            .sample(broker.as_ref(), std::time::Instant::now())
            .await;
    }
}

//! Server configuration.
//!
//! Load order, later wins: built-in defaults → TOML file (`--config`) →
//! `EVENTBUS_*` environment variables → command-line flags. Unknown keys are an
//! error everywhere, so a typo never silently falls back to a default.
//!
//! Environment variables use the key in upper case with `_` for `-`, e.g.
//! `EVENTBUS_DATA_DIR=/var/lib/eventbus`, and `__` for a table, e.g.
//! `EVENTBUS_TLS__CERT_FILE` for `cert-file` in `[tls]`. `EVENTBUS_CONFIG`,
//! `EVENTBUS_SERVER` and `EVENTBUS_TLS_CA`/`_CERT`/`_KEY`/`_SERVER_NAME` are reserved for
//! the CLI and are not config keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use eventbus_log::limits::Limits;
use eventbus_log::{Durability, Options};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::grpc::message_size::MAX_EVENT_BYTES_CAP;

/// Environment variables with this prefix are config keys.
pub const ENV_PREFIX: &str = "EVENTBUS_";
/// Environment variables with the prefix that are not config keys.
const RESERVED_ENV: [&str; 6] = [
    "CONFIG",
    "SERVER",
    "TLS_CA",
    "TLS_CERT",
    "TLS_KEY",
    "TLS_SERVER_NAME",
];

/// Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_SERVICE_PORT*`,
/// `<SERVICE>_PORT` and `<SERVICE>_PORT_<n>_<PROTO>*` for every Service in the
/// namespace, so Services named `eventbus` or `eventbus-headless` produce
/// `EVENTBUS_PORT`, `EVENTBUS_HEADLESS_SERVICE_HOST` and friends. No config key
/// mentions PORT or SERVICE, so these are skipped instead of rejected as typos.
fn is_service_link(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    let words: Vec<&str> = k.split('_').collect();
    words.contains(&"PORT")
        || words
            .windows(2)
            .any(|w| w == ["SERVICE", "HOST"] || w == ["SERVICE", "PORT"])
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The file this config was loaded from, which SIGHUP re-reads to reload
    /// `[auth]`. Not a setting.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// Address the gRPC server listens on. Default: `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// Where events live: `rocksdb` (one node, in `data-dir`; the default)
    /// or `jetstream` (cluster mode: a stateless gateway over the NATS
    /// JetStream cluster at `nats-url`).
    pub storage: Storage,
    /// Cluster mode: the NATS servers, `nats://host:port`, comma-separated.
    pub nats_url: String,
    /// Cluster mode: replicas of every stream (3: a publish is acknowledged
    /// by a quorum of 2). 1 only for a single-node test server.
    pub nats_replicas: usize,
    /// Cluster mode: the NATS servers' monitoring ports, `http://host:8222`,
    /// comma-separated. At start the gateway checks there that each server
    /// fsyncs every write, and refuses to start if one does not.
    pub nats_monitor_url: String,
    /// Cluster mode: start even when a NATS server does not fsync every
    /// write (acknowledged publishes can then be lost on power failure).
    pub nats_allow_unsynced: bool,
    /// Directory for the RocksDB files. Default: `./data`.
    pub data_dir: PathBuf,
    /// `fsync` (default): a publish is acknowledged after the WAL is synced.
    /// `buffered`: after it is written to the OS; survives a process crash, not
    /// power loss.
    pub durability: Durability,
    /// Create unknown topics and subscriptions on first use. Turn off in
    /// production so a typo is NOT_FOUND instead of a new topic. Default: true.
    pub auto_create: bool,
    /// Partitions of a topic created without an explicit count. Default: 4.
    pub default_partitions: u32,
    /// Largest encoded event accepted, in bytes. Default: 1048576 (1 MiB). At
    /// most 4193280 (4 MiB minus 1 KiB of delivery envelope), so that every
    /// delivery fits the 4 MiB a gRPC client receives at default settings.
    pub max_event_bytes: usize,
    /// Largest gRPC request accepted, in bytes. Default: 16777216 (16 MiB).
    pub max_request_bytes: usize,
    /// Ack deadline of subscriptions that do not set one. Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub default_ack_deadline: Duration,
    /// Unacked deliveries a stream may hold when it asks for 0. Default: 256.
    pub default_max_in_flight: u32,
    /// Upper bound on a stream's `max_in_flight`. Default: 10000.
    pub max_in_flight_limit: u32,
    /// Most bytes of unsettled events (payload, key, type, content type and
    /// attributes) one Subscribe stream holds, whatever its `max_in_flight`:
    /// the stream gets nothing new until acks, nacks or expiries bring it back
    /// under. An event bigger than this still goes, alone. Bounds the server's
    /// memory per stream when events are big. Default: 33554432 (32 MiB).
    pub max_in_flight_bytes: usize,
    /// Most bytes of events a subscription reads from the log ahead of its
    /// members. Default: 16777216 (16 MiB).
    pub read_ahead_bytes: usize,
    /// Most bytes of recently committed events kept in memory over all
    /// partitions (at most 4 MiB each), so subscriptions that keep up are fed
    /// without a RocksDB read. 0 turns it off. Default: 67108864 (64 MiB).
    pub hot_tail_bytes: usize,
    /// How often ack state is persisted; a crash can lose this much of the latest
    /// acks, which are then redelivered. Default: `20ms`.
    #[serde(with = "humantime_serde")]
    pub ack_flush_interval: Duration,
    /// How long an idempotency key deduplicates publishes to its topic.
    /// Default: `2m`.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// How often topic retention (max_age, max_bytes) is applied. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// How long shutdown waits for in-flight RPCs before closing anyway.
    /// Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long the server keeps serving after readiness turns NOT_SERVING at
    /// shutdown, before it ends streams and stops accepting: time for load
    /// balancers and Kubernetes endpoints to stop routing here. Default: `0s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// Log filter when `RUST_LOG` is not set, in `RUST_LOG` syntax (e.g.
    /// `info`, `warn,eventbus_log=debug`). Default: `info`.
    pub log_level: String,
    /// OpenTelemetry collector for span export over OTLP/gRPC, e.g.
    /// `http://otel-collector:4317`. Empty (default): no export.
    pub otlp_endpoint: String,
    /// HTTP address for `/metrics` (Prometheus), `/healthz` and `/readyz`.
    /// Default: `127.0.0.1:9090`.
    pub metrics_listen: SocketAddr,
    /// Publishes are refused with RESOURCE_EXHAUSTED while the data dir's
    /// filesystem has less free space than this many bytes, so RocksDB keeps
    /// room to flush and compact and never hits ENOSPC on a publish; they
    /// resume by themselves once space is freed, while deliveries, acks and
    /// deletes go on. 0 turns the reserve off. Default: 268435456 (256 MiB).
    pub disk_reserve_bytes: u64,
    /// Size of the records memtable: bytes written before RocksDB flushes
    /// them to an SST file (each flush needs about this much free disk, so
    /// keep it well under disk-reserve-bytes). The WAL is kept under four
    /// times this. Default: 67108864 (64 MiB).
    pub write_buffer_bytes: usize,
    /// Most distinct topics, and most distinct subscriptions, that get their
    /// own metric labels; the rest are reported as `_other`, so a topic
    /// explosion cannot blow up Prometheus. Default: 1000.
    pub metrics_max_label_values: usize,
    /// Threads that run gRPC (the async runtime's workers). 0 (default):
    /// one per core the process may use, minus one with `storage = rocksdb`,
    /// whose writer, syncer, reads and compactions run on threads of their
    /// own; at least one. On two cores shared with clients, one worker
    /// instead of two cut the server's CPU per consumed event by a quarter
    /// (fewer cross-thread wake-ups and task steals; BENCHMARKS.md, issue
    /// 15, eighth step). At most 1024. Tokio's `TOKIO_WORKER_THREADS` does
    /// not apply; this key does.
    pub worker_threads: usize,

    // ---- limits: a request over one is INVALID_ARGUMENT, a server-wide count
    // at its cap RESOURCE_EXHAUSTED; every message names the key. See the
    // Limits table in ARCHITECTURE.md.
    /// Events in one Publish, counted on the wire before the request is
    /// decoded. At most 1000, NATS JetStream's limit for one atomic batch (a
    /// cluster mode maps one publish onto one batch). Default: 1000.
    pub max_events_per_publish: usize,
    /// Attributes of one event, counted on the wire before decoding.
    /// Default: 100.
    pub max_attributes_per_event: usize,
    /// Bytes of all attribute keys and values of one event. Default: 65536.
    pub max_attribute_bytes: usize,
    /// Bytes of an event key. Default: 1024.
    pub max_key_bytes: usize,
    /// Bytes of an event type. Default: 256.
    pub max_type_bytes: usize,
    /// Bytes of an event content type. Default: 256.
    pub max_content_type_bytes: usize,
    /// Bytes of an idempotency key. Default: 256.
    pub max_idempotency_key_bytes: usize,
    /// Type patterns in one filter (subscription filter, Replay `types`,
    /// dead-letter filter). Default: 100.
    pub max_filter_patterns: usize,
    /// Attribute conditions in one subscription filter, and values in one
    /// `in` condition. Default: 100.
    pub max_filter_conditions: usize,
    /// Bytes of all patterns, condition keys and values of one filter.
    /// Default: 16384.
    pub max_filter_bytes: usize,
    /// Ack ids in one Ack, Nack or ModifyAckDeadline call, counted on the
    /// wire before decoding. Default: 1000.
    pub max_ack_ids_per_call: usize,
    /// Bytes of a Nack reason. Default: 1024.
    pub max_reason_bytes: usize,
    /// Largest page of a List call (larger `page_size` values are capped),
    /// and the most dead-letter ids in one Purge or Redrive. Default: 1000.
    pub max_page_size: usize,
    /// Topics on the server; CreateTopic and auto-creation beyond it are
    /// RESOURCE_EXHAUSTED. Default: 10000.
    pub max_topics: usize,
    /// Subscriptions on the server, over all topics. Default: 10000.
    pub max_subscriptions: usize,

    /// How long audit records are kept (`90d`, `1y`, ...); older ones are
    /// dropped by the retention pass (every `retention-interval`). `0s`:
    /// keep them forever. Default: `90d`.
    #[serde(with = "humantime_serde")]
    pub audit_retention: Duration,
    /// The directory CreateBackup (`eventbus backup`) writes under: a
    /// backup's `dir` is a path relative to it, and nothing outside it is
    /// ever written. Unset (default): CreateBackup is refused.
    pub backup_root: Option<PathBuf>,
    /// Serve on an address other than loopback without authentication.
    /// Without `[auth]` the server refuses to bind `listen` or
    /// `metrics-listen` outside 127.0.0.0/8 and ::1 unless this is set, and
    /// logs a warning at start when it is. Default: false.
    pub insecure: bool,

    /// Authentication and grants (`[auth]`): API keys, JWT, client
    /// certificates, principals. Empty (default): no authentication.
    pub auth: crate::auth::AuthConfig,

    /// TLS and mTLS on both ports, from PEM files reloaded when they change
    /// (`[tls]`, see [`crate::transport::TlsConfig`]). Empty (default):
    /// plaintext.
    pub tls: crate::transport::TlsConfig,

    /// HTTP/2 and connection limits of the gRPC port (`[connections]`, see
    /// [`crate::transport::ConnectionLimits`]).
    pub connections: crate::transport::ConnectionLimits,
}

/// The limit that `max-events-per-publish` may not exceed.
const JETSTREAM_MAX_BATCH: usize = 1000;

impl Default for Config {
    fn default() -> Self {
        let log = Options::new("./data");
        Config {
            config_file: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            storage: Storage::Rocksdb,
            nats_url: "nats://127.0.0.1:4222".to_string(),
            nats_replicas: 3,
            nats_monitor_url: String::new(),
            nats_allow_unsynced: false,
            data_dir: log.data_dir,
            durability: log.durability,
            auto_create: log.auto_create,
            default_partitions: log.default_partitions,
            max_event_bytes: log.max_event_bytes,
            max_request_bytes: 16 * 1024 * 1024,
            default_ack_deadline: log.default_ack_deadline,
            default_max_in_flight: log.default_max_in_flight,
            max_in_flight_limit: log.max_in_flight_limit,
            max_in_flight_bytes: log.max_in_flight_bytes,
            read_ahead_bytes: log.read_ahead_bytes,
            hot_tail_bytes: log.hot_tail_bytes,
            ack_flush_interval: log.ack_flush_interval,
            dedup_window: log.dedup_window,
            retention_interval: log.retention_interval,
            shutdown_grace: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
            log_level: "info".into(),
            otlp_endpoint: String::new(),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            disk_reserve_bytes: log.disk_reserve_bytes,
            write_buffer_bytes: log.write_buffer_bytes,
            metrics_max_label_values: 1000,
            worker_threads: 0,
            max_events_per_publish: log.limits.max_events_per_publish,
            max_attributes_per_event: log.limits.max_attributes_per_event,
            max_attribute_bytes: log.limits.max_attribute_bytes,
            max_key_bytes: log.limits.max_key_bytes,
            max_type_bytes: log.limits.max_type_bytes,
            max_content_type_bytes: log.limits.max_content_type_bytes,
            max_idempotency_key_bytes: log.limits.max_idempotency_key_bytes,
            max_filter_patterns: log.limits.max_filter_patterns,
            max_filter_conditions: log.limits.max_filter_conditions,
            max_filter_bytes: log.limits.max_filter_bytes,
            max_ack_ids_per_call: log.limits.max_ack_ids_per_call,
            max_reason_bytes: log.limits.max_reason_bytes,
            max_page_size: log.limits.max_page_size,
            max_topics: log.limits.max_topics,
            max_subscriptions: log.limits.max_subscriptions,
            audit_retention: log.audit_retention.unwrap_or(Duration::ZERO),
            backup_root: None,
            insecure: false,
            auth: Default::default(),
            tls: Default::default(),
            connections: Default::default(),
        }
    }
}

/// Command-line overrides: only the flags given are applied.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

/// The backend (`storage` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Storage {
    /// One node: RocksDB in `data-dir`.
    Rocksdb,
    /// Cluster mode: NATS JetStream at `nats-url`.
    Jetstream,
}

impl Config {
    /// The JetStream backend's options this config implies.
    pub fn jetstream_options(&self) -> eventbus_jetstream::Options {
        eventbus_jetstream::Options {
            urls: self.nats_url.clone(),
            replicas: self.nats_replicas,
            default_partitions: self.default_partitions,
            dedup_window: self.dedup_window,
            default_ack_deadline: self.default_ack_deadline,
            max_event_bytes: self.max_event_bytes,
            default_max_in_flight: self.default_max_in_flight,
            max_in_flight_limit: self.max_in_flight_limit,
            max_in_flight_bytes: self.max_in_flight_bytes,
            limits: self.limits(),
        }
    }

    /// Loads the config: defaults, then `file`, then the environment, then
    /// `overrides`. Fails on unknown keys or invalid values.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        let env = Env::prefixed(ENV_PREFIX)
            .filter(|k| {
                !RESERVED_ENV
                    .iter()
                    .any(|r| k.as_str().eq_ignore_ascii_case(r))
                    && !is_service_link(k.as_str())
            })
            // `__` nests: EVENTBUS_TLS__CERT_FILE is `cert-file` in `[tls]`.
            .map(|k| k.as_str().replace("__", ".").replace('_', "-").into());
        let mut config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .context("invalid configuration")?;
        config.validate()?;
        config.config_file = file.map(Path::to_path_buf);
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=eventbus_log::options::MAX_PARTITIONS).contains(&self.default_partitions),
            "default-partitions must be 1..={}",
            eventbus_log::options::MAX_PARTITIONS
        );
        anyhow::ensure!(
            (1024..=MAX_EVENT_BYTES_CAP).contains(&self.max_event_bytes),
            "max-event-bytes must be 1024..={MAX_EVENT_BYTES_CAP}: a delivery of the \
             largest event, with its envelope, must fit the 4 MiB that gRPC clients \
             receive at default settings"
        );
        anyhow::ensure!(
            self.max_request_bytes >= self.max_event_bytes,
            "max-request-bytes must be at least max-event-bytes"
        );
        anyhow::ensure!(
            (eventbus_log::options::MIN_ACK_DEADLINE..=eventbus_log::options::MAX_ACK_DEADLINE)
                .contains(&self.default_ack_deadline),
            "default-ack-deadline must be between 1s and 10m"
        );
        anyhow::ensure!(
            self.default_max_in_flight >= 1
                && self.default_max_in_flight <= self.max_in_flight_limit,
            "default-max-in-flight must be 1..=max-in-flight-limit"
        );
        anyhow::ensure!(
            self.max_in_flight_bytes >= 64 * 1024,
            "max-in-flight-bytes must be at least 65536"
        );
        anyhow::ensure!(
            self.read_ahead_bytes >= 64 * 1024,
            "read-ahead-bytes must be at least 65536"
        );
        anyhow::ensure!(
            !self.ack_flush_interval.is_zero(),
            "ack-flush-interval must be positive"
        );
        anyhow::ensure!(
            self.dedup_window >= Duration::from_secs(1),
            "dedup-window must be at least 1s"
        );
        anyhow::ensure!(
            self.retention_interval >= Duration::from_millis(10),
            "retention-interval must be at least 10ms"
        );
        anyhow::ensure!(
            self.worker_threads <= 1024,
            "worker-threads must be 0 (one per core, less one for the storage engine) to 1024"
        );
        anyhow::ensure!(
            self.write_buffer_bytes >= 1 << 20,
            "write-buffer-bytes must be at least 1048576 (1 MiB)"
        );
        anyhow::ensure!(
            (1..=JETSTREAM_MAX_BATCH).contains(&self.max_events_per_publish),
            "max-events-per-publish must be 1..={JETSTREAM_MAX_BATCH}: one publish is one atomic \
             batch, and NATS JetStream (the cluster backend) allows {JETSTREAM_MAX_BATCH} messages per batch"
        );
        for (key, value) in self.limit_values() {
            anyhow::ensure!(value >= 1, "{key} must be at least 1");
        }
        if let Some(root) = &self.backup_root {
            anyhow::ensure!(
                root.is_absolute(),
                "backup-root must be an absolute path, not {}",
                root.display()
            );
        }
        self.check_exposure(self.listen, self.metrics_listen)?;
        self.tls.validate()?;
        self.connections.validate()?;
        Ok(())
    }

    /// Whether serving on `grpc` and `http` is allowed: without
    /// authentication only on loopback, unless `insecure` is set. Returns
    /// the warning to log when an insecure server is exposed.
    pub fn check_exposure(
        &self,
        grpc: SocketAddr,
        http: SocketAddr,
    ) -> anyhow::Result<Option<String>> {
        // mTLS admits only holders of a certificate from the client CA: that
        // is authentication too, even without [auth].
        if self.auth.enabled() || self.tls.client_ca_file.is_some() {
            return Ok(None);
        }
        let exposed: Vec<String> = [("listen", grpc), ("metrics-listen", http)]
            .iter()
            .filter(|(_, addr)| !addr.ip().is_loopback())
            .map(|(key, addr)| format!("{key} = {addr}"))
            .collect();
        if exposed.is_empty() {
            return Ok(None);
        }
        let exposed = exposed.join(", ");
        anyhow::ensure!(
            self.insecure,
            "refusing to serve {exposed} without authentication: anyone who can reach it \
             could read, publish and delete everything. Configure [auth] (API keys, JWT or \
             client certificates), or listen on 127.0.0.1, or accept the risk explicitly with \
             --insecure (config key insecure = true, EVENTBUS_INSECURE=true)"
        );
        Ok(Some(format!(
            "serving {exposed} WITHOUT AUTHENTICATION (--insecure): anyone who can reach it \
             can read, publish and delete everything"
        )))
    }

    /// Every limit with its config key.
    fn limit_values(&self) -> [(&'static str, usize); 15] {
        [
            ("max-events-per-publish", self.max_events_per_publish),
            ("max-attributes-per-event", self.max_attributes_per_event),
            ("max-attribute-bytes", self.max_attribute_bytes),
            ("max-key-bytes", self.max_key_bytes),
            ("max-type-bytes", self.max_type_bytes),
            ("max-content-type-bytes", self.max_content_type_bytes),
            ("max-idempotency-key-bytes", self.max_idempotency_key_bytes),
            ("max-filter-patterns", self.max_filter_patterns),
            ("max-filter-conditions", self.max_filter_conditions),
            ("max-filter-bytes", self.max_filter_bytes),
            ("max-ack-ids-per-call", self.max_ack_ids_per_call),
            ("max-reason-bytes", self.max_reason_bytes),
            ("max-page-size", self.max_page_size),
            ("max-topics", self.max_topics),
            ("max-subscriptions", self.max_subscriptions),
        ]
    }

    /// The bounds on client-controlled sizes this config sets.
    pub fn limits(&self) -> Limits {
        Limits {
            max_events_per_publish: self.max_events_per_publish,
            max_attributes_per_event: self.max_attributes_per_event,
            max_attribute_bytes: self.max_attribute_bytes,
            max_key_bytes: self.max_key_bytes,
            max_type_bytes: self.max_type_bytes,
            max_content_type_bytes: self.max_content_type_bytes,
            max_idempotency_key_bytes: self.max_idempotency_key_bytes,
            max_filter_patterns: self.max_filter_patterns,
            max_filter_conditions: self.max_filter_conditions,
            max_filter_bytes: self.max_filter_bytes,
            max_ack_ids_per_call: self.max_ack_ids_per_call,
            max_reason_bytes: self.max_reason_bytes,
            max_page_size: self.max_page_size,
            max_topics: self.max_topics,
            max_subscriptions: self.max_subscriptions,
        }
    }

    /// The async runtime's worker threads ([`Config::worker_threads`], 0
    /// resolved against the cores this process may use). It is set
    /// explicitly, so tokio's `TOKIO_WORKER_THREADS` has no effect on the
    /// server: use `worker-threads` (`EVENTBUS_WORKER_THREADS`).
    pub fn runtime_workers(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let reserved = usize::from(self.storage == Storage::Rocksdb);
        cores.saturating_sub(reserved).max(1)
    }

    /// The storage options this config implies.
    pub fn log_options(&self) -> Options {
        let mut o = Options::new(&self.data_dir);
        o.durability = self.durability;
        // Never in the engine: the gateway creates on first use, as the
        // caller (auth::scope), so creation quotas count those topics too.
        o.auto_create = false;
        o.default_partitions = self.default_partitions;
        o.max_event_bytes = self.max_event_bytes;
        o.default_ack_deadline = self.default_ack_deadline;
        o.default_max_in_flight = self.default_max_in_flight;
        o.max_in_flight_limit = self.max_in_flight_limit;
        o.max_in_flight_bytes = self.max_in_flight_bytes;
        o.read_ahead_bytes = self.read_ahead_bytes;
        o.hot_tail_bytes = self.hot_tail_bytes;
        o.ack_flush_interval = self.ack_flush_interval;
        o.dedup_window = self.dedup_window;
        o.retention_interval = self.retention_interval;
        o.audit_retention = Some(self.audit_retention).filter(|d| !d.is_zero());
        o.disk_reserve_bytes = self.disk_reserve_bytes;
        o.write_buffer_bytes = self.write_buffer_bytes;
        o.limits = self.limits();
        o
    }

    /// The default config as commented TOML.
    pub fn default_toml() -> String {
        toml::to_string(&Config::default()).expect("config serializes")
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's large error type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_out_of_the_box() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.durability, Durability::Fsync);
        c.validate().unwrap();
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "eventbus.toml",
                "data-dir = \"/from/file\"\ndurability = \"buffered\"\ndefault-partitions = 2\n",
            )?;
            jail.set_env("EVENTBUS_DATA_DIR", "/from/env");
            jail.set_env("EVENTBUS_SERVER", "http://ignored");
            let over = Overrides {
                listen: Some("127.0.0.1:7000".parse().unwrap()),
                ..Default::default()
            };
            let c = Config::load(Some(Path::new("eventbus.toml")), &over).unwrap();
            assert_eq!(c.data_dir, PathBuf::from("/from/env"));
            assert_eq!(c.durability, Durability::Buffered);
            assert_eq!(c.default_partitions, 2);
            assert_eq!(c.listen.port(), 7000);
            Ok(())
        });
    }

    #[test]
    fn kubernetes_service_links_are_not_config_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("EVENTBUS_PORT", "tcp://10.0.0.1:50051");
            jail.set_env("EVENTBUS_PORT_50051_TCP_ADDR", "10.0.0.1");
            jail.set_env("EVENTBUS_SERVICE_HOST", "10.0.0.1");
            jail.set_env("EVENTBUS_SERVICE_PORT_GRPC", "50051");
            jail.set_env("EVENTBUS_HEADLESS_SERVICE_HOST", "10.0.0.2");
            jail.set_env("EVENTBUS_HEADLESS_PORT_50051_TCP_PROTO", "tcp");
            jail.set_env("EVENTBUS_HEADLESS_PORT", "tcp://10.0.0.2:50051");
            jail.set_env("EVENTBUS_DURABILITY", "buffered");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.durability, Durability::Buffered);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("eventbus.toml", "data_dir_typo = \"x\"\n")?;
            let err =
                Config::load(Some(Path::new("eventbus.toml")), &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains("data_dir_typo"), "{err:#}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("EVENTBUS_NOT_A_KEY", "1");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains("not-a-key"), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn invalid_values_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("eventbus.toml", "durability = \"sometimes\"\n")?;
            assert!(Config::load(Some(Path::new("eventbus.toml")), &Overrides::default()).is_err());
            jail.create_file("bad.toml", "default-partitions = 0\n")?;
            assert!(Config::load(Some(Path::new("bad.toml")), &Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn limits_are_config_keys_and_validated() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("eventbus.toml", "max-key-bytes = 64\nmax-topics = 5\n")?;
            jail.set_env("EVENTBUS_MAX_ACK_IDS_PER_CALL", "10");
            let c = Config::load(Some(Path::new("eventbus.toml")), &Overrides::default()).unwrap();
            let l = c.log_options().limits;
            assert_eq!(
                (l.max_key_bytes, l.max_topics, l.max_ack_ids_per_call),
                (64, 5, 10)
            );
            assert_eq!(l.max_events_per_publish, 1000);
            for bad in ["max-events-per-publish = 1001\n", "max-page-size = 0\n"] {
                jail.create_file("bad.toml", bad)?;
                let err =
                    Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
                let key = bad.split(' ').next().unwrap();
                assert!(format!("{err:#}").contains(key), "{err:#}");
            }
            Ok(())
        });
    }

    #[test]
    fn without_auth_only_loopback_is_served_unless_insecure() {
        let exposed = Config {
            listen: "0.0.0.0:50051".parse().unwrap(),
            ..Config::default()
        };
        let err = exposed.validate().unwrap_err().to_string();
        assert!(
            err.contains("listen = 0.0.0.0:50051") && err.contains("--insecure"),
            "{err}"
        );
        let metrics = Config {
            metrics_listen: "[::]:9090".parse().unwrap(),
            ..Config::default()
        };
        assert!(metrics
            .validate()
            .unwrap_err()
            .to_string()
            .contains("metrics-listen"));
        // Loopback, v4 or v6, needs nothing.
        let local = Config {
            listen: "[::1]:50051".parse().unwrap(),
            ..Config::default()
        };
        assert_eq!(
            local
                .check_exposure(local.listen, local.metrics_listen)
                .unwrap(),
            None
        );

        let insecure = Config {
            insecure: true,
            ..exposed
        };
        insecure.validate().unwrap();
        let warning = insecure
            .check_exposure(insecure.listen, insecure.metrics_listen)
            .unwrap()
            .expect("a warning");
        assert!(warning.contains("WITHOUT AUTHENTICATION"), "{warning}");

        let with_auth = Config {
            insecure: false,
            auth: crate::auth::AuthConfig {
                client_certificates: true,
                ..Default::default()
            },
            ..insecure
        };
        assert_eq!(
            with_auth
                .check_exposure(with_auth.listen, with_auth.metrics_listen)
                .unwrap(),
            None
        );
        figment::Jail::expect_with(|jail| {
            jail.set_env("EVENTBUS_LISTEN", "0.0.0.0:50051");
            assert!(Config::load(None, &Overrides::default()).is_err());
            jail.set_env("EVENTBUS_INSECURE", "true");
            assert!(Config::load(None, &Overrides::default()).unwrap().insecure);
            Ok(())
        });
    }

    #[test]
    fn audit_retention_and_backup_root_are_config_keys() {
        let c = Config::default();
        assert_eq!(c.audit_retention, Duration::from_secs(90 * 24 * 3600));
        assert_eq!(c.backup_root, None);
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "eventbus.toml",
                "audit-retention = \"7d\"\nbackup-root = \"/srv/backups\"\n",
            )?;
            let c = Config::load(Some(Path::new("eventbus.toml")), &Overrides::default()).unwrap();
            assert_eq!(
                c.log_options().audit_retention,
                Some(Duration::from_secs(7 * 24 * 3600))
            );
            assert_eq!(c.backup_root, Some(PathBuf::from("/srv/backups")));
            jail.create_file("forever.toml", "audit-retention = \"0s\"\n")?;
            let c = Config::load(Some(Path::new("forever.toml")), &Overrides::default()).unwrap();
            assert_eq!(c.log_options().audit_retention, None);
            jail.create_file("relative.toml", "backup-root = \"backups\"\n")?;
            let err =
                Config::load(Some(Path::new("relative.toml")), &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains("backup-root"), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn tls_and_connection_tables_load_from_file_and_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "eventbus.toml",
                "[tls]\ncert-file = \"/tls/tls.crt\"\nkey-file = \"/tls/tls.key\"\n\
                 [connections]\nmax-concurrent-streams = 100\n",
            )?;
            jail.set_env("EVENTBUS_TLS__CLIENT_CA_FILE", "/tls/ca.crt");
            jail.set_env("EVENTBUS_CONNECTIONS__HANDSHAKE_TIMEOUT", "3s");
            // The CLI's TLS variables are not config keys.
            jail.set_env("EVENTBUS_TLS_CA", "/client/ca.crt");
            let c = Config::load(Some(Path::new("eventbus.toml")), &Overrides::default()).unwrap();
            assert_eq!(c.tls.cert_file, Some(PathBuf::from("/tls/tls.crt")));
            assert_eq!(c.tls.client_ca_file, Some(PathBuf::from("/tls/ca.crt")));
            assert_eq!(c.connections.max_concurrent_streams, 100);
            assert_eq!(c.connections.handshake_timeout, Duration::from_secs(3));
            assert_eq!(c.connections.max_connections, 10_000);
            jail.create_file("half.toml", "[tls]\ncert-file = \"/tls/tls.crt\"\n")?;
            let err =
                Config::load(Some(Path::new("half.toml")), &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains("tls.key-file"), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn max_event_bytes_is_capped_so_every_delivery_fits_a_default_client() {
        let mut c = Config {
            max_event_bytes: MAX_EVENT_BYTES_CAP,
            ..Config::default()
        };
        c.validate().unwrap();
        c.max_event_bytes += 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("max-event-bytes must be 1024..=4193280"),
            "{err}"
        );
        figment::Jail::expect_with(|jail| {
            jail.set_env("EVENTBUS_MAX_EVENT_BYTES", "8388608");
            assert!(Config::load(None, &Overrides::default()).is_err());
            jail.set_env("EVENTBUS_MAX_EVENT_BYTES", "4193280");
            jail.set_env("EVENTBUS_READ_AHEAD_BYTES", "1048576");
            jail.set_env("EVENTBUS_MAX_IN_FLIGHT_BYTES", "2097152");
            let c = Config::load(None, &Overrides::default()).unwrap();
            let o = c.log_options();
            assert_eq!(o.max_event_bytes, 4_193_280);
            assert_eq!(o.read_ahead_bytes, 1 << 20);
            assert_eq!(o.max_in_flight_bytes, 2 << 20);
            Ok(())
        });
    }

    #[test]
    fn worker_threads_default_to_the_cores_less_one_for_rocksdb() {
        let cores = std::thread::available_parallelism().unwrap().get();
        let rocksdb = Config::default();
        assert_eq!(rocksdb.runtime_workers(), cores.saturating_sub(1).max(1));
        let gateway = Config {
            storage: Storage::Jetstream,
            ..Config::default()
        };
        assert_eq!(gateway.runtime_workers(), cores);
        let set = Config {
            worker_threads: 3,
            ..Config::default()
        };
        assert_eq!(set.runtime_workers(), 3);
        let too_many = Config {
            worker_threads: 1025,
            ..Config::default()
        };
        let err = too_many.validate().unwrap_err().to_string();
        assert!(err.contains("worker-threads must be"), "{err}");
        figment::Jail::expect_with(|jail| {
            jail.set_env("EVENTBUS_WORKER_THREADS", "2");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.runtime_workers(), 2);
            Ok(())
        });
    }
}

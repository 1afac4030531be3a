//! `eventbus serve`: runs the server in this process.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{Config, Overrides};
use crate::ops::telemetry;
use anyhow::Context as _;
use eventbus_log::Durability;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML config file. Flags and EVENTBUS_* variables override it.
    #[arg(long, env = "EVENTBUS_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// When a publish is acknowledged: after an fsync of the WAL (fsync), or
    /// after the write reaches the OS (buffered) [default: fsync].
    #[arg(long, value_enum)]
    durability: Option<DurabilityArg>,
    /// HTTP address for /metrics, /healthz and /readyz [default: 127.0.0.1:9090].
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Serve on a non-loopback address without authentication (config key
    /// `insecure`). Without [auth] the server refuses to, and with this
    /// flag it logs a warning at start.
    #[arg(long)]
    insecure: bool,
    /// Where events live [default: rocksdb]: `jetstream` runs this server as
    /// a stateless gateway over the NATS JetStream cluster at --nats-url.
    #[arg(long, value_enum)]
    storage: Option<crate::config::Storage>,
    /// Cluster mode: NATS servers, `nats://host:port`, comma-separated.
    #[arg(long)]
    nats_url: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DurabilityArg {
    Fsync,
    Buffered,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Loads the layered config, then serves until SIGTERM or SIGINT.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        durability: args.durability.map(|d| match d {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::Buffered => Durability::Buffered,
        }),
        metrics_listen: args.metrics_listen,
        insecure: args.insecure.then_some(true),
        storage: args.storage,
        nats_url: args.nats_url,
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    let workers = config.runtime_workers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(workers)
        .thread_name("eventbus")
        .build()?;
    runtime.block_on(async move {
        let format = match args.log_format {
            LogFormat::Text => telemetry::LogFormat::Text,
            LogFormat::Json => telemetry::LogFormat::Json,
        };
        // Flushes exported spans when serving ends.
        let _telemetry = telemetry::init(format, &config.log_level, &config.otlp_endpoint)?;
        tracing::info!(workers, "async runtime started (worker-threads)");
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        crate::run(config, listener, crate::signal::shutdown_signal()).await
    })
}

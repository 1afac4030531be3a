//! `eventbus-server`: serves the `eventbus.v1` gRPC contract over the
//! broker contract ([`eventbus_broker::Broker`]; the RocksDB backend is
//! `eventbus_log::LogBroker`, opened in [`run_with_listeners`]).
//!
//! # Layout
//! * [`run`]: wires storage, gRPC services, health and reflection, and performs
//!   the graceful shutdown sequence.
//! * [`audit`]: the audit log: which calls are recorded, and how.
//! * [`auth`]: principals, grants and the `[auth]` config.
//! * [`cli`]: the `eventbus` command line.
//! * [`config`]: layered configuration (defaults → TOML → env → flags).
//! * [`grpc`]: one file per RPC; [`grpc::status`] is the only error mapping.
//! * [`ops`]: Prometheus metrics and the HTTP side port (/metrics, /healthz, /readyz).
//! * [`signal`]: SIGTERM / SIGINT.
//! * [`transport`]: TLS/mTLS with certificate reload, the accept loop and
//!   the HTTP/2 and connection limits of both ports.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod ops;
pub mod signal;
mod sync_check;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use eventbus_broker::Broker;
use eventbus_log::LogBroker;
use eventbus_proto::v1::admin_service_server::AdminServiceServer;
use eventbus_proto::v1::event_service_server::EventServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

pub use config::Config;

/// Runs the server on `listener` until `shutdown` resolves, then shuts down in
/// order:
///
/// 1. health (gRPC and `/readyz`) turns NOT_SERVING, and the server keeps
///    serving for `shutdown-delay` while load balancers stop routing here;
/// 2. no new connections are accepted and open Subscribe streams end with
///    UNAVAILABLE so clients reconnect elsewhere;
/// 3. in-flight unary RPCs finish (bounded by `shutdown-grace`);
/// 4. every subscription flushes and syncs its ack state;
/// 5. RocksDB is closed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let http = TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (metrics-listen)",
                config.metrics_listen
            )
        })?;
    run_with_listeners(config, listener, http, shutdown).await
}

/// [`run`] on listeners the caller bound: gRPC on `listener`, `/metrics`,
/// `/healthz` and `/readyz` on `http`.
pub async fn run_with_listeners(
    config: Config,
    listener: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let exposure = config.check_exposure(listener.local_addr()?, http.local_addr()?)?;
    if let Some(warning) = exposure {
        tracing::warn!("{warning}");
    }
    // TLS files are loaded before anything listens: a certificate that does
    // not load stops the server here.
    let transport = transport::Transport::new(&config.tls, &config.connections).await?;
    let ops = ops::Ops::new(
        ops::recorder::install()?,
        config.metrics_max_label_values,
        config.data_dir.clone(),
    );
    // Live before storage opens (a long WAL replay is not a hang), ready after.
    tracing::info!(addr = %http.local_addr()?, tls = transport.tls(), "metrics serving");
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(ops::http::serve(
        ops.clone(),
        transport.http(http)?,
        http_stop.clone().cancelled_owned(),
    ));
    // However this function ends, the HTTP port closes with it.
    let _http_stop_on_exit = http_stop.clone().drop_guard();

    // The one place that knows the backend: everything below holds the
    // contract (`Arc<dyn Broker>`), and only shutdown needs the RocksDB
    // broker back, to close the store.
    let (broker, log_broker): (Arc<dyn Broker>, Option<Arc<LogBroker>>) =
        match config.storage {
            config::Storage::Rocksdb => {
                let log = Arc::new(LogBroker::open(config.log_options()).await.with_context(
                    || format!("opening the data dir {}", config.data_dir.display()),
                )?);
                (log.clone(), Some(log))
            }
            config::Storage::Jetstream => {
                sync_check::check(&config.nats_monitor_url, config.nats_allow_unsynced).await?;
                let js = eventbus_jetstream::JetStreamBroker::connect(config.jetstream_options())
                    .await
                    .with_context(|| {
                        format!("connecting to NATS JetStream at {}", config.nats_url)
                    })?;
                tracing::info!(
                    nats = config.nats_url,
                    "cluster mode: a gateway over NATS JetStream"
                );
                (Arc::new(js), None)
            }
        };
    ops.storage_opened(&broker);
    let rate_sampler = tokio::spawn(ops::run_rate_sampler(ops.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(eventbus_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(eventbus_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let auth = auth::authenticate::Authenticator::new(&config.auth)
        .await
        .context("invalid [auth] config")?;
    let _auth_reload = auth.clone().map(|auth| {
        tokio_util::task::AbortOnDropHandle::new(signal::reload_auth_on_hangup(
            auth,
            config.config_file.clone(),
        ))
    });
    let gate = grpc::context::Gate {
        sealer: Arc::new(match broker.shared_secret(auth::ack_id::KEY_FILE).await? {
            Some(key) => auth::ack_id::AckIdSealer::new(key),
            None => auth::ack_id::AckIdSealer::load_or_create(
                &config.data_dir.join(auth::ack_id::KEY_FILE),
            )?,
        }),
        quotas: Arc::new(auth::quota::Quotas::new(
            &config.auth.quotas,
            u32::try_from(config.max_events_per_publish).unwrap_or(u32::MAX),
            u32::try_from(config.max_request_bytes).unwrap_or(u32::MAX),
        )),
        auto_create: config.auto_create,
        auth: auth.clone(),
    };
    let quotas = gate.quotas.clone();
    let streams = CancellationToken::new();
    let events = grpc::EventServer::new(
        grpc::EventSvc::new(broker.clone(), gate.clone(), streams.clone(), ops.clone()),
        config.limits(),
        config.max_request_bytes,
    );
    let admin = grpc::AdminSvc::new(broker.clone(), gate, ops.clone())
        .with_backup_root(config.backup_root.as_deref());
    let admin = AdminServiceServer::new(admin).max_decoding_message_size(config.max_request_bytes);

    // Storage is open: report SERVING, for the whole server ("") and per service.
    set_health(&health, ServingStatus::Serving).await;
    let storage_watch = tokio::spawn(follow_storage_health(broker.watch_health(), health.clone()));
    tracing::info!(addr = %listener.local_addr()?, tls = transport.tls(), "eventbus serving");

    let drain = {
        let health = health.clone();
        let streams = streams.clone();
        let ops = ops.clone();
        let shutdown_delay = config.shutdown_delay;
        async move {
            shutdown.await;
            tracing::info!("shutdown started: health NOT_SERVING, ending streams");
            ops.shutting_down();
            set_health(&health, ServingStatus::NotServing).await;
            tokio::time::sleep(shutdown_delay).await;
            streams.cancel();
        }
    };
    let router = transport
        .server()
        .layer(ops::rpc::RpcMetricsLayer {
            auth,
            quotas,
            ops: ops.clone(),
        })
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(events)
        .add_service(admin);
    let serve = transport::serve_grpc(router, transport.grpc(listener)?, drain);

    // The grace period starts when shutdown does, not when serving does.
    let serve = async {
        tokio::pin!(serve);
        tokio::select! {
            res = &mut serve => res,
            _ = async { streams.cancelled().await; tokio::time::sleep(config.shutdown_grace).await } => {
                tracing::warn!(grace = ?config.shutdown_grace, "in-flight RPCs did not finish within the grace period");
                Ok(())
            }
        }
    };
    let served = serve.await;
    // Denials still queued go in before the store closes.
    ops.audit.flush().await;

    // The sampler holds the broker for a moment per tick; stop it first.
    storage_watch.abort();
    rate_sampler.abort();
    let _ = rate_sampler.await;
    drop(broker);
    if let Some(log_broker) = log_broker {
        close_broker(log_broker, config.shutdown_grace).await;
    }
    http_stop.cancel();
    if let Ok(Err(e)) = http_task.await {
        tracing::warn!(error = %e, "the metrics port failed");
    }
    served.context("gRPC server failed")?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Sets the gRPC health of the whole server ("") and of every service.
async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health
        .set_service_status(
            <EventServiceServer<grpc::EventSvc> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <AdminServiceServer<grpc::AdminSvc> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health.set_service_status("", status).await;
}

/// Follows the write path: once it stopped for good (a failed sync or write,
/// a dead writer thread), every service turns NOT_SERVING, so Kubernetes
/// takes the pod out of rotation and its liveness probe restarts it. A full
/// disk does not: it clears by itself, and consumers should keep draining.
async fn follow_storage_health(
    mut rx: tokio::sync::watch::Receiver<eventbus_broker::StorageHealth>,
    health: tonic_health::server::HealthReporter,
) {
    loop {
        let state = rx.borrow_and_update().clone();
        if let eventbus_broker::StorageHealth::Failed { reason } = state {
            tracing::error!(
                %reason,
                "storage failed: gRPC health is NOT_SERVING for every service; restart the process"
            );
            set_health(&health, ServingStatus::NotServing).await;
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Waits briefly for connection tasks to drop their handles, then shuts the
/// broker down (flush ack state, sync, close RocksDB).
async fn close_broker(mut broker: Arc<LogBroker>, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        match Arc::try_unwrap(broker) {
            Ok(b) => return b.shutdown().await,
            Err(shared) if tokio::time::Instant::now() < deadline => {
                broker = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(shared) => {
                tracing::warn!(
                    "storage still in use after the grace period; flushing without closing"
                );
                return shared.flush().await;
            }
        }
    }
}

//! Resolves when the process is asked to stop: SIGTERM (Kubernetes, systemd) or
//! SIGINT (Ctrl-C). SIGHUP asks it to reload `[auth]` ([`reload_auth_on_hangup`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::authenticate::Authenticator;
use crate::config::{Config, Overrides};

/// Registers for SIGTERM and SIGINT at once (a signal that arrives before
/// the returned future is first polled is still seen, instead of killing
/// the process with the default action) and resolves on the first.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    let term = listen(SignalKind::terminate(), "SIGTERM");
    let int = listen(SignalKind::interrupt(), "SIGINT");
    async move {
        tokio::select! {
            _ = recv(term) => tracing::info!("SIGTERM received"),
            _ = recv(int) => tracing::info!("SIGINT received"),
        }
    }
}

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The stream of `kind`, registered now; None (logged) when it cannot be.
fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .inspect_err(|e| tracing::error!(error = %e, "cannot listen for {name}"))
        .ok()
}

/// The next signal of `stream`; never, without one.
async fn recv(stream: Option<Signal>) {
    match stream {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// On every SIGHUP, loads the config again (its file and the environment)
/// and hands its `[auth]` to `auth`: new, changed and revoked keys,
/// principals and JWT settings take effect without a restart, and open
/// streams of revoked callers end. A config that does not load keeps the old
/// one, and says why in the log. Other settings need a restart.
pub fn reload_auth_on_hangup(
    auth: Arc<Authenticator>,
    file: Option<PathBuf>,
) -> tokio::task::JoinHandle<()> {
    // Registered before this returns, so an early SIGHUP cannot kill the
    // process with the default action.
    let hangups = listen(SignalKind::hangup(), "SIGHUP");
    tokio::spawn(async move {
        let Some(mut hangups) = hangups else {
            tracing::error!("[auth] reloads need a restart");
            return;
        };
        while hangups.recv().await.is_some() {
            let loaded = Config::load(file.as_deref(), &Overrides::default());
            let result = match loaded {
                Ok(config) => auth.reload(&config.auth).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => tracing::info!("SIGHUP: [auth] reloaded"),
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: reloading [auth] failed; the previous [auth] stays in force"
                ),
            }
        }
    })
}

//! Resolves when the process is asked to stop: SIGTERM (Kubernetes, systemd) or
//! SIGINT (Ctrl-C). SIGHUP asks it to reload `[auth]` ([`reload_auth_on_hangup`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::authenticate::Authenticator;
use crate::config::{Config, Overrides};

pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
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
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangups = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGHUP; [auth] reloads need a restart");
                    return;
                }
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
        }
        #[cfg(not(unix))]
        let _ = (auth, file);
    })
}

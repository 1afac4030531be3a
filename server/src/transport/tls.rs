//! TLS material from PEM files, reloaded when the files change.
//!
//! tonic's own `tls_config` is fixed once the server is built, so the accept
//! loop ([`super::accept`]) runs its own tokio-rustls handshake with the
//! `ServerConfig` that [`ReloadingTls`] holds right now. A poller re-reads
//! the files every `reload-interval` and swaps in a new `ServerConfig` when
//! their bytes changed (cert-manager rewrites the Secret; Kubernetes swaps a
//! symlink, so comparing content is more reliable than comparing mtimes).
//! A change that does not load keeps the previous config and logs a warning.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::config::TlsConfig;

/// Which port a config is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// gRPC: HTTP/2 only; requires a client certificate when
    /// `client-ca-file` is set.
    Grpc,
    /// The HTTP side port (/metrics, /healthz, /readyz): HTTP/1.1 or
    /// HTTP/2, never a client certificate, so probes need no credentials.
    Http,
}

/// The bytes of the configured files; a change in any of them is a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Material {
    async fn read(config: &TlsConfig) -> anyhow::Result<Material> {
        async fn read(path: &Path, key: &str) -> anyhow::Result<Vec<u8>> {
            tokio::fs::read(path)
                .await
                .with_context(|| format!("reading tls.{key} {}", path.display()))
        }
        let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
            anyhow::bail!("tls.cert-file and tls.key-file must both be set");
        };
        Ok(Material {
            cert: read(cert, "cert-file").await?,
            key: read(key, "key-file").await?,
            client_ca: match &config.client_ca_file {
                Some(ca) => Some(read(ca, "client-ca-file").await?),
                None => None,
            },
        })
    }

    /// A rustls server config for `port`, or why these files do not make one.
    fn server_config(&self, port: Port) -> anyhow::Result<ServerConfig> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .context("tls.cert-file is not PEM certificates")?;
        anyhow::ensure!(
            !chain.is_empty(),
            "tls.cert-file holds no CERTIFICATE block"
        );
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .context("tls.key-file holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match (&self.client_ca, port) {
            (Some(ca), Port::Grpc) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca) {
                    let cert = cert.context("tls.client-ca-file is not PEM certificates")?;
                    roots
                        .add(cert)
                        .context("tls.client-ca-file holds an unusable CA certificate")?;
                }
                anyhow::ensure!(
                    !roots.is_empty(),
                    "tls.client-ca-file holds no CERTIFICATE block"
                );
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .context("client certificate verifier")?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .context("tls.key-file does not match tls.cert-file")?;
        config.alpn_protocols = match port {
            Port::Grpc => vec![b"h2".to_vec()],
            Port::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        Ok(config)
    }

    /// When the leaf certificate expires, for the log.
    fn not_after(&self) -> Option<String> {
        let leaf = CertificateDer::pem_slice_iter(&self.cert).next()?.ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).ok()?;
        Some(cert.validity().not_after.to_string())
    }
}

/// The current TLS config of one port, kept up to date with the files.
/// Dropping it stops the poller.
pub struct ReloadingTls {
    current: Arc<ArcSwap<ServerConfig>>,
    poller: JoinHandle<()>,
}

impl ReloadingTls {
    /// Loads the files now (an error here stops the server from starting)
    /// and starts polling them.
    pub async fn load(config: &TlsConfig, port: Port) -> anyhow::Result<ReloadingTls> {
        let material = Material::read(config).await?;
        let server_config = material.server_config(port)?;
        tracing::info!(
            ?port,
            cert_file = %config.cert_file.as_deref().unwrap_or(Path::new("")).display(),
            not_after = material.not_after().unwrap_or_default(),
            mtls = port == Port::Grpc && material.client_ca.is_some(),
            "TLS certificate loaded"
        );
        let current = Arc::new(ArcSwap::from_pointee(server_config));
        let poller = tokio::spawn(poll(config.clone(), port, material, current.clone()));
        Ok(ReloadingTls { current, poller })
    }

    /// An acceptor with the config of this moment: the handshake of one
    /// connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }
}

impl Drop for ReloadingTls {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// Re-reads the files every `reload-interval`; swaps the config when their
/// content changed and loads, warns (once per change) when it does not.
async fn poll(
    config: TlsConfig,
    port: Port,
    mut loaded: Material,
    current: Arc<ArcSwap<ServerConfig>>,
) {
    let mut tick = tokio::time::interval(config.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        tick.tick().await;
        let material = match Material::read(&config).await {
            Ok(m) if m == loaded => continue,
            Ok(m) => m,
            Err(e) => {
                warn_once(&mut last_error, &e, port);
                continue;
            }
        };
        match material.server_config(port) {
            Ok(server_config) => {
                current.store(Arc::new(server_config));
                tracing::info!(
                    ?port,
                    not_after = material.not_after().unwrap_or_default(),
                    "TLS certificate reloaded: new connections use it"
                );
                last_error.clear();
                loaded = material;
            }
            Err(e) => warn_once(&mut last_error, &e, port),
        }
    }
}

/// A file caught mid-rotation fails the same way every poll; say it once.
fn warn_once(last: &mut String, error: &anyhow::Error, port: Port) {
    let text = format!("{error:#}");
    if *last != text {
        tracing::warn!(?port, error = %text, "TLS files changed but do not load; keeping the previous certificate");
        *last = text;
    }
}

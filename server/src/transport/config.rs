//! The `[tls]` and `[connections]` config tables.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[tls]`: TLS on the gRPC port and the HTTP side port, from PEM files.
/// Empty (default): both ports speak plaintext.
///
/// The files are read again every `reload-interval`; when their content
/// changed, new connections get the new certificate (open ones keep theirs).
/// A change that does not load (a half-written file, a key that does not
/// match) keeps the previous certificate and logs a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first. Setting it turns
    /// TLS on (with `key-file`). Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert-file`, PEM (PKCS#8, PKCS#1 or SEC1).
    /// Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// CA certificates, PEM, that client certificates must chain to. Setting
    /// it makes the gRPC port require a valid client certificate (mTLS): a
    /// client without one, with one from another CA, or with an expired one
    /// is refused during the handshake. The HTTP side port never asks for a
    /// client certificate, so Kubernetes probes work without credentials.
    /// Default: unset (no client certificates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// How often the three files are checked for a new certificate.
    /// Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval: Duration::from_secs(5),
        }
    }
}

impl TlsConfig {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.cert_file.is_some() == self.key_file.is_some(),
            "tls.cert-file and tls.key-file go together: set both for TLS, or neither"
        );
        anyhow::ensure!(
            self.client_ca_file.is_none() || self.cert_file.is_some(),
            "tls.client-ca-file (mTLS) needs tls.cert-file and tls.key-file"
        );
        anyhow::ensure!(
            self.reload_interval >= Duration::from_millis(10),
            "tls.reload-interval must be at least 10ms"
        );
        Ok(())
    }
}

/// `[connections]`: HTTP/2 and connection limits of the gRPC port, for
/// plaintext and TLS alike. Each one bounds what a single client can make
/// the server hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConnectionLimits {
    /// Open connections, counting those still in their handshake. At the
    /// cap the server stops accepting (new connections wait in the kernel's
    /// backlog) until one closes. Default: 10000.
    pub max_connections: usize,
    /// How long a new connection has to finish its TLS handshake and send
    /// the HTTP/2 preface; a client that stalls (or sends nothing) is
    /// disconnected then, so it cannot hold a connection slot. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// HTTP/2 streams (calls, open Subscribe and Replay streams) one
    /// connection may have open, advertised as SETTINGS_MAX_CONCURRENT_STREAMS;
    /// a stream beyond it is reset with REFUSED_STREAM. Default: 1024.
    pub max_concurrent_streams: u32,
    /// Calls on one connection being handled at once (until the response
    /// starts; an open stream does not count). With `load-shed` a call over
    /// it fails at once with RESOURCE_EXHAUSTED; without, it waits.
    /// Default: 512.
    pub max_concurrent_requests_per_connection: usize,
    /// Refuse calls over `max-concurrent-requests-per-connection` with
    /// RESOURCE_EXHAUSTED instead of queueing them. Default: true.
    pub load_shed: bool,
    /// Largest header list (metadata) of one request, in bytes, advertised
    /// as SETTINGS_MAX_HEADER_LIST_SIZE; a larger one is refused.
    /// Default: 16384.
    pub max_header_list_bytes: u32,
    /// Interval of HTTP/2 PING frames the server sends on every connection.
    /// Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A connection whose PING is not answered within this time is closed,
    /// freeing everything it held. Default: `20s`.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1024,
            max_concurrent_requests_per_connection: 512,
            load_shed: true,
            max_header_list_bytes: 16 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl ConnectionLimits {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_connections >= 1,
            "connections.max-connections must be at least 1"
        );
        anyhow::ensure!(
            self.max_concurrent_streams >= 1,
            "connections.max-concurrent-streams must be at least 1"
        );
        anyhow::ensure!(
            self.max_concurrent_requests_per_connection >= 1,
            "connections.max-concurrent-requests-per-connection must be at least 1"
        );
        anyhow::ensure!(
            self.max_header_list_bytes >= 1024,
            "connections.max-header-list-bytes must be at least 1024"
        );
        for (key, value) in [
            ("handshake-timeout", self.handshake_timeout),
            ("keepalive-interval", self.keepalive_interval),
            ("keepalive-timeout", self.keepalive_timeout),
        ] {
            anyhow::ensure!(
                value >= Duration::from_millis(10),
                "connections.{key} must be at least 10ms"
            );
        }
        Ok(())
    }
}

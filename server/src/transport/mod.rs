//! Where connections come in: TLS (and mTLS) on the gRPC port and the HTTP
//! side port, reloaded when the certificate files change, and the HTTP/2
//! and connection limits of the `[connections]` table.
//!
//! * [`config`]: the `[tls]` and `[connections]` config tables.
//! * [`tls`]: rustls server configs from PEM files, kept current by a poller.
//! * [`accept`]: the accept loop (connection cap, handshake timeout) both
//!   ports share, plaintext or TLS.
//! * [`identity`]: [`peer_identity`], the name a verified client
//!   certificate proves.
//!
//! TLS terminates in this process, in the accept loop, before hyper; tonic
//! then sees a `tokio_rustls::server::TlsStream` and puts the peer's
//! certificates into every request's extensions as `TlsConnectInfo` before
//! any tower layer of ours runs.

pub mod accept;
pub mod config;
pub mod identity;
pub mod tls;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;
use tonic::service::Routes;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tower::{Layer, Service};

pub use accept::{Admitted, Connections};
pub use config::{ConnectionLimits, TlsConfig};
pub use identity::peer_identity;
use tls::{Port, ReloadingTls};

/// Connections the HTTP side port keeps at once: probes and scrapes make a
/// handful, so this only stops a flood from costing memory.
const HTTP_MAX_CONNECTIONS: usize = 256;

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// TLS material and limits for both ports.
pub struct Transport {
    grpc_tls: Option<Arc<ReloadingTls>>,
    http_tls: Option<Arc<ReloadingTls>>,
    limits: ConnectionLimits,
}

/// The gRPC port's connections, plaintext or TLS.
pub enum GrpcIncoming {
    Plain(Connections<TcpStream>),
    Tls(Connections<TlsStream<TcpStream>>),
}

/// The HTTP side port's connections, plaintext or TLS.
pub enum HttpIncoming {
    Plain(Connections<TcpStream>),
    Tls(Connections<TlsStream<TcpStream>>),
}

impl Transport {
    /// Loads the TLS files (when `[tls]` is set): a file that does not load
    /// stops the server from starting.
    pub async fn new(tls: &TlsConfig, limits: &ConnectionLimits) -> anyhow::Result<Transport> {
        let (grpc_tls, http_tls) = if tls.enabled() {
            (
                Some(Arc::new(ReloadingTls::load(tls, Port::Grpc).await?)),
                Some(Arc::new(ReloadingTls::load(tls, Port::Http).await?)),
            )
        } else {
            (None, None)
        };
        Ok(Transport {
            grpc_tls,
            http_tls,
            limits: limits.clone(),
        })
    }

    /// Whether the ports speak TLS.
    pub fn tls(&self) -> bool {
        self.grpc_tls.is_some()
    }

    /// A tonic server builder with the HTTP/2 limits of `[connections]`.
    pub fn server(&self) -> Server {
        let l = &self.limits;
        Server::builder()
            .max_concurrent_streams(l.max_concurrent_streams)
            .http2_max_header_list_size(l.max_header_list_bytes)
            .http2_keepalive_interval(Some(l.keepalive_interval))
            .http2_keepalive_timeout(Some(l.keepalive_timeout))
            .concurrency_limit_per_connection(l.max_concurrent_requests_per_connection)
            .load_shed(l.load_shed)
    }

    /// Starts accepting gRPC connections on `listener`: TLS handshake (when
    /// on) and the HTTP/2 preface within `handshake-timeout`.
    pub fn grpc(&self, listener: TcpListener) -> io::Result<GrpcIncoming> {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let timeout = self.limits.handshake_timeout;
        Ok(match &self.grpc_tls {
            None => GrpcIncoming::Plain(accept::accept_loop(
                listener,
                slots,
                timeout,
                |mut tcp| async move {
                    let preface = read_h2_preface(&mut tcp).await?;
                    Ok((tcp, preface))
                },
            )?),
            Some(tls) => {
                let tls = tls.clone();
                GrpcIncoming::Tls(accept::accept_loop(listener, slots, timeout, move |tcp| {
                    let acceptor = tls.acceptor();
                    async move {
                        let mut tls = tls_accept(acceptor, tcp).await?;
                        let preface = read_h2_preface(&mut tls).await?;
                        Ok((tls, preface))
                    }
                })?)
            }
        })
    }

    /// Starts accepting on the HTTP side port. Never asks for a client
    /// certificate: Kubernetes probes carry none.
    pub fn http(&self, listener: TcpListener) -> io::Result<HttpIncoming> {
        let slots = Arc::new(Semaphore::new(HTTP_MAX_CONNECTIONS));
        let timeout = self.limits.handshake_timeout;
        Ok(match &self.http_tls {
            // Plaintext HTTP has no handshake; a client must at least start
            // its request within the timeout.
            None => HttpIncoming::Plain(accept::accept_loop(
                listener,
                slots,
                timeout,
                |tcp| async move {
                    tcp.readable().await?;
                    Ok((tcp, Vec::new()))
                },
            )?),
            Some(tls) => {
                let tls = tls.clone();
                HttpIncoming::Tls(accept::accept_loop(listener, slots, timeout, move |tcp| {
                    let acceptor = tls.acceptor();
                    async move { Ok((tls_accept(acceptor, tcp).await?, Vec::new())) }
                })?)
            }
        })
    }
}

/// How long a refused handshake waits for the client to read the alert.
const ALERT_LINGER: Duration = Duration::from_secs(1);

/// The server side of a TLS handshake. When it fails (rustls has then sent
/// the alert: `CertificateRequired`, `UnknownCA`, ...), the connection is
/// closed gently: with TLS 1.3 the client believes its handshake done and
/// has already sent its first request, and closing a socket with unread
/// data sends a TCP reset, which makes the client drop the alert unread and
/// report only "connection closed". So: FIN, then read and discard until
/// the client closes (at most [`ALERT_LINGER`]), then close.
async fn tls_accept(acceptor: TlsAcceptor, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    match acceptor.accept(tcp).into_fallible().await {
        Ok(tls) => Ok(tls),
        Err((error, mut tcp)) => {
            let _ = tcp.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(ALERT_LINGER, async {
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            Err(error)
        }
    }
}

/// Reads the 24-byte HTTP/2 preface and hands it back to be replayed; a
/// connection that starts with anything else is not gRPC.
async fn read_h2_preface<IO: tokio::io::AsyncRead + Unpin>(io: &mut IO) -> io::Result<Vec<u8>> {
    let mut preface = vec![0; H2_PREFACE.len()];
    io.read_exact(&mut preface).await?;
    if preface != H2_PREFACE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an HTTP/2 connection preface",
        ));
    }
    Ok(preface)
}

/// Serves `router` on `incoming` until `signal` resolves: tonic's
/// `serve_with_incoming_shutdown` for whichever stream type the port has.
pub async fn serve_grpc<L, ResBody>(
    router: Router<L>,
    incoming: GrpcIncoming,
    signal: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    L: Layer<Routes>,
    L::Service:
        Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    <L::Service as Service<http::Request<Body>>>::Future: Send,
    <L::Service as Service<http::Request<Body>>>::Error: Into<tower::BoxError> + Send,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    match incoming {
        GrpcIncoming::Plain(c) => router.serve_with_incoming_shutdown(c, signal).await,
        GrpcIncoming::Tls(c) => router.serve_with_incoming_shutdown(c, signal).await,
    }
}

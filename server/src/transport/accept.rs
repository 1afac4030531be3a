//! The accept loop shared by both ports, plaintext and TLS alike: a
//! connection takes a slot of the connection cap before it is accepted,
//! then has `handshake-timeout` to finish its handshake (TLS, and on the
//! gRPC port the HTTP/2 preface) before it reaches hyper. A client that
//! connects and sends nothing, or half a handshake, is dropped then, so
//! thousands of them cannot hold the server's slots.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

/// Connections that finished their handshake, in the order they did.
pub struct Connections<IO> {
    ready: mpsc::Receiver<(Admitted<IO>, SocketAddr)>,
    local_addr: SocketAddr,
}

/// A connection holding its slot of the connection cap until it is dropped.
/// Bytes the handshake read ahead (the HTTP/2 preface it checked) are read
/// again first, so hyper sees the stream from its start.
pub struct Admitted<IO> {
    io: IO,
    read_ahead: Vec<u8>,
    replayed: usize,
    _slot: OwnedSemaphorePermit,
}

/// What a handshake hands on: the connection, and the bytes it read from it.
pub type Handshaken<IO> = (IO, Vec<u8>);

/// Accepts on `listener` until the returned [`Connections`] is dropped.
/// `handshake` turns a TCP connection into `IO` (and the bytes it read
/// ahead); it gets `timeout`.
pub fn accept_loop<IO, H, F>(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    timeout: Duration,
    handshake: H,
) -> io::Result<Connections<IO>>
where
    IO: Send + 'static,
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<Handshaken<IO>>> + Send + 'static,
{
    let local_addr = listener.local_addr()?;
    // Handshakes are done by tasks of their own; this only buffers the few
    // finished ones hyper has not picked up yet.
    let (tx, ready) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let next = async {
                // At the cap, wait for a slot before accepting: new clients
                // queue in the kernel's backlog instead of costing a task.
                let slot = slots.clone().acquire_owned().await.ok()?;
                Some((slot, listener.accept().await))
            };
            let (slot, accepted) = tokio::select! {
                // The server stopped (shutdown): stop accepting.
                _ = tx.closed() => return,
                next = next => match next {
                    Some(next) => next,
                    None => return,
                },
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY, Nagle holds back small responses until
            // the client's delayed ACK (~40 ms).
            let _ = tcp.set_nodelay(true);
            let tx = tx.clone();
            let shake = handshake(tcp);
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, shake).await {
                    Ok(Ok((io, read_ahead))) => {
                        let admitted = Admitted {
                            io,
                            read_ahead,
                            replayed: 0,
                            _slot: slot,
                        };
                        let _ = tx.send((admitted, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "handshake failed"),
                    Err(_) => tracing::debug!(%peer, ?timeout, "handshake timed out"),
                }
            });
        }
    });
    Ok(Connections { ready, local_addr })
}

impl<IO> Connections<IO> {
    /// The next connection ready for HTTP, or `None` once accepting stopped.
    pub async fn next(&mut self) -> Option<(Admitted<IO>, SocketAddr)> {
        self.ready.recv().await
    }
}

/// tonic's `serve_with_incoming`.
impl<IO> tokio_stream::Stream for Connections<IO> {
    type Item = Result<Admitted<IO>, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready
            .poll_recv(cx)
            .map(|next| next.map(|(io, _)| Ok(io)))
    }
}

/// axum's `serve`.
impl<IO> axum::serve::Listener for Connections<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Io = Admitted<IO>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.next().await {
            Some(next) => next,
            // The loop only stops when this receiver is gone; never here.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// The peer's address and, with TLS, its certificates: tonic puts this
/// into every request's extensions (as `TcpConnectInfo` or
/// `TlsConnectInfo<TcpConnectInfo>`) before any of our layers run.
impl<IO: Connected> Connected for Admitted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.read_ahead.len() {
            let rest = &this.read_ahead[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Admitted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

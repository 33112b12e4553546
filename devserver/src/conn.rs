//! A TCP listener whose connections a handler can cut without sending a single byte.
//!
//! hyper always writes a response head once a handler returns, so a "dropped connection" fault
//! cannot be expressed as a response. Instead every accepted stream carries a kill switch that
//! the handler reaches through `ConnectInfo`; once flipped, the stream refuses all further I/O,
//! hyper gives up on the connection and the socket is closed with nothing written.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use axum::{
    extract::connect_info::Connected,
    serve::{IncomingStream, Listener},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// Wraps a `TcpListener` so that each connection gets a kill switch.
pub(crate) struct KillableListener(TcpListener);

impl KillableListener {
    pub(crate) fn new(listener: TcpListener) -> Self {
        KillableListener(listener)
    }
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own impl retries on accept errors with the right back-off.
        let (stream, addr) = Listener::accept(&mut self.0).await;
        let stream = KillableStream {
            inner: stream,
            killed: Arc::default(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A `TcpStream` that fails every operation once its connection has been killed.
pub(crate) struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::Acquire) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection dropped by a mock fault",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The handler's end of a connection's kill switch (available as `ConnectInfo<ConnHandle>`),
/// with the peer's address (the proxy's rate limit is per client).
#[derive(Clone)]
pub(crate) struct ConnHandle(Arc<AtomicBool>, SocketAddr);

impl ConnHandle {
    /// A handle for a request served without a listener (`oneshot` tests), from `peer`.
    #[cfg(test)]
    pub(crate) fn detached(peer: SocketAddr) -> Self {
        ConnHandle(Arc::default(), peer)
    }

    /// The address of the connection's other end.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.1
    }

    /// Makes the connection fail its next read or write, so it closes without a response.
    pub(crate) fn kill(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        ConnHandle(stream.io().killed.clone(), *stream.remote_addr())
    }
}

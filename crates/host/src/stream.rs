//! Negotiated streams handed to the user.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use multistream_select::Negotiated;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::connection::ConnectionId;
use crate::metrics::Metrics;

/// Keeps one stream counted in its connection's and the host's open-stream figures while alive.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    per_connection: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl StreamGuard {
    pub(crate) fn new(per_connection: Arc<AtomicUsize>, metrics: Arc<Metrics>) -> Self {
        per_connection.fetch_add(1, Ordering::Relaxed);
        metrics.streams_open.fetch_add(1, Ordering::Relaxed);
        Self {
            per_connection,
            metrics,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.per_connection.fetch_sub(1, Ordering::Relaxed);
        self.metrics.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A negotiated stream to a peer, readable and writable with tokio's I/O traits.
///
/// `shutdown()` is a half close: it tells the peer we will write no more (yamux FIN), and the
/// peer can still write back. Dropping a stream that was not shut down resets it (yamux RST);
/// [`Stream::reset`] says so explicitly.
///
/// A read that would see the end of the stream fails with
/// [`std::io::ErrorKind::ConnectionReset`] instead when the peer reset the stream, or when the
/// connection under it ended (the peer died, was disconnected, or a host shut down) before the
/// peer closed its side: a truncated transfer is never mistaken for a complete one. (Once we
/// have shut down our own side, a reset by the peer can no longer be told from its clean close;
/// yamux then reports a plain end of stream.)
#[derive(Debug)]
pub struct Stream {
    io: Compat<Negotiated<ResetAware>>,
    protocol: String,
    peer: PeerId,
    connection: ConnectionId,
    connection_ended: Arc<AtomicBool>,
    eof: bool,
    _guard: StreamGuard,
}

impl Stream {
    pub(crate) fn new(
        io: Negotiated<ResetAware>,
        protocol: String,
        peer: PeerId,
        connection: ConnectionId,
        guard: StreamGuard,
        connection_ended: Arc<AtomicBool>,
    ) -> Self {
        Self {
            io: io.compat(),
            protocol,
            peer,
            connection,
            connection_ended,
            eof: false,
            _guard: guard,
        }
    }

    /// The protocol negotiated for this stream.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// The remote peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The connection the stream runs on.
    pub fn connection(&self) -> ConnectionId {
        self.connection
    }

    /// Aborts the stream in both directions; the peer sees a reset, not an end of stream.
    pub fn reset(self) {
        drop(self);
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if buf.filled().len() == before && buf.remaining() > 0 && !this.eof {
            if this.connection_ended.load(Ordering::Acquire) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("connection to {} ended", this.peer),
                )));
            }
            this.eof = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
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
}

/// A stream a peer opened to us on a protocol we handle.
#[derive(Debug)]
pub struct InboundStream {
    /// The stream itself.
    pub stream: Stream,
    /// The remote peer (authenticated by noise).
    pub peer: PeerId,
    /// The protocol negotiated.
    pub protocol: String,
    /// The remote address of the connection the stream came on.
    pub remote_addr: Multiaddr,
}

/// A yamux stream that reports a reset by the peer as an error rather than an end of stream.
///
/// yamux answers a read on a stream the peer reset with `Ok(0)`, the same as a clean close.
/// The two differ in the stream's state: after the peer's FIN it is `RecvClosed`; `Closed` while
/// our own side is still open means a reset (or a connection that went away).
#[derive(Debug)]
pub(crate) struct ResetAware {
    inner: yamux::Stream,
    write_closed: bool,
}

impl ResetAware {
    pub(crate) fn new(inner: yamux::Stream) -> Self {
        Self {
            inner,
            write_closed: false,
        }
    }
}

impl futures::AsyncRead for ResetAware {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if n == 0 && !buf.is_empty() && !self.write_closed && self.inner.is_closed() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "stream reset by the peer",
            )));
        }
        Poll::Ready(Ok(n))
    }
}

impl futures::AsyncWrite for ResetAware {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(Pin::new(&mut self.inner).poll_close(cx))?;
        self.write_closed = true;
        Poll::Ready(Ok(()))
    }
}

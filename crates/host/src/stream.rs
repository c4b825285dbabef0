//! Negotiated streams handed to the user.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use multistream_select::Negotiated;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::connection::ConnectionId;
use crate::metrics::Metrics;
use crate::muxer::{MuxStream, StreamControl};

/// Keeps one stream counted in the host's open-stream gauge while alive.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    metrics: Arc<Metrics>,
}

impl StreamGuard {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        metrics.streams_open.fetch_add(1, Ordering::Relaxed);
        Self { metrics }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A negotiated stream to a peer, readable and writable with tokio's I/O traits.
///
/// Its ends are exact, in every state:
/// - `shutdown()` is a half close: it tells the peer we will write no more (yamux FIN), and the
///   peer can still write back. A read returns end of stream (`Ok(0)`) only after the peer's FIN,
///   once every byte it sent before it was read.
/// - [`Stream::reset`] aborts both directions (yamux RST), also after our own `shutdown()`.
///   Dropping a stream that is not finished both ways resets it too.
/// - A reset by the peer fails reads and writes with [`std::io::ErrorKind::ConnectionReset`]
///   (bytes that came before the peer's FIN stay readable).
/// - When our host closes the connection (`close_peer`, idle timeout, shutdown), pending and
///   later reads and writes of an unfinished stream fail with
///   [`std::io::ErrorKind::ConnectionAborted`]; when the connection is lost (the peer died or
///   broke the protocol) they fail with `ConnectionReset`. A stream whose FIN had arrived still
///   yields its buffered bytes and then its end: a truncated transfer is never mistaken for a
///   complete one, and a complete one is never reported as cut.
#[derive(Debug)]
pub struct Stream {
    io: Compat<Negotiated<MuxStream>>,
    control: StreamControl,
    protocol: String,
    peer: PeerId,
    connection: ConnectionId,
    _guard: StreamGuard,
}

impl Stream {
    pub(crate) fn new(
        io: Negotiated<MuxStream>,
        control: StreamControl,
        protocol: String,
        peer: PeerId,
        connection: ConnectionId,
        guard: StreamGuard,
    ) -> Self {
        Self {
            io: io.compat(),
            control,
            protocol,
            peer,
            connection,
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

    /// Aborts the stream in both directions; the peer sees a reset, not an end of stream, in
    /// every state (also after our own `shutdown()`).
    pub fn reset(self) {
        self.control.reset();
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
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

//! Negotiated streams handed to the user.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connection::ConnectionId;
use crate::metrics::Metrics;
use crate::substream::MuxStream;

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
///
/// To read and write at once, [`Stream::split`] gives two halves that borrow the stream and
/// [`Stream::into_split`] two owned ones; neither needs a lock of its own (unlike
/// `tokio::io::split`), as reads and writes are independent in the muxer.
#[derive(Debug)]
pub struct Stream {
    inner: Arc<StreamInner>,
}

/// What a stream and its owned halves share; the stream is released when the last goes.
#[derive(Debug)]
struct StreamInner {
    io: MuxStream,
    protocol: String,
    peer: PeerId,
    connection: ConnectionId,
    _guard: StreamGuard,
}

impl Stream {
    pub(crate) fn new(
        io: MuxStream,
        protocol: String,
        peer: PeerId,
        connection: ConnectionId,
        guard: StreamGuard,
    ) -> Self {
        Self {
            inner: Arc::new(StreamInner {
                io,
                protocol,
                peer,
                connection,
                _guard: guard,
            }),
        }
    }

    /// The protocol negotiated for this stream.
    pub fn protocol(&self) -> &str {
        &self.inner.protocol
    }

    /// The remote peer.
    pub fn peer(&self) -> PeerId {
        self.inner.peer
    }

    /// The connection the stream runs on.
    pub fn connection(&self) -> ConnectionId {
        self.inner.connection
    }

    /// Aborts the stream in both directions; the peer sees a reset, not an end of stream, in
    /// every state (also after our own `shutdown()`).
    pub fn reset(self) {
        self.inner.io.reset();
    }

    /// A read half and a write half borrowing this stream, to be polled at once (in one task,
    /// with `select!` or `join!`).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf(&self.inner.io), WriteHalf(&self.inner.io))
    }

    /// An owned read half and write half (for separate tasks, or to keep in structs). The
    /// stream is released (reset unless finished both ways) when both are dropped.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (
            OwnedReadHalf(self.inner.clone()),
            OwnedWriteHalf(self.inner),
        )
    }
}

/// Reads from the muxer into a tokio `ReadBuf`.
fn poll_read_into(
    io: &MuxStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let n = std::task::ready!(io.poll_read_ref(cx, buf.initialize_unfilled()))?;
    buf.advance(n);
    Poll::Ready(Ok(()))
}

macro_rules! impl_read {
    ($ty:ty, $io:ident => $get:expr) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let $io = &*self;
                poll_read_into($get, cx, buf)
            }
        }
    };
}

macro_rules! impl_write {
    ($ty:ty, $io:ident => $get:expr) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let $io = &*self;
                $get.poll_write_ref(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                // Written bytes are queued in order; the connection task sends them.
                Poll::Ready(Ok(()))
            }

            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $io = &*self;
                Poll::Ready($get.finish())
            }
        }
    };
}

impl_read!(Stream, s => &s.inner.io);
impl_write!(Stream, s => &s.inner.io);

/// The read half of [`Stream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a>(&'a MuxStream);
/// The write half of [`Stream::split`]; `shutdown()` is the stream's half close.
#[derive(Debug)]
pub struct WriteHalf<'a>(&'a MuxStream);
impl_read!(ReadHalf<'_>, h => h.0);
impl_write!(WriteHalf<'_>, h => h.0);

/// The read half of [`Stream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf(Arc<StreamInner>);
/// The write half of [`Stream::into_split`]; `shutdown()` is the stream's half close.
#[derive(Debug)]
pub struct OwnedWriteHalf(Arc<StreamInner>);
impl_read!(OwnedReadHalf, h => &h.0.io);
impl_write!(OwnedWriteHalf, h => &h.0.io);

impl OwnedReadHalf {
    /// Resets the whole stream (both directions).
    pub fn reset(&self) {
        self.0.io.reset();
    }
}

impl OwnedWriteHalf {
    /// Resets the whole stream (both directions).
    pub fn reset(&self) {
        self.0.io.reset();
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

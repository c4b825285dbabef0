//! [`MuxStream`]: a stream of either transport, with one set of stream-end rules.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

use crate::muxer::YamuxStream;
use crate::quic::stream::QuicStream;

/// One stream of a connection: a yamux stream (TCP) or a QUIC stream. Both read through a
/// shared reference, so a read half and a write half can be polled at once; both reset when
/// dropped unless finished both ways.
#[derive(Debug)]
pub(crate) enum MuxStream {
    /// A yamux stream over TCP + noise.
    Yamux(YamuxStream),
    /// A QUIC stream.
    Quic(QuicStream),
}

impl MuxStream {
    /// Reads into `buf`; `Ok(0)` is the peer's FIN, after every byte before it.
    pub(crate) fn poll_read_ref(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self {
            MuxStream::Yamux(s) => s.poll_read_ref(cx, buf),
            MuxStream::Quic(s) => s.poll_read_ref(cx, buf),
        }
    }

    /// Writes (some of) `buf`.
    pub(crate) fn poll_write_ref(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self {
            MuxStream::Yamux(s) => s.poll_write_ref(cx, buf),
            MuxStream::Quic(s) => s.poll_write_ref(cx, buf),
        }
    }

    /// Half-closes (FIN). Idempotent.
    pub(crate) fn finish(&self) -> io::Result<()> {
        match self {
            MuxStream::Yamux(s) => s.finish(),
            MuxStream::Quic(s) => s.finish(),
        }
    }

    /// Resets both directions.
    pub(crate) fn reset(&self) {
        match self {
            MuxStream::Yamux(s) => s.reset(),
            MuxStream::Quic(s) => s.reset(),
        }
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_read_ref(cx, buf)
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_ref(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Both muxers queue written bytes in order and send them on their own.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.finish())
    }
}

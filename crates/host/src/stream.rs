//! Negotiated streams handed to the user.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use parking_lot::Mutex;
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
pub(crate) struct StreamInner {
    io: MuxStream,
    protocol: String,
    peer: PeerId,
    connection: ConnectionId,
    /// The peer's answer to an optimistic proposal, until it was read ([`Stream::optimistic`]).
    pending: Option<Mutex<PendingAnswer>>,
    /// Set once no answer is pending (reads skip the lock).
    settled: AtomicBool,
    _guard: StreamGuard,
}

/// The multistream-select header, length-prefixed as on the wire.
const MULTISTREAM: &[u8] = b"/multistream/1.0.0\n";
/// The longest answer line accepted while an optimistic proposal is pending.
const MAX_ANSWER_LINE: usize = crate::MAX_PROTOCOL_LEN + 2;

/// The listener's answer to an optimistic proposal, read before any of the stream's data: its
/// multistream header, then our protocol echoed (accepted) or `na` (refused).
#[derive(Debug, Default)]
struct PendingAnswer {
    /// Bytes of the answer read so far.
    got: Vec<u8>,
    /// Data that came after the answer, handed out before reading on.
    leftover: Vec<u8>,
    /// The answer was complete and positive; `leftover` drains first.
    accepted: bool,
}

/// One length-prefixed multistream message (uvarint length, then the line with its `\n`).
fn frame_line(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 2);
    let mut len = unsigned_varint::encode::usize_buffer();
    out.extend_from_slice(unsigned_varint::encode::usize(line.len(), &mut len));
    out.extend_from_slice(line);
    out
}

/// Parses the messages at the start of `got`: `Ok(Some(used))` once both lines of a positive
/// answer are there, `Ok(None)` while more is needed.
fn parse_answer(got: &[u8], protocol: &str) -> io::Result<Option<usize>> {
    let mut rest = got;
    let mut used = 0;
    for expected in [MULTISTREAM.to_vec(), format!("{protocol}\n").into_bytes()] {
        let (len, after) = match unsigned_varint::decode::usize(rest) {
            Ok(v) => v,
            Err(unsigned_varint::decode::Error::Insufficient) => return Ok(None),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        if len > MAX_ANSWER_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "multistream answer line too long",
            ));
        }
        if after.len() < len {
            return Ok(None);
        }
        let line = &after[..len];
        if line == b"na\n" {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the peer does not support {protocol}"),
            ));
        }
        if line != expected.as_slice() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "unexpected multistream answer {:?}",
                    String::from_utf8_lossy(line)
                ),
            ));
        }
        used += (after.as_ptr() as usize - rest.as_ptr() as usize) + len;
        rest = &after[len..];
    }
    Ok(Some(used))
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
                pending: None,
                settled: AtomicBool::new(true),
                _guard: guard,
            }),
        }
    }

    /// A stream on which `protocol` was proposed without waiting for the answer (multistream
    /// `V1Lazy`): the header and proposal are queued now, and the first read takes the peer's
    /// answer off the stream before any data (a refusal fails it with `Unsupported`).
    pub(crate) async fn optimistic(
        mut io: MuxStream,
        protocol: String,
        peer: PeerId,
        connection: ConnectionId,
        guard: StreamGuard,
    ) -> io::Result<Self> {
        use futures::AsyncWriteExt as _;
        let mut proposal = frame_line(MULTISTREAM);
        proposal.extend_from_slice(&frame_line(format!("{protocol}\n").as_bytes()));
        io.write_all(&proposal).await?;
        Ok(Self {
            inner: Arc::new(StreamInner {
                io,
                protocol,
                peer,
                connection,
                pending: Some(Mutex::new(PendingAnswer::default())),
                settled: AtomicBool::new(false),
                _guard: guard,
            }),
        })
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
        (ReadHalf(&self.inner), WriteHalf(&self.inner.io))
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

/// Reads from the muxer into a tokio `ReadBuf`, first taking a pending optimistic answer off
/// the stream.
fn poll_read_into(
    inner: &StreamInner,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if !inner.settled.load(Ordering::Acquire)
        && let Some(pending) = &inner.pending
    {
        let mut p = pending.lock();
        while !p.accepted {
            let mut chunk = [0u8; 256];
            let n = std::task::ready!(inner.io.poll_read_ref(cx, &mut chunk))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended before the peer answered the protocol proposal",
                )));
            }
            p.got.extend_from_slice(&chunk[..n]);
            if let Some(used) = parse_answer(&p.got, &inner.protocol)? {
                p.leftover = p.got.split_off(used);
                p.got = Vec::new();
                p.accepted = true;
            } else if p.got.len() > 2 * (MAX_ANSWER_LINE + 10) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "multistream answer too long",
                )));
            }
        }
        if !p.leftover.is_empty() {
            let n = p.leftover.len().min(buf.remaining());
            buf.put_slice(&p.leftover[..n]);
            p.leftover.drain(..n);
            if p.leftover.is_empty() {
                inner.settled.store(true, Ordering::Release);
            }
            return Poll::Ready(Ok(()));
        }
        inner.settled.store(true, Ordering::Release);
    }
    let n = std::task::ready!(inner.io.poll_read_ref(cx, buf.initialize_unfilled()))?;
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

impl_read!(Stream, s => &s.inner);
impl_write!(Stream, s => &s.inner.io);

/// The read half of [`Stream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a>(&'a StreamInner);
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
impl_read!(OwnedReadHalf, h => &h.0);
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

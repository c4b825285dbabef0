//! Bridging a local connection and a libp2p stream: each direction copied on its own through a
//! bounded buffer, both in one task. A clean end of one side is a half close of the other; an
//! error or reset on one side aborts both (a TCP RST locally, a stream reset remotely), after
//! the bytes already read from the stream have been written to the local connection. Live byte
//! counters and an optional idle timeout.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use p2pnet_host::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::endpoint::LocalConn;
use crate::registry::Counters;

/// How a bridge ended.
#[derive(Debug)]
pub(crate) enum BridgeEnd {
    /// Both directions finished with an end of stream and both sides were closed cleanly.
    Completed { bytes_in: u64, bytes_out: u64 },
    /// One side failed; both were aborted.
    Failed(io::Error),
    /// Closed on request (close_stream, forwarder shutdown); both sides were aborted.
    Closed,
    /// No byte moved for the idle timeout; both sides were aborted.
    Idle,
}

/// Copies between `local` and `remote` until both directions end, one side fails, `cancel`
/// fires or the idle timeout passes. On anything but a clean end, the local connection is
/// aborted (TCP RST) and the stream reset, whatever state the other direction is in.
pub(crate) async fn run(
    mut local: LocalConn,
    remote: Stream,
    counters: Arc<Counters>,
    buffer_size: usize,
    idle_timeout: Option<Duration>,
    cancel: CancellationToken,
) -> BridgeEnd {
    let mut remote = Counting {
        inner: remote,
        counters: counters.clone(),
    };
    let end = {
        let mut up = Pipe::new(buffer_size); // local → remote
        let mut down = Pipe::new(buffer_size); // remote → local
        let copy = poll_fn(|cx| poll_both(cx, &mut local, &mut remote, &mut up, &mut down));
        tokio::select! {
            r = copy => match r {
                Ok(()) => BridgeEnd::Completed { bytes_in: down.copied, bytes_out: up.copied },
                Err(e) => BridgeEnd::Failed(e),
            },
            _ = cancel.cancelled() => BridgeEnd::Closed,
            _ = idle(&counters, idle_timeout) => BridgeEnd::Idle,
        }
    };
    if !matches!(end, BridgeEnd::Completed { .. }) {
        local.abort();
        remote.inner.reset();
    }
    end
}

/// Drives both directions once. Ready with `Ok` when both ended cleanly (each end of stream
/// passed on as a half close), with the first error when one side failed.
///
/// - The local side fails (reading or writing it): the bridge fails at once.
/// - The stream fails (a reset, a connection that went away): the bridge fails once the bytes
///   already read from the stream are written to the local side, so nothing the peer sent
///   before the reset is lost in our buffer. Writing to the stream stops at once.
fn poll_both(
    cx: &mut Context<'_>,
    local: &mut LocalConn,
    remote: &mut Counting,
    up: &mut Pipe,
    down: &mut Pipe,
) -> Poll<io::Result<()>> {
    if up.is_active() {
        match up.poll_copy(cx, Pin::new(&mut *local), Pin::new(&mut *remote)) {
            Poll::Ready(Ok(())) | Poll::Pending => {}
            Poll::Ready(Err(PipeError::Read(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(Err(PipeError::Write(e))) => {
                if down.is_done() {
                    return Poll::Ready(Err(e));
                }
                // The stream failed: read no more from it, but deliver what was read.
                down.fail_reading(e);
            }
        }
    }
    if down.is_active() {
        match down.poll_copy(cx, Pin::new(&mut *remote), Pin::new(&mut *local)) {
            Poll::Ready(Ok(())) | Poll::Pending => {}
            Poll::Ready(Err(PipeError::Read(e) | PipeError::Write(e))) => {
                return Poll::Ready(Err(e));
            }
        }
    }
    if up.is_done() && down.is_done() {
        Poll::Ready(Ok(()))
    } else {
        Poll::Pending
    }
}

/// Which side of a [`Pipe`] failed.
#[derive(Debug)]
enum PipeError {
    Read(io::Error),
    Write(io::Error),
}

/// What ended the reading side of a [`Pipe`].
#[derive(Debug)]
enum ReadEnd {
    Eof,
    /// The error, until it is reported.
    Failed(Option<io::Error>),
}

/// The buffer an idle direction of a bridge holds.
const FIRST_BUFFER: usize = 1024;

/// One direction of a bridge: reads into a bounded buffer and writes it out. An end of stream
/// becomes a flush and a shutdown (half close) of the writer once every byte read is written; a
/// read error is reported only after that too.
#[derive(Debug)]
struct Pipe {
    /// Starts at [`FIRST_BUFFER`] and grows to `max` the first time a read fills it, so that an
    /// idle bridge holds a few KiB, not two full buffers.
    buf: Vec<u8>,
    max: usize,
    /// `buf[pos..cap]` is read and not yet written.
    pos: usize,
    cap: usize,
    read_end: Option<ReadEnd>,
    need_flush: bool,
    /// Ended cleanly: everything written, the writer shut down.
    done: bool,
    /// Reported an error; not polled again.
    failed: bool,
    /// Bytes written out.
    copied: u64,
}

impl Pipe {
    fn new(buffer_size: usize) -> Self {
        let max = buffer_size.max(1);
        Self {
            buf: vec![0; FIRST_BUFFER.min(max)],
            max,
            pos: 0,
            cap: 0,
            read_end: None,
            need_flush: false,
            done: false,
            failed: false,
            copied: 0,
        }
    }

    /// Whether this direction ended cleanly.
    fn is_done(&self) -> bool {
        self.done
    }

    /// Whether this direction is still to be polled: neither ended nor failed.
    fn is_active(&self) -> bool {
        !self.done && !self.failed
    }

    /// Stops reading, as if a read had failed with `e`; the buffered bytes are still written.
    fn fail_reading(&mut self, e: io::Error) {
        if !matches!(self.read_end, Some(ReadEnd::Failed(_))) {
            self.read_end = Some(ReadEnd::Failed(Some(e)));
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: Pin<&mut R>,
        writer: Pin<&mut W>,
    ) -> Poll<Result<(), PipeError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let r = self.poll_inner(cx, reader, writer);
        if let Poll::Ready(Err(_)) = r {
            self.failed = true;
        }
        r
    }

    fn poll_inner<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<Result<(), PipeError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            // Read while there is room, so that writes can be large.
            if self.read_end.is_none() && self.cap < self.buf.len() {
                let mut rb = ReadBuf::new(&mut self.buf[self.cap..]);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => match rb.filled().len() {
                        0 => self.read_end = Some(ReadEnd::Eof),
                        n => {
                            self.cap += n;
                            if self.cap == self.buf.len() && self.buf.len() < self.max {
                                // Data flows: take the full buffer from now on.
                                self.buf.resize(self.max, 0);
                            }
                        }
                    },
                    Poll::Ready(Err(e)) => self.read_end = Some(ReadEnd::Failed(Some(e))),
                    Poll::Pending if self.pos == self.cap => {
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx)).map_err(PipeError::Write)?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Pending => {}
                }
            }
            // Write what is buffered.
            while self.pos < self.cap {
                let n = ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.buf[self.pos..self.cap])
                )
                .map_err(PipeError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(PipeError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.pos += n;
                self.copied += n as u64;
                self.need_flush = true;
            }
            self.pos = 0;
            self.cap = 0;
            match &self.read_end {
                None => continue,
                Some(ReadEnd::Eof) => {
                    // Every byte is written: pass the end of stream on.
                    ready!(writer.as_mut().poll_flush(cx)).map_err(PipeError::Write)?;
                    self.need_flush = false;
                    ready!(writer.as_mut().poll_shutdown(cx)).map_err(PipeError::Write)?;
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
                Some(ReadEnd::Failed(_)) => {}
            }
            // Every byte read is written; try to get them out before the abort.
            if self.need_flush {
                let _ = ready!(writer.as_mut().poll_flush(cx));
                self.need_flush = false;
            }
            let e = match &mut self.read_end {
                Some(ReadEnd::Failed(e)) => e.take(),
                _ => None,
            };
            return Poll::Ready(Err(PipeError::Read(
                e.unwrap_or_else(|| io::Error::other("already failed")),
            )));
        }
    }
}

/// Resolves once no byte has moved for `timeout`; never without a timeout.
async fn idle(counters: &Counters, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let deadline = counters.last_activity() + timeout;
        if tokio::time::Instant::now() >= deadline.into() {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// The libp2p stream, counting bytes as they move: reads are bytes in, writes bytes out.
struct Counting {
    inner: Stream,
    counters: Arc<Counters>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.counters.add_in(n);
        }
        r
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            this.counters.add_out(n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Hands out scripted reads (chunks of bytes, cut to fit, or errors), then an end of stream.
    struct Script(VecDeque<io::Result<Vec<u8>>>);

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.0.pop_front() {
                Some(Ok(mut b)) => {
                    let n = b.len().min(buf.remaining());
                    buf.put_slice(&b[..n]);
                    if n < b.len() {
                        self.0.push_front(Ok(b.split_off(n)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => {}
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Takes at most 3 bytes a write and is not ready every other time; records a shutdown.
    #[derive(Default)]
    struct Slow {
        data: Vec<u8>,
        ready: bool,
        shut: bool,
    }

    impl AsyncWrite for Slow {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            assert!(!self.shut, "write after shutdown");
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(3);
            self.data.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    async fn copy(reads: Vec<io::Result<Vec<u8>>>) -> (Result<(), PipeError>, Slow, Pipe) {
        let mut reader = Script(reads.into());
        let mut writer = Slow::default();
        let mut pipe = Pipe::new(8);
        let r =
            poll_fn(|cx| pipe.poll_copy(cx, Pin::new(&mut reader), Pin::new(&mut writer))).await;
        (r, writer, pipe)
    }

    #[tokio::test]
    async fn a_read_error_is_reported_after_every_byte_read_is_written() {
        let reads = vec![
            Ok(b"hello".to_vec()),
            Ok(b"world".to_vec()),
            Err(io::ErrorKind::ConnectionReset.into()),
        ];
        let (r, writer, pipe) = copy(reads).await;
        match r {
            Err(PipeError::Read(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("expected the read error, got {other:?}"),
        }
        assert_eq!(writer.data, b"helloworld");
        assert!(!writer.shut, "a failed read is no end of stream");
        assert_eq!(pipe.copied, 10);
        assert!(!pipe.is_active() && !pipe.is_done());
    }

    #[tokio::test]
    async fn an_end_of_stream_is_a_shutdown_after_every_byte() {
        let (r, writer, pipe) = copy(vec![Ok(b"0123456789abc".to_vec())]).await;
        assert!(r.is_ok());
        assert_eq!(writer.data, b"0123456789abc");
        assert!(writer.shut);
        assert!(pipe.is_done());
    }

    #[tokio::test]
    async fn a_stopped_reader_still_delivers_its_buffer() {
        let mut reader = Script(vec![Ok(b"abcdefg".to_vec())].into());
        let mut writer = Slow::default();
        let mut pipe = Pipe::new(8);
        // One poll reads the chunk and writes part of it before the writer is not ready.
        let first = poll_fn(|cx| {
            Poll::Ready(pipe.poll_copy(cx, Pin::new(&mut reader), Pin::new(&mut writer)))
        })
        .await;
        assert!(first.is_pending());
        pipe.fail_reading(io::ErrorKind::BrokenPipe.into());
        let r =
            poll_fn(|cx| pipe.poll_copy(cx, Pin::new(&mut reader), Pin::new(&mut writer))).await;
        assert!(matches!(r, Err(PipeError::Read(e)) if e.kind() == io::ErrorKind::BrokenPipe));
        assert_eq!(writer.data, b"abcdefg");
    }

    #[tokio::test]
    async fn an_idle_direction_holds_a_small_buffer_until_data_fills_it() {
        let pipe = Pipe::new(64 * 1024);
        assert_eq!(pipe.buf.len(), FIRST_BUFFER);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = Script(vec![Ok(data.clone())].into());
        let mut writer = Slow::default();
        let mut pipe = pipe;
        let r =
            poll_fn(|cx| pipe.poll_copy(cx, Pin::new(&mut reader), Pin::new(&mut writer))).await;
        assert!(r.is_ok());
        assert_eq!(writer.data, data);
        assert_eq!(
            pipe.buf.len(),
            64 * 1024,
            "grown once data filled the first buffer"
        );
    }
}

//! Bridging a local connection and a libp2p stream: both directions concurrently through two
//! bounded buffers, half close passed on both ways, an error or reset on one side aborting the
//! other, live byte counters and an optional idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
/// aborted (TCP RST) and the stream reset.
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
        let copy = tokio::io::copy_bidirectional_with_sizes(
            &mut local,
            &mut remote,
            buffer_size,
            buffer_size,
        );
        tokio::select! {
            r = copy => match r {
                Ok((out, inb)) => BridgeEnd::Completed { bytes_in: inb, bytes_out: out },
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

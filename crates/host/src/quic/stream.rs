//! One QUIC stream (a quinn send and receive stream) with the host's exact stream ends.
//!
//! quinn finishes a send stream that is dropped unfinished (a peer would take an aborted upload
//! for a complete one); here, as on yamux, dropping a stream that is not finished both ways
//! resets it: `RESET_STREAM` for our unfinished direction, `STOP_SENDING` for theirs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// The application error code of our resets and stops.
const RESET_CODE: u32 = 0;

/// Pending deliveries kept beyond this many are checked and the delivered ones let go.
const PRUNE_AT: usize = 32;

/// Resolves once the peer acknowledged every byte of a finished stream (or stopped it).
type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Streams open on one QUIC connection: all of them (for idle closing) and ours (the outbound
/// limit), and the finished streams whose data may still be in flight (a graceful close waits
/// for them, as yamux sends what it queued before its GoAway).
#[derive(Default)]
pub(crate) struct StreamCounts {
    pub(crate) open: AtomicUsize,
    pub(crate) outbound: AtomicUsize,
    deliveries: Mutex<Vec<Delivery>>,
}

impl std::fmt::Debug for StreamCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCounts")
            .field("open", &self.open)
            .field("outbound", &self.outbound)
            .finish_non_exhaustive()
    }
}

impl StreamCounts {
    fn add_delivery(&self, delivery: Delivery) {
        use futures::FutureExt as _;
        let mut deliveries = self.deliveries.lock();
        if deliveries.len() >= PRUNE_AT {
            deliveries.retain_mut(|d| d.as_mut().now_or_never().is_none());
        }
        deliveries.push(delivery);
    }

    /// The deliveries still pending, to wait for before a graceful close.
    pub(crate) fn take_deliveries(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.deliveries.lock())
    }
}

/// Keeps one stream counted while it lives.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    counts: Arc<StreamCounts>,
    outbound: bool,
}

impl StreamSlot {
    /// Takes an outbound slot, unless `max` outbound streams are open.
    pub(crate) fn outbound(counts: &Arc<StreamCounts>, max: usize) -> Option<StreamSlot> {
        counts
            .outbound
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        counts.open.fetch_add(1, Ordering::AcqRel);
        Some(StreamSlot {
            counts: counts.clone(),
            outbound: true,
        })
    }

    /// Counts an inbound stream (the peer's stream credit bounds them).
    pub(crate) fn inbound(counts: &Arc<StreamCounts>) -> StreamSlot {
        counts.open.fetch_add(1, Ordering::AcqRel);
        StreamSlot {
            counts: counts.clone(),
            outbound: false,
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
        if self.outbound {
            self.counts.outbound.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

struct SendHalf {
    stream: quinn::SendStream,
    /// Our FIN was queued.
    finished: bool,
    /// We reset the stream.
    reset: bool,
    waker: Option<Waker>,
}

struct RecvHalf {
    stream: quinn::RecvStream,
    /// The peer's FIN was read (everything before it too).
    ended: bool,
    /// We reset (stopped) the stream.
    reset: bool,
    waker: Option<Waker>,
}

/// A bidirectional QUIC stream whose halves can be polled at once through a shared reference.
pub(crate) struct QuicStream {
    send: Mutex<SendHalf>,
    recv: Mutex<RecvHalf>,
    slot: StreamSlot,
}

impl std::fmt::Debug for QuicStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicStream")
            .field("id", &self.recv.lock().stream.id())
            .finish()
    }
}

/// The io error for a connection that ended: `ConnectionAborted` when we closed it,
/// `ConnectionReset` when it was lost or the peer closed it (as on yamux).
fn connection_error(e: quinn::ConnectionError) -> io::Error {
    let kind = match e {
        quinn::ConnectionError::LocallyClosed => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::ConnectionReset,
    };
    io::Error::new(kind, e)
}

fn reset_locally() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "stream reset")
}

impl QuicStream {
    pub(crate) fn new(send: quinn::SendStream, recv: quinn::RecvStream, slot: StreamSlot) -> Self {
        Self {
            send: Mutex::new(SendHalf {
                stream: send,
                finished: false,
                reset: false,
                waker: None,
            }),
            recv: Mutex::new(RecvHalf {
                stream: recv,
                ended: false,
                reset: false,
                waker: None,
            }),
            slot,
        }
    }

    pub(crate) fn poll_read_ref(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut recv = self.recv.lock();
        if recv.reset {
            return Poll::Ready(Err(reset_locally()));
        }
        if recv.ended {
            return Poll::Ready(Ok(0));
        }
        match recv.stream.poll_read(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n == 0 && !buf.is_empty() {
                    recv.ended = true;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(match e {
                quinn::ReadError::Reset(code) => io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("stream reset by the peer (code {code})"),
                ),
                quinn::ReadError::ConnectionLost(e) => connection_error(e),
                other => io::Error::new(io::ErrorKind::ConnectionReset, other),
            })),
            Poll::Pending => {
                recv.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    pub(crate) fn poll_write_ref(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut send = self.send.lock();
        if send.reset {
            return Poll::Ready(Err(reset_locally()));
        }
        if send.finished {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream already finished for writing",
            )));
        }
        match Pin::new(&mut send.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(match e {
                quinn::WriteError::Stopped(code) => io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("stream reset by the peer (stop sending, code {code})"),
                ),
                quinn::WriteError::ConnectionLost(e) => connection_error(e),
                other => io::Error::new(io::ErrorKind::ConnectionReset, other),
            })),
            Poll::Pending => {
                send.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Half-closes (FIN). Idempotent.
    pub(crate) fn finish(&self) -> io::Result<()> {
        let mut send = self.send.lock();
        if send.reset {
            return Err(reset_locally());
        }
        if send.finished {
            return Ok(());
        }
        send.finished = true;
        send.stream
            .finish()
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionReset, e))?;
        let delivered = send.stream.stopped();
        self.slot.counts.add_delivery(Box::pin(async move {
            let _ = delivered.await;
        }));
        Ok(())
    }

    /// Resets both directions and wakes whoever waits on either.
    pub(crate) fn reset(&self) {
        let waker = {
            let mut send = self.send.lock();
            if !send.reset {
                send.reset = true;
                let _ = send.stream.reset(RESET_CODE.into());
            }
            send.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        let waker = {
            let mut recv = self.recv.lock();
            if !recv.reset && !recv.ended {
                recv.reset = true;
                let _ = recv.stream.stop(RESET_CODE.into());
            }
            recv.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        let send = self.send.get_mut();
        let recv = self.recv.get_mut();
        if !send.finished && !send.reset {
            let _ = send.stream.reset(RESET_CODE.into());
        }
        // Unread data of theirs: tell their writer to stop (their writes fail, they do not
        // stall). Our finished direction is left to deliver what it holds.
        if !recv.ended && !recv.reset {
            let _ = recv.stream.stop(RESET_CODE.into());
        }
    }
}

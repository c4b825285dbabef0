//! yamux (`/yamux/1.0.0`) on our own sans-IO state machine, `p2pnet-yamux`.
//!
//! The connection upgrade only negotiates the protocol and hands the noise session over; the
//! connection task (`connection.rs`) then drives a [`p2pnet_yamux::Connection`] over it. The
//! state machine sits in [`Shared`], behind a mutex that the connection task and every
//! [`YamuxStream`] of the connection take for short, I/O-free calls; sockets are only touched by
//! the connection task, outside the lock.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use p2pnet_yamux::{Connection, Event, Mode, ReadOutcome, StreamError, StreamId, WriteOutcome};
use parking_lot::Mutex;

use crate::Limits;

/// Any connection I/O, boxed so the types above do not depend on the layers beneath.
pub(crate) trait ConnectionIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ConnectionIo for T {}

/// An authenticated session on which yamux was negotiated, not yet driven.
pub(crate) struct Muxer {
    pub(crate) io: Box<dyn ConnectionIo>,
    pub(crate) mode: Mode,
    pub(crate) config: p2pnet_yamux::Config,
}

impl std::fmt::Debug for Muxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The connection upgrade that negotiates yamux.
#[derive(Debug, Clone)]
pub(crate) struct YamuxUpgrade {
    config: p2pnet_yamux::Config,
}

impl YamuxUpgrade {
    /// The host's stream limits are the muxer's: one count, taken once per stream.
    pub(crate) fn new(limits: &Limits, max_frame_data: usize) -> Self {
        Self {
            config: p2pnet_yamux::Config {
                max_inbound_streams: limits.max_inbound_streams_per_connection,
                max_outbound_streams: limits.max_outbound_streams_per_connection,
                max_frame_data: max_frame_data.max(1),
                ..p2pnet_yamux::Config::default()
            },
        }
    }

    fn muxer<C: AsyncRead + AsyncWrite + Send + Unpin + 'static>(self, io: C, mode: Mode) -> Muxer {
        Muxer {
            io: Box::new(io),
            mode,
            config: self.config,
        }
    }
}

impl UpgradeInfo for YamuxUpgrade {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(p2pnet_yamux::PROTOCOL_NAME)
    }
}

impl<C> InboundConnectionUpgrade<C> for YamuxUpgrade
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer;
    type Error = io::Error;
    type Future = futures::future::Ready<Result<Muxer, io::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        futures::future::ready(Ok(self.muxer(io, Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for YamuxUpgrade
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer;
    type Error = io::Error;
    type Future = futures::future::Ready<Result<Muxer, io::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        futures::future::ready(Ok(self.muxer(io, Mode::Client)))
    }
}

/// The state machine of one connection and the wakers of those waiting on it.
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    readers: HashMap<StreamId, Waker>,
    writers: HashMap<StreamId, Waker>,
    driver: Option<Waker>,
}

/// What [`Shared::dispatch`] found for the connection task.
#[derive(Debug, Default)]
pub(crate) struct Dispatched {
    pub(crate) inbound: Vec<StreamId>,
    pub(crate) refused: usize,
    pub(crate) go_away: Option<u32>,
}

impl Shared {
    pub(crate) fn new(conn: Connection) -> Arc<Mutex<Shared>> {
        Arc::new(Mutex::new(Shared {
            conn,
            readers: HashMap::new(),
            writers: HashMap::new(),
            driver: None,
        }))
    }

    /// Remembers the connection task's waker.
    pub(crate) fn register_driver(&mut self, waker: &Waker) {
        if !self.driver.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.driver = Some(waker.clone());
        }
    }

    /// Wakes the connection task when there is something to send.
    pub(crate) fn wake_driver_if_sending(&self) {
        if self.conn.pending_transmit() > 0
            && let Some(w) = &self.driver
        {
            w.wake_by_ref();
        }
    }

    /// Acts on the state machine's events: wakes streams, collects what the task must handle.
    pub(crate) fn dispatch(&mut self, out: &mut Dispatched) {
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::Inbound(id) => out.inbound.push(id),
                Event::InboundRefused(_) => out.refused += 1,
                Event::Readable(id) => {
                    if let Some(w) = self.readers.remove(&id) {
                        w.wake();
                    }
                }
                Event::Writable(id) => {
                    if let Some(w) = self.writers.remove(&id) {
                        w.wake();
                    }
                }
                Event::AllStreams => {
                    for (_, w) in self.readers.drain().chain(self.writers.drain()) {
                        w.wake();
                    }
                }
                Event::RemoteGoAway(code) => out.go_away = Some(code),
            }
        }
    }
}

/// One yamux stream: futures I/O over the shared state machine. Dropping it releases the stream
/// (a stream not finished both ways is reset).
pub(crate) struct YamuxStream {
    shared: Arc<Mutex<Shared>>,
    id: StreamId,
}

impl std::fmt::Debug for YamuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YamuxStream").field("id", &self.id).finish()
    }
}

impl YamuxStream {
    pub(crate) fn new(shared: Arc<Mutex<Shared>>, id: StreamId) -> Self {
        Self { shared, id }
    }

    /// A handle that can reset the stream while the stream itself sits inside other wrappers.
    pub(crate) fn control(&self) -> StreamControl {
        StreamControl {
            shared: self.shared.clone(),
            id: self.id,
        }
    }
}

impl Drop for YamuxStream {
    fn drop(&mut self) {
        let mut shared = self.shared.lock();
        shared.conn.release(self.id);
        shared.readers.remove(&self.id);
        shared.writers.remove(&self.id);
        shared.wake_driver_if_sending();
    }
}

/// Resets a stream from outside its I/O wrappers.
#[derive(Clone)]
pub(crate) struct StreamControl {
    shared: Arc<Mutex<Shared>>,
    id: StreamId,
}

impl std::fmt::Debug for StreamControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamControl")
            .field("id", &self.id)
            .finish()
    }
}

impl StreamControl {
    /// Sends RST (in every state but a finished or failed one) and wakes the stream's waiters.
    pub(crate) fn reset(&self) {
        let mut shared = self.shared.lock();
        let _ = shared.conn.reset(self.id);
        if let Some(w) = shared.readers.remove(&self.id) {
            w.wake();
        }
        if let Some(w) = shared.writers.remove(&self.id) {
            w.wake();
        }
        shared.wake_driver_if_sending();
    }
}

impl YamuxStream {
    /// Reads into `buf` (futures-style; the stream's own state is behind the connection lock, so
    /// a shared reference is enough and a read half and a write half can be polled at once).
    pub(crate) fn poll_read_ref(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.lock();
        match shared.conn.read(self.id, buf, Instant::now()) {
            Ok(ReadOutcome::Data(n)) => {
                shared.wake_driver_if_sending();
                Poll::Ready(Ok(n))
            }
            Ok(ReadOutcome::End) => Poll::Ready(Ok(0)),
            Ok(ReadOutcome::Blocked) => {
                shared.readers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Writes (some of) `buf`.
    pub(crate) fn poll_write_ref(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.lock();
        match shared.conn.write(self.id, buf) {
            Ok(WriteOutcome::Written(n)) => {
                shared.wake_driver_if_sending();
                Poll::Ready(Ok(n))
            }
            Ok(WriteOutcome::Blocked) => {
                shared.writers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Half-closes (FIN). Idempotent.
    pub(crate) fn finish(&self) -> io::Result<()> {
        let mut shared = self.shared.lock();
        let result = match shared.conn.finish(self.id) {
            Ok(()) | Err(StreamError::Finished) => Ok(()),
            Err(e) => Err(e.into()),
        };
        shared.wake_driver_if_sending();
        result
    }

    /// Resets both directions (RST in every state but a finished or failed one).
    pub(crate) fn reset(&self) {
        self.control().reset();
    }
}

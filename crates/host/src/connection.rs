//! Connections: their ids and the task that drives each connection's yamux.
//!
//! One task per connection owns the socket (the noise session) and drives the connection's
//! [`p2pnet_yamux::Connection`]: it reads, feeds the state machine, sends what it produces and
//! wakes the streams its events name. It answers open-stream requests that arrive over a bounded
//! channel, hands inbound streams to the host for negotiation on tasks of their own, closes the
//! connection when it has been idle too long, and never waits on application code.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::{AsyncRead, AsyncWrite};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use p2pnet_yamux::OpenError;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::host::HostInner;
use crate::muxer::{ConnectionIo, Dispatched, Shared, YamuxStream};
use crate::quic::stream::{QuicStream, StreamCounts, StreamSlot};
use crate::substream::MuxStream;
use crate::{HostError, LimitKind};

/// Identifies one connection for the lifetime of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The remote peer dialed us.
    Inbound,
    /// We dialed the remote peer.
    Outbound,
}

/// A request to open an outbound stream on a connection.
pub(crate) type OpenRequest = oneshot::Sender<Result<MuxStream, HostError>>;

/// Requests waiting for the muxer to hand out a stream (the ACK backlog), per connection.
const MAX_PENDING_OPENS: usize = 64;
/// Capacity of each connection's request channel.
pub(crate) const OPEN_CHANNEL_CAPACITY: usize = 64;
/// How long a closing connection may take to send what is left and its GoAway.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// While data flows in bulk, the read buffer comes in blocks of this size; frames are parsed in
/// place and data is handed to streams as slices of it.
const READ_BLOCK: usize = 256 * 1024;
/// The block of a connection that carries little: an idle connection holds at most this much.
const SMALL_BLOCK: usize = 2 * 1024;
/// Reads into the block while at least this much room is left (and a quarter of a block).
const MIN_READ_MORE: usize = 16 * 1024;
/// A write buffer with more capacity than this is let go after a small batch.
const KEEP_WRITE_CAPACITY: usize = 64 * 1024;
/// Transport reads per batch fed to the state machine.
const READS_PER_FEED: usize = 4;
/// Reads and writes per wake-up before the task yields to others.
const BUDGET: usize = 32;

/// The transport a connection runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// TCP with noise and yamux.
    Tcp,
    /// QUIC v1 (TLS 1.3, QUIC's own streams).
    Quic,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Quic => "quic",
        })
    }
}

/// How streams are opened and counted on a connection, per transport.
#[derive(Clone)]
pub(crate) enum MuxerHandle {
    /// Our yamux over TCP + noise: the state machine, and the task's queue of opens that wait.
    Yamux {
        opener: mpsc::Sender<OpenRequest>,
        shared: Arc<Mutex<Shared>>,
    },
    /// A QUIC connection (quinn drives it) and its stream counts.
    Quic {
        conn: quinn::Connection,
        counts: Arc<StreamCounts>,
        max_outbound: usize,
    },
}

/// An authenticated connection, before the host takes it.
pub(crate) enum Established {
    /// yamux negotiated over TCP + noise, not driven yet.
    Yamux(crate::muxer::Muxer),
    /// A QUIC connection whose handshake completed.
    Quic(quinn::Connection),
}

/// What the host keeps about a live connection.
#[derive(Clone)]
pub(crate) struct ConnectionHandle {
    pub(crate) id: ConnectionId,
    pub(crate) peer: PeerId,
    pub(crate) direction: Direction,
    pub(crate) remote_addr: Multiaddr,
    pub(crate) close: CancellationToken,
    pub(crate) muxer: MuxerHandle,
}

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("direction", &self.direction)
            .field("remote_addr", &self.remote_addr)
            .field("transport", &self.transport())
            .finish_non_exhaustive()
    }
}

impl ConnectionHandle {
    /// The connection's transport.
    pub(crate) fn transport(&self) -> TransportKind {
        match self.muxer {
            MuxerHandle::Yamux { .. } => TransportKind::Tcp,
            MuxerHandle::Quic { .. } => TransportKind::Quic,
        }
    }

    /// Opens a new outbound stream (over the outbound stream limit: `LimitReached`, and nothing
    /// else is touched).
    pub(crate) async fn open_substream(&self) -> Result<MuxStream, HostError> {
        let closed = || HostError::ConnectionClosed { peer: self.peer };
        let (opener, shared) = match &self.muxer {
            MuxerHandle::Yamux { opener, shared } => (opener, shared),
            MuxerHandle::Quic {
                conn,
                counts,
                max_outbound,
            } => {
                let slot =
                    StreamSlot::outbound(counts, *max_outbound).ok_or(HostError::LimitReached {
                        limit: LimitKind::OutboundStreams,
                    })?;
                // Waits while the peer's stream credit is used up.
                let (send, recv) = conn.open_bi().await.map_err(|_| closed())?;
                return Ok(MuxStream::Quic(QuicStream::new(send, recv, slot)));
            }
        };
        // Straight from the state machine when the ACK backlog has room (no hop through the
        // connection task); in line at the task when it is full.
        {
            let mut s = shared.lock();
            match s.conn.open_stream() {
                Ok(Some(id)) => {
                    s.wake_driver_if_sending();
                    drop(s);
                    return Ok(MuxStream::Yamux(YamuxStream::new(shared.clone(), id)));
                }
                Ok(None) => {}
                Err(OpenError::LimitReached(_)) => {
                    return Err(HostError::LimitReached {
                        limit: LimitKind::OutboundStreams,
                    });
                }
                Err(_) => return Err(closed()),
            }
        }
        let (tx, rx) = oneshot::channel();
        opener.send(tx).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Streams in use on the connection, both directions.
    pub(crate) fn open_streams(&self) -> usize {
        match &self.muxer {
            MuxerHandle::Yamux { shared, .. } => shared.lock().conn.stream_count(),
            MuxerHandle::Quic { counts, .. } => counts.open.load(Ordering::Acquire),
        }
    }
}

/// Why a connection task ended.
#[derive(Debug)]
enum Exit {
    /// We close it (asked to, or shutdown).
    Closed,
    /// No stream for the idle timeout.
    Idle,
    /// The transport ended or failed.
    Lost(String),
    /// The peer broke the yamux protocol (GoAway with the protocol error code is queued).
    Protocol(String),
}

/// The socket side of one connection: buffers and their state.
struct Io {
    io: Box<dyn ConnectionIo>,
    /// Received bytes not parsed yet (`..filled`), then zeroed room to read into.
    read_buf: BytesMut,
    filled: usize,
    /// The size of the next block: [`READ_BLOCK`] while reads fill blocks, else [`SMALL_BLOCK`].
    block: usize,
    /// Encoded frames taken from the state machine, sent up to `written`.
    write_buf: Vec<u8>,
    written: usize,
    needs_flush: bool,
}

impl Io {
    fn new(io: Box<dyn ConnectionIo>) -> Self {
        Self {
            io,
            read_buf: BytesMut::new(),
            filled: 0,
            block: SMALL_BLOCK,
            write_buf: Vec::new(),
            written: 0,
            needs_flush: false,
        }
    }

    /// Makes room for a read: a fresh zeroed block when the current one is nearly used.
    fn reserve(&mut self) {
        let min_room = self.block / 4;
        if self.read_buf.len() - self.filled >= min_room {
            return;
        }
        let mut block = BytesMut::with_capacity(self.block.max(self.filled + min_room));
        block.extend_from_slice(&self.read_buf[..self.filled]);
        block.resize(block.capacity(), 0);
        self.read_buf = block;
    }

    /// Reads what the transport has, a few times over (noise hands out one frame per read) so
    /// that the state machine is fed and streams are woken once per batch. `Ok(true)`: bytes
    /// arrived; `Ok(false)`: nothing yet; an end of stream is an error (`UnexpectedEof`) once
    /// everything before it was handed on.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        self.reserve();
        let mut got = 0;
        for _ in 0..READS_PER_FEED {
            let filled = self.filled;
            let room = self.read_buf.len() - filled;
            if room == 0 || (got > 0 && room < MIN_READ_MORE.min(self.block / 4)) {
                break;
            }
            match Pin::new(&mut self.io).poll_read(cx, &mut self.read_buf[filled..]) {
                Poll::Ready(Ok(0)) if got == 0 => {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(n)) => {
                    self.filled += n;
                    got += n;
                }
                Poll::Ready(Err(e)) if got == 0 => return Err(e),
                // The error comes again on the next read, after these bytes were fed.
                Poll::Ready(Err(_)) => break,
                Poll::Pending => break,
            }
        }
        // Bulk data takes big blocks (fewer batches and wake-ups); a trickle small ones.
        if got >= self.block / 2 {
            self.block = READ_BLOCK;
        } else if got > 0 && got < SMALL_BLOCK / 2 {
            self.block = SMALL_BLOCK;
        }
        Ok(got > 0)
    }

    /// Hands what was read to the state machine (which keeps slices of it).
    fn feed(&mut self, shared: &mut Shared) -> Result<(), p2pnet_yamux::ConnectionError> {
        let mut data = self.read_buf.split_to(self.filled);
        let result = shared.conn.handle_input(&mut data, Instant::now());
        self.filled = data.len();
        data.unsplit(std::mem::take(&mut self.read_buf));
        self.read_buf = data;
        if self.filled == 0 && self.block == SMALL_BLOCK {
            // Little is flowing: hold no block between reads (an idle connection keeps no read
            // buffer; streams may still hold slices of the old block).
            self.read_buf = BytesMut::new();
        }
        result
    }

    /// Writes what is buffered. `Ok(true)`: everything was written and flushed.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        while self.written < self.write_buf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.write_buf[self.written..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.needs_flush = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
        if self.write_buf.capacity() > KEEP_WRITE_CAPACITY && self.written < KEEP_WRITE_CAPACITY / 4
        {
            // A small batch after a big one: an idle connection keeps no big buffer.
            self.write_buf = Vec::new();
        } else {
            self.write_buf.clear();
        }
        self.written = 0;
        if self.needs_flush {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Runs one connection until it closes; then the host forgets it.
pub(crate) async fn run(
    host: Arc<HostInner>,
    handle: ConnectionHandle,
    io: Box<dyn ConnectionIo>,
    shared: Arc<Mutex<Shared>>,
    mut requests: mpsc::Receiver<OpenRequest>,
) {
    let mut io = Io::new(io);
    let mut pending: VecDeque<OpenRequest> = VecDeque::new();
    let idle_timeout = host.config.idle_timeout;
    let mut idle_tick = idle_timeout.map(|t| {
        let period = (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::time::interval(period)
    });
    let mut idle_since: Option<Instant> = None;
    let close = handle.close.clone();
    let mut closed = std::pin::pin!(close.cancelled());
    let mut going_away = false;

    let exit = poll_fn(|cx| {
        if closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Exit::Closed);
        }
        // Take open requests, bounded by how many may wait for the muxer.
        while pending.len() < MAX_PENDING_OPENS {
            match requests.poll_recv(cx) {
                Poll::Ready(Some(req)) => pending.push_back(req),
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        let mut budget = BUDGET;
        loop {
            let mut progress = false;
            let mut found = Dispatched::default();
            let mut opened = Vec::new();
            let mut lost = None;
            let mut broken = None;
            let full = {
                let mut s = shared.lock();
                s.register_driver(cx.waker());
                // Answer open requests while the muxer hands out streams.
                while let Some(front) = pending.front() {
                    if front.is_closed() {
                        pending.pop_front();
                        continue;
                    }
                    let reply = match s.conn.open_stream() {
                        Ok(Some(id)) => Ok(id),
                        Ok(None) => break, // the ACK backlog is full: wait for the peer
                        Err(OpenError::LimitReached(_)) => Err(HostError::LimitReached {
                            limit: LimitKind::OutboundStreams,
                        }),
                        Err(_) => Err(HostError::ConnectionClosed { peer: handle.peer }),
                    };
                    if let Some(req) = pending.pop_front() {
                        opened.push((req, reply));
                    }
                }
                s.conn.transmit_full()
            };
            // Read (outside the lock: decryption is the costly part) while the answers the
            // peer's frames call for (pings, refusals) have room to queue.
            if !full {
                match io.poll_read(cx) {
                    Ok(true) => {
                        progress = true;
                        if let Err(e) = io.feed(&mut shared.lock()) {
                            broken = Some(e.to_string());
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        shared.lock().conn.connection_lost();
                        lost = Some(e.to_string());
                    }
                }
            }
            {
                let mut s = shared.lock();
                if io.write_buf.is_empty() {
                    s.conn.take_transmit(&mut io.write_buf);
                }
                s.dispatch(&mut found);
            }
            for (req, reply) in opened {
                // A requester that gave up drops the stream, which resets it.
                let _ = req.send(reply.map(|id| MuxStream::Yamux(YamuxStream::new(shared.clone(), id))));
            }
            if found.refused > 0 {
                host.metrics
                    .refused_streams
                    .fetch_add(found.refused as u64, Ordering::Relaxed);
                if host.warn_limiter.allow() {
                    tracing::warn!(peer = %handle.peer, conn = %handle.id, limit = host.config.limits.max_inbound_streams_per_connection, "inbound stream refused: limit reached");
                }
            }
            for id in found.inbound {
                host.on_inbound_substream(&handle, MuxStream::Yamux(YamuxStream::new(shared.clone(), id)));
            }
            if let Some(code) = found.go_away
                && !going_away
            {
                going_away = true;
                tracing::debug!(peer = %handle.peer, conn = %handle.id, code, "peer is going away");
                // No new stream goes on this connection; the ones open run to their end.
                host.remove_connection(&handle);
            }
            if let Some(e) = lost {
                return Poll::Ready(Exit::Lost(e));
            }
            if let Some(e) = broken {
                return Poll::Ready(Exit::Protocol(e));
            }
            if !io.write_buf.is_empty() || io.needs_flush {
                match io.poll_send(cx) {
                    Ok(done) => progress |= done,
                    Err(e) => {
                        shared.lock().conn.connection_lost();
                        wake_all(&shared);
                        return Poll::Ready(Exit::Lost(e.to_string()));
                    }
                }
            }
            if !progress {
                break;
            }
            budget -= 1;
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        if let (Some(tick), Some(timeout)) = (idle_tick.as_mut(), idle_timeout) {
            while tick.poll_tick(cx).is_ready() {
                if handle.open_streams() > 0 || host.is_protected(&handle.peer) {
                    idle_since = None;
                } else {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= timeout {
                        return Poll::Ready(Exit::Idle);
                    }
                }
            }
        }
        Poll::Pending
    })
    .await;

    match &exit {
        Exit::Closed => {
            tracing::debug!(peer = %handle.peer, conn = %handle.id, "closing connection")
        }
        Exit::Idle => {
            tracing::debug!(peer = %handle.peer, conn = %handle.id, "closing idle connection")
        }
        Exit::Lost(e) => {
            tracing::debug!(peer = %handle.peer, conn = %handle.id, error = %e, "connection ended")
        }
        Exit::Protocol(e) => {
            tracing::debug!(peer = %handle.peer, conn = %handle.id, error = %e, "peer broke the yamux protocol")
        }
    }
    // Nobody is handed this connection from now on.
    host.remove_connection(&handle);
    if matches!(exit, Exit::Closed | Exit::Idle) {
        shared.lock().conn.close();
    }
    wake_all(&shared);
    for req in pending.drain(..) {
        let _ = req.send(Err(HostError::ConnectionClosed { peer: handle.peer }));
    }
    requests.close();
    while let Ok(req) = requests.try_recv() {
        let _ = req.send(Err(HostError::ConnectionClosed { peer: handle.peer }));
    }
    if !matches!(exit, Exit::Lost(_)) {
        // Send what is queued (data, FINs, our GoAway), then close the socket.
        let goodbye = poll_fn(|cx| {
            if io.write_buf.is_empty() {
                shared.lock().conn.take_transmit(&mut io.write_buf);
            }
            match io.poll_send(cx) {
                Ok(true) if shared.lock().conn.pending_transmit() == 0 => {
                    Pin::new(&mut io.io).poll_close(cx).map(drop)
                }
                Ok(true) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Ok(false) => Poll::Pending,
                Err(_) => Poll::Ready(()),
            }
        });
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, goodbye).await;
    }
}

/// Wakes every stream waiting on the connection (after it closed or was lost).
fn wake_all(shared: &Arc<Mutex<Shared>>) {
    let mut found = Dispatched::default();
    shared.lock().dispatch(&mut found);
}

/// Runs one QUIC connection until it closes: hands the peer's streams to the host, closes the
/// connection when asked or idle, and wakes every stream when it ends (quinn fails their reads
/// and writes: `ConnectionAborted` when we closed, `ConnectionReset` when it was lost).
pub(crate) async fn run_quic(
    host: Arc<HostInner>,
    handle: ConnectionHandle,
    conn: quinn::Connection,
    counts: Arc<StreamCounts>,
) {
    let idle_timeout = host.config.idle_timeout;
    let period = idle_timeout.map_or(Duration::from_secs(3600), |t| {
        (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    });
    let mut idle_tick = tokio::time::interval(period);
    let mut idle_since: Option<Instant> = None;
    let exit = loop {
        tokio::select! {
            biased;
            () = handle.close.cancelled() => break Exit::Closed,
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let slot = StreamSlot::inbound(&counts);
                    host.on_inbound_substream(&handle, MuxStream::Quic(QuicStream::new(send, recv, slot)));
                }
                Err(e) => break Exit::Lost(e.to_string()),
            },
            _ = idle_tick.tick(), if idle_timeout.is_some() => {
                let timeout = idle_timeout.unwrap_or(Duration::MAX);
                if handle.open_streams() > 0 || host.is_protected(&handle.peer) {
                    idle_since = None;
                } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= timeout {
                    break Exit::Idle;
                }
            }
        }
    };
    match &exit {
        Exit::Closed => {
            tracing::debug!(peer = %handle.peer, conn = %handle.id, "closing QUIC connection")
        }
        Exit::Idle => {
            tracing::debug!(peer = %handle.peer, conn = %handle.id, "closing idle QUIC connection")
        }
        Exit::Lost(e) | Exit::Protocol(e) => {
            tracing::debug!(peer = %handle.peer, conn = %handle.id, error = %e, "QUIC connection ended")
        }
    }
    host.remove_connection(&handle);
    let deliveries = counts.take_deliveries();
    if matches!(exit, Exit::Closed | Exit::Idle) {
        // What finished streams sent reaches the peer before the close (bounded), as on yamux.
        if !deliveries.is_empty() {
            let all = futures::future::join_all(deliveries);
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, all).await;
        }
        // The close frame goes out at once; the endpoint keeps the connection's state until the
        // peer has had time to hear it (and the host's shutdown waits for that). A lost
        // connection is left as it is, so its streams read as lost (`ConnectionReset`).
        conn.close(0u32.into(), b"");
    }
}

//! Connections: their ids and the task that owns each connection's muxer.
//!
//! One task per connection owns the muxer (it is not `Sync` and must be polled all the
//! time or every substream on it stalls). It answers open-stream requests that arrive over a
//! bounded channel, hands inbound substreams to the host for negotiation on tasks of their own,
//! closes the connection when it has been idle too long, and never waits on application code.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use libp2p_core::muxing::StreamMuxerExt;
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::HostError;
use crate::host::HostInner;
use crate::muxer::Muxer;

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

/// A request to open an outbound substream on a connection.
pub(crate) type OpenRequest = oneshot::Sender<Result<yamux::Stream, HostError>>;

/// Requests waiting for yamux to hand out a substream, per connection.
const MAX_PENDING_OPENS: usize = 64;
/// Capacity of each connection's request channel.
pub(crate) const OPEN_CHANNEL_CAPACITY: usize = 64;
/// How long a closing connection may take to say goodbye before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// What the host keeps about a live connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionHandle {
    pub(crate) id: ConnectionId,
    pub(crate) peer: PeerId,
    pub(crate) direction: Direction,
    pub(crate) remote_addr: Multiaddr,
    pub(crate) opener: mpsc::Sender<OpenRequest>,
    pub(crate) close: CancellationToken,
    pub(crate) inbound_streams: Arc<AtomicUsize>,
    pub(crate) outbound_streams: Arc<AtomicUsize>,
    /// Set when the connection has ended: streams on it then report a reset instead of EOF.
    pub(crate) ended: Arc<AtomicBool>,
}

impl ConnectionHandle {
    /// Asks the connection task for a new outbound substream.
    pub(crate) async fn open_substream(&self) -> Result<yamux::Stream, HostError> {
        let (tx, rx) = oneshot::channel();
        let closed = || HostError::ConnectionClosed { peer: self.peer };
        self.opener.send(tx).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    fn open_streams(&self) -> usize {
        self.inbound_streams.load(Ordering::Relaxed) + self.outbound_streams.load(Ordering::Relaxed)
    }
}

/// Why a connection task ended.
#[derive(Debug)]
enum Exit {
    Closed,
    Idle,
    Error(String),
}

/// Runs one connection until it closes; then the host forgets it.
pub(crate) async fn run(
    host: Arc<HostInner>,
    handle: ConnectionHandle,
    mut muxer: Muxer,
    mut requests: mpsc::Receiver<OpenRequest>,
) {
    let mut pending: VecDeque<OpenRequest> = VecDeque::new();
    let idle_timeout = host.config.idle_timeout;
    let mut idle_tick = idle_timeout.map(|t| {
        let period = (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::time::interval(period)
    });
    let mut idle_since: Option<Instant> = None;
    let close = handle.close.clone();
    let mut closed = std::pin::pin!(close.cancelled());

    let exit = poll_fn(|cx| {
        if closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Exit::Closed);
        }
        // Take open requests, bounded by how many may wait for yamux.
        while pending.len() < MAX_PENDING_OPENS {
            match requests.poll_recv(cx) {
                Poll::Ready(Some(req)) => pending.push_back(req),
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        while let Some(front) = pending.front() {
            if front.is_closed() {
                pending.pop_front();
                continue;
            }
            match muxer.poll_outbound_unpin(cx) {
                Poll::Ready(Ok(substream)) => {
                    if let Some(req) = pending.pop_front() {
                        // A requester that gave up drops the substream, which resets it.
                        let _ = req.send(Ok(substream));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Exit::Error(e.to_string())),
                Poll::Pending => break,
            }
        }
        // Inbound substreams; polling this also drives all of the connection's I/O.
        loop {
            match muxer.poll_inbound_unpin(cx) {
                Poll::Ready(Ok(substream)) => host.on_inbound_substream(&handle, substream),
                Poll::Ready(Err(e)) => return Poll::Ready(Exit::Error(e.to_string())),
                Poll::Pending => break,
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
    handle.ended.store(true, Ordering::Release);

    match &exit {
        Exit::Closed => {
            tracing::debug!(peer = %handle.peer, conn = %handle.id, "closing connection")
        }
        Exit::Idle => {
            tracing::debug!(peer = %handle.peer, conn = %handle.id, "closing idle connection")
        }
        Exit::Error(e) => {
            tracing::debug!(peer = %handle.peer, conn = %handle.id, error = %e, "connection ended")
        }
    }
    for req in pending.drain(..) {
        let _ = req.send(Err(HostError::ConnectionClosed { peer: handle.peer }));
    }
    requests.close();
    while let Ok(req) = requests.try_recv() {
        let _ = req.send(Err(HostError::ConnectionClosed { peer: handle.peer }));
    }
    if !matches!(exit, Exit::Error(_)) {
        let _ = tokio::time::timeout(
            CLOSE_TIMEOUT,
            poll_fn(|cx| muxer.poll_close_unpin(cx)).map(drop),
        )
        .await;
    }
    host.remove_connection(&handle);
}

//! The listener and stream registries: what is forwarded, what is flowing, and how to close it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use p2pnet_host::{Multiaddr, PeerId, StreamHandlerRegistration};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::endpoint::Endpoint;

/// Identifies a listener for the life of a [`crate::Forwarder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u64);

impl std::fmt::Display for ListenerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "l{}", self.0)
    }
}

/// Identifies a bridged stream for the life of a [`crate::Forwarder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Which way a listener forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `forward`: a local listen address, each connection tunnelled to a peer's protocol.
    Local,
    /// `listen`: a protocol on this host, each inbound stream connected to a local target.
    Remote,
}

/// Where a bridged stream started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A local client connected to a local listener (`forward`).
    Local,
    /// A peer opened a stream to a remote listener (`listen`).
    Remote,
}

/// A listener as listed by [`crate::Forwarder::list_listeners`].
///
/// Following kubo: a local listener's `listen_addr` is the bound local address (port 0
/// resolved) and its `target_addr` is `/p2p/<peer>`; a remote listener's `listen_addr` is
/// `/p2p/<this host>` and its `target_addr` the local target.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerInfo {
    /// The listener's id.
    pub id: ListenerId,
    /// The libp2p protocol tunnelled.
    pub protocol: String,
    /// Where connections or streams arrive.
    pub listen_addr: Multiaddr,
    /// Where they are sent.
    pub target_addr: Multiaddr,
    /// Local (`forward`) or remote (`listen`).
    pub direction: Direction,
}

/// Selects listeners (and the streams they started) by protocol, listen address and target
/// address; every criterion given must match. [`ListenerFilter::all`] matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerFilter {
    /// Only this protocol.
    pub protocol: Option<String>,
    /// Only this listen address.
    pub listen_addr: Option<Multiaddr>,
    /// Only this target address.
    pub target_addr: Option<Multiaddr>,
}

impl ListenerFilter {
    /// Matches every listener.
    pub fn all() -> Self {
        Self::default()
    }

    /// Matches listeners of `protocol`.
    pub fn protocol(protocol: impl Into<String>) -> Self {
        Self::all().with_protocol(protocol)
    }

    /// Matches listeners on `addr`.
    pub fn listen_addr(addr: Multiaddr) -> Self {
        Self::all().with_listen_addr(addr)
    }

    /// Matches listeners sending to `addr`.
    pub fn target_addr(addr: Multiaddr) -> Self {
        Self::all().with_target_addr(addr)
    }

    /// Also requires `protocol`.
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Also requires the listen address `addr`.
    pub fn with_listen_addr(mut self, addr: Multiaddr) -> Self {
        self.listen_addr = Some(addr);
        self
    }

    /// Also requires the target address `addr`.
    pub fn with_target_addr(mut self, addr: Multiaddr) -> Self {
        self.target_addr = Some(addr);
        self
    }

    /// Whether `info` matches.
    pub fn matches(&self, info: &ListenerInfo) -> bool {
        self.protocol.as_ref().is_none_or(|p| *p == info.protocol)
            && self
                .listen_addr
                .as_ref()
                .is_none_or(|a| *a == info.listen_addr)
            && self
                .target_addr
                .as_ref()
                .is_none_or(|a| *a == info.target_addr)
    }
}

/// A bridged stream as listed by [`crate::Forwarder::list_streams`]; the byte counters are a
/// snapshot taken at the call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The stream's id.
    pub id: StreamId,
    /// The listener that started it.
    pub listener: ListenerId,
    /// The libp2p protocol.
    pub protocol: String,
    /// Who started it.
    pub origin: Origin,
    /// The local end: the client's address for a local origin (the socket path for Unix
    /// clients), the target's address for a remote origin.
    pub local_addr: Multiaddr,
    /// The peer at the other end.
    pub remote_peer: PeerId,
    /// The remote address of the libp2p connection carrying the stream.
    pub remote_addr: Multiaddr,
    /// Bytes received from the peer and written to the local end so far.
    pub bytes_in: u64,
    /// Bytes read from the local end and sent to the peer so far.
    pub bytes_out: u64,
    /// When the stream was bridged.
    pub opened_at: SystemTime,
}

/// Live counters of a bridged stream, updated by the bridge as bytes move.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    start: Instant,
    /// Milliseconds since `start` of the last byte moved.
    last_activity_ms: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            start: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        self.touch();
    }

    pub(crate) fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        self.touch();
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// When a byte last moved.
    pub(crate) fn last_activity(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }
}

struct ListenerEntry {
    info: ListenerInfo,
    /// The local endpoint of a local listener (for conflict checks).
    endpoint: Option<Endpoint>,
    stop: ListenerStop,
}

/// What stops a listener.
#[derive(Debug)]
pub(crate) enum ListenerStop {
    /// Cancels a local listener's accept loop.
    Accept(CancellationToken),
    /// A remote listener's stream handler: it serves until this is dropped.
    Handler(StreamHandlerRegistration),
}

impl ListenerStop {
    /// Stops the listener: cancels the accept loop, or drops the handler's registration.
    pub(crate) fn stop(self) {
        match self {
            ListenerStop::Accept(cancel) => cancel.cancel(),
            ListenerStop::Handler(registration) => drop(registration),
        }
    }
}

/// The listeners of a [`crate::Forwarder`].
#[derive(Default)]
pub struct ListenerRegistry {
    entries: Mutex<HashMap<ListenerId, ListenerEntry>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for ListenerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerRegistry")
            .field("len", &self.len())
            .finish()
    }
}

impl ListenerRegistry {
    /// All listeners, ordered by id.
    pub fn list(&self) -> Vec<ListenerInfo> {
        let mut v: Vec<ListenerInfo> = self
            .entries
            .lock()
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// How many listeners there are.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn next_id(&self) -> ListenerId {
        ListenerId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Runs `f` with the lock held, letting the caller check conflicts and insert atomically.
    pub(crate) fn with_lock<R>(&self, f: impl FnOnce(&mut RegistryView<'_>) -> R) -> R {
        let mut entries = self.entries.lock();
        f(&mut RegistryView {
            entries: &mut entries,
        })
    }

    /// Removes the matching listeners and returns them.
    pub(crate) fn take_matching(
        &self,
        filter: &ListenerFilter,
    ) -> Vec<(ListenerInfo, ListenerStop)> {
        let mut entries = self.entries.lock();
        let ids: Vec<ListenerId> = entries
            .values()
            .filter(|e| filter.matches(&e.info))
            .map(|e| e.info.id)
            .collect();
        ids.into_iter()
            .filter_map(|id| entries.remove(&id))
            .map(|e| (e.info, e.stop))
            .collect()
    }

    /// Removes one listener (its accept loop ended on its own).
    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        self.entries.lock().remove(&id).is_some()
    }
}

/// The registry with its lock held.
pub(crate) struct RegistryView<'a> {
    entries: &'a mut HashMap<ListenerId, ListenerEntry>,
}

impl RegistryView<'_> {
    pub(crate) fn protocol_listened(&self, protocol: &str) -> bool {
        self.entries
            .values()
            .any(|e| e.info.direction == Direction::Remote && e.info.protocol == protocol)
    }

    pub(crate) fn endpoint_forwarded(&self, endpoint: &Endpoint) -> bool {
        self.entries
            .values()
            .any(|e| e.endpoint.as_ref() == Some(endpoint))
    }

    pub(crate) fn insert(
        &mut self,
        info: ListenerInfo,
        endpoint: Option<Endpoint>,
        stop: ListenerStop,
    ) {
        self.entries.insert(
            info.id,
            ListenerEntry {
                info,
                endpoint,
                stop,
            },
        );
    }
}

struct StreamEntry {
    info: StreamInfo,
    /// The listener's info, kept for filtering after the listener is gone.
    listener: ListenerInfo,
    counters: Arc<Counters>,
    cancel: CancellationToken,
}

/// The bridged streams of a [`crate::Forwarder`]. An entry disappears when its stream ends,
/// whichever way.
#[derive(Default)]
pub struct StreamRegistry {
    entries: Mutex<HashMap<StreamId, StreamEntry>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for StreamRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRegistry")
            .field("len", &self.len())
            .finish()
    }
}

impl StreamRegistry {
    /// All streams, ordered by id, with their counters as of now.
    pub fn list(&self) -> Vec<StreamInfo> {
        let mut v: Vec<StreamInfo> = self.entries.lock().values().map(snapshot).collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// One stream, with its counters as of now.
    pub fn get(&self, id: StreamId) -> Option<StreamInfo> {
        self.entries.lock().get(&id).map(snapshot)
    }

    /// How many streams are bridged.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a stream; the returned guard removes it when dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        mut info: StreamInfo,
        listener: ListenerInfo,
        counters: Arc<Counters>,
        cancel: CancellationToken,
    ) -> StreamRegistration {
        let id = StreamId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        info.id = id;
        self.entries.lock().insert(
            id,
            StreamEntry {
                info,
                listener,
                counters,
                cancel,
            },
        );
        StreamRegistration {
            registry: self.clone(),
            id,
        }
    }

    /// Resets the stream `id` on both sides; returns whether it existed.
    pub(crate) fn close(&self, id: StreamId) -> bool {
        match self.entries.lock().get(&id) {
            Some(e) => {
                e.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Resets every stream whose listener matches; returns how many.
    pub(crate) fn close_matching(&self, filter: &ListenerFilter) -> usize {
        let entries = self.entries.lock();
        let mut n = 0;
        for e in entries.values() {
            if filter.matches(&e.listener) && !e.cancel.is_cancelled() {
                e.cancel.cancel();
                n += 1;
            }
        }
        n
    }
}

fn snapshot(e: &StreamEntry) -> StreamInfo {
    let mut info = e.info.clone();
    info.bytes_in = e.counters.bytes_in.load(Ordering::Relaxed);
    info.bytes_out = e.counters.bytes_out.load(Ordering::Relaxed);
    info
}

/// Keeps a stream registered; removes it when dropped.
pub(crate) struct StreamRegistration {
    registry: Arc<StreamRegistry>,
    id: StreamId,
}

impl StreamRegistration {
    pub(crate) fn id(&self) -> StreamId {
        self.id
    }
}

impl Drop for StreamRegistration {
    fn drop(&mut self) {
        self.registry.entries.lock().remove(&self.id);
    }
}

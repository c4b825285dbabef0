//! [`Host`]: the handle every other layer uses, and the state it shares with its tasks.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use libp2p_identity::{Keypair, PeerId};
use multiaddr::Multiaddr;
use multistream_select::{NegotiationError, Version};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{
    self, ConnectionHandle, ConnectionId, Direction, Established, MuxerHandle, TransportKind,
};
use crate::handlers::{HandlerFn, Handlers, StreamHandlerRegistration, StreamReceiver};
use crate::listen::ListenerEntry;
use crate::metrics::Metrics;
use crate::muxer::Shared;
use crate::peer_store::PeerStore;
use crate::protocols::{identify, ping};
use crate::stream::StreamGuard;
use crate::substream::MuxStream;
use crate::transport::{self, BoxedTransport};
use crate::{
    HostConfig, HostError, HostEvent, HostMetrics, InboundStream, LimitKind, Stream,
    validate_protocol,
};

/// Capacity of the host event channel; a subscriber that falls further behind misses events.
const EVENT_CAPACITY: usize = 1024;

/// What drives a new connection.
enum Driver {
    Yamux(
        Box<dyn crate::muxer::ConnectionIo>,
        Arc<Mutex<Shared>>,
        mpsc::Receiver<connection::OpenRequest>,
    ),
    Quic(quinn::Connection, Arc<crate::quic::stream::StreamCounts>),
}

/// Information about one live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// The remote peer.
    pub peer: PeerId,
    /// Who dialed.
    pub direction: Direction,
    /// The remote address.
    pub remote_addr: Multiaddr,
    /// Open streams (both directions).
    pub open_streams: usize,
    /// The transport it runs on.
    pub transport: TransportKind,
}

/// A libp2p host: listens, dials, authenticates peers with noise, multiplexes streams with
/// yamux and negotiates protocols with multistream-select 1.0.
///
/// `Host` is a cheap handle: clone it freely. Call [`Host::shutdown`] to stop it; that closes
/// listeners and connections and joins every task the host spawned.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<HostInner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("peer_id", &self.inner.peer_id)
            .finish_non_exhaustive()
    }
}

/// State shared by the handle and the host's tasks.
pub(crate) struct HostInner {
    pub(crate) config: HostConfig,
    pub(crate) keypair: Keypair,
    pub(crate) peer_id: PeerId,
    pub(crate) dialer: Mutex<BoxedTransport>,
    pub(crate) quic: crate::quic::Quic,
    pub(crate) listeners: Mutex<HashMap<u64, ListenerEntry>>,
    pub(crate) connections: Mutex<HashMap<PeerId, Vec<ConnectionHandle>>>,
    pub(crate) pending_dials: crate::dial::PendingDials,
    pub(crate) handlers: Handlers,
    pub(crate) peer_store: PeerStore,
    events: broadcast::Sender<HostEvent>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    is_shut_down: AtomicBool,
    next_id: AtomicU64,
    protected: Mutex<HashMap<PeerId, usize>>,
    pub(crate) observed_addrs: Mutex<Vec<Multiaddr>>,
    pub(crate) warn_limiter: crate::log::RateLimiter,
    pub(crate) pending_incoming: std::sync::atomic::AtomicUsize,
    pub(crate) peer_routing: Mutex<Option<Arc<dyn crate::PeerRouting>>>,
    pub(crate) routing_lookups: std::sync::atomic::AtomicUsize,
}

impl Host {
    /// Creates a host with the given identity. It neither listens nor dials until asked.
    ///
    /// Must be called from within a tokio runtime. Registers the built-in protocols
    /// `/ipfs/ping/1.0.0` and `/ipfs/id/1.0.0`.
    pub fn new(keypair: Keypair, config: HostConfig) -> Result<Host, HostError> {
        let dialer = transport::build(
            &keypair,
            &config.limits,
            config.handshake_timeout,
            config.yamux_split_send_size,
        )?;
        let quic = crate::quic::Quic::new(&keypair, &config)?;
        let peer_id = keypair.public().to_peer_id();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let inner = Arc::new(HostInner {
            config,
            keypair,
            peer_id,
            dialer: Mutex::new(dialer),
            quic,
            listeners: Mutex::default(),
            connections: Mutex::default(),
            pending_dials: Default::default(),
            handlers: Handlers::default(),
            peer_store: PeerStore::default(),
            events,
            metrics: Arc::default(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            is_shut_down: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            protected: Mutex::default(),
            observed_addrs: Mutex::default(),
            warn_limiter: Default::default(),
            pending_incoming: Default::default(),
            peer_routing: Mutex::default(),
            routing_lookups: Default::default(),
        });
        let host = Host { inner };
        // The built-in handlers have no registration: they serve for the host's lifetime.
        host.inner.add_handler(ping::PROTOCOL, ping::serve)?;
        let weak = Arc::downgrade(&host.inner);
        host.inner.add_handler(identify::PROTOCOL, move |s| {
            let weak = weak.clone();
            async move {
                if let Some(inner) = weak.upgrade() {
                    identify::serve(inner, s).await;
                }
            }
        })?;
        tracing::info!(peer = %peer_id, "host created");
        Ok(host)
    }

    /// This host's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// This host's key pair.
    pub fn keypair(&self) -> &Keypair {
        &self.inner.keypair
    }

    /// The configuration the host was built with.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The peer store.
    pub fn peer_store(&self) -> &PeerStore {
        &self.inner.peer_store
    }

    /// Registers `handler` for inbound streams on `protocol` and returns its registration: the
    /// handler serves until the registration is dropped (or the host shuts down).
    ///
    /// The handler is called with each negotiated inbound stream; the future it returns runs on a
    /// task owned by the host and is cancelled at shutdown. A protocol has at most one handler:
    /// if it already has one (a built-in protocol, or another registration that is still alive),
    /// this fails with [`HostError::ProtocolTaken`] and the handler there serves on. The name
    /// must pass [`crate::validate_protocol`]; after [`Host::shutdown`] this fails with
    /// [`HostError::ShutDown`].
    pub fn set_stream_handler<F, Fut>(
        &self,
        protocol: impl Into<String>,
        handler: F,
    ) -> Result<StreamHandlerRegistration, HostError>
    where
        F: Fn(InboundStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let protocol = protocol.into();
        let id = self.inner.add_handler(&protocol, handler)?;
        tracing::debug!(%protocol, "stream handler registered");
        Ok(StreamHandlerRegistration::new(
            Arc::downgrade(&self.inner),
            protocol,
            id,
        ))
    }

    /// Registers `protocol` (as [`Host::set_stream_handler`] does, with the same errors) and
    /// returns a bounded channel of its inbound streams that owns the registration: dropping the
    /// receiver removes the handler. When the channel is full, new streams wait (each holding a
    /// slot of its connection's stream limit).
    pub fn accept_streams(
        &self,
        protocol: impl Into<String>,
        capacity: usize,
    ) -> Result<StreamReceiver, HostError> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let registration = self.set_stream_handler(protocol, move |s| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(s).await;
            }
        })?;
        Ok(StreamReceiver::new(rx, registration))
    }

    /// The protocols this host serves, sorted.
    pub fn protocols(&self) -> Vec<String> {
        let mut p = self.inner.handlers.names();
        p.sort();
        p
    }

    /// Whether a handler is registered for `protocol`.
    pub fn check_proto_exists(&self, protocol: &str) -> bool {
        self.inner.handlers.contains(protocol)
    }

    /// Opens a stream to `peer`, negotiating the first of `protocols` the peer supports.
    ///
    /// Reuses a live connection, or dials the peer's addresses from the peer store.
    pub async fn new_stream<I, P>(&self, peer: PeerId, protocols: I) -> Result<Stream, HostError>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let protocols: Vec<String> = protocols.into_iter().map(Into::into).collect();
        if protocols.is_empty() {
            return Err(HostError::InvalidProtocol {
                protocol: String::new(),
                reason: "no protocol proposed",
            });
        }
        for p in &protocols {
            validate_protocol(p)?;
        }
        let handle = self.inner.connect(peer).await?;
        self.inner.open_stream_on(&handle, &protocols).await
    }

    /// Opens a stream to `peer` and proposes `protocol` without waiting for the peer's answer
    /// (multistream-select `V1Lazy`): the proposal and the first data travel together, so a
    /// request gets its answer one round trip sooner than with [`Host::new_stream`].
    ///
    /// The price: a peer that does not serve `protocol` is only known at the first read, which
    /// fails with [`std::io::ErrorKind::Unsupported`] (and what was written is lost), not with
    /// [`HostError::ProtocolNotSupported`] here. Use it for protocols the peer is known to serve.
    pub async fn new_stream_optimistic(
        &self,
        peer: PeerId,
        protocol: impl Into<String>,
    ) -> Result<Stream, HostError> {
        let protocol = protocol.into();
        validate_protocol(&protocol)?;
        let handle = self.inner.connect(peer).await?;
        let guard = StreamGuard::new(self.inner.metrics.clone());
        let timeout = self.inner.config.negotiation_timeout;
        let open = async {
            let substream = handle.open_substream().await?;
            Stream::optimistic(substream, protocol, peer, handle.id, guard)
                .await
                .map_err(|e| HostError::Negotiation {
                    peer,
                    reason: e.to_string(),
                })
        };
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| HostError::Timeout {
                operation: "protocol negotiation",
                after: timeout,
            })?
    }

    /// Plugs in (or, with `None`, removes) the [`crate::PeerRouting`] the host asks for a peer's
    /// addresses when it has none: `connect`, `new_stream` and a dial to `/p2p/<id>` then work
    /// with the id alone. The host lets go of it at [`Host::shutdown`].
    pub fn set_peer_routing(&self, routing: Option<Arc<dyn crate::PeerRouting>>) {
        *self.inner.peer_routing.lock() = routing;
    }

    /// Makes sure we are connected to `peer`, dialing its known addresses if needed.
    pub async fn connect(&self, peer: PeerId) -> Result<(), HostError> {
        self.inner.connect(peer).await.map(drop)
    }

    /// Dials `addr`. With a `/p2p/<id>` suffix the peer that answers must be that peer, an
    /// existing connection to it is reused and concurrent dials to it are coalesced.
    ///
    /// `addr` is `/ip4|ip6/<ip>/tcp/<port>`, `/ip4|ip6/<ip>/udp/<port>/quic-v1`, or the same
    /// with `/dns|dns4|dns6/<name>`: the name is resolved by the system resolver (within the dial
    /// timeout) and its addresses of that family are tried in order. `/dnsaddr` (TXT records) is
    /// not resolved. `/p2p/<id>` alone dials the peer's known addresses, or those its
    /// [`crate::PeerRouting`] finds.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, HostError> {
        self.inner.dial(addr).await
    }

    /// Starts listening on `addr` (`/ip4|ip6/<ip>/tcp/<port>`; port 0 picks a free port) and
    /// returns the address actually bound.
    pub async fn listen_on(&self, addr: Multiaddr) -> Result<Multiaddr, HostError> {
        self.inner.listen_on(addr).await
    }

    /// Stops the listener bound to (or asked for) `addr`. Returns whether one was found.
    pub fn close_listener(&self, addr: &Multiaddr) -> bool {
        self.inner.close_listener(addr)
    }

    /// The addresses this host listens on.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner
            .listeners
            .lock()
            .values()
            .flat_map(|l| l.addrs.clone())
            .collect()
    }

    /// Our own addresses as peers reported seeing them (through identify), most recent first.
    pub fn observed_addrs(&self) -> Vec<Multiaddr> {
        self.inner.observed_addrs.lock().clone()
    }

    /// Measures the round-trip time to `peer` with `/ipfs/ping/1.0.0`.
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, HostError> {
        let stream = self.new_stream(peer, [ping::PROTOCOL]).await?;
        ping::ping(stream, self.inner.config.negotiation_timeout).await
    }

    /// The peers we have at least one live connection with.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.inner.connections.lock().keys().copied().collect()
    }

    /// Whether we have a live connection with `peer`.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.inner.connections.lock().contains_key(peer)
    }

    /// The live connections (to `peer`, or to everyone).
    pub fn connections(&self, peer: Option<&PeerId>) -> Vec<ConnectionInfo> {
        let conns = self.inner.connections.lock();
        conns
            .iter()
            .filter(|(p, _)| peer.is_none_or(|want| want == *p))
            .flat_map(|(_, hs)| hs.iter())
            .map(|h| ConnectionInfo {
                id: h.id,
                peer: h.peer,
                direction: h.direction,
                remote_addr: h.remote_addr.clone(),
                open_streams: h.open_streams(),
                transport: h.transport(),
            })
            .collect()
    }

    /// Closes every connection to `peer`. Returns how many were closed.
    pub fn close_peer(&self, peer: &PeerId) -> usize {
        let conns = self.inner.connections.lock();
        let Some(handles) = conns.get(peer) else {
            return 0;
        };
        for h in handles {
            h.close.cancel();
        }
        handles.len()
    }

    /// Protects `peer` from idle-connection closing until a matching [`Host::unprotect`].
    /// Protection is counted: each `protect` needs its own `unprotect`.
    pub fn protect(&self, peer: PeerId) {
        *self.inner.protected.lock().entry(peer).or_default() += 1;
    }

    /// Whether `peer` is protected (see [`Host::protect`]).
    pub fn is_protected(&self, peer: &PeerId) -> bool {
        self.inner.is_protected(peer)
    }

    /// Undoes one [`Host::protect`].
    pub fn unprotect(&self, peer: &PeerId) {
        let mut protected = self.inner.protected.lock();
        if let Some(n) = protected.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                protected.remove(peer);
            }
        }
    }

    /// Subscribes to connection events.
    pub fn events(&self) -> broadcast::Receiver<HostEvent> {
        self.inner.events.subscribe()
    }

    /// A snapshot of the host's counters and gauges.
    pub fn metrics(&self) -> HostMetrics {
        self.inner.metrics.snapshot()
    }

    /// How many tasks the host is running (0 after [`Host::shutdown`]).
    pub fn task_count(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Whether [`Host::shutdown`] has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.is_shut_down.load(Ordering::Acquire)
    }

    /// Closes listeners and connections and waits until every task the host spawned has ended.
    /// Idempotent; after it, every operation fails with [`HostError::ShutDown`].
    pub async fn shutdown(&self) {
        if !self.inner.is_shut_down.swap(true, Ordering::AcqRel) {
            tracing::info!(peer = %self.inner.peer_id, "host shutting down");
        }
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        // Callers still waiting for a coalesced dial learn that the host is gone.
        self.inner.pending_dials.lock().clear();
        self.inner.tasks.wait().await;
        // Every QUIC connection was closed by its task: let the endpoints say goodbye and go.
        self.inner.quic.close_all().await;
        // Handlers may hold host handles: dropping them breaks the reference cycle. They are
        // dropped after the table's lock is released, since they may own registrations.
        drop(self.inner.handlers.take_all());
        let routing = self.inner.peer_routing.lock().take();
        drop(routing);
        self.inner.listeners.lock().clear();
    }
}

impl HostInner {
    pub(crate) fn check_running(&self) -> Result<(), HostError> {
        if self.shutdown.is_cancelled() {
            return Err(HostError::ShutDown);
        }
        Ok(())
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Spawns a task the host owns; it is cancelled at shutdown and joined by it.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    pub(crate) fn emit(&self, event: HostEvent) {
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }

    pub(crate) fn is_protected(&self, peer: &PeerId) -> bool {
        self.protected.lock().contains_key(peer)
    }

    pub(crate) fn protocol_names(&self) -> Vec<String> {
        self.handlers.names()
    }

    /// Validates `protocol` and adds `handler` for it under a fresh registration id.
    pub(crate) fn add_handler<F, Fut>(&self, protocol: &str, handler: F) -> Result<u64, HostError>
    where
        F: Fn(InboundStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        validate_protocol(protocol)?;
        let handler: HandlerFn = Arc::new(move |s| Box::pin(handler(s)));
        let id = self.next_id();
        self.handlers
            .insert(protocol, id, handler, || self.check_running())?;
        Ok(id)
    }

    /// A live connection to `peer`, if any.
    pub(crate) fn connection_to(&self, peer: &PeerId) -> Option<ConnectionHandle> {
        self.connections
            .lock()
            .get(peer)
            .and_then(|hs| hs.iter().find(|h| !h.close.is_cancelled()).cloned())
    }

    /// Registers an established connection and starts its task, or refuses it over a limit.
    pub(crate) fn add_connection(
        self: &Arc<Self>,
        peer: PeerId,
        established: Established,
        direction: Direction,
        remote_addr: Multiaddr,
    ) -> Result<ConnectionHandle, HostError> {
        let limits = &self.config.limits;
        let (tx, rx) = mpsc::channel(connection::OPEN_CHANNEL_CAPACITY);
        let (handle, driver) = {
            let mut conns = self.connections.lock();
            self.check_running()?;
            let total: usize = conns.values().map(Vec::len).sum();
            let limit = if total >= limits.max_connections {
                Some(LimitKind::Connections)
            } else if conns.get(&peer).map_or(0, Vec::len) >= limits.max_connections_per_peer {
                Some(LimitKind::ConnectionsPerPeer)
            } else {
                None
            };
            if let Some(limit) = limit {
                Metrics::inc(&self.metrics.refused_connections);
                if self.warn_limiter.allow() {
                    tracing::warn!(%peer, %remote_addr, %limit, "connection refused: limit reached");
                }
                if let Established::Quic(conn) = &established {
                    conn.close(0u32.into(), b"connection limit");
                }
                return Err(HostError::LimitReached { limit });
            }
            let (muxer, driver) = match established {
                Established::Yamux(muxer) => {
                    let shared = Shared::new(p2pnet_yamux::Connection::new(
                        muxer.mode,
                        muxer.config.clone(),
                        std::time::Instant::now(),
                    ));
                    (
                        MuxerHandle::Yamux {
                            opener: tx,
                            shared: shared.clone(),
                        },
                        Driver::Yamux(muxer.io, shared, rx),
                    )
                }
                Established::Quic(conn) => {
                    let counts = Arc::default();
                    (
                        MuxerHandle::Quic {
                            conn: conn.clone(),
                            counts: Arc::clone(&counts),
                            max_outbound: limits.max_outbound_streams_per_connection,
                        },
                        Driver::Quic(conn, counts),
                    )
                }
            };
            let handle = ConnectionHandle {
                id: ConnectionId(self.next_id()),
                peer,
                direction,
                remote_addr: remote_addr.clone(),
                close: self.shutdown.child_token(),
                muxer,
            };
            conns.entry(peer).or_default().push(handle.clone());
            match direction {
                Direction::Inbound => &self.metrics.connections_inbound,
                Direction::Outbound => &self.metrics.connections_outbound,
            }
            .fetch_add(1, Ordering::Relaxed);
            (handle, driver)
        };
        tracing::debug!(%peer, conn = %handle.id, ?direction, %remote_addr, "connection established");
        // The connection task watches its own token (a child of the shutdown token) so that it
        // can say goodbye to the peer before it ends.
        match driver {
            Driver::Yamux(io, shared, rx) => self.tasks.spawn(connection::run(
                self.clone(),
                handle.clone(),
                io,
                shared,
                rx,
            )),
            Driver::Quic(conn, counts) => self.tasks.spawn(connection::run_quic(
                self.clone(),
                handle.clone(),
                conn,
                counts,
            )),
        };
        self.emit(HostEvent::Connected {
            peer,
            connection: handle.id,
            direction,
            remote_addr,
        });
        if self.config.identify {
            let inner = self.clone();
            let h = handle.clone();
            self.spawn(async move { identify::request(inner, h).await });
        }
        Ok(handle)
    }

    /// Forgets a connection whose task has ended.
    pub(crate) fn remove_connection(&self, handle: &ConnectionHandle) {
        let remaining = {
            let mut conns = self.connections.lock();
            let Some(list) = conns.get_mut(&handle.peer) else {
                return;
            };
            let before = list.len();
            list.retain(|h| h.id != handle.id);
            if list.len() == before {
                return;
            }
            let remaining = list.len();
            if remaining == 0 {
                conns.remove(&handle.peer);
            }
            remaining
        };
        match handle.direction {
            Direction::Inbound => &self.metrics.connections_inbound,
            Direction::Outbound => &self.metrics.connections_outbound,
        }
        .fetch_sub(1, Ordering::Relaxed);
        self.emit(HostEvent::Disconnected {
            peer: handle.peer,
            connection: handle.id,
            direction: handle.direction,
            remote_addr: handle.remote_addr.clone(),
            remaining,
        });
    }

    /// Called by a connection task for each stream the peer opens (within the muxer's limit).
    pub(crate) fn on_inbound_substream(
        self: &Arc<Self>,
        handle: &ConnectionHandle,
        substream: MuxStream,
    ) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let guard = StreamGuard::new(self.metrics.clone());
        let inner = self.clone();
        let peer = handle.peer;
        let conn = handle.id;
        let remote_addr = handle.remote_addr.clone();
        self.spawn(async move {
            let mut substream = substream;
            let names = inner.protocol_names();
            // Negotiation runs over a borrow: with multistream-select V1 it completes with
            // nothing left buffered in its wrapper, so the stream is used bare afterwards.
            let negotiation = tokio::time::timeout(
                inner.config.negotiation_timeout,
                multistream_select::listener_select_proto(&mut substream, names),
            )
            .await;
            let protocol = match negotiation {
                Ok(Ok((protocol, _negotiated))) => protocol,
                Ok(Err(e)) => {
                    Metrics::inc(&inner.metrics.failed_negotiations);
                    tracing::debug!(%peer, %conn, error = %e, "inbound stream negotiation failed");
                    return;
                }
                Err(_) => {
                    Metrics::inc(&inner.metrics.failed_negotiations);
                    tracing::debug!(%peer, %conn, "inbound stream negotiation timed out");
                    return;
                }
            };
            let Some(handler) = inner.handlers.get(&protocol) else {
                tracing::debug!(%peer, %protocol, "handler removed during negotiation");
                return;
            };
            let stream = Stream::new(substream, protocol.clone(), peer, conn, guard);
            handler(InboundStream {
                stream,
                peer,
                protocol,
                remote_addr,
            })
            .await;
        });
    }

    /// Opens a substream on `handle` and negotiates one of `protocols` as the dialer.
    pub(crate) async fn open_stream_on(
        &self,
        handle: &ConnectionHandle,
        protocols: &[String],
    ) -> Result<Stream, HostError> {
        let guard = StreamGuard::new(self.metrics.clone());
        let timeout = self.config.negotiation_timeout;
        let timed_out = || HostError::Timeout {
            operation: "protocol negotiation",
            after: timeout,
        };
        let peer = handle.peer;
        let negotiate = async {
            // The muxer takes the stream limit: over it, this fails and nothing else is touched.
            let mut substream = handle.open_substream().await?;
            // V1 (not V1Lazy): negotiation is complete, nothing buffered, when this returns.
            let protocol = multistream_select::dialer_select_proto(
                &mut substream,
                protocols.iter(),
                Version::V1,
            )
            .await
            .map(|(protocol, _negotiated)| protocol.clone());
            protocol
                .map(|protocol| (protocol, substream))
                .map_err(|e| match e {
                    NegotiationError::Failed => HostError::ProtocolNotSupported {
                        peer,
                        protocols: protocols.to_vec(),
                    },
                    NegotiationError::ProtocolError(e) => HostError::Negotiation {
                        peer,
                        reason: e.to_string(),
                    },
                })
        };
        let (protocol, io) = tokio::time::timeout(timeout, negotiate)
            .await
            .map_err(|_| timed_out())??;
        Ok(Stream::new(io, protocol, peer, handle.id, guard))
    }
}

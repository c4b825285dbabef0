//! [`Forwarder`]: sets up local and remote listeners on a [`Host`] and bridges every
//! connection and stream they receive.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use p2pnet_host::{Host, HostError, InboundStream, Multiaddr, PeerId, Protocol, Stream};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bridge::{self, BridgeEnd};
use crate::endpoint::{self, Endpoint, LocalConn, LocalListener};
use crate::limits::{RefusedStreams, StreamLimits, StreamPermit};
use crate::registry::{
    Counters, Direction, ListenerFilter, ListenerInfo, ListenerRegistry, ListenerStop, Origin,
    StreamId, StreamInfo, StreamRegistry,
};
use crate::{ForwardConfig, ForwardError};

/// Options of a remote listener ([`Forwarder::listen`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenOptions {
    /// Before any data, write the remote peer id and a newline to the target (kubo's
    /// behaviour), so the service can authorise by peer. Default `false`.
    pub report_peer_id: bool,
    /// Only these peers may use the listener; streams from others are reset before the target
    /// is dialed. `None` (the default) allows every peer.
    pub allowed_peers: Option<HashSet<PeerId>>,
}

/// What [`Forwarder::close_listeners`] does with the streams the closed listeners started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingStreams {
    /// They run on until they end by themselves (the default).
    #[default]
    Keep,
    /// They are reset on both sides too.
    Close,
}

/// Tunnels TCP and Unix-socket services between peers over libp2p streams, as kubo's
/// `ipfs p2p` does. A cheap handle: clone it freely; call [`Forwarder::shutdown`] to stop it.
#[derive(Clone, Debug)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    host: Host,
    config: ForwardConfig,
    listeners: ListenerRegistry,
    streams: Arc<StreamRegistry>,
    limits: Arc<StreamLimits>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Forwarder {
    /// A forwarder on `host`. It forwards nothing until asked.
    pub fn new(host: Host, config: ForwardConfig) -> Self {
        let limits = Arc::new(StreamLimits::new(&config));
        Self {
            inner: Arc::new(Inner {
                host,
                config,
                listeners: ListenerRegistry::default(),
                streams: Arc::default(),
                limits,
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The host this forwarder runs on.
    pub fn host(&self) -> &Host {
        &self.inner.host
    }

    /// The configuration.
    pub fn config(&self) -> &ForwardConfig {
        &self.inner.config
    }

    /// The listener registry.
    pub fn listeners(&self) -> &ListenerRegistry {
        &self.inner.listeners
    }

    /// The stream registry.
    pub fn streams(&self) -> &StreamRegistry {
        &self.inner.streams
    }

    /// Binds a local listener on `listen_addr` (`/ip4|ip6/<ip>/tcp/<port>`, port 0 picks a free
    /// port, or `/unix/<path>`, see [`crate::unix_multiaddr`]); each connection it accepts is
    /// tunnelled to `peer` on `protocol`. Returns the listener, with the address actually bound.
    ///
    /// If the stream cannot be opened (peer unreachable, protocol not served, dial timeout), the
    /// local connection is reset at once and the reason logged with the peer and protocol.
    pub async fn forward(
        &self,
        protocol: &str,
        listen_addr: Multiaddr,
        peer: PeerId,
    ) -> Result<ListenerInfo, ForwardError> {
        let inner = &self.inner;
        inner.check_running()?;
        inner.config.check_protocol(protocol)?;
        let endpoint = Endpoint::parse(&listen_addr)?;
        let wildcard_port = matches!(endpoint, Endpoint::Tcp(sa) if sa.port() == 0);
        if !wildcard_port
            && inner
                .listeners
                .with_lock(|v| v.endpoint_forwarded(&endpoint))
        {
            return Err(ForwardError::ListenAddrInUse(listen_addr));
        }
        let listener = LocalListener::bind(&endpoint, &listen_addr).await?;
        let bound = listener.local_endpoint().map_err(|e| ForwardError::Bind {
            addr: listen_addr.clone(),
            source: Arc::new(e),
        })?;
        let info = ListenerInfo {
            id: inner.listeners.next_id(),
            protocol: protocol.to_owned(),
            listen_addr: bound.to_multiaddr(),
            target_addr: Multiaddr::empty().with(Protocol::P2p(peer)),
            direction: Direction::Local,
        };
        let cancel = inner.shutdown.child_token();
        inner.listeners.with_lock(|v| {
            if v.endpoint_forwarded(&bound) {
                return Err(ForwardError::ListenAddrInUse(info.listen_addr.clone()));
            }
            v.insert(
                info.clone(),
                Some(bound),
                ListenerStop::Accept(cancel.clone()),
            );
            Ok(())
        })?;
        tracing::info!(listener = %info.id, %protocol, addr = %info.listen_addr, %peer, "forwarding");
        inner.tasks.spawn(accept_loop(
            inner.clone(),
            listener,
            info.clone(),
            peer,
            cancel,
        ));
        Ok(info)
    }

    /// Registers `protocol` on the host; each inbound stream on it is connected to `target_addr`
    /// (`/ip4|ip6/<ip>/tcp/<port>` or `/unix/<path>`) and bridged.
    pub fn listen(
        &self,
        protocol: &str,
        target_addr: Multiaddr,
        options: ListenOptions,
    ) -> Result<ListenerInfo, ForwardError> {
        let inner = &self.inner;
        inner.check_running()?;
        inner.config.check_protocol(protocol)?;
        let target = Endpoint::parse(&target_addr)?;
        let info = ListenerInfo {
            id: inner.listeners.next_id(),
            protocol: protocol.to_owned(),
            listen_addr: Multiaddr::empty().with(Protocol::P2p(inner.host.peer_id())),
            target_addr,
            direction: Direction::Remote,
        };
        let handler = Handler {
            inner: Arc::downgrade(inner),
            info: Arc::new(info.clone()),
            target: Arc::new(target),
            options: Arc::new(options),
        };
        inner.listeners.with_lock(|v| {
            if v.protocol_listened(protocol) {
                return Err(ForwardError::ProtocolInUse(protocol.to_owned()));
            }
            let registration = inner
                .host
                .set_stream_handler(protocol, move |s| handler.clone().handle(s))
                .map_err(|e| match e {
                    HostError::ProtocolTaken { protocol } => {
                        ForwardError::ReservedProtocol(protocol)
                    }
                    other => ForwardError::Host(other),
                })?;
            v.insert(info.clone(), None, ListenerStop::Handler(registration));
            Ok(())
        })?;
        tracing::info!(listener = %info.id, %protocol, target = %info.target_addr, "listening");
        Ok(info)
    }

    /// All listeners, ordered by id.
    pub fn list_listeners(&self) -> Vec<ListenerInfo> {
        self.inner.listeners.list()
    }

    /// All bridged streams, ordered by id, with live byte counters.
    pub fn list_streams(&self) -> Vec<StreamInfo> {
        self.inner.streams.list()
    }

    /// How many streams and local connections the stream caps of [`ForwardConfig`] have
    /// refused since the forwarder started, per cap.
    pub fn refused_streams(&self) -> RefusedStreams {
        self.inner.limits.refused()
    }

    /// Closes the listeners matching `filter` and returns how many were closed. Closed
    /// listeners take no new connections or streams; the streams they started run on or are
    /// reset as `streams` says.
    pub fn close_listeners(&self, filter: &ListenerFilter, streams: ExistingStreams) -> usize {
        let closed = self.inner.close_listeners(filter);
        if streams == ExistingStreams::Close {
            self.inner.streams.close_matching(filter);
        }
        closed
    }

    /// Resets the stream `id` on both sides (TCP reset and stream reset). Returns whether it
    /// existed; it leaves the registry once its bridge has stopped.
    pub fn close_stream(&self, id: StreamId) -> bool {
        self.inner.streams.close(id)
    }

    /// Resets every stream started by a listener matching `filter`; returns how many.
    pub fn close_streams(&self, filter: &ListenerFilter) -> usize {
        self.inner.streams.close_matching(filter)
    }

    /// Closes every listener, resets every stream and waits until every task the forwarder
    /// spawned has ended. Idempotent; afterwards `forward` and `listen` fail with
    /// [`ForwardError::ShutDown`].
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.cancel();
        inner.close_listeners(&ListenerFilter::all());
        inner.streams.close_matching(&ListenerFilter::all());
        inner.tasks.close();
        inner.tasks.wait().await;
        tracing::debug!(peer = %inner.host.peer_id(), "forwarder shut down");
    }
}

impl Inner {
    fn check_running(&self) -> Result<(), ForwardError> {
        if self.shutdown.is_cancelled() {
            return Err(ForwardError::ShutDown);
        }
        Ok(())
    }

    fn close_listeners(&self, filter: &ListenerFilter) -> usize {
        let taken = self.listeners.take_matching(filter);
        let closed = taken.len();
        for (info, stop) in taken {
            // A local listener's accept loop is cancelled; a remote listener's stream handler
            // goes with its registration.
            stop.stop();
            tracing::info!(listener = %info.id, protocol = %info.protocol, "listener closed");
        }
        closed
    }

    /// A slot for one more bridged stream of `listener` (from `remote_peer` if it came in
    /// through a `listen` listener), or the cap that refuses it (counted, and warned about at
    /// most once a second).
    fn permit(
        &self,
        listener: &ListenerInfo,
        remote_peer: Option<PeerId>,
    ) -> Result<StreamPermit, ForwardError> {
        let r = self.limits.try_acquire(listener.id, remote_peer);
        if let Err(e) = &r
            && self.limits.may_warn()
        {
            let refused = self.limits.refused();
            match remote_peer {
                Some(peer) => {
                    tracing::warn!(listener = %listener.id, protocol = %listener.protocol, %peer, error = %e, ?refused, "stream refused")
                }
                None => {
                    tracing::warn!(listener = %listener.id, protocol = %listener.protocol, error = %e, ?refused, "local connection refused")
                }
            }
        }
        r
    }

    /// Bridges and keeps the stream registered and its peer protected while it runs.
    async fn bridge(
        &self,
        local: LocalConn,
        remote: Stream,
        info: StreamInfo,
        listener: &ListenerInfo,
    ) {
        let peer = info.remote_peer;
        let counters = Arc::new(Counters::new());
        let cancel = self.shutdown.child_token();
        let registration =
            self.streams
                .register(info, listener.clone(), counters.clone(), cancel.clone());
        let _protection = Protection::new(&self.host, peer);
        let id = registration.id();
        tracing::debug!(stream = %id, listener = %listener.id, %peer, protocol = %listener.protocol, "stream bridged");
        let end = bridge::run(
            local,
            remote,
            counters,
            self.config.effective_buffer_size(),
            self.config.idle_timeout,
            cancel,
        )
        .await;
        match end {
            BridgeEnd::Completed {
                bytes_in,
                bytes_out,
            } => {
                tracing::debug!(stream = %id, %peer, bytes_in, bytes_out, "stream ended")
            }
            BridgeEnd::Failed(e) => {
                tracing::debug!(stream = %id, %peer, error = %e, "stream aborted after an error")
            }
            BridgeEnd::Closed => tracing::debug!(stream = %id, %peer, "stream closed on request"),
            BridgeEnd::Idle => tracing::debug!(stream = %id, %peer, "stream reset: idle timeout"),
        }
    }
}

/// Protects a peer from idle-connection closing while a stream to it is bridged.
struct Protection {
    host: Host,
    peer: PeerId,
}

impl Protection {
    fn new(host: &Host, peer: PeerId) -> Self {
        host.protect(peer);
        Self {
            host: host.clone(),
            peer,
        }
    }
}

impl Drop for Protection {
    fn drop(&mut self) {
        self.host.unprotect(&self.peer);
    }
}

async fn accept_loop(
    inner: Arc<Inner>,
    listener: LocalListener,
    info: ListenerInfo,
    peer: PeerId,
    cancel: CancellationToken,
) {
    let info = Arc::new(info);
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        let (conn, from) = match accepted {
            Ok(ok) => ok,
            Err(e) => {
                // Per-connection errors (the client gave up, out of descriptors): go on, after
                // a pause so that a persistent error cannot spin.
                tracing::warn!(listener = %info.id, error = %e, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => continue,
                }
            }
        };
        let Ok(permit) = inner.permit(&info, None) else {
            tracing::debug!(listener = %info.id, %from, "local connection reset: stream limit");
            conn.abort();
            continue;
        };
        let inner2 = inner.clone();
        let info = info.clone();
        inner.tasks.spawn(async move {
            let _permit = permit;
            forward_one(&inner2, conn, from, &info, peer).await;
        });
    }
    drop(listener); // closes the socket, removes a Unix socket file
    inner.listeners.remove(info.id);
    tracing::debug!(listener = %info.id, "accept loop ended");
}

async fn forward_one(
    inner: &Inner,
    conn: LocalConn,
    from: Multiaddr,
    listener: &ListenerInfo,
    peer: PeerId,
) {
    let protocol = listener.protocol.as_str();
    let timeout = inner.config.dial_timeout;
    let open = tokio::select! {
        _ = inner.shutdown.cancelled() => {
            conn.abort();
            return;
        }
        r = tokio::time::timeout(timeout, inner.host.new_stream(peer, [protocol])) => r,
    };
    let stream = match open {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, %protocol, %from, error = %e, "cannot open forwarded stream; closing local connection");
            conn.abort();
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, %protocol, %from, ?timeout, "opening forwarded stream timed out; closing local connection");
            conn.abort();
            return;
        }
    };
    let remote_addr = inner
        .host
        .connections(Some(&peer))
        .into_iter()
        .find(|c| c.id == stream.connection())
        .map(|c| c.remote_addr)
        .unwrap_or_else(|| Multiaddr::empty().with(Protocol::P2p(peer)));
    let info = StreamInfo {
        id: StreamId(0),
        listener: listener.id,
        protocol: protocol.to_owned(),
        origin: Origin::Local,
        local_addr: from,
        remote_peer: peer,
        remote_addr,
        bytes_in: 0,
        bytes_out: 0,
        opened_at: SystemTime::now(),
    };
    inner.bridge(conn, stream, info, listener).await;
}

/// The stream handler of a remote listener. Holds the forwarder weakly so that the host's
/// handler table does not keep it alive.
#[derive(Clone)]
struct Handler {
    inner: Weak<Inner>,
    info: Arc<ListenerInfo>,
    target: Arc<Endpoint>,
    options: Arc<ListenOptions>,
}

impl Handler {
    async fn handle(self, s: InboundStream) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let peer = s.peer;
        let protocol = &self.info.protocol;
        if let Some(allowed) = &self.options.allowed_peers
            && !allowed.contains(&peer)
        {
            tracing::warn!(listener = %self.info.id, %peer, %protocol, "stream refused: peer not allowed");
            s.stream.reset();
            return;
        }
        if inner.shutdown.is_cancelled() {
            return;
        }
        let Ok(permit) = inner.permit(&self.info, Some(peer)) else {
            s.stream.reset();
            return;
        };
        // The bridge runs on the forwarder's own tasks, so that its shutdown joins it.
        let tasks = inner.tasks.clone();
        tasks.spawn(async move {
            let _permit = permit;
            self.serve(&inner, s).await;
        });
    }

    async fn serve(&self, inner: &Inner, s: InboundStream) {
        let peer = s.peer;
        let protocol = &self.info.protocol;
        let timeout = inner.config.dial_timeout;
        let connect = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            r = tokio::time::timeout(timeout, endpoint::connect(&self.target)) => r,
        };
        let mut conn = match connect {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(listener = %self.info.id, %peer, %protocol, target = %self.info.target_addr, error = %e, "cannot connect to target; resetting stream");
                return;
            }
            Err(_) => {
                tracing::warn!(listener = %self.info.id, %peer, %protocol, target = %self.info.target_addr, ?timeout, "connecting to target timed out; resetting stream");
                return;
            }
        };
        if self.options.report_peer_id {
            let line = format!("{peer}\n");
            if let Err(e) = conn.write_all(line.as_bytes()).await {
                tracing::warn!(listener = %self.info.id, %peer, error = %e, "cannot write peer id to target");
                conn.abort();
                return;
            }
        }
        let info = StreamInfo {
            id: StreamId(0),
            listener: self.info.id,
            protocol: protocol.clone(),
            origin: Origin::Remote,
            local_addr: self.info.target_addr.clone(),
            remote_peer: peer,
            remote_addr: s.remote_addr,
            bytes_in: 0,
            bytes_out: 0,
            opened_at: SystemTime::now(),
        };
        inner.bridge(conn, s.stream, info, &self.info).await;
    }
}

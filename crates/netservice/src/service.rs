//! [`NetService`]: composes host, dispatcher, messaging and forwarding; orders start and stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use p2pnet_dispatcher::{
    Dispatcher, DispatcherMetrics, Subscriber, SubscriberHandle, SubscriberOptions,
};
use p2pnet_forward::{
    ExistingStreams, Forwarder, ListenOptions, ListenerFilter, ListenerInfo, StreamId, StreamInfo,
};
use p2pnet_host::{Host, HostEvent, HostMetrics, Multiaddr, PERMANENT_ADDR_TTL, PeerId};
use p2pnet_kad::Kademlia;
use p2pnet_messaging::{
    MessageKind, MessagingMetrics, Messenger, Priority, SendReport, SessionEvent,
};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::NetError;
use crate::config::{ForwardTunnel, ListenTunnel, NetConfig, parse_addr, parse_peer};
use crate::message::{DispatchSink, NetMessage};
use crate::metrics::{ComponentCollector, MetricsServer};
use crate::peers;

/// Something that happened in the service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NetEvent {
    /// A connection event from the host.
    Host(HostEvent),
    /// A message-session event.
    Session(SessionEvent),
}

/// A snapshot of every component's figures.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NetMetrics {
    /// The host's counters and gauges.
    pub host: HostMetrics,
    /// The dispatcher's.
    pub dispatcher: DispatcherMetrics<MessageKind>,
    /// Messaging's.
    pub messaging: MessagingMetrics,
    /// Forwarding listeners open.
    pub forward_listeners: usize,
    /// Forwarded streams open.
    pub forward_streams: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Stopped,
}

/// What `start` has brought up, so a failure can take exactly that down again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Dispatcher,
    Messaging,
    Discovery,
    Listeners,
    Metrics,
    Tunnels,
    PeerKeeping,
}

const EVENT_CAPACITY: usize = 1024;

struct Inner {
    config: NetConfig,
    host: Host,
    dispatcher: Dispatcher<NetMessage>,
    messenger: Arc<Messenger<DispatchSink>>,
    forwarder: Forwarder,
    registry: Arc<Mutex<Registry>>,
    phase: tokio::sync::Mutex<Phase>,
    tasks: TaskTracker,
    stop: CancellationToken,
    metrics_server: Mutex<Option<MetricsServer>>,
    kad: Arc<Mutex<Option<Kademlia>>>,
    kad_config: p2pnet_kad::KadConfig,
    runtime_forward: Mutex<Vec<ForwardTunnel>>,
    runtime_listen: Mutex<Vec<ListenTunnel>>,
    events: broadcast::Sender<NetEvent>,
}

/// A p2pnet node: a libp2p host, a message dispatcher, message sessions and TCP forwarding,
/// configured by one [`NetConfig`] and started and stopped in a fixed order.
///
/// Start: dispatcher → messaging (its stream handler) → discovery (the Kademlia DHT, plugged
/// into the host as its peer routing) → listeners → metrics endpoint → tunnels from the
/// configuration → bootstrap (dials, then a DHT lookup of our own id) and peer keeping. If a step fails, the steps already done
/// are undone in reverse order and the error is returned. Stop is the reverse; it joins every
/// task and is idempotent. A stopped service cannot be started again.
#[derive(Clone)]
pub struct NetService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NetService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetService")
            .field("peer_id", &self.inner.host.peer_id())
            .finish_non_exhaustive()
    }
}

impl NetService {
    /// Builds every component (nothing listens or dials yet). A relative `identity_key` is taken
    /// relative to the current directory; see [`NetService::new_in`].
    pub fn new(config: NetConfig) -> Result<NetService, NetError> {
        Self::new_in(config, Path::new("."))
    }

    /// Like [`NetService::new`], with a relative `identity_key` taken relative to `base_dir`.
    /// Must be called from within a tokio runtime.
    pub fn new_in(config: NetConfig, base_dir: &Path) -> Result<NetService, NetError> {
        config.validate()?;
        let keypair = match &config.identity_key {
            Some(path) => {
                let path: PathBuf = if path.is_relative() {
                    base_dir.join(path)
                } else {
                    path.clone()
                };
                p2pnet_host::load_or_generate_keypair(&path)?
            }
            None => p2pnet_host::generate_keypair(),
        };
        let host = Host::new(keypair, config.host_config())?;
        let mut kad_config = config.discovery.kad_config();
        if let Some(path) = &kad_config.route_cache
            && path.is_relative()
        {
            kad_config.route_cache = Some(base_dir.join(path));
        }
        let kad_slot: Arc<Mutex<Option<Kademlia>>> = Arc::default();
        let dispatcher = Dispatcher::new(config.dispatcher.clone())?;
        let messenger = Arc::new(Messenger::new(
            host.clone(),
            config.messaging.clone(),
            DispatchSink(dispatcher.sender()),
        ));
        let forwarder = Forwarder::new(host.clone(), config.forwarding.clone());
        let mut registry = Registry::default();
        dispatcher.register_metrics(&mut registry);
        registry.register_collector(Box::new(ComponentCollector {
            host: host.clone(),
            messenger: messenger.clone(),
            forwarder: forwarder.clone(),
            kad: kad_slot.clone(),
        }));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(NetService {
            inner: Arc::new(Inner {
                config,
                host,
                dispatcher,
                messenger,
                forwarder,
                registry: Arc::new(Mutex::new(registry)),
                phase: tokio::sync::Mutex::new(Phase::Created),
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
                metrics_server: Mutex::new(None),
                kad: kad_slot,
                kad_config,
                runtime_forward: Mutex::default(),
                runtime_listen: Mutex::default(),
                events,
            }),
        })
    }

    /// Starts the service (see the type's documentation for the order).
    pub async fn start(&self) -> Result<(), NetError> {
        let mut phase = self.inner.phase.lock().await;
        match *phase {
            Phase::Created => {}
            Phase::Running => return Err(NetError::AlreadyStarted),
            Phase::Stopped => return Err(NetError::Stopped),
        }
        let mut done = Vec::new();
        match self.start_stages(&mut done).await {
            Ok(()) => {
                *phase = Phase::Running;
                tracing::info!(peer = %self.peer_id(), "net service started");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, undone = ?done, "net service failed to start; undoing");
                self.stop_stages(&done).await;
                *phase = Phase::Stopped;
                Err(e)
            }
        }
    }

    async fn start_stages(&self, done: &mut Vec<Stage>) -> Result<(), NetError> {
        let inner = &self.inner;
        inner.dispatcher.start()?;
        done.push(Stage::Dispatcher);

        inner.messenger.start()?;
        done.push(Stage::Messaging);
        self.spawn_event_pump();

        if inner.config.discovery.enabled {
            // Before any connection: identify then tells every peer we serve the DHT.
            let kad = Kademlia::new(inner.host.clone(), inner.kad_config.clone())?;
            inner
                .host
                .set_peer_routing(Some(Arc::new(KadRouting(kad.clone()))));
            *inner.kad.lock() = Some(kad);
            done.push(Stage::Discovery);
        }

        done.push(Stage::Listeners);
        for (i, a) in inner.config.host.listen_addrs.iter().enumerate() {
            let addr = parse_addr(&format!("host.listen_addrs[{i}]"), a)?;
            inner.host.listen_on(addr).await?;
        }

        if let Some(addr) = &inner.config.metrics_addr {
            let server = MetricsServer::start(addr, inner.registry.clone())?;
            *inner.metrics_server.lock() = Some(server);
            done.push(Stage::Metrics);
        }

        done.push(Stage::Tunnels);
        for t in &inner.config.listen {
            self.open_listen_tunnel(t)?;
        }
        for t in &inner.config.forward {
            self.open_forward_tunnel(t).await?;
        }

        done.push(Stage::PeerKeeping);
        let mut bootstrap = Vec::new();
        for (i, b) in inner.config.bootstrap.iter().enumerate() {
            if let (peer, Some(addr)) = parse_peer(&format!("bootstrap[{i}]"), b)? {
                bootstrap.push((peer, addr));
            }
        }
        for (peer, addr) in &bootstrap {
            inner
                .host
                .peer_store()
                .add_addrs(*peer, [addr.clone()], PERMANENT_ADDR_TTL);
        }
        // Dial the bootstrap peers now, concurrently; an unreachable one is not a start failure
        // (the peer keeper retries it with backoff).
        let dials = bootstrap.iter().map(|(peer, _)| inner.host.connect(*peer));
        for ((peer, addr), result) in bootstrap.iter().zip(futures::future::join_all(dials).await) {
            match result {
                Ok(()) => tracing::info!(%peer, %addr, "connected to bootstrap peer"),
                Err(e) => {
                    tracing::warn!(%peer, %addr, error = %e, "bootstrap peer unreachable; will retry")
                }
            }
        }
        let kad = inner.kad.lock().clone();
        if let Some(kad) = kad.clone() {
            // Bootstrap peers are taken for DHT servers; then a lookup of our own id fills the
            // table around us (in the background: an empty network is not a start failure).
            for (peer, addr) in &bootstrap {
                if let Err(e) = kad.add_peer(*peer, vec![addr.clone()]).await {
                    tracing::debug!(%peer, error = %e, "bootstrap peer not added to the routing table");
                }
            }
            let stop = inner.stop.clone();
            inner.tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    r = kad.bootstrap() => match r {
                        Ok(found) => tracing::info!(peers = found.peers.len(), hops = found.stats.hops, "discovery bootstrapped"),
                        Err(e) => tracing::info!(error = %e, "discovery bootstrap found no peer yet"),
                    },
                }
            });
        }
        let keeper = peers::keep_peers(
            inner.host.clone(),
            kad,
            bootstrap,
            inner.config.peers.clone(),
            inner.stop.clone(),
        );
        inner.tasks.spawn(keeper);
        Ok(())
    }

    fn spawn_event_pump(&self) {
        let mut host_events = self.inner.host.events();
        let mut session_events = self.inner.messenger.events();
        let tx = self.inner.events.clone();
        let stop = self.inner.stop.clone();
        self.inner.tasks.spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    e = host_events.recv() => match e {
                        Ok(e) => NetEvent::Host(e),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    e = session_events.recv() => match e {
                        Ok(e) => NetEvent::Session(e),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                let _ = tx.send(event);
            }
        });
    }

    async fn stop_stages(&self, done: &[Stage]) {
        let inner = &self.inner;
        for stage in done.iter().rev() {
            match stage {
                Stage::PeerKeeping => {
                    inner.stop.cancel();
                    inner.tasks.close();
                    inner.tasks.wait().await;
                }
                Stage::Tunnels => inner.forwarder.shutdown().await,
                Stage::Metrics => {
                    let server = inner.metrics_server.lock().take();
                    if let Some(mut server) = server {
                        server.stop().await;
                    }
                }
                Stage::Listeners => {
                    for addr in inner.host.listen_addrs() {
                        inner.host.close_listener(&addr);
                    }
                }
                Stage::Discovery => {
                    inner.host.set_peer_routing(None);
                    let kad = inner.kad.lock().take();
                    if let Some(kad) = kad {
                        kad.shutdown().await;
                    }
                }
                Stage::Messaging => {
                    // Stop the event pump if peer keeping never started.
                    inner.stop.cancel();
                    inner.tasks.close();
                    inner.tasks.wait().await;
                    inner.messenger.shutdown().await;
                    // Connections go after the sessions had their goodbye.
                    inner.host.shutdown().await;
                }
                Stage::Dispatcher => inner.dispatcher.stop(),
            }
        }
        // Whatever was never started is released too.
        inner.host.set_peer_routing(None);
        let kad = inner.kad.lock().take();
        if let Some(kad) = kad {
            kad.shutdown().await;
        }
        inner.forwarder.shutdown().await;
        inner.host.shutdown().await;
        inner.dispatcher.stop();
    }

    /// Stops everything in the reverse order of [`NetService::start`] and joins every task.
    /// Idempotent; also fine on a service that was never started.
    pub async fn stop(&self) {
        let mut phase = self.inner.phase.lock().await;
        if *phase == Phase::Stopped {
            return;
        }
        let all = [
            Stage::Dispatcher,
            Stage::Messaging,
            Stage::Discovery,
            Stage::Listeners,
            Stage::Metrics,
            Stage::Tunnels,
            Stage::PeerKeeping,
        ];
        let done: &[Stage] = if *phase == Phase::Running { &all } else { &[] };
        self.stop_stages(done).await;
        *phase = Phase::Stopped;
        tracing::info!(peer = %self.peer_id(), "net service stopped");
    }

    /// Whether the service is running.
    pub async fn is_running(&self) -> bool {
        *self.inner.phase.lock().await == Phase::Running
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.host.peer_id()
    }

    /// The configuration.
    pub fn config(&self) -> &NetConfig {
        &self.inner.config
    }

    /// The host underneath (dial, streams, peer store…).
    pub fn host(&self) -> &Host {
        &self.inner.host
    }

    /// The dispatcher underneath.
    pub fn dispatcher(&self) -> &Dispatcher<NetMessage> {
        &self.inner.dispatcher
    }

    /// The forwarder underneath.
    pub fn forwarder(&self) -> &Forwarder {
        &self.inner.forwarder
    }

    /// The addresses this node listens on.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner.host.listen_addrs()
    }

    /// The Kademlia DHT, while the service runs with discovery enabled.
    pub fn kad(&self) -> Option<Kademlia> {
        self.inner.kad.lock().clone()
    }

    /// The Kademlia DHT, or [`NetError::DiscoveryDisabled`].
    pub fn discovery(&self) -> Result<Kademlia, NetError> {
        self.kad().ok_or(NetError::DiscoveryDisabled)
    }

    /// The address the metrics endpoint is bound to, when it runs.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.metrics_server.lock().as_ref().map(|s| s.addr)
    }

    /// Registers a subscriber for messages of `kinds`.
    pub fn register(
        &self,
        kinds: &[&str],
        options: SubscriberOptions,
    ) -> Result<Subscriber<NetMessage>, NetError> {
        let kinds = kinds
            .iter()
            .map(|k| MessageKind::new(k).map_err(|_| NetError::InvalidKind((*k).to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.inner.dispatcher.register(kinds, options)?)
    }

    /// Removes a subscriber.
    pub fn deregister(&self, handle: SubscriberHandle) -> Result<(), NetError> {
        Ok(self.inner.dispatcher.deregister(handle)?)
    }

    /// Queues a message for one peer with a message session.
    pub fn send_to_peer(
        &self,
        peer: &PeerId,
        kind: &str,
        payload: impl Into<Bytes>,
        priority: Priority,
    ) -> Result<(), NetError> {
        Ok(self
            .inner
            .messenger
            .send_to_peer(peer, kind, payload, priority)?)
    }

    /// Queues a message for every session peer `filter` accepts; says which were reached.
    pub fn send_to_peers(
        &self,
        filter: impl Fn(&PeerId) -> bool,
        kind: &str,
        payload: impl Into<Bytes>,
        priority: Priority,
    ) -> Result<SendReport, NetError> {
        Ok(self
            .inner
            .messenger
            .send_to_peers(filter, kind, payload, priority)?)
    }

    /// Queues a message for every session peer.
    pub fn broadcast(
        &self,
        kind: &str,
        payload: impl Into<Bytes>,
        priority: Priority,
    ) -> Result<SendReport, NetError> {
        Ok(self.inner.messenger.broadcast(kind, payload, priority)?)
    }

    /// Passes a received message on to every session peer that has not sent or been sent it.
    pub fn relay(&self, message: &NetMessage, priority: Priority) -> SendReport {
        self.inner.messenger.relay(&message.into(), priority)
    }

    /// Disconnects `peer`, logging why. Returns how many connections were closed.
    pub fn close_peer(&self, peer: &PeerId, reason: &str) -> usize {
        tracing::info!(%peer, reason, "closing peer");
        self.inner.host.close_peer(peer)
    }

    /// Peers with an open message session.
    pub fn peers(&self) -> Vec<PeerId> {
        self.inner.messenger.peers()
    }

    /// Subscribes to connection and session events.
    pub fn events(&self) -> broadcast::Receiver<NetEvent> {
        self.inner.events.subscribe()
    }

    /// A snapshot of every component's figures.
    pub fn metrics(&self) -> NetMetrics {
        NetMetrics {
            host: self.inner.host.metrics(),
            dispatcher: self.inner.dispatcher.metrics(),
            messaging: self.inner.messenger.metrics(),
            forward_listeners: self.inner.forwarder.list_listeners().len(),
            forward_streams: self.inner.forwarder.list_streams().len(),
        }
    }

    /// Every component's metrics in the Prometheus text format.
    pub fn prometheus_text(&self) -> String {
        crate::metrics::encode(&self.inner.registry.lock())
    }

    /// Resolves a peer given as a peer id or as a multiaddr ending in `/p2p/<id>`; the address
    /// of the latter is added to the peer store so the peer can be dialed by id (as `forward`
    /// and `connect` do). Returns the peer.
    pub fn add_peer(&self, peer: &str) -> Result<PeerId, NetError> {
        let (peer, addr) = parse_peer("peer", peer)?;
        if let Some(addr) = addr {
            self.inner
                .host
                .peer_store()
                .add_addrs(peer, [addr], PERMANENT_ADDR_TTL);
        }
        Ok(peer)
    }

    /// Whether a stream handler is registered for `protocol`.
    pub fn check_proto_exists(&self, protocol: &str) -> bool {
        self.inner.host.check_proto_exists(protocol)
    }

    fn open_listen_tunnel(&self, t: &ListenTunnel) -> Result<ListenerInfo, NetError> {
        let target = parse_addr("listen.target_addr", &t.target_addr)?;
        let allowed_peers = if t.allow.is_empty() {
            None
        } else {
            let peers = t
                .allow
                .iter()
                .map(|p| parse_peer("listen.allow", p).map(|(peer, _)| peer))
                .collect::<Result<_, _>>()?;
            Some(peers)
        };
        let options = ListenOptions {
            report_peer_id: t.report_peer_id,
            allowed_peers,
        };
        Ok(self.inner.forwarder.listen(&t.protocol, target, options)?)
    }

    async fn open_forward_tunnel(&self, t: &ForwardTunnel) -> Result<ListenerInfo, NetError> {
        let listen_addr = parse_addr("forward.listen_addr", &t.listen_addr)?;
        let (peer, addr) = parse_peer("forward.peer", &t.peer)?;
        if let Some(addr) = addr {
            self.inner
                .host
                .peer_store()
                .add_addrs(peer, [addr], PERMANENT_ADDR_TTL);
        }
        Ok(self
            .inner
            .forwarder
            .forward(&t.protocol, listen_addr, peer)
            .await?)
    }

    /// Forwards local connections to `listen_addr` to `peer` (a peer id, or an address ending in
    /// `/p2p/<id>`, which is added to the peer store) on `protocol`.
    pub async fn forward(
        &self,
        protocol: &str,
        listen_addr: &str,
        peer: &str,
    ) -> Result<ListenerInfo, NetError> {
        let tunnel = ForwardTunnel {
            protocol: protocol.to_owned(),
            listen_addr: listen_addr.to_owned(),
            peer: peer.to_owned(),
        };
        let info = self.open_forward_tunnel(&tunnel).await?;
        // Remember the bound address (port 0 resolved) for persisting.
        let mut saved = tunnel;
        saved.listen_addr = info.listen_addr.to_string();
        self.inner.runtime_forward.lock().push(saved);
        Ok(info)
    }

    /// Bridges streams on `protocol` to the local `target_addr`.
    pub fn listen(&self, tunnel: ListenTunnel) -> Result<ListenerInfo, NetError> {
        let info = self.open_listen_tunnel(&tunnel)?;
        self.inner.runtime_listen.lock().push(tunnel);
        Ok(info)
    }

    /// The forwarding listeners.
    pub fn list_listeners(&self) -> Vec<ListenerInfo> {
        self.inner.forwarder.list_listeners()
    }

    /// The forwarded streams, with live byte counters.
    pub fn list_streams(&self) -> Vec<StreamInfo> {
        self.inner.forwarder.list_streams()
    }

    /// Closes the listeners `filter` matches; returns how many.
    pub fn close_listeners(&self, filter: &ListenerFilter, streams: ExistingStreams) -> usize {
        let closed = self.inner.forwarder.close_listeners(filter, streams);
        let matches = |protocol: &str, addr: &str, target: bool| {
            filter.protocol.as_deref().is_none_or(|p| p == protocol)
                && (if target {
                    filter.target_addr.as_ref()
                } else {
                    filter.listen_addr.as_ref()
                })
                .is_none_or(|a| a.to_string() == addr)
                && (if target {
                    filter.listen_addr.is_none()
                } else {
                    filter.target_addr.is_none()
                })
        };
        self.inner
            .runtime_forward
            .lock()
            .retain(|t| !matches(&t.protocol, &t.listen_addr, false));
        self.inner
            .runtime_listen
            .lock()
            .retain(|t| !matches(&t.protocol, &t.target_addr, true));
        closed
    }

    /// Resets one forwarded stream.
    pub fn close_stream(&self, id: StreamId) -> bool {
        self.inner.forwarder.close_stream(id)
    }

    /// Writes the configuration to `path` with the tunnels added at run time included, so they
    /// come back after a restart. Keeps whatever else the file at `path` says; a new file holds
    /// the defaults, this node's identity key and the tunnels, so that settings given only for
    /// this run (a listen address from a command line, a fallback port) do not become permanent.
    pub fn persist_tunnels(&self, path: &Path) -> Result<(), NetError> {
        let mut config = if path.exists() {
            NetConfig::load(path)?
        } else {
            NetConfig {
                identity_key: self.inner.config.identity_key.clone(),
                forward: self.inner.config.forward.clone(),
                listen: self.inner.config.listen.clone(),
                ..NetConfig::default()
            }
        };
        for t in self.inner.runtime_forward.lock().iter() {
            if !config.forward.contains(t) {
                config.forward.push(t.clone());
            }
        }
        for t in self.inner.runtime_listen.lock().iter() {
            if !config.listen.contains(t) {
                config.listen.push(t.clone());
            }
        }
        let tmp = path.with_extension("tmp");
        let io = |source| NetError::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::write(&tmp, config.to_toml()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// The host's peer routing through the DHT: a peer with no known address is looked up by id.
struct KadRouting(Kademlia);

impl p2pnet_host::PeerRouting for KadRouting {
    fn find_addrs(&self, peer: PeerId) -> futures::future::BoxFuture<'static, Vec<Multiaddr>> {
        let kad = self.0.clone();
        Box::pin(async move {
            match kad.find_peer(peer).await {
                Ok(found) => found.addrs,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "peer not found in the DHT");
                    Vec::new()
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn persisting_to_a_new_file_keeps_the_identity_and_tunnels_not_run_settings() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NetConfig {
            identity_key: Some(dir.path().join("id.key")),
            bootstrap: vec![format!(
                "/ip4/192.0.2.1/tcp/4001/p2p/{}",
                p2pnet_host::generate_keypair().public().to_peer_id()
            )],
            ..NetConfig::default()
        };
        config.host.listen_addrs = vec!["/ip4/127.0.0.1/tcp/0".into()];
        let svc = NetService::new(config.clone()).unwrap();
        let listen = ListenTunnel {
            protocol: "/x/kept".into(),
            target_addr: "/ip4/127.0.0.1/tcp/22".into(),
            report_peer_id: false,
            allow: vec![],
        };
        svc.listen(listen.clone()).unwrap();
        let path = dir.path().join("p2pnet.toml");
        svc.persist_tunnels(&path).unwrap();
        let saved = NetConfig::load(&path).unwrap();
        assert_eq!(saved.identity_key, config.identity_key);
        assert_eq!(saved.listen, vec![listen]);
        assert_eq!(
            saved.host.listen_addrs,
            NetConfig::default().host.listen_addrs
        );
        assert!(saved.bootstrap.is_empty());
        svc.stop().await;
    }

    #[tokio::test]
    async fn add_peer_takes_an_id_or_an_address_and_remembers_the_address() {
        let svc = NetService::new(NetConfig::default()).unwrap();
        let other = p2pnet_host::generate_keypair().public().to_peer_id();
        assert_eq!(svc.add_peer(&other.to_string()).unwrap(), other);
        assert!(svc.host().peer_store().addrs(&other).is_empty());
        let addr = format!("/ip4/192.0.2.1/tcp/4001/p2p/{other}");
        assert_eq!(svc.add_peer(&addr).unwrap(), other);
        assert_eq!(
            svc.host().peer_store().addrs(&other),
            vec!["/ip4/192.0.2.1/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        let err = svc.add_peer("/ip4/192.0.2.1/tcp/4001").unwrap_err();
        assert!(err.to_string().contains("/p2p/"), "{err}");
        svc.stop().await;
    }
}

//! Listeners: one task per listen address owns its transport and accepts connections.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use libp2p_core::transport::{ListenerId, Transport as _, TransportError, TransportEvent};
use multiaddr::Multiaddr;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::connection::{Direction, Established};
use crate::dial::error_chain;
use crate::host::HostInner;
use crate::metrics::Metrics;
use crate::transport::{self, BoxedTransport};
use crate::{HostError, LimitKind, addr, quic};

/// What the host keeps about one listener.
#[derive(Debug)]
pub(crate) struct ListenerEntry {
    /// The address the user asked for.
    pub(crate) requested: Multiaddr,
    /// The addresses actually bound (several for an unspecified IP).
    pub(crate) addrs: Vec<Multiaddr>,
    pub(crate) close: CancellationToken,
}

/// The kind of the innermost `io::Error` in an error chain, so that "address in use" stays
/// recognisable through the transport's wrappers.
fn root_io_kind(err: &(dyn std::error::Error + 'static)) -> io::ErrorKind {
    let mut kind = io::ErrorKind::Other;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(ioe) = e.downcast_ref::<io::Error>()
            && ioe.kind() != io::ErrorKind::Other
        {
            kind = ioe.kind();
        }
        current = e.source();
    }
    kind
}

/// libp2p-tcp binds listeners with `SO_REUSEPORT`, which would let a second listener share a
/// port that is already taken (and the kernel split connections between them). A plain bind
/// first turns that into the "address in use" error a user expects.
fn check_port_free(addr: &Multiaddr) -> Result<(), HostError> {
    let mut iter = addr.iter();
    let ip: std::net::IpAddr = match iter.next() {
        Some(multiaddr::Protocol::Ip4(ip)) => ip.into(),
        Some(multiaddr::Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let Some(multiaddr::Protocol::Tcp(port)) = iter.next() else {
        return Ok(());
    };
    if port == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind((ip, port))
        .map(drop)
        .map_err(|e| HostError::ListenFailed {
            addr: addr.clone(),
            source: Arc::new(e),
        })
}

/// Decrements the pending-handshake gauge when an inbound upgrade ends, however it ends.
struct PendingGuard(Arc<HostInner>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending_incoming.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HostInner {
    pub(crate) async fn listen_on(
        self: &Arc<Self>,
        addr: Multiaddr,
    ) -> Result<Multiaddr, HostError> {
        self.check_running()?;
        if let Some(socket) = quic::socket_addr(&addr) {
            return self.listen_quic(addr, socket).await;
        }
        if !addr::is_tcp(&addr) {
            return Err(HostError::InvalidAddress {
                addr,
                reason: "expected /ip4|ip6/<ip>/tcp/<port> or /ip4|ip6/<ip>/udp/<port>/quic-v1"
                    .into(),
            });
        }
        check_port_free(&addr)?;
        let mut transport = transport::build(
            &self.keypair,
            &self.config.limits,
            self.config.handshake_timeout,
            self.config.yamux_split_send_size,
        )?;
        transport
            .listen_on(ListenerId::next(), addr.clone())
            .map_err(|e| match e {
                TransportError::MultiaddrNotSupported(a) => HostError::InvalidAddress {
                    addr: a,
                    reason: "not a listenable address".into(),
                },
                TransportError::Other(e) => HostError::ListenFailed {
                    addr: addr.clone(),
                    source: Arc::new(io::Error::new(root_io_kind(&e), error_chain(&e))),
                },
            })?;
        let id = self.next_id();
        let close = self.shutdown.child_token();
        self.listeners.lock().insert(
            id,
            ListenerEntry {
                requested: addr.clone(),
                addrs: Vec::new(),
                close: close.clone(),
            },
        );
        let (bound_tx, bound_rx) = oneshot::channel();
        self.tasks
            .spawn(self.clone().run_listener(id, transport, close, bound_tx));
        match bound_rx.await {
            Ok(bound) => {
                tracing::info!(requested = %addr, address = %bound, "listening");
                Ok(bound)
            }
            Err(_) => Err(HostError::ListenFailed {
                addr,
                source: Arc::new(io::Error::other(
                    "listener closed before reporting an address",
                )),
            }),
        }
    }

    pub(crate) fn close_listener(&self, addr: &Multiaddr) -> bool {
        let listeners = self.listeners.lock();
        let mut found = false;
        for l in listeners.values() {
            if l.requested == *addr || l.addrs.contains(addr) {
                l.close.cancel();
                found = true;
            }
        }
        found
    }

    async fn run_listener(
        self: Arc<Self>,
        id: u64,
        mut transport: BoxedTransport,
        close: CancellationToken,
        bound: oneshot::Sender<Multiaddr>,
    ) {
        let mut bound = Some(bound);
        loop {
            let event = tokio::select! {
                _ = close.cancelled() => break,
                event = poll_fn(|cx| std::pin::Pin::new(&mut transport).poll(cx)) => event,
            };
            match event {
                TransportEvent::NewAddress { listen_addr, .. } => {
                    if let Some(entry) = self.listeners.lock().get_mut(&id) {
                        entry.addrs.push(listen_addr.clone());
                    }
                    match bound.take() {
                        Some(tx) => {
                            let _ = tx.send(listen_addr);
                        }
                        None => {
                            tracing::info!(address = %listen_addr, "listening on a new address")
                        }
                    }
                }
                TransportEvent::AddressExpired { listen_addr, .. } => {
                    if let Some(entry) = self.listeners.lock().get_mut(&id) {
                        entry.addrs.retain(|a| *a != listen_addr);
                    }
                }
                TransportEvent::Incoming {
                    upgrade,
                    send_back_addr,
                    ..
                } => self.on_incoming(upgrade, send_back_addr),
                TransportEvent::ListenerClosed { reason, .. } => {
                    if let Err(e) = reason {
                        tracing::warn!(error = %error_chain(&e), "listener closed");
                    }
                    break;
                }
                TransportEvent::ListenerError { error, .. } => {
                    tracing::warn!(error = %error_chain(&error), "listener error");
                }
            }
        }
        if let Some(entry) = self.listeners.lock().remove(&id) {
            tracing::info!(addresses = ?entry.addrs, "listener closed");
        }
    }

    /// Refuses an inbound connection over the pending-handshake or connection limit (counted
    /// and logged); otherwise returns the guard that counts its handshake as pending.
    fn admit(self: &Arc<Self>, remote_addr: &Multiaddr) -> Option<PendingGuard> {
        let limits = &self.config.limits;
        let pending = self.pending_incoming.fetch_add(1, Ordering::Relaxed);
        let guard = PendingGuard(self.clone());
        let established = self.metrics.connections_inbound.load(Ordering::Relaxed)
            + self.metrics.connections_outbound.load(Ordering::Relaxed);
        let limit = if pending >= limits.max_pending_incoming {
            Some(LimitKind::PendingIncoming)
        } else if established >= limits.max_connections {
            Some(LimitKind::Connections)
        } else {
            None
        };
        if let Some(limit) = limit {
            Metrics::inc(&self.metrics.refused_connections);
            if self.warn_limiter.allow() {
                tracing::warn!(%remote_addr, %limit, "inbound connection refused: limit reached");
            }
            return None;
        }
        Some(guard)
    }

    /// Binds a QUIC endpoint to `socket` and serves it from a listener task.
    async fn listen_quic(
        self: &Arc<Self>,
        addr: Multiaddr,
        socket: std::net::SocketAddr,
    ) -> Result<Multiaddr, HostError> {
        if !self.config.quic.enabled {
            return Err(HostError::InvalidAddress {
                addr,
                reason: "QUIC is disabled in this host's configuration".into(),
            });
        }
        let id = self.next_id();
        let failed = |e: io::Error| HostError::ListenFailed {
            addr: addr.clone(),
            source: Arc::new(e),
        };
        let endpoint = self.quic.bind(id, socket).map_err(failed)?;
        let local = match endpoint.local_addr() {
            Ok(local) => local,
            Err(e) => {
                self.quic.unbind(id);
                return Err(failed(e));
            }
        };
        let close = self.shutdown.child_token();
        self.listeners.lock().insert(
            id,
            ListenerEntry {
                requested: addr.clone(),
                addrs: Vec::new(),
                close: close.clone(),
            },
        );
        let (bound_tx, bound_rx) = oneshot::channel();
        self.tasks.spawn(
            self.clone()
                .run_quic_listener(id, endpoint, local, close, bound_tx),
        );
        match bound_rx.await {
            Ok(bound) => {
                tracing::info!(requested = %addr, address = %bound, "listening (QUIC)");
                Ok(bound)
            }
            Err(_) => Err(failed(io::Error::other(
                "listener closed before reporting an address",
            ))),
        }
    }

    /// Accepts QUIC connections on `endpoint` until closed; for an unspecified IP, reports the
    /// addresses of the interfaces of its family as they come and go.
    async fn run_quic_listener(
        self: Arc<Self>,
        id: u64,
        endpoint: quinn::Endpoint,
        local: std::net::SocketAddr,
        close: CancellationToken,
        bound: oneshot::Sender<Multiaddr>,
    ) {
        let mut bound = Some(bound);
        let mut watcher = None;
        if local.ip().is_unspecified() {
            match if_watch::tokio::IfWatcher::new() {
                Ok(w) => watcher = Some(w),
                Err(e) => tracing::warn!(error = %e, "cannot list network interfaces"),
            }
        } else {
            self.add_listen_addr(id, quic::multiaddr(local), &mut bound);
        }
        loop {
            tokio::select! {
                () = close.cancelled() => break,
                incoming = endpoint.accept() => match incoming {
                    Some(incoming) => self.on_incoming_quic(incoming),
                    None => break,
                },
                event = next_if_event(&mut watcher) => match event {
                    Ok(if_watch::IfEvent::Up(net)) if net.addr().is_ipv4() == local.is_ipv4() => {
                        let addr = quic::multiaddr(std::net::SocketAddr::new(net.addr(), local.port()));
                        self.add_listen_addr(id, addr, &mut bound);
                    }
                    Ok(if_watch::IfEvent::Down(net)) => {
                        let addr = quic::multiaddr(std::net::SocketAddr::new(net.addr(), local.port()));
                        if let Some(entry) = self.listeners.lock().get_mut(&id) {
                            entry.addrs.retain(|a| *a != addr);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "network interface watch failed");
                        watcher = None;
                    }
                }
            }
        }
        // No new connection; the ones it carries run on until they end.
        self.quic.unbind(id);
        if let Some(entry) = self.listeners.lock().remove(&id) {
            tracing::info!(addresses = ?entry.addrs, "listener closed");
        }
    }

    fn add_listen_addr(
        &self,
        id: u64,
        addr: Multiaddr,
        bound: &mut Option<oneshot::Sender<Multiaddr>>,
    ) {
        if let Some(entry) = self.listeners.lock().get_mut(&id)
            && !entry.addrs.contains(&addr)
        {
            entry.addrs.push(addr.clone());
        }
        match bound.take() {
            Some(tx) => {
                let _ = tx.send(addr);
            }
            None => tracing::info!(address = %addr, "listening on a new address"),
        }
    }

    /// Handshakes an inbound QUIC connection on a task of its own, within the limits.
    fn on_incoming_quic(self: &Arc<Self>, incoming: quinn::Incoming) {
        let remote_addr = quic::multiaddr(incoming.remote_address());
        let Some(guard) = self.admit(&remote_addr) else {
            incoming.refuse();
            return;
        };
        let inner = self.clone();
        let timeout = self.config.handshake_timeout;
        self.spawn(async move {
            let _guard = guard;
            let handshake = async {
                let conn = incoming.accept().map_err(|e| e.to_string())?.await;
                let conn = conn.map_err(|e| e.to_string())?;
                let peer = quic::peer_id(&conn).inspect_err(|_| conn.close(0u32.into(), b""))?;
                Ok::<_, String>((peer, conn))
            };
            match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok((peer, conn))) => {
                    // A refusal is counted and logged by add_connection.
                    let _ = inner.add_connection(
                        peer,
                        Established::Quic(conn),
                        Direction::Inbound,
                        remote_addr,
                    );
                }
                Ok(Err(e)) => {
                    Metrics::inc(&inner.metrics.failed_handshakes);
                    tracing::debug!(%remote_addr, error = %e, "inbound QUIC handshake failed");
                }
                Err(_) => {
                    Metrics::inc(&inner.metrics.failed_handshakes);
                    tracing::debug!(%remote_addr, "inbound QUIC handshake timed out");
                }
            }
        });
    }

    fn on_incoming(
        self: &Arc<Self>,
        upgrade: <BoxedTransport as libp2p_core::Transport>::ListenerUpgrade,
        remote_addr: Multiaddr,
    ) {
        let Some(guard) = self.admit(&remote_addr) else {
            return;
        };
        let inner = self.clone();
        self.spawn(async move {
            let _guard = guard;
            match upgrade.await {
                Ok((peer, muxer)) => {
                    // A refusal is counted and logged by add_connection.
                    let _ = inner.add_connection(
                        peer,
                        Established::Yamux(muxer),
                        Direction::Inbound,
                        remote_addr,
                    );
                }
                Err(e) => {
                    Metrics::inc(&inner.metrics.failed_handshakes);
                    tracing::debug!(%remote_addr, error = %error_chain(&e), "inbound handshake failed");
                }
            }
        });
    }
}

/// The next interface event, or never when there is no watcher.
async fn next_if_event(
    watcher: &mut Option<if_watch::tokio::IfWatcher>,
) -> io::Result<if_watch::IfEvent> {
    use futures::StreamExt as _;
    match watcher {
        Some(w) => match w.next().await {
            Some(event) => event,
            None => Err(io::Error::other("interface watch ended")),
        },
        None => std::future::pending().await,
    }
}

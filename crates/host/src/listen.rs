//! Listeners: one task per listen address owns its transport and accepts connections.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use libp2p_core::transport::{ListenerId, Transport as _, TransportError, TransportEvent};
use multiaddr::Multiaddr;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::connection::Direction;
use crate::dial::error_chain;
use crate::host::HostInner;
use crate::metrics::Metrics;
use crate::transport::{self, BoxedTransport};
use crate::{HostError, LimitKind, addr};

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
        if !addr::is_tcp(&addr) {
            return Err(HostError::InvalidAddress {
                addr,
                reason: "expected /ip4|ip6/<ip>/tcp/<port>".into(),
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

    fn on_incoming(
        self: &Arc<Self>,
        upgrade: <BoxedTransport as libp2p_core::Transport>::ListenerUpgrade,
        remote_addr: Multiaddr,
    ) {
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
            return;
        }
        let inner = self.clone();
        self.spawn(async move {
            let _guard = guard;
            match upgrade.await {
                Ok((peer, muxer)) => {
                    // A refusal is counted and logged by add_connection.
                    let _ = inner.add_connection(peer, muxer, Direction::Inbound, remote_addr);
                }
                Err(e) => {
                    Metrics::inc(&inner.metrics.failed_handshakes);
                    tracing::debug!(%remote_addr, error = %error_chain(&e), "inbound handshake failed");
                }
            }
        });
    }
}

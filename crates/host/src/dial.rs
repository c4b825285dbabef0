//! Dialing: by address, by peer from the peer store, with coalescing of concurrent dials.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p_core::Endpoint;
use libp2p_core::transport::{DialOpts, PortUse, Transport as _, TransportError};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use futures::StreamExt as _;

use crate::connection::{ConnectionHandle, Direction, Established};
use crate::host::HostInner;
use crate::metrics::Metrics;
use crate::peer_store::RECENT_ADDR_TTL;
use crate::{HostError, addr, quic};

/// The dial in progress to one peer: who waits for it, and the addresses callers who joined it
/// asked for (tried once the dial's own list fails).
#[derive(Default)]
pub(crate) struct PendingDial {
    waiters: Vec<oneshot::Sender<Result<ConnectionHandle, HostError>>>,
    more_addrs: Vec<Multiaddr>,
}

/// The dials in progress, by peer.
pub(crate) type PendingDials = Mutex<HashMap<PeerId, PendingDial>>;

/// The error text of `err` and all its sources, for logs and `DialFailed`.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

impl HostInner {
    /// A live connection to `peer`, or a new one dialed from the peer store.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        peer: PeerId,
    ) -> Result<ConnectionHandle, HostError> {
        self.check_running()?;
        if let Some(handle) = self.connection_to(&peer) {
            return Ok(handle);
        }
        self.dial_peer(peer, Vec::new()).await
    }

    /// Dials `addr`, checking a `/p2p/` suffix against the authenticated peer.
    pub(crate) async fn dial(self: &Arc<Self>, addr: Multiaddr) -> Result<PeerId, HostError> {
        self.check_running()?;
        let (tcp, expected) = addr::without_p2p(&addr);
        match expected {
            Some(peer) if peer == self.peer_id => Err(HostError::InvalidAddress {
                addr,
                reason: "that is this host's own peer id".into(),
            }),
            Some(peer) => {
                if self.connection_to(&peer).is_some() {
                    return Ok(peer);
                }
                // `/p2p/<id>` alone: the peer store's addresses, or the peer routing's.
                let addrs = if tcp.is_empty() {
                    Vec::new()
                } else {
                    vec![tcp]
                };
                self.dial_peer(peer, addrs).await.map(|h| h.peer)
            }
            None => self
                .until_shut_down(self.dial_addr(tcp, None))
                .await
                .map(|h| h.peer),
        }
    }

    /// `fut`, or [`HostError::ShutDown`] as soon as the host shuts down (`fut` is dropped).
    async fn until_shut_down<T>(
        &self,
        fut: impl Future<Output = Result<T, HostError>>,
    ) -> Result<T, HostError> {
        tokio::select! {
            biased;
            r = fut => r,
            () = self.shutdown.cancelled() => Err(HostError::ShutDown),
        }
    }

    /// Dials `peer`, trying `addrs` first and then the peer store's addresses. Concurrent calls
    /// for one peer share one dial; the addresses of a call that joins a dial in progress are
    /// tried by it too, after its own have failed. Fails with [`HostError::ShutDown`] as soon as
    /// the host shuts down, also when the call raced the shutdown.
    async fn dial_peer(
        self: &Arc<Self>,
        peer: PeerId,
        mut addrs: Vec<Multiaddr>,
    ) -> Result<ConnectionHandle, HostError> {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut pending = self.pending_dials.lock();
            match pending.get_mut(&peer) {
                Some(dial) => {
                    dial.waiters.push(tx);
                    for addr in addrs.drain(..) {
                        if !dial.more_addrs.contains(&addr) {
                            dial.more_addrs.push(addr);
                        }
                    }
                    false
                }
                None => {
                    let dial = PendingDial {
                        waiters: vec![tx],
                        more_addrs: Vec::new(),
                    };
                    pending.insert(peer, dial);
                    true
                }
            }
        };
        // `Host::shutdown` cancels, then clears the pending dials: a call that registered after
        // that sees the cancellation below and does not wait.
        if first && !self.shutdown.is_cancelled() {
            let inner = self.clone();
            self.spawn(async move { inner.run_dial(peer, addrs).await });
        }
        let result = self
            .until_shut_down(async { rx.await.map_err(|_| HostError::ShutDown)? })
            .await;
        if matches!(result, Err(HostError::ShutDown)) {
            // Nobody will answer the others either.
            self.pending_dials.lock().remove(&peer);
        }
        result
    }

    /// The task behind a coalesced dial: `addrs`, the peer store's, then whatever callers who
    /// joined meanwhile asked for, until one connects or none is left; then answers every caller.
    async fn run_dial(self: &Arc<Self>, peer: PeerId, addrs: Vec<Multiaddr>) {
        let mut tried = Vec::new();
        let mut result = self.dial_addrs(peer, addrs, &mut tried).await;
        loop {
            let retry = !matches!(
                result,
                Ok(_) | Err(HostError::ShutDown | HostError::LimitReached { .. })
            );
            // Under the lock: either more addresses to try, or the dial ends for every caller
            // (so that no caller can join it after its last look).
            let more: Vec<Multiaddr> = {
                let mut pending = self.pending_dials.lock();
                let more = match pending.get_mut(&peer) {
                    Some(dial) if retry => std::mem::take(&mut dial.more_addrs)
                        .into_iter()
                        .filter(|a| !tried.contains(a))
                        .collect(),
                    _ => Vec::new(),
                };
                if more.is_empty() {
                    let waiters = pending.remove(&peer).map(|d| d.waiters).unwrap_or_default();
                    drop(pending);
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                    return;
                }
                more
            };
            tracing::debug!(%peer, addrs = ?more, "trying the addresses of callers who joined the dial");
            result = self.dial_list(peer, more, &mut tried).await;
        }
    }

    /// Dials `addrs` and then the peer store's addresses for `peer`, skipping those in `tried`
    /// (and adding the others to it).
    async fn dial_addrs(
        self: &Arc<Self>,
        peer: PeerId,
        mut addrs: Vec<Multiaddr>,
        tried: &mut Vec<Multiaddr>,
    ) -> Result<ConnectionHandle, HostError> {
        if let Some(handle) = self.connection_to(&peer) {
            return Ok(handle);
        }
        for known in self.peer_store.addrs(&peer) {
            if !addrs.contains(&known) {
                addrs.push(known);
            }
        }
        let result = if addrs.iter().all(|a| tried.contains(a)) {
            Err(HostError::NoAddresses { peer })
        } else {
            self.dial_list(peer, addrs, tried).await
        };
        match result {
            Err(
                HostError::NoAddresses { .. }
                | HostError::DialFailed { .. }
                | HostError::Timeout { .. },
            ) => {}
            other => return other,
        }
        // None known, or none answered: ask the peer routing (a peer may have moved).
        let found: Vec<Multiaddr> = self
            .route(peer)
            .await
            .into_iter()
            .filter(|a| !tried.contains(a))
            .collect();
        if found.is_empty() {
            return result;
        }
        self.dial_list(peer, found, tried).await
    }

    /// Asks the plugged-in [`crate::PeerRouting`] (if any) for `peer`'s addresses, within the
    /// dial timeout and at most [`MAX_ROUTING_LOOKUPS`] at once (a lookup may dial peers whose
    /// addresses must be looked up in turn); what it finds goes to the peer store.
    async fn route(&self, peer: PeerId) -> Vec<Multiaddr> {
        let Some(routing) = self.peer_routing.lock().clone() else {
            return Vec::new();
        };
        let lookups = &self.routing_lookups;
        if lookups.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= MAX_ROUTING_LOOKUPS {
            lookups.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            tracing::debug!(%peer, "peer routing skipped: too many lookups in flight");
            return Vec::new();
        }
        let found = tokio::time::timeout(self.config.dial_timeout, routing.find_addrs(peer)).await;
        lookups.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let found: Vec<Multiaddr> = match found {
            Ok(found) => found.into_iter().map(|a| addr::without_p2p(&a).0).collect(),
            Err(_) => Vec::new(),
        };
        tracing::debug!(%peer, addrs = ?found, "peer routing answered");
        if !found.is_empty() {
            self.peer_store
                .add_addrs(peer, found.iter().cloned(), RECENT_ADDR_TTL);
        }
        found
    }

    /// Dials `addrs` (skipping those in `tried`, and adding the others to it) until one
    /// connects to `peer`: ranked best first ([`dial_rank`]), each started [`HEAD_START`] after
    /// the one before it or as soon as every attempt in flight has failed; the first to connect
    /// wins and the others are cancelled.
    async fn dial_list(
        self: &Arc<Self>,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        tried: &mut Vec<Multiaddr>,
    ) -> Result<ConnectionHandle, HostError> {
        let mut queue: Vec<Multiaddr> = Vec::new();
        for addr in addrs {
            if !tried.contains(&addr) {
                tried.push(addr.clone());
                queue.push(addr);
            }
        }
        queue.sort_by_key(dial_rank);
        let mut queue = std::collections::VecDeque::from(queue);
        let mut running = futures::stream::FuturesUnordered::new();
        let mut last_error = HostError::NoAddresses { peer };
        let mut next_start = tokio::time::Instant::now();
        loop {
            if running.is_empty() {
                let Some(addr) = queue.pop_front() else {
                    return Err(last_error);
                };
                running.push(self.dial_addr(addr, Some(peer)));
                next_start = tokio::time::Instant::now() + HEAD_START;
            }
            tokio::select! {
                Some(result) = running.next() => match result {
                    Ok(handle) => return Ok(handle),
                    Err(e @ (HostError::ShutDown | HostError::LimitReached { .. })) => return Err(e),
                    Err(e) => last_error = e,
                },
                () = tokio::time::sleep_until(next_start), if !queue.is_empty() => {
                    if let Some(addr) = queue.pop_front() {
                        tracing::debug!(%peer, %addr, "starting the next dial in the race");
                        running.push(self.dial_addr(addr, Some(peer)));
                    }
                    next_start = tokio::time::Instant::now() + HEAD_START;
                }
            }
        }
    }

    /// Dials one address: a TCP address directly; a `/dns…` one through the addresses its name
    /// resolves to, in the resolver's order, until one answers.
    async fn dial_addr(
        self: &Arc<Self>,
        addr: Multiaddr,
        expected: Option<PeerId>,
    ) -> Result<ConnectionHandle, HostError> {
        if !addr::is_dns(&addr) {
            return self.dial_direct(addr, expected).await;
        }
        let failed = |reason: String| {
            Metrics::inc(&self.metrics.dial_failures);
            tracing::debug!(%addr, %reason, "dial failed");
            HostError::DialFailed {
                addr: addr.clone(),
                reason,
            }
        };
        let timeout = self.config.dial_timeout;
        let resolved = match tokio::time::timeout(timeout, addr::resolve_dns(&addr)).await {
            Err(_) => {
                Metrics::inc(&self.metrics.dial_failures);
                tracing::debug!(%addr, "dial failed: name resolution timed out");
                return Err(HostError::Timeout {
                    operation: "dns resolution",
                    after: timeout,
                });
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(HostError::InvalidAddress {
                    addr: addr.clone(),
                    reason: e.to_string(),
                });
            }
            Ok(Err(e)) => return Err(failed(format!("resolving the name: {e}"))),
            Ok(Ok(resolved)) if resolved.is_empty() => {
                return Err(failed(
                    "the name has no address of the requested family".into(),
                ));
            }
            Ok(Ok(resolved)) => resolved,
        };
        tracing::debug!(%addr, ?resolved, "name resolved");
        let mut last_error = None;
        for resolved in resolved {
            match self.dial_direct(resolved, expected).await {
                Ok(handle) => return Ok(handle),
                Err(e @ (HostError::ShutDown | HostError::LimitReached { .. })) => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| failed("no address answered".into())))
    }

    /// One dial attempt to one IP address (TCP or QUIC); the connection is the host's once the
    /// peer proved to be `expected`.
    async fn dial_direct(
        self: &Arc<Self>,
        addr: Multiaddr,
        expected: Option<PeerId>,
    ) -> Result<ConnectionHandle, HostError> {
        let failed = |e: HostError| {
            Metrics::inc(&self.metrics.dial_failures);
            tracing::debug!(%addr, error = %e, "dial failed");
            e
        };
        let timeout = self.config.dial_timeout;
        let timed_out = || HostError::Timeout {
            operation: "dial",
            after: timeout,
        };
        let (peer, established) = if let Some(socket) = quic::socket_addr(&addr) {
            if !self.config.quic.enabled {
                return Err(failed(HostError::InvalidAddress {
                    addr: addr.clone(),
                    reason: "QUIC is disabled in this host's configuration".into(),
                }));
            }
            match tokio::time::timeout(timeout, self.quic.connect(socket)).await {
                Err(_) => return Err(failed(timed_out())),
                Ok(Err(reason)) => {
                    return Err(failed(HostError::DialFailed {
                        addr: addr.clone(),
                        reason,
                    }));
                }
                Ok(Ok((peer, conn))) => (peer, Established::Quic(conn)),
            }
        } else if addr::is_tcp(&addr) {
            let (peer, muxer) = self.dial_tcp(&addr).await.map_err(failed)?;
            (peer, Established::Yamux(muxer))
        } else {
            return Err(failed(HostError::InvalidAddress {
                addr: addr.clone(),
                reason: "expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port> or \
                         /ip4|ip6|dns|dns4|dns6/<host>/udp/<port>/quic-v1"
                    .into(),
            }));
        };
        if let Some(expected) = expected.filter(|e| *e != peer) {
            if let Established::Quic(conn) = &established {
                conn.close(0u32.into(), b"wrong peer id");
            }
            drop(established);
            return Err(failed(HostError::PeerIdMismatch {
                expected,
                actual: peer,
            }));
        }
        let handle = self.add_connection(peer, established, Direction::Outbound, addr.clone())?;
        self.peer_store.add_addrs(peer, [addr], RECENT_ADDR_TTL);
        Ok(handle)
    }

    /// TCP connect, noise and yamux, within the dial timeout.
    async fn dial_tcp(&self, addr: &Multiaddr) -> Result<(PeerId, crate::muxer::Muxer), HostError> {
        let opts = DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::New,
        };
        let dial = self
            .dialer
            .lock()
            .dial(addr.clone(), opts)
            .map_err(|e| match e {
                TransportError::MultiaddrNotSupported(a) => HostError::InvalidAddress {
                    addr: a,
                    reason: "not dialable (unspecified ip or port 0?)".into(),
                },
                TransportError::Other(e) => HostError::DialFailed {
                    addr: addr.clone(),
                    reason: error_chain(&e),
                },
            })?;
        let timeout = self.config.dial_timeout;
        match tokio::time::timeout(timeout, dial).await {
            Err(_) => Err(HostError::Timeout {
                operation: "dial",
                after: timeout,
            }),
            Ok(Err(e)) => Err(HostError::DialFailed {
                addr: addr.clone(),
                reason: error_chain(&e),
            }),
            Ok(Ok(ok)) => Ok(ok),
        }
    }
}

/// Peer-routing lookups the host runs at once (nested ones included).
pub(crate) const MAX_ROUTING_LOOKUPS: usize = 16;

/// How long the best-ranked dial runs alone before the next address is tried beside it (go-libp2p
/// gives TCP the same delay behind QUIC).
pub(crate) const HEAD_START: std::time::Duration = std::time::Duration::from_millis(250);

/// The order addresses are dialed in (lower first): public before private before loopback, and
/// within a scope QUIC (one round trip) before TCP (TCP, noise and yamux: about three).
pub(crate) fn dial_rank(addr: &Multiaddr) -> (u8, u8) {
    let scope = match addr::addr_scope(addr) {
        addr::AddrScope::Public => 0,
        addr::AddrScope::Private => 1,
        addr::AddrScope::Loopback => 2,
    };
    let udp = addr
        .iter()
        .any(|p| matches!(p, multiaddr::Protocol::QuicV1));
    (scope, u8::from(!udp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_before_tcp_and_public_before_private() {
        let mut addrs: Vec<Multiaddr> = [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/10.0.0.1/tcp/1",
            "/ip4/1.2.3.4/tcp/1",
            "/ip4/127.0.0.1/udp/1/quic-v1",
            "/ip4/10.0.0.1/udp/1/quic-v1",
            "/ip4/1.2.3.4/udp/1/quic-v1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        addrs.sort_by_key(dial_rank);
        let order: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            order,
            [
                "/ip4/1.2.3.4/udp/1/quic-v1",
                "/ip4/1.2.3.4/tcp/1",
                "/ip4/10.0.0.1/udp/1/quic-v1",
                "/ip4/10.0.0.1/tcp/1",
                "/ip4/127.0.0.1/udp/1/quic-v1",
                "/ip4/127.0.0.1/tcp/1",
            ]
        );
    }
}

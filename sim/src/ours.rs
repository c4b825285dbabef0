//! A simulated node of our own stack: a `p2pnet_host::Host` with `p2pnet_kad::Kademlia`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use p2pnet_host::{Host, HostConfig, Multiaddr, PeerId, generate_keypair};
use p2pnet_kad::{KadConfig, KadError, Kademlia, QueryStats, query::QueryConfig};

use crate::proto::{LookupStats, PeerAddr};

/// How long a cold lookup waits for the connection to its target to be gone.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// One node: host and Kademlia.
pub(crate) struct OurNode {
    host: Host,
    kad: Kademlia,
    addr: Multiaddr,
}

/// The Kademlia configuration of the simulation: the defaults with timeouts that keep a run
/// short when peers are dead (a killed node's port refuses at once on 127.0.0.1 anyway).
fn kad_config() -> KadConfig {
    KadConfig {
        query: QueryConfig {
            request_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            ..QueryConfig::default()
        },
        ..KadConfig::default()
    }
}

fn stats(s: &QueryStats) -> LookupStats {
    LookupStats {
        hops: Some(s.hops),
        requests: s.requests,
        failures: s.failures,
        timed_out: s.timed_out,
    }
}

impl OurNode {
    /// Starts a node with a new identity on 127.0.0.1 (a free port).
    pub(crate) async fn start() -> Result<OurNode> {
        let host = Host::new(generate_keypair(), HostConfig::default())?;
        let kad = Kademlia::new(host.clone(), kad_config())?;
        let addr = host.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
        Ok(OurNode { host, kad, addr })
    }

    /// Its id and listen address.
    pub(crate) fn peer_addr(&self) -> PeerAddr {
        PeerAddr {
            peer: self.host.peer_id().to_base58(),
            addr: self.addr.to_string(),
        }
    }

    /// Puts bootstrap peers in the routing table.
    pub(crate) async fn add_peers(&self, peers: &[PeerAddr]) -> Result<()> {
        for p in peers {
            let peer: PeerId = p.peer.parse().context("peer id")?;
            let addr: Multiaddr = p.addr.parse().context("address")?;
            self.kad.add_peer(peer, vec![addr]).await?;
        }
        Ok(())
    }

    /// Bootstraps: `(ok, stats, error)`.
    pub(crate) async fn bootstrap(&self) -> (bool, LookupStats, Option<String>) {
        match self.kad.bootstrap().await {
            Ok(c) => (!c.peers.is_empty(), stats(&c.stats), None),
            Err(e) => (false, LookupStats::default(), Some(e.to_string())),
        }
    }

    /// Looks `target` up: `(found, stats, latency, error)`.
    pub(crate) async fn find_peer(
        &self,
        target: &str,
        cold: bool,
    ) -> Result<(bool, LookupStats, Duration, Option<String>)> {
        let target: PeerId = target.parse().context("target peer id")?;
        if cold && self.host.is_connected(&target) {
            self.host.close_peer(&target);
            let deadline = Instant::now() + CLOSE_WAIT;
            while self.host.is_connected(&target) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let started = Instant::now();
        let r = self.kad.find_peer(target).await;
        let latency = started.elapsed();
        Ok(match r {
            Ok(found) => (!found.addrs.is_empty(), stats(&found.stats), latency, None),
            Err(KadError::PeerNotFound(_)) => (
                false,
                LookupStats::default(),
                latency,
                Some("not found".into()),
            ),
            Err(e) => (false, LookupStats::default(), latency, Some(e.to_string())),
        })
    }

    /// The routing table's size.
    pub(crate) async fn table_size(&self) -> Result<usize> {
        Ok(self.kad.routing_table().await?.len())
    }

    /// Stops Kademlia and the host (joins their tasks).
    pub(crate) async fn stop(&self) {
        self.kad.shutdown().await;
        self.host.shutdown().await;
    }
}

//! The peer store: what we know about peers (addresses with a time to live, protocols, agent).
//!
//! Fed by successful dials, by identify and by the user. Bounded in peers, addresses per peer and
//! protocols per peer, because identify data comes from untrusted peers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use parking_lot::Mutex;

/// Time to live for addresses given by the user: effectively forever.
pub const PERMANENT_ADDR_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Time to live for an address we successfully dialed or a peer announced through identify.
pub const RECENT_ADDR_TTL: Duration = Duration::from_secs(3600);

const MAX_PEERS: usize = 16_384;
const MAX_ADDRS_PER_PEER: usize = 32;
const MAX_PROTOCOLS_PER_PEER: usize = 128;
const MAX_STRING_LEN: usize = 256;

#[derive(Debug, Default)]
struct PeerRecord {
    addrs: Vec<(Multiaddr, Instant)>,
    protocols: Vec<String>,
    agent_version: Option<String>,
}

impl PeerRecord {
    fn prune(&mut self, now: Instant) {
        self.addrs.retain(|(_, expires)| *expires > now);
    }
}

/// Addresses and facts about peers. Cheap to query; all methods take `&self`.
#[derive(Debug, Default)]
pub struct PeerStore {
    peers: Mutex<HashMap<PeerId, PeerRecord>>,
}

impl PeerStore {
    /// Adds (or refreshes) addresses for `peer`, each valid for `ttl`. A `/p2p/<id>` suffix is
    /// stripped. Returns how many addresses were stored (the store is bounded).
    pub fn add_addrs(
        &self,
        peer: PeerId,
        addrs: impl IntoIterator<Item = Multiaddr>,
        ttl: Duration,
    ) -> usize {
        let now = Instant::now();
        let expires = now.checked_add(ttl).unwrap_or(now + PERMANENT_ADDR_TTL);
        let mut peers = self.peers.lock();
        if !peers.contains_key(&peer) && peers.len() >= MAX_PEERS {
            peers.retain(|_, r| {
                r.prune(now);
                !r.addrs.is_empty()
            });
            if peers.len() >= MAX_PEERS {
                tracing::warn!(%peer, "peer store full; address not stored");
                return 0;
            }
        }
        let record = peers.entry(peer).or_default();
        record.prune(now);
        let mut stored = 0;
        for addr in addrs {
            let addr = crate::addr::without_p2p(&addr).0;
            if let Some(slot) = record.addrs.iter_mut().find(|(a, _)| *a == addr) {
                slot.1 = slot.1.max(expires);
                stored += 1;
            } else if record.addrs.len() < MAX_ADDRS_PER_PEER {
                record.addrs.push((addr, expires));
                stored += 1;
            }
        }
        stored
    }

    /// The unexpired addresses of `peer`, longest-lived first.
    pub fn addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let now = Instant::now();
        let mut peers = self.peers.lock();
        let Some(record) = peers.get_mut(peer) else {
            return Vec::new();
        };
        record.prune(now);
        let mut addrs = record.addrs.clone();
        addrs.sort_by_key(|a| std::cmp::Reverse(a.1));
        addrs.into_iter().map(|(a, _)| a).collect()
    }

    /// Forgets all addresses of `peer`.
    pub fn clear_addrs(&self, peer: &PeerId) {
        if let Some(record) = self.peers.lock().get_mut(peer) {
            record.addrs.clear();
        }
    }

    /// The peers the store has a record of.
    pub fn peers(&self) -> Vec<PeerId> {
        self.peers.lock().keys().copied().collect()
    }

    /// The protocols `peer` announced through identify.
    pub fn protocols(&self, peer: &PeerId) -> Vec<String> {
        self.peers
            .lock()
            .get(peer)
            .map(|r| r.protocols.clone())
            .unwrap_or_default()
    }

    /// The agent version `peer` announced through identify.
    pub fn agent_version(&self, peer: &PeerId) -> Option<String> {
        self.peers
            .lock()
            .get(peer)
            .and_then(|r| r.agent_version.clone())
    }

    /// Records what identify told us (bounded: long strings and long lists are cut).
    pub(crate) fn set_identify(&self, peer: PeerId, protocols: Vec<String>, agent: Option<String>) {
        let mut peers = self.peers.lock();
        if !peers.contains_key(&peer) && peers.len() >= MAX_PEERS {
            return;
        }
        let record = peers.entry(peer).or_default();
        record.protocols = protocols
            .into_iter()
            .filter(|p| p.len() <= MAX_STRING_LEN)
            .take(MAX_PROTOCOLS_PER_PEER)
            .collect();
        record.agent_version = agent.filter(|a| a.len() <= MAX_STRING_LEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_expire_and_are_bounded() {
        let store = PeerStore::default();
        let peer = PeerId::random();
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert_eq!(store.add_addrs(peer, [a.clone()], Duration::ZERO), 1);
        assert!(store.addrs(&peer).is_empty(), "zero ttl expires at once");
        store.add_addrs(peer, [a.clone()], RECENT_ADDR_TTL);
        assert_eq!(store.addrs(&peer), vec![a]);
        let many = (0..100u16).map(|p| format!("/ip4/127.0.0.1/tcp/{}", p + 2).parse().unwrap());
        store.add_addrs(peer, many, RECENT_ADDR_TTL);
        assert_eq!(store.addrs(&peer).len(), MAX_ADDRS_PER_PEER);
    }

    #[test]
    fn p2p_suffix_is_stripped() {
        let store = PeerStore::default();
        let peer = PeerId::random();
        let a: Multiaddr = format!("/ip4/127.0.0.1/tcp/5/p2p/{peer}").parse().unwrap();
        store.add_addrs(peer, [a], RECENT_ADDR_TTL);
        assert_eq!(
            store.addrs(&peer),
            vec!["/ip4/127.0.0.1/tcp/5".parse::<Multiaddr>().unwrap()]
        );
    }
}

//! The peer store: what we know about peers (addresses with a time to live, protocols, agent).
//!
//! Fed by successful dials, by identify and by the user. Bounded in peers, addresses per peer and
//! protocols per peer, because identify data comes from untrusted peers.

use std::collections::hash_map::RandomState;
use std::time::{Duration, Instant};

use hashlink::LinkedHashMap;
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
/// How many of the least recently updated records a full store looks at for one to evict
/// (records the user gave a permanent address are skipped and sent to the back).
const EVICTION_SCAN: usize = 8;

#[derive(Debug, Default)]
struct PeerRecord {
    addrs: Vec<(Multiaddr, Instant)>,
    protocols: Vec<String>,
    agent_version: Option<String>,
    /// The user gave this peer an address with [`PERMANENT_ADDR_TTL`]: never evicted.
    pinned: bool,
}

impl PeerRecord {
    fn prune(&mut self, now: Instant) {
        self.addrs.retain(|(_, expires)| *expires > now);
    }
}

/// Records in the order they were last updated, least recently first. Hashed with SipHash and a
/// random key, since peer ids come from untrusted peers.
type Records = LinkedHashMap<PeerId, PeerRecord, RandomState>;

/// Addresses and facts about peers. Cheap to query; all methods take `&self`.
///
/// Bounded: when it is full, a new peer takes the place of the least recently updated one
/// (skipping peers the user gave a permanent address), in constant time under the lock.
#[derive(Debug)]
pub struct PeerStore {
    peers: Mutex<Records>,
    max_peers: usize,
}

impl Default for PeerStore {
    fn default() -> Self {
        Self::with_max_peers(MAX_PEERS)
    }
}

impl PeerStore {
    /// A store that keeps at most `max_peers` peers.
    pub(crate) fn with_max_peers(max_peers: usize) -> Self {
        Self {
            peers: Mutex::new(LinkedHashMap::with_hasher(RandomState::new())),
            max_peers: max_peers.max(1),
        }
    }

    /// The record of `peer`, moved to the back (most recently updated); created when missing,
    /// evicting the least recently updated unpinned record if the store is full. `None` when the
    /// store is full of pinned records near its front. O(1).
    fn update<'a>(&self, peers: &'a mut Records, peer: PeerId) -> Option<&'a mut PeerRecord> {
        if peers.contains_key(&peer) {
            return peers.to_back(&peer);
        }
        if peers.len() >= self.max_peers {
            let mut evicted = false;
            for _ in 0..EVICTION_SCAN.min(peers.len()) {
                let mut front = peers.front_entry()?;
                if front.get().pinned {
                    front.to_back();
                } else {
                    let (old, _) = front.remove_entry();
                    tracing::debug!(%peer, evicted = %old, "peer store full; evicted the least recently updated peer");
                    evicted = true;
                    break;
                }
            }
            if !evicted {
                tracing::warn!(%peer, "peer store full of peers the user added; not stored");
                return None;
            }
        }
        peers.insert(peer, PeerRecord::default());
        peers.get_mut(&peer)
    }

    /// Adds (or refreshes) addresses for `peer`, each valid for `ttl`. A `/p2p/<id>` suffix is
    /// stripped. Returns how many addresses were stored (the store is bounded). A `ttl` of
    /// [`PERMANENT_ADDR_TTL`] or more marks the peer as the user's: it is never evicted.
    pub fn add_addrs(
        &self,
        peer: PeerId,
        addrs: impl IntoIterator<Item = Multiaddr>,
        ttl: Duration,
    ) -> usize {
        let now = Instant::now();
        let expires = now.checked_add(ttl).unwrap_or(now + PERMANENT_ADDR_TTL);
        let mut peers = self.peers.lock();
        let Some(record) = self.update(&mut peers, peer) else {
            return 0;
        };
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
        if stored > 0 && ttl >= PERMANENT_ADDR_TTL {
            record.pinned = true;
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

    /// Forgets all addresses of `peer` (and that the user gave any).
    pub fn clear_addrs(&self, peer: &PeerId) {
        if let Some(record) = self.peers.lock().get_mut(peer) {
            record.addrs.clear();
            record.pinned = false;
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
        let Some(record) = self.update(&mut peers, peer) else {
            return;
        };
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

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn a_full_store_evicts_the_least_recently_updated_peer() {
        let store = PeerStore::with_max_peers(4);
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        for (i, p) in peers[..4].iter().enumerate() {
            assert_eq!(store.add_addrs(*p, [addr(i as u16)], RECENT_ADDR_TTL), 1);
        }
        // Updating peers[0] makes peers[1] the least recently updated.
        store.add_addrs(peers[0], [addr(100)], RECENT_ADDR_TTL);
        assert_eq!(store.add_addrs(peers[4], [addr(4)], RECENT_ADDR_TTL), 1);
        let mut expected = vec![peers[2], peers[3], peers[0], peers[4]];
        assert_eq!(store.peers(), expected);
        assert!(store.addrs(&peers[1]).is_empty());
        // Reading is not updating: peers[2] is still the next to go.
        assert_eq!(store.addrs(&peers[2]), vec![addr(2)]);
        // Identify data counts as an update and also makes room.
        store.set_identify(peers[5], vec!["/p".into()], Some("agent".into()));
        expected.remove(0);
        expected.push(peers[5]);
        assert_eq!(store.peers(), expected);
        assert_eq!(store.protocols(&peers[5]), vec!["/p".to_owned()]);
        assert_eq!(store.agent_version(&peers[2]), None);
    }

    #[test]
    fn peers_the_user_added_are_not_evicted() {
        let store = PeerStore::with_max_peers(3);
        let user: Vec<PeerId> = (0..2).map(|_| PeerId::random()).collect();
        for (i, p) in user.iter().enumerate() {
            store.add_addrs(*p, [addr(i as u16)], PERMANENT_ADDR_TTL);
        }
        // A flood of learned peers only ever takes the third place.
        let mut last = PeerId::random();
        for i in 0..100u16 {
            last = PeerId::random();
            assert_eq!(store.add_addrs(last, [addr(1000 + i)], RECENT_ADDR_TTL), 1);
            let now = store.peers();
            assert_eq!(now.len(), 3);
            assert!(user.iter().all(|u| now.contains(u)), "{i}");
        }
        assert!(store.peers().contains(&last));
        // Full of the user's peers: a learned one is not stored, and nothing is evicted.
        let third = PeerId::random();
        store.clear_addrs(&last);
        store.add_addrs(third, [addr(7)], PERMANENT_ADDR_TTL);
        let sorted = |mut v: Vec<PeerId>| {
            v.sort();
            v
        };
        let full = sorted(vec![user[0], user[1], third]);
        assert_eq!(sorted(store.peers()), full);
        assert_eq!(
            store.add_addrs(PeerId::random(), [addr(8)], RECENT_ADDR_TTL),
            0
        );
        store.set_identify(PeerId::random(), vec![], None);
        assert_eq!(sorted(store.peers()), full);
        // Clearing a user's peer unpins it: it can go again.
        store.clear_addrs(&user[0]);
        let newcomer = PeerId::random();
        assert_eq!(store.add_addrs(newcomer, [addr(9)], RECENT_ADDR_TTL), 1);
        assert_eq!(
            sorted(store.peers()),
            sorted(vec![user[1], third, newcomer])
        );
    }

    #[test]
    fn the_default_store_is_bounded_at_max_peers() {
        let store = PeerStore::default();
        let first = PeerId::random();
        store.add_addrs(first, [addr(1)], RECENT_ADDR_TTL);
        for _ in 0..MAX_PEERS {
            store.add_addrs(PeerId::random(), [addr(2)], RECENT_ADDR_TTL);
        }
        let peers = store.peers();
        assert_eq!(peers.len(), MAX_PEERS);
        assert!(!peers.contains(&first), "the oldest was evicted");
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

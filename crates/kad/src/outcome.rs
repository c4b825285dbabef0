//! What the public operations of [`crate::Kademlia`] return.

use std::time::Instant;

use p2pnet_host::{Multiaddr, PeerId};

/// How a lookup went: every result carries one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// The longest chain of requests that led to the result.
    pub hops: u32,
    /// Requests sent.
    pub requests: u32,
    /// Requests that failed or timed out.
    pub failures: u32,
    /// Peers the answers named, with the addresses kept for them (after address hygiene).
    pub learned: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Whether the query timeout cut the lookup short.
    pub timed_out: bool,
}

/// The result of [`crate::Kademlia::find_peer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFound {
    /// The peer looked for.
    pub peer: PeerId,
    /// Its addresses (also put in the host's peer store).
    pub addrs: Vec<Multiaddr>,
    /// How the lookup went.
    pub stats: QueryStats,
}

/// The result of [`crate::Kademlia::closest_peers`] and [`crate::Kademlia::bootstrap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosestPeers {
    /// The closest peers that answered, closest first, with their addresses.
    pub peers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// How the lookup went.
    pub stats: QueryStats,
}

/// One value found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRecord {
    /// The peer that had it (our own id for our store).
    pub peer: PeerId,
    /// The value.
    pub value: Vec<u8>,
}

/// The result of [`crate::Kademlia::get_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsFound {
    /// The values found (at least one; `quorum` of them unless the lookup ran out of peers),
    /// best first by the validator's `select`.
    pub records: Vec<FoundRecord>,
    /// How the lookup went.
    pub stats: QueryStats,
}

/// The result of [`crate::Kademlia::put_record`] and [`crate::Kademlia::provide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The peers that accepted the record (or announcement).
    pub stored_at: Vec<PeerId>,
    /// The peers that failed or refused.
    pub failed: Vec<PeerId>,
    /// How the lookup of the closest peers went.
    pub stats: QueryStats,
}

/// The result of [`crate::Kademlia::providers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidersFound {
    /// The providers found, with their addresses (possibly none).
    pub providers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// How the lookup went.
    pub stats: QueryStats,
}

/// One entry of [`crate::Kademlia::routing_table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// The peer.
    pub peer: PeerId,
    /// Its addresses.
    pub addrs: Vec<Multiaddr>,
    /// Its bucket (255: farthest half of the key space).
    pub bucket: usize,
    /// When we last heard from it.
    pub last_seen: Instant,
}
